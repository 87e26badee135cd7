/* model.c — binds a Qwen3-VL-MoE checkpoint's tensors by name and shape (model.h). */
#include "model.h"
#include "sha256.h"
#include "gptqpack.h"
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct binder {
    struct mode_model *m;
    unsigned char *used; /* per st.sorted index */
    struct mode_err *err;
};

static const char *dir_base(const char *p)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    const char *s = p + n;
    while (s > p && s[-1] != '/') s--;
    return s;
}

static size_t sorted_index(const struct mode_st_set *s, const struct mode_st_tensor *t)
{
    size_t lo = 0, hi = s->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->sorted[mid]->name, t->name);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return s->n_tensors;
}

/* Finds a tensor by printf-style name; checks its rank and dims (-1 = not checked here) and
 * that it holds floats. required == false: NULL without error when absent. */
static const struct mode_st_tensor *bindv(struct binder *b, bool required, int ndim, const int64_t *dims, const char *fmt,
                                          va_list ap)
{
    if (b->err->code) return NULL;
    char name[512];
    vsnprintf(name, sizeof name, fmt, ap);
    const struct mode_st_tensor *t = mode_st_set_find(&b->m->st, name);
    if (!t) {
        if (required)
            mode_err_set(b->err, MODE_EDATA, "%s: tensor '%s' is missing (architecture %s)", b->m->dir, name,
                         MODE_SUPPORTED_ARCHS);
        return NULL;
    }
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (dims[i] >= 0 && dims[i] != t->shape[i]) ok = false;
    if (!ok) {
        char got[160], want[160];
        mode_shape_str(t->ndim, t->shape, got, sizeof got);
        mode_shape_str(ndim, dims, want, sizeof want);
        mode_err_set(b->err, MODE_EDATA, "%s/%s: tensor '%s' has shape %s, expected %s", b->m->dir, mode_st_file_base(t), name,
                     got, want);
        return NULL;
    }
    if (!mode_dtype_is_float(t->dtype)) {
        mode_err_set(b->err, MODE_EDATA, "%s/%s: tensor '%s' has dtype %s, expected a float type (BF16, F16, F32)", b->m->dir,
                     mode_st_file_base(t), name, mode_dtype_st_name(t->dtype));
        return NULL;
    }
    size_t k = sorted_index(&b->m->st, t);
    if (k < b->m->st.n_tensors && !b->used[k]) {
        b->used[k] = 1;
        b->m->n_bound++;
    }
    return t;
}

static const struct mode_st_tensor *bind1(struct binder *b, int64_t d0, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const struct mode_st_tensor *bind1(struct binder *b, int64_t d0, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int64_t d[1] = {d0};
    const struct mode_st_tensor *t = bindv(b, true, 1, d, fmt, ap);
    va_end(ap);
    return t;
}

static const struct mode_st_tensor *bind2(struct binder *b, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const struct mode_st_tensor *bind2(struct binder *b, int64_t d0, int64_t d1, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int64_t d[2] = {d0, d1};
    const struct mode_st_tensor *t = bindv(b, true, 2, d, fmt, ap);
    va_end(ap);
    return t;
}

static const struct mode_st_tensor *bindn(struct binder *b, bool required, int ndim, const int64_t *dims, const char *fmt,
                                          ...) __attribute__((format(printf, 5, 6)));
static const struct mode_st_tensor *bindn(struct binder *b, bool required, int ndim, const int64_t *dims, const char *fmt,
                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    const struct mode_st_tensor *t = bindv(b, required, ndim, dims, fmt, ap);
    va_end(ap);
    return t;
}

#define TXT "model.language_model."
#define VIS "model.visual."

/* a tensor of any dtype: checked rank, dims and dtype; marked used */
static const struct mode_st_tensor *bind_any(struct binder *b, enum mode_dtype dtype, int ndim, const int64_t *dims, const char *name)
{
    if (b->err->code) return NULL;
    const struct mode_st_tensor *t = mode_st_set_find(&b->m->st, name);
    if (!t) {
        mode_err_set(b->err, MODE_EDATA, "%s: tensor '%s' is missing (a packed checkpoint)", b->m->dir, name);
        return NULL;
    }
    bool ok = t->ndim == ndim && t->dtype == dtype;
    for (int i = 0; ok && i < ndim; i++)
        if (dims[i] >= 0 && dims[i] != t->shape[i]) ok = false;
    if (!ok) {
        char got[96];
        mode_shape_str(t->ndim, t->shape, got, sizeof got);
        mode_err_set(b->err, MODE_EDATA, "%s/%s: tensor '%s' has %s %s, not what a GPTQ-packed projection needs", b->m->dir,
                     mode_st_file_base(t), name, mode_dtype_st_name(t->dtype), got);
        return NULL;
    }
    size_t k = sorted_index(&b->m->st, t);
    if (k < b->m->st.n_tensors && !b->used[k]) {
        b->used[k] = 1;
        b->m->n_bound++;
    }
    return t;
}

/* One projection of a packed checkpoint at `prefix` (e.g. "...experts.3.down_proj"): either
 * prefix.weight (left at full precision) or prefix.{qweight,scales,qzeros,g_idx}. */
static void bind_qproj(struct binder *b, struct mode_qproj *q, int64_t n, int64_t k, const char *prefix)
{
    struct mode_model *m = b->m;
    char name[512];
    q->n = n, q->k = k;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (mode_st_set_find(&m->st, name)) {
        q->weight = bindn(b, true, 2, (int64_t[]){n, k}, "%s", name);
        q->bits = 16;
        return;
    }
    snprintf(name, sizeof name, "%s.qweight", prefix);
    q->qweight = bind_any(b, MODE_I32, 2, (int64_t[]){-1, n}, name);
    if (!q->qweight) return;
    q->bits = (int)(q->qweight->shape[0] * 32 / k);
    if (q->qweight->shape[0] * 32 != k * q->bits || (q->bits != 2 && q->bits != 3 && q->bits != 4 && q->bits != 8)) {
        mode_err_set(b->err, MODE_EDATA, "%s: '%s' has %lld rows: no bit width packs %lld inputs so", m->dir, name,
                     (long long)q->qweight->shape[0], (long long)k);
        return;
    }
    snprintf(name, sizeof name, "%s.scales", prefix);
    q->scales = bind_any(b, MODE_F16, 2, (int64_t[]){-1, n}, name);
    if (!q->scales) return;
    q->g = q->scales->shape[0];
    if (q->g < 1 || k % q->g) {
        mode_err_set(b->err, MODE_EDATA, "%s: '%s' has %lld groups for %lld inputs", m->dir, name, (long long)q->g, (long long)k);
        return;
    }
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    q->qzeros = bind_any(b, MODE_I32, 2, (int64_t[]){q->g, n * q->bits / 32}, name);
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    q->g_idx = bind_any(b, MODE_I32, 1, (int64_t[]){k}, name);
}

static void bind_qexperts(struct binder *b, int l, struct mode_layer_w *w)
{
    const struct mode_text_config *t = &b->m->cfg.text;
    const int64_t E = t->n_expert, H = t->n_embd, I = t->n_ff_exp;
    w->qexp = calloc((size_t)E * 3, sizeof *w->qexp);
    if (!w->qexp) {
        mode_err_oom(b->err, (size_t)E * 3 * sizeof *w->qexp, "packed experts");
        return;
    }
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    char prefix[256];
    for (int64_t e = 0; e < E && !b->err->code; e++)
        for (int p = 0; p < 3 && !b->err->code; p++) {
            snprintf(prefix, sizeof prefix, TXT "layers.%d.mlp.experts.%lld.%s", l, (long long)e, proj[p]);
            bind_qproj(b, &w->qexp[e * 3 + p], p == 2 ? H : I, p == 2 ? I : H, prefix);
        }
}

/* q, k, v, o_proj of layer l: plain weights, or packed ones (mode-pack --attn-bits) */
static void bind_attention(struct binder *b, int l, struct mode_layer_w *w)
{
    struct mode_model *m = b->m;
    const struct mode_text_config *t = &m->cfg.text;
    const int64_t H = t->n_embd, qd = (int64_t)t->n_head * t->head_dim, kvd = (int64_t)t->n_head_kv * t->head_dim;
    char name[256];
    snprintf(name, sizeof name, TXT "layers.%d.self_attn.q_proj.qweight", l);
    if (!m->packed || !mode_st_set_find(&m->st, name)) {
        w->wq = bind2(b, qd, H, TXT "layers.%d.self_attn.q_proj.weight", l);
        w->wk = bind2(b, kvd, H, TXT "layers.%d.self_attn.k_proj.weight", l);
        w->wv = bind2(b, kvd, H, TXT "layers.%d.self_attn.v_proj.weight", l);
        w->wo = bind2(b, H, qd, TXT "layers.%d.self_attn.o_proj.weight", l);
        return;
    }
    w->qattn = calloc(4, sizeof *w->qattn);
    if (!w->qattn) {
        mode_err_oom(b->err, 4 * sizeof *w->qattn, "packed attention");
        return;
    }
    static const char *const proj[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    const int64_t n[4] = {qd, kvd, kvd, H}, k[4] = {H, H, H, qd};
    for (int p = 0; p < 4 && !b->err->code; p++) {
        snprintf(name, sizeof name, TXT "layers.%d.self_attn.%s", l, proj[p]);
        bind_qproj(b, &w->qattn[p], n[p], k[p], name);
    }
}

static void bind_experts(struct binder *b, int l, struct mode_layer_w *w)
{
    struct mode_model *m = b->m;
    const struct mode_text_config *t = &m->cfg.text;
    int64_t E = t->n_expert, H = t->n_embd, I = t->n_ff_exp;
    int64_t any3[3] = {E, -1, -1};
    char fused[256];
    snprintf(fused, sizeof fused, TXT "layers.%d.mlp.experts.gate_up_proj", l);
    if (m->packed && !mode_st_set_find(&m->st, fused)) {
        bind_qexperts(b, l, w);
        return;
    }
    w->gate_up = bindn(b, true, 3, any3, TXT "layers.%d.mlp.experts.gate_up_proj", l);
    w->down = bindn(b, true, 3, any3, TXT "layers.%d.mlp.experts.down_proj", l);
    if (b->err->code) return;
    const int64_t *gu = w->gate_up->shape, *dn = w->down->shape;
    bool hub_gu = gu[1] == H && gu[2] == 2 * I, v5_gu = gu[1] == 2 * I && gu[2] == H;
    bool hub_dn = dn[1] == I && dn[2] == H, v5_dn = dn[1] == H && dn[2] == I;
    enum mode_expert_layout lay = 0;
    if (hub_gu && hub_dn && !(v5_gu && v5_dn)) lay = MODE_EXPERTS_HUB;
    else if (v5_gu && v5_dn && !(hub_gu && hub_dn)) lay = MODE_EXPERTS_V5;
    if (!lay) {
        char g[96], d[96];
        mode_shape_str(3, gu, g, sizeof g);
        mode_shape_str(3, dn, d, sizeof d);
        mode_err_set(b->err, MODE_EDATA,
                     "%s/%s: layer %d experts: gate_up_proj %s and down_proj %s fit neither the hub layout "
                     "((%lld, %lld, %lld), (%lld, %lld, %lld)) nor the transformers-5 layout ((%lld, %lld, %lld), (%lld, %lld, %lld))",
                     m->dir, mode_st_file_base(w->gate_up), l, g, d, (long long)E, (long long)H, (long long)(2 * I), (long long)E,
                     (long long)I, (long long)H, (long long)E, (long long)(2 * I), (long long)H, (long long)E, (long long)H,
                     (long long)I);
        return;
    }
    if (m->layout && m->layout != lay) {
        mode_err_set(b->err, MODE_EDATA, "%s: layer %d stores its experts in the %s layout, earlier layers in the %s layout", m->dir,
                     l, mode_expert_layout_name(lay), mode_expert_layout_name(m->layout));
        return;
    }
    m->layout = lay;
}

static void bind_merger(struct binder *b, struct mode_merger_w *w, const char *prefix, int64_t norm_dim)
{
    const struct mode_vision_config *v = &b->m->cfg.vision;
    int64_t hm = (int64_t)v->n_embd * v->merge_size * v->merge_size;
    w->norm_w = bind1(b, norm_dim, "%snorm.weight", prefix);
    w->norm_b = bind1(b, norm_dim, "%snorm.bias", prefix);
    w->fc1_w = bind2(b, hm, hm, "%slinear_fc1.weight", prefix);
    w->fc1_b = bind1(b, hm, "%slinear_fc1.bias", prefix);
    w->fc2_w = bind2(b, v->out_embd, hm, "%slinear_fc2.weight", prefix);
    w->fc2_b = bind1(b, v->out_embd, "%slinear_fc2.bias", prefix);
}

static void bind_all(struct binder *b)
{
    struct mode_model *m = b->m;
    const struct mode_text_config *t = &m->cfg.text;
    const struct mode_vision_config *v = &m->cfg.vision;
    int64_t H = t->n_embd, V = t->n_vocab, hd = t->head_dim, qd = (int64_t)t->n_head * hd, kvd = (int64_t)t->n_head_kv * hd;
    m->tok_embd = bind2(b, V, H, TXT "embed_tokens.weight");
    m->out_norm = bind1(b, H, TXT "norm.weight");
    int64_t vh[2] = {V, H};
    m->lm_head = bindn(b, !m->cfg.tie_word_embeddings, 2, vh, "lm_head.weight");
    if (!m->lm_head) m->lm_head = m->tok_embd;
    for (int l = 0; l < t->n_layer && !b->err->code; l++) {
        struct mode_layer_w *w = &m->layers[l];
        w->attn_norm = bind1(b, H, TXT "layers.%d.input_layernorm.weight", l);
        w->ffn_norm = bind1(b, H, TXT "layers.%d.post_attention_layernorm.weight", l);
        bind_attention(b, l, w);
        w->q_norm = bind1(b, hd, TXT "layers.%d.self_attn.q_norm.weight", l);
        w->k_norm = bind1(b, hd, TXT "layers.%d.self_attn.k_norm.weight", l);
        if (t->attention_bias) {
            w->bq = bind1(b, qd, TXT "layers.%d.self_attn.q_proj.bias", l);
            w->bk = bind1(b, kvd, TXT "layers.%d.self_attn.k_proj.bias", l);
            w->bv = bind1(b, kvd, TXT "layers.%d.self_attn.v_proj.bias", l);
            w->bo = bind1(b, H, TXT "layers.%d.self_attn.o_proj.bias", l);
        }
        if (t->is_moe[l]) {
            w->router = bind2(b, t->n_expert, H, TXT "layers.%d.mlp.gate.weight", l);
            bind_experts(b, l, w);
        } else {
            w->ffn_gate = bind2(b, t->n_ff, H, TXT "layers.%d.mlp.gate_proj.weight", l);
            w->ffn_up = bind2(b, t->n_ff, H, TXT "layers.%d.mlp.up_proj.weight", l);
            w->ffn_down = bind2(b, H, t->n_ff, TXT "layers.%d.mlp.down_proj.weight", l);
        }
    }
    int64_t pw[5] = {v->n_embd, v->in_channels, v->temporal_patch_size, v->patch_size, v->patch_size};
    m->patch_w = bindn(b, true, 5, pw, VIS "patch_embed.proj.weight");
    m->patch_b = bind1(b, v->n_embd, VIS "patch_embed.proj.bias");
    m->pos_embd = bind2(b, v->n_pos, v->n_embd, VIS "pos_embed.weight");
    int64_t E = v->n_embd;
    for (int i = 0; i < v->depth && !b->err->code; i++) {
        struct mode_vblock_w *w = &m->vblocks[i];
        w->norm1_w = bind1(b, E, VIS "blocks.%d.norm1.weight", i);
        w->norm1_b = bind1(b, E, VIS "blocks.%d.norm1.bias", i);
        w->norm2_w = bind1(b, E, VIS "blocks.%d.norm2.weight", i);
        w->norm2_b = bind1(b, E, VIS "blocks.%d.norm2.bias", i);
        w->qkv_w = bind2(b, 3 * E, E, VIS "blocks.%d.attn.qkv.weight", i);
        w->qkv_b = bind1(b, 3 * E, VIS "blocks.%d.attn.qkv.bias", i);
        w->proj_w = bind2(b, E, E, VIS "blocks.%d.attn.proj.weight", i);
        w->proj_b = bind1(b, E, VIS "blocks.%d.attn.proj.bias", i);
        w->fc1_w = bind2(b, v->n_ff, E, VIS "blocks.%d.mlp.linear_fc1.weight", i);
        w->fc1_b = bind1(b, v->n_ff, VIS "blocks.%d.mlp.linear_fc1.bias", i);
        w->fc2_w = bind2(b, E, v->n_ff, VIS "blocks.%d.mlp.linear_fc2.weight", i);
        w->fc2_b = bind1(b, E, VIS "blocks.%d.mlp.linear_fc2.bias", i);
    }
    bind_merger(b, &m->merger, VIS "merger.", E);
    for (int i = 0; i < v->n_deepstack && !b->err->code; i++) {
        char prefix[96];
        snprintf(prefix, sizeof prefix, VIS "deepstack_merger_list.%d.", i);
        bind_merger(b, &m->deepstack[i], prefix, E * v->merge_size * v->merge_size);
    }
}

int mode_model_open(struct mode_model *m, const char *dir, struct mode_err *err)
{
    return mode_model_open_flags(m, dir, 0, err);
}

int mode_model_open_flags(struct mode_model *m, const char *dir, unsigned flags, struct mode_err *err)
{
    memset(m, 0, sizeof *m);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    if (dl >= sizeof m->dir - 64) return mode_err_set(err, MODE_ENOINPUT, "%s: path too long", dir);
    snprintf(m->dir, sizeof m->dir, "%.*s", (int)dl, dir);
    struct stat st;
    if (stat(m->dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return mode_err_set(err, MODE_ENOINPUT, "%s: not a model directory", m->dir);
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", m->dir);
    int rc = mode_config_load(&m->cfg, p, err);
    if (!rc) {
        /* a quantization_config of method gptq: routed experts may be packed */
        json_t *root = NULL;
        rc = mode_json_load(p, MODE_CONFIG_MAX_FILE, &root, err); /* read again: mode_config_load just read it */
        if (!rc) {
            json_t *qc = json_object_get(root, "quantization_config");
            const char *qm = json_string_value(json_object_get(qc, "quant_method"));
            const char *fmt = json_string_value(json_object_get(qc, "checkpoint_format"));
            if (qm && !strcmp(qm, "gptq")) {
                m->packed = true;
                m->gptq_v1 = !fmt || !strcmp(fmt, "gptq");
            }
            json_decref(root);
        }
    }
    if (rc) {
        if (rc != MODE_ENOINPUT) mode_err_prefix(err, "%s/", m->dir);
        return rc;
    }
    snprintf(p, sizeof p, "%s/preprocessor_config.json", m->dir);
    if (stat(p, &st) == 0) {
        if ((rc = mode_preproc_load(&m->pre, p, err)) || (rc = mode_preproc_check(&m->pre, &m->cfg, p, err))) {
            if (rc != MODE_ENOINPUT) mode_err_prefix(err, "%s/", m->dir);
            goto fail;
        }
        m->has_preproc = true;
    }
    if ((rc = mode_st_set_open(&m->st, m->dir, err))) {
        if (rc == MODE_EDATA && strncmp(err->msg, m->dir, strlen(m->dir)) != 0) mode_err_prefix(err, "%s/", m->dir);
        goto fail;
    }
    m->layers = calloc((size_t)m->cfg.text.n_layer, sizeof *m->layers);
    m->vblocks = calloc((size_t)m->cfg.vision.depth, sizeof *m->vblocks);
    m->deepstack = calloc((size_t)m->cfg.vision.n_deepstack + 1, sizeof *m->deepstack);
    struct binder b = {m, calloc(m->st.n_tensors + 1, 1), err};
    if (!m->layers || !m->vblocks || !m->deepstack || !b.used) {
        free(b.used);
        rc = mode_err_oom(err, m->st.n_tensors, "a tensor table");
        goto fail;
    }
    mode_err_clear(err);
    bind_all(&b);
    if ((rc = err->code)) {
        free(b.used);
        goto fail;
    }
    if (!m->layout) m->layout = MODE_EXPERTS_HUB; /* no MoE layer: nothing to tell apart */
    size_t nu = m->st.n_tensors - m->n_bound;
    m->unused = calloc(nu + 1, sizeof *m->unused);
    if (!m->unused) {
        free(b.used);
        rc = mode_err_oom(err, nu * sizeof *m->unused, "a tensor table");
        goto fail;
    }
    for (size_t i = 0; i < m->st.n_tensors; i++)
        if (!b.used[i]) m->unused[m->n_unused++] = m->st.sorted[i];
    free(b.used);
    /* every byte of every tensor, bound or not: refused when a float holds NaN or Inf, fingerprinted */
    if (!(flags & MODE_MODEL_NO_SCAN) && (rc = mode_st_set_scan(&m->st, 0, m->weights_hash, err))) {
        mode_err_prefix(err, "%s/", m->dir);
        goto fail;
    }
    if (m->weights_hash[0] && m->packed) {
        /* the same bytes read as GPTQ v1 or v2 are other weights (the zero points' offset):
         * the packing format joins the fingerprint */
        struct mode_sha256 h;
        mode_sha256_init(&h);
        mode_sha256_update(&h, m->weights_hash, 64);
        mode_sha256_update(&h, m->gptq_v1 ? ":gptq-v1" : ":gptq-v2", 8);
        mode_sha256_hex(&h, m->weights_hash);
    }
    return MODE_OK;
fail:
    mode_model_close(m);
    return rc;
}

void mode_model_close(struct mode_model *m)
{
    for (int l = 0; m->layers && l < m->cfg.text.n_layer; l++) free(m->layers[l].qexp), free(m->layers[l].qattn);
    mode_st_set_close(&m->st);
    mode_config_free(&m->cfg);
    free(m->layers);
    free(m->vblocks);
    free(m->deepstack);
    free(m->unused);
    m->layers = NULL;
    m->vblocks = NULL;
    m->deepstack = NULL;
    m->unused = NULL;
}

const char *mode_expert_layout_name(enum mode_expert_layout l)
{
    return l == MODE_EXPERTS_HUB ? "hub" : l == MODE_EXPERTS_V5 ? "transformers-5" : "none";
}

int mode_model_expert(const struct mode_model *m, int layer, int expert, enum mode_proj p, struct mode_mat *out,
                      struct mode_err *err)
{
    const struct mode_text_config *t = &m->cfg.text;
    if (layer < 0 || layer >= t->n_layer || !t->is_moe[layer])
        return mode_err_set(err, MODE_EUSAGE, "layer %d is not a MoE layer of this model", layer);
    if (expert < 0 || expert >= t->n_expert)
        return mode_err_set(err, MODE_EUSAGE, "expert %d is out of range (the model has %d)", expert, t->n_expert);
    uint64_t H = (uint64_t)t->n_embd, I = (uint64_t)t->n_ff_exp, e = (uint64_t)expert;
    const struct mode_layer_w *w = &m->layers[layer];
    memset(out, 0, sizeof *out);
    if (w->qexp) return mode_err_set(err, MODE_EUSAGE, "layer %d of %s holds packed (quantized) experts", layer, m->dir);
    if (p == MODE_PROJ_DOWN) {
        out->t = w->down;
        out->rows = H;
        out->cols = I;
        out->offset = e * H * I;
        if (m->layout == MODE_EXPERTS_HUB) { /* (E, I, H): W[o][j] = down[e][j][o] */
            out->row_stride = 1;
            out->col_stride = H;
        } else { /* (E, H, I) */
            out->row_stride = I;
            out->col_stride = 1;
        }
        return MODE_OK;
    }
    out->t = w->gate_up;
    out->rows = I;
    out->cols = H;
    uint64_t half = p == MODE_PROJ_UP ? I : 0;
    if (m->layout == MODE_EXPERTS_HUB) { /* (E, H, 2I): W[o][i] = gate_up[e][i][half + o] */
        out->offset = e * H * 2 * I + half;
        out->row_stride = 1;
        out->col_stride = 2 * I;
    } else { /* (E, 2I, H): W[o][i] = gate_up[e][half + o][i] */
        out->offset = e * 2 * I * H + half * H;
        out->row_stride = H;
        out->col_stride = 1;
    }
    return MODE_OK;
}

int mode_mat_to_f32(const struct mode_mat *w, float *dst, struct mode_err *err)
{
    const struct mode_st_tensor *t = w->t;
    size_t es = mode_dtype_size(t->dtype);
    const char *base = (const char *)t->data + w->offset * es;
    if (w->col_stride == 1) {
        for (uint64_t r = 0; r < w->rows; r++)
            if (mode_convert_ref(t->dtype, base + r * w->row_stride * es, (size_t)w->cols, dst + r * w->cols))
                return mode_err_set(err, MODE_EDATA, "tensor '%s': dtype %s cannot be converted", t->name, mode_dtype_st_name(t->dtype));
        return MODE_OK;
    }
    /* transposed view: convert source rows (contiguous along our rows) and scatter */
    float *tmp = malloc(w->rows * sizeof *tmp);
    if (!tmp) return mode_err_oom(err, w->rows * sizeof *tmp, "a matrix row");
    for (uint64_t c = 0; c < w->cols; c++) {
        const char *src = base + c * w->col_stride * es;
        if (w->row_stride == 1) {
            if (mode_convert_ref(t->dtype, src, (size_t)w->rows, tmp)) {
                free(tmp);
                return mode_err_set(err, MODE_EDATA, "tensor '%s': dtype %s cannot be converted", t->name, mode_dtype_st_name(t->dtype));
            }
        } else {
            for (uint64_t r = 0; r < w->rows; r++) mode_convert_ref(t->dtype, src + r * w->row_stride * es, 1, tmp + r);
        }
        for (uint64_t r = 0; r < w->rows; r++) dst[r * w->cols + c] = tmp[r];
    }
    free(tmp);
    return MODE_OK;
}

void mode_model_id_pack(struct mode_mp *b, const struct mode_model *m)
{
    mode_mp_map_open(b);
    mode_mp_key(b, "arch");
    mode_mp_str(b, m->cfg.arch_name);
    mode_mp_key(b, "config");
    mode_mp_str(b, m->cfg.hash);
    mode_mp_key(b, "weights");
    mode_mp_str(b, m->weights_hash);
    mode_mp_key(b, "name");
    mode_mp_str(b, dir_base(m->dir));
    mode_mp_close(b);
}

int mode_model_id_check(const msgpack_object *id, const struct mode_model *m, const char *stream,
                        struct mode_err *err)
{
    if (!id || id->type != MSGPACK_OBJECT_MAP) return MODE_OK; /* a stream made without a model */
    char arch[96], cfg[80], name[256];
    mode_mp_str_copy(mode_mp_get(id, "arch"), arch, sizeof arch);
    mode_mp_str_copy(mode_mp_get(id, "config"), cfg, sizeof cfg);
    mode_mp_str_copy(mode_mp_get(id, "name"), name, sizeof name);
    if (*arch && strcmp(arch, m->cfg.arch_name))
        return mode_err_set(err, MODE_EDATA, "%s: made for a %s model ('%s'), %s is a %s", stream, arch, name, m->dir,
                            m->cfg.arch_name);
    if (*cfg && strcmp(cfg, m->cfg.hash))
        return mode_err_set(err, MODE_EDATA, "%s: made for model '%s' (config %.12s), %s has config %.12s: not the same model",
                            stream, name, cfg, m->dir, m->cfg.hash);
    return MODE_OK;
}

static void kv_int(struct mode_mp *b, const char *k, int64_t v)
{
    mode_mp_key(b, k);
    mode_mp_int(b, v);
}

void mode_model_describe(struct mode_mp *b, const struct mode_model *m)
{
    const struct mode_text_config *t = &m->cfg.text;
    const struct mode_vision_config *v = &m->cfg.vision;
    mode_mp_map_open(b);
    mode_mp_key(b, "model");
    mode_mp_str(b, m->dir);
    mode_mp_key(b, "arch");
    mode_mp_str(b, m->cfg.arch_name);
    mode_mp_key(b, "config_form");
    mode_mp_str(b, m->cfg.form == MODE_CONFIG_V5 ? "transformers-5" : "hub");
    mode_mp_key(b, "expert_layout");
    mode_mp_str(b, m->packed ? (m->gptq_v1 ? "gptq-packed (v1)" : "gptq-packed (v2)") : mode_expert_layout_name(m->layout));
    mode_mp_key(b, "identity");
    mode_model_id_pack(b, m);
    mode_mp_key(b, "text");
    mode_mp_map_open(b);
    kv_int(b, "n_vocab", t->n_vocab);
    kv_int(b, "n_embd", t->n_embd);
    kv_int(b, "n_layer", t->n_layer);
    kv_int(b, "n_head", t->n_head);
    kv_int(b, "n_head_kv", t->n_head_kv);
    kv_int(b, "head_dim", t->head_dim);
    kv_int(b, "n_ff", t->n_ff);
    kv_int(b, "n_ff_exp", t->n_ff_exp);
    kv_int(b, "n_expert", t->n_expert);
    kv_int(b, "n_expert_used", t->n_expert_used);
    int n_moe = 0;
    for (int l = 0; l < t->n_layer; l++) n_moe += t->is_moe[l];
    kv_int(b, "n_moe_layers", n_moe);
    mode_mp_key(b, "rope_theta");
    mode_mp_f64(b, t->rope_theta);
    mode_mp_key(b, "mrope_section");
    mode_mp_array_open(b);
    for (int i = 0; i < 3; i++) mode_mp_int(b, t->mrope_section[i]);
    mode_mp_close(b);
    mode_mp_close(b);
    mode_mp_key(b, "vision");
    mode_mp_map_open(b);
    kv_int(b, "depth", v->depth);
    kv_int(b, "n_embd", v->n_embd);
    kv_int(b, "n_head", v->n_head);
    kv_int(b, "n_ff", v->n_ff);
    kv_int(b, "patch_size", v->patch_size);
    kv_int(b, "temporal_patch_size", v->temporal_patch_size);
    kv_int(b, "merge_size", v->merge_size);
    kv_int(b, "n_pos", v->n_pos);
    mode_mp_key(b, "deepstack");
    mode_mp_array_open(b);
    for (int i = 0; i < v->n_deepstack; i++) mode_mp_int(b, v->deepstack[i]);
    mode_mp_close(b);
    mode_mp_close(b);
    if (m->has_preproc) {
        mode_mp_key(b, "preprocessor");
        mode_mp_map_open(b);
        kv_int(b, "min_pixels", m->pre.min_pixels);
        kv_int(b, "max_pixels", m->pre.max_pixels);
        mode_mp_close(b);
    }
    kv_int(b, "files", (int64_t)m->st.n_files);
    kv_int(b, "tensors", (int64_t)m->st.n_tensors);
    kv_int(b, "bound", (int64_t)m->n_bound);
    uint64_t bytes = 0, per_dtype[MODE_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < m->st.n_tensors; i++) {
        bytes += m->st.sorted[i]->end - m->st.sorted[i]->begin;
        per_dtype[m->st.sorted[i]->dtype]++;
    }
    kv_int(b, "bytes", (int64_t)bytes);
    mode_mp_key(b, "dtypes");
    mode_mp_map_open(b);
    for (int d = 1; d < MODE_DTYPE_COUNT; d++)
        if (per_dtype[d]) kv_int(b, mode_dtype_st_name((enum mode_dtype)d), (int64_t)per_dtype[d]);
    mode_mp_close(b);
    mode_mp_key(b, "unused");
    mode_mp_array_open(b);
    for (size_t i = 0; i < m->n_unused; i++) mode_mp_str(b, m->unused[i]->name);
    mode_mp_close(b);
    mode_mp_close(b);
}

void mode_model_describe_tensor(struct mode_mp *b, const struct mode_st_tensor *t)
{
    mode_mp_map_open(b);
    mode_mp_key(b, "name");
    mode_mp_str(b, t->name);
    mode_mp_key(b, "dtype");
    mode_mp_str(b, mode_dtype_st_name(t->dtype));
    mode_mp_key(b, "shape");
    mode_mp_array_open(b);
    for (int i = 0; i < t->ndim; i++) mode_mp_int(b, t->shape[i]);
    mode_mp_close(b);
    mode_mp_key(b, "file");
    mode_mp_str(b, mode_st_file_base(t));
    kv_int(b, "offset", (int64_t)t->begin);
    kv_int(b, "bytes", (int64_t)(t->end - t->begin));
    mode_mp_close(b);
}

int mode_model_qproj_f32(const struct mode_model *m, const struct mode_qproj *q, float *dst, struct mode_err *err)
{
    if (q->weight) {
        if (mode_convert_ref(q->weight->dtype, q->weight->data, (size_t)(q->n * q->k), dst))
            return mode_err_set(err, MODE_EDATA, "%s: tensor '%s' of dtype %s", m->dir, q->weight->name, mode_dtype_st_name(q->weight->dtype));
        return MODE_OK;
    }
    /* tensors may sit at any alignment in the mapping: copy them out */
    const size_t nqw = (size_t)(q->k * q->bits / 32 * q->n), nqz = (size_t)(q->g * q->n * q->bits / 32), ns = (size_t)(q->g * q->n);
    int32_t *qw = malloc(4 * nqw), *qz = malloc(4 * nqz), *gi = malloc(4 * (size_t)q->k);
    uint16_t *sc = malloc(2 * ns);
    int rc = MODE_OK;
    if (!qw || !qz || !gi || !sc) rc = mode_err_oom(err, 4 * nqw, "dequantising a projection");
    else {
        memcpy(qw, q->qweight->data, 4 * nqw);
        memcpy(qz, q->qzeros->data, 4 * nqz);
        memcpy(gi, q->g_idx->data, 4 * (size_t)q->k);
        memcpy(sc, q->scales->data, 2 * ns);
        for (int64_t i = 0; i < q->k && !rc; i++)
            if (gi[i] < 0 || gi[i] >= q->g)
                rc = mode_err_set(err, MODE_EDATA, "%s: tensor '%s': g_idx[%lld] = %d is not a group (%lld groups)", m->dir, q->g_idx->name,
                                  (long long)i, gi[i], (long long)q->g);
        if (!rc && mode_gptq_dequant(qw, qz, sc, gi, q->n, q->k, q->g, q->bits, m->gptq_v1, dst))
            rc = mode_err_oom(err, (size_t)(q->n * q->k), "dequantising a projection");
    }
    free(qw), free(qz), free(gi), free(sc);
    return rc;
}

int mode_model_qexpert_f32(const struct mode_model *m, int layer, int expert, enum mode_proj p, float *dst, struct mode_err *err)
{
    const struct mode_layer_w *w = &m->layers[layer];
    if (!w->qexp) return mode_err_set(err, MODE_EUSAGE, "layer %d of %s is not packed", layer, m->dir);
    return mode_model_qproj_f32(m, &w->qexp[(size_t)expert * 3 + (size_t)p], dst, err);
}
