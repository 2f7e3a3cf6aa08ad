/* Sampler behaviour: greedy, penalties, top-k/top-p/min-p truncation,
 * temperature, seeding, parameter validation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "unit.h"

static const float *ref_logits; /* for ref_order */

static frugal_sampler *make(float temp, int top_k, float top_p, float min_p, float pen, uint64_t seed, int n_vocab) {
    frugal_sampler_params p = frugal_sampler_default_params();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = pen;
    p.seed = seed;
    frugal_sampler *s = NULL;
    return frugal_sampler_new(&p, n_vocab, &s) == FRUGAL_OK ? s : NULL;
}

TEST(sampler_greedy_is_argmax) {
    float logits[5] = { 0.1f, 2.0f, -1.0f, 1.9f, 0.0f };
    frugal_sampler *s = make(0, 40, 0.95f, 0.05f, 1.0f, 1, 5);
    CHECK(s);
    for (int i = 0; i < 10; i++) CHECK(frugal_sampler_sample(s, logits) == 1);
    frugal_sampler_free(s);
}

/* Greedy is the first token of the highest logit after the penalty (the
 * first of ties; token 0 when its own logit is NaN, as no number compares
 * above it), wherever it lies, penalised or not: against the plain scan
 * over many draws with ties, NaNs, and penalties that demote and promote. */
TEST(sampler_greedy_is_the_first_argmax_after_penalties) {
    enum { V = 1000, ROUNDS = 300 };
    static float logits[V], want[V];
    uint32_t x = 12345;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < V; i++) {
            x = x * 1664525u + 1013904223u;
            logits[i] = (x >> 28) == 0 ? NAN : (float)((x >> 20) % 21) - 10.0f; /* ties everywhere */
        }
        if (round % 7 == 0) logits[0] = NAN;
        const float pens[3] = { 1.0f, 1.5f, 0.5f };
        float pen = pens[round % 3];
        frugal_sampler *s = make(0, 40, 0.95f, 0.05f, pen, 1, V);
        CHECK(s);
        if (!s) return;
        memcpy(want, logits, sizeof want);
        bool done[V] = { false };
        for (int k = 0; k < 12; k++) {
            int32_t t = k == 0 ? 0 : (int32_t)((x >> (k + 3)) % V); /* token 0 among the penalised */
            frugal_sampler_accept(s, t);
            if (pen != 1.0f && !done[t]) want[t] = want[t] > 0 ? want[t] / pen : want[t] * pen;
            done[t] = true;
        }
        int best = 0;
        for (int i = 1; i < V; i++)
            if (want[i] > want[best]) best = i;
        CHECK_MSG(frugal_sampler_sample(s, logits) == best, "round %d", round);
        frugal_sampler_free(s);
    }
}

TEST(sampler_repeat_penalty_demotes_seen_tokens) {
    float logits[4] = { 0.0f, 2.0f, 1.5f, -3.0f };
    frugal_sampler *s = make(0, 0, 1.0f, 0, 1.5f, 1, 4);
    CHECK(s);
    frugal_sampler_accept(s, 1); /* 2.0 / 1.5 = 1.33 < 1.5 */
    CHECK(frugal_sampler_sample(s, logits) == 2);
    frugal_sampler_accept(s, 1); /* a repeated token is penalised once, not twice */
    frugal_sampler_accept(s, 2); /* 1.5 / 1.5 = 1.0 < 1.33 */
    CHECK(frugal_sampler_sample(s, logits) == 1);
    frugal_sampler_free(s);
}

TEST(sampler_negative_logits_penalised_by_multiplying) {
    float logits[2] = { -1.0f, -1.2f };
    frugal_sampler *s = make(0, 0, 1.0f, 0, 2.0f, 1, 2);
    CHECK(s);
    frugal_sampler_accept(s, 0); /* -1 * 2 = -2 < -1.2 */
    CHECK(frugal_sampler_sample(s, logits) == 1);
    frugal_sampler_free(s);
}

/* The bias and all three penalties against a plain reference: logit +
 * bias, then for a token seen c > 0 times in the window the repetition
 * penalty and c * frequency + presence taken off. The best token is
 * what greedy, top-k 1 and min-p 1 over the whole vocabulary all pick,
 * over random logits, histories with repeats (and ids outside the
 * vocabulary, which count for nothing), windows and biases. */
TEST(sampler_bias_and_penalties_match_the_reference) {
    enum { V = 700, ROUNDS = 200, HIST = 40 };
    static float logits[V], want[V], bias[64];
    static int32_t ids[64];
    uint32_t x = 777;
#define NEXT() (x = x * 1664525u + 1013904223u, x >> 8)
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < V; i++) logits[i] = (float)(NEXT() % 100000) / 10000.0f - 5.0f;
        frugal_sampler_params p = frugal_sampler_default_params();
        p.repeat_penalty = round % 4 == 0 ? 1.0f : 0.5f + (float)(NEXT() % 100) / 50.0f;
        p.frequency_penalty = round % 5 == 1 ? 0 : (float)(NEXT() % 401) / 100.0f - 2.0f;
        p.presence_penalty = round % 5 == 2 ? 0 : (float)(NEXT() % 401) / 100.0f - 2.0f;
        p.repeat_last_n = (int)(NEXT() % (HIST + 1));
        int n_bias = round % 6 == 3 ? 0 : (int)(NEXT() % 64);
        bool named[V] = { false };
        for (int i = 0; i < n_bias; i++) {
            do ids[i] = (int32_t)(NEXT() % V); while (named[ids[i]]);
            named[ids[i]] = true;
            bias[i] = (float)(NEXT() % 20001) / 100.0f - 100.0f;
        }
        int32_t hist[HIST];
        for (int i = 0; i < HIST; i++) { /* a few tokens, often repeated; some outside the vocabulary */
            uint32_t r = NEXT();
            hist[i] = r % 13 == 0 ? (r % 2 ? -3 : V + 5) : (int32_t)(r % 17 * 37 % V);
        }
        for (int how = 0; how < 3; how++) {
            p.temperature = how == 0 ? 0 : 1.0f;
            p.top_k = how == 1 ? 1 : 0;
            p.top_p = 1.0f;
            p.min_p = how == 2 ? 1.0f : 0;
            frugal_sampler *s = NULL;
            CHECK(frugal_sampler_new(&p, V, &s) == FRUGAL_OK);
            CHECK(frugal_sampler_set_logit_bias(s, ids, bias, n_bias) == FRUGAL_OK);
            for (int i = 0; i < HIST; i++) frugal_sampler_accept(s, hist[i]);
            memcpy(want, logits, sizeof want);
            for (int i = 0; i < n_bias; i++) want[ids[i]] += bias[i];
            int count[V] = { 0 };
            for (int i = HIST - p.repeat_last_n; i < HIST; i++)
                if (hist[i] >= 0 && hist[i] < V) count[hist[i]]++;
            for (int t = 0; t < V; t++) {
                if (!count[t]) continue;
                float l = want[t] > 0 ? want[t] / p.repeat_penalty : want[t] * p.repeat_penalty;
                want[t] = l - (float)count[t] * p.frequency_penalty - p.presence_penalty;
            }
            int best = 0;
            for (int i = 1; i < V; i++)
                if (want[i] > want[best]) best = i;
            CHECK_MSG(frugal_sampler_sample(s, logits) == best, "round %d, how %d", round, how);
            frugal_sampler_free(s);
        }
    }
#undef NEXT
}

/* A frequency penalty grows with the count, a presence penalty does not. */
TEST(sampler_frequency_counts_presence_does_not) {
    float logits[3] = { 3.0f, 2.0f, 0.0f };
    frugal_sampler_params p = frugal_sampler_default_params();
    p.temperature = 0;
    p.frequency_penalty = 0.6f;
    frugal_sampler *s = NULL;
    CHECK(frugal_sampler_new(&p, 3, &s) == FRUGAL_OK);
    frugal_sampler_accept(s, 0);
    CHECK(frugal_sampler_sample(s, logits) == 0); /* 3 - 0.6 > 2 */
    frugal_sampler_accept(s, 0);
    CHECK(frugal_sampler_sample(s, logits) == 1); /* 3 - 1.2 < 2 */
    frugal_sampler_free(s);
    p.frequency_penalty = 0;
    p.presence_penalty = 0.9f;
    CHECK(frugal_sampler_new(&p, 3, &s) == FRUGAL_OK);
    for (int i = 0; i < 5; i++) frugal_sampler_accept(s, 0);
    CHECK(frugal_sampler_sample(s, logits) == 0); /* 3 - 0.9 > 2, however often */
    frugal_sampler_free(s);
}

TEST(sampler_logit_bias_forces_bans_and_is_checked) {
    float logits[4] = { 1.0f, 4.0f, 2.0f, 3.0f };
    frugal_sampler_params p = frugal_sampler_default_params();
    frugal_sampler *s = NULL;
    CHECK(frugal_sampler_new(&p, 4, &s) == FRUGAL_OK);
    int32_t force = 0, ban[2] = { 1, 3 };
    float hundred = 100.0f, minus[2] = { -100.0f, -100.0f };
    CHECK(frugal_sampler_set_logit_bias(s, &force, &hundred, 1) == FRUGAL_OK);
    for (int i = 0; i < 50; i++) CHECK(frugal_sampler_sample(s, logits) == 0);
    CHECK(frugal_sampler_set_logit_bias(s, ban, minus, 2) == FRUGAL_OK); /* replaces the first */
    for (int i = 0; i < 50; i++) {
        int32_t t = frugal_sampler_sample(s, logits);
        CHECK_MSG(t == 0 || t == 2, "drew %d", (int)t);
    }
    /* refused, each with a message, and the bias in place stays */
    int32_t bad_ids[3] = { 4, -1, 2 };
    float ok_bias[3] = { 1, 1, 1 }, nan_bias = NAN, big = 100.5f;
    CHECK(frugal_sampler_set_logit_bias(s, &bad_ids[0], ok_bias, 1) == FRUGAL_ERR_INVALID_ARG);
    CHECK(strstr(frugal_last_error(), "outside the vocabulary"));
    CHECK(frugal_sampler_set_logit_bias(s, &bad_ids[1], ok_bias, 1) == FRUGAL_ERR_INVALID_ARG);
    CHECK(frugal_sampler_set_logit_bias(s, &bad_ids[2], &nan_bias, 1) == FRUGAL_ERR_INVALID_ARG);
    CHECK(frugal_sampler_set_logit_bias(s, &bad_ids[2], &big, 1) == FRUGAL_ERR_INVALID_ARG);
    int32_t twice[2] = { 2, 2 };
    CHECK(frugal_sampler_set_logit_bias(s, twice, ok_bias, 2) == FRUGAL_ERR_INVALID_ARG);
    CHECK(strstr(frugal_last_error(), "twice"));
    CHECK(frugal_sampler_set_logit_bias(s, twice, ok_bias, FRUGAL_MAX_LOGIT_BIAS + 1) == FRUGAL_ERR_INVALID_ARG);
    CHECK(frugal_sampler_set_logit_bias(s, NULL, NULL, 1) == FRUGAL_ERR_INVALID_ARG);
    p.temperature = 0;
    frugal_sampler_free(s);
    CHECK(frugal_sampler_new(&p, 4, &s) == FRUGAL_OK);
    CHECK(frugal_sampler_set_logit_bias(s, ban, minus, 2) == FRUGAL_OK);
    CHECK(frugal_sampler_set_logit_bias(s, &bad_ids[0], ok_bias, 1) == FRUGAL_ERR_INVALID_ARG);
    CHECK(frugal_sampler_sample(s, logits) == 2); /* 1 and 3 still banned */
    CHECK(frugal_sampler_set_logit_bias(s, NULL, NULL, 0) == FRUGAL_OK); /* cleared */
    CHECK(frugal_sampler_sample(s, logits) == 1);
    frugal_sampler_free(s);
}

TEST(sampler_top_k_one_is_greedy) {
    float logits[6] = { 1, 5, 3, 4.9f, 0, 2 };
    frugal_sampler *s = make(1.5f, 1, 1.0f, 0, 1.0f, 7, 6);
    CHECK(s);
    for (int i = 0; i < 200; i++) CHECK(frugal_sampler_sample(s, logits) == 1);
    frugal_sampler_free(s);
}

/* The reference order: logit descending, NaN last, ties by id. */
static int ref_order(const void *a, const void *b) {
    const float *l = ref_logits;
    int x = *(const int *)a, y = *(const int *)b;
    if (isnan(l[x]) != isnan(l[y])) return isnan(l[x]) ? 1 : -1;
    if (!isnan(l[x]) && l[x] != l[y]) return l[x] > l[y] ? -1 : 1;
    return x - y;
}

/* Draws at a temperature of 100 from a top-k sampler: every one of the k
 * best of want (by ref_order) is drawn, and nothing else. */
static void check_draws_are_top_k(frugal_sampler *s, const float *logits, const float *want, int V, int K) {
    enum { DRAWS = 4000 };
    int *order = malloc((size_t)V * sizeof *order), *seen = calloc((size_t)V, sizeof *seen);
    CHECK(order && seen && s);
    if (!order || !seen || !s) { free(order); free(seen); return; }
    for (int i = 0; i < V; i++) order[i] = i;
    ref_logits = want;
    qsort(order, (size_t)V, sizeof *order, ref_order);
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = frugal_sampler_sample(s, logits);
        CHECK(t >= 0 && t < V);
        if (t >= 0 && t < V) seen[t]++;
    }
    int inside = 0, outside = 0;
    for (int i = 0; i < V; i++) {
        bool top = false;
        for (int j = 0; j < K; j++) top |= order[j] == i;
        if (top) inside += seen[i] > 0;
        else outside += seen[i];
    }
    CHECK(inside == K);
    CHECK(outside == 0);
    free(order);
    free(seen);
}

/* Logits with each value about five times (ties at the cut), two NaNs
 * and a -inf. */
static void tied_logits(float *l, int V) {
    for (int i = 0; i < V; i++) l[i] = (float)((i * 7919) % 1000) / 100.0f;
    l[17] = NAN;
    l[4000] = NAN;
    l[99] = -INFINITY;
}

/* Top-k picks exactly the k best by that order, ties at the cut included. */
TEST(sampler_top_k_keeps_exactly_the_k_best) {
    enum { V = 5000, K = 37 };
    static float logits[V];
    tied_logits(logits, V);
    frugal_sampler *s = make(100.0f, K, 1.0f, 0, 1.0f, 3, V);
    check_draws_are_top_k(s, logits, logits, V, K);
    frugal_sampler_free(s);
}

/* With a repetition penalty the k best are those after it: demoted
 * tokens (penalty 2) leave the top and promoted ones (penalty 0.5) enter
 * it, from anywhere in the vocabulary, the first tokens included. */
TEST(sampler_top_k_ranks_penalised_logits) {
    enum { V = 5000, K = 37 };
    static float logits[V], want[V];
    tied_logits(logits, V);
    logits[3] = -4.0f; /* promoted to -2 by 0.5: still out */
    const int32_t seen[] = { 0, 1, 3, 17, 2222, 4999, 3041, 1082, 1082, 2163, 4326, 12, 6, 6 };
    const float pens[2] = { 2.0f, 0.5f };
    for (int p = 0; p < 2; p++) {
        memcpy(want, logits, sizeof want);
        bool done[V] = { false };
        for (size_t i = 0; i < sizeof seen / sizeof *seen; i++) {
            int32_t t = seen[i];
            if (!done[t] && !isnan(want[t])) want[t] = want[t] > 0 ? want[t] / pens[p] : want[t] * pens[p];
            done[t] = true;
        }
        frugal_sampler *s = make(100.0f, K, 1.0f, 0, pens[p], 5, V);
        for (size_t i = 0; s && i < sizeof seen / sizeof *seen; i++) frugal_sampler_accept(s, seen[i]);
        check_draws_are_top_k(s, logits, want, V, K);
        frugal_sampler_free(s);
    }
}

/* logits giving probabilities 0.5, 0.3, 0.2 */
static void three_way(float *l) { l[0] = logf(0.5f); l[1] = logf(0.3f); l[2] = logf(0.2f); }

TEST(sampler_temperature_one_matches_softmax) {
    float logits[3];
    three_way(logits);
    frugal_sampler *s = make(1.0f, 0, 1.0f, 0, 1.0f, 42, 3);
    CHECK(s);
    int counts[3] = { 0 }, n = 40000;
    for (int i = 0; i < n; i++) counts[frugal_sampler_sample(s, logits)]++;
    CHECK_NEAR(counts[0] / (double)n, 0.5, 0.015);
    CHECK_NEAR(counts[1] / (double)n, 0.3, 0.015);
    CHECK_NEAR(counts[2] / (double)n, 0.2, 0.015);
    frugal_sampler_free(s);
}

TEST(sampler_top_p_cuts_the_tail) {
    float logits[3];
    three_way(logits);
    frugal_sampler *s = make(1.0f, 0, 0.7f, 0, 1.0f, 3, 3);
    CHECK(s);
    int counts[3] = { 0 };
    for (int i = 0; i < 20000; i++) counts[frugal_sampler_sample(s, logits)]++;
    CHECK(counts[2] == 0);
    CHECK(counts[0] > 0 && counts[1] > 0);
    CHECK_NEAR(counts[0] / 20000.0, 0.625, 0.02); /* renormalised 0.5 / 0.8 */
    frugal_sampler_free(s);
}

TEST(sampler_min_p_keeps_tokens_near_the_top) {
    float logits[3];
    three_way(logits);
    frugal_sampler *s = make(1.0f, 0, 1.0f, 0.5f, 1.0f, 5, 3); /* keep p >= 0.25 */
    CHECK(s);
    int counts[3] = { 0 };
    for (int i = 0; i < 20000; i++) counts[frugal_sampler_sample(s, logits)]++;
    CHECK(counts[2] == 0);
    CHECK(counts[1] > 0);
    frugal_sampler_free(s);
}

TEST(sampler_low_temperature_sharpens) {
    float logits[3];
    three_way(logits);
    frugal_sampler *s = make(0.1f, 0, 1.0f, 0, 1.0f, 9, 3);
    CHECK(s);
    int top = 0;
    for (int i = 0; i < 5000; i++) top += frugal_sampler_sample(s, logits) == 0;
    CHECK(top > 4900); /* (0.5/0.3)^10 = 165: p(top) ~ 0.994 */
    frugal_sampler_free(s);
}

static void draw(uint64_t seed, int32_t *out, int n) {
    enum { V = 1000 };
    static float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)((i * 7919) % 101) / 25.0f;
    frugal_sampler *s = make(1.0f, 0, 1.0f, 0, 1.0f, seed, V);
    for (int i = 0; i < n; i++) out[i] = s ? frugal_sampler_sample(s, logits) : -1;
    frugal_sampler_free(s);
}

TEST(sampler_same_seed_same_tokens) {
    int32_t a[64], b[64], c[64];
    draw(1234, a, 64);
    draw(1234, b, 64);
    draw(1235, c, 64);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
}

TEST(sampler_reset_restarts_the_stream) {
    float logits[3];
    three_way(logits);
    frugal_sampler *s = make(1.0f, 0, 1.0f, 0, 1.0f, 77, 3);
    CHECK(s);
    int32_t a[32], b[32];
    for (int i = 0; i < 32; i++) a[i] = frugal_sampler_sample(s, logits);
    frugal_sampler_reset(s);
    for (int i = 0; i < 32; i++) b[i] = frugal_sampler_sample(s, logits);
    CHECK(memcmp(a, b, sizeof a) == 0);
    frugal_sampler_free(s);
}

TEST(sampler_rejects_absurd_parameters) {
    frugal_sampler *s = NULL;
    frugal_sampler_params p = frugal_sampler_default_params();
    p.temperature = NAN;
    CHECK(frugal_sampler_new(&p, 10, &s) == FRUGAL_ERR_INVALID_ARG && !s);
    p = frugal_sampler_default_params();
    p.min_p = 2;
    CHECK(frugal_sampler_new(&p, 10, &s) == FRUGAL_ERR_INVALID_ARG);
    p = frugal_sampler_default_params();
    p.repeat_penalty = 0;
    CHECK(frugal_sampler_new(&p, 10, &s) == FRUGAL_ERR_INVALID_ARG);
    p = frugal_sampler_default_params();
    p.repeat_last_n = -1;
    CHECK(frugal_sampler_new(&p, 10, &s) == FRUGAL_ERR_INVALID_ARG);
    p = frugal_sampler_default_params();
    p.frequency_penalty = 2.5f;
    CHECK(frugal_sampler_new(&p, 10, &s) == FRUGAL_ERR_INVALID_ARG);
    p = frugal_sampler_default_params();
    p.presence_penalty = NAN;
    CHECK(frugal_sampler_new(&p, 10, &s) == FRUGAL_ERR_INVALID_ARG);
    p = frugal_sampler_default_params();
    CHECK(frugal_sampler_new(&p, 0, &s) == FRUGAL_ERR_INVALID_ARG);
    CHECK(strlen(frugal_last_error()) > 0);
}

TEST(sampler_nomem_is_clean) {
    frugal_sampler_params p = frugal_sampler_default_params();
    for (long n = 1; n <= 4; n++) { /* the sampler, its candidates, its bitmask, its adjusted logits */
        frugal_sampler *s = NULL;
        fr_alloc_fail_after(n);
        frugal_status st = frugal_sampler_new(&p, 100, &s);
        fr_alloc_fail_after(0);
        CHECK(st == FRUGAL_ERR_NOMEM && s == NULL);
    }
}
