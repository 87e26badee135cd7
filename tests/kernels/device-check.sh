#!/bin/sh
# device-check.sh — on the lent GPU machine, from the repository root, after
# tests/kernels/device-bundle.sh here (run with carry [".device"]): every CUDA test, the GPTQ and
# qmoe benchmarks, and mode-pack on emoji-vl with --device cpu and --device cuda compared
# (checkpoint bytes, evaluation). Logs under $OUT (default /tmp/out); the summary last.
# One call of a few minutes: kernels/NOTES.md records what it printed.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
D=/tmp/mode-bundle
rm -rf "$D" && mkdir -p "$D" && tar xzf .device/bundle.tar.gz -C "$D"
F=/tmp/mode-fixtures
mkdir -p "$F" && for z in tests/fixtures/big/*.gz; do gzip -dc "$z" >"$F/$(basename "$z" .gz)"; done
export LD_LIBRARY_PATH="$D:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" OPENBLAS_CORETYPE=Haswell
export MODE_ROOT=$PWD MODE_BIN=$D MODE_FIXTURES=$PWD/tests/fixtures MODE_BUILD_FIXTURES=$F PATH="$D:$PATH"
summary=$OUT/summary.txt
: >"$summary"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader >>"$summary" 2>&1
date -u >>"$summary"
step() { # name timeout command...
    name=$1 lim=$2
    shift 2
    t0=$(date +%s.%N)
    timeout "$lim" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    printf '%-24s rc=%-3s %6.1f s  %s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$(grep -c '^not ok' "$OUT/$name.log" 2>/dev/null) not ok" >>"$summary"
}
step test_convert 120 "$D/test_convert"
step test_qmoe 120 "$D/test_qmoe"
step test_gptq 300 "$D/test_gptq"
step test_gemm 120 "$D/test_gemm"
step bench_gptq 300 "$D/bench_gptq" 5
step bench_qmoe 180 "$D/bench_qmoe"
# mode-pack on emoji-vl, GPTQ on each device
E=tests/fixtures/emoji-vl
W=/tmp/mode-pack-check
rm -rf "$W" && mkdir -p "$W"
mode-tokenize -m $E/model -o $W/calib.ms $E/calib/data.jsonl && mode-tokenize -m $E/model -o $W/eval.ms $E/eval/data.jsonl &&
    mode-ilp --method uniform --avg-bits 4 -m $E/model -o $W/u4.ms
step pack_cpu 300 mode-pack --device cpu -m $E/model -a $W/u4.ms -o $W/cpu $W/calib.ms
step pack_cuda 300 mode-pack --device cuda -m $E/model -a $W/u4.ms -o $W/cuda $W/calib.ms
cmp -s $W/cpu/model.safetensors $W/cuda/model.safetensors && echo "pack: cpu and cuda checkpoints equal to the byte" >>"$summary" ||
    echo "pack: cpu and cuda checkpoints differ (ties?)" >>"$summary"
for d in cpu cuda; do
    mode-eval -m $W/$d -o $W/$d.json $W/eval.ms 2>>"$OUT/eval.log" &&
        printf 'eval %s: %s\n' "$d" "$(tr -d ' \n' <$W/$d.json | grep -o '"text":{[^}]*}' | head -1)" >>"$summary"
done
grep -h -E "^(ok|not ok)" "$OUT"/test_*.log | grep -c "^ok" | sed 's/^/tests ok: /' >>"$summary"
grep -h "^not ok" "$OUT"/test_*.log >>"$summary"
cat "$OUT/bench_gptq.log" >>"$summary"
tail -12 "$OUT/bench_qmoe.log" >>"$summary"
cat "$summary"
