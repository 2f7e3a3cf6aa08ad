# frugal - build, run, test.
#
#   make          library + CLI (installs libpcre2-dev with apt-get if missing)
#   make run      + fetch the default model, one chat reply
#   make test     + unit tests, conformance tests against llama.cpp
#   make clean
#
# The generic code is built for the baseline x86-64 ISA; the SIMD kernels
# live in their own files built with their ISA flags and are chosen at run
# time from the CPU's features (src/kernels.c).

CC       ?= cc
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN      = -Wall -Wextra -Wno-unused-parameter
ALLFLAGS  = -std=c11 $(WARN) -D_GNU_SOURCE -Iinclude -Isrc -pthread $(CFLAGS)
LDLIBS    = -lpcre2-8 -lm -lpthread
SERVER_LIBS = -lmicrohttpd -lcjson
BUILD    ?= build

AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c

LIB_SRC   = $(wildcard src/*.c)
LIB_OBJ   = $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
TEST_SRC  = $(wildcard tests/unit/*.c)
TEST_OBJ  = $(TEST_SRC:tests/unit/%.c=$(BUILD)/obj/test_%.o)
DEPS_STAMP = $(BUILD)/.deps-ok

PROMPT ?= Explain in two sentences why the sky is blue.

.PHONY: all run test unit conformance clean deps model venv
all: $(BUILD)/frugal

$(DEPS_STAMP): scripts/install-deps
	@scripts/install-deps
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h include/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(if $(findstring avx512,$*),$(AVX512_FLAGS),$(if $(findstring avx2,$*),$(AVX2_FLAGS))) -c $< -o $@

$(BUILD)/obj/test_%.o: tests/unit/%.c tests/unit/unit.h $(wildcard src/*.h include/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -Itests/unit -c $< -o $@

$(BUILD)/libfrugal.a: $(LIB_OBJ)
	ar rcs $@ $^

# The tool: subcommands in tools/, the HTTP server (frugal serve) in server/.
$(BUILD)/frugal: $(wildcard tools/*.c tools/*.h server/*.c server/*.h) $(BUILD)/libfrugal.a
	$(CC) $(ALLFLAGS) -Itools -Iserver $(wildcard tools/*.c server/*.c) $(BUILD)/libfrugal.a $(LDLIBS) $(SERVER_LIBS) -o $@

$(BUILD)/unit_tests: $(TEST_OBJ) $(BUILD)/libfrugal.a
	$(CC) $(ALLFLAGS) $(TEST_OBJ) $(BUILD)/libfrugal.a $(LDLIBS) -o $@

model:
	@scripts/fetch-model smollm2-135m

venv:
	@scripts/setup-venv

run: all model
	$(BUILD)/frugal run -m smollm2-135m --chat -n 128 -p "$(PROMPT)"

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

test: all $(BUILD)/unit_tests model venv
	$(BUILD)/unit_tests
	.venv/bin/python -m pytest -q tests/

clean:
	rm -rf $(BUILD)
