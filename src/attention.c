/*
 * attention.c - attention over the KV cache, FlashAttention-2 style.
 *
 * Queries are grouped by the KV head they share (grouped-query attention);
 * a work item is a block of query rows of one KV head against a range of
 * the layer's KV pages (kv.h). Each page is one tile: its slots of that
 * head are loaded as floats once (converted from fp16, or dequantized
 * from a compressed page, kv_codec.h) into L1-sized buffers and used by
 * every query row of the block; each row keeps a running maximum m,
 * normaliser l and unnormalised output (the online softmax), rescaled
 * once per tile. No [queries x keys] score matrix and no full-precision
 * copy of a compressed cache exist anywhere.
 *
 * A prompt's blocks go to the AMX tile unit where the CPU has it
 * (attn_amx.c, bf16 products), a decode's to the AVX-512 or AVX2 kernels
 * (fp32); which one depends on the run, never on the rest of the batch.
 *
 * Decode (one token) has too few query rows to keep every thread busy, so
 * at long contexts the page range is split between threads instead
 * (FlashDecoding's split-KV); each split leaves a partial (m, l, output)
 * and the splits are merged with the log-sum-exp rule.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "ops.h"
#include "quant.h"
#include "kv.h"
#include "attn_block.h"

#define QBLOCK FR_ATTN_BLOCK_ROWS /* query rows per work item */
#define SPLIT_MIN 256    /* positions per split below which decode is not split */
#define MAX_HD 512

/* ---- scalar primitives (the reference for attn_avx2.c) ---- */

static void f16_to_f32_scalar(const uint16_t *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = fr_fp16_to_fp32(x[i]);
}
static void f32_to_f16_scalar(const float *x, uint16_t *y, int n) {
    for (int i = 0; i < n; i++) y[i] = fr_fp32_to_fp16(x[i]);
}
static float dot_scalar(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static void scale_add_scalar(float *acc, float c, float p, const float *v, int n) {
    for (int i = 0; i < n; i++) acc[i] = acc[i] * c + p * v[i];
}

static float exp_sub_scalar(float *s, float m, int n) {
    float sum = 0;
    for (int i = 0; i < n; i++) sum += s[i] = expf(s[i] - m);
    return sum;
}

static void pv_scalar(float *const *acc, const float *c, const float *const *e, int nr, const float *v, int v_stride,
                      int np, int n) {
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < n; i++) {
            float a = acc[r][i] * c[r];
            for (int p = 0; p < np; p++) a += e[r][p] * v[(size_t)p * v_stride + i];
            acc[r][i] = a;
        }
}

static float dots_scalar(const float *q, const float *k, int k_stride, int np, int n, float scale, float *s) {
    float m = -INFINITY;
    for (int p = 0; p < np; p++) {
        s[p] = dot_scalar(q, k + (size_t)p * k_stride, n) * scale;
        m = FR_MAX(m, s[p]);
    }
    return m;
}

static void pv_h_scalar(float *const *acc, const float *c, const float *const *e, int nr, const uint16_t *v,
                        int v_stride, int np, int n, const uint16_t *ahead) {
    (void)ahead;
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < n; i++) {
            float a = acc[r][i] * c[r];
            for (int p = 0; p < np; p++) a += e[r][p] * fr_fp16_to_fp32(v[(size_t)p * v_stride + i]);
            acc[r][i] = a;
        }
}

static void dots_t_h_scalar(const float *const *q, int nr, const uint16_t *kt, int n, float scale, float *s,
                            const uint16_t *ahead) {
    (void)ahead;
    for (int r = 0; r < nr; r++)
        for (int p = 0; p < FR_KV_PAGE; p++) {
            float d = 0;
            for (int i = 0; i < n; i++) d += q[r][i] * fr_fp16_to_fp32(kt[(size_t)i * FR_KV_PAGE + p]);
            s[r * FR_KV_PAGE + p] = d * scale;
        }
}

const fr_attn_kernels fr_attn_scalar = { f16_to_f32_scalar, f32_to_f16_scalar, dot_scalar, scale_add_scalar,
                                         exp_sub_scalar, pv_scalar, dots_scalar,
                                         pv_h_scalar, dots_t_h_scalar };

static const fr_attn_kernels *kernels(void) {
    return fr_kernels_isa() >= FR_ISA_AVX2 ? &fr_attn_avx2 : &fr_attn_scalar;
}

/* ---- the tiled kernel ---- */

typedef struct {
    frugal_ctx *ctx;
    const fr_kv_layer *L;
    int n, pos0;
    const float *q;
    float *out;
    int group;        /* query heads per KV head */
    int rows;         /* query rows per KV head = n * group */
    int n_qblocks;    /* per KV head */
    int n_splits;     /* page-range splits (decode only) */
    float *partial;   /* [n_splits][n_head][hd + 2] when n_splits > 1 */
    float *scores;    /* scissorhands: the last token's raw scores, or NULL */
    bool all_heads;   /* decode in a batch: an item is all KV heads of a split (attend_heads) */
    bool prompt;      /* a prompt's rows (the AMX level gives them attn_amx.c's arithmetic) */
} attn_job;

/* Running state of one query row. */
typedef struct { float m, l; float *acc; const float *q; int qpos, head; bool last; } row_state;

/* First key position a query at qpos may see. */
static int first_visible(int qpos, int window) { return window && qpos - window + 1 > 0 ? qpos - window + 1 : 0; }

/* The maximum of x[0..n): four running maxima, not one chain of
 * compares each waiting on the last. */
static float max_of(const float *x, int n) {
    float m[4] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) m[k] = FR_MAX(m[k], x[i + k]);
    for (; i < n; i++) m[0] = FR_MAX(m[0], x[i]);
    return FR_MAX(FR_MAX(m[0], m[1]), FR_MAX(m[2], m[3]));
}

/* Scores of row st against slots [a, b) of a page in s: there already
 * (computed for all the block's rows at once: scored) or computed here
 * from its key tile kt; a slot the row may not see (evicted, outside its
 * window, in its future) scores -inf, which exp turns into an exact 0.
 * Returns the maximum. */
static float row_scores(const attn_job *j, const fr_kv_page *p, const row_state *st, const float *kt, bool scored,
                        float *s, int a, int b, bool masked) {
    const fr_hparams *hp = &j->ctx->model->hp;
    int hd = hp->head_dim, lo = first_visible(st->qpos, j->L->window);
    if (!masked)
        return scored ? max_of(s + a, b - a)
                      : kernels()->dots(st->q, kt + (size_t)a * hd, hd, b - a, hd, hp->attn_scale, s + a);
    if (!scored) kernels()->dots(st->q, kt + (size_t)a * hd, hd, b - a, hd, hp->attn_scale, s + a);
    for (int i = a; i < b; i++)
        if (!(p->live >> i & 1 && p->pos[i] >= lo && p->pos[i] <= st->qpos)) s[i] = -INFINITY;
    return max_of(s + a, b - a);
}

/* Buffers of one page and KV head as attend_pages uses them: tiles
 * packed at a stride of hd (rows 2 KiB apart would all fall in the same
 * few L1 sets and evict each other), and scores. */
typedef struct {
    float kt[FR_KV_PAGE * MAX_HD], vt[FR_KV_PAGE * MAX_HD], pre[QBLOCK * FR_KV_PAGE];
} page_tiles;

/* The rows of a page whose weights e for slots [a, b) are ready, waiting
 * for the values: rows side by side with the same visible run (a
 * decode's, all at one position; a prompt's on a page it sees whole) take
 * one pass, which loads (or converts) each value once for all of them; a
 * row's bits are the same either way. */
typedef struct {
    float *acc[QBLOCK];
    float c[QBLOCK];
    const float *e[QBLOCK];
    int a[QBLOCK], b[QBLOCK], n;
} value_rows;

/* Values of the rows d: from an fp16 page's as stored (v16, v16 != NULL;
 * ahead: the next page's, requested on the first pass) or from the tile vt. */
static void add_values(const fr_kv_cache *kvc, const value_rows *d, const uint16_t *v16, const uint16_t *ahead,
                       const float *vt, int hd) {
    for (int i = 0, m; i < d->n; i += m) {
        for (m = 1; i + m < d->n && d->a[i + m] == d->a[i] && d->b[i + m] == d->b[i];) m++;
        int np = d->b[i] - d->a[i];
        if (v16) {
            size_t a = (size_t)d->a[i] * hd;
            kernels()->pv_h(d->acc + i, d->c + i, d->e + i, m, v16 + a, hd, np, hd,
                            i == 0 && ahead ? ahead + a : NULL);
        } else {
            kernels()->pv(d->acc + i, d->c + i, d->e + i, m, vt + (size_t)d->a[i] * hd, hd, np, hd);
        }
    }
}

/* Rows rs[0..nr) of KV head kvh attend to page pi; ahead: the next page
 * when it is fp16, requested piece by piece as this one is read. */
static void attend_page_head(const attn_job *j, int pi, int kvh, row_state *rs, int nr, page_tiles *t,
                             const fr_kv_page *ahead) {
    const fr_hparams *hp = &j->ctx->model->hp;
    const fr_kv_cache *kvc = &j->ctx->kv;
    const fr_attn_kernels *K = kernels();
    const fr_kv_page *p = j->L->pages[pi];
    int hd = hp->head_dim;
    const float *qrows[QBLOCK];
    for (int r = 0; r < nr; r++) qrows[r] = rs[r].q;
    /* packed KIVI keys are scored from their codes, for all rows at once;
     * an fp16 page is read as it is stored (kv.h: keys channel-major),
     * converted as it is read, its keys for all rows at once; other pages
     * are loaded as tiles. (Converted once into tiles first, an fp16 page
     * was written and read again: slower even for a prompt's 32 rows, the
     * conversions on the FMAs' way being nearly free.) */
    bool fused = fr_kv_scores_fused(p), f16 = !p->packed;
    const uint16_t *v16 = f16 ? fr_kv_f16_values(p, kvh, hd) : NULL;
    const uint16_t *ahead_v = f16 && ahead ? fr_kv_f16_values(ahead, kvh, hd) : NULL;
    if (fused) fr_kv_key_scores(kvc, p, kvh, hd, qrows, nr, hp->attn_scale, t->pre);
    if (f16)
        K->dots_t_h(qrows, nr, fr_kv_f16_keys(p, kvh, hd), hd, hp->attn_scale, t->pre,
                    ahead ? fr_kv_f16_keys(ahead, kvh, hd) : NULL);
    else
        fr_kv_load_head(kvc, p, kvh, hd, fused ? NULL : t->kt, t->vt, hd, ahead);
    value_rows vr = { .n = 0 };
    for (int r = 0; r < nr; r++) {
        row_state *st = &rs[r];
        int lo = first_visible(st->qpos, j->L->window), a = 0, b = p->n;
        if (p->pos[0] > st->qpos || p->pos[p->n - 1] < lo) continue;
        if (p->dense) { /* visible slots are one run */
            a = FR_MAX(0, lo - p->pos[0]);
            b = FR_MIN(p->n, st->qpos - p->pos[0] + 1);
        }
        /* a row's scores are used in place: exp overwrites them, and they
         * wait there for the values (add_values) */
        float *s = t->pre + r * FR_KV_PAGE;
        float mt = row_scores(j, p, st, t->kt, fused || f16, s, a, b, !p->dense);
        if (mt == -INFINITY) continue;
        if (j->scores && st->last)
            memcpy(j->scores + (size_t)st->head * kvc->cap_slots + (size_t)pi * FR_KV_PAGE + a, s + a,
                   (size_t)(b - a) * sizeof *s);
        float m_new = FR_MAX(st->m, mt), c = m_new == st->m ? 1.0f : expf(st->m - m_new); /* expf(0) is 1 */
        st->l = st->l * c + K->exp_sub(s + a, m_new, b - a);
        vr.acc[vr.n] = st->acc, vr.c[vr.n] = c, vr.e[vr.n] = s + a, vr.a[vr.n] = a, vr.b[vr.n++] = b;
        st->m = m_new;
    }
    add_values(kvc, &vr, v16, ahead_v, t->vt, hd);
}

/* Attends rows rs[0..nr) to the layer's pages [p0, p1): nr / nh rows for
 * each of the KV heads kvh0 .. kvh0 + nh - 1, which take each page in
 * turn, so that a decode's heads together read a page once, front to
 * back. A row's arithmetic is that of its head alone. */
static void attend_pages(const attn_job *j, int kvh0, int nh, row_state *rs, int nr, int p0, int p1) {
    const fr_kv_cache *kvc = &j->ctx->kv;
    int hd = j->ctx->model->hp.head_dim, qmax = 0, lo_min = INT32_MAX, per_head = nr / nh;
    for (int r = 0; r < nr; r++) {
        qmax = FR_MAX(qmax, rs[r].qpos);
        lo_min = FR_MIN(lo_min, first_visible(rs[r].qpos, j->L->window));
    }
    page_tiles t;
    for (int pi = p0; pi < p1; pi++) {
        const fr_kv_page *p = j->L->pages[pi];
        if (p->n == 0 || p->pos[p->n - 1] < lo_min) continue;
        if (p->pos[0] > qmax) break; /* positions ascend along the table */
        /* The next page is requested ahead: a compressed one (small)
         * whole; an fp16 one piece by piece as the same piece of this one
         * is read, so it streams in at the pace this one is used (asked
         * for in a burst of a page, the loads that came after waited
         * behind it, and decode attention ran ~15 % slower) */
        const fr_kv_page *next = pi + 1 < p1 ? j->L->pages[pi + 1] : NULL;
        if (next && next->packed) {
            fr_kv_prefetch_head(kvc, next, kvh0, hd);
            next = NULL;
        }
        for (int h = 0; h < nh; h++) attend_page_head(j, pi, kvh0 + h, rs + h * per_head, per_head, &t, next);
    }
}

/* At the AVX-512 level, attn_avx512.c's block kernel, except where the
 * cache scores keys from packed codes (KIVI) or records the scores
 * (scissorhands), which attend_pages does. The choice depends only on the
 * cache, never on the batch. */
static bool use_block_kernel(const attn_job *j) {
    const fr_kv_cache *kvc = &j->ctx->kv;
    int hd = j->ctx->model->hp.head_dim;
    return fr_kernels_isa() >= FR_ISA_AVX512 && !j->scores && kvc->cfg.type != FR_KV_KIVI4 &&
           kvc->cfg.type != FR_KV_KIVI2 && hd % 16 == 0 && hd <= MAX_HD;
}

/* The block kernel's view of rows rs[0..nr). */
static void block_of(const attn_job *j, const row_state *rs, int nr, fr_attn_block *b) {
    const fr_hparams *hp = &j->ctx->model->hp;
    *b = (fr_attn_block){ .nr = nr, .hd = hp->head_dim, .scale = hp->attn_scale, .prompt = j->prompt };
    for (int r = 0; r < nr; r++) {
        b->q[r] = rs[r].q;
        b->qpos[r] = rs[r].qpos;
        b->lo[r] = first_visible(rs[r].qpos, j->L->window);
        b->out[r] = rs[r].acc;
        b->m[r] = rs[r].m;
        b->l[r] = rs[r].l;
    }
}

/* The block kernel for b: a prompt's rows on the tile unit where the level
 * has it (bf16 products, like the matmuls'), else the AVX-512 one. */
static void block_pages(const attn_job *j, fr_attn_block *b, int p0, int p1, int kvh) {
    int hd = b->hd;
    if (b->prompt && fr_kernels_isa() >= FR_ISA_AMX && hd % 32 == 0 && hd <= FR_ATTN_AMX_MAX_HD)
        fr_attn_block_pages_amx(b, &j->ctx->kv, j->L->pages, p0, p1, kvh);
    else
        fr_attn_block_pages(b, &j->ctx->kv, j->L->pages, p0, p1, kvh);
}

/* A decode's rows of all KV heads (row r = query head r) over pages
 * [p0, p1), each head with the arithmetic it has in an item of its own:
 * the block kernel's head after head, or attend_pages' heads page by
 * page. */
static void attend_heads(const attn_job *j, row_state *rs, int p0, int p1) {
    const fr_hparams *hp = &j->ctx->model->hp;
    const int g = j->group;
    if (!use_block_kernel(j)) {
        attend_pages(j, 0, hp->n_head_kv, rs, hp->n_head, p0, p1);
        return;
    }
    for (int kvh = 0; kvh < hp->n_head_kv; kvh++) {
        fr_attn_block b;
        block_of(j, rs + kvh * g, g, &b);
        block_pages(j, &b, p0, p1, kvh);
        for (int r = 0; r < g; r++) rs[kvh * g + r].m = b.m[r], rs[kvh * g + r].l = b.l[r];
    }
}

/* Work item w of job j: (KV head, query block, split), or with
 * all_heads (decode) the split alone. */
static void attend_item(const attn_job *j, int64_t w) {
    const fr_hparams *hp = &j->ctx->model->hp;
    int hd = hp->head_dim;
    /* outputs hd apart (MAX_HD apart, 2 KiB, a block's rows shared a few
     * L1 sets and evicted each other: ~1.2x on a prompt's attention) */
    _Alignas(64) float acc_rows[QBLOCK * MAX_HD];
    float *acc[QBLOCK];
    row_state rs[QBLOCK];
    int split = (int)(w % j->n_splits), qb = (int)(w / j->n_splits % j->n_qblocks);
    int kvh = j->all_heads ? 0 : (int)(w / j->n_splits / j->n_qblocks);
    int r0 = qb * QBLOCK, nr = j->all_heads ? hp->n_head : FR_MIN(QBLOCK, j->rows - r0);
    for (int r = 0; r < nr; r++) {
        int t = (r0 + r) / j->group, h = kvh * j->group + (r0 + r) % j->group;
        if (j->all_heads) t = 0, h = r;
        acc[r] = acc_rows + (size_t)r * hd;
        rs[r] = (row_state){ -INFINITY, 0, acc[r], j->q + ((size_t)t * hp->n_head + h) * hd, j->pos0 + t, h,
                             t == j->n - 1 };
        memset(acc[r], 0, (size_t)hd * sizeof(float));
    }
    int64_t p0, p1;
    fr_split(j->L->n_pages, split, j->n_splits, &p0, &p1);
    if (j->all_heads) {
        attend_heads(j, rs, (int)p0, (int)p1);
    } else if (use_block_kernel(j)) {
        fr_attn_block b;
        block_of(j, rs, nr, &b);
        block_pages(j, &b, (int)p0, (int)p1, kvh);
        for (int r = 0; r < nr; r++) rs[r].m = b.m[r], rs[r].l = b.l[r];
    } else {
        attend_pages(j, kvh, 1, rs, nr, (int)p0, (int)p1);
    }
    for (int r = 0; r < nr; r++) {
        int t = j->all_heads ? 0 : (r0 + r) / j->group, h = rs[r].head;
        if (j->n_splits == 1) {
            fr_scale(j->out + ((size_t)t * hp->n_head + h) * hd, acc[r], 1.0f / rs[r].l, hd);
        } else {
            float *p = j->partial + ((size_t)split * hp->n_head + h) * (hd + 2);
            p[0] = rs[r].m;
            p[1] = rs[r].l;
            memcpy(p + 2, acc[r], (size_t)hd * sizeof(float));
        }
    }
}

static int64_t job_items(const attn_job *j) {
    return (int64_t)(j->all_heads ? 1 : j->ctx->model->hp.n_head_kv) * j->n_qblocks * j->n_splits;
}

/* The work items of all sequences of a batch, numbered job after job: a
 * decode step of eight sequences is one pool run of 8 x n_head_kv items,
 * not eight runs of n_head_kv items each (too few to keep the threads
 * busy). Threads claim items one at a time: in a causal prefill a query
 * block's cost grows with its position, so fixed ranges leave one thread
 * waiting; each job's items are taken last first, the costly blocks
 * before the cheap ones. An item's result does not depend on which thread
 * computes it. */
typedef struct { const attn_job *jobs; int n_jobs; int64_t items; atomic_llong next; } attn_batch;

static void attention_worker(void *arg, int ith, int nth) {
    (void)ith, (void)nth;
    attn_batch *ab = arg;
    for (;;) {
        int64_t w = atomic_fetch_add_explicit(&ab->next, 1, memory_order_relaxed), base = 0;
        if (w >= ab->items) return;
        int i = 0;
        while (w >= base + job_items(&ab->jobs[i])) base += job_items(&ab->jobs[i++]);
        attend_item(&ab->jobs[i], base + job_items(&ab->jobs[i]) - 1 - w);
    }
}

/* Combines split partials: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s. */
static void merge_splits(const attn_job *j) {
    const fr_hparams *hp = &j->ctx->model->hp;
    int hd = hp->head_dim;
    for (int h = 0; h < hp->n_head; h++) {
        float M = -INFINITY, L = 0, *o = j->out + (size_t)h * hd;
        for (int s = 0; s < j->n_splits; s++) M = FR_MAX(M, j->partial[((size_t)s * hp->n_head + h) * (hd + 2)]);
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int s = 0; s < j->n_splits; s++) {
            const float *p = j->partial + ((size_t)s * hp->n_head + h) * (hd + 2);
            if (p[1] == 0) continue; /* an empty split */
            float c = expf(p[0] - M);
            L += c * p[1];
            for (int i = 0; i < hd; i++) o[i] += c * p[2 + i];
        }
        for (int i = 0; i < hd; i++) o[i] /= L;
    }
}

/* One sequence's job: n query rows at positions pos0... How a decode
 * (`decode`: n is 1, the sequence's only new token) is split depends only on the
 * sequence (its pages, its thread count), never on the rest of the batch,
 * so the result is the same alone and in any batch. Rows of a longer run
 * are never split, even one alone (the last layer's output row of a
 * prompt): they keep the arithmetic they have inside their block. */
static frugal_status job_init(attn_job *j, frugal_ctx *seq, int nth, int layer, const float *q, int n, int pos0,
                              float *out, bool decode, bool prompt) {
    const fr_hparams *hp = &seq->model->hp;
    fr_kv_cache *kvc = &seq->kv;
    *j = (attn_job){ .ctx = seq, .L = &kvc->layers[layer], .n = n, .pos0 = pos0, .q = q, .out = out, .prompt = prompt };
    j->group = hp->n_head / hp->n_head_kv;
    j->rows = n * j->group;
    j->n_qblocks = (j->rows + QBLOCK - 1) / QBLOCK;
    j->n_splits = 1;
    int pages = j->L->n_pages;
    nth = FR_MIN(nth, seq->n_threads);
    if (decode && nth > 1 && pages * FR_KV_PAGE >= SPLIT_MIN * 2) {
        j->n_splits = FR_MIN(nth * 2, pages * FR_KV_PAGE / SPLIT_MIN);
        j->partial = seq->attn_partial;
    }
    if (kvc->cfg.budget && kvc->cfg.policy == FR_KV_EVICT_SCISSORHANDS) {
        frugal_status st = fr_kv_prepare_scores(kvc, layer, hp->n_head);
        if (st) return st;
        j->scores = kvc->scores;
    }
    return FRUGAL_OK;
}

/* Decodes take an item per split for all their KV heads (attend_heads),
 * which reads each page once, front to back, when the batch has enough of
 * those to keep the threads busy (two each: a lone decode split four ways
 * on two threads, a batch of eight); else an item per head. Either way a
 * head's arithmetic is the same, so this depends on the batch without the
 * results doing so. */
static void group_heads(attn_job *jobs, int n_jobs, int nth) {
    int64_t items = 0;
    for (int i = 0; i < n_jobs; i++) items += jobs[i].n == 1 ? jobs[i].n_splits : 0;
    if (items < 2 * (int64_t)nth) return;
    for (int i = 0; i < n_jobs; i++) {
        const fr_hparams *hp = &jobs[i].ctx->model->hp;
        jobs[i].all_heads = jobs[i].n == 1 && hp->n_head <= QBLOCK;
    }
}

static void run_jobs(fr_pool *pool, attn_job *jobs, int n_jobs, int layer) {
    attn_batch ab = { .jobs = jobs, .n_jobs = n_jobs };
    atomic_init(&ab.next, 0);
    group_heads(jobs, n_jobs, fr_pool_size(pool));
    for (int i = 0; i < n_jobs; i++) ab.items += job_items(&jobs[i]);
    fr_pool_run(pool, attention_worker, &ab);
    for (int i = 0; i < n_jobs; i++) {
        if (jobs[i].n_splits > 1) merge_splits(&jobs[i]);
        if (jobs[i].scores) fr_kv_track(&jobs[i].ctx->kv, layer, jobs[i].ctx->model->hp.n_head);
    }
}

frugal_status fr_attention(frugal_ctx *ctx, fr_pool *pool, int layer, const float *q, int n, int pos0, float *out) {
    attn_job j;
    frugal_status st = job_init(&j, ctx, fr_pool_size(pool), layer, q, n, pos0, out, n == 1, n > 1);
    if (!st) run_jobs(pool, &j, 1, layer);
    return st;
}

frugal_status fr_attention_batch(frugal_ctx *ctx, const fr_batch *b, int layer, const float *q, const int *keep,
                                 float *out) {
    const fr_hparams *hp = &ctx->model->hp;
    size_t qd = (size_t)hp->n_head * hp->head_dim;
    attn_job jobs[FR_MAX_BATCH_SEQS];
    int n_jobs = 0;
    if (b->n_runs > FR_MAX_BATCH_SEQS) return fr_error(FRUGAL_ERR_INVALID_ARG, "too many sequences in a batch");
    for (int r = 0, t0 = 0, o = 0; r < b->n_runs; t0 += b->run_len[r], r++) {
        frugal_ctx *seq = b->seq[r];
        int len = b->run_len[r], k = keep ? keep[r] : len; /* the run's last k rows */
        if (k == 0) continue;
        frugal_status st = job_init(&jobs[n_jobs++], seq, fr_pool_size(ctx->pool), layer, q + (t0 + len - k) * qd,
                                    k, seq->pos + len - k, out + o * qd, len == 1 && !b->prompt,
                                    len > 1 || b->prompt);
        if (st) return st;
        o += k;
    }
    if (n_jobs) run_jobs(ctx->pool, jobs, n_jobs, layer);
    return FRUGAL_OK;
}
