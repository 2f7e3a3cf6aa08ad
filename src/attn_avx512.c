/*
 * attn_avx512.c - a query block's attention over KV pages at the AVX-512
 * level (attn_block.h), in two shapes that give the same bits.
 *
 * Why two: the AVX2 kernels (attn_avx2.c) work one query row at a time,
 * and a row's dot with a key ends in a sum across lanes. In prefill a
 * block has up to 32 rows, so the rows go in the lanes instead ("lanes",
 * two vectors of 16): a key's scores for all rows are one chain of FMAs
 * of the rows' query values (the queries, transposed once per block) by
 * the key's values broadcast, each broadcast serving both vectors, and
 * the softmax, the mask and P.V are lane-wise as well; nothing is summed
 * across lanes. In decode a block has the 1-5 rows of one token (the
 * query heads of a KV head), so lanes of rows would be mostly empty:
 * there the keys go in the lanes ("rows": an fp16 page stores its keys
 * channel-major, kv.h, so they load straight into the lanes; a packed
 * page's key tile is transposed once per page).
 *
 * Both compute, for each row r, key k and dimension d, exactly:
 *   s = fma chain over d of q[d] k[d], from 0; s *= scale; masked: -inf
 *   m' = max(m, max_k s); z = m' or 0 when m' = -inf
 *   c = exp(m - z); p_k = exp(s_k - z)            (exp_neg16 below)
 *   l = l c + (sum of the page's 32 p_k, 0 for unwritten slots, by a fixed
 *       tree: pairs k, k + 16, then k, k + 8, k + 4, k + 2, k + 1)
 *   out[d] = out[d] c, then fma(p_k, v_k[d], out[d]) in key order
 * so a row's bits do not depend on the shape, the block or its lanes.
 * (At the AMX level a prompt's blocks take attn_amx.c instead.)
 */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include "attn_block.h"
#include "attn512.h"

#define LANES 16
#define ROWS FR_ATTN_BLOCK_ROWS  /* 32: two vectors of rows */
#define PAGE FR_KV_PAGE       /* 32 slots */
#define MAX_HD 512
#define LANES_MIN 6           /* blocks of at least this many rows use the lanes shape (decode has 1-5: the query heads of one KV head) */

/* The page's sum of p in the fixed order, from 32 vectors (lanes shape). */
static inline __m512 sum_tree(__m512 e[PAGE]) {
    for (int w = PAGE / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) e[k] = _mm512_add_ps(e[k], e[k + w]);
    return e[0];
}

typedef struct {
    fr_attn_block *b;
    int nv;                       /* vectors of rows: 1 or 2 */
    __m512 m[2], l[2];            /* the rows' state, 16 rows a vector */
    __m512i qpos[2], lo[2];
    int all_lo, all_qpos;         /* the latest window start and earliest position of the rows */
    float *qt;                    /* [hd][ROWS] the rows' queries, transposed */
    float *ot;                    /* [hd][ROWS] their outputs, transposed */
    float *s;                     /* [PAGE][ROWS] scores, then probabilities */
} lanes_state;

/* dst [hd][ROWS] = the rows' vectors src[r] (hd floats), transposed in
 * 16 x 16 blocks; the lanes of absent rows are 0. */
static inline void rows_to_lanes(float *dst, const float *const *src, int nr, int hd) {
    for (int r0 = 0; r0 < ROWS; r0 += 16)
        for (int d0 = 0; d0 < hd; d0 += 16) {
            __m512 x[16];
            for (int i = 0; i < 16; i++) x[i] = r0 + i < nr ? _mm512_loadu_ps(src[r0 + i] + d0) : _mm512_setzero_ps();
            transpose16(x);
            for (int i = 0; i < 16; i++) _mm512_store_ps(dst + (d0 + i) * ROWS + r0, x[i]);
        }
}

/* The rows' state into the lanes: spare lanes see nothing; with qt, the
 * queries transposed as well. */
static inline void lanes_begin(lanes_state *st, fr_attn_block *b, float *qt, float *ot, float *s) {
    const int nr = b->nr, hd = b->hd;
    *st = (lanes_state){ .b = b, .qt = qt, .ot = ot, .s = s, .nv = (nr + LANES - 1) / LANES,
                         .all_lo = INT32_MIN, .all_qpos = INT32_MAX };
    int32_t qp[ROWS], lo[ROWS];
    float m[ROWS], l[ROWS];
    for (int r = 0; r < ROWS; r++) {
        qp[r] = r < nr ? b->qpos[r] : -1;
        lo[r] = r < nr ? b->lo[r] : INT32_MAX;
        m[r] = r < nr ? b->m[r] : -INFINITY;
        l[r] = r < nr ? b->l[r] : 0;
        if (r < nr) {
            st->all_lo = b->lo[r] > st->all_lo ? b->lo[r] : st->all_lo;
            st->all_qpos = b->qpos[r] < st->all_qpos ? b->qpos[r] : st->all_qpos;
        }
    }
    if (qt) rows_to_lanes(qt, b->q, nr, hd);
    rows_to_lanes(ot, (const float *const *)b->out, nr, hd);
    for (int v = 0; v < 2; v++) {
        st->qpos[v] = _mm512_loadu_si512(qp + 16 * v);
        st->lo[v] = _mm512_loadu_si512(lo + 16 * v);
        st->m[v] = _mm512_loadu_ps(m + 16 * v);
        st->l[v] = _mm512_loadu_ps(l + 16 * v);
    }
}

/* The rows' state back out of the lanes. */
static inline void lanes_end(lanes_state *st) {
    fr_attn_block *b = st->b;
    float m[ROWS], l[ROWS];
    for (int v = 0; v < 2; v++) {
        _mm512_storeu_ps(m + 16 * v, st->m[v]);
        _mm512_storeu_ps(l + 16 * v, st->l[v]);
    }
    for (int r = 0; r < b->nr; r++) {
        b->m[r] = m[r];
        b->l[r] = l[r];
    }
    for (int r0 = 0; r0 < b->nr; r0 += 16)
        for (int d0 = 0; d0 < b->hd; d0 += 16) {
            __m512 x[16];
            for (int i = 0; i < 16; i++) x[i] = _mm512_load_ps(st->ot + (d0 + i) * ROWS + r0);
            transpose16(x);
            for (int i = 0; i < 16 && r0 + i < b->nr; i++) _mm512_storeu_ps(b->out[r0 + i] + d0, x[i]);
        }
}

/* The page's scores in st->s ([PAGE][ROWS], already scaled) become its
 * probabilities: masked, the running maximum moved, exponentials taken
 * (0 for slots past p->n), l updated; c[v] is the factor the outputs of
 * vector v must be rescaled by before this page's P.V is added. */
static ALWAYS_INLINE void lanes_softmax(lanes_state *st, const fr_kv_page *p, __m512 c[2], const int nv) {
    const int np = p->n;
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    float *s = st->s;
    /* a page every row sees whole needs no mask */
    bool whole = p->dense && p->pos[0] >= st->all_lo && p->pos[np - 1] <= st->all_qpos;
    for (int v = 0; v < nv; v++) {
        __m512 mt = ninf;
        for (int k = 0; k < np; k++) {
            __m512 sk = _mm512_load_ps(s + k * ROWS + 16 * v);
            if (!whole) {
                __mmask16 vis = (p->live >> k & 1) ? 0xffff : 0;
                __m512i pos = _mm512_set1_epi32(p->pos[k]);
                vis &= _mm512_cmp_epi32_mask(pos, st->lo[v], _MM_CMPINT_NLT) &
                       _mm512_cmp_epi32_mask(pos, st->qpos[v], _MM_CMPINT_LE);
                sk = _mm512_mask_mov_ps(ninf, vis, sk);
            }
            mt = _mm512_max_ps(mt, sk);
            _mm512_store_ps(s + k * ROWS + 16 * v, sk);
        }
        __m512 m_new = _mm512_max_ps(st->m[v], mt), z = finite_or_zero(m_new), e[PAGE];
        c[v] = exp_neg16(_mm512_sub_ps(st->m[v], z));
        for (int k = 0; k < PAGE; k++) {
            e[k] = k < np ? exp_neg16(_mm512_sub_ps(_mm512_load_ps(s + k * ROWS + 16 * v), z)) : _mm512_setzero_ps();
            _mm512_store_ps(s + k * ROWS + 16 * v, e[k]);
        }
        st->l[v] = _mm512_add_ps(_mm512_mul_ps(st->l[v], c[v]), sum_tree(e));
        st->m[v] = m_new;
    }
}

/* The same from the 32 values in two vectors (rows shape). */
static inline float sum_tree32(__m512 e0, __m512 e1) {
    __m512 t = _mm512_add_ps(e0, e1);
    __m256 u = _mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1));
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

/* ---- lanes: rows in the lanes ---------------------------------------------- */

/* Scores of 8 keys at a time for nv vectors of rows: each key value
 * broadcast once serves all the rows. Key k's channel d is kt[k ks + d kd]
 * (slot-major tiles: ks = hd, kd = 1; channel-major: ks = 1, kd = PAGE). */
static ALWAYS_INLINE void lanes_scores(const lanes_state *st, const float *kt, int ks, int kd, int hd, int np,
                                       const int nv) {
    const __m512 scale = _mm512_set1_ps(st->b->scale);
    for (int k0 = 0; k0 < np; k0 += 8) {
        __m512 acc[8][2];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
        for (int d = 0; d < hd; d++) {
            __m512 q0 = _mm512_load_ps(st->qt + d * ROWS), q1 = nv > 1 ? _mm512_load_ps(st->qt + d * ROWS + 16) : q0;
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                __m512 kv = _mm512_set1_ps(kt[(k0 + j) * ks + d * kd]);
                acc[j][0] = _mm512_fmadd_ps(q0, kv, acc[j][0]);
                if (nv > 1) acc[j][1] = _mm512_fmadd_ps(q1, kv, acc[j][1]);
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            for (int v = 0; v < nv; v++)
                _mm512_store_ps(st->s + (k0 + j) * ROWS + 16 * v, _mm512_mul_ps(acc[j][v], scale));
    }
}

/* out = out c + P.V, 8 output dimensions at a time for nv vectors of rows. */
static ALWAYS_INLINE void lanes_pv(lanes_state *st, const float *vt, int hd, int np, const __m512 c[2], const int nv) {
    for (int d0 = 0; d0 < hd; d0 += 8) {
        __m512 o[8][2];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            for (int v = 0; v < nv; v++) o[i][v] = _mm512_mul_ps(_mm512_load_ps(st->ot + (d0 + i) * ROWS + 16 * v), c[v]);
        for (int k = 0; k < np; k++) {
            __m512 e0 = _mm512_load_ps(st->s + k * ROWS), e1 = nv > 1 ? _mm512_load_ps(st->s + k * ROWS + 16) : e0;
            const float *vk = vt + k * hd + d0;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512 vv = _mm512_set1_ps(vk[i]);
                o[i][0] = _mm512_fmadd_ps(e0, vv, o[i][0]);
                if (nv > 1) o[i][1] = _mm512_fmadd_ps(e1, vv, o[i][1]);
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            for (int v = 0; v < nv; v++) _mm512_store_ps(st->ot + (d0 + i) * ROWS + 16 * v, o[i][v]);
    }
}

static ALWAYS_INLINE void lanes_page_nv(lanes_state *st, const fr_kv_page *p, const float *kt, bool kt_channels,
                                        const float *vt, const int nv) {
    const int hd = st->b->hd, np = p->n;
    if (kt_channels) lanes_scores(st, kt, 1, PAGE, hd, np, nv);
    else lanes_scores(st, kt, hd, 1, hd, np, nv);
    __m512 c[2];
    lanes_softmax(st, p, c, nv);
    lanes_pv(st, vt, hd, np, c, nv);
}

/* kt: the page's keys as floats, channel-major [hd][PAGE] (kt_channels)
 * or slot-major [PAGE][hd]; vt: its values [PAGE][hd]. */
static void lanes_page(lanes_state *st, const fr_kv_page *p, const float *kt, bool kt_channels, const float *vt) {
    if (st->nv == 2) lanes_page_nv(st, p, kt, kt_channels, vt, 2);
    else lanes_page_nv(st, p, kt, kt_channels, vt, 1);
}

/* ---- rows: a few rows, keys in the lanes -------------------------------------- */

/* Keys [PAGE][hd] -> ktt [hd][PAGE], 16 x 16 blocks in registers (a
 * packed page's tile; fp16 pages hold their keys channel-major already). */
static void transpose_keys(const float *kt, float *ktt, int hd, int np) {
    for (int s0 = 0; s0 < np; s0 += 16)
        for (int d0 = 0; d0 < hd; d0 += 16) {
            __m512 x[16];
            for (int i = 0; i < 16; i++) x[i] = _mm512_loadu_ps(kt + (s0 + i) * hd + d0);
            transpose16(x);
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(ktt + (d0 + i) * PAGE + s0, x[i]);
        }
}

/* What the rows shape reads of the next page while it computes this one
 * (rows_page): the key block (hd lines, channel d's 32 slots on line d)
 * and the values (v16 + k ld16, hd fp16 each). A decode's page takes
 * about as long to compute as to fetch: asked for all at once before the
 * page, the fetches fill the core's line buffers and the computation
 * waits behind them; spread over the page's loops, a line or two per
 * iteration, they overlap it. */
typedef struct { const uint8_t *k; const uint16_t *v16; } next_page;

/* The block's rows (fewer than LANES_MIN) against one page: their FMA
 * chains side by side, as many as rows x 2 key vectors for the scores and
 * rows x 4 output vectors for P.V, so that the chains' latencies overlap.
 * Keys channel-major [hd][PAGE], floats (ktt) or fp16 (k16); values
 * [np][hd] floats (vt) or fp16 rows ld16 apart (v16). */
#define FEW (LANES_MIN - 1)
static ALWAYS_INLINE void rows_page(fr_attn_block *b, const fr_kv_page *p, const float *ktt, const uint16_t *k16,
                                    const float *vt, const uint16_t *v16, size_t ld16, next_page nx) {
    const int hd = b->hd, np = p->n, nr = b->nr;
    const __m512 scale = _mm512_set1_ps(b->scale), ninf = _mm512_set1_ps(-INFINITY);
    __m512 a[FEW][2];
#pragma GCC unroll 5
    for (int r = 0; r < FEW; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
    if (np > 16)
        for (int d = 0; d < hd; d++) {
            if (nx.k) _mm_prefetch((const char *)nx.k + (size_t)d * 64, _MM_HINT_T0);
            __m512 k0 = k16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k16 + d * PAGE)))
                            : _mm512_load_ps(ktt + d * PAGE);
            __m512 k1 = k16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k16 + d * PAGE + 16)))
                            : _mm512_load_ps(ktt + d * PAGE + 16);
#pragma GCC unroll 5
            for (int r = 0; r < FEW; r++)
                if (r < nr) {
                    __m512 qd = _mm512_set1_ps(b->q[r][d]);
                    a[r][0] = _mm512_fmadd_ps(qd, k0, a[r][0]);
                    a[r][1] = _mm512_fmadd_ps(qd, k1, a[r][1]);
                }
        }
    else /* keys 16..31 unwritten (masked below) */
        for (int d = 0; d < hd; d++) {
            if (nx.k) _mm_prefetch((const char *)nx.k + (size_t)d * 64, _MM_HINT_T0);
            __m512 k0 = k16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k16 + d * PAGE)))
                            : _mm512_load_ps(ktt + d * PAGE);
#pragma GCC unroll 5
            for (int r = 0; r < FEW; r++)
                if (r < nr) a[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(b->q[r][d]), k0, a[r][0]);
        }
    float e[FEW][PAGE] __attribute__((aligned(64))), c[FEW] = { 0 };
#pragma GCC unroll 5
    for (int r = 0; r < FEW; r++) {
        if (r >= nr) break;
        __m512 s0 = _mm512_mask_mov_ps(ninf, visible16(p, 0, b->lo[r], b->qpos[r]), _mm512_mul_ps(a[r][0], scale));
        __m512 s1 = _mm512_mask_mov_ps(ninf, visible16(p, 16, b->lo[r], b->qpos[r]), _mm512_mul_ps(a[r][1], scale));
        float mt = _mm512_reduce_max_ps(_mm512_max_ps(s0, s1));
        float m_new = b->m[r] > mt ? b->m[r] : mt;
        __m512 z = finite_or_zero(_mm512_set1_ps(m_new));
        c[r] = _mm512_cvtss_f32(exp_neg16(_mm512_sub_ps(_mm512_set1_ps(b->m[r]), z)));
        _mm512_store_ps(e[r], exp_neg16(_mm512_sub_ps(s0, z)));
        _mm512_store_ps(e[r] + 16, exp_neg16(_mm512_sub_ps(s1, z)));
        /* unwritten slots are masked: their e is exactly 0 */
        b->l[r] = b->l[r] * c[r] + sum_tree32(_mm512_load_ps(e[r]), _mm512_load_ps(e[r] + 16));
        b->m[r] = m_new;
    }
    for (int d0 = 0; d0 < hd; d0 += 64) {
        const int nv = hd - d0 < 64 ? (hd - d0) / 16 : 4;
        __m512 o[FEW][4] = { { _mm512_setzero_ps() } };
#pragma GCC unroll 5
        for (int r = 0; r < FEW; r++)
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                if (r < nr && i < nv) o[r][i] = _mm512_mul_ps(_mm512_loadu_ps(b->out[r] + d0 + 16 * i), _mm512_set1_ps(c[r]));
        for (int k = 0; k < np; k++) {
            if (nx.v16) { /* the next page's values of this key and these 64 dimensions */
                _mm_prefetch((const char *)(nx.v16 + k * ld16 + d0), _MM_HINT_T0);
                if (nv > 2) _mm_prefetch((const char *)(nx.v16 + k * ld16 + d0 + 32), _MM_HINT_T0);
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                if (i >= nv) break;
                __m512 vi = v16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v16 + k * ld16 + d0 + 16 * i)))
                                : _mm512_load_ps(vt + k * hd + d0 + 16 * i); /* vt NULL for fp16 pages */
#pragma GCC unroll 5
                for (int r = 0; r < FEW; r++)
                    if (r < nr) o[r][i] = _mm512_fmadd_ps(_mm512_set1_ps(e[r][k]), vi, o[r][i]);
            }
        }
#pragma GCC unroll 5
        for (int r = 0; r < FEW; r++)
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                if (r < nr && i < nv) _mm512_storeu_ps(b->out[r] + d0 + 16 * i, o[r][i]);
    }
}

/* ---- the block --------------------------------------------------------------- */

void fr_attn_block_pages(fr_attn_block *b, const fr_kv_cache *kvc, fr_kv_page *const *pages, int p0, int p1,
                         int kvh) {
    const int hd = b->hd, nr = b->nr;
    const size_t ld = (size_t)hd; /* between the values of an fp16 page's slots */
    float kt[PAGE * MAX_HD] __attribute__((aligned(64))), vt[PAGE * MAX_HD] __attribute__((aligned(64)));
    float ktt[MAX_HD * PAGE] __attribute__((aligned(64)));
    float qt[MAX_HD * ROWS] __attribute__((aligned(64))), ot[MAX_HD * ROWS] __attribute__((aligned(64)));
    float s[PAGE * ROWS] __attribute__((aligned(64)));
    const bool lanes = nr >= LANES_MIN;
    int qmax = 0, lo_min = INT32_MAX;
    for (int r = 0; r < nr; r++) {
        qmax = b->qpos[r] > qmax ? b->qpos[r] : qmax;
        lo_min = b->lo[r] < lo_min ? b->lo[r] : lo_min;
    }
    lanes_state st = { 0 };
    if (lanes) lanes_begin(&st, b, qt, ot, s);
    for (int pi = p0; pi < p1; pi++) {
        const fr_kv_page *p = pages[pi];
        if (p->n == 0 || p->pos[p->n - 1] < lo_min) continue;
        if (p->pos[0] > qmax) break; /* positions ascend along the table */
        const int np = p->n;
        const uint16_t *k16 = p->packed ? NULL : fr_kv_f16_keys(p, kvh, hd);
        const uint16_t *v16 = p->packed ? NULL : fr_kv_f16_values(p, kvh, hd);
        if (!lanes) {
            /* decode reads the next page while it computes this one
             * (next_page); prefill computes long enough on each page that
             * reading ahead only stalls it (measured: pp256 at depth 512
             * +4 % without) */
            const fr_kv_page *q = pi + 1 < p1 ? pages[pi + 1] : NULL;
            next_page nx = { 0 };
            if (q && !q->packed) nx = (next_page){ (const uint8_t *)fr_kv_f16_keys(q, kvh, hd),
                                                   fr_kv_f16_values(q, kvh, hd) };
            else if (q) fr_kv_prefetch_head(kvc, q, kvh, hd);
            if (k16) { /* fp16 read in place */
                rows_page(b, p, NULL, k16, NULL, v16, ld, nx);
                continue;
            }
            fr_kv_load_head(kvc, p, kvh, hd, kt, vt, hd, NULL);
            /* unwritten slots up to the next 16 keys are read, and masked:
             * make them numbers */
            int read = (np + 15) / 16 * 16;
            if (np < read) memset(kt + (size_t)np * hd, 0, (size_t)(read - np) * hd * sizeof(float));
            transpose_keys(kt, ktt, hd, np);
            rows_page(b, p, ktt, NULL, vt, NULL, 0, nx);
            continue;
        }
        if (k16) { /* keys channel-major as they are stored, values row by row; 16 values a conversion */
            for (int d = 0; d < hd; d++)
                for (int s0 = 0; s0 < PAGE; s0 += 16)
                    _mm512_store_ps(ktt + d * PAGE + s0, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k16 + d * PAGE + s0))));
            for (int k = 0; k < np; k++)
                for (int d0 = 0; d0 < hd; d0 += 16)
                    _mm512_store_ps(vt + k * hd + d0, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v16 + k * ld + d0))));
            lanes_page(&st, p, ktt, true, vt);
            continue;
        }
        fr_kv_load_head(kvc, p, kvh, hd, kt, vt, hd, NULL);
        int read = (np + 7) / 8 * 8; /* unwritten slots up to the next 8 keys are read, and masked */
        if (np < read) memset(kt + (size_t)np * hd, 0, (size_t)(read - np) * hd * sizeof(float));
        lanes_page(&st, p, kt, false, vt);
    }
    if (lanes) lanes_end(&st);
}
