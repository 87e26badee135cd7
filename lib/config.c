/* config.c — config.json (hub and transformers-5 forms) and preprocessor_config.json (config.h). */
#include "config.h"

#include "io.h"
#include "json.h"
#include "sha256.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* A required positive integer within [1, max]. */
static int get_dim(const struct mode_jctx *c, json_t *o, const char *key, bool required, int64_t max, int *out,
                   struct mode_err *err)
{
    int64_t v = *out;
    int rc = mode_json_int(c, o, key, required, &v, err);
    if (rc) return rc;
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) return MODE_OK; /* optional and absent: the default stays */
    if (v < 1 || v > max)
        return mode_err_set(err, MODE_EDATA, "%s: %s%s%s: %lld is outside [1, %lld]", c->file, c->prefix, *c->prefix ? "." : "",
                            key, (long long)v, (long long)max);
    *out = (int)v;
    return MODE_OK;
}

static int get_token(const struct mode_jctx *c, json_t *o, const char *key, bool required, int *out, struct mode_err *err)
{
    int64_t v = -1;
    int rc = mode_json_int(c, o, key, required, &v, err);
    if (rc) return rc;
    if (v < -1 || v >= MODE_MAX_VOCAB)
        return mode_err_set(err, MODE_EDATA, "%s: %s: token id %lld is out of range", c->file, key, (long long)v);
    *out = (int)v;
    return MODE_OK;
}

/* Reads and parses the JSON file at path. Messages name the file by its base name, as every
 * other message of this file does: mode_model_open prefixes them with the model directory (an
 * invalid config.json was named with its directory twice, "dir//dir/config.json: invalid JSON"),
 * except a missing or unreadable file's (MODE_ENOINPUT), which names the whole path. */
static int load_json(const char *path, const char *file, json_t **root, struct mode_err *err)
{
    char *text;
    size_t len;
    *root = NULL;
    int rc = mode_read_file(path, MODE_CONFIG_MAX_FILE, &text, &len, err);
    if (rc) {
        size_t pl = strlen(path);
        if (rc != MODE_ENOINPUT && err && file != path && !strncmp(err->msg, path, pl) && err->msg[pl] == ':') {
            size_t fl = strlen(file);
            memmove(err->msg + fl, err->msg + pl, strlen(err->msg + pl) + 1); /* "PATH: why" -> "FILE: why" */
            memcpy(err->msg, file, fl);
        }
        return rc;
    }
    rc = mode_json_parse(file, text, len, root, err);
    free(text);
    return rc;
}

static int bad(const char *file, struct mode_err *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(const char *file, struct mode_err *err, const char *fmt, ...)
{
    char m[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return mode_err_set(err, MODE_EDATA, "%s: %s", file, m);
}

static int load_text(struct mode_config *cfg, const char *file, json_t *t, struct mode_err *err)
{
    struct mode_jctx c = {file, "text_config"};
    struct mode_text_config *x = &cfg->text;
    int rc;
    const char *act = "silu";
    if ((rc = get_dim(&c, t, "vocab_size", true, MODE_MAX_VOCAB, &x->n_vocab, err)) ||
        (rc = get_dim(&c, t, "hidden_size", true, MODE_MAX_EMBD, &x->n_embd, err)) ||
        (rc = get_dim(&c, t, "num_hidden_layers", true, MODE_MAX_LAYERS, &x->n_layer, err)) ||
        (rc = get_dim(&c, t, "num_attention_heads", true, MODE_MAX_HEADS, &x->n_head, err)))
        return rc;
    x->n_head_kv = x->n_head;
    x->head_dim = x->n_embd / x->n_head;
    if ((rc = get_dim(&c, t, "num_key_value_heads", false, MODE_MAX_HEADS, &x->n_head_kv, err)) ||
        (rc = get_dim(&c, t, "head_dim", false, MODE_MAX_EMBD, &x->head_dim, err)) ||
        (rc = get_dim(&c, t, "intermediate_size", true, MODE_MAX_FF, &x->n_ff, err)) ||
        (rc = get_dim(&c, t, "moe_intermediate_size", true, MODE_MAX_FF, &x->n_ff_exp, err)) ||
        (rc = get_dim(&c, t, "num_experts_per_tok", true, MODE_MAX_EXPERTS, &x->n_expert_used, err)) ||
        (rc = mode_json_str(&c, t, "hidden_act", false, &act, err)))
        return rc;
    /* hub: num_experts; transformers 5: num_local_experts; both present must agree */
    int ne = 0, nl = 0;
    if ((rc = get_dim(&c, t, "num_experts", false, MODE_MAX_EXPERTS, &ne, err)) ||
        (rc = get_dim(&c, t, "num_local_experts", false, MODE_MAX_EXPERTS, &nl, err)))
        return rc;
    if (!ne && !nl) return bad(file, err, "text_config: neither num_experts nor num_local_experts is given");
    if (ne && nl && ne != nl)
        return bad(file, err, "text_config: num_experts (%d) and num_local_experts (%d) disagree", ne, nl);
    x->n_expert = ne ? ne : nl;
    if (strcmp(act, "silu")) return bad(file, err, "text_config.hidden_act '%s' is not supported (only silu)", act);
    x->norm_topk_prob = true;
    x->decoder_sparse_step = 1;
    x->attention_bias = false;
    x->max_pos = 0;
    x->rms_eps = 1e-6;
    int64_t mp = 0;
    if ((rc = mode_json_bool(&c, t, "norm_topk_prob", false, &x->norm_topk_prob, err)) ||
        (rc = get_dim(&c, t, "decoder_sparse_step", false, MODE_MAX_LAYERS, &x->decoder_sparse_step, err)) ||
        (rc = mode_json_bool(&c, t, "attention_bias", false, &x->attention_bias, err)) ||
        (rc = mode_json_int(&c, t, "max_position_embeddings", false, &mp, err)) ||
        (rc = mode_json_num(&c, t, "rms_norm_eps", false, &x->rms_eps, err)))
        return rc;
    x->max_pos = (int)(mp > 0 && mp < INT32_MAX ? mp : 0);
    if (!(x->rms_eps > 0 && x->rms_eps < 1)) return bad(file, err, "text_config.rms_norm_eps %g is not in (0, 1)", x->rms_eps);

    /* rope: hub form keeps rope_theta beside rope_scaling; transformers 5 puts both in rope_parameters */
    json_t *rs = NULL, *rp = NULL;
    if ((rc = mode_json_obj(&c, t, "rope_scaling", false, &rs, err)) ||
        (rc = mode_json_obj(&c, t, "rope_parameters", false, &rp, err)))
        return rc;
    json_t *rope = rp ? rp : rs;
    cfg->form = rp ? MODE_CONFIG_V5 : MODE_CONFIG_HUB;
    if (!rope) return bad(file, err, "text_config: no rope_scaling or rope_parameters (mrope_section is required)");
    struct mode_jctx rc_ctx = {file, rp ? "text_config.rope_parameters" : "text_config.rope_scaling"};
    x->rope_theta = 0;
    if ((rc = mode_json_num(&c, t, "rope_theta", false, &x->rope_theta, err)) ||
        (rc = mode_json_num(&rc_ctx, rope, "rope_theta", false, &x->rope_theta, err)))
        return rc;
    if (!(x->rope_theta > 0)) return bad(file, err, "text_config: rope_theta missing or not positive");
    const char *rt = "default";
    if ((rc = mode_json_str(&rc_ctx, rope, "rope_type", false, &rt, err))) return rc;
    if (!json_object_get(rope, "rope_type") && (rc = mode_json_str(&rc_ctx, rope, "type", false, &rt, err))) return rc;
    if (strcmp(rt, "default") && strcmp(rt, "mrope"))
        return bad(file, err, "%s.rope_type '%s' is not supported (only default)", rc_ctx.prefix, rt);
    int64_t sec[4];
    size_t ns = 0;
    if ((rc = mode_json_int_array(&rc_ctx, rope, "mrope_section", true, sec, 3, &ns, err))) return rc;
    if (ns != 3) return bad(file, err, "%s.mrope_section has %zu entries, expected 3 (t, h, w)", rc_ctx.prefix, ns);
    int64_t sum = 0;
    for (int i = 0; i < 3; i++) {
        if (sec[i] < 0 || sec[i] > MODE_MAX_EMBD) return bad(file, err, "%s.mrope_section[%d] is out of range", rc_ctx.prefix, i);
        x->mrope_section[i] = (int)sec[i];
        sum += sec[i];
    }
    x->mrope_interleaved = true; /* transformers' Qwen3-VL always interleaves */
    if ((rc = mode_json_bool(&rc_ctx, rope, "mrope_interleaved", false, &x->mrope_interleaved, err))) return rc;

    /* consistency */
    if (x->n_head % x->n_head_kv)
        return bad(file, err, "text_config: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", x->n_head,
                   x->n_head_kv);
    if (x->head_dim % 2) return bad(file, err, "text_config.head_dim (%d) is odd: rotary needs pairs", x->head_dim);
    if (sum != x->head_dim / 2)
        return bad(file, err, "%s.mrope_section sums to %lld, expected head_dim / 2 = %d", rc_ctx.prefix, (long long)sum,
                   x->head_dim / 2);
    if (x->n_expert_used > x->n_expert)
        return bad(file, err, "text_config.num_experts_per_tok (%d) exceeds the number of experts (%d)", x->n_expert_used,
                   x->n_expert);
    x->is_moe = calloc((size_t)x->n_layer, sizeof *x->is_moe);
    if (!x->is_moe) return mode_err_oom(err, (size_t)x->n_layer, "layer flags");
    int64_t mol[MODE_MAX_LAYERS];
    size_t nm = 0;
    if ((rc = mode_json_int_array(&c, t, "mlp_only_layers", false, mol, MODE_MAX_LAYERS, &nm, err))) return rc;
    /* transformers: a layer is sparse when it is not in mlp_only_layers, there are experts and
     * (layer + 1) % decoder_sparse_step == 0 */
    for (int l = 0; l < x->n_layer; l++) x->is_moe[l] = (l + 1) % x->decoder_sparse_step == 0;
    for (size_t i = 0; i < nm; i++) {
        if (mol[i] < 0 || mol[i] >= x->n_layer)
            return bad(file, err, "text_config.mlp_only_layers names layer %lld, the model has %d", (long long)mol[i], x->n_layer);
        x->is_moe[mol[i]] = false;
    }
    return MODE_OK;
}

static int load_vision(struct mode_config *cfg, const char *file, json_t *v, struct mode_err *err)
{
    struct mode_jctx c = {file, "vision_config"};
    struct mode_vision_config *x = &cfg->vision;
    int rc;
    x->in_channels = 3;
    x->temporal_patch_size = 2;
    x->merge_size = 2;
    const char *act = "gelu_pytorch_tanh";
    if ((rc = get_dim(&c, v, "depth", true, MODE_MAX_LAYERS, &x->depth, err)) ||
        (rc = get_dim(&c, v, "hidden_size", true, MODE_MAX_EMBD, &x->n_embd, err)) ||
        (rc = get_dim(&c, v, "num_heads", true, MODE_MAX_HEADS, &x->n_head, err)) ||
        (rc = get_dim(&c, v, "intermediate_size", true, MODE_MAX_FF, &x->n_ff, err)) ||
        (rc = get_dim(&c, v, "in_channels", false, 4, &x->in_channels, err)) ||
        (rc = get_dim(&c, v, "patch_size", true, 1024, &x->patch_size, err)) ||
        (rc = get_dim(&c, v, "temporal_patch_size", false, 64, &x->temporal_patch_size, err)) ||
        (rc = get_dim(&c, v, "spatial_merge_size", false, 64, &x->merge_size, err)) ||
        (rc = get_dim(&c, v, "out_hidden_size", true, MODE_MAX_EMBD, &x->out_embd, err)) ||
        (rc = get_dim(&c, v, "num_position_embeddings", true, 1 << 24, &x->n_pos, err)) ||
        (rc = mode_json_str(&c, v, "hidden_act", false, &act, err)))
        return rc;
    if (strcmp(act, "gelu_pytorch_tanh"))
        return bad(file, err, "vision_config.hidden_act '%s' is not supported (only gelu_pytorch_tanh)", act);
    int64_t ds[MODE_MAX_DEEPSTACK];
    size_t nd = 0;
    if ((rc = mode_json_int_array(&c, v, "deepstack_visual_indexes", false, ds, MODE_MAX_DEEPSTACK, &nd, err))) return rc;
    x->n_deepstack = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        if (ds[i] < 0 || ds[i] >= x->depth)
            return bad(file, err, "vision_config.deepstack_visual_indexes names vision layer %lld, the tower has %d", (long long)ds[i],
                       x->depth);
        x->deepstack[i] = (int)ds[i];
    }
    x->rope_theta = 10000.0; /* transformers' Qwen3-VL vision rotary base */
    json_t *rp = NULL;
    if ((rc = mode_json_obj(&c, v, "rope_parameters", false, &rp, err))) return rc;
    if (rp) {
        struct mode_jctx rcx = {file, "vision_config.rope_parameters"};
        if ((rc = mode_json_num(&rcx, rp, "rope_theta", false, &x->rope_theta, err))) return rc;
    }
    if (x->n_embd % x->n_head) return bad(file, err, "vision_config: hidden_size (%d) is not a multiple of num_heads (%d)", x->n_embd, x->n_head);
    if ((x->n_embd / x->n_head) % 4)
        return bad(file, err, "vision_config: head size %d is not a multiple of 4 (2-D rotary needs it)", x->n_embd / x->n_head);
    int side = (int)lround(sqrt((double)x->n_pos));
    if (side * side != x->n_pos)
        return bad(file, err, "vision_config.num_position_embeddings (%d) is not a square", x->n_pos);
    if (x->out_embd != cfg->text.n_embd)
        return bad(file, err, "vision_config.out_hidden_size (%d) differs from text_config.hidden_size (%d)", x->out_embd,
                   cfg->text.n_embd);
    if (x->n_deepstack > cfg->text.n_layer)
        return bad(file, err, "vision_config: %d deepstack layers feed a decoder of %d layers", x->n_deepstack, cfg->text.n_layer);
    return MODE_OK;
}

int mode_config_canonical(const struct mode_config *c, char *buf, size_t n)
{
    const struct mode_text_config *t = &c->text;
    const struct mode_vision_config *v = &c->vision;
    int k = snprintf(buf, n,
                     "arch=qwen3_vl_moe;vocab=%d;embd=%d;layers=%d;heads=%d;kv=%d;head_dim=%d;ff=%d;ff_exp=%d;experts=%d;"
                     "topk=%d;norm_topk=%d;sparse_step=%d;eps=%.9g;theta=%.9g;mrope=%d,%d,%d;bias=%d;tie=%d;"
                     "v_depth=%d;v_embd=%d;v_heads=%d;v_ff=%d;v_ch=%d;patch=%d;tpatch=%d;merge=%d;v_out=%d;v_pos=%d;"
                     "v_theta=%.9g;tokens=%d,%d,%d,%d;moe=",
                     t->n_vocab, t->n_embd, t->n_layer, t->n_head, t->n_head_kv, t->head_dim, t->n_ff, t->n_ff_exp,
                     t->n_expert, t->n_expert_used, t->norm_topk_prob, t->decoder_sparse_step, t->rms_eps, t->rope_theta,
                     t->mrope_section[0], t->mrope_section[1], t->mrope_section[2], t->attention_bias,
                     c->tie_word_embeddings, v->depth, v->n_embd, v->n_head, v->n_ff, v->in_channels, v->patch_size,
                     v->temporal_patch_size, v->merge_size, v->out_embd, v->n_pos, v->rope_theta, c->image_token_id,
                     c->video_token_id, c->vision_start_id, c->vision_end_id);
    for (int l = 0; l < t->n_layer && k > 0 && (size_t)k < n; l++) k += snprintf(buf + k, n - (size_t)k, "%d", t->is_moe[l]);
    if (k > 0 && (size_t)k < n) k += snprintf(buf + k, n - (size_t)k, ";deepstack=");
    for (int i = 0; i < v->n_deepstack && k > 0 && (size_t)k < n; i++)
        k += snprintf(buf + k, n - (size_t)k, "%s%d", i ? "," : "", v->deepstack[i]);
    return k > 0 && (size_t)k < n ? MODE_OK : MODE_EINTERNAL;
}

int mode_config_load(struct mode_config *cfg, const char *path, struct mode_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_t *root;
    const char *file = base_name(path);
    int rc = load_json(path, file, &root, err);
    if (rc) return rc;
    struct mode_jctx c = {file, ""};
    const char *mt = "";
    json_t *archs = json_object_get(root, "architectures");
    const char *arch = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
    if ((rc = mode_json_str(&c, root, "model_type", false, &mt, err))) goto out;
    if (arch) snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", arch);
    else snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", mt);
    if (arch ? strcmp(arch, "Qwen3VLMoeForConditionalGeneration") != 0 : strcmp(mt, "qwen3_vl_moe") != 0) {
        rc = bad(file, err, "architecture '%s' is not supported (supported: %s)", *cfg->arch_name ? cfg->arch_name : "(none given)",
                 MODE_SUPPORTED_ARCHS);
        goto out;
    }
    cfg->arch = MODE_ARCH_QWEN3_VL_MOE;
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "Qwen3VLMoeForConditionalGeneration"); /* also for model_type only */
    json_t *t = NULL, *v = NULL;
    if ((rc = mode_json_obj(&c, root, "text_config", true, &t, err)) || (rc = mode_json_obj(&c, root, "vision_config", true, &v, err)))
        goto out;
    if ((rc = load_text(cfg, file, t, err))) goto out;
    if ((rc = load_vision(cfg, file, v, err))) goto out;
    cfg->tie_word_embeddings = false;
    struct mode_jctx tc = {file, "text_config"};
    if ((rc = mode_json_bool(&tc, t, "tie_word_embeddings", false, &cfg->tie_word_embeddings, err)) ||
        (rc = mode_json_bool(&c, root, "tie_word_embeddings", false, &cfg->tie_word_embeddings, err)))
        goto out;
    cfg->bos_id = cfg->eos_id = -1;
    if ((rc = get_token(&c, root, "image_token_id", true, &cfg->image_token_id, err)) ||
        (rc = get_token(&c, root, "video_token_id", false, &cfg->video_token_id, err)) ||
        (rc = get_token(&c, root, "vision_start_token_id", true, &cfg->vision_start_id, err)) ||
        (rc = get_token(&c, root, "vision_end_token_id", true, &cfg->vision_end_id, err)) ||
        (rc = get_token(&tc, t, "bos_token_id", false, &cfg->bos_id, err)) ||
        (rc = get_token(&tc, t, "eos_token_id", false, &cfg->eos_id, err)))
        goto out;
    int ids[] = {cfg->image_token_id, cfg->video_token_id, cfg->vision_start_id, cfg->vision_end_id};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= cfg->text.n_vocab) {
            rc = bad(file, err, "special token id %d is outside the vocabulary (%d)", ids[i], cfg->text.n_vocab);
            goto out;
        }
    char canon[8192];
    if ((rc = mode_config_canonical(cfg, canon, sizeof canon))) {
        rc = bad(file, err, "configuration too large to describe");
        goto out;
    }
    struct mode_sha256 s;
    mode_sha256_init(&s);
    mode_sha256_update(&s, canon, strlen(canon));
    mode_sha256_hex(&s, cfg->hash);
out:
    json_decref(root);
    if (rc) mode_config_free(cfg);
    return rc;
}

void mode_config_free(struct mode_config *c)
{
    free(c->text.is_moe);
    c->text.is_moe = NULL;
}

/* ---- preprocessor_config.json --------------------------------------------------------------- */

int mode_preproc_load(struct mode_preproc *p, const char *path, struct mode_err *err)
{
    memset(p, 0, sizeof *p);
    json_t *root;
    const char *file = base_name(path);
    int rc = load_json(path, file, &root, err);
    if (rc) return rc;
    struct mode_jctx c = {file, ""};
    p->do_resize = p->do_rescale = p->do_normalize = p->do_convert_rgb = true;
    p->rescale_factor = 1.0 / 255.0;
    p->resample = 3;
    p->temporal_patch_size = 2;
    p->merge_size = 2;
    int64_t rs = 3;
    json_t *size = NULL;
    size_t n = 0;
    if ((rc = get_dim(&c, root, "patch_size", true, 1024, &p->patch_size, err)) ||
        (rc = get_dim(&c, root, "temporal_patch_size", false, 64, &p->temporal_patch_size, err)) ||
        (rc = get_dim(&c, root, "merge_size", false, 64, &p->merge_size, err)) ||
        (rc = mode_json_bool(&c, root, "do_resize", false, &p->do_resize, err)) ||
        (rc = mode_json_bool(&c, root, "do_rescale", false, &p->do_rescale, err)) ||
        (rc = mode_json_bool(&c, root, "do_normalize", false, &p->do_normalize, err)) ||
        (rc = mode_json_bool(&c, root, "do_convert_rgb", false, &p->do_convert_rgb, err)) ||
        (rc = mode_json_num(&c, root, "rescale_factor", false, &p->rescale_factor, err)) ||
        (rc = mode_json_int(&c, root, "resample", false, &rs, err)) ||
        (rc = mode_json_num_array(&c, root, "image_mean", true, p->mean, 3, &n, err)))
        goto out;
    if (n != 3) {
        rc = bad(file, err, "image_mean has %zu values, expected 3", n);
        goto out;
    }
    if ((rc = mode_json_num_array(&c, root, "image_std", true, p->std, 3, &n, err))) goto out;
    if (n != 3) {
        rc = bad(file, err, "image_std has %zu values, expected 3", n);
        goto out;
    }
    for (int i = 0; i < 3; i++)
        if (!(p->std[i] > 0)) {
            rc = bad(file, err, "image_std[%d] is not positive", i);
            goto out;
        }
    p->resample = (int)rs;
    /* pixel budget: size {shortest_edge: min_pixels, longest_edge: max_pixels} (what the Qwen2-VL
     * processor means by them) or, in older files, min_pixels / max_pixels */
    if ((rc = mode_json_obj(&c, root, "size", false, &size, err))) goto out;
    p->min_pixels = p->max_pixels = -1;
    if (size) {
        struct mode_jctx sc = {file, "size"};
        if ((rc = mode_json_int(&sc, size, "shortest_edge", false, &p->min_pixels, err)) ||
            (rc = mode_json_int(&sc, size, "longest_edge", false, &p->max_pixels, err)))
            goto out;
    }
    if ((rc = mode_json_int(&c, root, "min_pixels", false, &p->min_pixels, err)) ||
        (rc = mode_json_int(&c, root, "max_pixels", false, &p->max_pixels, err)))
        goto out;
    if (p->min_pixels < 1 || p->max_pixels < p->min_pixels || p->max_pixels > (INT64_C(1) << 40)) {
        rc = bad(file, err, "pixel budget [%lld, %lld] is missing or not a range (size.shortest_edge / size.longest_edge)",
                 (long long)p->min_pixels, (long long)p->max_pixels);
        goto out;
    }
out:
    json_decref(root);
    return rc;
}

int mode_preproc_check(const struct mode_preproc *p, const struct mode_config *c, const char *path,
                       struct mode_err *err)
{
    const char *file = base_name(path);
    const struct mode_vision_config *v = &c->vision;
    if (p->patch_size != v->patch_size)
        return bad(file, err, "patch_size %d differs from the model's vision_config.patch_size %d", p->patch_size, v->patch_size);
    if (p->temporal_patch_size != v->temporal_patch_size)
        return bad(file, err, "temporal_patch_size %d differs from the model's %d", p->temporal_patch_size, v->temporal_patch_size);
    if (p->merge_size != v->merge_size)
        return bad(file, err, "merge_size %d differs from the model's spatial_merge_size %d", p->merge_size, v->merge_size);
    return MODE_OK;
}
