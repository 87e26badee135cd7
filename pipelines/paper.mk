# pipelines/paper.mk — the paper-shaped experiment on one model: the main table (uniform GPTQ at 2
# and 3 bits, MC-MoE and MODE at several average widths over {2,3,4}) and the ablation ladder
# (frequency alone: all tokens, then ½ text + ½ all / key / redundant image tokens; with
# sensitivity: freq-total, freq-text-vision, freq-text-key, MODE), with the paired bootstrap 95%
# interval of every perplexity difference against MODE and the spread over three disjoint thirds
# of the calibration set.
#
#   make -f pipelines/paper.mk [VAR=value ...] [target]      (from the repository root, after make)
#
# `make paper` at the top runs this on the embedded emoji-vl model (build/paper/paper.md).
# Independent of pipelines/mode.mk (the demo): its own directory and rules, the same variable names.
#
# Layout: $(OUT)/eval.ms (the evaluation set), $(OUT)/fp/ (full precision), and one directory per
# calibration set — all/ (every line) and third1/ third2/ third3/ (lines 1, 4, 7, ...; 2, 5, ...;
# 3, 6, ...) — each with its calib.ms, trace.ms, freq.ms, keep.ms, sens-kl.ms, sens-mcmoe.ms and,
# per variant METHOD@BITS, alloc-V.ms/.json, packed-V/, eval-V.json and records-V.jsonl (mode-eval
# --records); all/cmp-V.json holds mode-eval --compare of V against MODE, all/step-V.json of a
# ladder step against the step before it.

MODEL ?= tests/fixtures/emoji-vl/model
CALIB ?= tests/fixtures/emoji-vl/calib/data.jsonl
EVAL ?= tests/fixtures/emoji-vl/eval/data.jsonl
OUT ?= build/paper
BIN ?= bin
BITS ?= 2,3,4
GROUP ?= 128
# average widths of the main table (MC-MoE and MODE at each) and of the ladder
BUDGETS ?= 2.25 2.5 3
LADDER_BUDGET ?= 2.5
# the paired bootstrap (mode-eval --compare)
RESAMPLES ?= 10000
SEED ?= 1
# threads of each heavy program (--threads): with make -j2, two programs of one thread each share
# the two cores instead of four threads fighting for them
THREADS ?= 1

.SUFFIXES:
.DELETE_ON_ERROR:
SHELL := /bin/sh
CALIB_DIR := $(patsubst %/,%,$(dir $(CALIB)))
EVAL_DIR := $(patsubst %/,%,$(dir $(EVAL)))

# a variant is METHOD@BITS
meth = $(firstword $(subst @, ,$(1)))
bud = $(lastword $(subst @, ,$(1)))
MAIN := uniform@2 uniform@3 $(foreach b,$(BUDGETS),mcmoe@$(b) mode@$(b))
LADDER := $(addsuffix @$(LADDER_BUDGET),rank-all rank-text-vision rank-text-key rank-text-redundant freq-total \
	freq-text-vision freq-text-key mode)
VARIANTS := $(sort $(MAIN) $(LADDER))
# the calibration thirds run for the spread (THIRDS= leaves them out: three of the four calibration runs)
THIRDS ?= third1 third2 third3
SETS := all $(filter third1 third2 third3,$(THIRDS))
# MODE at the variant's width, or at the first budget for a width MODE was not run at (uniform 2)
ref = mode@$(if $(filter $(call bud,$(1)),$(BUDGETS)),$(call bud,$(1)),$(firstword $(BUDGETS)))
COMPARED := $(foreach v,$(VARIANTS),$(if $(filter mode,$(call meth,$(v))),,$(v)))

.PHONY: paper
paper: $(OUT)/paper.md
	@cat $<

# ---- evaluation set and full precision ------------------------------------------------------
$(OUT)/eval.ms: $(EVAL)
	@mkdir -p $(@D)
	$(BIN)/mode-tokenize -m $(MODEL) --root $(EVAL_DIR) -o $@ $<
$(OUT)/fp/eval.json $(OUT)/fp/records.jsonl &: $(OUT)/eval.ms
	@mkdir -p $(@D)
	$(BIN)/mode-eval --threads $(THREADS) -m $(MODEL) --records $(OUT)/fp/records.jsonl -o $(OUT)/fp/eval.json $<

# ---- one calibration set: $(1) its directory, $(2) the awk condition choosing its lines -------
define CALIB_SET
$(OUT)/$(1)/calib.jsonl: $(CALIB)
	@mkdir -p $$(@D)
	awk '$(2)' $$< > $$@
$(OUT)/$(1)/calib.ms: $(OUT)/$(1)/calib.jsonl
	$(BIN)/mode-tokenize -m $(MODEL) --root $(CALIB_DIR) -o $$@ $$<
$(OUT)/$(1)/trace.ms: $(OUT)/$(1)/calib.ms
	$(BIN)/mode-route-trace --threads $(THREADS) -m $(MODEL) -o $$@ $$<
$(OUT)/$(1)/freq.ms $(OUT)/$(1)/keep.ms &: $(OUT)/$(1)/trace.ms
	$(BIN)/mode-vis-denoise --keep-out $(OUT)/$(1)/keep.ms -o $(OUT)/$(1)/freq.ms $$<
# MODE's sensitivity: KL on text tokens and on key image tokens, and the modality-blind one
$(OUT)/$(1)/sens-kl.ms: $(OUT)/$(1)/calib.ms $(OUT)/$(1)/keep.ms
	$(BIN)/mode-sensitivity --threads $(THREADS) -m $(MODEL) --metric kl --bits $(BITS) --group-size $(GROUP) --all --vision-tokens key \
	    --keep $(OUT)/$(1)/keep.ms -o $$@ $(OUT)/$(1)/calib.ms
# MC-MoE's: the summed Frobenius norms of the MoE output error, RTN
$(OUT)/$(1)/sens-mcmoe.ms: $(OUT)/$(1)/calib.ms
	$(BIN)/mode-sensitivity --threads $(THREADS) -m $(MODEL) --metric mcmoe --bits $(BITS) --group-size $(GROUP) -o $$@ $$<
# uniform needs neither stream; mcmoe takes its own error; rank-* only the frequencies (each
# variant's streams are its prerequisites, below, so that nothing waits for a sweep it does not use)
$(OUT)/$(1)/alloc-%.ms:
	$(BIN)/mode-ilp --method $$(call meth,$$*) --avg-bits $$(call bud,$$*) --bits $(BITS) -m $(MODEL) --group-size $(GROUP) \
	    $$(if $$(filter uniform,$$(call meth,$$*)),,-f $(OUT)/$(1)/freq.ms) \
	    $$(if $$(filter uniform rank-%,$$(call meth,$$*)),,-s $(OUT)/$(1)/sens-$$(if $$(filter mcmoe,$$(call meth,$$*)),mcmoe,kl).ms) \
	    -o $$@ --json $$(@:.ms=.json)
$(OUT)/$(1)/alloc-%.json: $(OUT)/$(1)/alloc-%.ms
	@test -f $$@
$(OUT)/$(1)/packed-%/config.json: $(OUT)/$(1)/alloc-%.ms $(OUT)/$(1)/calib.ms
	rm -rf $(OUT)/$(1)/packed-$$* $(OUT)/$(1)/packed-$$*.resume
	$(BIN)/mode-pack --threads $(THREADS) -m $(MODEL) -a $$< --group $(GROUP) -o $(OUT)/$(1)/packed-$$* $(OUT)/$(1)/calib.ms
$(OUT)/$(1)/eval-%.json $(OUT)/$(1)/records-%.jsonl: $(OUT)/$(1)/packed-%/config.json $(OUT)/eval.ms
	$(BIN)/mode-eval --threads $(THREADS) -m $(OUT)/$(1)/packed-$$* --records $(OUT)/$(1)/records-$$*.jsonl -o $(OUT)/$(1)/eval-$$*.json $(OUT)/eval.ms
endef

$(eval $(call CALIB_SET,all,1))
$(eval $(call CALIB_SET,third1,NR % 3 == 1))
$(eval $(call CALIB_SET,third2,NR % 3 == 2))
$(eval $(call CALIB_SET,third3,NR % 3 == 0))

# the streams each variant's allocation reads, in calibration set directory $(1)
alloc_deps = $(if $(filter uniform,$(call meth,$(2))),,$(1)/freq.ms \
	$(if $(filter rank-%,$(call meth,$(2))),,$(1)/sens-$(if $(filter mcmoe,$(call meth,$(2))),mcmoe,kl).ms))
$(foreach s,$(SETS),$(foreach v,$(VARIANTS),$(eval $(OUT)/$(s)/alloc-$(v).ms: $(call alloc_deps,$(OUT)/$(s),$(v)))))

# ---- comparisons against MODE (whole calibration set) -----------------------------------------
$(foreach v,$(COMPARED),$(eval $(OUT)/all/cmp-$(v).json: $(OUT)/all/records-$(v).jsonl $(OUT)/all/records-$(call ref,$(v)).jsonl))
$(OUT)/all/cmp-%.json:
	$(BIN)/mode-eval --compare $(OUT)/all/records-$*.jsonl $(word 2,$^) --resamples $(RESAMPLES) --seed $(SEED) -o $@
# and each step of the ladder against the step before it (the frequency-only steps against (b),
# ½ text + ½ all image tokens, for (c) and (d); the sensitivity steps in turn)
STEPS := rank-text-vision:rank-all rank-text-key:rank-text-vision rank-text-redundant:rank-text-vision \
	freq-text-vision:freq-total freq-text-key:freq-text-vision mode:freq-text-key
step_a = $(firstword $(subst :, ,$(1)))@$(LADDER_BUDGET)
step_b = $(lastword $(subst :, ,$(1)))@$(LADDER_BUDGET)
STEP_FILES := $(foreach p,$(STEPS),$(OUT)/all/step-$(call step_a,$(p)).json)
$(foreach p,$(STEPS),$(eval $(OUT)/all/step-$(call step_a,$(p)).json: $(OUT)/all/records-$(call step_a,$(p)).jsonl \
	$(OUT)/all/records-$(call step_b,$(p)).jsonl))
$(OUT)/all/step-%.json:
	$(BIN)/mode-eval --compare $(word 1,$^) $(word 2,$^) --resamples $(RESAMPLES) --seed $(SEED) -o $@

# ---- the tables ------------------------------------------------------------------------------
$(OUT)/paper.md: $(OUT)/fp/eval.json pipelines/paper-table.sh \
	$(foreach s,$(SETS),$(foreach v,$(VARIANTS),$(OUT)/$(s)/eval-$(v).json $(OUT)/$(s)/alloc-$(v).json)) \
	$(foreach v,$(COMPARED),$(OUT)/all/cmp-$(v).json) $(STEP_FILES)
	pipelines/paper-table.sh $(OUT) '$(MAIN)' '$(LADDER)' '$(BUDGETS)' $(RESAMPLES) $(SEED) '$(STEPS)' \
	    '$(filter-out all,$(SETS))' > $@

.SECONDARY:
