# pipelines/mode.mk — the MODE experiment as a make graph: every intermediate stream is a file, so a
# changed stage re-runs only what depends on it and `make -j` runs independent work in parallel.
#
#   make -f pipelines/mode.mk [VAR=value ...] [target]     (from the repository root, after make)
#
# Targets: table (default: prints the comparison and writes $(OUT)/table.txt), ablations (the same
# with vis-denoise --method none|random and the layer sensitivity metric), and any file below.
# `make demo` at the top runs this on the embedded emoji-vl model.

MODEL ?= tests/fixtures/emoji-vl/model
CALIB ?= tests/fixtures/emoji-vl/calib/data.jsonl
EVAL ?= tests/fixtures/emoji-vl/eval/data.jsonl
OUT ?= build/demo
BIN ?= bin
BUDGET ?= 2.5
BITS ?= 2,3,4
METHODS ?= mode text-vision freq-total mcmoe
UNIFORM ?= 2 3
METRIC ?= kl
SCOPE ?= layer
GROUP ?= 128
# more mode-pack options, e.g. PACK_FLAGS="--attn-bits 8"
PACK_FLAGS ?=
# every EVAL_EVERY-th evaluation line is evaluated (1: all)
EVAL_EVERY ?= 1
# every CALIB_EVERY-th calibration line is used at all (1: all)
CALIB_EVERY ?= 1

.SUFFIXES:
.DELETE_ON_ERROR:
SHELL := /bin/sh
CALIB_DIR := $(patsubst %/,%,$(dir $(CALIB)))
EVAL_DIR := $(patsubst %/,%,$(dir $(EVAL)))
VARIANTS := $(addprefix uniform,$(UNIFORM)) $(METHODS)

.PHONY: table ablations all-streams
table: $(OUT)/table.txt
	@cat $<

# ---- data --------------------------------------------------------------------------------------
$(OUT)/calib.jsonl: $(CALIB)
	@mkdir -p $(@D)
	awk 'NR % $(CALIB_EVERY) == 0 || $(CALIB_EVERY) == 1' $< > $@
$(OUT)/eval.jsonl: $(EVAL)
	@mkdir -p $(@D)
	awk 'NR % $(EVAL_EVERY) == 1 || $(EVAL_EVERY) == 1' $< > $@
$(OUT)/calib.ms: $(OUT)/calib.jsonl
	$(BIN)/mode-tokenize -m $(MODEL) --root $(CALIB_DIR) -o $@ $<
$(OUT)/eval.ms: $(OUT)/eval.jsonl
	$(BIN)/mode-tokenize -m $(MODEL) --root $(EVAL_DIR) -o $@ $<

# ---- routing statistics ----------------------------------------------------------------------------
$(OUT)/trace.ms: $(OUT)/calib.ms
	$(BIN)/mode-route-trace -m $(MODEL) -o $@ $<
$(OUT)/freq.ms $(OUT)/keep.ms $(OUT)/freq.png &: $(OUT)/trace.ms
	$(BIN)/mode-vis-denoise --png $(OUT)/freq.png --keep-out $(OUT)/keep.ms -o $(OUT)/freq.ms $<
$(OUT)/freq-%.ms: $(OUT)/trace.ms
	$(BIN)/mode-vis-denoise --method $* -o $@ $<

# ---- sensitivity (on the same calibration samples: mode-ilp checks that freq and sens agree) ------
$(OUT)/sens-%.ms: $(OUT)/calib.ms $(OUT)/keep.ms
	$(BIN)/mode-sensitivity -m $(MODEL) --metric $* --bits $(BITS) --all --vision-tokens key --keep $(OUT)/keep.ms -o $@ $<

# ---- allocations ---------------------------------------------------------------------------------
$(OUT)/alloc-uniform%.ms:
	@mkdir -p $(@D)
	$(BIN)/mode-ilp --method uniform --avg-bits $* -m $(MODEL) --bits $(BITS) --group-size $(GROUP) -o $@ --json $(@:.ms=.json)
$(OUT)/alloc-%.ms: $(OUT)/freq.ms $(OUT)/sens-$(METRIC).ms
	$(BIN)/mode-ilp --method $* --avg-bits $(BUDGET) --scope $(SCOPE) -m $(MODEL) --group-size $(GROUP) \
	    -f $(OUT)/freq.ms -s $(OUT)/sens-$(METRIC).ms -o $@ --json $(@:.ms=.json) --png $(@:.ms=.png)

# the JSON summaries and pictures come with their alloc stream
$(OUT)/alloc-%.json: $(OUT)/alloc-%.ms
	@test -f $@

# ---- packing and evaluation --------------------------------------------------------------------
$(OUT)/packed-%/config.json: $(OUT)/alloc-%.ms $(OUT)/calib.ms
	rm -rf $(OUT)/packed-$* $(OUT)/packed-$*.resume
	$(BIN)/mode-pack -m $(MODEL) -a $< --group $(GROUP) $(PACK_FLAGS) -o $(OUT)/packed-$* $(OUT)/calib.ms
$(OUT)/eval-fp.json: $(OUT)/eval.ms
	$(BIN)/mode-eval -m $(MODEL) -o $@ $<
$(OUT)/eval-%.json: $(OUT)/packed-%/config.json $(OUT)/eval.ms
	$(BIN)/mode-eval -m $(OUT)/packed-$* -o $@ $(OUT)/eval.ms

$(OUT)/table.txt: $(OUT)/eval-fp.json $(foreach v,$(VARIANTS),$(OUT)/eval-$(v).json $(OUT)/alloc-$(v).json)
	pipelines/table.sh $(OUT) fp $(VARIANTS) > $@

# ---- ablations -------------------------------------------------------------------------------------
# MODE with the key tokens chosen at random or all image tokens key, and with the layer metric
$(OUT)/alloc-mode-random.ms: $(OUT)/freq-random.ms $(OUT)/sens-$(METRIC).ms
	$(BIN)/mode-ilp --method mode --avg-bits $(BUDGET) --scope $(SCOPE) -m $(MODEL) --group-size $(GROUP) -f $< -s $(OUT)/sens-$(METRIC).ms -o $@ --json $(@:.ms=.json)
$(OUT)/alloc-mode-none.ms: $(OUT)/freq-none.ms $(OUT)/sens-$(METRIC).ms
	$(BIN)/mode-ilp --method mode --avg-bits $(BUDGET) --scope $(SCOPE) -m $(MODEL) --group-size $(GROUP) -f $< -s $(OUT)/sens-$(METRIC).ms -o $@ --json $(@:.ms=.json)
$(OUT)/alloc-mode-layer.ms: $(OUT)/freq.ms $(OUT)/sens-layer.ms
	$(BIN)/mode-ilp --method mode --avg-bits $(BUDGET) --scope $(SCOPE) -m $(MODEL) --group-size $(GROUP) -f $< -s $(OUT)/sens-layer.ms -o $@ --json $(@:.ms=.json)
$(OUT)/alloc-mode-global.ms: $(OUT)/freq.ms $(OUT)/sens-$(METRIC).ms
	$(BIN)/mode-ilp --method mode --avg-bits $(BUDGET) --scope global -m $(MODEL) --group-size $(GROUP) -f $< -s $(OUT)/sens-$(METRIC).ms -o $@ --json $(@:.ms=.json)
ABLATIONS := mode-random mode-none mode-layer mode-global sens-only
$(OUT)/ablations.txt: $(OUT)/eval-fp.json $(foreach v,mode $(ABLATIONS),$(OUT)/eval-$(v).json $(OUT)/alloc-$(v).json)
	pipelines/table.sh $(OUT) fp mode $(ABLATIONS) > $@
ablations: $(OUT)/ablations.txt
	@cat $<

.SECONDARY:
