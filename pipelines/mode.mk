# pipelines/mode.mk — the MODE experiment as a make graph: every intermediate stream is a file, so a
# changed stage re-runs only what depends on it and `make -j` runs independent work in parallel.
#
#   make -f pipelines/mode.mk [VAR=value ...] [target]     (from the repository root, after make)
#
# Targets: table (default: prints the comparison and writes $(OUT)/table.txt), ablations (the same
# with vis-denoise --method none|random and the layer sensitivity metric), and any file below.
# `make demo` at the top runs this on the embedded emoji-vl model.
#
# SCHED=slurm runs the heavy calibration stages on a Slurm cluster as job arrays, SHARDS tasks each:
# mode-route-trace by layer range or by sample range, the merge (mode-cat -s) and mode-vis-denoise,
# mode-sensitivity by layer range with the merged trace's keep masks, the merge; the other stages
# run where make runs. The merged streams equal the single-process run's byte for byte but for the
# headers' shards (pipelines/README.md, "Slurm").

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
# mode-route-trace's batches (its default); with THREADS, the threads of the matrix products of
# mode-route-trace and mode-sensitivity (default: OpenBLAS's). Both change the last bits of the
# results, so a sharded run equals a single-process run made with the same values.
BATCH_TOKENS ?= 16384
THREADS ?=

# ---- Slurm (SCHED=slurm; pipelines/README.md) ----------------------------------------------------
SCHED ?= local
# tasks per sharded stage; route-trace split by layers (x batches when there are several) or samples
SHARDS ?= 4
TRACE_BY ?= layers
# a failed task is resubmitted alone up to RETRIES times
RETRIES ?= 1
PARTITION ?=
# more sbatch options for every job, e.g. SUBMIT_FLAGS="--account=a --qos=q"
SUBMIT_FLAGS ?=
# resources of one task (sbatch --cpus-per-task, --mem, --time); sized for emoji-vl, see README.md
# "On a cluster" for a real checkpoint
TRACE_CPUS ?= 1
TRACE_MEM ?= 1G
TRACE_TIME ?= 1:00:00
SENS_CPUS ?= 1
SENS_MEM ?= 1G
SENS_TIME ?= 4:00:00
MERGE_CPUS ?= 1
MERGE_MEM ?= 1G
MERGE_TIME ?= 1:00:00

.SUFFIXES:
.DELETE_ON_ERROR:
SHELL := /bin/sh
CALIB_DIR := $(patsubst %/,%,$(dir $(CALIB)))
EVAL_DIR := $(patsubst %/,%,$(dir $(EVAL)))
VARIANTS := $(addprefix uniform,$(UNIFORM)) $(METHODS)
ifeq ($(filter $(SCHED),local slurm),)
  $(error SCHED must be local or slurm)
endif
THREADS_FLAG := $(if $(THREADS), --threads $(THREADS))
TRACE_ARGS = -m $(MODEL) --batch-tokens $(BATCH_TOKENS)
SENS_ARGS = -m $(MODEL) --metric $* --bits $(BITS) --all --vision-tokens key --keep $(OUT)/keep.ms
# job NAME,OUTPUT: a recipe line's prefix that runs its command as a one-task Slurm job (nothing
# when SCHED=local)
SL := $(OUT)/slurm
SUBMIT = pipelines/slurm/submit.sh -d $(SL) -r $(RETRIES) $(if $(PARTITION),-p $(PARTITION)) \
	$(if $(SUBMIT_FLAGS),-x "$(SUBMIT_FLAGS)")
res = -c $($(1)_CPUS) -m $($(1)_MEM) -T $($(1)_TIME)
job = $(if $(filter slurm,$(SCHED)),rm -f $(2) && $(SUBMIT) -n $(1) $(call res,MERGE) -1 $(2) -- )

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
ifeq ($(SCHED),local)
$(OUT)/trace.ms: $(OUT)/calib.ms
	$(BIN)/mode-route-trace $(TRACE_ARGS)$(THREADS_FLAG) -o $@ $<
else
# the shards (pipelines/slurm/plan.sh), one job array, then the merge as a job
$(SL)/trace.tasks: $(OUT)/calib.ms FORCE
	@mkdir -p $(SL) $(OUT)/shards/trace
	MODE_CAT=$(BIN)/mode-cat pipelines/slurm/plan.sh trace $< $(MODEL) $(SHARDS) $(TRACE_BY) $(BATCH_TOKENS) >$@.plan
	@while IFS='	' read -r label flags; do \
	  o=$(OUT)/shards/trace/$$label.ms; \
	  printf '%s\t%s\t%s\n' "trace.$$label" "$$o" \
	    "$(BIN)/mode-route-trace $(TRACE_ARGS) --threads $(or $(THREADS),$(TRACE_CPUS)) $$flags -o $$o $<"; \
	done <$@.plan >$@.new
	$(call refresh_tasks,$@,$(OUT)/shards/trace)
$(OUT)/trace.ms: $(SL)/trace.tasks
	$(SUBMIT) -n trace $(call res,TRACE) $<
	$(call job,trace-merge,$@)$(BIN)/mode-cat -s -o $@ $$(cut -f2 $<)
endif
$(OUT)/freq.ms $(OUT)/keep.ms $(OUT)/freq.png &: $(OUT)/trace.ms
	$(call job,denoise,$(OUT)/freq.ms)$(BIN)/mode-vis-denoise --png $(OUT)/freq.png --keep-out $(OUT)/keep.ms -o $(OUT)/freq.ms $<
$(OUT)/freq-%.ms: $(OUT)/trace.ms
	$(call job,denoise-$*,$@)$(BIN)/mode-vis-denoise --method $* -o $@ $<

# ---- sensitivity (on the same calibration samples: mode-ilp checks that freq and sens agree) ------
ifeq ($(SCHED),local)
$(OUT)/sens-%.ms: $(OUT)/calib.ms $(OUT)/keep.ms
	$(BIN)/mode-sensitivity $(SENS_ARGS)$(THREADS_FLAG) -o $@ $<
else
# by layer range, with the keep masks of the merged trace (mode-sensitivity has no finer shard)
$(SL)/sens-%.tasks: $(OUT)/calib.ms $(OUT)/keep.ms FORCE
	@mkdir -p $(SL) $(OUT)/shards/sens-$*
	pipelines/slurm/plan.sh sens $(MODEL) $(SHARDS) >$@.plan
	@while IFS='	' read -r label flags; do \
	  o=$(OUT)/shards/sens-$*/$$label.ms; \
	  printf '%s\t%s\t%s\n' "sens-$*.$$label" "$$o" \
	    "$(BIN)/mode-sensitivity $(SENS_ARGS) --threads $(or $(THREADS),$(SENS_CPUS)) $$flags -o $$o $<"; \
	done <$@.plan >$@.new
	$(call refresh_tasks,$@,$(OUT)/shards/sens-$*)
$(OUT)/sens-%.ms: $(SL)/sens-%.tasks
	$(SUBMIT) -n sens-$* $(call res,SENS) $<
	$(call job,sens-$*-merge,$@)$(BIN)/mode-cat -s -o $@ $$(cut -f2 $<)
endif

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

# ---- Slurm helpers -----------------------------------------------------------------------------------
# refresh_tasks FILE,SHARD_DIR: FILE.new replaces FILE when it differs (other shards, threads, model...)
# or when an input is newer; then the shards made for the old FILE are removed. Otherwise FILE keeps
# its time, so that a second run submits only the shards that are missing.
define refresh_tasks
	@if [ -z "$(filter-out FORCE,$?)" ] && cmp -s $(1).new $(1); then rm -f $(1).new; \
	else rm -f $(2)/*.ms; mv $(1).new $(1); fi
endef
.PHONY: FORCE
FORCE:

.SECONDARY:
