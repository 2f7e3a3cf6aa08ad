/*
 * sampler.c - from logits to a token.
 *
 * The chain, in llama.cpp's default order: logit bias -> penalties
 * (repetition, then frequency and presence) -> top-k -> top-p -> min-p ->
 * temperature -> draw. Temperature <= 0 is greedy (argmax after the bias
 * and penalties). Top-p and min-p look at the probabilities
 * before temperature, as llama.cpp does. The RNG is a seeded 64-bit
 * xorshift*, so the same seed gives the same text.
 *
 * A sample is taken per sequence and token, on the server's one
 * scheduling thread while the compute threads wait, so greedy and top-k
 * read the logits in place, sixteen at a time, and never copy the whole
 * vocabulary (bench/sampler.c times them). The bias and the penalties
 * touch few tokens (those named, those in the recent history): their new
 * logits go to a short side list, and a bitmask tells the scans to take
 * those tokens from it instead of from the logits.
 *
 * JSON mode (json_mode.c): a drawn token the constraint refuses is
 * drawn again from a copy of the logits with every refused token at
 * -infinity, which is rare enough that the copy costs nothing on average.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "json_mode.h"

#define MAX_HISTORY 4096

typedef struct { float logit; int32_t id; } candidate;

struct frugal_sampler {
    frugal_sampler_params p;
    int n_vocab;
    uint64_t rng;
    candidate *cand;
    uint64_t *penalised;          /* bit per token: its logit is in adjusted (during a sample) */
    candidate *adjusted;          /* the tokens the bias or a penalty changes, new logits (during a sample) */
    candidate bias[FRUGAL_MAX_LOGIT_BIAS]; /* the logit bias, by id */
    int n_bias;
    int32_t window[MAX_HISTORY];  /* the history the penalties look at, sorted (during a sample) */
    int32_t history[MAX_HISTORY]; /* ring buffer of recent tokens */
    int n_history, history_head;
    const frugal_json *json;      /* JSON mode: tokens must keep the text JSON (NULL: off) */
    float *masked;                /* [n_vocab] JSON mode: the logits with disallowed tokens at -inf */
};

frugal_sampler_params frugal_sampler_default_params(void) {
    frugal_sampler_params p = { .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                                .repeat_penalty = 1.0f, .repeat_last_n = 64 };
    return p;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static float rng_uniform(uint64_t *s) { return (float)(rng_next(s) >> 40) / 16777216.0f; }

static void seed_rng(frugal_sampler *s) {
    /* splitmix64 of the seed, so seeds 0, 1, 2 give unrelated streams and
     * the state is never zero */
    uint64_t z = s->p.seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    s->rng = (z ^ (z >> 31)) | 1;
}

static bool params_valid(const frugal_sampler_params *p) {
    return isfinite(p->temperature) && p->temperature <= 100.0f && isfinite(p->top_p) &&
           isfinite(p->min_p) && p->min_p <= 1.0f && isfinite(p->repeat_penalty) &&
           p->repeat_penalty > 0 && p->repeat_penalty <= 100.0f && p->repeat_last_n >= 0 &&
           fabsf(p->frequency_penalty) <= 2.0f && fabsf(p->presence_penalty) <= 2.0f;
}

frugal_status frugal_sampler_new(const frugal_sampler_params *p, int n_vocab, frugal_sampler **out) {
    if (!p || !out || n_vocab < 1) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_sampler_new");
    *out = NULL;
    if (!params_valid(p))
        return fr_error(FRUGAL_ERR_INVALID_ARG,
                        "sampling parameters out of range (finite values, temperature <= 100, "
                        "min-p <= 1, 0 < repeat penalty <= 100, repeat-last-n >= 0, "
                        "frequency and presence penalties in -2..2)");
    frugal_sampler *s = fr_calloc(1, sizeof *s);
    if (!s) return fr_error(FRUGAL_ERR_NOMEM, "out of memory");
    s->cand = fr_malloc((size_t)n_vocab * sizeof *s->cand);
    s->penalised = fr_calloc(((size_t)n_vocab + 63) / 64, sizeof *s->penalised);
    s->adjusted = fr_malloc((MAX_HISTORY + FRUGAL_MAX_LOGIT_BIAS) * sizeof *s->adjusted);
    if (!s->cand || !s->penalised || !s->adjusted) {
        frugal_sampler_free(s);
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory");
    }
    s->p = *p;
    if (s->p.repeat_last_n > MAX_HISTORY) s->p.repeat_last_n = MAX_HISTORY;
    s->n_vocab = n_vocab;
    seed_rng(s);
    *out = s;
    return FRUGAL_OK;
}

void frugal_sampler_free(frugal_sampler *s) {
    if (!s) return;
    fr_free(s->cand);
    fr_free(s->penalised);
    fr_free(s->adjusted);
    fr_free(s->masked);
    fr_free(s);
}

void frugal_sampler_reset(frugal_sampler *s) {
    s->n_history = s->history_head = 0;
    seed_rng(s);
}

void frugal_sampler_accept(frugal_sampler *s, int32_t token) {
    s->history[s->history_head] = token;
    s->history_head = (s->history_head + 1) % MAX_HISTORY;
    if (s->n_history < MAX_HISTORY) s->n_history++;
}

static int by_id(const void *a, const void *b) {
    return ((const candidate *)a)->id - ((const candidate *)b)->id;
}

frugal_status frugal_sampler_set_logit_bias(frugal_sampler *s, const int32_t *tokens, const float *bias, int n) {
    if (!s || n < 0 || (n > 0 && (!tokens || !bias)))
        return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_sampler_set_logit_bias");
    if (n > FRUGAL_MAX_LOGIT_BIAS)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "a logit bias names at most %d tokens (got %d)",
                        FRUGAL_MAX_LOGIT_BIAS, n);
    candidate b[FRUGAL_MAX_LOGIT_BIAS];
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= s->n_vocab)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "logit bias for token %d, outside the vocabulary (0..%d)",
                            (int)tokens[i], s->n_vocab - 1);
        if (!(fabsf(bias[i]) <= 100.0f)) /* (NaN too) */
            return fr_error(FRUGAL_ERR_INVALID_ARG, "logit bias %g for token %d is not in -100..100",
                            (double)bias[i], (int)tokens[i]);
        b[i] = (candidate){ bias[i], tokens[i] };
    }
    qsort(b, (size_t)n, sizeof *b, by_id);
    for (int i = 1; i < n; i++)
        if (b[i].id == b[i - 1].id)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "logit bias names token %d twice", (int)b[i].id);
    memcpy(s->bias, b, (size_t)n * sizeof *b);
    s->n_bias = n;
    return FRUGAL_OK;
}

static int by_token(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* A penalised logit: the repetition penalty (positive logits divided,
 * negative ones multiplied), then count times the frequency penalty and
 * once the presence penalty taken off. */
static float penalise(const frugal_sampler_params *p, float l, int count) {
    l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
    return l - (float)count * p->frequency_penalty - p->presence_penalty;
}

/* The tokens whose logits the bias or the penalties change, each once,
 * with their new logits, into s->adjusted (in id order), each marked in
 * s->penalised (cleared by clear_penalties); returns how many. The
 * penalties count each token among the last repeat_last_n (sorted, so
 * that equal ids are neighbours) and the biased tokens merge in by id. */
static int adjust(frugal_sampler *s, const float *logits) {
    const frugal_sampler_params *p = &s->p;
    bool penalties = p->repeat_penalty != 1.0f || p->frequency_penalty != 0 || p->presence_penalty != 0;
    int n = penalties ? FR_MIN(s->n_history, p->repeat_last_n) : 0, m = 0;
    for (int i = 0; i < n; i++) s->window[i] = s->history[(s->history_head - 1 - i + MAX_HISTORY) % MAX_HISTORY];
    qsort(s->window, (size_t)n, sizeof *s->window, by_token);
    int i = 0, j = 0;
    while (i < n && s->window[i] < 0) i++; /* (accept takes any id; only the vocabulary's count) */
    while (i < n || j < s->n_bias) {
        int32_t t = i < n && (j == s->n_bias || s->window[i] <= s->bias[j].id) ? s->window[i] : s->bias[j].id;
        if (t >= s->n_vocab) break; /* the rest of the window is past the vocabulary (biases are within it) */
        float l = logits[t];
        if (j < s->n_bias && s->bias[j].id == t) l += s->bias[j++].logit;
        int count = 0;
        while (i < n && s->window[i] == t) i++, count++;
        if (count) l = penalise(p, l, count);
        s->penalised[t / 64] |= 1ull << (t % 64);
        s->adjusted[m++] = (candidate){ l, t };
    }
    return m;
}

static void clear_penalties(frugal_sampler *s, const candidate *pen, int m) {
    for (int i = 0; i < m; i++) s->penalised[pen[i].id / 64] = 0;
}

static inline bool is_penalised(const frugal_sampler *s, int i) { return s->penalised[i / 64] >> (i % 64) & 1; }

static int by_logit_desc(const void *a, const void *b) {
    float x = ((const candidate *)a)->logit, y = ((const candidate *)b)->logit;
    /* NaN (a hostile model's logits can be NaN) sorts after every number,
     * so the order is total */
    if (isnan(x) || isnan(y)) {
        if (!isnan(x)) return -1;
        if (!isnan(y)) return 1;
    } else if (x != y) {
        return x < y ? 1 : -1;
    }
    return ((const candidate *)a)->id - ((const candidate *)b)->id;
}

/* Whether a ranks before b in by_logit_desc's order (inline: the top-k
 * pass below asks this once per vocabulary entry). */
static inline bool ranks_before(const candidate *a, const candidate *b) {
    if (a->logit > b->logit) return true;
    if (a->logit < b->logit) return false;
    if (a->logit == b->logit) return a->id < b->id;
    return !isnan(a->logit) || (isnan(b->logit) && a->id < b->id); /* a NaN is involved */
}

/* Restores the heap below i: the root is the candidate that ranks last. */
static void sift_down(candidate *c, int k, int i) {
    for (;;) {
        int l = 2 * i + 1, worst = i;
        if (l < k && ranks_before(&c[worst], &c[l])) worst = l;
        if (l + 1 < k && ranks_before(&c[worst], &c[l + 1])) worst = l + 1;
        if (worst == i) return;
        candidate t = c[i]; c[i] = c[worst]; c[worst] = t;
        i = worst;
    }
}

/* Whether any of the sixteen logits at l is above bar: one comparison
 * each, in a loop the compiler vectorises. top_k and greedy skip a group
 * that has none, looking at the others one by one. */
static inline bool group_above(const float *l, float bar) {
    int any = 0;
    for (int j = 0; j < 16; j++) any |= l[j] > bar;
    return any;
}

/* Offers c to the heap of the k best so far (root: the worst of them). */
static inline void offer(candidate *heap, int k, candidate c) {
    if (!ranks_before(&c, &heap[0])) return;
    heap[0] = c;
    sift_down(heap, k, 0);
}

/* The k best candidates, sorted, into s->cand[0..k): the penalised
 * tokens with their new logits, every other token with its own (k <=
 * n_vocab - n_pen). One pass keeps the best k seen so far in a heap
 * whose root is the worst of them. Tokens come in id order, so one that
 * ties the root's logit ranks after it; once the heap holds good
 * candidates almost no logit beats the root, so only a group of sixteen
 * with a winner (group_above) is offered one by one. A NaN root (the heap holds NaNs) is
 * beaten by any number, which "x > root" does not show: such groups are
 * offered one by one too. About 6 us for a 49,152-token vocabulary, where
 * copying every logit into a candidate list first took about 60 (per
 * sequence and token, on the server's one scheduling thread). */
static void top_k(frugal_sampler *s, const float *logits, int k, const candidate *pen, int n_pen) {
    candidate *heap = s->cand;
    int n = s->n_vocab, filled = 0, i = 0;
    for (; filled < k; i++) /* the first k tokens not penalised */
        if (!is_penalised(s, i)) heap[filled++] = (candidate){ logits[i], i };
    for (int j = k / 2 - 1; j >= 0; j--) sift_down(heap, k, j);
    for (; i < n && i % 16; i++)
        if (!is_penalised(s, i)) offer(heap, k, (candidate){ logits[i], i });
    for (; i + 16 <= n; i += 16) {
        if (!group_above(logits + i, heap[0].logit) && !isnan(heap[0].logit)) continue;
        for (int j = i; j < i + 16; j++)
            if (!is_penalised(s, j)) offer(heap, k, (candidate){ logits[j], j });
    }
    for (; i < n; i++)
        if (!is_penalised(s, i)) offer(heap, k, (candidate){ logits[i], i });
    for (int j = 0; j < n_pen; j++) offer(heap, k, pen[j]);
    qsort(heap, (size_t)k, sizeof *heap, by_logit_desc);
}

/* Greedy: the first token of the highest logit (after the penalty), or
 * token 0 when its logit is NaN (no number compares above it). As in
 * top_k, only a group of sixteen with a logit above the best so far is
 * looked at one by one; penalised tokens are taken from pen at the end. */
static int32_t greedy(const frugal_sampler *s, const float *logits, const candidate *pen, int n_pen) {
    int n = s->n_vocab, best = 0, i = 1;
    float top = logits[0];
    for (int j = 0; j < n_pen; j++)
        if (pen[j].id == 0) top = pen[j].logit;
    if (isnan(top)) return 0;
    for (; i < n && i % 16; i++)
        if (logits[i] > top && !is_penalised(s, i)) top = logits[i], best = i;
    for (; i + 16 <= n; i += 16) {
        if (!group_above(logits + i, top)) continue;
        for (int j = i; j < i + 16; j++)
            if (logits[j] > top && !is_penalised(s, j)) top = logits[j], best = j;
    }
    for (; i < n; i++)
        if (logits[i] > top && !is_penalised(s, i)) top = logits[i], best = i;
    for (int j = 0; j < n_pen; j++)
        if (pen[j].id != 0 && (pen[j].logit > top || (pen[j].logit == top && pen[j].id < best)))
            top = pen[j].logit, best = pen[j].id;
    return best;
}

static int32_t draw(frugal_sampler *s, const float *logits) {
    int n = s->n_vocab;
    const candidate *pen = s->adjusted;
    int n_pen = adjust(s, logits);
    int k = (s->p.top_k > 0 && s->p.top_k < n) ? s->p.top_k : n;
    if (s->p.temperature <= 0) {
        int32_t t = greedy(s, logits, pen, n_pen);
        clear_penalties(s, pen, n_pen);
        return t;
    }
    if (k <= n - n_pen) {
        top_k(s, logits, k, pen, n_pen);
    } else { /* every token a candidate */
        for (int i = 0; i < n; i++) { s->cand[i].logit = logits[i]; s->cand[i].id = i; }
        for (int i = 0; i < n_pen; i++) s->cand[pen[i].id].logit = pen[i].logit;
        qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit_desc);
    }
    clear_penalties(s, pen, n_pen);
    n = k;
    /* probabilities before temperature, for top-p and min-p */
    float max = s->cand[0].logit;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)s->cand[i].logit - max);
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)s->cand[i].logit - max) / sum;
            if (cum >= s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        /* p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p) */
        float cut = max + logf(s->p.min_p);
        int keep = 1;
        while (keep < n && s->cand[keep].logit >= cut) keep++;
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += exp(((double)s->cand[i].logit - max) / s->p.temperature);
    double r = rng_uniform(&s->rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)s->cand[i].logit - max) / s->p.temperature);
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}

frugal_status frugal_sampler_set_json(frugal_sampler *s, const frugal_json *j) {
    if (j && !s->masked && !(s->masked = fr_malloc((size_t)s->n_vocab * sizeof *s->masked)))
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for JSON mode");
    s->json = j;
    return FRUGAL_OK;
}

/* With a JSON constraint: a draw as usual, kept when the constraint
 * allows it; else the disallowed tokens are masked and the draw is taken
 * again (json_mode.c: greedy and temperature alone draw as if masked first).
 * Should no token at all be allowed, the first draw is returned, which
 * frugal_json_accept then refuses. */
int32_t frugal_sampler_sample(frugal_sampler *s, const float *logits) {
    int32_t t = draw(s, logits);
    if (!s->json || frugal_json_allows(s->json, t)) return t;
    if (fr_json_mask(s->json, logits, s->masked, s->n_vocab) == 0) return t;
    int32_t m = draw(s, s->masked);
    return frugal_json_allows(s->json, m) ? m : greedy(s, s->masked, NULL, 0);
}
