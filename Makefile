# mslab: `make` builds ./mslab, `make demo` runs the quickstart, `make test` runs every test.
# `make deps` installs the Debian packages it needs (apt-get as root, sudo otherwise).

CC      ?= cc
ARCH    ?= -march=native
CFLAGS  ?= -O3 $(ARCH)
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -fopenmp -MMD -MP
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
LDLIBS  += $(LUA_LIBS) -lsqlite3 -lm -fopenmp

BUILD   ?= build
CORE_SRC := $(wildcard core/*.c core/cpu/*.c)
LUA_SRC  := $(wildcard lua/*.c)
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC) $(LUA_SRC))
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC))

DEB_PKGS := liblua5.4-dev libsqlite3-dev gnuplot-nox bible-kjv pkg-config
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps demo test clean bench
all: mslab

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -c $< -o $@

mslab: $(LIB_OBJ) $(BUILD)/cli/main.o
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Every TEST(name) in tests/*.c is registered; regenerated when a test file changes.
tests/registry.h: $(TEST_SRC)
	@grep -ho '^TEST([a-z0-9_]*)' $(TEST_SRC) | sed 's/TEST(\(.*\))/X(\1)/' > $@.tmp
	@mv $@.tmp $@
$(BUILD)/tests/main.o: tests/registry.h

$(BUILD)/mslab-tests: $(LIB_OBJ) $(TEST_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Install what is missing; quiet when everything is there already.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
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

test: deps
	$(MAKE) mslab $(BUILD)/mslab-tests
	./$(BUILD)/mslab-tests

clean:
	rm -rf build mslab tests/registry.h

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
