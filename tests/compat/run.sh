#!/bin/sh
# tests/compat/run.sh — `make compat`: GPTQModel, the loader mode-pack's checkpoints are written for,
# reads them as mode does. Run by `make compat` from the repository root after `make all` (CI runs it
# after `make check`, .ci/run).
#
# 1. A Python environment at $COMPAT_VENV (default build/compat-venv) with the exact packages of
#    tests/compat/requirements.txt (torch, torchvision, transformers, GPTQModel; from PyPI), reused
#    while its stamp matches that file and the Python it was made with. When it must be made and
#    PyPI cannot be reached (pip reports a connection error), prints one line
#    `SKIP: make compat: PyPI cannot be reached (...)` and exits 0.
# 2. The pipeline on the embedded emoji-vl model (tests/fixtures/emoji-vl), into build/compat/:
#    tokenize, route-trace, vis-denoise, sensitivity (layer metric), mode-ilp at 2.5 average bits
#    (widths 2, 3, 4) and uniform 4 bits, mode-pack of the mixed allocation in both formats
#    (gptq_v2, the default, and gptq = v1) and of the uniform one, mode-eval of the three and of
#    the full-precision model on the 929 evaluation records.
# 3. tests/compat/compat.py in the environment: per checkpoint, the files' metadata, GPTQModel's
#    quantized modules and widths, its float16 dequantised weights against mode's bit for bit
#    (tests/compat/dequant.c), its bfloat16 perplexity against mode-eval's; prints the table.
# Any failure exits non-zero with a message; logs stay in build/compat/.
set -eu

ROOT=$(pwd)
BIN=${MODE_BIN:-$ROOT/bin}
VENV=${COMPAT_VENV:-$ROOT/build/compat-venv}
PYTHON=${PYTHON:-python3}
DEQUANT=${COMPAT_DEQUANT:-$ROOT/build/tests/compat/dequant}
REQ=$ROOT/tests/compat/requirements.txt
E=$ROOT/tests/fixtures/emoji-vl
W=$ROOT/build/compat
start=$(date +%s)

say() { echo "compat: $*" >&2; }
die() { echo "compat: FAIL: $*" >&2; exit 1; }
# runs a step with its output in $W/LOG; on failure shows the end of it
step() { # log cmd...
    log=$W/$1; shift
    if ! "$@" >>"$log" 2>&1; then
        tail -n 20 "$log" | sed 's/^/  | /' >&2
        die "$* (exit status above; log: $log)"
    fi
}

[ -x "$BIN/mode-pack" ] || die "$BIN/mode-pack is missing: run make first"
[ -x "$DEQUANT" ] || die "$DEQUANT is missing: make compat builds it"
rm -rf "$W"
mkdir -p "$W"

# ---- 1. the environment ---------------------------------------------------------------------------
stamp="requirements $(sha256sum <"$REQ" | cut -d' ' -f1), python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none)"
if [ -f "$VENV/.compat-stamp" ] && [ "$(cat "$VENV/.compat-stamp")" = "$stamp" ] && [ -x "$VENV/bin/python" ]; then
    say "reusing $VENV"
else
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
        die "$PYTHON is missing or older than 3.10 (GPTQModel needs 3.10 or later; set PYTHON=...)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >"$W/venv.log" 2>&1 || {
        cat "$W/venv.log" >&2
        die "$PYTHON -m venv $VENV failed (on Debian: apt-get install python3-venv)"
    }
    pip_version=$(sed -n 's/^pip==//p' "$REQ")
    # can pip reach its index? One small package, with pip's own configuration (index, proxy,
    # certificates): a connection that fails is a SKIP, any other failure is a failure
    if ! "$VENV/bin/python" -m pip download --no-deps --no-cache-dir --timeout 30 --retries 1 -d "$W/probe" \
        "pip==$pip_version" >"$W/probe.log" 2>&1; then
        rm -rf "$VENV"
        net=$(grep -E -m 1 'connection broken by|Could not fetch URL|ProxyError|SSLError|[Tt]imed out|NameResolution|unreachable' \
            "$W/probe.log" || true)
        if [ -z "$net" ]; then
            cat "$W/probe.log" >&2
            die "pip download pip==$pip_version failed, with no connection error (above)"
        fi
        why=$(printf '%s\n' "$net" | sed -n "s/.*\(Failed to establish a new connection: [^')]*\).*/\1/p")
        echo "SKIP: make compat: PyPI cannot be reached (${why:-$(printf '%s' "$net" | cut -c1-160)})"
        exit 0
    fi
    say "installing tests/compat/requirements.txt into $VENV (about 3 GB from PyPI; log: $W/pip.log)"
    step pip.log "$VENV/bin/python" -m pip install --no-deps "pip==$pip_version" \
        "setuptools==$(sed -n 's/^setuptools==//p' "$REQ")"
    # --no-deps: the file lists every package, nothing is resolved; --no-build-isolation: GPTQModel's
    # source distribution is built with the pinned setuptools installed just before
    step pip.log "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -r "$REQ"
    step pip.log "$VENV/bin/python" -m pip check
    echo "$stamp" >"$VENV/.compat-stamp"
    say "environment ready ($(($(date +%s) - start)) s)"
fi

# ---- 2. the pipeline --------------------------------------------------------------------------------
export MODE_PROGRESS=off
step pipeline.log "$BIN/mode-tokenize" -m "$E/model" --root "$E/calib" -o "$W/calib.ms" "$E/calib/data.jsonl"
step pipeline.log "$BIN/mode-tokenize" -m "$E/model" --root "$E/eval" -o "$W/eval.ms" "$E/eval/data.jsonl"
step pipeline.log "$BIN/mode-route-trace" -m "$E/model" -o "$W/trace.ms" "$W/calib.ms"
step pipeline.log "$BIN/mode-vis-denoise" --keep-out "$W/keep.ms" -o "$W/freq.ms" "$W/trace.ms"
step pipeline.log "$BIN/mode-sensitivity" -m "$E/model" --metric layer --bits 2,3,4 --vision-tokens key \
    --keep "$W/keep.ms" -o "$W/sens.ms" "$W/calib.ms"
step pipeline.log "$BIN/mode-ilp" --method mode --avg-bits 2.5 --bits 2,3,4 -m "$E/model" -f "$W/freq.ms" \
    -s "$W/sens.ms" -o "$W/alloc-mixed.ms"
step pipeline.log "$BIN/mode-ilp" --method uniform --avg-bits 4 --bits 2,3,4 -m "$E/model" -o "$W/alloc-w4.ms"
step pipeline.log "$BIN/mode-pack" -m "$E/model" -a "$W/alloc-mixed.ms" -o "$W/mixed-v2" "$W/calib.ms"
step pipeline.log "$BIN/mode-pack" -m "$E/model" -a "$W/alloc-mixed.ms" --format gptq -o "$W/mixed-v1" "$W/calib.ms"
step pipeline.log "$BIN/mode-pack" -m "$E/model" -a "$W/alloc-w4.ms" -o "$W/w4-v2" "$W/calib.ms"
step pipeline.log "$BIN/mode-eval" -m "$E/model" -o "$W/eval-fp.json" "$W/eval.ms"
for c in mixed-v2 mixed-v1 w4-v2; do
    step pipeline.log "$BIN/mode-eval" -m "$W/$c" -o "$W/eval-$c.json" "$W/eval.ms"
done
say "packed and evaluated with mode ($(($(date +%s) - start)) s)"

# ---- 3. GPTQModel ---------------------------------------------------------------------------------
if ! "$VENV/bin/python" "$ROOT/tests/compat/compat.py" --mode-cat "$BIN/mode-cat" --dequant "$DEQUANT" \
    --samples "$W/eval.ms" --fp-eval "$W/eval-fp.json" --work "$W" --log "$W/gptqmodel.log" \
    "mixed-v2=$W/mixed-v2:$W/eval-mixed-v2.json" "mixed-v1=$W/mixed-v1:$W/eval-mixed-v1.json" \
    "w4-v2=$W/w4-v2:$W/eval-w4-v2.json" >"$W/table.txt"; then
    cat "$W/table.txt"
    die "GPTQModel and mode disagree (above; the libraries' output: $W/gptqmodel.log)"
fi
cat "$W/table.txt"
say "passed in $(($(date +%s) - start)) s"
