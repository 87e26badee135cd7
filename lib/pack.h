/* pack.h — GPTQ quantization of every routed expert at its allocated width, layer by layer over
 * the calibration samples (mode-pack).
 *
 * For each MoE layer: the layer runs on the calibration hidden states (by default those of the
 * already-quantized earlier layers, as GPTQ does; fp_inputs: of the full-precision model), its
 * MoE inputs and routing are kept; each expert's gate and up projections are quantized with the
 * Hessian of the tokens the router sends it, then its down projection with the Hessian of its
 * activations through the quantized gate/up ("true sequential"); an expert with fewer tokens than
 * min_tokens is rounded to nearest (and counted). Scales are rounded to f16 before the
 * dequantised weights are formed, so the weights the next layers see are exactly those a loader
 * gets from the packed tensors. The layer then runs again with the quantized experts to give the
 * next layer's inputs. Width 16 leaves an expert as it is.
 *
 * With attn_bits (2, 3, 4, 8), the q, k, v and o projections of every decoder layer are quantized
 * first, in GPTQ's true-sequential order: q/k/v with the Hessian of the attention's normalised
 * input over all calibration tokens, then o_proj with that of its input through the quantized
 * q/k/v; the MoE is then calibrated on the output of the quantized attention. The vision tower is
 * never quantized.
 */
#ifndef MODE_PACK_H
#define MODE_PACK_H

#include "runtime.h"

#include <jansson.h>

struct mode_pack_opts {
    int group;
    int attn_bits; /* 2, 3, 4, 8: also q/k/v/o_proj of every decoder layer; 0 or 16: left as they are */
    bool sym, act_order, fp_inputs, gptq_v1;
    int64_t min_tokens;
    int start_layer; /* resume: layers before it are done, b->h holds their output */
    enum mode_device device; /* CUDA: the experts' GPTQ (Hessians included) in batches on the GPU */
    bool batched;            /* the batched path (lib/gptq.h) on the CPU too: what CUDA runs, for tests */
    void (*progress)(void *ctx, int layer, int expert, int n_expert);
    void *progress_ctx;
};

/* One projection of one expert, packed (bits < 16) or kept (bits 16: weight, f32, nn.Linear). */
struct mode_pack_proj {
    int bits;
    int64_t n, k, g;
    int32_t *qweight, *qzeros, *g_idx;
    uint16_t *scales;
    float *weight;
    const float *deq; /* (n, k) the dequantised weights the later layers see, bit for bit what a
                         loader forms from the packed tensors (borrowed; valid during emit) */
};

struct mode_pack_layer {
    int layer, n_expert;         /* n_expert 0: a dense layer */
    struct mode_pack_proj *proj; /* (n_expert * 3): gate, up, down */
    bool has_attn;               /* attn holds the layer's quantized q, k, v, o_proj */
    struct mode_pack_proj attn[4];
    bool attn_rtn;               /* ... rounded to nearest for lack of tokens */
    int64_t *tokens;             /* (n_expert) calibration tokens routed to each expert */
    int n_rtn;                   /* experts rounded to nearest for lack of tokens */
    int64_t zero_lost;           /* v1 only: zero points the format cannot hold */
};

/* bits (n_layer, n_expert): the width of each expert of each MoE layer (other rows ignored).
 * emit is called after each decoder layer (dense ones too, with no expert) with its packed tensors
 * (valid during the call) and the batch's hidden states after that layer (b->h) for
 * checkpointing. */
int mode_pack_run(struct mode_rt *rt, struct mode_rt_batch *b, const int *bits, const struct mode_pack_opts *o,
                  int (*emit)(void *ctx, const struct mode_pack_layer *l, const struct mode_rt_batch *b, struct mode_err *err),
                  void *emit_ctx, struct mode_err *err);

/* ---- the resume state and the checkpoint directory's inputs and temporaries ----------------
 *
 * mode-pack keeps OUTDIR.resume/ while it runs: per finished decoder layer, layer-NNN/ holds the
 * layer's packed tensors (model.safetensors), its counts (stats, below), the fingerprint of the
 * run's inputs and options, and for the last finished layer its output hidden states. The final
 * write goes to OUTDIR.tmp-XXXXXX (io.h's mode_outdir), renamed into place.
 *
 * A run holds an exclusive flock(2) on OUTDIR.resume/lock from before it writes anything until
 * it ends: it is the only writer of OUTDIR's temporaries (OUTDIR.tmp-* beside OUTDIR and
 * layer-NNN.tmp-* / layer-NNN.old-* inside OUTDIR.resume/), so those it finds when it takes the
 * lock were left by a run that died and are removed; two runs on one OUTDIR never share it. */

/* What a layer contributes to the warnings, config.json and the model card; persisted per layer
 * so that a resumed run writes the same bytes as an uninterrupted one. */
struct mode_pack_stats {
    int64_t rtn;       /* experts rounded to nearest for lack of tokens */
    int64_t attn_rtn;  /* layers whose attention was rounded to nearest */
    int64_t zero_lost; /* v1 zero points the format cannot hold */
};

/* The stats file's text ("rtn_experts N\nrtn_attention N\nzero_lost N\n") of layer l into buf
 * (size n); returns its length. */
size_t mode_pack_stats_text(const struct mode_pack_layer *l, char *buf, size_t n);
/* Reads a stats file and adds its counts to *sum. MODE_EDATA when it is missing or malformed. */
int mode_pack_stats_add(const char *path, struct mode_pack_stats *sum, struct mode_err *err);

/* Takes the lock of resume_dir (which must exist), writing the holder's pid into it; *fd is held
 * open (close-on-exec) until the process ends. MODE_ECANTCREAT naming the holder's pid when
 * another process holds it, or when it cannot be created. */
int mode_pack_lock(const char *resume_dir, int *fd, struct mode_err *err);

/* Removes the temporaries of outdir left by dead runs (see above; call with the lock held):
 * report is called once per temporary found, with its path, the bytes of the files it held and 0,
 * or the errno value that kept it from being removed. */
int mode_pack_clean(const char *outdir, const char *resume_dir, void (*report)(void *ctx, const char *path, uint64_t bytes, int errnum),
                    void *ctx, struct mode_err *err);

/* The model directory's files that the checkpoint carries over as they are (tokenizer,
 * processor, chat template, generation config...): every entry but hidden ones, config.json,
 * README.md, *.safetensors and *.safetensors.index.json. A regular file is taken. A symbolic link
 * is followed only to a regular file inside the model directory (after resolving every link),
 * or, for a Hugging Face cache snapshot (.../models--X/snapshots/REV), inside that repository's
 * blobs/; a link elsewhere, or to nothing, is listed with `skip` saying why and is not read.
 * Other entries (directories, devices) are left out. */
struct mode_pack_side {
    char name[256];  /* the entry's name in the model directory and in the checkpoint */
    char src[4096];  /* the file to read: the entry, or the link's resolved target */
    char skip[4200]; /* empty: copy; else why not (a link: "a symbolic link to T, outside ...") */
};
/* Returns new *out (caller frees) of *n entries, sorted by name. MODE_ENOINPUT when the directory
 * cannot be listed. */
int mode_pack_side_files(const char *model_dir, struct mode_pack_side **out, size_t *n, struct mode_err *err);

/* ---- the checkpoint's description ----------------------------------------------------------- */

/* The damping mode_pack_run's GPTQ adds to the Hessian's diagonal, as a fraction of its mean
 * (the published GPTQ's, lib/quant.h): GPTQModel's damp_percent. */
#define MODE_PACK_DAMP 0.01

/* config.json's quantization_config for the routed experts at bits (t->n_layer, t->n_expert),
 * packed with o: GPTQ's fields (quant_method, bits: the most common width, group_size, sym,
 * desc_act, checkpoint_format, pack_dtype, lm_head), GPTQModel's `dynamic` rules (per MoE layer
 * one rule per width naming its experts, 16 bits excluded, and what is left as it was: vision
 * tower, router, lm_head, the attention unless o->attn_bits), and `meta` as GPTQModel writes it
 * (quantizer, uri, damp_percent, true_sequential). Returns a new reference; NULL when out of
 * memory. */
json_t *mode_pack_quant_config(const struct mode_text_config *t, const int *bits, const struct mode_pack_opts *o);

/* The source model's name for the model card (title, YAML base_model), into buf (size n): config's
 * `_name_or_path` when it is a Hugging Face id (not a path), else the repository of a Hugging Face
 * cache snapshot (.../models--ORG--NAME/snapshots/REV: "ORG/NAME"), else the directory's name as
 * given. Control characters become '?'. config may be NULL. */
void mode_pack_source_name(const char *model_dir, json_t *config, char *buf, size_t n);

/* The lines of the source model card's YAML header (model_dir/README.md between its "---" lines)
 * that the quantized model inherits: license, license_name, license_link and pipeline_tag, as
 * written there, each ending in a newline; "" when there is no README.md or none of these. Returns
 * new *out (caller frees), or an error naming README.md when it cannot be read or exceeds
 * MODE_PACK_CARD_MAX. */
#define MODE_PACK_CARD_MAX ((size_t)16 << 20) /* a model card read whole: the largest known are ~100 kB */
int mode_pack_source_yaml(const char *model_dir, char **out, struct mode_err *err);

/* mode-eval's JSON output (mode-eval(1)), read for the card: MODE_EDATA when it is not a JSON object
 * with a "metrics" object. Returns a new reference. */
#define MODE_PACK_EVAL_MAX ((size_t)16 << 20)    /* a few kB are written: far above */
#define MODE_PACK_CARD_MAX_EVAL 8                 /* columns of the evaluation table */
int mode_pack_eval_load(const char *path, json_t **out, struct mode_err *err);

/* What the model card (README.md) says. */
struct mode_pack_card {
    const char *base_model;  /* mode_pack_source_name */
    const char *source_yaml; /* mode_pack_source_yaml, or NULL */
    const char *arch, *model_type; /* config's architecture and model_type (a tag; NULL: none) */
    const struct mode_text_config *text;
    const int *bits;         /* (text->n_layer, text->n_expert) */
    const struct mode_pack_opts *opts;
    const char *method, *budget; /* of the allocation (mode-ilp's arguments), "?" when unknown */
    int n_samples;
    int64_t n_tokens, rtn;   /* calibration tokens; experts rounded to nearest */
    const char *picture;     /* the allocation's picture in the checkpoint, or NULL */
    json_t *const *eval;     /* (n_eval) mode_pack_eval_load */
    int n_eval;              /* at most MODE_PACK_CARD_MAX_EVAL */
};

/* Writes the card: a Hugging Face YAML header (base_model, base_model_relation quantized,
 * library_name gptqmodel, the source's license and pipeline_tag, tags), the title naming the
 * source model, a table of how it was quantized (its expert count included), the widths per
 * layer, the picture, the evaluation section (between the lines MODE_PACK_EVAL_BEGIN and
 * MODE_PACK_EVAL_END: a table of the evaluations, a column each, or a line saying there is none),
 * how to load it with GPTQModel and where it can be served. Returns w's status. */
#define MODE_PACK_EVAL_BEGIN "<!-- mode-eval begin -->"
#define MODE_PACK_EVAL_END "<!-- mode-eval end -->"
int mode_pack_card_write(struct mode_wbuf *w, const struct mode_pack_card *c);

/* Replaces the evaluation section of the card dir/README.md (written by mode_pack_card_write)
 * with a table of eval (n_eval, at most MODE_PACK_CARD_MAX_EVAL), atomically. MODE_EDATA when the
 * card has no such section. */
int mode_pack_card_update(const char *dir, json_t *const *eval, int n_eval, struct mode_err *err);

#endif
