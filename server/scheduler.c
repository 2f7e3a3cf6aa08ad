/*
 * scheduler.c - continuous batching over --parallel slots (see scheduler.h).
 *
 * One thread owns the model's contexts and runs a loop of steps. Between
 * steps, finished requests leave their slot and queued ones take a free
 * slot, so a short request never waits for a long one to end (that is
 * the "continuous" part). Each step:
 *
 *   (a) decode: every slot with its prompt done samples its next token.
 *   (b) prefill: slots still reading their prompt take the next chunk of
 *       it, at most PREFILL_BUDGET tokens per step over all slots, oldest
 *       request first. A long prompt thus takes several steps instead of
 *       stalling everyone's next token for its whole length.
 *   Then all of those tokens go through the model in ONE
 *   frugal_eval_runs call. Decoding one token is bound by reading the
 *   weights from memory; the batch reads them once for all slots, and
 *   decode tokens that share a step with a prompt chunk ride on its
 *   weight reads (Sarathi-Serve's "stall-free" batching).
 *
 * KV memory: each slot's context allocates its cache in pages of 32
 * tokens as it grows (kv.h), so nothing is reserved for the maximum
 * context of a request; -c only caps a sequence's length.
 *
 * Prefix reuse, two levels: a slot keeps its KV cache after a request
 * ends and remembers which tokens it holds, and the next request is given
 * the free slot with the longest common prefix (chat turns resend the
 * whole conversation). Across slots, a shared prefix cache
 * (frugal_prefix_cache) holds the complete 32-token blocks of every
 * prompt and reply by reference: a request whose prompt starts like an
 * earlier one on any slot (the same system prompt, a continued chat)
 * loads those blocks' pages instead of computing them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "scheduler.h"

/* Prompt tokens evaluated per step. 256 rather than 128 since prefill
 * runs on the AMX tiles: at concurrency 8, 512-token prompts, it measured
 * 4 % more output and a 10 % lower TTFT p99 (3.01-3.11 s vs 3.32-3.44 s)
 * with the same TPOT (bench/serve, interleaved). */
#define PREFILL_BUDGET 256
#define PIECE_CAP 1024      /* bytes of text one token can complete */
#define ECHO_CHUNK 32       /* prompt tokens a step when their logprobs are asked for (logits: 6 MB for 49k) */
#define KV_BYTES_PERIOD 0.5 /* seconds between refreshes of the KV bytes gauge while busy */

typedef struct {
    frugal_ctx *ctx;
    int32_t *cache;     /* the tokens in ctx's KV cache (n_ctx entries) */
    int n_cache;        /* == frugal_ctx_pos(ctx) */
    job *job;           /* NULL when the slot is free */
    int n_done;         /* prompt tokens in the cache; == n_prompt: decoding */
    int n_gen;
    char *gen;          /* all text the job generated (stop strings included) */
    size_t gen_len, gen_cap;
    size_t released;    /* bytes of gen handed to the job */
    double t_last;      /* when its previous token came */
    unsigned long serial; /* admission order: oldest-first prefill, LRU reuse */
} slot;

struct scheduler {
    frugal_model *model;
    frugal_prefix_cache *prefixes; /* NULL: --prefix-cache 0 */
    metrics *m;
    slot *slots;
    int n_slots, n_ctx, n_queue;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;  /* guards the fields below */
    pthread_cond_t wake; /* a job arrived or we are stopping */
    job **queue;         /* ring buffer of waiting jobs */
    int q_head, q_len, q_cap;
    int n_busy;          /* slots with a job */
    bool stopping;
    double deadline;     /* when stopping: running jobs are cancelled after this */
    double t_kv_bytes;   /* when the KV bytes gauge was last refreshed */
    unsigned long serial;
    /* this step's batch: run i is b_len[i] tokens of b_slot[i] (a prompt
     * chunk when b_prompt[i]), all runs' tokens in b_tok */
    frugal_ctx **b_ctx;
    int32_t *b_tok;
    slot **b_slot;
    int *b_len;
    bool *b_prompt;
    slot **order;        /* prefill order, reused every step */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- Jobs ---------------------------------------------------------------- */

job *job_new(void) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancelled, false);
    pthread_mutex_init(&j->mu, NULL);
    /* waits are timed against CLOCK_MONOTONIC: wall-clock jumps must not
     * stall or spin a waiting connection */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->changed, &ca);
    pthread_condattr_destroy(&ca);
    return j;
}

void job_release(job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    api_request_free(&j->req);
    free(j->prompt);
    frugal_sampler_free(j->smp);
    frugal_json_free(j->json);
    frugal_stream_free(j->stream);
    free(j->text);
    free(j->lp);
    free(j->plp);
    free(j->echo);
    free(j->echo_off);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->changed);
    free(j);
}

void job_wait(job *j, size_t have, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)timeout_ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&j->mu);
    while (j->len <= have && !j->done)
        if (pthread_cond_timedwait(&j->changed, &j->mu, &ts)) break;
    pthread_mutex_unlock(&j->mu);
}

/* Appends to the job's text under j->mu. */
static bool job_append(job *j, const char *s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = (j->len + n + 1) * 2;
        char *t = realloc(j->text, cap);
        if (!t) return false;
        j->text = t;
        j->cap = cap;
    }
    memcpy(j->text + j->len, s, n);
    j->len += n;
    j->text[j->len] = 0;
    return true;
}

/* Marks a job done (reason on success, else an error status and message)
 * and wakes its HTTP thread. */
static void job_finish(job *j, const char *reason, int status, const char *msg, int n_gen) {
    pthread_mutex_lock(&j->mu);
    j->done = true;
    j->finish_reason = reason;
    j->error_status = status;
    if (msg) snprintf(j->error, sizeof j->error, "%s", msg);
    j->n_gen = n_gen;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->mu);
}

/* ---- Slots --------------------------------------------------------------- */

static int common_prefix(const slot *sl, const job *j) {
    int n = 0, max = sl->n_cache < j->n_prompt ? sl->n_cache : j->n_prompt;
    while (n < max && sl->cache[n] == j->prompt[n]) n++;
    return n;
}

/* The most prompt tokens a request may find in a cache: the last ones are
 * evaluated, for their logits, and never as a run of one token (decoding's
 * arithmetic, frugal.h) unless the prompt is a single token, so that a
 * reply does not depend on whether the caches held its prompt. */
static int reusable(const job *j) { return j->n_prompt >= 2 ? j->n_prompt - 2 : 0; }

/* Whether the request wants the logprobs of its prompt's tokens (echo),
 * which need every prompt token's logits: see echo_chunk. */
static bool prompt_logprobs(const job *j) { return j->req.echo && j->req.logprobs; }

/* Puts job j on free slot sl: keeps the common prefix of the cache, up to
 * reusable(j) (nothing when the prompt's logprobs are asked for). */
static void slot_start(scheduler *s, slot *sl, job *j) {
    int keep = common_prefix(sl, j);
    if (keep > reusable(j)) keep = reusable(j);
    if (prompt_logprobs(j)) {
        keep = 0;
    } else if (frugal_prefix_cache_match(s->prefixes, j->prompt, j->n_prompt) > keep) {
        int loaded = frugal_prefix_cache_load(s->prefixes, sl->ctx, j->prompt, j->n_prompt);
        memcpy(sl->cache, j->prompt, (size_t)loaded * sizeof *j->prompt);
        keep = loaded < reusable(j) ? loaded : reusable(j);
    }
    frugal_ctx_rewind(sl->ctx, keep);
    sl->n_cache = frugal_ctx_pos(sl->ctx); /* sliding-window models may keep less */
    sl->n_done = sl->n_cache;
    sl->n_gen = 0;
    sl->gen_len = sl->released = 0;
    sl->job = j;
    sl->serial = ++s->serial;
    j->n_cached = sl->n_cache;
    /* the repetition penalty looks at the prompt too, as in frugal run */
    frugal_sampler_reset(j->smp);
    for (int i = 0; i < j->n_prompt; i++) frugal_sampler_accept(j->smp, j->prompt[i]);
}

/* The gauges of /metrics. The KV cache's bytes are a walk over every
 * page of every slot, too long to repeat after each decode step while
 * the compute threads wait: they are refreshed at most every
 * KV_BYTES_PERIOD seconds, and always when `all` (the server is idle). */
static void publish_state(scheduler *s, bool all) {
    long kv = 0;
    for (int i = 0; i < s->n_slots; i++) kv += s->slots[i].n_cache;
    pthread_mutex_lock(&s->mu);
    int queued = s->q_len, busy = s->n_busy;
    pthread_mutex_unlock(&s->mu);
    metrics_set_state(s->m, queued, busy, s->n_slots, kv, (long)s->n_slots * s->n_ctx);
    double t = now();
    if (!all && t - s->t_kv_bytes < KV_BYTES_PERIOD) return;
    s->t_kv_bytes = t;
    size_t kv_bytes = 0;
    for (int i = 0; i < s->n_slots; i++) kv_bytes += frugal_ctx_kv_bytes(s->slots[i].ctx);
    frugal_prefix_cache_info pi;
    frugal_prefix_cache_stats(s->prefixes, &pi);
    metrics_set_kv(s->m, kv_bytes, &pi);
}

/* The job leaves the slot: published as done, counted, released. The
 * slot's cache stays for the next request's prefix. */
static void slot_finish(scheduler *s, slot *sl, const char *reason, int status, const char *msg) {
    job *j = sl->job;
    if (!status) {
        pthread_mutex_lock(&j->mu);
        bool ok = job_append(j, sl->gen + sl->released, sl->gen_len - sl->released);
        pthread_mutex_unlock(&j->mu);
        if (!ok) { reason = NULL; status = 500; msg = "out of memory for the reply"; }
    }
    /* the reply's blocks too: the next chat turn starts with them */
    if (!status && s->prefixes) frugal_prefix_cache_put(s->prefixes, sl->ctx, sl->cache, sl->n_cache);
    /* metrics first: a client that has its reply sees it counted */
    metrics_count_tokens(s->m, j->n_prompt, j->n_cached, sl->n_gen);
    sl->job = NULL;
    pthread_mutex_lock(&s->mu);
    bool idle = --s->n_busy == 0;
    pthread_mutex_unlock(&s->mu);
    publish_state(s, idle);
    job_finish(j, reason, status, msg, sl->n_gen);
    job_release(j);
}

/* Where the text of the slot may be released up to. A stop string found
 * in the text ends the generation there (*stopped); otherwise the longest
 * tail that could still grow into a stop string is held back, so the
 * client never sees a piece of one. */
static size_t releasable(slot *sl, bool *stopped) {
    const api_request *r = &sl->job->req;
    size_t end = sl->gen_len, first = end, hold = 0;
    *stopped = false;
    for (int i = 0; i < r->n_stop; i++) {
        size_t n = r->stop_len[i];
        /* text before `released` has been searched: a new match ends after it */
        size_t from = sl->released >= n ? sl->released - n + 1 : 0;
        const char *p = memmem(sl->gen + from, end - from, r->stop[i], n);
        if (p && (size_t)(p - sl->gen) < first) { first = (size_t)(p - sl->gen); *stopped = true; }
        /* the tail that may begin a stop string lies in the text not yet
         * released: bounding k by the stop string's length alone would
         * cost every step of every slot a loop as long as the longest
         * stop string a client sent (megabytes, in a large body) */
        size_t unreleased = end - sl->released;
        for (size_t k = n - 1 < unreleased ? n - 1 : unreleased; k > hold && !*stopped; k--)
            if (!memcmp(sl->gen + end - k, r->stop[i], k)) hold = k;
    }
    if (first < sl->released) first = sl->released; /* cannot happen: such a tail was held back */
    if (*stopped) return sl->gen_len = first;
    return end - hold;
}

static bool gen_add(slot *sl, const char *s, size_t n) {
    if (sl->gen_len + n + 1 > sl->gen_cap) {
        size_t cap = (sl->gen_len + n + 1) * 2;
        char *g = realloc(sl->gen, cap);
        if (!g) return false;
        sl->gen = g;
        sl->gen_cap = cap;
    }
    memcpy(sl->gen + sl->gen_len, s, n);
    sl->gen_len += n;
    return true;
}

/* The log-probability of token tok under the logits l[0..n) and the
 * n_top most likely tokens (ties: the lower id first), into r. */
static void token_logprobs(const float *l, int n, int32_t tok, int n_top, lp_token *r) {
    float max = l[0];
    for (int i = 1; i < n; i++) max = l[i] > max ? l[i] : max;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)l[i] - max);
    float lse = (float)(max + log(sum));
    r->token = tok;
    r->logprob = l[tok] - lse;
    r->n_top = 0;
    for (int i = 0; i < n && n_top > 0; i++) { /* insertion into the short sorted list */
        if (r->n_top == n_top && !(l[i] > l[r->top[n_top - 1]])) continue;
        int k = r->n_top < n_top ? r->n_top++ : n_top - 1;
        for (; k > 0 && l[i] > l[r->top[k - 1]]; k--) r->top[k] = r->top[k - 1];
        r->top[k] = i;
    }
    for (int k = 0; k < r->n_top; k++) r->top_logprob[k] = l[r->top[k]] - lse;
}

/* Records the slot's new token's log-probabilities in its job. */
static bool add_logprobs(scheduler *s, slot *sl, int32_t tok) {
    job *j = sl->job;
    lp_token r;
    token_logprobs(frugal_logits(sl->ctx, -1), frugal_n_vocab(s->model), tok, j->req.top_logprobs, &r);
    r.scored = true;
    r.offset = sl->gen_len;
    pthread_mutex_lock(&j->mu);
    bool ok = j->n_lp < j->lp_cap;
    if (!ok) {
        int cap = j->lp_cap ? 2 * j->lp_cap : 64;
        lp_token *g = realloc(j->lp, (size_t)cap * sizeof *g);
        if ((ok = g != NULL)) j->lp = g, j->lp_cap = cap;
    }
    if (ok) j->lp[j->n_lp++] = r;
    pthread_mutex_unlock(&j->mu);
    return ok;
}

/* Handles a token sampled for the slot. Returns true when the request
 * goes on (the token must then be evaluated), false when it finished. */
static bool slot_token(scheduler *s, slot *sl, int32_t tok) {
    job *j = sl->job;
    double t = now();
    if (sl->n_gen == 0) metrics_observe_ttft(s->m, t - j->t_submit);
    else metrics_observe_tpot(s->m, t - sl->t_last);
    sl->t_last = t;
    char piece[PIECE_CAP];
    bool eog = frugal_token_is_eog(s->model, tok), stopped = false;
    /* JSON mode: the reply ends when the object closes; a token it
     * refuses (drawn only when no token could continue the object) ends
     * it as the end of generation would */
    if (j->json && !frugal_json_accept(j->json, tok)) eog = true;
    bool closed = j->json && frugal_json_done(j->json);
    int w = 0;
    if (!eog) {
        sl->n_gen++;
        w = frugal_stream_push(j->stream, tok, piece, sizeof piece);
    }
    /* at the end, the stream's pending bytes (a partial UTF-8 sequence)
     * are flushed as U+FFFD, and may complete a stop string */
    bool last = eog || closed || sl->n_gen >= j->max_tokens || frugal_ctx_pos(sl->ctx) >= s->n_ctx;
    if (last && w >= 0) {
        int f = frugal_stream_flush(j->stream, piece + w, sizeof piece - (size_t)w);
        w = f < 0 ? -1 : w + f;
    }
    if (!eog && j->req.logprobs && !add_logprobs(s, sl, tok)) {
        slot_finish(s, sl, NULL, 500, "out of memory for the logprobs");
        return false;
    }
    if (w < 0 || !gen_add(sl, piece, (size_t)w)) {
        slot_finish(s, sl, NULL, 500, "a token's text did not fit (out of memory?)");
        return false;
    }
    size_t upto = releasable(sl, &stopped);
    if (stopped || last) {
        slot_finish(s, sl, stopped || eog || closed ? "stop" : "length", 0, NULL);
        return false;
    }
    if (upto > sl->released) {
        pthread_mutex_lock(&j->mu);
        bool ok = job_append(j, sl->gen + sl->released, upto - sl->released);
        if (ok) pthread_cond_broadcast(&j->changed);
        pthread_mutex_unlock(&j->mu);
        if (!ok) { slot_finish(s, sl, NULL, 500, "out of memory for the reply"); return false; }
        sl->released = upto;
    }
    return true;
}

/* ---- The loop ------------------------------------------------------------ */

/* Adds a run of len tokens for slot sl to this step's batch. */
static void add_run(scheduler *s, int *n, int *n_tok, slot *sl, const int32_t *tokens, int len, bool prompt) {
    memcpy(s->b_tok + *n_tok, tokens, (size_t)len * sizeof *tokens);
    *n_tok += len;
    s->b_ctx[*n] = sl->ctx;
    s->b_slot[*n] = sl;
    s->b_len[*n] = len;
    s->b_prompt[(*n)++] = prompt;
}

/* The slot's prompt is all in its cache: shared with the prefix cache,
 * and, for echo, the prompt's part of the reply is ready. */
static void prompt_evaluated(scheduler *s, slot *sl) {
    job *j = sl->job;
    if (s->prefixes) frugal_prefix_cache_put(s->prefixes, sl->ctx, sl->cache, sl->n_cache);
    if (!j->req.echo) return;
    pthread_mutex_lock(&j->mu);
    j->prompt_done = true;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->mu);
}

/* (a) Every decoding slot samples its next token (a request for its
 * prompt alone, echo with max_tokens 0, ends instead). */
static void sample_next(scheduler *s, int *n, int *n_tok) {
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->job || sl->n_done < sl->job->n_prompt) continue;
        if (sl->job->max_tokens == 0) { slot_finish(s, sl, "length", 0, NULL); continue; }
        const float *logits = frugal_logits(sl->ctx, -1);
        if (!logits) { slot_finish(s, sl, NULL, 500, "no logits to sample from"); continue; }
        int32_t tok = frugal_sampler_sample(sl->job->smp, logits);
        frugal_sampler_accept(sl->job->smp, tok);
        if (!slot_token(s, sl, tok)) continue;
        sl->cache[sl->n_cache] = tok;
        add_run(s, n, n_tok, sl, &tok, 1, false);
    }
}

/* (b) The next prompt chunks, oldest request first, within the budget.
 * No chunk is one token, nor leaves one (a run of one token is decoded,
 * frugal.h), except a prompt of one token. */
static void next_chunks(scheduler *s, int *n, int *n_tok) {
    int m = 0;
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i].job && s->slots[i].n_done < s->slots[i].job->n_prompt && !prompt_logprobs(s->slots[i].job))
            s->order[m++] = &s->slots[i];
    for (int i = 1; i < m; i++) /* insertion sort by admission; m is tiny */
        for (int k = i; k > 0 && s->order[k - 1]->serial > s->order[k]->serial; k--) {
            slot *t = s->order[k];
            s->order[k] = s->order[k - 1];
            s->order[k - 1] = t;
        }
    int budget = frugal_ctx_batch(s->slots[0].ctx) - *n_tok;
    if (budget > PREFILL_BUDGET) budget = PREFILL_BUDGET;
    for (int i = 0; i < m && budget > 0; i++) {
        slot *sl = s->order[i];
        job *j = sl->job;
        int rest = j->n_prompt - sl->n_done, chunk = rest < budget ? rest : budget;
        if (rest - chunk == 1) chunk--;
        if (chunk < 2 && rest > 1) break; /* the next step has room */
        memcpy(sl->cache + sl->n_done, j->prompt + sl->n_done, (size_t)chunk * sizeof *j->prompt);
        add_run(s, n, n_tok, sl, j->prompt + sl->n_done, chunk, true);
        budget -= chunk;
    }
}

/* (c) A prompt whose tokens' logprobs are asked for (echo) is evaluated
 * on its own, ECHO_CHUNK tokens a step, keeping every token's logits:
 * those of token i score prompt token i + 1 (the first is scored by
 * nothing), those of the last one give the first reply token. Outside
 * the batch, since frugal_eval_runs keeps the logits of a run's last
 * token only; a rare request, and a chunk is a short pass. */
static void echo_chunk(scheduler *s, slot *sl) {
    job *j = sl->job;
    int rest = j->n_prompt - sl->n_done, chunk = rest < ECHO_CHUNK ? rest : ECHO_CHUNK, at = sl->n_done;
    if (rest - chunk == 1) chunk--; /* no run of one token, as in next_chunks */
    memcpy(sl->cache + at, j->prompt + at, (size_t)chunk * sizeof *j->prompt);
    if (frugal_eval(sl->ctx, j->prompt + at, chunk, true)) {
        char msg[160];
        snprintf(msg, sizeof msg, "evaluating the prompt failed: %s", frugal_last_error());
        slot_finish(s, sl, NULL, 500, msg);
        return;
    }
    /* (the HTTP side reads plp only once prompt_done is set, under mu) */
    if (at == 0) j->plp[j->n_plp++] = (lp_token){ .token = j->prompt[0], .offset = j->echo_off[0] };
    for (int i = 0; i < chunk && at + i + 1 < j->n_prompt; i++) {
        lp_token *r = &j->plp[j->n_plp++];
        token_logprobs(frugal_logits(sl->ctx, i), frugal_n_vocab(s->model), j->prompt[at + i + 1],
                       j->req.top_logprobs, r);
        r->scored = true;
        r->offset = j->echo_off[at + i + 1];
    }
    sl->n_done += chunk;
    sl->n_cache = frugal_ctx_pos(sl->ctx);
    if (sl->n_done == j->n_prompt) prompt_evaluated(s, sl);
}

/* One step: the decoding slots' new tokens and the prompt chunks go
 * through the model in ONE frugal_eval_runs call, so the decode tokens
 * ride on the weight reads of the prefill (and cost a fraction of a pass
 * of their own). Prompts to be scored (echo with logprobs) take their
 * chunk first, on their own (echo_chunk). */
static void step(scheduler *s) {
    int n = 0, n_tok = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->job && prompt_logprobs(sl->job) && sl->n_done < sl->job->n_prompt) echo_chunk(s, sl);
    }
    sample_next(s, &n, &n_tok);
    next_chunks(s, &n, &n_tok);
    if (!n) return;
    frugal_status st = frugal_eval_runs(s->b_ctx, s->b_tok, s->b_len, n);
    for (int i = 0; i < n; i++) {
        slot *sl = s->b_slot[i];
        sl->n_cache = frugal_ctx_pos(sl->ctx);
        if (st) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s failed: %s", s->b_prompt[i] ? "evaluating the prompt" : "decoding",
                     frugal_last_error());
            slot_finish(s, sl, NULL, 500, msg);
            continue;
        }
        if (!s->b_prompt[i]) continue;
        sl->n_done += s->b_len[i];
        if (sl->n_done == sl->job->n_prompt) prompt_evaluated(s, sl);
    }
}

static job *queue_pop(scheduler *s) {
    job *j = s->queue[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_len--;
    return j;
}

/* Under s->mu: takes the jobs whose client left out of the queue,
 * wherever they wait, keeping the others in order. Dropping only those
 * at its head would let the departed hold places behind a live job
 * until a slot frees, and new requests get 503 from a queue of ghosts. */
static void drop_cancelled(scheduler *s) {
    int kept = 0;
    for (int i = 0; i < s->q_len; i++) {
        job *j = s->queue[(s->q_head + i) % s->q_cap];
        if (atomic_load(&j->cancelled)) {
            job_finish(j, NULL, 499, "cancelled", 0);
            job_release(j);
        } else {
            s->queue[(s->q_head + kept++) % s->q_cap] = j;
        }
    }
    s->q_len = kept;
}

/* Under s->mu: gives waiting jobs the free slot with the longest common
 * prefix (ties: the least recently used, so hot caches survive). */
static void admit(scheduler *s) {
    drop_cancelled(s);
    while (s->q_len > 0) {
        job *j = s->queue[s->q_head];
        slot *best = NULL;
        int best_len = -1;
        for (int i = 0; i < s->n_slots; i++) {
            slot *sl = &s->slots[i];
            if (sl->job) continue;
            int len = common_prefix(sl, j);
            if (len > best_len || (len == best_len && sl->serial < best->serial)) { best = sl; best_len = len; }
        }
        if (!best) break;
        queue_pop(s);
        s->n_busy++;
        slot_start(s, best, j);
    }
}

static void *sched_main(void *arg) {
    scheduler *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stopping) {
            while (s->q_len > 0) {
                job *j = queue_pop(s);
                job_finish(j, NULL, 503, "the server is shutting down", 0);
                job_release(j);
            }
        } else {
            admit(s);
        }
        if (s->n_busy == 0) {
            if (s->stopping) break;
            pthread_mutex_unlock(&s->mu);
            publish_state(s, true);
            pthread_mutex_lock(&s->mu);
            if (s->q_len == 0 && !s->stopping) pthread_cond_wait(&s->wake, &s->mu);
            continue;
        }
        bool abort_all = s->stopping && now() >= s->deadline;
        pthread_mutex_unlock(&s->mu);
        /* requests whose client left, or all of them when out of time */
        for (int i = 0; i < s->n_slots; i++) {
            slot *sl = &s->slots[i];
            if (sl->job && abort_all) slot_finish(s, sl, NULL, 503, "the server is shutting down");
            else if (sl->job && atomic_load(&sl->job->cancelled)) slot_finish(s, sl, NULL, 499, "cancelled");
        }
        step(s);
        publish_state(s, false);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    publish_state(s, true);
    return NULL;
}

/* ---- Life cycle ---------------------------------------------------------- */

sched_submit_result sched_submit(scheduler *s, job *j) {
    pthread_mutex_lock(&s->mu);
    sched_submit_result r = SCHED_OK;
    /* free slots take jobs at once; beyond them, n_queue may wait (not
     * counting those whose client has left: the scheduler may not have
     * looked at the queue since, being busy with a step) */
    bool full = s->q_len >= s->n_slots - s->n_busy + s->n_queue;
    if (full && !s->stopping) {
        drop_cancelled(s);
        full = s->q_len >= s->n_slots - s->n_busy + s->n_queue;
    }
    if (s->stopping) r = SCHED_STOPPING;
    else if (full) r = SCHED_FULL;
    else {
        j->t_submit = now();
        atomic_fetch_add(&j->refs, 1);
        s->queue[(s->q_head + s->q_len) % s->q_cap] = j;
        s->q_len++;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

scheduler *sched_start(frugal_model *model, const sched_params *p, metrics *m, char *err, size_t errlen) {
    scheduler *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->model = model;
    s->m = m;
    s->n_slots = p->n_slots;
    s->n_ctx = p->n_ctx;
    s->n_queue = p->n_queue;
    s->q_cap = p->n_slots + p->n_queue;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->slots = calloc((size_t)s->n_slots, sizeof *s->slots);
    s->queue = calloc((size_t)s->q_cap, sizeof *s->queue);
    s->b_ctx = calloc((size_t)s->n_slots, sizeof *s->b_ctx);
    s->b_tok = calloc((size_t)s->n_slots + PREFILL_BUDGET, sizeof *s->b_tok);
    s->b_slot = calloc((size_t)s->n_slots, sizeof *s->b_slot);
    s->b_len = calloc((size_t)s->n_slots, sizeof *s->b_len);
    s->b_prompt = calloc((size_t)s->n_slots, sizeof *s->b_prompt);
    s->order = calloc((size_t)s->n_slots, sizeof *s->order);
    if (!s->slots || !s->queue || !s->b_ctx || !s->b_tok || !s->b_slot || !s->b_len || !s->b_prompt ||
        !s->order) {
        snprintf(err, errlen, "out of memory");
        sched_free(s);
        return NULL;
    }
    if (p->prefix_cache_bytes && frugal_prefix_cache_new(model, p->prefix_cache_bytes, &s->prefixes)) {
        snprintf(err, errlen, "creating the prefix cache: %s", frugal_last_error());
        sched_free(s);
        return NULL;
    }
    frugal_ctx_params cp = p->kv;
    cp.n_ctx = p->n_ctx;
    cp.n_threads = p->n_threads;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        /* one set of threads for all slots (one step computes at a time) */
        cp.share_threads = i > 0 ? s->slots[0].ctx : NULL;
        frugal_status st = frugal_ctx_new(model, &cp, &sl->ctx);
        if (!st && !(sl->cache = malloc((size_t)p->n_ctx * sizeof *sl->cache))) st = FRUGAL_ERR_NOMEM;
        if (st) {
            snprintf(err, errlen, "creating slot %d of %d: %s: %s", i + 1, s->n_slots, frugal_status_str(st),
                     frugal_last_error());
            sched_free(s);
            return NULL;
        }
    }
    publish_state(s, true);
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        snprintf(err, errlen, "cannot start the scheduler thread");
        sched_free(s);
        return NULL;
    }
    s->started = true;
    return s;
}

void sched_stop(scheduler *s, double grace_s) {
    if (!s || !s->started) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->deadline = now() + grace_s;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->started = false;
}

void sched_free(scheduler *s) {
    if (!s) return;
    sched_stop(s, 0);
    for (int i = s->n_slots - 1; s->slots && i >= 0; i--) { /* slot 0's threads last */
        frugal_ctx_free(s->slots[i].ctx);
        free(s->slots[i].cache);
        free(s->slots[i].gen);
    }
    free(s->slots);
    frugal_prefix_cache_free(s->prefixes);
    free(s->queue);
    free(s->b_ctx);
    free(s->b_tok);
    free(s->b_slot);
    free(s->b_len);
    free(s->b_prompt);
    free(s->order);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
}
