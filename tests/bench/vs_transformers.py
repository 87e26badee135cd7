"""vs_transformers.py — the work of mode-eval and mode-route-trace done by transformers, timed.

Reads a samples stream written by mode-tokenize (msgpack: header, records, trailer), so that both
sides get the same token ids and the same resized image pixels; runs Qwen3VLMoeForConditionalGeneration
in float32 on the CPU, one record per forward (transformers' usual use: no padding), and prints one
JSON line per (work, threads): CPU seconds of the process, wall seconds, tokens, and a checksum of
the result (the summed loss for eval; the summed top-1 expert ids for route).

  python vs_transformers.py MODEL_DIR STREAM WORK THREADS

WORK: eval (logits and the cross-entropy of the scored tokens, as mode-eval) or route (the decoder
without the lm_head, router logits returned, as mode-route-trace). Run by tests/bench/vs-transformers.sh.
"""
import json
import sys
import time

import msgpack
import numpy as np
import torch
import transformers
from transformers import AutoImageProcessor, Qwen3VLMoeForConditionalGeneration

DT = {"i32": np.int32, "u8": np.uint8, "f32": np.float32, "i64": np.int64}


def tensor(t):
    return np.frombuffer(t["data"], dtype=DT[t["dtype"]]).reshape(t["shape"])


def records(path):
    with open(path, "rb") as f:
        up = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        header = next(up)
        assert header.get("kind") == "samples", header
        for r in up:
            if "end" in r:
                return
            yield r


def main():
    model_dir, stream, work, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    model = Qwen3VLMoeForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    proc = AutoImageProcessor.from_pretrained(model_dir)
    inputs = []
    for r in records(stream):
        ids = torch.from_numpy(tensor(r["tokens"]).astype(np.int64))[None]
        score = tensor(r["score"]).astype(bool)
        kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "mm_token_type_ids": torch.from_numpy(tensor(r["modality"]).astype(np.int64))[None]}
        if r["images"]:
            px = [tensor(im["pixels"])[0] for im in r["images"]]
            out = proc(images=px, do_resize=False, return_tensors="pt")
            grids = [list(im["grid"]) for im in r["images"]]
            assert out["image_grid_thw"].tolist() == grids, (out["image_grid_thw"].tolist(), grids)
            kw["pixel_values"] = out["pixel_values"].to(torch.float32)
            kw["image_grid_thw"] = out["image_grid_thw"]
        labels = ids.clone()
        labels[0, ~torch.from_numpy(score)] = -100
        inputs.append((kw, labels, int(ids.shape[1])))
    # one warm-up forward (allocator, one-time initialisation), not timed
    if inputs:
        model(**inputs[0][0])
    c0, w0 = time.process_time(), time.perf_counter()
    check = 0.0
    for kw, labels, _ in inputs:
        if work == "eval":
            out = model(**kw)
            logits = out.logits[0, :-1].float()
            lab = labels[0, 1:]
            m = lab != -100
            if m.any():
                check += float(torch.nn.functional.cross_entropy(logits[m], lab[m], reduction="sum"))
        else:
            out = model.model(**kw, output_router_logits=True) if "output_router_logits" in model.model.forward.__code__.co_varnames else None
            if out is None or getattr(out, "router_logits", None) is None:
                out = model(**kw, output_router_logits=True)
            check += float(sum(int(rl.argmax(-1).sum()) for rl in out.router_logits))
    c1, w1 = time.process_time(), time.perf_counter()
    print(json.dumps({"side": "transformers", "work": work, "threads": threads, "records": len(inputs),
                      "tokens": sum(n for _, _, n in inputs), "cpu_s": round(c1 - c0, 3), "wall_s": round(w1 - w0, 3),
                      "check": check, "torch": torch.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
