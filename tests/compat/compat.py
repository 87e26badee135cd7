#!/usr/bin/env python3
"""compat.py — does GPTQModel read mode-pack's checkpoints as mode does? Run by tests/compat/run.sh
(`make compat`) in its virtual environment, after the pipeline has packed emoji-vl.

For each checkpoint given as LABEL=DIR:EVAL_JSON (EVAL_JSON: mode-eval's report on the samples):
  1. the files: every safetensors header has __metadata__ {"format": "pt"}; quantization_config
     has what GPTQModel writes (quant_method, checkpoint_format, pack_dtype, lm_head, meta with
     quantizer, damp_percent, true_sequential);
  2. the weights: GPTQModel loads the checkpoint in float16 on the CPU (its torch kernel); its
     quantized modules are exactly the packed expert projections, each with the width that the
     config's `dynamic` rules give it and that mode reads; each one's dequantised float16 weight
     equals, bit for bit, mode's dequantisation (tests/compat/dequant.c) rounded to float16;
  3. the perplexity: GPTQModel loads it again in bfloat16, runs transformers' model over the
     samples (their token ids and pixels, read with mode-cat) and its text and answer perplexities
     are within PPL_RTOL of mode-eval's (float32);
and the eval reports' model.weights differ between all checkpoints (and the full-precision one).

Prints one table row per checkpoint and the warnings the loads printed; exits 1 on any mismatch.
"""
import argparse
import contextlib
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import traceback

# GPTQModel wraps each quantized module's dequantisation in torch.compile; on 2 CPU cores compiling
# the 192 modules of one load takes minutes (measured 2026-12-07, one record at a time: 50 records
# in 301 s compiled, 100 in 185 s eager). The eager path computes the same expression.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
# everything is local: no hub look-ups
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# mode-eval runs in float32 and GPTQModel here in bfloat16 (8-bit mantissa: each value rounded by up
# to 2^-9 relative, the f16 scales rounded to bf16 on load): on emoji-vl's 17,518 text and 3,993
# answer predictions the perplexities differ by 2e-4 to 5e-4 relative (measured 2026-12-07; on a
# third of the records, up to 1.3e-3: hence all of them). 2e-3 is the bound of issue 24.
PPL_RTOL = 2e-3
# padded tokens per forward batch (records of similar length run together): GPTQModel dequantises
# every quantized module at each forward, so fewer, larger batches are faster; ~200 MB of logits
BATCH_TOKENS = 16384


T0 = time.time()


def note(msg):
    """A progress line on the standard error, with the seconds since the start."""
    print(f"compat: {msg} ({time.time() - T0:.0f} s)", file=sys.stderr, flush=True)


class Failure(Exception):
    """Stops the comparison; main prints it (after any capture of the output has ended)."""


def fail(msg):
    raise Failure(msg)


# ---- the files ------------------------------------------------------------------------------
def check_files(label, ckpt):
    """Problems with the checkpoint's files as GPTQModel and transformers expect them."""
    problems = []
    files = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    if not files:
        problems.append("no safetensors file")
    for f in files:
        with open(os.path.join(ckpt, f), "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or meta.get("format") != "pt":
            problems.append(f"{f}: __metadata__ is {meta!r}, not {{'format': 'pt'}}")
    with open(os.path.join(ckpt, "config.json")) as fh:
        qc = json.load(fh).get("quantization_config", {})
    for key, want in (("quant_method", "gptq"), ("pack_dtype", "int32"), ("lm_head", False)):
        if qc.get(key) != want:
            problems.append(f"quantization_config.{key} is {qc.get(key)!r}, expected {want!r}")
    if qc.get("checkpoint_format") not in ("gptq", "gptq_v2"):
        problems.append(f"quantization_config.checkpoint_format is {qc.get('checkpoint_format')!r}")
    meta = qc.get("meta")
    if not isinstance(meta, dict):
        problems.append("quantization_config has no meta")
    else:
        if not (isinstance(meta.get("quantizer"), list) and meta["quantizer"]):
            problems.append(f"quantization_config.meta.quantizer is {meta.get('quantizer')!r}")
        if not isinstance(meta.get("damp_percent"), float) or not 0 < meta["damp_percent"] < 1:
            problems.append(f"quantization_config.meta.damp_percent is {meta.get('damp_percent')!r}")
        if not isinstance(meta.get("true_sequential"), bool):
            problems.append(f"quantization_config.meta.true_sequential is {meta.get('true_sequential')!r}")
    return qc, [f"{label}: {p}" for p in problems]


def dynamic_bits(qc, name):
    """The width GPTQModel's `dynamic` convention gives module `name`: the bits of the positive
    rule that matches it (mode writes one per layer and width), else the default; None when a
    negative rule excludes it."""
    matched = []
    for rule, override in (qc.get("dynamic") or {}).items():
        if rule.startswith("-:"):
            if re.match(rule[2:], name):
                return None
            continue
        pattern = rule[2:] if rule.startswith("+:") else rule
        if re.match(pattern, name):
            matched.append(override.get("bits", qc["bits"]))
    if len(matched) > 1:
        fail(f"{name} matches {len(matched)} positive dynamic rules")
    return matched[0] if matched else qc["bits"]


# ---- capturing what the libraries print ------------------------------------------------------
@contextlib.contextmanager
def captured(log, lines):
    """Send file descriptors 1 and 2 to `log` while the block runs; the lines printed meanwhile
    are appended to `lines`."""
    sys.stdout.flush(), sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(1), os.dup(2)
        os.dup2(tmp.fileno(), 1), os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            log.write(text)
            log.flush()
            lines.extend(text.splitlines())


def warnings_in(lines):
    """The distinct lines that carry a warning, in order (ANSI colours removed)."""
    seen, out = set(), []
    for line in lines:
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).strip()
        # logging's and GPTQModel's WARN/WARNING lines, warnings.warn's, torch's glog-style W1207 ...
        if (re.search(r"warn", line, re.I) or re.match(r"W\d{4} ", line)) and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def load(ckpt, dtype, log, lines):
    """GPTQModel.load on the CPU with its torch kernel (the one that takes 2, 3, 4 and 8 bits)."""
    with captured(log, lines):
        try:
            from gptqmodel import BACKEND, GPTQModel  # its first import prints its banner and warnings

            return GPTQModel.load(ckpt, device="cpu", backend=BACKEND.TORCH, dtype=dtype)
        except Exception as e:
            traceback.print_exc()
            raise Failure(f"GPTQModel.load({ckpt}, dtype={dtype}) raised {type(e).__name__}: {e} (traceback in the log)") from e


# ---- the weights --------------------------------------------------------------------------------
def check_weights(label, ckpt, qc, dequant, work, log, lines):
    """(widths summary, equal, total, problems)."""
    problems = []
    raw = os.path.join(work, f"{label}.f16")
    proc = subprocess.run([dequant, ckpt, raw], capture_output=True, text=True)
    if proc.returncode:
        fail(f"{label}: {dequant} exited {proc.returncode}: {proc.stderr.strip()}")
    ours = {}
    blob = np.fromfile(raw, dtype=np.float16)
    for line in proc.stdout.splitlines():
        t = json.loads(line)
        n, k = t["shape"]
        ours[t["name"]] = (t["bits"], blob[t["offset"] // 2: t["offset"] // 2 + n * k].reshape(n, k))
    os.unlink(raw)

    model = load(ckpt, torch.float16, log, lines).model
    theirs = {name: m for name, m in model.named_modules() if hasattr(m, "qweight") and hasattr(m, "dequantize_weight")}
    for name in sorted(set(ours) - set(theirs)):
        problems.append(f"{label}: {name} is packed but GPTQModel built no quantized module for it")
    for name in sorted(set(theirs) - set(ours)):
        problems.append(f"{label}: GPTQModel built a quantized module {name} that mode did not pack")
    equal, differ = 0, []
    for name in sorted(set(ours) & set(theirs)):
        bits, w = ours[name]
        m = theirs[name]
        want = dynamic_bits(qc, name)
        if not (m.bits == bits == want):
            problems.append(f"{label}: {name}: GPTQModel {m.bits} bits, mode {bits}, dynamic {want}")
            continue
        with torch.inference_mode():
            d = m.dequantize_weight().T.contiguous()
        if d.dtype != torch.float16 or tuple(d.shape) != w.shape:
            problems.append(f"{label}: {name}: GPTQModel dequantises to {d.dtype} {tuple(d.shape)}, mode to float16 {w.shape}")
            continue
        a = torch.from_numpy(w.copy())
        if torch.equal(d.view(torch.int16), a.view(torch.int16)):
            equal += 1
        else:
            bad = (d.view(torch.int16) != a.view(torch.int16)).nonzero()
            r, c = bad[0].tolist()
            differ.append(f"{label}: {name}: {len(bad)} of {w.size} weights differ, first [{r},{c}]: "
                          f"GPTQModel {float(d[r, c])!r}, mode {float(a[r, c])!r}")
    problems += differ[:3]
    if len(differ) > 3:
        problems.append(f"{label}: and {len(differ) - 3} more projections whose weights differ")
    counts = {}
    for bits, _ in ours.values():
        counts[bits] = counts.get(bits, 0) + 1
    widths = "/".join(str(b) for b in sorted(counts))
    del model
    return widths, equal, len(ours), problems


# ---- the perplexity -----------------------------------------------------------------------------
def read_samples(mode_cat, samples, ckpt):
    """The samples stream's records as (ids, score, images), read through mode-cat; the pixels
    normalised by the checkpoint's image processor (transformers'), without resizing: mode-tokenize
    has already resized them."""
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(ckpt)
    with open(os.path.join(ckpt, "config.json")) as fh:
        image_token_id = json.load(fh)["image_token_id"]
    out = []
    with subprocess.Popen([mode_cat, "--values", samples], stdout=subprocess.PIPE, text=True) as p:
        for line in p.stdout:
            r = json.loads(line)
            if "tokens" not in r:
                continue  # the header and the trailer
            ids = np.asarray(r["tokens"]["data"], dtype=np.int64)
            score = np.asarray(r["score"]["data"], dtype=bool)
            # transformers' mm_token_type_ids: 1 at the image tokens (the stream's modality)
            modality = np.asarray(r["modality"]["data"], dtype=np.int64)
            if not np.array_equal(modality, (ids == image_token_id).astype(np.int64)):
                fail(f"{samples}: {r['id']}: the modality mask is not where the image tokens are")
            images = None
            if r["images"]:
                arrays = [np.asarray(im["pixels"]["data"], dtype=np.uint8).reshape(im["pixels"]["shape"][1:])
                          for im in r["images"]]
                px = proc(images=arrays, do_resize=False, return_tensors="pt")
                if px["image_grid_thw"].tolist() != [im["grid"] for im in r["images"]]:
                    fail(f"{samples}: {r['id']}: the image processor's grid {px['image_grid_thw'].tolist()} "
                         f"is not the stream's {[im['grid'] for im in r['images']]}")
                images = (px["pixel_values"], px["image_grid_thw"])
            out.append((ids, score, modality, images))
    if p.returncode:
        fail(f"{mode_cat} --values {samples} exited {p.returncode}")
    return out


def batches(records):
    """Records sorted by length, cut into batches of at most BATCH_TOKENS padded tokens."""
    order = sorted(range(len(records)), key=lambda i: len(records[i][0]))
    batch, width = [], 0
    for i in order:
        n = len(records[i][0])
        if batch and max(width, n) * (len(batch) + 1) > BATCH_TOKENS:
            yield batch
            batch, width = [], 0
        batch.append(i)
        width = max(width, n)
    if batch:
        yield batch


def perplexity(model, records):
    """{"text"|"answer": (tokens, nll)} as mode-eval(1) defines them: a record whose every
    prediction is scored is text, else answer; nll summed in double."""
    acc = {"text": [0, 0.0], "answer": [0, 0.0]}
    with torch.inference_mode():
        for batch in batches(records):
            width = max(len(records[i][0]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            mm = torch.zeros(len(batch), width, dtype=torch.long)
            pixels, grids = [], []
            for row, i in enumerate(batch):
                r_ids, _, modality, images = records[i]
                ids[row, :len(r_ids)] = torch.from_numpy(r_ids)
                mask[row, :len(r_ids)] = 1
                mm[row, :len(r_ids)] = torch.from_numpy(modality)
                if images:
                    pixels.append(images[0]), grids.append(images[1])
            kw = {}
            if pixels:
                kw = dict(pixel_values=torch.cat(pixels).to(torch.bfloat16), image_grid_thw=torch.cat(grids),
                          mm_token_type_ids=mm)
            logits = model(input_ids=ids, attention_mask=mask, **kw).logits.float()
            for row, i in enumerate(batch):
                r_ids, score, _, _ = records[i]
                n = len(r_ids)
                lp = torch.log_softmax(logits[row, :n - 1], dim=-1)
                nll = -lp.gather(1, torch.from_numpy(r_ids[1:])[:, None])[:, 0].double()
                scored = torch.from_numpy(score[1:])
                group = "text" if bool(scored.all()) else "answer"
                acc[group][0] += int(scored.sum())
                acc[group][1] += float(nll[scored].sum())
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode-cat", required=True)
    ap.add_argument("--dequant", required=True, help="tests/compat/dequant.c, built")
    ap.add_argument("--samples", required=True, help="the samples stream mode-eval evaluated")
    ap.add_argument("--fp-eval", required=True, help="mode-eval's report on the full-precision model")
    ap.add_argument("--work", required=True)
    ap.add_argument("--log", required=True, help="where the libraries' output goes")
    ap.add_argument("checkpoints", nargs="+", metavar="LABEL=DIR:EVAL_JSON")
    args = ap.parse_args()

    torch.manual_seed(0)
    log = open(args.log, "a")
    problems, rows, weights = [], [], {}
    with open(args.fp_eval) as fh:
        weights["full precision"] = json.load(fh)["model"]["weights"]
    records = None
    for spec in args.checkpoints:
        label, rest = spec.split("=", 1)
        ckpt, eval_json = rest.rsplit(":", 1)
        t0 = time.time()
        with open(eval_json) as fh:
            ev = json.load(fh)
        weights[label] = ev["model"]["weights"]
        qc, p = check_files(label, ckpt)
        problems += p
        lines = []
        widths, equal, total, p = check_weights(label, ckpt, qc, args.dequant, args.work, log, lines)
        problems += p
        note(f"{label}: GPTQModel's float16 weights: {equal}/{total} equal mode's")
        if records is None:
            with captured(log, lines):
                records = read_samples(args.mode_cat, args.samples, ckpt)
            note(f"read {len(records)} samples from {args.samples}")
        model = load(ckpt, torch.bfloat16, log, lines).model.eval()
        with captured(log, lines):
            acc = perplexity(model, records)
        del model
        note(f"{label}: perplexity through GPTQModel in bfloat16")
        ppl = []
        for group in ("text", "answer"):
            m = ev["metrics"][group]
            tokens, nll = acc[group]
            if tokens != m["tokens"]:
                problems.append(f"{label}: {group}: {tokens} scored predictions, mode-eval {m['tokens']}")
                continue
            theirs = math.exp(nll / tokens)
            rel = abs(theirs - m["perplexity"]) / m["perplexity"]
            if not rel <= PPL_RTOL:
                problems.append(f"{label}: {group} perplexity: GPTQModel {theirs:.6f}, mode-eval {m['perplexity']:.6f}, "
                                f"relative difference {rel:.2e} > {PPL_RTOL:g}")
            ppl.append((group, m["perplexity"], theirs, rel))
        with open(os.path.join(ckpt, "config.json")) as fh:
            alloc = [b for layer in json.load(fh).get("mode", {}).get("allocation", []) for b in layer["bits"]]
        avg = f" avg {sum(alloc) / len(alloc):.2f}" if alloc else ""
        rows.append((label, qc["checkpoint_format"], widths + avg, ppl, f"{equal}/{total}", warnings_in(lines),
                     time.time() - t0))

    # mode-eval's model.weights identifies the evaluated tensors' bytes: no two checkpoints share one
    seen = {}
    for label, w in weights.items():
        if not w:
            problems.append(f"eval reports: model.weights of {label} is empty")
        elif w in seen:
            problems.append(f"eval reports: model.weights of {label} and of {seen[w]} are both {w}")
        seen.setdefault(w, label)

    print(f"{'checkpoint':<12} {'format':<8} {'widths':<16} {'':<7} {'mode-eval':>10} {'GPTQModel':>10} {'rel diff':>9} "
          f"{'weights equal':>13} {'s':>4}")
    for label, fmt, widths, ppl, eq, _, secs in rows:
        for j, (group, ours, theirs, rel) in enumerate(ppl):
            first = j == 0
            print(f"{label if first else '':<12} {fmt if first else '':<8} {widths if first else '':<16} {group:<7} "
                  f"{ours:>10.4f} {theirs:>10.4f} {rel:>9.1e} {eq if first else '':>13} {f'{secs:.0f}' if first else '':>4}")
    print(f"mode-eval's model.weights: {len(set(weights.values()))} distinct for {len(weights)} evaluations "
          f"({', '.join(weights)})")
    printed = {}
    for label, *_, warns, _ in rows:
        for w in warns:
            printed.setdefault(w, []).append(label)
    for w, labels in printed.items():
        print(f"printed by the libraries ({', '.join(labels)}): {w}")
    for p in problems:
        print(f"compat: FAIL: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"compat: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
