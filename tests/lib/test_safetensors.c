/* test_safetensors — reading both vendored checkpoints, the sharded atomic writer, and every kind
 * of corrupt file: each must fail with MODE_EDATA and a message naming the file and the tensor
 * (lib/safetensors.c, lib/io.c). */
#include "../../lib/safetensors.h"
#include "tap.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HUB "reference/tiny-random-qwen3vlmoe"
#define V5 "reference/tiny-random-qwen3vlmoe-v5layout"

static char path_buf[4096];

static const char *tmp(const char *name)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", tap_tmpdir(), name);
    return path_buf;
}

/* A safetensors file from header text and n data bytes (0..255 repeating); `hl` overrides the
 * header length field when not 0. */
static void write_st(const char *path, const char *header, size_t n, uint64_t hl)
{
    FILE *f = fopen(path, "wb");
    uint64_t len = hl ? hl : strlen(header);
    unsigned char l8[8];
    for (int i = 0; i < 8; i++) l8[i] = (unsigned char)(len >> (8 * i));
    fwrite(l8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < n; i++) fputc((int)(i & 255), f);
    fclose(f);
}

static void copy_file(const char *from, const char *to, long drop_tail)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    fseek(a, 0, SEEK_END);
    long n = ftell(a) - drop_tail;
    rewind(a);
    char *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, a) != (size_t)n) diag("short read of %s", from);
    fwrite(buf, 1, (size_t)n, b);
    free(buf);
    fclose(a);
    fclose(b);
}

static void expect_file_error(const char *path, int code, const char *want, const char *name)
{
    struct mode_st_file f;
    struct mode_err err = {0};
    is_int(mode_st_open(&f, path, &err), code, "%s: status", name);
    has_str(err.msg, want, "%s: message", name);
}

static void expect_set_error(const char *path, int code, const char *want, const char *name)
{
    struct mode_st_set s;
    struct mode_err err = {0};
    is_int(mode_st_set_open(&s, path, &err), code, "%s: status", name);
    has_str(err.msg, want, "%s: message", name);
}

static int same_tensor(const struct mode_st_tensor *a, const struct mode_st_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return a->end - a->begin == b->end - b->begin && !memcmp(a->data, b->data, a->end - a->begin);
}

int main(void)
{
    struct mode_err err = {0};
    struct mode_st_set hub, v5;
    char hub_dir[4096], v5_dir[4096];
    snprintf(hub_dir, sizeof hub_dir, "%s", fixture(HUB));
    snprintf(v5_dir, sizeof v5_dir, "%s", fixture(V5));
    if (!is_int(mode_st_set_open(&hub, hub_dir, &err), MODE_OK, "hub checkpoint (2 shards + index) opens")) diag("%s", err.msg);
    if (!is_int(mode_st_set_open(&v5, v5_dir, &err), MODE_OK, "transformers-5 checkpoint opens")) diag("%s", err.msg);
    is_int((long long)hub.n_files, 2, "hub: 2 files");
    ok(hub.has_index, "hub: index used");
    is_int((long long)hub.n_tensors, 104, "hub: 104 tensors");
    is_int((long long)v5.n_tensors, 104, "v5: 104 tensors");
    const struct mode_st_tensor *lm = mode_st_set_find(&hub, "lm_head.weight");
    ok(lm && lm->dtype == MODE_BF16 && lm->ndim == 2 && lm->shape[0] == 2048 && lm->shape[1] == 96, "lm_head.weight BF16 (2048, 96)");
    ok(!mode_st_set_find(&hub, "nope"), "absent name not found");

    /* same names in both; same bytes except the experts, which are transposed */
    int diff = 0, experts = 0, transposed_ok = 0;
    for (size_t i = 0; i < hub.n_tensors; i++) {
        const struct mode_st_tensor *a = hub.sorted[i], *b = mode_st_set_find(&v5, a->name);
        if (!b) {
            diff++;
            continue;
        }
        if (!strstr(a->name, "mlp.experts.")) {
            diff += !same_tensor(a, b);
            continue;
        }
        experts++;
        /* (E, X, Y) in hub is (E, Y, X) in v5 */
        int64_t E = a->shape[0], X = a->shape[1], Y = a->shape[2];
        int good = b->ndim == 3 && b->shape[0] == E && b->shape[1] == Y && b->shape[2] == X;
        const uint16_t *pa = a->data, *pb = b->data;
        for (int64_t e = 0; good && e < E; e++)
            for (int64_t x = 0; good && x < X; x++)
                for (int64_t y = 0; good && y < Y; y++) {
                    uint16_t va, vb;
                    memcpy(&va, pa + (e * X + x) * Y + y, 2);
                    memcpy(&vb, pb + (e * Y + y) * X + x, 2);
                    good = va == vb;
                }
        transposed_ok += good;
    }
    is_int(diff, 0, "every non-expert tensor is byte-identical in both checkpoints");
    is_int(experts, 8, "8 fused expert tensors (4 layers x gate_up, down)");
    is_int(transposed_ok, 8, "each is the exact transpose of the other layout's");

    /* f32 conversion */
    const struct mode_st_tensor *norm = mode_st_set_find(&hub, "model.language_model.norm.weight");
    float nf[96];
    ok(norm && mode_st_to_f32(norm, nf, &err) == MODE_OK, "norm to f32");
    uint16_t h0;
    memcpy(&h0, norm->data, 2);
    ok(nf[0] == mode_bf16_to_f32(h0), "converted value equals the bf16 value");

    /* writer: everything of the hub checkpoint, 1 MiB shards, atomically */
    struct mode_outdir d;
    const char *out = tmp("written");
    is_int(mode_outdir_begin(&d, out, 0, &err), MODE_OK, "outdir begins");
    struct stat st;
    ok(stat(out, &st) != 0, "nothing at the target path before commit");
    struct mode_st_writer w;
    mode_st_writer_init(&w, &d, 1u << 20, &err);
    mode_st_writer_meta(&w, "format", "pt", &err);
    int add_rc = 0;
    for (size_t i = 0; i < hub.n_tensors; i++) {
        const struct mode_st_tensor *t = hub.sorted[i];
        add_rc |= mode_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err);
    }
    is_int(add_rc, MODE_OK, "104 tensors added");
    is_int(mode_st_writer_finish(&w, &err), MODE_OK, "writer finishes");
    int nshards = w.shard;
    mode_st_writer_free(&w);
    ok(nshards >= 3, "several shards (%d) at 1 MiB each", nshards);
    is_int(mode_outdir_commit(&d, &err), MODE_OK, "outdir commits");
    struct mode_st_set back;
    if (!is_int(mode_st_set_open(&back, out, &err), MODE_OK, "written checkpoint opens")) diag("%s", err.msg);
    ok(back.has_index && (int)back.n_files == nshards, "index lists %d shards", nshards);
    diff = 0;
    int misaligned = 0;
    for (size_t i = 0; i < hub.n_tensors; i++) {
        const struct mode_st_tensor *a = hub.sorted[i], *b = mode_st_set_find(&back, a->name);
        diff += !b || !same_tensor(a, b);
        if (b && (8 + b->file->header_len + b->begin) % mode_dtype_size(b->dtype)) misaligned++;
    }
    is_int(diff, 0, "every tensor reads back identical");
    is_int(misaligned, 0, "every tensor is naturally aligned in its file");
    int meta_pt = 0;
    for (size_t i = 0; i < back.n_files; i++) meta_pt += back.files[i].metadata && !strcmp(back.files[i].metadata, "{\"format\":\"pt\"}");
    is_int(meta_pt, (int)back.n_files, "every shard's __metadata__ is {\"format\":\"pt\"}, given once though set twice");
    mode_st_set_close(&back);
    /* one file when no shard size is given; an existing directory is replaced only when asked */
    is_int(mode_outdir_begin(&d, out, 0, &err), MODE_ECANTCREAT, "existing output refused without replace");
    has_str(err.msg, "already exists", "... message");
    is_int(mode_outdir_begin(&d, out, 1, &err), MODE_OK, "replace allowed when asked");
    mode_st_writer_init(&w, &d, 0, &err);
    mode_st_writer_add(&w, norm->name, norm->dtype, norm->ndim, norm->shape, norm->data, &err);
    is_int(mode_st_writer_add(&w, norm->name, norm->dtype, norm->ndim, norm->shape, norm->data, &err), MODE_OK, "the same name twice is buffered");
    is_int(mode_st_writer_finish(&w, &err), MODE_EINTERNAL, "a name written twice is refused");
    mode_st_writer_free(&w);
    mode_outdir_abort(&d);
    ok(stat(d.path, &st) == 0, "abort leaves the old output in place");
    mode_outdir_begin(&d, out, 1, &err);
    mode_st_writer_init(&w, &d, 0, &err);
    mode_st_writer_add(&w, norm->name, norm->dtype, norm->ndim, norm->shape, norm->data, &err);
    is_int(mode_st_writer_finish(&w, &err), MODE_OK, "single-file writer");
    mode_st_writer_free(&w);
    is_int(mode_outdir_commit(&d, &err), MODE_OK, "replacing commit");
    ok(mode_st_set_open(&back, out, &err) == MODE_OK && back.n_files == 1 && !back.has_index && back.n_tensors == 1,
       "the replacement is one model.safetensors with one tensor");
    ok(back.n_files == 1 && back.files[0].metadata && !strcmp(back.files[0].metadata, "{\"format\":\"pt\"}"),
       "__metadata__ {\"format\":\"pt\"} without asking (regression, issue 24)");
    mode_st_set_close(&back);

    /* __metadata__ is optional on reading: a file without it opens, and one with it keeps it */
    {
        struct mode_st_file f;
        write_st(tmp("nometa.safetensors"), "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0);
        ok(mode_st_open(&f, tmp("nometa.safetensors"), &err) == MODE_OK && !f.metadata && f.n_tensors == 1, "a file without __metadata__ opens");
        mode_st_close(&f);
        write_st(tmp("meta.safetensors"), "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0);
        ok(mode_st_open(&f, tmp("meta.safetensors"), &err) == MODE_OK && f.metadata && f.n_tensors == 1, "a file with __metadata__ opens, keeping it");
        mode_st_close(&f);
    }

    /* corrupt files */
    char shard2[8192];
    snprintf(shard2, sizeof shard2, "%s/model-00002-of-00002.safetensors", hub_dir);
    copy_file(shard2, tmp("trunc.safetensors"), 100);
    expect_file_error(tmp("trunc.safetensors"), MODE_EDATA,
                      "trunc.safetensors: tensor 'model.visual.pos_embed.weight' ends past the file (data_offsets end 574400, "
                      "the data section has 574300 bytes)",
                      "truncated file");
    write_st(tmp("hlen.safetensors"), "{}", 10, 1000000);
    expect_file_error(tmp("hlen.safetensors"), MODE_EDATA, "hlen.safetensors: header length 1000000 runs past the end of the file",
                      "header length past the end");
    write_st(tmp("hhuge.safetensors"), "{}", 0, UINT64_C(1) << 40);
    expect_file_error(tmp("hhuge.safetensors"), MODE_EDATA, "exceeds the limit of 100000000 bytes", "header length over the limit");
    /* the reference's MAX_HEADER_SIZE exactly: 100,000,000 bytes pass the limit (then the file
     * is too short), one more does not */
    write_st(tmp("hlim.safetensors"), "{}", 0, 100000000);
    expect_file_error(tmp("hlim.safetensors"), MODE_EDATA, "header length 100000000 runs past the end of the file",
                      "header length at the limit: checked against the file");
    write_st(tmp("hlim.safetensors"), "{}", 0, 100000001);
    expect_file_error(tmp("hlim.safetensors"), MODE_EDATA, "hlim.safetensors: header length 100000001 exceeds the limit of 100000000 bytes",
                      "header length one over the limit");
    {
        /* 2^20 + 1 tensors: counted before the tensor table exists (the entries are not even
         * looked at) */
        const size_t nt = MODE_ST_MAX_TENSORS + 1;
        char *h = malloc(nt * 12 + 8), *q = h;
        *q++ = '{';
        for (size_t i = 0; i < nt; i++) q += sprintf(q, "%s\"%zx\":0", i ? "," : "", i);
        *q++ = '}', *q = 0;
        write_st(tmp("many.safetensors"), h, 0, 0);
        free(h);
        expect_file_error(tmp("many.safetensors"), MODE_EDATA, "many.safetensors: 1048577 tensors exceed the limit of 1048576",
                          "a tensor count over the limit");
        unlink(tmp("many.safetensors"));
    }
    write_st(tmp("overlap.safetensors"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             12, 0);
    expect_file_error(tmp("overlap.safetensors"), MODE_EDATA, "overlap.safetensors: tensors 'a' and 'b' overlap (bytes 0..8 and 4..12)",
                      "overlapping ranges");
    write_st(tmp("size.safetensors"), "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0);
    expect_file_error(tmp("size.safetensors"), MODE_EDATA, "size.safetensors: tensor 'w': F32 (3) needs 12 bytes, data_offsets give 8",
                      "dtype/size mismatch");
    write_st(tmp("dup.safetensors"),
             "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, 0);
    expect_file_error(tmp("dup.safetensors"), MODE_EDATA, "dup.safetensors: tensor 'w' appears twice in the header", "duplicate names");
    write_st(tmp("json.safetensors"), "{\"w\":{\"dtype\":", 0, 0);
    expect_file_error(tmp("json.safetensors"), MODE_EDATA, "json.safetensors: header is not valid JSON", "bad JSON");
    write_st(tmp("dtype.safetensors"), "{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 0);
    expect_file_error(tmp("dtype.safetensors"), MODE_EDATA, "tensor 'w': unknown dtype 'Q4'", "unknown dtype");
    write_st(tmp("neg.safetensors"), "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, 0);
    expect_file_error(tmp("neg.safetensors"), MODE_EDATA, "tensor 'w': shape[0] is not a non-negative integer", "negative dim");
    write_st(tmp("rev.safetensors"), "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[5,4]}}", 8, 0);
    expect_file_error(tmp("rev.safetensors"), MODE_EDATA, "tensor 'w': data_offsets [5, 4] are not a range", "reversed range");
    write_st(tmp("notobj.safetensors"), "[1,2]", 0, 0);
    expect_file_error(tmp("notobj.safetensors"), MODE_EDATA, "does not start with '{'", "header not an object");
    FILE *f = fopen(tmp("short.safetensors"), "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_file_error(tmp("short.safetensors"), MODE_EDATA, "short.safetensors: file too short (3 bytes)", "3-byte file");
    expect_file_error(tmp("absent.safetensors"), MODE_ENOINPUT, "absent.safetensors: No such file or directory", "missing file");
    write_st(tmp("zero.safetensors"), "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0);
    struct mode_st_file zf;
    is_int(mode_st_open(&zf, tmp("zero.safetensors"), &err), MODE_OK, "an empty tensor overlaps nothing");
    mode_st_close(&zf);

    /* sharded directories */
    char d1[4096], p1[8192], p2[8192];
    snprintf(d1, sizeof d1, "%s", tmp("missing-shard"));
    mkdir(d1, 0755);
    snprintf(p1, sizeof p1, "%s/model.safetensors.index.json", d1);
    snprintf(p2, sizeof p2, "%s/model.safetensors.index.json", hub_dir);
    copy_file(p2, p1, 0);
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/model-00001-of-00002.safetensors", hub_dir);
    copy_file(p2, p1, 0);
    expect_set_error(d1, MODE_EDATA, "model.safetensors.index.json: names model-00002-of-00002.safetensors (for tensor",
                     "missing shard");
    /* an index that puts a tensor in the wrong shard */
    snprintf(p1, sizeof p1, "%s/model-00002-of-00002.safetensors", d1);
    copy_file(shard2, p1, 0);
    struct mode_st_set ok_set;
    is_int(mode_st_set_open(&ok_set, d1, &err), MODE_OK, "restored shard: opens");
    mode_st_set_close(&ok_set);
    snprintf(p1, sizeof p1, "%s/model.safetensors.index.json", d1);
    f = fopen(p1, "w");
    fprintf(f, "{\"weight_map\":{\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}");
    fclose(f);
    expect_set_error(d1, MODE_EDATA, "tensor 'lm_head.weight' is not in model-00002-of-00002.safetensors, where the index says it is",
                     "index names the wrong shard");
    f = fopen(p1, "w");
    fprintf(f, "{\"weight_map\":{\"lm_head.weight\":\"../model-00001-of-00002.safetensors\"}}");
    fclose(f);
    expect_set_error(d1, MODE_EDATA, "is not a plain file in the directory", "index path outside the directory");
    f = fopen(p1, "w");
    fprintf(f, "{\"weight_map\":{\"lm_head.weight\":\"model-00001-of-00002.safetensors\",\"x\":\"dup.safetensors\"}}");
    fclose(f);
    snprintf(p2, sizeof p2, "%s/dup.safetensors", d1);
    write_st(p2, "{\"lm_head.weight\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, 0);
    expect_set_error(d1, MODE_EDATA, "tensor 'lm_head.weight' is in both", "a tensor in two shards");
    f = fopen(p1, "w");
    fprintf(f, "{\"weight_map\":");
    fclose(f);
    expect_set_error(d1, MODE_EDATA, "model.safetensors.index.json: invalid JSON", "broken index");
    /* an index over MODE_ST_MAX_INDEX: refused by its size, before it is read (a sparse file) */
    ok(truncate(p1, (off_t)MODE_ST_MAX_INDEX + 1) == 0, "an index of 64 MiB + 1 byte");
    expect_set_error(d1, MODE_EDATA, "model.safetensors.index.json: 67108865 bytes, larger than the limit of 67108864 bytes",
                     "an index over the limit");
    mkdir(tmp("empty"), 0755);
    expect_set_error(tmp("empty"), MODE_ENOINPUT, "no model.safetensors or model.safetensors.index.json", "empty directory");

    mode_st_set_close(&hub);
    mode_st_set_close(&v5);
    return tap_done();
}
