# mode — build, test and dependencies. One GNU Makefile.
#
#   make                  lib/libmode-core.a and bin/mode-*, with CUDA lib/libmode-cuda.so (installs missing
#                         Debian packages first)
#   make check            builds, then runs every test through prove (TAP)
#   make compat           GPTQModel loads mode-pack's checkpoints as mode reads them (tests/compat/run.sh;
#                         needs PyPI the first time, else prints a SKIP line)
#   make slurm-check      the experiment graph sharded over a throwaway single-node Slurm cluster
#                         (tests/slurm/run.sh; installs slurm and munge when missing, as root)
#   make bench            builds the benchmark programs of tests/bench/ into build/bench/ (run them by hand)
#   make deps             installs the Debian packages the build needs, when pkg-config lacks them
#   make SANITIZER=address check   (or undefined)     make CUDA=0|1     make V=1 (full commands)
#   make install PREFIX=/usr/local                    make clean
#   make demo             the pipeline on the embedded emoji-vl model (pipelines/mode.mk)
#   make paper            the paper's tables on emoji-vl (pipelines/paper.mk; build/paper/paper.md)
#
# Objects go to build/; any change of compiler flags (SANITIZER, CUDA, CFLAGS...) rebuilds all,
# through the build/flags stamp.

.SUFFIXES:
.SECONDARY:
.DEFAULT_GOAL := all
SHELL := /bin/sh

CC ?= cc
CFLAGS ?= -std=c11 -O2 -g -Wall -Wextra -Wpedantic -Wshadow
# _GNU_SOURCE: POSIX and GNU calls (mkostemp, getline, getopt_long) beside strict C11
CPPFLAGS += -D_GNU_SOURCE -MMD -MP
ARFLAGS = rcs
PREFIX ?= /usr/local

# Debian packages and the pkg-config modules they provide (GLPK ships no .pc: checked by header)
PC_MODULES := msgpack jansson openblas libpng libjpeg libturbojpeg libpcre2-8 libutf8proc
DEB_PACKAGES := pkg-config perl g++ libmsgpack-dev libjansson-dev libopenblas-dev libpng-dev \
	libjpeg62-turbo-dev libturbojpeg0-dev libpcre2-dev libutf8proc-dev libglpk-dev

# Evaluated when a recipe runs, i.e. after `deps` has installed pkg-config and the packages.
PKG_CFLAGS = $(shell pkg-config --cflags $(PC_MODULES) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PC_MODULES) 2>/dev/null) -lglpk -lm -lpthread

SANITIZER ?=
ifneq ($(SANITIZER),)
  ifeq ($(filter $(SANITIZER),address undefined),)
    $(error SANITIZER must be address or undefined)
  endif
  # no-recover: an undefined-behaviour report fails the test instead of scrolling by
  SAN_FLAGS := -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

# CUDA=auto compiles kernels/*.cu when nvcc is found; CUDA=0 never; CUDA=1 requires it.
CUDA ?= auto
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_ARCH ?= 90
ifeq ($(CUDA),auto)
  CUDA_ON := $(if $(NVCC),1,0)
else ifeq ($(CUDA),1)
  CUDA_ON := 1
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found (set NVCC=/path/to/nvcc))
  endif
else
  CUDA_ON := 0
endif
ifeq ($(CUDA_ON),1)
  CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(NVCC)))
  # sm_90 = Hopper (H100/H200), the lent GPU machine; override CUDA_ARCH for other cards
  NVCCFLAGS ?= -std=c++17 -O2 -g -arch=sm_$(CUDA_ARCH) -Xcompiler -Wall
  # The kernels are one shared object, lib/libmode-cuda.so, that kernels/dispatch.c (in libmode-core)
  # opens with dlopen when a GPU is wanted: no program links a CUDA library, so a run on the CPU maps
  # none. -fPIC: the host code goes into that object.
  NVCC_PIC := -Xcompiler -fPIC
  CUDA_SO := lib/libmode-cuda.so
  # the object's libraries: cuBLAS and cuSOLVER (GEMMs, the Cholesky factorisations of kernels/gptq.cu)
  CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcusolver -lcublas -lcudart -lstdc++ -lm
  # the libmode-core functions the object calls back: linked into every program (-u) and exported
  # (--dynamic-list), so that the object uses the program's one copy (kernels/callbacks.syms)
  CALLBACKS := $(shell sed -n 's/^ *\(mode_[a-z0-9_]*\);$$/\1/p' kernels/callbacks.syms)
  CUDA_LDFLAGS := -Wl,--dynamic-list=kernels/callbacks.syms $(CALLBACKS:%=-Wl,--undefined=%)
endif
# dlopen (kernels/dispatch.c; test_cuda_stub): in libc since glibc 2.34, in libdl before
DL_LIBS := -ldl

ALL_CFLAGS = $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) $(PKG_CFLAGS)
ALL_LDFLAGS = $(LDFLAGS) $(SAN_FLAGS) -Wl,--as-needed $(CUDA_LDFLAGS)
ALL_LIBS = $(PKG_LIBS) $(DL_LIBS) $(LDLIBS)

ifeq ($(V),1)
  Q :=
  say = @:
else
  Q := @
  say = @printf '  %-6s %s\n'
endif

B := build
LIB_SRC := $(sort $(wildcard lib/*.c))
# the CUDA entry points in libmode-core: forwarders to lib/libmode-cuda.so, or stubs ("unavailable")
KERNEL_C := $(if $(filter 1,$(CUDA_ON)),kernels/dispatch.c,kernels/stub.c)
KERNEL_CU := $(if $(filter 1,$(CUDA_ON)),$(sort $(wildcard kernels/*.cu)),)
CUDA_OBJ := $(KERNEL_CU:%.cu=$(B)/%.cu.o)
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o) $(KERNEL_C:%.c=$(B)/%.o)
LIB := lib/libmode-core.a

CLI_OBJ := $(patsubst %.c,$(B)/%.o,$(sort $(wildcard filters/common/*.c)))
FILTERS := $(patsubst filters/%/main.c,%,$(sort $(wildcard filters/mode-*/main.c)))
BINS := $(FILTERS:%=bin/%)

TEST_C := $(sort $(wildcard tests/lib/*.c tests/kernels/*.c))
TEST_BIN := $(TEST_C:%.c=$(B)/%)
TEST_SH := $(sort $(wildcard tests/filters/*.sh tests/pipelines/*.sh))
FUZZ_C := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CHECK_BIN := $(FUZZ_C:tests/fuzz/%.c=$(B)/fuzzcheck/%)
BENCH_C := $(sort $(wildcard tests/bench/*.c))
BENCH_BIN := $(BENCH_C:tests/bench/%.c=$(B)/bench/%)

.PHONY: all check compat slurm-check bench fuzz deps fuzz-deps clean install demo FORCE
all: $(LIB) $(BINS) $(CUDA_SO)

# ---- dependencies ------------------------------------------------------------------------------
deps:
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"; \
	command -v prove >/dev/null 2>&1 || missing="$$missing perl"; \
	command -v $(CXX) >/dev/null 2>&1 || missing="$$missing g++"; \
	if command -v pkg-config >/dev/null 2>&1; then \
	  for m in $(PC_MODULES); do pkg-config --exists $$m || missing="$$missing $$m"; done; \
	else missing="$$missing $(PC_MODULES)"; fi; \
	printf '#include <glpk.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 || missing="$$missing glpk"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	line="apt-get install -y --no-install-recommends $(DEB_PACKAGES)"; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make deps: missing:$$missing" >&2; \
	  echo "make deps: not root, so not installing. Run as root:" >&2; \
	  echo "  apt-get update && $$line" >&2; \
	  exit 1; \
	fi; \
	echo "make deps: installing Debian packages for:$$missing" >&2; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q && $$line

# ---- build ------------------------------------------------------------------------------------
# The stamp changes only when the flags do; every object depends on it.
$(B)/flags: FORCE | deps
	@mkdir -p $(B)
	@echo '$(CC) $(ALL_CFLAGS) | $(ALL_LDFLAGS) | $(ALL_LIBS) | $(NVCC) $(NVCCFLAGS) $(NVCC_PIC) | $(CUDA_LIBS) | cuda=$(CUDA_ON)' > $(B)/flags.new; \
	if cmp -s $(B)/flags.new $(B)/flags; then rm -f $(B)/flags.new; else mv $(B)/flags.new $(B)/flags; fi

$(B)/%.o: %.c $(B)/flags | deps
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/%.cu.o: %.cu $(B)/flags | deps
	@mkdir -p $(@D)
	$(say) NVCC $<
	$(Q)$(NVCC) $(NVCCFLAGS) $(NVCC_PIC) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	$(say) AR $@
	$(Q)rm -f $@ && $(AR) $(ARFLAGS) $@ $^

# The kernels as one object (-Bsymbolic: calls between its entry points stay inside it), checked
# before it replaces the old one: it exports exactly the entry points that dispatch.o forwards
# (kernels/mode_cuda_entries.h), and every mode_ function it needs from the programs is in
# kernels/callbacks.syms (else the first --device cuda run would fail to open it).
ifeq ($(CUDA_ON),1)
$(CUDA_SO): $(CUDA_OBJ) $(B)/kernels/dispatch.o kernels/callbacks.syms
	$(say) LD $@
	$(Q)$(CC) -shared -Wl,-soname,$(notdir $@) -Wl,-Bsymbolic -Wl,--as-needed $(LDFLAGS) -o $@.tmp $(CUDA_OBJ) $(CUDA_LIBS)
	$(Q)nm -D --defined-only $@.tmp | awk '$$2 == "T" && $$3 ~ /^mode_/ { print $$3 }' | sort >$(B)/cuda-exports.txt; \
	nm --defined-only $(B)/kernels/dispatch.o | awk '$$2 == "T" { print $$3 }' | sort >$(B)/cuda-forwards.txt; \
	if ! cmp -s $(B)/cuda-exports.txt $(B)/cuda-forwards.txt; then \
	  echo "$@: its entry points (<) and those kernels/dispatch.c forwards (>) differ:" >&2; \
	  diff $(B)/cuda-exports.txt $(B)/cuda-forwards.txt >&2; rm -f $@.tmp; exit 1; \
	fi; \
	missing=$$(nm -D --undefined-only $@.tmp | awk '$$2 ~ /^mode_/ { print $$2 }' | \
	  while read -r s; do grep -q "^ *$$s;" kernels/callbacks.syms || echo "$$s"; done); \
	if [ -n "$$missing" ]; then \
	  echo "$@: needs from the programs what kernels/callbacks.syms does not export:" $$missing >&2; rm -f $@.tmp; exit 1; \
	fi
	$(Q)mv $@.tmp $@
endif

.SECONDEXPANSION:
bin/%: $$(addprefix $(B)/,$$(addsuffix .o,$$(basename $$(wildcard filters/$$*/*.c)))) $(CLI_OBJ) $(LIB)
	@mkdir -p bin
	$(say) LD $@
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(ALL_LIBS)

$(B)/tests/%: tests/%.c $(B)/tests/tap.o $(LIB) $(B)/flags
	@mkdir -p $(@D)
	$(say) TEST $@
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(B)/tests/tap.o $(LIB) $(ALL_LIBS)

# large fixtures kept compressed in git, expanded into build/fixtures/ for the tests
export MODE_BUILD_FIXTURES := $(CURDIR)/$(B)/fixtures
BIG_FIXTURES := $(patsubst tests/fixtures/big/%.gz,$(B)/fixtures/%,$(wildcard tests/fixtures/big/*.gz))
$(B)/fixtures/%: tests/fixtures/big/%.gz
	@mkdir -p $(@D)
	$(Q)gzip -dc $< > $@.tmp && mv $@.tmp $@

# benchmarks: programs that print a table (never run by make check); `make bench` builds them
$(B)/bench/%: tests/bench/%.c $(B)/tests/tap.o $(LIB) $(B)/flags
	@mkdir -p $(@D)
	$(say) BENCH $@
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(B)/tests/tap.o $(LIB) $(ALL_LIBS)

bench: all $(BENCH_BIN) $(BIG_FIXTURES)
	@for b in $(BENCH_BIN); do echo "built $$b"; done

# fuzz targets replayed without libFuzzer (corpus + regression inputs) by make check, always with
# ASan and UBSan (float-cast-overflow too, which GCC's -fsanitize=undefined leaves out): the
# regression inputs were mostly found by a sanitizer (a leak, a use after free, a float converted
# out of range) and would pass unnoticed without one. The library is compiled again for them,
# into build/fuzzcheck/obj/, once.
REPLAY_SAN := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer
REPLAY_OBJ := $(patsubst %.c,$(B)/fuzzcheck/obj/%.o,$(LIB_SRC) kernels/stub.c tests/fuzz/driver.c tests/fuzz/common.c)
$(B)/fuzzcheck/obj/%.o: %.c $(B)/flags | deps
	@mkdir -p $(@D)
	$(say) CC-SAN $<
	$(Q)$(CC) $(CPPFLAGS) -std=c11 -O1 -g $(REPLAY_SAN) $(PKG_CFLAGS) -c $< -o $@

$(B)/fuzzcheck/%: tests/fuzz/%.c $(REPLAY_OBJ) $(B)/flags
	@mkdir -p $(@D)
	$(say) FUZZ $@
	$(Q)$(CC) $(CPPFLAGS) -std=c11 -O1 -g $(REPLAY_SAN) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(REPLAY_OBJ) $(PKG_LIBS)

# the host double (kernels/host/): the code that composes the CUDA entry points — kernels/layer.cu
# compiled by g++ with its launches rewritten, lib/rtlayer.c and the runtime's --device cuda
# paths — linked against the entry points' C references on host memory, so that make check runs
# that glue without a GPU (kernels/host/host.c says what it does and does not check). A .cu with
# shared memory, barriers or warp collectives cannot be run this way and is refused.
HOST_CU := kernels/layer.cu
HOST_OBJ := $(B)/host/kernels/host/host.o $(HOST_CU:%.cu=$(B)/host/%.o)
HOST_LIB := $(B)/host/libmode-host.a
HOST_TEST_BIN := $(B)/host/tests/kernels/test_layer $(B)/host/tests/kernels/test_rtmoe $(B)/host/tests/lib/test_forward
HOST_BINS := $(patsubst %,$(B)/host/bin/mode-%,route-trace eval pack sensitivity bench)
HOST_CXXFLAGS = -std=c++17 -O2 -g -Wall -Wextra -Wno-unused-function -fno-exceptions -fno-rtti $(SAN_FLAGS) -D_GNU_SOURCE -MMD -MP

$(B)/host/kernels/%.cpp: kernels/%.cu
	@mkdir -p $(@D)
	$(Q)if grep -n '__syncthreads\|__shared__\|__shfl\|asm' $<; then echo "$<: not runnable by the host double (shared memory, barriers or warp collectives)" >&2; exit 1; fi
	$(Q)perl -pe 's/(\w+)<<<(.*?)>>>\(/mode_host_launch($$1, $$2)(/g' $< > $@.tmp && mv $@.tmp $@

$(B)/host/kernels/%.o: $(B)/host/kernels/%.cpp $(B)/flags | deps
	$(say) CXX $<
	$(Q)$(CXX) $(HOST_CXXFLAGS) -Ikernels/host -Ikernels -x c++ -c $< -o $@

$(B)/host/kernels/host/host.o: kernels/host/host.c $(B)/flags | deps
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(HOST_LIB): $(LIB_SRC:%.c=$(B)/%.o) $(HOST_OBJ)
	$(say) AR $@
	$(Q)rm -f $@ && $(AR) $(ARFLAGS) $@ $^

$(B)/host/tests/%: tests/%.c $(B)/tests/tap.o $(HOST_LIB) $(B)/flags
	@mkdir -p $(@D)
	$(say) TEST $@
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -Itests -o $@ $< $(B)/tests/tap.o $(HOST_LIB) $(PKG_LIBS) $(LDLIBS)

$(B)/host/bin/%: $$(addprefix $(B)/,$$(addsuffix .o,$$(basename $$(wildcard filters/$$*/*.c)))) $(CLI_OBJ) $(HOST_LIB)
	@mkdir -p $(@D)
	$(say) LD $@
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(HOST_LIB) $(PKG_LIBS) $(LDLIBS)

$(B)/tests/tap.o: tests/tap.c $(B)/flags | deps
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

# ---- tests ------------------------------------------------------------------------------------
# Tests find the build through these variables; prove runs C tests and shell tests alike.
export MODE_ROOT := $(CURDIR)
export MODE_BIN := $(CURDIR)/bin
export MODE_FIXTURES := $(CURDIR)/tests/fixtures
export MODE_HOST_BIN := $(CURDIR)/$(B)/host/bin
ifeq ($(CUDA_ON),1)
# the programs under bin/ find the kernels' object in ../lib; the C tests and benchmarks
# (build/tests/..., build/bench/) are told where it is
export MODE_CUDA_LIB := $(CURDIR)/$(CUDA_SO)
endif
PROVE_JOBS ?= 2

check: all $(TEST_BIN) $(FUZZ_CHECK_BIN) $(HOST_TEST_BIN) $(HOST_BINS) $(BIG_FIXTURES)
	@chmod +x $(TEST_SH) 2>/dev/null || true
	@# progress lines off: tests compare stderr with the exact messages (tests/filters/progress.sh
	@# turns them on where it checks them)
	MODE_PROGRESS=off prove -j$(PROVE_JOBS) --exec '' $(TEST_BIN) $(HOST_TEST_BIN) $(TEST_SH)

# ---- Slurm: pipelines/mode.mk SCHED=slurm on a real single-node cluster (tests/slurm/run.sh) ------
# Not part of check: it installs packages and starts daemons (stopped on exit). Where Slurm cannot be
# installed or started it prints one line "SKIP: make slurm-check: why" and succeeds.
slurm-check: all $(B)/tests/slurm/stream-cmp
	@chmod +x tests/slurm/*.sh pipelines/slurm/*.sh pipelines/slurm/*.sbatch 2>/dev/null || true
	@tests/slurm/run.sh

# ---- compatibility: GPTQModel reads mode-pack's checkpoints as mode does (tests/compat/run.sh) --
# A Python environment in build/compat-venv with the packages of tests/compat/requirements.txt (from
# PyPI, reused while that file is unchanged), emoji-vl packed at 2.5 bits (v1 and v2) and 4 bits,
# and GPTQModel's weights and perplexity compared with mode's. Run by CI after check (.ci/run).
# build/tests/compat/dequant (tests/compat/dequant.c, the pattern rule above) dumps mode's weights.
compat: all $(B)/tests/compat/dequant
	@sh tests/compat/run.sh

# ---- the demo: the whole pipeline on the embedded emoji-vl model (pipelines/mode.mk) ----------
DEMO_OUT ?= build/demo
demo: all
	@$(MAKE) --no-print-directory -f pipelines/mode.mk OUT=$(DEMO_OUT) table

# ---- fuzzing ----------------------------------------------------------------------------------
# `make fuzz` builds every tests/fuzz/fuzz_*.c with clang's libFuzzer, ASan and UBSan into
# build/fuzz/ (its own objects: the library is compiled with coverage instrumentation);
# tests/fuzz/run.sh SECONDS runs them. clang and its runtime are installed by fuzz-deps.
FUZZ_CC ?= clang
FUZZ_FLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SRC := $(LIB_SRC) kernels/stub.c tests/fuzz/common.c
fuzz-deps: deps
	@command -v $(FUZZ_CC) >/dev/null 2>&1 && printf 'int LLVMFuzzerTestOneInput(const char*d,long n){return 0;}' | \
	  $(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null && exit 0; \
	line="apt-get install -y --no-install-recommends clang libclang-rt-14-dev"; \
	if [ "$$(id -u)" != 0 ]; then echo "make fuzz-deps: needs clang with libFuzzer. Run as root: apt-get update && $$line" >&2; exit 1; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive $$line

fuzz: fuzz-deps
	@mkdir -p $(B)/fuzz
	@for f in $(FUZZ_C); do \
	  t=$$(basename $$f .c); echo "  FUZZ   $(B)/fuzz/$$t"; \
	  $(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) -o $(B)/fuzz/$$t $$f $(FUZZ_SRC) $(PKG_LIBS) || exit 1; \
	done

# ---- install, clean ------------------------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/share/man/man7 $(if $(CUDA_SO),$(DESTDIR)$(PREFIX)/lib/mode)
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin
	$(if $(CUDA_SO),install -m 755 $(CUDA_SO) $(DESTDIR)$(PREFIX)/lib/mode)
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 644 $(wildcard man/*.7) $(DESTDIR)$(PREFIX)/share/man/man7

clean:
	rm -rf $(B) $(LIB) lib/libmode-cuda.so bin/mode-*

# ---- the paper's experiment on the embedded emoji-vl model (pipelines/paper.mk) -----------------
# the main table and the ablation ladder with bootstrap intervals and the spread over calibration
# thirds, into build/paper/paper.md; two programs at a time (each on one thread)
PAPER_OUT ?= build/paper
PAPER_JOBS ?= 2
.PHONY: paper
paper: all
	@$(MAKE) --no-print-directory -j$(PAPER_JOBS) -f pipelines/paper.mk OUT=$(PAPER_OUT) paper

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# ---- scale: every stage on a random Qwen3-VL-30B-A3B at full width (issue 22) ----------------------
# tests/bench/scale.sh: generates the model (SCALE_LAYERS of its 48 decoder layers, default 4) and a
# calibration set at real image sizes (SCALE_SAMPLES, default 16) into build/scale/ once, runs every
# stage under /usr/bin/time at two sizes and writes build/scale/table.txt (tests/bench/README-scale.md).
# Not part of check: it writes ~8 GB and takes most of an hour on a 2-core machine.
SCALE_LAYERS ?= 4
SCALE_SAMPLES ?= 16
.PHONY: scale
scale: all $(B)/bench/gen_qwen3vl $(B)/bench/gen_calib $(B)/bench/bench_sgemm $(B)/fixtures/qwen3-tokenizer.json
	SCALE_LAYERS=$(SCALE_LAYERS) SCALE_SAMPLES=$(SCALE_SAMPLES) sh tests/bench/scale.sh
