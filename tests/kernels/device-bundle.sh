#!/bin/sh
# device-bundle.sh — here, before a run on the lent GPU machine: builds with CUDA, then packs the
# programs, the CUDA tests and benchmarks, the kernels' object lib/libmode-cuda.so (which they open
# when a GPU is wanted; device-check.sh names it in MODE_CUDA_LIB) and the libraries they need
# into .device/bundle.tar.xz (.device/ is ignored: .git/info/exclude), without the CUDA libraries
# (cudart, cuBLAS, cuSOLVER: the GPU machine has its own CUDA 13, and cuBLAS alone exceeds the
# 64 MiB that travels) and without the C runtime. Then, on the machine:
# tests/kernels/device-check.sh (carry .device).
set -eu
cd "$(dirname "$0")/../.."
KT="test_convert test_qmoe test_gptq test_gemm test_moe test_rtmoe test_ops test_attn test_layer test_qgemm"
LT="test_forward" # CPU tests with GPU parts
BT="bench_gptq bench_qmoe bench_layer"
make CUDA=1 -j"$(nproc)" all bench $(for t in $KT; do printf 'build/tests/kernels/%s ' "$t"; done) $(for t in $LT; do printf 'build/tests/lib/%s ' "$t"; done) >/dev/null
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
skip='/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s|libz|libcudart|libcublas|libcublasLt|libcusolver|libcusparse|libnvJitLink)\.so'
for b in lib/libmode-cuda.so bin/mode-* $(for t in $KT; do printf 'build/tests/kernels/%s ' "$t"; done) $(for t in $LT; do printf 'build/tests/lib/%s ' "$t"; done) $(for t in $BT; do printf 'build/bench/%s ' "$t"; done); do
    cp -f "$b" "$d/"
    ldd "$b" | awk '/=>/ { print $3 }' | grep -v -E "$skip" | while read -r lib; do
        [ -n "$lib" ] && cp -fL "$lib" "$d/"
    done
done
# debug sections off the programs and the object (symbols kept), and one solid xz archive: every
# program holds the same library, which xz's large window stores once (2026-12-07: 39 files,
# 7.8 MB, of the 64 MiB that travel)
for b in "$d"/libmode-cuda.so "$d"/mode-* "$d"/test_* "$d"/bench_*; do strip --strip-debug "$b"; done
mkdir -p .device
rm -f .device/bundle.tar.gz .device/bundle.tar.xz
tar cf - -C "$d" . | xz -9 -T2 >.device/bundle.tar.xz
echo "device-bundle: $(ls "$d" | wc -l) files, $(du -h .device/bundle.tar.xz | cut -f1) in .device/bundle.tar.xz"
