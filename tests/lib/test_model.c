/* test_model — config.json in both forms, binding every tensor by name and shape, both expert
 * layouts giving identical expert weights, and the errors for unsupported, inconsistent or
 * incomplete checkpoints (lib/config.c, lib/model.c). */
#include "../../lib/model.h"
#include "tap.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HUB "reference/tiny-random-qwen3vlmoe"
#define V5 "reference/tiny-random-qwen3vlmoe-v5layout"

static char hub_dir[4096];
static struct mode_st_set hub_set;

/* Sets a dotted path ("text_config.num_experts") in a JSON object; NULL value deletes it. */
static void set_path(json_t *root, const char *path, json_t *value)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *dot = strchr(buf, '.');
    json_t *o = root;
    if (dot) {
        *dot = 0;
        o = json_object_get(root, buf);
        path = dot + 1;
    } else
        path = buf;
    if (value) json_object_set_new(o, path, value);
    else json_object_del(o, path);
}

struct edit {
    const char *path;
    json_t *value; /* NULL: delete */
};

struct swap {
    const char *name;              /* tensor to change */
    enum mode_dtype dtype;         /* MODE_DTYPE_INVALID: drop it */
    int ndim;
    int64_t shape[3];
};

/* A model directory in the temp dir: the hub config with edits, the hub weights with swaps. */
static const char *make_model(const char *name, const struct edit *edits, int n_edits, const struct swap *swaps, int n_swaps)
{
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", tap_tmpdir(), name);
    struct mode_err err;
    char p[8192];
    snprintf(p, sizeof p, "%s/config.json", hub_dir);
    json_t *cfg = json_load_file(p, 0, NULL);
    for (int i = 0; i < n_edits; i++) set_path(cfg, edits[i].path, edits[i].value);
    struct mode_outdir d;
    mode_outdir_begin(&d, dir, 1, &err);
    char *text = json_dumps(cfg, JSON_INDENT(2));
    mode_outdir_write(&d, "config.json", text, strlen(text), &err);
    free(text);
    json_decref(cfg);
    struct mode_st_writer w;
    mode_st_writer_init(&w, &d, 0, &err);
    static float junk[1 << 16];
    for (size_t i = 0; i < hub_set.n_tensors; i++) {
        const struct mode_st_tensor *t = hub_set.sorted[i];
        const struct swap *s = NULL;
        for (int k = 0; k < n_swaps; k++)
            if (!strcmp(swaps[k].name, t->name)) s = &swaps[k];
        if (!s) mode_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err);
        else if (s->dtype) mode_st_writer_add(&w, t->name, s->dtype, s->ndim, s->shape, junk, &err);
    }
    if (mode_st_writer_finish(&w, &err) || mode_outdir_commit(&d, &err)) diag("make_model: %s", err.msg);
    mode_st_writer_free(&w);
    return dir;
}

static void expect_open_error(const char *dir, int code, const char *want, const char *name)
{
    struct mode_model m;
    struct mode_err err = {0};
    is_int(mode_model_open(&m, dir, &err), code, "%s: status", name);
    has_str(err.msg, want, "%s: message", name);
}

int main(void)
{
    struct mode_err err = {0};
    snprintf(hub_dir, sizeof hub_dir, "%s", fixture(HUB));
    char v5_dir[4096];
    snprintf(v5_dir, sizeof v5_dir, "%s", fixture(V5));
    if (mode_st_set_open(&hub_set, hub_dir, &err)) diag("%s", err.msg);

    struct mode_model hub, v5;
    if (!is_int(mode_model_open(&hub, hub_dir, &err), MODE_OK, "hub checkpoint binds")) diag("%s", err.msg);
    if (!is_int(mode_model_open(&v5, v5_dir, &err), MODE_OK, "transformers-5 checkpoint binds")) diag("%s", err.msg);
    is_int(hub.cfg.form, MODE_CONFIG_HUB, "hub config form detected");
    is_int(v5.cfg.form, MODE_CONFIG_V5, "transformers-5 config form detected");
    is_int(hub.layout, MODE_EXPERTS_HUB, "hub expert layout detected");
    is_int(v5.layout, MODE_EXPERTS_V5, "transformers-5 expert layout detected");
    is_int((long long)hub.n_bound, 104, "hub: every one of 104 tensors bound");
    is_int((long long)v5.n_bound, 104, "v5: every one of 104 tensors bound");
    is_int((long long)hub.n_unused, 0, "nothing unused");
    ok(hub.has_preproc && hub.pre.min_pixels == 16384 && hub.pre.max_pixels == 65536 && hub.pre.patch_size == 16,
       "preprocessor_config: pixels [16384, 65536], patch 16");
    ok(!v5.has_preproc, "no preprocessor_config.json in the v5 directory");
    const struct mode_text_config *t = &hub.cfg.text;
    ok(t->n_embd == 96 && t->n_layer == 4 && t->n_head == 4 && t->n_head_kv == 2 && t->head_dim == 32 && t->n_expert == 16 &&
           t->n_expert_used == 4 && t->n_ff_exp == 40 && t->n_vocab == 2048,
       "text config values");
    ok(t->mrope_section[0] == 6 && t->mrope_section[1] == 5 && t->mrope_section[2] == 5 && t->rope_theta == 5e6 &&
           t->rms_eps == 1e-6 && t->norm_topk_prob,
       "rope and norm values");
    const struct mode_vision_config *v = &hub.cfg.vision;
    ok(v->depth == 3 && v->n_embd == 48 && v->n_head == 3 && v->n_ff == 80 && v->out_embd == 96 && v->n_pos == 64 &&
           v->n_deepstack == 2 && v->deepstack[0] == 0 && v->deepstack[1] == 2 && v->rope_theta == 10000.0,
       "vision config values");
    ok(hub.cfg.image_token_id == 2046 && hub.cfg.vision_start_id == 2043 && hub.cfg.vision_end_id == 2044, "special tokens");
    is_str(hub.cfg.hash, v5.cfg.hash, "both config forms describe the same architecture (same config hash)");
    ok(strlen(hub.weights_hash) == 64 && strcmp(hub.weights_hash, v5.weights_hash),
       "the layouts store different bytes (experts transposed): different weights fingerprints");
    is_int(v5.cfg.bos_id, -1, "v5: bos_token_id null is absent");

    /* experts: identical in both layouts after the transpose, and where the hub layout says */
    int64_t E = t->n_expert, H = t->n_embd, I = t->n_ff_exp;
    float *a = malloc(sizeof(float) * (size_t)(H * I)), *b = malloc(sizeof(float) * (size_t)(H * I));
    int same = 0, total = 0, manual = 0;
    for (int l = 0; l < t->n_layer; l++)
        for (int e = 0; e < E; e++)
            for (int p = 0; p < 3; p++) {
                struct mode_mat ma, mb;
                mode_model_expert(&hub, l, e, (enum mode_proj)p, &ma, &err);
                mode_model_expert(&v5, l, e, (enum mode_proj)p, &mb, &err);
                mode_mat_to_f32(&ma, a, &err);
                mode_mat_to_f32(&mb, b, &err);
                total++;
                same += ma.rows == mb.rows && ma.cols == mb.cols && !memcmp(a, b, sizeof(float) * (size_t)(H * I));
                /* hub: gate W[o][i] = gate_up[e][i][o]; up W[o][i] = gate_up[e][i][I + o]; down W[o][j] = down[e][j][o] */
                const struct mode_st_tensor *src = p == MODE_PROJ_DOWN ? hub.layers[l].down : hub.layers[l].gate_up;
                int64_t o = (e * 7 + 3) % (p == MODE_PROJ_DOWN ? H : I), i = (e * 5 + 1) % (p == MODE_PROJ_DOWN ? I : H);
                int64_t idx = p == MODE_PROJ_DOWN ? (e * I + i) * H + o : (e * H + i) * 2 * I + (p == MODE_PROJ_UP ? I : 0) + o;
                uint16_t raw;
                memcpy(&raw, (const uint16_t *)src->data + idx, 2);
                int64_t cols = p == MODE_PROJ_DOWN ? I : H;
                manual += a[o * cols + i] == mode_bf16_to_f32(raw);
            }
    is_int(same, total, "all %d expert projections (4 layers x 16 experts x gate/up/down) equal across layouts", total);
    is_int(manual, total, "each matches the hub tensor at the documented index");
    struct mode_mat mm;
    ok(mode_model_expert(&hub, 0, 16, MODE_PROJ_GATE, &mm, &err) == MODE_EUSAGE, "expert out of range refused");
    free(a);
    free(b);

    /* stream identity */
    struct mode_mp id;
    mode_mp_init(&id);
    mode_model_id_pack(&id, &hub);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_next(&u, id.buf, id.len, &off);
    is_int(mode_model_id_check(&u.data, &v5, "s.msgpack", &err), MODE_OK, "a hub-made stream is accepted for the v5 checkpoint");
    struct mode_model emoji_like;
    struct edit wider[] = {{"text_config.rms_norm_eps", json_real(1e-5)}};
    const char *d_eps = make_model("eps", wider, 1, NULL, 0);
    if (!is_int(mode_model_open(&emoji_like, d_eps, &err), MODE_OK, "a model with another eps opens")) diag("%s", err.msg);
    is_int(mode_model_id_check(&u.data, &emoji_like, "s.msgpack", &err), MODE_EDATA, "but a stream of the first is refused");
    has_str(err.msg, "s.msgpack: made for model 'tiny-random-qwen3vlmoe'", "... naming the stream and its model");
    mode_model_close(&emoji_like);
    msgpack_unpacked_destroy(&u);
    mode_mp_free(&id);

    /* config errors */
    struct edit arch[] = {{"architectures", json_pack("[s]", "LlavaForConditionalGeneration")}};
    expect_open_error(make_model("arch", arch, 1, NULL, 0), MODE_EDATA,
                      "config.json: architecture 'LlavaForConditionalGeneration' is not supported (supported: "
                      "Qwen3VLMoeForConditionalGeneration (model_type qwen3_vl_moe))",
                      "unsupported architecture");
    struct edit topk[] = {{"text_config.num_experts_per_tok", json_integer(20)}};
    expect_open_error(make_model("topk", topk, 1, NULL, 0), MODE_EDATA,
                      "config.json: text_config.num_experts_per_tok (20) exceeds the number of experts (16)", "top-k > experts");
    struct edit mrope[] = {{"text_config.rope_scaling", json_pack("{s:[iii],s:s}", "mrope_section", 6, 5, 6, "rope_type", "default")}};
    expect_open_error(make_model("mrope", mrope, 1, NULL, 0), MODE_EDATA,
                      "text_config.rope_scaling.mrope_section sums to 17, expected head_dim / 2 = 16", "mrope sections");
    struct edit kv[] = {{"text_config.num_key_value_heads", json_integer(3)}};
    expect_open_error(make_model("kv", kv, 1, NULL, 0), MODE_EDATA,
                      "num_attention_heads (4) is not a multiple of num_key_value_heads (3)", "GQA heads");
    struct edit nohidden[] = {{"text_config.hidden_size", NULL}};
    expect_open_error(make_model("nohidden", nohidden, 1, NULL, 0), MODE_EDATA, "config.json: text_config.hidden_size: missing",
                      "missing hidden_size");
    struct edit strhidden[] = {{"text_config.hidden_size", json_string("96")}};
    expect_open_error(make_model("strhidden", strhidden, 1, NULL, 0), MODE_EDATA,
                      "text_config.hidden_size: expected an integer, got a string", "hidden_size as a string");
    /* fuzz_config: a real number outside int64's range was converted to one (undefined behaviour) */
    struct edit realhuge[] = {{"text_config.hidden_size", json_real(1e106)}};
    expect_open_error(make_model("realhuge", realhuge, 1, NULL, 0), MODE_EDATA,
                      "text_config.hidden_size: expected an integer, got a real number", "hidden_size 1e106 (regress/fuzz_config)");
    struct edit realint[] = {{"text_config.num_hidden_layers", json_real(1e6)}};
    expect_open_error(make_model("realint", realint, 1, NULL, 0), MODE_EDATA, "text_config.num_hidden_layers: 1000000 is outside [1, 1024]",
                      "an integral real is read as the integer it is");
    struct edit both[] = {{"text_config.num_local_experts", json_integer(8)}};
    expect_open_error(make_model("both", both, 1, NULL, 0), MODE_EDATA, "num_experts (16) and num_local_experts (8) disagree",
                      "expert counts disagree");
    struct edit yarn[] = {{"text_config.rope_scaling", json_pack("{s:[iii],s:s}", "mrope_section", 6, 5, 5, "rope_type", "yarn")}};
    expect_open_error(make_model("yarn", yarn, 1, NULL, 0), MODE_EDATA, "rope_type 'yarn' is not supported", "rope type");
    struct edit out[] = {{"vision_config.out_hidden_size", json_integer(64)}};
    expect_open_error(make_model("out", out, 1, NULL, 0), MODE_EDATA,
                      "vision_config.out_hidden_size (64) differs from text_config.hidden_size (96)", "merger width");
    struct edit huge[] = {{"text_config.num_hidden_layers", json_integer(1000000)}};
    expect_open_error(make_model("huge", huge, 1, NULL, 0), MODE_EDATA, "text_config.num_hidden_layers: 1000000 is outside [1, 1024]",
                      "absurd layer count");
    struct edit ds[] = {{"vision_config.deepstack_visual_indexes", json_pack("[ii]", 0, 3)}};
    expect_open_error(make_model("ds", ds, 1, NULL, 0), MODE_EDATA, "deepstack_visual_indexes names vision layer 3, the tower has 3",
                      "deepstack index");
    char p[8192];
    const char *d_bad = make_model("badjson", NULL, 0, NULL, 0);
    snprintf(p, sizeof p, "%s/config.json", d_bad);
    FILE *f = fopen(p, "w");
    fputs("{\"architectures\": [", f);
    fclose(f);
    expect_open_error(d_bad, MODE_EDATA, "config.json: invalid JSON at line 1", "config.json not JSON");
    /* MODE_CONFIG_MAX_FILE: refused by its size, before it is read (a sparse file) */
    f = fopen(p, "w");
    fclose(f);
    ok(truncate(p, (off_t)MODE_CONFIG_MAX_FILE + 1) == 0, "a config.json of 64 MiB + 1 byte");
    expect_open_error(d_bad, MODE_EDATA, "config.json: 67108865 bytes, larger than the limit of 67108864 bytes", "config.json over the limit");
    unlink(p);
    expect_open_error(d_bad, MODE_ENOINPUT, "config.json: No such file or directory", "no config.json");
    expect_open_error(fixture("nowhere"), MODE_ENOINPUT, "not a model directory", "no directory");

    /* tensor errors */
    struct swap drop[] = {{"model.language_model.layers.2.self_attn.k_norm.weight", MODE_DTYPE_INVALID, 0, {0}}};
    expect_open_error(make_model("drop", NULL, 0, drop, 1), MODE_EDATA,
                      "tensor 'model.language_model.layers.2.self_attn.k_norm.weight' is missing (architecture "
                      "Qwen3VLMoeForConditionalGeneration",
                      "missing tensor");
    struct swap narrow[] = {{"model.language_model.layers.0.mlp.gate.weight", MODE_BF16, 2, {16, 95}}};
    expect_open_error(make_model("narrow", NULL, 0, narrow, 1), MODE_EDATA,
                      "narrow/model.safetensors: tensor 'model.language_model.layers.0.mlp.gate.weight' has shape (16, 95), expected (16, 96)",
                      "mis-shaped tensor");
    struct swap gu[] = {{"model.language_model.layers.1.mlp.experts.gate_up_proj", MODE_BF16, 3, {16, 96, 79}}};
    expect_open_error(make_model("gu", NULL, 0, gu, 1), MODE_EDATA,
                      "layer 1 experts: gate_up_proj (16, 96, 79) and down_proj (16, 40, 96) fit neither the hub layout",
                      "experts in neither layout");
    struct swap mixed[] = {{"model.language_model.layers.3.mlp.experts.gate_up_proj", MODE_BF16, 3, {16, 80, 96}},
                           {"model.language_model.layers.3.mlp.experts.down_proj", MODE_BF16, 3, {16, 96, 40}}};
    expect_open_error(make_model("mixed", NULL, 0, mixed, 2), MODE_EDATA,
                      "layer 3 stores its experts in the transformers-5 layout, earlier layers in the hub layout", "mixed layouts");
    struct swap ints[] = {{"model.language_model.norm.weight", MODE_I16, 1, {96}}};
    expect_open_error(make_model("ints", NULL, 0, ints, 1), MODE_EDATA,
                      "tensor 'model.language_model.norm.weight' has dtype I16, expected a float type", "integer weights");
    /* fewer layers in the config: the extra layer's tensors are unused, not an error */
    struct edit three[] = {{"text_config.num_hidden_layers", json_integer(3)}};
    struct mode_model m3;
    ok(mode_model_open(&m3, make_model("three", three, 1, NULL, 0), &err) == MODE_OK && m3.n_unused == 11,
       "a 3-layer config binds; the 11 tensors of layer 3 are listed unused");
    mode_model_close(&m3);
    /* tied embeddings: lm_head may be absent */
    struct edit tie[] = {{"tie_word_embeddings", json_true()}};
    struct swap nolm[] = {{"lm_head.weight", MODE_DTYPE_INVALID, 0, {0}}};
    struct mode_model mt;
    ok(mode_model_open(&mt, make_model("tie", tie, 1, nolm, 1), &err) == MODE_OK && mt.lm_head == mt.tok_embd,
       "tied embeddings without lm_head.weight use embed_tokens");
    mode_model_close(&mt);
    struct edit dense[] = {{"text_config.mlp_only_layers", json_pack("[i]", 1)}};
    expect_open_error(make_model("dense", dense, 1, NULL, 0), MODE_EDATA,
                      "tensor 'model.language_model.layers.1.mlp.gate_proj.weight' is missing", "a dense layer needs its MLP");

    mode_model_close(&hub);
    mode_model_close(&v5);
    mode_st_set_close(&hub_set);
    return tap_done();
}
