# frugal - build, run, test.
#
#   make          library + CLI (installs libpcre2-dev with apt-get if missing)
#   make run      + fetch the default model, one chat reply
#   make test     + unit tests, conformance tests against llama.cpp
#   make bench-serve  serving benchmark: frugal serve vs llama.cpp's server (bench/serve)
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
LDLIBS    = -lpcre2-8 -lcjson -lm -lpthread
SERVER_LIBS = -lmicrohttpd
BUILD    ?= build

AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c
AMX_FLAGS    = $(AVX512_FLAGS) -mamx-tile -mamx-int8 -mamx-bf16 -mavx512bf16

LIB_SRC   = $(wildcard src/*.c)
LIB_OBJ   = $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
TEST_SRC  = $(wildcard tests/unit/*.c)
TEST_OBJ  = $(TEST_SRC:tests/unit/%.c=$(BUILD)/obj/test_%.o)
DEPS_STAMP = $(BUILD)/.deps-ok

PROMPT ?= Explain in two sentences why the sky is blue.

.PHONY: all run test unit conformance clean deps model models venv bench-serve
all: $(BUILD)/frugal

$(DEPS_STAMP): scripts/install-deps
	@scripts/install-deps
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h include/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(if $(findstring amx,$*),$(AMX_FLAGS),$(if $(findstring avx512,$*),$(AVX512_FLAGS),$(if $(findstring avx2,$*),$(AVX2_FLAGS)))) -c $< -o $@

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

models: model
	@scripts/fetch-model gemma3-270m

venv:
	@scripts/setup-venv

run: all model
	$(BUILD)/frugal run -m smollm2-135m --chat -n 128 -p "$(PROMPT)"

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

# Unit tests; the fuzz corpora replayed and the unit, malformed-file and
# generation tests again under ASan + UBSan + LeakSanitizer; then the
# Python tests (CLI, conformance with llama.cpp, server).
test: all $(BUILD)/unit_tests models venv
	$(BUILD)/unit_tests
	$(MAKE) --no-print-directory fuzz-replay test-sanitize
	.venv/bin/python -m pytest -q tests/

# Serving benchmark (bench/serve): frugal serve and llama-cpp-python's
# server at concurrency 1..16; installs the server's extras
# (bench/requirements.txt) into .venv. BENCH_SERVE_ARGS passes options,
# e.g. BENCH_SERVE_ARGS='--engines frugal --levels 1,8'.
BENCH_SERVE_ARGS ?=
bench-serve: all model venv
	@.venv/bin/pip install -q -r bench/requirements.txt
	.venv/bin/python bench/serve $(BENCH_SERVE_ARGS)

clean:
	rm -rf $(BUILD)

# ==== Fuzzing and sanitizers (fuzz/, tests/malformed/, docs/fuzzing.md) =====
#
#   make fuzz-build     the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/
#   make fuzz           runs each target for FUZZ_SECONDS (default 600), one after
#                       another; new inputs collect in fuzz/corpus-out/TARGET/
#                       (ignored by git), crashes land in build-fuzz/crash-*
#   make fuzz-replay    seed corpora (fuzz/make-corpus) and fuzz/regress/TARGET/
#                       through the targets built with gcc + ASan + UBSan: a
#                       regression test, well under a minute
#   make test-sanitize  unit tests (fault injection included), the malformed-file
#                       tests and a real generation, all under ASan + UBSan +
#                       LeakSanitizer (build-asan/)
#
# The sanitized library, unit tests and CLI are built by a sub-make with the
# rules above (BUILD=build-asan, CFLAGS=$(SAN_CFLAGS)), so they follow the
# sources the same way build/ does.

ASAN_BUILD   ?= build-asan
FUZZ_BUILD   ?= build-fuzz
SAN_CC       ?= gcc
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_ARGS    ?=
FUZZ_REPLAY_EXTRA ?=
FUZZ_TARGETS  = fuzz_gguf fuzz_tokenizer fuzz_chat fuzz_api fuzz_json
FUZZ_SEEDS    = $(ASAN_BUILD)/fuzz-seeds
# UBSan checks stay recoverable so that fuzz/ubsan.supp can silence known
# findings; halt_on_error makes every other report fatal.
SAN_CFLAGS    = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
FUZZ_CFLAGS   = -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
SAN_ENV       = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:suppressions=$(CURDIR)/fuzz/ubsan.supp
FUZZ_INC      = -std=c11 $(WARN) -D_GNU_SOURCE -Iinclude -Isrc -Itests/unit -Ifuzz -pthread
FUZZ_DEPS     = fuzz/fuzz.h tests/unit/gguf_builder.c tests/unit/gguf_builder.h $(wildcard src/*.h include/*.h)

.PHONY: fuzz fuzz-build fuzz-replay fuzz-seeds fuzz-clean test-sanitize sanitize-force \
        sanitize-all sanitize-lib

sanitize-force:

# One sub-make builds all three, so a parallel make never runs two on the same
# objects. (Inside that sub-make BUILD is the sanitizer directory and the
# rules above apply instead.)
ifneq ($(BUILD),$(ASAN_BUILD))
$(ASAN_BUILD)/libfrugal.a: sanitize-force
	@$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) CC=$(SAN_CC) CFLAGS='$(SAN_CFLAGS)' sanitize-all
endif
ifneq ($(BUILD),$(FUZZ_BUILD))
$(FUZZ_BUILD)/libfrugal.a: sanitize-force
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) CFLAGS='$(FUZZ_CFLAGS)' sanitize-lib
endif

# the sub-makes' goals (quiet when there is nothing to do)
sanitize-all: $(BUILD)/libfrugal.a $(BUILD)/unit_tests $(BUILD)/frugal
	@:
sanitize-lib: $(BUILD)/libfrugal.a
	@:

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_DEPS) $(FUZZ_BUILD)/libfrugal.a
	$(FUZZ_CC) $(FUZZ_INC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< tests/unit/gguf_builder.c \
	    $(FUZZ_BUILD)/libfrugal.a $(LDLIBS) -o $@

$(ASAN_BUILD)/replay_fuzz_%: fuzz/fuzz_%.c fuzz/replay.c $(FUZZ_DEPS) $(ASAN_BUILD)/libfrugal.a
	$(SAN_CC) $(FUZZ_INC) $(SAN_CFLAGS) $< fuzz/replay.c tests/unit/gguf_builder.c \
	    $(ASAN_BUILD)/libfrugal.a $(LDLIBS) -o $@

# fuzz_api: the server's request parsers (server/api.c, server/tools.c), which need cJSON
API_SRC = server/api.c server/tools.c
$(FUZZ_BUILD)/fuzz_api: fuzz/fuzz_api.c $(API_SRC) server/api.h server/tools.h $(FUZZ_DEPS) $(FUZZ_BUILD)/libfrugal.a
	$(FUZZ_CC) $(FUZZ_INC) -Iserver $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(API_SRC) \
	    $(FUZZ_BUILD)/libfrugal.a $(LDLIBS) -lcjson -o $@

$(ASAN_BUILD)/replay_fuzz_api: fuzz/fuzz_api.c $(API_SRC) server/api.h server/tools.h fuzz/replay.c $(FUZZ_DEPS) \
                               $(ASAN_BUILD)/libfrugal.a
	$(SAN_CC) $(FUZZ_INC) -Iserver $(SAN_CFLAGS) $< $(API_SRC) fuzz/replay.c \
	    $(ASAN_BUILD)/libfrugal.a $(LDLIBS) -lcjson -o $@

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)

fuzz-seeds:
	@python3 fuzz/make-corpus $(FUZZ_SEEDS)

fuzz-replay: $(FUZZ_TARGETS:%=$(ASAN_BUILD)/replay_%) fuzz-seeds
	@for t in $(FUZZ_TARGETS); do \
	    $(SAN_ENV) $(ASAN_BUILD)/replay_$$t $(FUZZ_SEEDS)/$$t fuzz/regress/$$t \
	        $(FUZZ_REPLAY_EXTRA:%=%/$$t) || exit 1; \
	done

# FRUGAL_FUZZ_MODEL=path.gguf in the environment adds that model's vocabulary
# to fuzz_tokenizer's; FUZZ_ARGS passes more libFuzzer options.
fuzz: fuzz-build fuzz-seeds
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz/corpus-out/$$t; \
	    echo "== $$t: $(FUZZ_SECONDS) s"; \
	    $(SAN_ENV) $(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -timeout=10 \
	        -rss_limit_mb=2048 -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- $(FUZZ_ARGS) \
	        fuzz/corpus-out/$$t $(FUZZ_SEEDS)/$$t fuzz/regress/$$t || exit 1; \
	done

test-sanitize: $(ASAN_BUILD)/libfrugal.a model venv
	$(SAN_ENV) $(ASAN_BUILD)/unit_tests
	FRUGAL_BIN=$(ASAN_BUILD)/frugal $(SAN_ENV) .venv/bin/python -m pytest -q tests/malformed
	@echo "load, generate, free under LeakSanitizer (any leak fails):"
	$(SAN_ENV) $(ASAN_BUILD)/frugal run -m smollm2-135m --temp 0 -n 16 -p hi

fuzz-clean:
	rm -rf $(ASAN_BUILD) $(FUZZ_BUILD)
