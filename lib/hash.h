/* hash.h — one pass over a tensor's raw bytes: a fast 128-bit hash of them, and whether any
 * element is a non-finite float (NaN or ±Inf). The model's `weights` fingerprint is built from it
 * (safetensors.h, mode_st_set_scan), over every byte of a checkpoint at open.
 *
 * Why not SHA-256 (sha256.h): the real checkpoint is 61 GB and is hashed by every program that
 * opens it; sha256.c ran at 0.17 GB/s a core, this hash (with the finite test) at 7.3-7.8 GB/s
 * a core from a page-cached mapping, where a bare read of every word ran at 8.4-9.5 GB/s
 * (tests/bench/bench_fingerprint.c, 3 GB, on the shared 2-core build machine). It guards against
 * accidents — a corrupted, re-quantized or poisoned checkpoint — not against an adversary: it is
 * not a cryptographic hash.
 *
 * The hash: 8 lanes of 64 bits, each absorbing every 8th little-endian 64-bit word w of the input
 * by acc = (acc ^ w) * K, acc ^= acc >> 29. Both steps are bijections of acc and of w, so changing
 * one word (one bit of one element) always changes its lane's final state; the lanes are then
 * folded, with the length, through bijective mixers into two 64-bit words. A tail shorter than a
 * word is zero-padded (the length tells it apart).
 *
 * The finite test works on the same words, several elements at once: an element is non-finite when
 * its exponent bits are all ones; with the exponent field masked out, adding its lowest bit carries
 * into the element's sign bit exactly then (BF16 lane: (x & 0x7f80) + 0x0080 reaches 0x8000). Float
 * dtypes: F64, F32, F16, BF16, F8_E5M2 (NaN, Inf) and F8_E4M3 (only NaN: S.1111.111). Other dtypes
 * are hashed only. Elements must start at p (a word never straddles two elements).
 *
 * No allocation; any alignment; thread-safe (no state).
 */
#ifndef MODE_HASH_H
#define MODE_HASH_H

#include "mode.h"

#include <stdbool.h>

/* Hashes n bytes at p into out[2]; returns true when dtype is a float type and some element of
 * the n / size(dtype) elements at p is non-finite (mode_nonfinite_find then says which). */
bool mode_hash_scan(const void *p, size_t n, enum mode_dtype dtype, uint64_t out[2]);

/* The index of the first non-finite element among the n / size(dtype) at p, or -1 (also for a
 * dtype that is not a float type); *what (may be NULL) gets "nan", "inf" or "-inf". */
int64_t mode_nonfinite_find(const void *p, size_t n, enum mode_dtype dtype, const char **what);

#endif
