#!/bin/sh
# device-check.sh — on the lent GPU machine, from the repository root, after
# tests/kernels/device-bundle.sh here (run with carry [".device"]): every CUDA test, the GPTQ and
# qmoe benchmarks, mode-bench's default table, and mode-pack on emoji-vl with --device cpu and
# --device cuda compared (checkpoint bytes, evaluation). $OUT (default /tmp/out) gets summary.txt
# and all.log; the summary is printed last.
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
L=$OUT/all.log # every step's output, in order (few files come back from the machine)
: >"$L"
step() { # name timeout command...
    name=$1 lim=$2
    shift 2
    t0=$(date +%s.%N)
    timeout "$lim" "$@" >/tmp/step.log 2>&1
    rc=$?
    t1=$(date +%s.%N)
    { echo "==== $name (rc $rc)"; cat /tmp/step.log; } >>"$L"
    printf '%-24s rc=%-3s %6.1f s  %s not ok\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$(grep -c '^not ok' /tmp/step.log)" >>"$summary"
    grep '^not ok' /tmp/step.log >>"$summary"
    case $name in mode_bench* | bench_*) cat /tmp/step.log >>"$summary" ;; esac
}
step test_convert 60 "$D/test_convert"
step test_qmoe 60 "$D/test_qmoe"
step test_gptq 120 "$D/test_gptq"
step test_gemm 60 "$D/test_gemm"
step test_moe 60 "$D/test_moe"
step test_rtmoe 120 "$D/test_rtmoe"
# mode-pack on emoji-vl, GPTQ on each device
E=tests/fixtures/emoji-vl
W=/tmp/mode-pack-check
rm -rf "$W" && mkdir -p "$W"
mode-tokenize -m $E/model -o $W/calib.ms $E/calib/data.jsonl && mode-tokenize -m $E/model -o $W/eval.ms $E/eval/data.jsonl &&
    mode-ilp --method uniform --avg-bits 4 -m $E/model -o $W/u4.ms
step pack_cpu 120 mode-pack --device cpu -m $E/model -a $W/u4.ms -o $W/cpu $W/calib.ms
step pack_cuda 120 mode-pack --device cuda -m $E/model -a $W/u4.ms -o $W/cuda $W/calib.ms
cmp -s $W/cpu/model.safetensors $W/cuda/model.safetensors && echo "pack: cpu and cuda checkpoints equal to the byte" >>"$summary" ||
    echo "pack: cpu and cuda checkpoints differ (ties?)" >>"$summary"
for d in cpu cuda; do # the CPU-packed checkpoint evaluated on each device, and the GPU-packed one on the CPU
    mode-eval --device $d -m $W/cpu -o $W/eval-$d.json $W/eval.ms 2>>"$L" &&
        printf 'eval of the cpu pack on %s: %s\n' "$d" "$(tr -d ' \n' <$W/eval-$d.json | grep -o '"metrics":{"text":{[^}]*},"answer":{[^}]*}')" >>"$summary"
done
mode-eval --device cpu -m $W/cuda -o $W/eval-cudapack.json $W/eval.ms 2>>"$L" &&
    printf 'eval of the cuda pack on cpu: %s\n' "$(tr -d ' \n' <$W/eval-cudapack.json | grep -o '"metrics":{"text":{[^}]*},"answer":{[^}]*}')" >>"$summary"
# route-trace with every product on the GPU against the CPU: the frequency tables
step trace_cpu 120 sh -c "mode-route-trace --device cpu -m $E/model $W/calib.ms | mode-vis-denoise -o $W/freq-cpu.ms"
step trace_cuda 120 sh -c "MODE_GPU_GEMM=all mode-route-trace --device cuda -m $E/model $W/calib.ms | mode-vis-denoise -o $W/freq-cuda.ms"
[ -s $W/freq-cuda.ms ] && mode-cat --values $W/freq-cpu.ms | sed 1d >$W/f1 && mode-cat --values $W/freq-cuda.ms | sed 1d >$W/f2 &&
    echo "route-trace + vis-denoise, cpu vs cuda: $(cmp -s $W/f1 $W/f2 && echo identical || echo "$(diff $W/f1 $W/f2 | grep -c '^<') records differ")" >>"$summary"
mode-cat -J -o $W/alloc.ms tests/fixtures/streams/alloc.jsonl
step mode_bench_small 60 mode-bench --alloc $W/alloc.ms --layer 1 --experts 16 --topk 2 --hidden 128 --width 96 --group 32 --iters 5 --pool 4 \
    --bits 2,3,4,16,mixed --tokens 1,100
# the timings last: a run cut short still has the checks above
step bench_gptq 150 "$D/bench_gptq" 5
step mode_bench 200 mode-bench
step bench_qmoe 120 "$D/bench_qmoe" # v3 and v5
grep -c "^ok" "$L" | sed 's/^/tests ok: /' >>"$summary"
cat "$summary"
