/*
 * forward.c - the transformer forward pass, top to bottom.
 *
 * For a batch of n tokens at positions pos..pos+n-1:
 *   x = embedding rows * embd_scale
 *   per layer:
 *     a = norm(x);  q, k, v = Wq a, Wk a, Wv a
 *     [q, k = per-head norm(q), norm(k)]            QK-norm (Gemma 3)
 *     q, k = rope(q), rope(k)                      with the layer's base
 *     o = Wo attention(q, cache += (k, v))          causal, maybe windowed
 *     x += [post_norm](o)
 *     f = norm(x);  x += [post_norm](Wdown (act(Wgate f) * Wup f))
 *   logits = Wout norm(x)   (only for the rows asked for)
 * The bracketed steps run when the architecture has those weights.
 * Activations live in the workspace context's buffers (n_batch tokens).
 *
 * The batch is a list of runs: consecutive tokens of one sequence (a
 * context with its own KV cache and position). A prompt is one run; a
 * server decode step is one run per sequence. Everything but RoPE, the KV
 * cache and attention is per token, so the matmuls see the whole batch
 * and read each weight once for all sequences.
 *
 * The last layer computes in full only the rows whose logits are asked
 * for (a prompt's last token): the other rows need from it only their
 * keys and values, for the cache. Every row's arithmetic is the same in
 * any batch, so the logits keep their bits.
 */
#include <string.h>
#include <time.h>
#include "ops.h"
#include "quant.h"

/* Per-token work outside the matmuls and attention (RoPE, norms, residual
 * adds): for a prompt, split over the pool by rows; for a few tokens, on
 * the calling thread (no hand-off). */
#define PARALLEL_TOKENS 16

/* ---- profile (frugal_ctx_profile) ----------------------------------------
 * Each mark charges the time since the previous one to a part, with the
 * bytes and flops that part implies by its shapes. */

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void prof_mark(frugal_ctx *ctx, int part, double bytes, double flops) {
    fr_profile *p = ctx->prof;
    if (!p) return;
    double now = prof_now();
    p->part[part].seconds += now - p->last;
    p->part[part].bytes += bytes;
    p->part[part].flops += flops;
    p->part[part].calls++;
    p->last = now;
}

/* A product of n tokens with the matrices ws. */
static void prof_matmul(frugal_ctx *ctx, int part, const fr_weight *const *ws, int nw, int n) {
    if (!ctx->prof) return;
    double bytes = 0, flops = 0;
    for (int i = 0; i < nw; i++) {
        bytes += (double)ws[i]->rows * (double)ws[i]->row_bytes;
        flops += 2.0 * (double)ws[i]->rows * (double)ws[i]->cols * n;
    }
    prof_mark(ctx, part, bytes, flops);
}

/* Attention of layer l: every page of each sequence's layer is read once
 * a step; a row at context length c costs 2 * head_dim * c multiply-adds
 * per query head (scores and values). A run's rows see the layer's tokens
 * less those after them (an upper bound where a sliding window or a
 * budget hides some). */
static void prof_attention(frugal_ctx *ctx, const fr_batch *b, int l) {
    if (!ctx->prof) return;
    const fr_hparams *hp = &ctx->model->hp;
    double bytes = 0, flops = 0;
    for (int r = 0; r < b->n_runs; r++) {
        const fr_kv_layer *kl = &b->seq[r]->kv.layers[l];
        for (int i = 0; i < kl->n_pages; i++) bytes += (double)kl->pages[i]->bytes;
        double len = b->run_len[r];
        flops += 4.0 * hp->n_head * hp->head_dim * len * (kl->live - (len - 1) / 2);
    }
    prof_mark(ctx, FRUGAL_PART_ATTENTION, bytes, flops);
}

typedef void (*range_fn)(const void *arg, int64_t lo, int64_t hi);
typedef struct { range_fn fn; const void *arg; int64_t rows; } range_job;

static void range_worker(void *p, int ith, int nth) {
    const range_job *j = p;
    int64_t lo, hi;
    fr_split(j->rows, ith, nth, &lo, &hi);
    if (lo < hi) j->fn(j->arg, lo, hi);
}

static void over_rows(frugal_ctx *ctx, int tokens, int64_t rows, range_fn fn, const void *arg) {
    range_job j = { fn, arg, rows };
    if (tokens >= PARALLEL_TOKENS) fr_pool_run(ctx->pool, range_worker, &j);
    else fn(arg, 0, rows);
}

/* y = RMSNorm(y) * w in place, over rows of d values. */
typedef struct { float *y; const float *w; int d; float eps; } norm_job;

static void norm_range(const void *p, int64_t lo, int64_t hi) {
    const norm_job *j = p;
    fr_rmsnorm(j->y + lo * j->d, j->y + lo * j->d, j->w, (int)(hi - lo), j->d, j->eps);
}

static void norm_rows(frugal_ctx *ctx, float *y, const float *w, int rows, int d, int tokens) {
    norm_job j = { y, w, d, ctx->model->hp.norm_eps };
    over_rows(ctx, tokens, rows, norm_range, &j);
}

/* x += y for n tokens of d values. */
typedef struct { float *x; const float *y; int d; } residual_job;

static void residual_range(const void *p, int64_t lo, int64_t hi) {
    const residual_job *j = p;
    fr_add(j->x + lo * j->d, j->y + lo * j->d, (hi - lo) * j->d);
}

static void add_residual(frugal_ctx *ctx, float *x, const float *y, int n, int d) {
    residual_job j = { x, y, d };
    over_rows(ctx, n, n, residual_range, &j);
}

/* RoPE of tokens [lo, hi) of the batch: the cos/sin tables are per batch
 * token, so a range may cross runs. */
typedef struct { frugal_ctx *ctx; const fr_layer *L; } rope_job;

static void rope_range(const void *p, int64_t lo, int64_t hi) {
    const rope_job *j = p;
    const fr_hparams *hp = &j->ctx->model->hp;
    int hd = hp->head_dim;
    size_t qd = (size_t)hp->n_head * hd, kvd = (size_t)hp->n_head_kv * hd;
    const float *cs = j->ctx->rope_cs[j->L->rope_table] + (size_t)lo * hp->rope_dim;
    fr_rope(j->ctx->q + lo * qd, (int)(hi - lo), hp->n_head, hd, hp->rope_dim, cs, hp->rope_kind);
    fr_rope(j->ctx->k + lo * kvd, (int)(hi - lo), hp->n_head_kv, hd, hp->rope_dim, cs, hp->rope_kind);
}

/* RoPE at the sequences' positions (in parallel for a prompt), cache each
 * run's keys and values; then attention of all runs over their
 * sequences' caches together. */
static frugal_status attend_runs(frugal_ctx *ctx, const fr_batch *b, int l, int n, const int *keep) {
    const fr_hparams *hp = &ctx->model->hp;
    size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
    rope_job rj = { ctx, &ctx->model->layers[l] };
    over_rows(ctx, n, n, rope_range, &rj);
    for (int r = 0, t0 = 0; r < b->n_runs; t0 += b->run_len[r], r++) {
        frugal_ctx *seq = b->seq[r];
        int len = b->run_len[r];
        frugal_status st = fr_kv_append(&seq->kv, l, ctx->k + t0 * kvd, ctx->v + t0 * kvd, len, seq->pos);
        if (st) return st;
    }
    return fr_attention_batch(ctx, b, l, ctx->q, keep, ctx->att);
}

/* Moves the rows keep selects (run r's last keep[r]) to the front of x,
 * in order, with their prompt flags; a row only ever moves up. */
static void gather_rows(float *x, uint8_t *is_prompt, const fr_batch *b, const int *keep, int d) {
    for (int r = 0, t0 = 0, o = 0; r < b->n_runs; t0 += b->run_len[r], r++)
        for (int t = t0 + b->run_len[r] - keep[r]; t < t0 + b->run_len[r]; t++, o++)
            if (o != t) {
                memcpy(x + (size_t)o * d, x + (size_t)t * d, (size_t)d * sizeof(float));
                is_prompt[o] = is_prompt[t];
            }
}

/* The attention half of layer l for n rows; with keep (the last layer),
 * all n rows' keys and values are cached but only the n_keep rows keep
 * selects go on, moved to the front. */
static frugal_status attention_block(frugal_ctx *ctx, const fr_batch *b, int l, int n, const int *keep,
                                     int n_keep) {
    const fr_hparams *hp = &ctx->model->hp;
    const fr_layer *L = &ctx->model->layers[l];
    int d = hp->n_embd, hd = hp->head_dim;
    const fr_weight *w[3] = { &L->wq, &L->wk, &L->wv };
    float *y[3] = { ctx->q, ctx->k, ctx->v };
    fr_matmul_multi(ctx, w, y, 3, ctx->x, L->attn_norm.data, n);
    prof_matmul(ctx, FRUGAL_PART_QKV, w, 3, n);
    if (L->q_norm.data) norm_rows(ctx, ctx->q, L->q_norm.data, n * hp->n_head, hd, n);
    if (L->k_norm.data) norm_rows(ctx, ctx->k, L->k_norm.data, n * hp->n_head_kv, hd, n);
    frugal_status st = attend_runs(ctx, b, l, n, keep);
    if (st) return st;
    prof_attention(ctx, b, l);
    if (keep) {
        gather_rows(ctx->x, ctx->is_prompt, b, keep, d);
        n = n_keep;
    }
    if (n == 0) return FRUGAL_OK;
    fr_matmul(ctx, &L->wo, ctx->att, n, ctx->xb);
    prof_matmul(ctx, FRUGAL_PART_ATTN_OUT, (const fr_weight *[]){ &L->wo }, 1, n);
    if (L->post_attn_norm.data) norm_rows(ctx, ctx->xb, L->post_attn_norm.data, n, d, n);
    add_residual(ctx, ctx->x, ctx->xb, n, d);
    prof_mark(ctx, FRUGAL_PART_OTHER, 0, 0);
    return FRUGAL_OK;
}

static void ffn_block(frugal_ctx *ctx, int l, int n) {
    const fr_hparams *hp = &ctx->model->hp;
    const fr_layer *L = &ctx->model->layers[l];
    int d = hp->n_embd;
    if (n == 0) return;
    fr_matmul_glu(ctx, &L->w_gate, &L->w_up, ctx->x, L->ffn_norm.data, n, ctx->hb, ctx->hb2, hp->ffn_act);
    prof_matmul(ctx, FRUGAL_PART_FFN_UP, (const fr_weight *[]){ &L->w_gate, &L->w_up }, 2, n);
    fr_matmul(ctx, &L->w_down, ctx->hb, n, ctx->xb);
    prof_matmul(ctx, FRUGAL_PART_FFN_DOWN, (const fr_weight *[]){ &L->w_down }, 1, n);
    if (L->post_ffn_norm.data) norm_rows(ctx, ctx->xb, L->post_ffn_norm.data, n, d, n);
    add_residual(ctx, ctx->x, ctx->xb, n, d);
    prof_mark(ctx, FRUGAL_PART_OTHER, 0, 0);
}

/* The rows whose logits are asked for: the last n_out of the batch, or
 * with FR_OUT_RUN_LAST each run's last. keep[r]: how many of run r's last
 * rows; returns their total. A scissorhands cache scores its tokens by
 * the attention every row pays them, so there all rows are kept. */
static int output_rows(const fr_batch *b, int n, int n_out, int *keep) {
    for (int r = 0; r < b->n_runs; r++) {
        const fr_kv_config *cfg = &b->seq[r]->kv.cfg;
        if (cfg->budget && cfg->policy == FR_KV_EVICT_SCISSORHANDS) return n;
    }
    int total = 0, left = n_out;
    for (int r = b->n_runs - 1; r >= 0; r--) {
        keep[r] = n_out == FR_OUT_RUN_LAST ? 1 : FR_MIN(left, b->run_len[r]);
        left -= keep[r];
        total += keep[r];
    }
    return total;
}

frugal_status fr_forward(frugal_ctx *ctx, const fr_batch *b, const int32_t *tokens, int n, int n_out) {
    const frugal_model *m = ctx->model;
    const fr_hparams *hp = &m->hp;
    int d = hp->n_embd;
    if (ctx->prof) ctx->prof->last = prof_now();
    for (int t = 0; t < n; t++) {
        float *row = ctx->x + (size_t)t * d;
        fr_get_row(&m->tok_embd, tokens[t], row);
        if (hp->embd_scale != 1.0f)
            for (int i = 0; i < d; i++) row[i] *= hp->embd_scale;
    }
    /* the RoPE tables of this batch's positions, once per distinct base */
    for (int r = 0, t0 = 0; r < b->n_runs; t0 += b->run_len[r], r++)
        for (int k = 0; k < m->n_rope_bases; k++)
            for (int t = 0; t < b->run_len[r]; t++)
                fr_rope_table(ctx->rope_cs[k] + (size_t)(t0 + t) * hp->rope_dim, b->seq[r]->pos + t,
                              hp->rope_dim, m->rope_bases[k]);
    /* Prompt tokens and decoded tokens may take different arithmetic
     * (matmul.c; attention.c decides from the runs alike): which is which
     * depends only on the run, never on what shares the batch. */
    for (int r = 0, t0 = 0; r < b->n_runs; t0 += b->run_len[r], r++)
        memset(ctx->is_prompt + t0, b->prompt || b->run_len[r] > 1, (size_t)b->run_len[r]);
    ctx->prompt_rows = ctx->is_prompt;
    int keep[FR_MAX_BATCH_SEQS], n_keep = output_rows(b, n, n_out, keep);
    prof_mark(ctx, FRUGAL_PART_OTHER, 0, 0);
    for (int l = 0; l < hp->n_layer; l++) {
        bool prune = l == hp->n_layer - 1 && n_keep < n;
        frugal_status st = attention_block(ctx, b, l, n, prune ? keep : NULL, n_keep);
        if (st) {
            ctx->prompt_rows = NULL;
            return st;
        }
        if (prune) n = n_keep; /* the output rows, at the front in order */
        ffn_block(ctx, l, n);
    }
    if (n_out == FR_OUT_RUN_LAST) { /* each run's last row moves to row r (never above its own place) */
        for (int r = 0, end = 0; r < b->n_runs && n > b->n_runs; r++) {
            end += b->run_len[r];
            if (end - 1 != r) {
                memcpy(ctx->x + (size_t)r * d, ctx->x + (size_t)(end - 1) * d, (size_t)d * sizeof(float));
                ctx->is_prompt[r] = ctx->is_prompt[end - 1];
            }
        }
        n = n_out = b->n_runs;
    }
    if (n_out > 0) {
        float *xo = ctx->x + (size_t)(n - n_out) * d;
        fr_rmsnorm(xo, xo, m->output_norm.data, n_out, d, hp->norm_eps);
        ctx->prompt_rows = ctx->is_prompt + (n - n_out);
        prof_mark(ctx, FRUGAL_PART_OTHER, 0, 0);
        fr_matmul(ctx, &m->output, xo, n_out, ctx->logits);
        prof_matmul(ctx, FRUGAL_PART_OUTPUT, (const fr_weight *[]){ &m->output }, 1, n_out);
    }
    ctx->prompt_rows = NULL;
    return FRUGAL_OK;
}
