#!/bin/sh
# device-check.sh — on the lent GPU machine, from the repository root, after
# tests/kernels/device-bundle.sh here (run with carry [".device"]): every CUDA test, route-trace
# and mode-pack/mode-eval on emoji-vl across devices, then the benchmarks (GPTQ, the resident
# layer with the pipeline estimate, qmoe decode versions, mode-bench's default table). $OUT
# (default /tmp/out) gets summary.txt and all.log; the summary is printed last.
#   sh tests/kernels/device-check.sh [tests|bench|all]      (default all)
# Sized for a session's 15 device minutes: the tests part takes about 2 minutes, the benchmarks
# about 5; every step has its own time limit, so a hang costs that step only; a failed CUDA test
# is rerun under compute-sanitizer (memcheck; the first three). kernels/NOTES.md
# records what it printed.
set -u
PART=${1:-all}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
D=/tmp/mode-bundle
rm -rf "$D" && mkdir -p "$D"
tar xJf .device/bundle.tar.xz -C "$D" 2>/dev/null || # without xz(1): Python's lzma
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .device/bundle.tar.xz "$D"
F=/tmp/mode-fixtures
mkdir -p "$F" && for z in tests/fixtures/big/*.gz; do gzip -dc "$z" >"$F/$(basename "$z" .gz)"; done
export LD_LIBRARY_PATH="$D:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" OPENBLAS_CORETYPE=Haswell
export MODE_ROOT=$PWD MODE_BIN=$D MODE_FIXTURES=$PWD/tests/fixtures MODE_BUILD_FIXTURES=$F PATH="$D:$PATH"
# the kernels: the bundle is flat, so the programs' own search (../lib beside them) does not find them
export MODE_CUDA_LIB=$D/libmode-cuda.so
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
    # a CUDA test that failed is run again under compute-sanitizer's memcheck (the first 3 only:
    # it is slow), so that one call says where an out-of-bounds access or a launch error is
    case $name in test_*)
        if { [ "$rc" != 0 ] || grep -q '^not ok' /tmp/step.log; } && [ "$n_san" -lt 3 ] && [ -n "$SAN" ]; then
            n_san=$((n_san + 1))
            timeout 150 "$SAN" --tool memcheck --print-limit 10 "$@" >/tmp/san.log 2>&1
            { echo "==== $name under compute-sanitizer (rc $?)"; cat /tmp/san.log; } >>"$L"
            { echo "---- $name under compute-sanitizer:"; grep -E '^=========' /tmp/san.log | head -40; } >>"$summary"
        fi ;;
    esac
}
n_san=0
SAN=$(command -v compute-sanitizer || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && echo /usr/local/cuda/bin/compute-sanitizer; } || true)
if [ "$PART" != bench ]; then
for t in test_convert test_ops test_attn test_layer test_qmoe test_qgemm test_moe test_gemm test_rtmoe; do step $t 60 "$D/$t"; done
step test_gptq 120 "$D/test_gptq"
step test_forward 120 "$D/test_forward"
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
MODE_QMOE_PREFILL=v1 mode-eval --device cuda -m $W/cpu -o $W/eval-v1.json $W/eval.ms 2>>"$L" &&
    printf 'eval of the cpu pack on cuda, prefill v1: %s\n' "$(tr -d ' \n' <$W/eval-v1.json | grep -o '"metrics":{"text":{[^}]*},"answer":{[^}]*}')" >>"$summary"
mode-eval --device cpu -m $W/cuda -o $W/eval-cudapack.json $W/eval.ms 2>>"$L" &&
    printf 'eval of the cuda pack on cpu: %s\n' "$(tr -d ' \n' <$W/eval-cudapack.json | grep -o '"metrics":{"text":{[^}]*},"answer":{[^}]*}')" >>"$summary"
# route-trace with every product on the GPU against the CPU: the frequency tables
step trace_cpu 120 sh -c "mode-route-trace --device cpu -m $E/model $W/calib.ms | mode-vis-denoise -o $W/freq-cpu.ms"
# the layers resident on the GPU (f32), and the CPU layers with every product offloaded
step trace_cuda 120 sh -c "mode-route-trace --device cuda -m $E/model -o $W/trace-cuda.ms $W/calib.ms && mode-vis-denoise -o $W/freq-cuda.ms $W/trace-cuda.ms"
step trace_offload 120 sh -c "MODE_RT_RESIDENT=0 MODE_GPU_GEMM=all mode-route-trace --device cuda -m $E/model $W/calib.ms | mode-vis-denoise -o $W/freq-offload.ms"
mode-route-trace --device cpu -m $E/model -o $W/trace-cpu.ms $W/calib.ms 2>>"$L"
for v in cuda offload; do
    [ -s $W/freq-$v.ms ] && mode-cat --values $W/freq-cpu.ms | sed 1d >$W/f1 && mode-cat --values $W/freq-$v.ms | sed 1d >$W/f2 &&
        echo "route-trace + vis-denoise, cpu vs $v: $(cmp -s $W/f1 $W/f2 && echo identical || echo "$(diff $W/f1 $W/f2 | grep -c '^<') records differ")" >>"$summary"
done
# the routing itself, token by token: records whose experts differ between the CPU and the resident trace
[ -s $W/trace-cuda.ms ] && mode-cat --values $W/trace-cpu.ms | sed 1d | grep -o '"experts":{[^}]*}' >$W/t1 2>>"$L" &&
    mode-cat --values $W/trace-cuda.ms | sed 1d | grep -o '"experts":{[^}]*}' >$W/t2 2>>"$L" &&
    echo "route-trace experts, cpu vs resident: $(wc -l <$W/t1) and $(wc -l <$W/t2) records, $(diff $W/t1 $W/t2 | grep -c '^<') differ" >>"$summary" &&
    diff $W/t1 $W/t2 | head -c 4000 >>"$L"
# sensitivity (layer metric) with its capturing passes resident, against the CPU's
step sens_cpu 120 mode-sensitivity --device cpu --metric layer --samples 60 -m $E/model -o $W/sens-cpu.ms $W/calib.ms
step sens_cuda 120 mode-sensitivity --device cuda --metric layer --samples 60 -m $E/model -o $W/sens-cuda.ms $W/calib.ms
[ -s $W/sens-cuda.ms ] && mode-cat --values $W/sens-cpu.ms | sed '1d;$d' >$W/s1 && mode-cat --values $W/sens-cuda.ms | sed '1d;$d' >$W/s2 &&
    echo "sensitivity --metric layer, cpu vs cuda: $(cmp -s $W/s1 $W/s2 && echo identical || echo "$(diff $W/s1 $W/s2 | grep -c '^<') of $(wc -l <$W/s1) layer records differ (f32 rounding?)")" >>"$summary" &&
    diff $W/s1 $W/s2 | head -c 3000 >>"$L"
mode-cat -J -o $W/alloc.ms tests/fixtures/streams/alloc.jsonl
step mode_bench_small 60 mode-bench --alloc $W/alloc.ms --layer 1 --experts 16 --topk 2 --hidden 128 --width 96 --group 32 --iters 5 --pool 4 \
    --bits 2,3,4,16,mixed --tokens 1,100
fi
# the timings last: a run cut short still has the checks above
if [ "$PART" != tests ]; then
step bench_gptq 150 "$D/bench_gptq" 5
gq=$(grep 'layer, all 128 experts (batched' "$L" | tail -1 | awk '{ print $(NF-1) }')
hs=$(grep '^hessians' "$L" | tail -1 | awk '{ print $(NF-1) }')
step bench_layer 150 "$D/bench_layer" 3 "${gq:-0}" "${hs:-0}"
step bench_qmoe 120 "$D/bench_qmoe" # v3 and v5
step mode_bench 200 mode-bench
fi
grep -c "^ok" "$L" | sed 's/^/tests ok: /' >>"$summary"
cat "$summary"
