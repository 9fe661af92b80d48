# mslab: `make` builds ./mslab, `make demo` runs the quickstart, `make test` runs every test.
# `make deps` installs the Debian packages it needs (apt-get as root, sudo otherwise).

CC      ?= cc
ARCH    ?= -march=native
CFLAGS  ?= -O3 $(ARCH)
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -fopenmp -MMD -MP
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
SQLITE_LIBS ?= -lsqlite3
LDLIBS  += $(LUA_LIBS) $(SQLITE_LIBS) -lm -fopenmp

BUILD   ?= build
CORE_SRC := $(wildcard core/*.c core/cpu/*.c)
LUA_SRC  := $(wildcard lua/*.c)
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC) $(LUA_SRC))
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC))
BIN     ?= mslab

# CUDA backend (cuda/, docs/cuda.md): built whenever nvcc is found; CUDA=0 builds CPU only.
NVCC    ?= $(shell command -v nvcc 2>/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; })
CUDA    ?= $(if $(NVCC),1,0)
ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_GENCODE ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 -lineinfo $(CUDA_GENCODE)
CUDA_LIBS ?= -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lstdc++
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard cuda/*.cu))
CFLAGS  += -DMSLAB_CUDA
LIB_OBJ += $(CUDA_OBJ)
LDLIBS  += $(CUDA_LIBS)
endif
# Objects remember the flags they were built with: switching CUDA=0/1 or ARCH rebuilds them.
FLAGS_STAMP := $(BUILD)/.flags
$(shell mkdir -p $(BUILD); f='$(CC) $(CFLAGS) $(NVCC) $(NVCCFLAGS)'; [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = "$$f" ] || echo "$$f" > $(FLAGS_STAMP))

DEB_PKGS := liblua5.4-dev libsqlite3-dev gnuplot-nox bible-kjv pkg-config
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps demo test test-asan clean bench test-gpu bench-gpu gpu-bundle
all: $(BIN)

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# wgmma (Hopper's warpgroup MMA) exists only in the arch-specific target sm_90a: the files that use
# it are built for it alone (they run on H100 / H200 only; elsewhere their entry points return -1).
CUDA_GENCODE_90A ?= -gencode arch=compute_90a,code=sm_90a
WGMMA_OBJ := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard cuda/*wgmma*.cu))
$(WGMMA_OBJ): NVCCFLAGS := $(filter-out -gencode arch=%,$(NVCCFLAGS)) $(CUDA_GENCODE_90A)
# select_bf16.cu holds one wgmma kernel (tp_wgt, launched on sm_90 only) beside paths for any GPU:
# sm_90a code plus compute_90 PTX (where tp_wgt only counts a failed row: the call falls back),
# and the user's other targets (CUDA_GENCODE for, e.g., sm_80 keeps its selection kernels)
SELECT_ARCHS := $(filter-out arch=compute_90%,$(filter arch=%,$(NVCCFLAGS)))
$(BUILD)/cuda/select_bf16.o: NVCCFLAGS := $(filter-out -gencode arch=%,$(NVCCFLAGS)) $(CUDA_GENCODE_90A) \
	-gencode arch=compute_90,code=compute_90 $(foreach a,$(SELECT_ARCHS),-gencode $(a))

$(BIN): $(LIB_OBJ) $(BUILD)/cli/main.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

# GPU parity tests (tests/gpu/, run on a GPU machine): the engine without Lua or SQLite, so the
# GPU side can also build it with nvcc and a C compiler alone.
GPU_TEST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/gpu/*.c)) $(CUDA_OBJ) \
	$(patsubst %.c,$(BUILD)/%.o,$(filter-out core/store.c core/run.c core/run_eval.c core/plot.c \
	  core/bench_record.c,$(CORE_SRC)))
$(BUILD)/mslab-gpu-tests: $(GPU_TEST_OBJ)
	@[ "$(CUDA)" = 1 ] || { echo "error: the GPU tests need nvcc (CUDA=1)"; exit 1; }
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(CUDA_LIBS) -lm -fopenmp

test-gpu: $(BUILD)/mslab-gpu-tests
	$(BUILD)/mslab-gpu-tests

$(BUILD)/mslab-gpu-bench: $(BUILD)/bench/gpu_bench.o $(BUILD)/bench/attn_bench.o $(filter-out $(BUILD)/tests/gpu/%,$(GPU_TEST_OBJ))
	@[ "$(CUDA)" = 1 ] || { echo "error: the GPU benchmark needs nvcc (CUDA=1)"; exit 1; }
	$(CC) $(CFLAGS) -o $@ $(filter %.o,$^) $(CUDA_LIBS) -lm -fopenmp
bench-gpu: $(BUILD)/mslab-gpu-bench
	$(BUILD)/mslab-gpu-bench

# The attention benchmark on a GPU machine (docs/bench.md): ours, the PyTorch peers, the table, a run
# in results.db and the figure; logs and TSVs in OUT (default bench-out).
OUT ?= bench-out
bench:
	BUNDLE=$(BUNDLE) BUILD=$(BUILD) sh bench/run.sh $(OUT)

# A bundle to copy to the GPU machine (no Debian -dev packages there): ./mslab with Debian's static
# Lua and SQLite, cuBLAS and cudart dynamic, for any x86-64-v3 CPU; plus the GPU test binary.
DEB_LIB ?= /usr/lib/x86_64-linux-gnu
BUNDLE  ?= gpu-bundle
gpu-bundle:
	@[ "$(CUDA)" = 1 ] || { echo "error: gpu-bundle needs nvcc (CUDA=1)"; exit 1; }
	@for f in $(DEB_LIB)/liblua5.4.a $(DEB_LIB)/libsqlite3.a; do [ -f $$f ] || \
	  { echo "error: $$f missing (apt-get install liblua5.4-dev libsqlite3-dev)"; exit 1; }; done
	$(MAKE) BUILD=$(BUILD)/bundle BIN=$(BUNDLE)/mslab ARCH=-march=x86-64-v3 \
	  LUA_LIBS="$(DEB_LIB)/liblua5.4.a -ldl" SQLITE_LIBS="$(DEB_LIB)/libsqlite3.a -lpthread -ldl" \
	  $(BUNDLE)/mslab $(BUILD)/bundle/mslab-gpu-tests $(BUILD)/bundle/mslab-gpu-bench
	cp $(BUILD)/bundle/mslab-gpu-tests $(BUILD)/bundle/mslab-gpu-bench $(BUNDLE)/
	@echo "$(BUNDLE)/: mslab, mslab-gpu-tests, mslab-gpu-bench (carry it to the GPU machine; docs/cuda.md)"

# Every TEST(name) in tests/*.c is registered; regenerated when a test file changes.
tests/registry.h: $(TEST_SRC)
	@grep -ho '^TEST([a-z0-9_]*)' $(TEST_SRC) | sed 's/TEST(\(.*\))/X(\1)/' > $@.tmp
	@mv $@.tmp $@
$(BUILD)/tests/main.o: tests/registry.h

$(BUILD)/mslab-tests: $(LIB_OBJ) $(TEST_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Install what is missing; quiet when everything is there already.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then \
	    echo "error: need root or sudo to install:$$missing (apt-get install$$missing)"; exit 1; fi; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null \
	    || { echo "error: apt-get install$$missing failed"; exit 1; }; \
	fi

# The demo corpus: the King James Bible from Debian's bible-kjv (one long public-domain document).
data/kjv.txt:
	@mkdir -p data
	bible -l0 gen1:1-rev22:21 > $@.tmp && mv $@.tmp $@

demo: deps
	$(MAKE) mslab data/kjv.txt
	./mslab run experiments/quickstart.lua
	./mslab plot loss
	./mslab plot ppl-vs-length
	@echo "results: results.db (./mslab runs), plots/loss.png, plots/ppl_vs_length.png"

# With nvcc present the GPU test and benchmark binaries are built too (CI compiles all CUDA code,
# though it cannot run it).
GPU_BINS := $(if $(filter 1,$(CUDA)),$(BUILD)/mslab-gpu-tests $(BUILD)/mslab-gpu-bench)
test: deps
	$(MAKE) mslab $(BUILD)/mslab-tests $(GPU_BINS)
	$(BUILD)/mslab-tests

# The whole CPU suite under AddressSanitizer + UBSan (about 2 minutes on 2 cores; not part of CI).
ASAN_ARCH := -march=native -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1
test-asan: deps
	$(MAKE) BUILD=build/asan CUDA=0 ARCH="$(ASAN_ARCH)" BIN=build/asan/mslab build/asan/mslab-tests
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ./build/asan/mslab-tests

clean:
	rm -rf build mslab tests/registry.h $(BUNDLE)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
