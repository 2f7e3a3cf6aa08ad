/*
 * metrics.c - the numbers behind GET /metrics (see metrics.h).
 *
 * Histograms keep a count per bucket and are made cumulative only when
 * rendered, as Prometheus' "le" (less or equal) buckets require.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"

#define N_CODES 600 /* HTTP status codes are 100..599 */
#define N_BUCKETS 12

typedef struct {
    const double *le; /* upper bounds, ascending; +Inf is implicit */
    unsigned long count[N_BUCKETS + 1];
    double sum;
    unsigned long n;
} histogram;

/* Time to first token spans queueing and prefill: milliseconds to a
 * minute. Time per output token is one decode step: sub-millisecond to a
 * second on a loaded CPU. */
static const double ttft_le[N_BUCKETS] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
static const double tpot_le[N_BUCKETS] = { 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1, 2.5 };

struct metrics {
    pthread_mutex_t mu;
    unsigned long requests[N_CODES];
    unsigned long prompt_tokens, cached_tokens, completion_tokens, generations;
    histogram ttft, tpot;
    int queued, active, slots;
    long kv_tokens, kv_capacity;
    size_t kv_bytes;
    frugal_prefix_cache_info prefixes;
};

metrics *metrics_new(void) {
    metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->ttft.le = ttft_le;
    m->tpot.le = tpot_le;
    return m;
}

void metrics_free(metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_count_request(metrics *m, int status) {
    if (status < 100 || status >= N_CODES) return;
    pthread_mutex_lock(&m->mu);
    m->requests[status]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_tokens(metrics *m, int prompt, int cached, int completion) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (unsigned long)prompt;
    m->cached_tokens += (unsigned long)cached;
    m->completion_tokens += (unsigned long)completion;
    m->generations++;
    pthread_mutex_unlock(&m->mu);
}

static void observe(metrics *m, histogram *h, double v) {
    int b = 0;
    while (b < N_BUCKETS && v > h->le[b]) b++;
    pthread_mutex_lock(&m->mu);
    h->count[b]++;
    h->sum += v;
    h->n++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_ttft(metrics *m, double s) { observe(m, &m->ttft, s); }
void metrics_observe_tpot(metrics *m, double s) { observe(m, &m->tpot, s); }

void metrics_set_state(metrics *m, int queued, int active, int slots, long kv_tokens, long kv_capacity) {
    pthread_mutex_lock(&m->mu);
    m->queued = queued;
    m->active = active;
    m->slots = slots;
    m->kv_tokens = kv_tokens;
    m->kv_capacity = kv_capacity;
    pthread_mutex_unlock(&m->mu);
}

void metrics_set_kv(metrics *m, size_t kv_bytes, const frugal_prefix_cache_info *prefixes) {
    pthread_mutex_lock(&m->mu);
    m->kv_bytes = kv_bytes;
    m->prefixes = *prefixes;
    pthread_mutex_unlock(&m->mu);
}

void metrics_get_state(metrics *m, int *queued, int *active) {
    pthread_mutex_lock(&m->mu);
    *queued = m->queued;
    *active = m->active;
    pthread_mutex_unlock(&m->mu);
}

/* A growing text buffer whose failure is sticky, so rendering needs one
 * check at the end instead of one per line. */
typedef struct { char *s; size_t len, cap; int failed; } text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) { t->failed = 1; return; }
        if ((size_t)n < t->cap - t->len) { t->len += (size_t)n; return; }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *s = realloc(t->s, cap);
        if (!s) { t->failed = 1; return; }
        t->s = s;
        t->cap = cap;
    }
}

static void header(text *t, const char *name, const char *type, const char *help) {
    add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_histogram(text *t, const char *name, const char *help, const histogram *h) {
    header(t, name, "histogram", help);
    unsigned long cum = 0;
    for (int b = 0; b < N_BUCKETS; b++) {
        cum += h->count[b];
        add(t, "%s_bucket{le=\"%g\"} %lu\n", name, h->le[b], cum);
    }
    add(t, "%s_bucket{le=\"+Inf\"} %lu\n%s_sum %.6f\n%s_count %lu\n", name, h->n, name, h->sum, name, h->n);
}

char *metrics_render(metrics *m, size_t *len) {
    text t = { malloc(4096), 0, 4096, 0 };
    if (!t.s) return NULL;
    pthread_mutex_lock(&m->mu);
    header(&t, "frugal_requests_total", "counter", "HTTP responses sent, by status code.");
    for (int c = 0; c < N_CODES; c++)
        if (m->requests[c]) add(&t, "frugal_requests_total{code=\"%d\"} %lu\n", c, m->requests[c]);
    header(&t, "frugal_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
    add(&t, "frugal_prompt_tokens_total %lu\n", m->prompt_tokens);
    header(&t, "frugal_prompt_tokens_cached_total", "counter",
           "Prompt tokens found in a slot's KV cache and not evaluated again.");
    add(&t, "frugal_prompt_tokens_cached_total %lu\n", m->cached_tokens);
    header(&t, "frugal_completion_tokens_total", "counter", "Generated tokens.");
    add(&t, "frugal_completion_tokens_total %lu\n", m->completion_tokens);
    header(&t, "frugal_generations_total", "counter", "Finished or cancelled generations.");
    add(&t, "frugal_generations_total %lu\n", m->generations);
    render_histogram(&t, "frugal_time_to_first_token_seconds",
                     "From accepting a request to its first generated token.", &m->ttft);
    render_histogram(&t, "frugal_time_per_output_token_seconds",
                     "Between consecutive generated tokens of one sequence.", &m->tpot);
    header(&t, "frugal_queue_length", "gauge", "Requests waiting for a free slot.");
    add(&t, "frugal_queue_length %d\n", m->queued);
    header(&t, "frugal_active_sequences", "gauge", "Slots prefilling or decoding a request.");
    add(&t, "frugal_active_sequences %d\n", m->active);
    header(&t, "frugal_slots", "gauge", "Slots (--parallel).");
    add(&t, "frugal_slots %d\n", m->slots);
    header(&t, "frugal_kv_cache_tokens", "gauge", "Tokens held in the KV caches of all slots.");
    add(&t, "frugal_kv_cache_tokens %ld\n", m->kv_tokens);
    header(&t, "frugal_kv_cache_capacity_tokens", "gauge", "Tokens the KV caches of all slots can hold.");
    add(&t, "frugal_kv_cache_capacity_tokens %ld\n", m->kv_capacity);
    header(&t, "frugal_kv_cache_bytes", "gauge", "Memory of the KV cache pages the slots hold (shared pages counted per slot).");
    add(&t, "frugal_kv_cache_bytes %zu\n", m->kv_bytes);
    header(&t, "frugal_prefix_cache_blocks", "gauge", "32-token blocks in the shared prefix cache.");
    add(&t, "frugal_prefix_cache_blocks %d\n", m->prefixes.blocks);
    header(&t, "frugal_prefix_cache_bytes", "gauge", "KV memory the shared prefix cache holds.");
    add(&t, "frugal_prefix_cache_bytes %zu\n", m->prefixes.bytes);
    header(&t, "frugal_prefix_cache_hits_total", "counter", "Requests that loaded a prefix from the shared cache.");
    add(&t, "frugal_prefix_cache_hits_total %lld\n", m->prefixes.hits);
    header(&t, "frugal_prefix_cache_tokens_total", "counter", "Prompt tokens loaded from the shared cache instead of computed.");
    add(&t, "frugal_prefix_cache_tokens_total %lld\n", m->prefixes.tokens_reused);
    pthread_mutex_unlock(&m->mu);
    if (t.failed) { free(t.s); return NULL; }
    *len = t.len;
    return t.s;
}
