/* attn.h — the attention of the model runtime: softmax(scale · q kᵀ, causal mask) · v within
 * segments of rows, grouped-query heads, and the attention-score column sums mode-route-trace
 * records. The C reference of mode_attention_cuda (kernels/attn.cu); the text decoder (causal,
 * one segment per sequence) and the vision tower (all keys of a frame) both run it
 * (lib/runtime.c).
 *
 * Shapes (struct mode_attn_shape, kernels/mode_cuda.h): q (rows, ld_q) holds n_head heads of
 * head_dim contiguous at the start of each row; k and v (rows, ld_k / ld_v) n_head_kv heads; o
 * (rows, ld_o) n_head heads. Query head h reads kv head h / (n_head / n_head_kv). Segments are
 * rows [seg[s], seg[s+1]) for s < n_seg (seg: n_seg + 1 non-decreasing offsets); a row attends
 * to the rows of its own segment only. Pointers borrowed, host memory; q, k and v may share one
 * buffer (the vision tower's packed qkv rows).
 *
 * Errors: MODE_EUSAGE for a bad shape or segment table, MODE_EUNAVAILABLE when scratch cannot be
 * allocated; the message names the argument. Nothing is written on an error.
 */
#ifndef MODE_ATTN_H
#define MODE_ATTN_H

#include "../kernels/mode_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Query rows per block of scores in mode_attention_ref (the runtime's default attn_block). */
#define MODE_ATTN_BLOCK 512

/* o = softmax(scores) · v per segment and head, in f32 as the runtime computes it: per head,
 * query rows in blocks of `block`; each block's scores (block, keys) by one mode_gemm (q · kᵀ),
 * then multiplied by scale, the causal mask (-inf for key c > row r of the segment) applied,
 * mode_softmax_ref (row maximum subtracted) — the three by mode_vsoftmax_row_scaled, one call
 * per row, the same bits —, and o by one mode_gemm (p · v). The keys of a block are those up to its last row when causal, all the segment's otherwise. The block size only
 * changes the shapes of the products (so the rounding of OpenBLAS), never the mathematics; the
 * runtime passes its attn_block so that its results stay what they were.
 *
 * With sel non-NULL (one byte per row, indexed like q), colsum (one float per row) is first
 * zeroed over rows [0, seg[n_seg]), then receives colsum[c] += p_h[r][c] for every head h
 * (ascending), selected row r and column c ≤ r (causal) or every column of r's segment: the raw
 * sum; the runtime divides it by n_head · n_selected. sel NULL: colsum unused (may be NULL).
 * Scratch: block · (longest segment) floats per thread of the pool, kept across calls
 * (mode_pool_scratch). Segments and heads run on the pool's threads (pool.h); with sel, a
 * segment's heads run in order on one thread, so colsum adds up the same way at any thread count. */
int mode_attention_ref_block(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg,
                             int n_seg, const uint8_t *sel, float *colsum, float *o, int64_t block, struct mode_err *err);
/* The same with block = MODE_ATTN_BLOCK. */
int mode_attention_ref(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg, int n_seg,
                       const uint8_t *sel, float *colsum, float *o, struct mode_err *err);

/* The checks both mode_attention_ref and mode_attention_cuda make, messages prefixed by `who`:
 * head counts (n_head_kv ≥ 1 dividing n_head), head_dim ≥ 1, every stride at least its heads,
 * a finite scale, n_seg ≥ 0 with seg non-NULL, seg[0] ≥ 0 and ascending (equal offsets, empty
 * segments, allowed), q, k, v and o given when a segment has rows, colsum given with sel.
 * MODE_OK or MODE_EUSAGE. */
int mode_attention_check(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg, int n_seg,
                         const uint8_t *sel, const float *colsum, const float *o, const char *who, struct mode_err *err);

#ifdef __cplusplus
}
#endif

#endif
