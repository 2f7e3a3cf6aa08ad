/* Whole-model checks on the real default model (skipped, with a note,
 * when it has not been downloaded): batched decoding across contexts is
 * bit-identical to decoding each alone, chunked prefill equals one-shot
 * prefill, 1 and 2 threads agree bitwise, rewind re-evaluates exactly. */
#include <stdlib.h>
#include <unistd.h>
#include "common.h"
#include "model.h"
#include "ops.h"
#include "quant.h"
#include "unit.h"

static frugal_model *load_default(void) {
    static char path[1024];
    const char *dir = getenv("FRUGAL_MODELS"), *home = getenv("HOME");
    if (dir && *dir) snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
    else snprintf(path, sizeof path, "%s/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : ".");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "  (model %s not downloaded: skipped)\n", path);
        return NULL;
    }
    frugal_model *m = NULL;
    return frugal_model_load(path, &m) == FRUGAL_OK ? m : NULL;
}

/* Frees the model once its contexts and caches are gone, checking that
 * they gave every KV page back to its pool. */
#define free_model(m)                                                        \
    do {                                                                     \
        CHECK(fr_kv_pool_in_use((m)->kv_pool) == 0);                         \
        frugal_model_free(m);                                                \
    } while (0)

static frugal_ctx *new_ctx_n(frugal_model *m, int threads, int n_batch, int n_ctx) {
    frugal_ctx_params p = frugal_ctx_default_params();
    p.n_ctx = n_ctx;
    p.n_threads = threads;
    p.n_batch = n_batch;
    frugal_ctx *c = NULL;
    return frugal_ctx_new(m, &p, &c) == FRUGAL_OK ? c : NULL;
}

static frugal_ctx *new_ctx(frugal_model *m, int threads, int n_batch) { return new_ctx_n(m, threads, n_batch, 256); }

static int tokenize(frugal_model *m, const char *s, int32_t *out, int cap) {
    return (int)frugal_tokenize(m, s, strlen(s), out, cap, FRUGAL_TOKENIZE_PARSE_SPECIAL);
}

static int32_t argmax(const float *l, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++) if (l[i] > l[b]) b = i;
    return b;
}

TEST(model_batched_decode_is_bit_identical_to_single) {
    frugal_model *m = load_default();
    if (!m) return;
    enum { NS = 8 };
    const char *prompts[3] = { "The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away," };
    frugal_ctx *batch[NS], *alone[NS];
    int V = frugal_n_vocab(m);
    for (int i = 0; i < NS; i++) {
        /* two sequences are long enough for their decode attention to be
         * split between threads, next to six that are not; eight are
         * enough for the batch to walk each sequence's pages once for all
         * KV heads, where one alone takes an item per head */
        int32_t t[560];
        int n = tokenize(m, prompts[i % 3], t, 64), len = i % 5 == 2 ? 560 : n + i;
        for (int k = n; k < len; k++) t[k] = t[k % n];
        n = len;
        batch[i] = new_ctx_n(m, 2, 64, 600);
        alone[i] = new_ctx_n(m, 2, 64, 600);
        CHECK(batch[i] && alone[i]);
        CHECK(frugal_eval(batch[i], t, n, false) == FRUGAL_OK);
        CHECK(frugal_eval(alone[i], t, n, false) == FRUGAL_OK);
    }
    for (int step = 0; step < 6; step++) {
        int32_t next[NS];
        for (int i = 0; i < NS; i++) {
            const float *a = frugal_logits(batch[i], -1), *b = frugal_logits(alone[i], -1);
            CHECK_MSG(memcmp(a, b, (size_t)V * sizeof(float)) == 0, "sequence %d, step %d", i, step);
            next[i] = argmax(a, V);
            CHECK(frugal_eval(alone[i], &next[i], 1, false) == FRUGAL_OK);
        }
        CHECK(frugal_eval_batch(batch, next, NS) == FRUGAL_OK);
    }
    int32_t t = 1;
    frugal_ctx *dup[2] = { batch[0], batch[0] };
    CHECK(frugal_eval_batch(dup, &t, 2) == FRUGAL_ERR_INVALID_ARG);
    for (int i = 0; i < NS; i++) { frugal_ctx_free(batch[i]); frugal_ctx_free(alone[i]); }
    free_model(m);
}

/* A server step: prompt chunks of two sequences and decode tokens of two
 * others in one frugal_eval_runs call give every sequence the logits, KV
 * cache and position that evaluating its run alone gives, bit for bit.
 * Bad runs are refused and advance no sequence. */
TEST(model_mixed_runs_are_bit_identical_to_alone) {
    frugal_model *m = load_default();
    if (!m) return;
    enum { S = 4 };
    int32_t t[S][64];
    int n[S];
    const char *text[S] = { "The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,",
                            "The quick brown fox jumps over the lazy dog because" };
    frugal_ctx *mixed[S], *alone[S];
    int V = frugal_n_vocab(m);
    for (int i = 0; i < S; i++) {
        n[i] = tokenize(m, text[i], t[i], 64);
        CHECK(n[i] > 4);
        mixed[i] = new_ctx_n(m, 2, 64, 128);
        alone[i] = new_ctx_n(m, 2, 64, 128);
        CHECK(mixed[i] && alone[i]);
    }
    /* sequences 0 and 1 are decoding (their prompts are in), 2 and 3 read
     * their prompts in two chunks */
    for (int i = 0; i < 2; i++) {
        CHECK(frugal_eval(mixed[i], t[i], n[i], false) == FRUGAL_OK);
        CHECK(frugal_eval(alone[i], t[i], n[i], false) == FRUGAL_OK);
    }
    int half[S] = { 0, 0, n[2] / 2, n[3] / 2 };
    for (int step = 0; step < 2; step++) {
        int32_t toks[2 + 128];
        int len[S], k = 0;
        frugal_ctx *order[S] = { mixed[2], mixed[0], mixed[3], mixed[1] }; /* chunks and tokens interleaved */
        int idx[S] = { 2, 0, 3, 1 };
        for (int r = 0; r < S; r++) {
            int i = idx[r];
            if (i < 2) {
                int32_t next = argmax(frugal_logits(alone[i], -1), V);
                CHECK(memcmp(frugal_logits(mixed[i], -1), frugal_logits(alone[i], -1), (size_t)V * 4) == 0);
                CHECK(frugal_eval(alone[i], &next, 1, false) == FRUGAL_OK);
                toks[k++] = next;
                len[r] = 1;
            } else {
                int from = step ? half[i] : 0, to = step ? n[i] : half[i];
                memcpy(toks + k, t[i] + from, (size_t)(to - from) * sizeof(int32_t));
                CHECK(frugal_eval(alone[i], t[i] + from, to - from, false) == FRUGAL_OK);
                k += to - from;
                len[r] = to - from;
            }
        }
        CHECK(frugal_eval_runs(order, toks, len, S) == FRUGAL_OK);
        for (int i = 0; i < S; i++) {
            CHECK(frugal_ctx_pos(mixed[i]) == frugal_ctx_pos(alone[i]));
            CHECK(memcmp(frugal_logits(mixed[i], -1), frugal_logits(alone[i], -1), (size_t)V * 4) == 0);
        }
    }
    /* refused, and nobody advances: an empty run, more tokens than the
     * batch holds, a run past the context, a context twice */
    int pos[S];
    for (int i = 0; i < S; i++) pos[i] = frugal_ctx_pos(mixed[i]);
    int32_t many[128] = { 0 };
    int zero[2] = { 1, 0 }, big[2] = { 40, 40 }, past[2] = { 1, 7 }, one[2] = { 1, 1 };
    CHECK(frugal_eval_runs(mixed, many, zero, 2) == FRUGAL_ERR_INVALID_ARG);
    CHECK(frugal_eval_runs(mixed, many, big, 2) == FRUGAL_ERR_INVALID_ARG);
    frugal_ctx *small = new_ctx_n(m, 2, 64, 16), *with_small[2] = { mixed[0], small };
    CHECK(small && frugal_eval(small, many, 10, false) == FRUGAL_OK);
    CHECK(frugal_eval_runs(with_small, many, past, 2) == FRUGAL_ERR_CONTEXT_FULL);
    CHECK(frugal_ctx_pos(small) == 10);
    frugal_ctx_free(small);
    frugal_ctx *dup[2] = { mixed[0], mixed[0] };
    CHECK(frugal_eval_runs(dup, many, one, 2) == FRUGAL_ERR_INVALID_ARG);
    int32_t bad[2] = { 0, V };
    CHECK(frugal_eval_runs(mixed, bad, one, 2) == FRUGAL_ERR_INVALID_ARG);
    for (int i = 0; i < S; i++) CHECK(frugal_ctx_pos(mixed[i]) == pos[i]);
    for (int i = 0; i < S; i++) { frugal_ctx_free(mixed[i]); frugal_ctx_free(alone[i]); }
    free_model(m);
}

/* Contexts sharing one context's threads evaluate as contexts with their
 * own, alone and batched together, and can be freed before it. */
TEST(model_contexts_share_threads) {
    frugal_model *m = load_default();
    if (!m) return;
    frugal_ctx *owner = new_ctx_n(m, 2, 64, 128), *own = new_ctx_n(m, 2, 64, 128), *guest = NULL;
    CHECK(owner && own);
    frugal_ctx_params p = frugal_ctx_default_params();
    p.n_ctx = 128, p.n_batch = 64, p.n_threads = 7; /* ignored: the owner's 2 */
    p.share_threads = owner;
    CHECK(frugal_ctx_new(m, &p, &guest) == FRUGAL_OK && guest);
    CHECK(frugal_ctx_threads(guest) == 2 && frugal_ctx_threads(owner) == 2);
    int32_t t[32];
    int n = tokenize(m, "Sharing threads changes nothing that is computed.", t, 32), V = frugal_n_vocab(m);
    CHECK(frugal_eval(guest, t, n, false) == FRUGAL_OK && frugal_eval(own, t, n, false) == FRUGAL_OK);
    CHECK(memcmp(frugal_logits(guest, -1), frugal_logits(own, -1), (size_t)V * 4) == 0);
    CHECK(frugal_eval(owner, t, 3, false) == FRUGAL_OK);
    frugal_ctx *both[2] = { guest, owner };
    int32_t next[2] = { 1, 2 };
    CHECK(frugal_eval_batch(both, next, 2) == FRUGAL_OK);
    frugal_ctx_free(guest);
    CHECK(frugal_eval(owner, next, 1, false) == FRUGAL_OK); /* its threads outlive the guest */
    frugal_ctx_free(own);
    frugal_ctx_free(owner);
    free_model(m);
}

TEST(model_chunked_prefill_and_threads_are_bit_identical) {
    frugal_model *m = load_default();
    if (!m) return;
    int32_t t[128];
    int n = tokenize(m, "In the beginning the Universe was created. This has made a lot of people very angry "
                        "and been widely regarded as a bad move. Many were increasingly of the opinion that "
                        "they'd all made a big mistake in coming down from the trees in the first place.", t, 128);
    CHECK(n > 40);
    frugal_ctx *one = new_ctx(m, 1, 512), *chunked = new_ctx(m, 2, 7);
    CHECK(one && chunked);
    CHECK(frugal_eval(one, t, n, true) == FRUGAL_OK);
    CHECK(frugal_eval(chunked, t, n, true) == FRUGAL_OK);
    int V = frugal_n_vocab(m);
    for (int i = 0; i < n; i++) CHECK(memcmp(frugal_logits(one, i), frugal_logits(chunked, i), (size_t)V * 4) == 0);
    /* rewind and re-evaluate the tail: same logits */
    float *last = malloc((size_t)V * 4);
    memcpy(last, frugal_logits(one, n - 1), (size_t)V * 4);
    CHECK(frugal_ctx_rewind(one, n - 5) == FRUGAL_OK && frugal_ctx_pos(one) == n - 5);
    CHECK(frugal_eval(one, t + n - 5, 5, false) == FRUGAL_OK);
    CHECK(memcmp(frugal_logits(one, -1), last, (size_t)V * 4) == 0);
    CHECK(frugal_ctx_rewind(one, n + 1) == FRUGAL_ERR_INVALID_ARG);
    free(last);
    frugal_ctx_free(one);
    frugal_ctx_free(chunked);
    free_model(m);
}

/* The last layer computes in full only the rows whose logits are asked
 * for. The logits and the cache left behind are those of computing every
 * row, bit for bit: a prompt long enough that a lone decode row's
 * attention would be split between threads (a prompt's rows never are),
 * in chunks of which the first two ask for no logits at all, then a
 * decode step over that cache. */
TEST(model_output_rows_only_are_bit_identical_to_all_rows) {
    frugal_model *m = load_default();
    if (!m) return;
    enum { N = 600 };
    int32_t t[N];
    int n = tokenize(m, "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money "
                        "in my purse, I thought I would sail about a little and see the watery part of the world.",
                     t, N);
    CHECK(n > 20);
    for (int k = n; k < N; k++) t[k] = t[k % n];
    frugal_ctx *every = new_ctx_n(m, 2, 512, 700), *outputs = new_ctx_n(m, 2, 256, 700);
    CHECK(every && outputs);
    CHECK(frugal_eval(every, t, N, true) == FRUGAL_OK);
    CHECK(frugal_eval(outputs, t, N, false) == FRUGAL_OK);
    int V = frugal_n_vocab(m);
    CHECK(memcmp(frugal_logits(every, N - 1), frugal_logits(outputs, -1), (size_t)V * 4) == 0);
    int32_t next = argmax(frugal_logits(every, N - 1), V);
    CHECK(frugal_eval(every, &next, 1, false) == FRUGAL_OK);
    CHECK(frugal_eval(outputs, &next, 1, false) == FRUGAL_OK);
    CHECK(memcmp(frugal_logits(every, -1), frugal_logits(outputs, -1), (size_t)V * 4) == 0);
    frugal_ctx_free(every);
    frugal_ctx_free(outputs);
    free_model(m);
}

TEST(model_context_full_is_an_error_not_a_crash) {
    frugal_model *m = load_default();
    if (!m) return;
    frugal_ctx_params p = frugal_ctx_default_params();
    p.n_ctx = 8;
    frugal_ctx *c = NULL;
    CHECK(frugal_ctx_new(m, &p, &c) == FRUGAL_OK);
    int32_t t[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    CHECK(frugal_eval(c, t, 9, false) == FRUGAL_ERR_CONTEXT_FULL && frugal_ctx_pos(c) == 0);
    CHECK(frugal_eval(c, t, 8, false) == FRUGAL_OK && frugal_ctx_pos(c) == 8);
    CHECK(frugal_eval(c, t, 1, false) == FRUGAL_ERR_CONTEXT_FULL);
    int32_t bad = 1 << 30;
    CHECK(frugal_ctx_rewind(c, 0) == FRUGAL_OK);
    CHECK(frugal_eval(c, &bad, 1, false) == FRUGAL_ERR_INVALID_ARG);
    p.n_ctx = -5;
    frugal_ctx *c2 = NULL;
    CHECK(frugal_ctx_new(m, &p, &c2) == FRUGAL_ERR_INVALID_ARG && !c2);
    frugal_ctx_free(c);
    free_model(m);
}

/* A context that loads a shared prefix from the prefix cache and goes on
 * computes exactly (bitwise) what one that computed it all does; a prompt
 * that differs inside a block reuses only the blocks before it. */
/* The prefix cache lets the least recently used leaves go first. With
 * room for five blocks: chain A (three blocks), then chain B (two); A is
 * used again (loaded into a context); chain C (two) arrives and two
 * blocks must go: B's, leaf first. A stays whole, C is in. Then a chain
 * sharing A's first block, and the cache far over its limit, lose their
 * leaves before that shared block. */
TEST(model_prefix_cache_evicts_least_recently_used_leaves) {
    frugal_model *m = load_default();
    if (!m) return;
    int32_t a[100], b[100], c[100], d[100];
    for (int i = 0; i < 100; i++) {
        a[i] = 100 + i;
        b[i] = 1100 + i;
        c[i] = 2100 + i;
        d[i] = i < 32 ? a[i] : 3100 + i; /* A's first block, then its own */
    }
    frugal_ctx *ctx = new_ctx(m, 2, 64), *user = new_ctx(m, 2, 64);
    CHECK(ctx && user);
    frugal_prefix_cache *probe = NULL, *pc = NULL;
    CHECK(frugal_prefix_cache_new(m, 64 << 20, &probe) == FRUGAL_OK);
    CHECK(frugal_eval(ctx, a, 96, false) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(probe, ctx, a, 96) == FRUGAL_OK);
    frugal_prefix_cache_info info;
    frugal_prefix_cache_stats(probe, &info);
    CHECK(info.blocks == 3);
    size_t block = info.blocks ? info.bytes / info.blocks : 1;
    frugal_prefix_cache_free(probe);
    CHECK(frugal_prefix_cache_new(m, 5 * block, &pc) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(pc, ctx, a, 96) == FRUGAL_OK);
    CHECK(frugal_ctx_rewind(ctx, 0) == FRUGAL_OK && frugal_eval(ctx, b, 64, false) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(pc, ctx, b, 64) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_load(pc, user, a, 97) == 96);
    CHECK(frugal_ctx_rewind(ctx, 0) == FRUGAL_OK && frugal_eval(ctx, c, 64, false) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(pc, ctx, c, 64) == FRUGAL_OK);
    frugal_prefix_cache_stats(pc, &info);
    CHECK(info.blocks == 5);
    CHECK(frugal_prefix_cache_match(pc, a, 97) == 96);
    CHECK(frugal_prefix_cache_match(pc, b, 65) == 0);
    CHECK(frugal_prefix_cache_match(pc, c, 65) == 64);
    /* D shares A's root: six blocks, so one goes; of the leaves, A's (used
     * before C and D) is the oldest */
    CHECK(frugal_ctx_rewind(ctx, 0) == FRUGAL_OK && frugal_eval(ctx, d, 64, false) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(pc, ctx, d, 64) == FRUGAL_OK);
    frugal_prefix_cache_stats(pc, &info);
    CHECK(info.blocks == 5);
    CHECK(frugal_prefix_cache_match(pc, a, 97) == 64);
    CHECK(frugal_prefix_cache_match(pc, d, 65) == 64);
    CHECK(frugal_prefix_cache_match(pc, c, 65) == 64);
    frugal_prefix_cache_free(pc);
    frugal_ctx_free(ctx);
    frugal_ctx_free(user);
    free_model(m);
}

/* A prefix cache of thousands of blocks (more than two a bucket of its
 * first hash table, which then grows) still finds every chain whole. The
 * chains' tokens are made up: a put takes the context's pages for
 * whatever tokens it is told they hold, so one evaluation serves all. */
TEST(model_prefix_cache_finds_every_chain_of_thousands) {
    frugal_model *m = load_default();
    if (!m) return;
    enum { N = 1024, CHAINS = 80 }; /* 2,560 blocks */
    frugal_ctx *ctx = new_ctx_n(m, 2, 512, N);
    static int32_t t[CHAINS][N];
    for (int c = 0; c < CHAINS; c++)
        for (int i = 0; i < N; i++) t[c][i] = 100 + (c * 7919 + i * 13) % 40000;
    frugal_prefix_cache *pc = NULL;
    CHECK(ctx && frugal_prefix_cache_new(m, (size_t)1 << 40, &pc) == FRUGAL_OK);
    CHECK(frugal_eval(ctx, t[0], N, false) == FRUGAL_OK);
    for (int c = 0; c < CHAINS; c++) CHECK(frugal_prefix_cache_put(pc, ctx, t[c], N) == FRUGAL_OK);
    frugal_prefix_cache_info info;
    frugal_prefix_cache_stats(pc, &info);
    CHECK(info.blocks == CHAINS * N / 32);
    for (int c = 0; c < CHAINS; c++) CHECK_MSG(frugal_prefix_cache_match(pc, t[c], N) == N - 32, "chain %d", c);
    frugal_prefix_cache_free(pc);
    frugal_ctx_free(ctx);
    free_model(m);
}

TEST(model_prefix_cache_load_is_bit_identical) {
    frugal_model *m = load_default();
    if (!m) return;
    int32_t a[120], b[120];
    for (int i = 0; i < 120; i++) a[i] = b[i] = 100 + (i * 37) % 5000;
    b[70] = 7; /* differs in block 2 (positions 64..95) */
    frugal_prefix_cache *pc = NULL;
    CHECK(frugal_prefix_cache_new(m, 64 << 20, &pc) == FRUGAL_OK);
    frugal_ctx *first = new_ctx(m, 2, 64), *shared = new_ctx(m, 2, 64), *alone = new_ctx(m, 2, 64);
    CHECK(first && shared && alone);
    CHECK(frugal_eval(first, a, 100, false) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(pc, first, a, 100) == FRUGAL_OK);
    frugal_prefix_cache_info info;
    frugal_prefix_cache_stats(pc, &info);
    CHECK(info.blocks == 3 && info.bytes > 0);
    CHECK(frugal_prefix_cache_match(pc, a, 96) == 64); /* the last token stays to evaluate */
    CHECK(frugal_prefix_cache_match(pc, a, 97) == 96);
    CHECK(frugal_prefix_cache_load(pc, shared, b, 120) == 64);
    CHECK(frugal_ctx_pos(shared) == 64);
    frugal_ctx_free(first); /* the cache keeps its pages alive */
    CHECK(frugal_eval(shared, b + 64, 56, true) == FRUGAL_OK);
    CHECK(frugal_eval(alone, b, 120, true) == FRUGAL_OK);
    int V = frugal_n_vocab(m);
    for (int i = 0; i < 56; i++)
        CHECK_MSG(!memcmp(frugal_logits(shared, i), frugal_logits(alone, 64 + i), (size_t)V * sizeof(float)),
                  "token %d", 64 + i);
    /* rewinding into a shared page copies it; the cache's copy is intact */
    CHECK(frugal_ctx_rewind(shared, 40) == FRUGAL_OK);
    CHECK(frugal_eval(shared, b + 40, 80, true) == FRUGAL_OK);
    CHECK(!memcmp(frugal_logits(shared, 79), frugal_logits(alone, 119), (size_t)V * sizeof(float)));
    frugal_prefix_cache_stats(pc, &info);
    CHECK(info.hits == 1 && info.tokens_reused == 64);
    /* a tiny limit evicts down to what fits */
    frugal_prefix_cache *small = NULL;
    CHECK(frugal_prefix_cache_new(m, 1, &small) == FRUGAL_OK);
    CHECK(frugal_prefix_cache_put(small, alone, b, 120) == FRUGAL_OK);
    frugal_prefix_cache_stats(small, &info);
    CHECK(info.blocks == 0 && info.bytes == 0);
    frugal_prefix_cache_free(small);
    frugal_ctx_free(shared);
    frugal_ctx_free(alone);
    frugal_prefix_cache_free(pc);
    free_model(m);
}

/* Bytes and multiply-adds of every matrix in one role, over all layers. */
static void role_cost(const frugal_model *m, int part, double *bytes, double *macs) {
    *bytes = *macs = 0;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const fr_layer *L = &m->layers[l];
        const fr_weight *w[3] = { 0 };
        if (part == FRUGAL_PART_QKV) w[0] = &L->wq, w[1] = &L->wk, w[2] = &L->wv;
        if (part == FRUGAL_PART_ATTN_OUT) w[0] = &L->wo;
        if (part == FRUGAL_PART_FFN_UP) w[0] = &L->w_gate, w[1] = &L->w_up;
        if (part == FRUGAL_PART_FFN_DOWN) w[0] = &L->w_down;
        for (int i = 0; i < 3 && w[i]; i++) {
            *bytes += (double)w[i]->rows * (double)w[i]->row_bytes;
            *macs += (double)w[i]->rows * (double)w[i]->cols;
        }
    }
}

/* The profile charges each part its passes, and the bytes and flops its
 * shapes imply: a prompt's last layer goes on with its output row only. */
TEST(model_profile_counts_every_part) {
    frugal_model *m = load_default();
    if (!m) return;
    frugal_ctx *c = new_ctx(m, 2, 64);
    CHECK(c);
    const int n = 20, L = m->hp.n_layer, hq = m->hp.n_head * m->hp.head_dim;
    int32_t t[20];
    for (int i = 0; i < n; i++) t[i] = 100 + 7 * i;
    frugal_part_stats p[FRUGAL_PARTS];
    frugal_ctx_profile_get(c, p);
    CHECK(p[FRUGAL_PART_QKV].calls == 0 && p[FRUGAL_PART_QKV].seconds == 0); /* never started */
    CHECK(frugal_ctx_profile(c, true) == FRUGAL_OK);
    CHECK(frugal_eval(c, t, n, false) == FRUGAL_OK);
    frugal_ctx_profile_get(c, p);
    double total = 0;
    for (int i = 0; i < FRUGAL_PARTS; i++) total += p[i].seconds;
    CHECK(total > 0);
    for (int part = FRUGAL_PART_QKV; part <= FRUGAL_PART_FFN_DOWN; part++) {
        if (part == FRUGAL_PART_ATTENTION) continue;
        double bytes, macs;
        role_cost(m, part, &bytes, &macs);
        double rows = part == FRUGAL_PART_QKV ? n : n - 1.0 / L * (n - 1); /* per layer, on average */
        CHECK_MSG(p[part].calls == L, "%s: %lld calls", frugal_part_name(part), (long long)p[part].calls);
        CHECK_MSG(p[part].bytes == bytes, "%s: %.0f bytes, not %.0f", frugal_part_name(part), p[part].bytes, bytes);
        CHECK_MSG(fabs(p[part].flops - 2 * macs * rows) <= 1e-9 * p[part].flops, "%s: %.0f flops, not %.0f",
                  frugal_part_name(part), p[part].flops, 2 * macs * rows);
        CHECK(p[part].seconds > 0);
    }
    /* row i sees i + 1 keys: scores and values, per query head */
    CHECK(p[FRUGAL_PART_ATTENTION].flops == 4.0 * hq * L * n * (n + 1) / 2);
    CHECK(p[FRUGAL_PART_ATTENTION].bytes > 0 && p[FRUGAL_PART_ATTENTION].calls == L);
    const fr_weight *out = &m->output;
    CHECK(p[FRUGAL_PART_OUTPUT].calls == 1 && p[FRUGAL_PART_OUTPUT].flops == 2.0 * out->rows * out->cols);
    CHECK(p[FRUGAL_PART_OUTPUT].bytes == (double)out->rows * out->row_bytes);
    /* turned on again it starts from zero; a decoding step is one row */
    CHECK(frugal_ctx_profile(c, true) == FRUGAL_OK);
    CHECK(frugal_eval(c, t, 1, false) == FRUGAL_OK);
    frugal_ctx_profile_get(c, p);
    double bytes, macs;
    role_cost(m, FRUGAL_PART_FFN_UP, &bytes, &macs);
    CHECK(p[FRUGAL_PART_FFN_UP].calls == L && p[FRUGAL_PART_FFN_UP].flops == 2 * macs);
    CHECK(p[FRUGAL_PART_ATTENTION].flops == 4.0 * hq * L * (n + 1));
    /* off: nothing is kept */
    CHECK(frugal_ctx_profile(c, false) == FRUGAL_OK);
    CHECK(frugal_eval(c, t, 1, false) == FRUGAL_OK);
    frugal_ctx_profile_get(c, p);
    CHECK(p[FRUGAL_PART_FFN_UP].calls == 0);
    /* without memory for it, profiling is an error and evaluation goes on */
    fr_alloc_fail_after(1);
    frugal_status st = frugal_ctx_profile(c, true);
    fr_alloc_fail_after(0);
    CHECK(st == FRUGAL_ERR_NOMEM);
    CHECK(frugal_eval(c, t, 1, false) == FRUGAL_OK);
    CHECK(!strcmp(frugal_part_name(FRUGAL_PART_FFN_DOWN), "ffn_down") && !strcmp(frugal_part_name(99), "unknown"));
    frugal_ctx_free(c);
    free_model(m);
}

/* True when [p, p + n) lies in the model's weight arena. */
static bool in_arena(const frugal_model *m, const void *p, size_t n) {
    const uint8_t *a = m->placed_mem, *q = p;
    return a && q >= a && q + n <= m->placed_next;
}

/* Every matrix a token reads sits in the one arena (model.c,
 * place_weights), packed where the level has a layout for its type, else
 * a byte-for-byte copy of the file's; a tied output matrix is copied
 * once, and the embedding lookups read that copy. The matrices follow
 * each other from a 2 MiB boundary. */
/* A matrix whose row count is not a multiple of 16 is packed but for its
 * last rows % 16, which the kernels read where they were: every row's
 * output is the one it has in the whole matrix, bit for bit, for a
 * decode (one token) and a batch. The view of the output matrix cut 9
 * rows short packs the same groups as the matrix, but 7 rows fewer. */
TEST(model_rows_past_the_packed_groups_are_bit_identical) {
    frugal_model *m = load_default();
    if (!m) return;
    frugal_ctx *c = new_ctx(m, 2, 64);
    CHECK(c != NULL);
    enum { T = 5 };
    const fr_weight *w = &m->output;
    fr_weight cut = *w;
    cut.rows -= 9;
    size_t d = (size_t)w->cols;
    float *x = malloc(sizeof(float) * d * T), *all = malloc(sizeof(float) * w->rows * T);
    float *part = malloc(sizeof(float) * cut.rows * T);
    CHECK(c && x && all && part);
    if (c && x && all && part) {
        for (size_t i = 0; i < d * T; i++) x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
        for (int n = 1; n <= T; n += T - 1) {
            fr_matmul(c, w, x, n, all);
            fr_matmul(c, &cut, x, n, part);
            int bad = 0;
            for (int t = 0; t < n; t++)
                bad += memcmp(part + (size_t)t * cut.rows, all + (size_t)t * w->rows, sizeof(float) * cut.rows) != 0;
            CHECK_MSG(!bad, "%d token(s): the rows of %d differ", n, bad);
        }
    }
    free(x), free(all), free(part);
    frugal_ctx_free(c);
    free_model(m);
}

TEST(model_matrices_live_in_one_arena) {
    frugal_model *m = load_default();
    if (!m) return;
    CHECK(m->placed_mem != NULL && ((uintptr_t)m->placed_next & 63) == 0);
    size_t placed = 0;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const fr_layer *L = &m->layers[l];
        const fr_weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t bytes = (size_t)ws[i]->rows * ws[i]->row_bytes;
            const void *at = ws[i]->packed ? ws[i]->packed : ws[i]->data;
            CHECK_MSG(in_arena(m, at, bytes), "layer %d matrix %zu is not in the arena", l, i);
            placed += (bytes + 63) & ~(size_t)63;
        }
    }
    const gguf_tensor *t = gguf_find_tensor(m->gguf, "token_embd.weight");
    size_t out_bytes = (size_t)m->output.rows * m->output.row_bytes;
    CHECK(t && !gguf_find_tensor(m->gguf, "output.weight")); /* SmolLM2 ties them */
    CHECK(t->nbytes == out_bytes);
    if (fr_traits(m->output.type)->pack) { /* packed, the embedding table read where it was */
        CHECK(m->output.packed && in_arena(m, m->output.packed, out_bytes));
        CHECK(m->tok_embd.data == t->data && m->output.data == t->data && !in_arena(m, t->data, out_bytes));
        uint8_t *group = malloc(16 * m->output.row_bytes); /* the last group, packed again */
        int64_t r0 = m->output.rows - 16;
        CHECK(group != NULL);
        if (group) {
            fr_pack_group(m->output.type, m->output.cols, (const uint8_t *)t->data + r0 * m->output.row_bytes,
                          m->output.row_bytes, 16, group);
            CHECK(memcmp(group, (const uint8_t *)m->output.packed + r0 * m->output.row_bytes,
                         16 * m->output.row_bytes) == 0);
        }
        free(group);
    } else { /* copied, the embedding table with it */
        CHECK(m->output.data == m->tok_embd.data && m->output.packed == NULL);
        CHECK(in_arena(m, m->output.data, out_bytes));
        CHECK(memcmp(m->output.data, t->data, out_bytes) == 0); /* the file's pages come back from the file */
    }
    placed += (out_bytes + 63) & ~(size_t)63;
    CHECK(m->placed_total == placed);
    const uintptr_t huge = (uintptr_t)2 << 20, start = ((uintptr_t)m->placed_mem + huge - 1) & ~(huge - 1);
    CHECK((uintptr_t)m->placed_next - start == placed); /* from a 2 MiB boundary, nothing between */
    frugal_model_free(m);
}
