/* mode.h — what every part of libmode-core shares: status codes, the error record, assertions,
 * element types (dtypes) and the shape vocabulary.
 *
 * Error convention: a library function returns an int status, MODE_OK (0) on success or one of
 * the MODE_E* codes below, and fills the caller's `struct mode_err` with one line naming the
 * file, record or tensor at fault. The library never prints and never exits; only a broken
 * internal invariant aborts (MODE_ASSERT). The status values are the sysexits(3) codes the
 * filters exit with, so a filter can `return err.code`.
 *
 * Shape vocabulary (used in every header): n_tok tokens, n_embd model width, n_head / n_head_kv
 * attention heads, head_dim, n_ff dense MLP width, n_ff_exp expert width, n_expert routed experts,
 * n_expert_used experts per token (top-k), n_layer decoder layers, n_vocab vocabulary size.
 * Matrices are row-major; an nn.Linear weight is (out, in).
 */
#ifndef MODE_H
#define MODE_H

#include <stddef.h>
#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mode stores tensors little-endian and reads them in place: a little-endian host is required"
#endif

#ifdef __cplusplus
extern "C" { /* the CUDA sources in kernels/ include this header */
#endif

#define MODE_VERSION "0.1.0"

/* status codes = exit codes (sysexits subset, listed in every man page) */
enum {
    MODE_OK = 0,
    MODE_EUSAGE = 64,       /* bad command line */
    MODE_EDATA = 65,        /* malformed or truncated input, wrong kind, corrupt checkpoint */
    MODE_ENOINPUT = 66,     /* an input file is missing or unreadable */
    MODE_EUNAVAILABLE = 69, /* a resource is unavailable: CUDA, memory */
    MODE_EINTERNAL = 70,    /* a bug */
    MODE_ECANTCREAT = 73,   /* an output cannot be created */
    MODE_EIO = 74,          /* read or write error, a full disk included */
};

/* where the heavy stages compute (--device): the CPU (OpenBLAS) or the CUDA kernels of kernels/ */
enum mode_device { MODE_DEVICE_CPU = 0, MODE_DEVICE_CUDA = 1 };

/* msg has room for a path of PATH_MAX (4096) bytes, its reason and more; a longer message loses
 * its middle ("head...tail"), not the reason at its end (mode_err_set, mode_err_prefix). */
struct mode_err {
    int code;       /* MODE_OK or the status of the first failure */
    char msg[8192]; /* one line, no trailing newline, no program name */
};

/* Sets err (if not NULL) and returns code, so that `return mode_err_set(err, ...)` reads well.
 * The arguments may include err->msg itself. */
int mode_err_set(struct mode_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends context ("file.safetensors: ") to an already set message; returns err->code. */
int mode_err_prefix(struct mode_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets MODE_EUNAVAILABLE "out of memory (N bytes for what)". */
int mode_err_oom(struct mode_err *err, size_t nbytes, const char *what);
void mode_err_clear(struct mode_err *err);

/* Name of a status code, e.g. "bad data" for MODE_EDATA. */
const char *mode_status_name(int code);

void mode_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));
#define MODE_ASSERT(x) \
    do { \
        if (!(x)) mode_assert_fail(__FILE__, __LINE__, #x); \
    } while (0)

/* ---- element types ---------------------------------------------------------------------- */

enum mode_dtype {
    MODE_DTYPE_INVALID = 0,
    MODE_F32,
    MODE_F16,
    MODE_BF16,
    MODE_F64,
    MODE_I8,
    MODE_U8,
    MODE_I16,
    MODE_U16,
    MODE_I32,
    MODE_U32,
    MODE_I64,
    MODE_U64,
    MODE_BOOL,
    MODE_F8_E4M3, /* read from checkpoints only; no conversion */
    MODE_F8_E5M2,
    MODE_DTYPE_COUNT
};

#define MODE_MAX_DIMS 8

size_t mode_dtype_size(enum mode_dtype t);
/* stream spelling: "f32", "bf16", "i64", ... */
const char *mode_dtype_name(enum mode_dtype t);
/* safetensors spelling: "F32", "BF16", "I64", ... */
const char *mode_dtype_st_name(enum mode_dtype t);
enum mode_dtype mode_dtype_from_name(const char *s, size_t len);    /* stream spelling */
enum mode_dtype mode_dtype_from_st_name(const char *s, size_t len); /* safetensors spelling */
int mode_dtype_is_float(enum mode_dtype t);                          /* f16/bf16/f32/f64 */
int mode_dtype_is_int(enum mode_dtype t);                            /* i*, u*, bool */

/* Product of dims with overflow check; returns 0 on success, -1 on overflow or a negative dim. */
int mode_shape_numel(int ndim, const int64_t *shape, uint64_t *out);
/* "(3, 4)" into buf; -1 dims print as -1 ("any" in expected shapes). */
void mode_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* bf16 / f16 <-> f32. Conversions to the narrow types round to nearest even; NaN stays NaN. */
float mode_bf16_to_f32(uint16_t h);
uint16_t mode_f32_to_bf16(float f);
float mode_f16_to_f32(uint16_t h);
uint16_t mode_f32_to_f16(float f);

/* Converts n elements of type t at src (any alignment) to f32 at dst. Floats and integers are
 * converted by value. Returns MODE_OK, or MODE_EDATA for a type with no conversion (fp8). This
 * is the C reference of the CUDA entry mode_convert_cuda. */
int mode_convert_ref(enum mode_dtype t, const void *src, size_t n, float *dst);

#ifdef __cplusplus
}
#endif

#endif
