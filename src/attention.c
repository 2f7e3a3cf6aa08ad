/*
 * attention.c - attention over the KV cache, FlashAttention-2 style.
 *
 * Queries are grouped by the KV head they share (grouped-query attention);
 * a work item is a block of query rows of one KV head against a range of
 * key positions. Keys and values are visited in tiles of TILE positions:
 * a tile is converted from fp16 once and then used by every query row of
 * the block, and each row keeps a running maximum m, normaliser l and
 * unnormalised output (the online softmax), rescaled once per tile. No
 * [queries x keys] score matrix exists anywhere.
 *
 * Decode (one token) has too few query rows to keep every thread busy, so
 * at long contexts the key range is split between threads instead
 * (FlashDecoding's split-KV); each split leaves a partial (m, l, output)
 * and the splits are merged with the log-sum-exp rule.
 */
#include <math.h>
#include <string.h>
#include "ops.h"
#include "quant.h"

#define TILE 32          /* key positions per tile */
#define QBLOCK 16        /* query rows per work item */
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

static void pv_scalar(float *acc, float c, const float *e, const float *v, int v_stride, int np, int n) {
    for (int i = 0; i < n; i++) {
        float a = acc[i] * c;
        for (int p = 0; p < np; p++) a += e[p] * v[(size_t)p * v_stride + i];
        acc[i] = a;
    }
}

const fr_attn_kernels fr_attn_scalar = { f16_to_f32_scalar, f32_to_f16_scalar, dot_scalar, scale_add_scalar,
                                         exp_sub_scalar, pv_scalar };

static const fr_attn_kernels *kernels(void) {
    return fr_kernels_isa() >= FR_ISA_AVX2 ? &fr_attn_avx2 : &fr_attn_scalar;
}

void fr_kv_store(frugal_ctx *ctx, int layer, const float *k, const float *v, int n, int pos0) {
    const fr_hparams *hp = &ctx->model->hp;
    const fr_kv_layer *kv = &ctx->kv[layer];
    int kv_dim = hp->n_head_kv * hp->head_dim;
    const fr_attn_kernels *K = kernels();
    for (int t = 0; t < n; t++) {
        size_t slot = (size_t)((pos0 + t) % kv->cap) * kv_dim;
        K->f32_to_f16(k + (size_t)t * kv_dim, kv->k + slot, kv_dim);
        K->f32_to_f16(v + (size_t)t * kv_dim, kv->v + slot, kv_dim);
    }
}

/* ---- the tiled kernel ---- */

typedef struct {
    frugal_ctx *ctx;
    int layer, n, pos0;
    const float *q;
    float *out;
    int group;        /* query heads per KV head */
    int rows;         /* query rows per KV head = n * group */
    int n_qblocks;    /* per KV head */
    int n_splits;     /* key-range splits (decode only) */
    float *partial;   /* [n_splits][n_head][hd + 2] when n_splits > 1 */
} attn_job;

/* Running state of one query row. */
typedef struct { float m, l; float *acc; const float *q; int qpos; } row_state;

/* First key position a query at qpos may see. */
static int first_visible(int qpos, int window) { return window && qpos - window + 1 > 0 ? qpos - window + 1 : 0; }

/* Attends rows rs[0..nr) to key positions [k0, k1). */
static void attend_range(const attn_job *j, int kvh, row_state *rs, int nr, int k0, int k1) {
    const fr_hparams *hp = &j->ctx->model->hp;
    const fr_kv_layer *kv = &j->ctx->kv[j->layer];
    const fr_attn_kernels *K = kernels();
    int hd = hp->head_dim, kv_dim = hp->n_head_kv * hd;
    float kt[TILE][MAX_HD], vt[TILE][MAX_HD], s[TILE];
    for (int t0 = k0; t0 < k1; t0 += TILE) {
        int nt = FR_MIN(TILE, k1 - t0);
        for (int i = 0; i < nt; i++) {
            size_t slot = (size_t)((t0 + i) % kv->cap) * kv_dim + (size_t)kvh * hd;
            K->f16_to_f32(kv->k + slot, kt[i], hd);
            K->f16_to_f32(kv->v + slot, vt[i], hd);
        }
        for (int r = 0; r < nr; r++) {
            row_state *st = &rs[r];
            int lo = FR_MAX(t0, first_visible(st->qpos, kv->window)), hi = FR_MIN(t0 + nt, st->qpos + 1);
            if (lo >= hi) continue;
            float mt = -INFINITY;
            for (int p = lo; p < hi; p++) {
                s[p - t0] = K->dot(st->q, kt[p - t0], hd) * hp->attn_scale;
                mt = FR_MAX(mt, s[p - t0]);
            }
            float m_new = FR_MAX(st->m, mt), c = expf(st->m - m_new);
            st->l = st->l * c + K->exp_sub(s + lo - t0, m_new, hi - lo);
            K->pv(st->acc, c, s + lo - t0, vt[lo - t0], MAX_HD, hi - lo, hd);
            st->m = m_new;
        }
    }
}

/* Work item w: (KV head, query block, split). */
static void attention_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const fr_hparams *hp = &j->ctx->model->hp;
    const fr_kv_layer *kv = &j->ctx->kv[j->layer];
    int hd = hp->head_dim;
    int64_t items = (int64_t)hp->n_head_kv * j->n_qblocks * j->n_splits, lo, hi;
    fr_split(items, ith, nth, &lo, &hi);
    float acc[QBLOCK][MAX_HD];
    row_state rs[QBLOCK];
    for (int64_t w = lo; w < hi; w++) {
        int split = (int)(w % j->n_splits), qb = (int)(w / j->n_splits % j->n_qblocks);
        int kvh = (int)(w / j->n_splits / j->n_qblocks);
        int r0 = qb * QBLOCK, nr = FR_MIN(QBLOCK, j->rows - r0);
        int kmin = INT32_MAX, kmax = 0;
        for (int r = 0; r < nr; r++) {
            int t = (r0 + r) / j->group, h = kvh * j->group + (r0 + r) % j->group;
            rs[r] = (row_state){ -INFINITY, 0, acc[r], j->q + ((size_t)t * hp->n_head + h) * hd, j->pos0 + t };
            memset(acc[r], 0, (size_t)hd * sizeof(float));
            kmin = FR_MIN(kmin, first_visible(rs[r].qpos, kv->window));
            kmax = FR_MAX(kmax, rs[r].qpos + 1);
        }
        int64_t k0, k1;
        fr_split(kmax - kmin, split, j->n_splits, &k0, &k1);
        attend_range(j, kvh, rs, nr, kmin + (int)k0, kmin + (int)k1);
        for (int r = 0; r < nr; r++) {
            int t = (r0 + r) / j->group, h = kvh * j->group + (r0 + r) % j->group;
            if (j->n_splits == 1) {
                float *o = j->out + ((size_t)t * hp->n_head + h) * hd, inv = 1.0f / rs[r].l;
                for (int i = 0; i < hd; i++) o[i] = acc[r][i] * inv;
            } else {
                float *p = j->partial + ((size_t)split * hp->n_head + h) * (hd + 2);
                p[0] = rs[r].m;
                p[1] = rs[r].l;
                memcpy(p + 2, acc[r], (size_t)hd * sizeof(float));
            }
        }
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

void fr_attention(frugal_ctx *ctx, fr_pool *pool, int layer, const float *q, int n, int pos0, float *out) {
    const fr_hparams *hp = &ctx->model->hp;
    attn_job j = { .ctx = ctx, .layer = layer, .n = n, .pos0 = pos0, .q = q, .out = out };
    j.group = hp->n_head / hp->n_head_kv;
    j.rows = n * j.group;
    j.n_qblocks = (j.rows + QBLOCK - 1) / QBLOCK;
    j.n_splits = 1;
    int span = pos0 + 1 - first_visible(pos0, ctx->kv[layer].window);
    int nth = FR_MIN(fr_pool_size(pool), ctx->n_threads);
    if (n == 1 && nth > 1 && span >= SPLIT_MIN * 2) {
        j.n_splits = FR_MIN(nth * 2, span / SPLIT_MIN);
        j.partial = ctx->attn_partial;
    }
    fr_pool_run(pool, attention_worker, &j);
    if (j.n_splits > 1) merge_splits(&j);
}
