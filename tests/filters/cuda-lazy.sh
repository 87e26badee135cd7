#!/bin/sh
# CUDA loaded only when used (issue 20): linked into every program, cudart, cuBLAS and cuSOLVER
# cost each run 265 MB resident and ~1 GB of address space before main (mode-cat under
# `ulimit -v 1000000` failed to start). No program links a CUDA library; a run on the CPU maps
# none and fits a small address space; where the kernels' object lib/libmode-cuda.so was built,
# --device cuda finds it (MODE_CUDA_LIB, else ../lib or ../lib/mode beside the program) and, on a
# machine without a GPU, exits 69 saying why. Passes with CUDA=0 too (the object's checks skipped).
. "${MODE_ROOT:?run through make check}/tests/tap.sh"
E=$MODE_FIXTURES/emoji-vl
CUDA_RE='lib(cuda|cudart|cublas|cublasLt|cusolver|cusparse|nvJitLink)\.so'
skip() { n_test=$((n_test + 1)); echo "ok $n_test # skip $1"; }
unset MODE_CUDA_LIB # the programs find the object beside them (make check names it for the C tests)

for b in "$MODE_BIN"/mode-*; do
    libs=$(ldd "$b" | grep -E "$CUDA_RE" | awk '{ print $1 }' | tr '\n' ' ')
    is "$libs" "" "$(basename "$b") links no CUDA library"
done

head -40 "$E/calib/data.jsonl" >"$T/calib.jsonl"
mode-tokenize -m "$E/model" -o "$T/calib.ms" "$T/calib.jsonl"
sed -n 581,620p "$E/eval/data.jsonl" >"$T/eval.jsonl" # text and image samples: the vision tower runs too
mode-tokenize -m "$E/model" --root "$E/eval" -o "$T/eval.ms" "$T/eval.jsonl"

# A small address space. Measured 2026-12-07: mode-cat 5 MB resident; mode-eval on these samples
# 349 MB of address space at its peak with 2 OpenBLAS threads, 1.44 GB with the CUDA libraries
# linked. ASan reserves terabytes of shadow memory: no ulimit -v under it.
if ldd "$MODE_BIN/mode-cat" | grep -q libasan; then
    skip "ulimit -v: ASan's shadow memory"
    skip "ulimit -v: ASan's shadow memory"
else
    run sh -c 'ulimit -v 200000 && exec mode-cat -c "$1"' sh "$T/calib.ms"
    is "$rc" 0 "mode-cat -c runs in 200 MB of address space"
    OPENBLAS_NUM_THREADS=2 run sh -c 'ulimit -v 800000 && exec mode-eval --device cpu -m "$1" -o "$2" "$3"' sh "$E/model" "$T/eval.json" "$T/eval.ms"
    is "$rc" 0 "mode-eval --device cpu (text and images) runs in 800 MB of address space"
fi

# no CUDA library loaded during a run on the CPU (LD_DEBUG=libs: ld.so names each object it initialises)
LD_DEBUG=libs run mode-route-trace --device cpu -m "$E/model" -o "$T/cpu.ms" "$T/calib.ms"
is "$rc" 0 "route-trace --device cpu runs"
is "$(grep 'calling init' "$T/err" | grep -E "$CUDA_RE" | awk '{ print $NF }' | tr '\n' ' ')" "" "route-trace --device cpu loads no CUDA library"

if ! grep -q MODE_CUDA_LIB "$MODE_BIN/mode-route-trace"; then
    skip "CUDA not compiled in (kernels/stub.c): no object to check"
    done_testing
    exit
fi
so=$MODE_ROOT/lib/libmode-cuda.so
ok=0 && [ -f "$so" ] && ok=1
is "$ok" 1 "the build made lib/libmode-cuda.so"

# what the object calls back is exported by every program (else opening it fails on the GPU machine)
need=$(nm -D --undefined-only "$so" | awk '$2 ~ /^mode_/ { print $2 }')
missing=
for b in "$MODE_BIN"/mode-*; do
    have=$(nm -D --defined-only "$b" | awk '{ print $3 }')
    for s in $need; do echo "$have" | grep -qx "$s" || missing="$missing $(basename "$b"):$s"; done
done
is "$missing" "" "every program exports what the object needs from it ($(echo $need | wc -w) functions)"

# an object named by MODE_CUDA_LIB that is not there: --device cuda says which path, auto runs on the CPU
MODE_CUDA_LIB=$T/none/libmode-cuda.so run mode-route-trace --device cuda -m "$E/model" -o "$T/x.ms" "$T/calib.ms"
is "$rc" 69 "--device cuda, MODE_CUDA_LIB missing: exit 69"
is "$(cat "$T/err")" "mode-route-trace: --device cuda: CUDA is unavailable: $T/none/libmode-cuda.so (MODE_CUDA_LIB): No such file or directory" \
    "... naming the path"
MODE_CUDA_LIB=$T/none/libmode-cuda.so run mode-route-trace -m "$E/model" -o "$T/auto.ms" "$T/calib.ms"
is "$rc" 0 "--device auto with no object runs"
same_file "$T/cpu.ms" "$T/auto.ms" "... on the CPU"

# a program away from the build tree looks in ../lib and ../lib/mode beside it, and says so
mkdir -p "$T/tree/bin"
cp "$MODE_BIN/mode-route-trace" "$T/tree/bin/"
run "$T/tree/bin/mode-route-trace" --device cuda -m "$E/model" -o "$T/x.ms" "$T/calib.ms"
is "$(cat "$T/err")" "mode-route-trace: --device cuda: CUDA is unavailable: $T/tree/bin/../lib/libmode-cuda.so and $T/tree/bin/../lib/mode/libmode-cuda.so: not found (MODE_CUDA_LIB can name another place)" \
    "without the object, the places looked in are named"
mkdir -p "$T/tree/lib/mode" && ln -s "$so" "$T/tree/lib/mode/libmode-cuda.so"
run "$T/tree/bin/mode-route-trace" --device cuda -m "$E/model" -o "$T/x.ms" "$T/calib.ms"
if grep -q 'not found' "$T/err"; then fail "the object in ../lib/mode is found"; diag "$(cat "$T/err")"; else pass "the object in ../lib/mode is found"; fi

# this machine's GPU, if any, through the object found beside bin/
run mode-route-trace --device cuda -m "$E/model" -o "$T/cuda.ms" "$T/calib.ms"
if [ "$rc" = 0 ]; then
    pass "--device cuda runs (a GPU is present)"
    skip "a GPU is present: --device auto may load CUDA"
    skip "a GPU is present"
else
    is "$rc" 69 "--device cuda without a GPU: exit 69"
    has "$T/err" "mode-route-trace: --device cuda: CUDA is unavailable: " "... saying why"
    diag "$(cat "$T/err")"
    # without a GPU, --device auto (the default) is a run on the CPU: nothing of CUDA loaded
    LD_DEBUG=libs run mode-route-trace -m "$E/model" -o "$T/auto.ms" "$T/calib.ms"
    is "$(grep 'calling init' "$T/err" | grep -E "$CUDA_RE" | awk '{ print $NF }' | tr '\n' ' ')" "" "--device auto without a GPU loads no CUDA library"
fi
done_testing
