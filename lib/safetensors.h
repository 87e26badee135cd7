/* safetensors.h — reading and writing safetensors checkpoints.
 *
 * File format: 8-byte little-endian header length H, H bytes of JSON
 *   {"__metadata__": {str: str}, "NAME": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
 * then the data section; offsets are relative to its start. A model directory holds either one
 * model.safetensors or shards listed by model.safetensors.index.json ({"weight_map": {name: file}}).
 *
 * Reading: files are mapped read-only and tensors are views into the mapping (never copied).
 * Everything is validated before use: the header length against the file and a limit
 * (MODE_ST_MAX_HEADER), the JSON, each entry's dtype, shape and offsets, dtype × shape against the
 * byte range, every range inside the file, no overlaps, no duplicate names; for an index, that it
 * names files that exist, inside the directory, that hold the tensors it says they hold, and that
 * no tensor is in two shards. Failures are MODE_EDATA (MODE_ENOINPUT for a missing file or
 * directory that was asked for directly) with the file and the tensor in the message:
 *   "model-00001-of-00002.safetensors: tensor 'lm_head.weight' ends past the file (...)".
 *
 * Writing: mode_st_writer collects tensors into shards inside a mode_outdir (io.h): each tensor's
 * bytes go to a spill file as they are added (memory stays bounded), and finishing a shard writes
 * header + data in one file (tensors ordered by element size so each stays naturally aligned,
 * contiguous as the format requires), with __metadata__ {"format": "pt"} and what
 * mode_st_writer_meta added. finish() names the shards model-0000i-of-0000N.safetensors
 * (+ index) or model.safetensors when there is one, ready for mode_outdir_commit.
 *
 * Ownership: mode_st_file / mode_st_set own their mappings and names; tensors point into them
 * and stay valid until close.
 */
#ifndef MODE_SAFETENSORS_H
#define MODE_SAFETENSORS_H

#include "io.h"
#include "mode.h"

/* Limits (mode(7), LIMITS), checked before anything is allocated for them:
 * MODE_ST_MAX_HEADER: the header length, as the reference implementation (safetensors'
 *   MAX_HEADER_SIZE, 100,000,000 bytes); also checked against the file's size.
 * MODE_ST_MAX_TENSORS: tensors in one file, counted before the tensor table is allocated; far
 *   above the tensors of a checkpoint (fused experts keep them few).
 * MODE_ST_MAX_INDEX: model.safetensors.index.json, read whole: about 90 bytes a tensor (the tiny
 *   reference model's is 9,310 bytes for 104 tensors), so 64 MiB is some 700,000 tensors. */
#define MODE_ST_MAX_HEADER 100000000u
#define MODE_ST_MAX_TENSORS (1u << 20)
#define MODE_ST_MAX_INDEX ((size_t)64 << 20)

struct mode_st_file;

struct mode_st_tensor {
    const char *name;
    enum mode_dtype dtype;
    int ndim;
    int64_t shape[MODE_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;  /* byte range in the data section */
    const void *data;     /* view into the mapping; any alignment */
    const struct mode_st_file *file;
};

struct mode_st_file {
    char *path;
    struct mode_map map;
    uint64_t header_len;
    struct mode_st_tensor *tensors; /* in header order */
    size_t n_tensors;
    char *names;             /* storage for tensor names */
    char *metadata;          /* the __metadata__ object as compact JSON, or NULL */
};

int mode_st_open(struct mode_st_file *f, const char *path, struct mode_err *err);
void mode_st_close(struct mode_st_file *f);
const struct mode_st_tensor *mode_st_find(const struct mode_st_file *f, const char *name);

/* All tensors of a checkpoint: a directory (index or model.safetensors) or one .safetensors file. */
struct mode_st_set {
    char *path;
    struct mode_st_file *files;
    size_t n_files;
    const struct mode_st_tensor **sorted; /* by name, for lookup */
    size_t n_tensors;
    int has_index;
};

int mode_st_set_open(struct mode_st_set *s, const char *path, struct mode_err *err);
void mode_st_set_close(struct mode_st_set *s);
const struct mode_st_tensor *mode_st_set_find(const struct mode_st_set *s, const char *name);
/* Base name of the file holding t. */
const char *mode_st_file_base(const struct mode_st_tensor *t);

/* Converts a float or integer tensor to f32 (numel floats at dst). */
int mode_st_to_f32(const struct mode_st_tensor *t, float *dst, struct mode_err *err);

/* ---- scanning --------------------------------------------------------------------------- */

/* One pass over every byte of every tensor of s (hash.h), that both
 *   - refuses a float tensor (F64, F32, F16, BF16, F8) holding a NaN or an infinity: MODE_EDATA
 *     "model-00002-of-00002.safetensors: tensor 'NAME' holds a non-finite value (nan) at element 17"
 *     (the first such element, tensors in name order; the element's flat row-major index);
 *   - writes the checkpoint's fingerprint, 64 hex digits + NUL: SHA-256 of a version tag, then per
 *     tensor in name order its name, dtype, shape, byte count and the hash.h hashes of its
 *     consecutive MODE_ST_SCAN_CHUNK-byte chunks. It identifies the bytes as read: the same
 *     tensors give the same fingerprint however they are spread over shards and ordered in files.
 * Chunks are scanned by n_threads threads (0: the online CPUs, at most MODE_ST_SCAN_MAX_THREADS;
 * where a thread cannot be started, fewer do the work). Nothing is copied: the mapped pages are
 * read once, so the cost is the checkpoint's size over the memory (or disk) bandwidth. */
/* MODE_ST_SCAN_CHUNK: 4 MiB, a multiple of 8 (a chunk starts on an element and on a word): the
 *   real checkpoint's 61 GB is some 15,000 chunks to share out, and taking one (an atomic add)
 *   costs nothing beside reading it.
 * MODE_ST_SCAN_MAX_THREADS: one thread maps, reads and hashes 6-6.7 GB/s from the page cache
 *   (bench_fingerprint on the 2-core build machine), so 16 of them reach a socket's memory
 *   bandwidth; more would only add start-up cost. */
#define MODE_ST_SCAN_CHUNK ((uint64_t)4 << 20)
#define MODE_ST_SCAN_MAX_THREADS 16
int mode_st_set_scan(const struct mode_st_set *s, int n_threads, char fingerprint[65], struct mode_err *err);

/* ---- writing ---------------------------------------------------------------------------- */

struct mode_st_entry; /* private */

struct mode_st_writer {
    const struct mode_outdir *dir;
    uint64_t max_shard_bytes; /* 0: one file */
    struct mode_st_entry *entries;
    size_t n_entries, cap_entries;
    int shard;            /* current shard number, from 1 */
    int spill_fd;         /* data of the current shard, in insertion order */
    uint64_t spill_len;
    size_t shard_first;   /* first entry of the current shard */
    char **meta;          /* __metadata__ key/value pairs, 2 per item */
    size_t n_meta;
    uint64_t total_bytes;
};

int mode_st_writer_init(struct mode_st_writer *w, const struct mode_outdir *dir, uint64_t max_shard_bytes,
                        struct mode_err *err);
/* Adds __metadata__ key = value (copied), or replaces the value of a key given before. Every file
 * the writer makes holds {"format": "pt"} from init on. */
int mode_st_writer_meta(struct mode_st_writer *w, const char *key, const char *value, struct mode_err *err);
/* Copies numel(shape) elements of dtype from data into the current shard. */
int mode_st_writer_add(struct mode_st_writer *w, const char *name, enum mode_dtype dtype, int ndim,
                       const int64_t *shape, const void *data, struct mode_err *err);
/* Writes the last shard, names the files and writes the index when there are several. */
int mode_st_writer_finish(struct mode_st_writer *w, struct mode_err *err);
void mode_st_writer_free(struct mode_st_writer *w);

#endif
