/*
 * attn_avx512.c - a query block's attention over KV pages at the AVX-512
 * level (attn_block.h), in two shapes that give the same bits.
 *
 * Why two: the AVX2 kernels (attn_avx2.c) work one query row at a time,
 * and a row's dot with a key ends in a sum across lanes. In prefill a
 * block has 16 rows, so the rows go in the 16 lanes instead ("lanes"):
 * a key's scores for all rows are one chain of FMAs of the rows' query
 * values (the queries, transposed once per block) by the key's values
 * broadcast, and the softmax, the mask and P.V are lane-wise as well;
 * nothing is summed across lanes. In decode a block has the 1-3 rows of
 * one token, so 16 lanes of rows would be mostly empty: there the keys
 * go in the lanes ("rows", the key tile transposed once per page).
 *
 * Both compute, for each row r, key k and dimension d, exactly:
 *   s = fma chain over d of q[d] k[d], from 0; s *= scale; masked: -inf
 *   m' = max(m, max_k s); z = m' or 0 when m' = -inf
 *   c = exp(m - z); p_k = exp(s_k - z)            (exp_neg16 below)
 *   l = l c + (sum of the page's 32 p_k, 0 for unwritten slots, by a fixed
 *       tree: pairs k, k + 16, then k, k + 8, k + 4, k + 2, k + 1)
 *   out[d] = out[d] c, then fma(p_k, v_k[d], out[d]) in key order
 * so a row's bits do not depend on the shape, the block or its lanes.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "attn_block.h"

#define LANES 16
#define PAGE FR_KV_PAGE       /* 32 slots */
#define MAX_HD 512
#define LANES_MIN 6           /* blocks of at least this many rows use the lanes shape (decode has 1-5: the query heads of one KV head) */
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* e^x for x <= 0 (lanes below -87 give 0), as attn_avx2.c's exp_neg:
 * x = k ln2 + g, Cody-Waite, a degree-6 Taylor polynomial of e^g. */
static inline __m512 exp_neg16(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f), ln2_lo = _mm512_set1_ps(1.42860682030941723e-6f);
    __mmask16 valid = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 g = _mm512_fnmadd_ps(k, ln2_hi, x);
    g = _mm512_fnmadd_ps(k, ln2_lo, g);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mov_ps(valid, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}

/* The subtrahend of the exponentials: the new maximum, or 0 where it is
 * -inf (nothing seen yet), so that exp gives 0 rather than NaN. */
static inline __m512 finite_or_zero(__m512 m) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ), m);
}

/* Lanes of keys [k0, k0 + 16) that row (lo, qpos) sees: written, live, in
 * its window and not in its future. */
static inline __mmask16 visible16(const fr_kv_page *p, int k0, int lo, int qpos) {
    __mmask16 m = (__mmask16)(p->live >> k0);
    if (p->n - k0 < LANES) m &= (__mmask16)((1u << (p->n > k0 ? p->n - k0 : 0)) - 1);
    __m512i pos = _mm512_loadu_si512(p->pos + k0);
    m &= _mm512_cmp_epi32_mask(pos, _mm512_set1_epi32(lo), _MM_CMPINT_NLT);
    m &= _mm512_cmp_epi32_mask(pos, _mm512_set1_epi32(qpos), _MM_CMPINT_LE);
    return m;
}

/* The page's sum of p in the fixed order, from 32 vectors (lanes shape). */
static inline __m512 sum_tree(__m512 e[PAGE]) {
    for (int w = PAGE / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) e[k] = _mm512_add_ps(e[k], e[k + w]);
    return e[0];
}

/* The same from the 32 values in two vectors (rows shape). */
static inline float sum_tree32(__m512 e0, __m512 e1) {
    __m512 t = _mm512_add_ps(e0, e1);
    __m256 u = _mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1));
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

typedef struct {
    fr_attn_block *b;
    __m512 m, l;                  /* lanes shape: the rows' state */
    __m512i qpos, lo;
    int all_lo, all_qpos;         /* the latest window start and earliest position of the rows */
    float *qt;                    /* [hd][16] the rows' queries, transposed */
    float *ot;                    /* [hd][16] their outputs, transposed */
    float *s;                     /* [PAGE][16] scores, then probabilities */
} lanes_state;

/* ---- lanes: rows in the lanes ---------------------------------------------- */

static void lanes_page(lanes_state *st, const fr_kv_page *p, const float *kt, const float *vt) {
    const fr_attn_block *b = st->b;
    const int hd = b->hd, np = p->n;
    const __m512 scale = _mm512_set1_ps(b->scale), ninf = _mm512_set1_ps(-INFINITY);
    float *s = st->s;
    for (int k0 = 0; k0 < np; k0 += 8) { /* 8 keys' FMA chains side by side */
        __m512 acc[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
        for (int d = 0; d < hd; d++) {
            __m512 q = _mm512_load_ps(st->qt + d * LANES);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) acc[j] = _mm512_fmadd_ps(q, _mm512_set1_ps(kt[(k0 + j) * hd + d]), acc[j]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) _mm512_store_ps(s + (k0 + j) * LANES, _mm512_mul_ps(acc[j], scale));
    }
    /* a page every row sees whole needs no mask */
    bool whole = p->dense && p->pos[0] >= st->all_lo && p->pos[np - 1] <= st->all_qpos;
    __m512 mt = ninf;
    for (int k = 0; k < np; k++) {
        __m512 sk = _mm512_load_ps(s + k * LANES);
        if (!whole) {
            __mmask16 vis = (p->live >> k & 1) ? 0xffff : 0;
            __m512i pos = _mm512_set1_epi32(p->pos[k]);
            vis &= _mm512_cmp_epi32_mask(pos, st->lo, _MM_CMPINT_NLT) & _mm512_cmp_epi32_mask(pos, st->qpos, _MM_CMPINT_LE);
            sk = _mm512_mask_mov_ps(ninf, vis, sk);
            _mm512_store_ps(s + k * LANES, sk);
        }
        mt = _mm512_max_ps(mt, sk);
    }
    __m512 m_new = _mm512_max_ps(st->m, mt), z = finite_or_zero(m_new);
    __m512 c = exp_neg16(_mm512_sub_ps(st->m, z)), e[PAGE];
    for (int k = 0; k < PAGE; k++) {
        e[k] = k < np ? exp_neg16(_mm512_sub_ps(_mm512_load_ps(s + k * LANES), z)) : _mm512_setzero_ps();
        _mm512_store_ps(s + k * LANES, e[k]);
    }
    st->l = _mm512_add_ps(_mm512_mul_ps(st->l, c), sum_tree(e));
    st->m = m_new;
    for (int d0 = 0; d0 < hd; d0 += 16) {
        __m512 o[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) o[i] = _mm512_mul_ps(_mm512_load_ps(st->ot + (d0 + i) * LANES), c);
        for (int k = 0; k < np; k++) {
            __m512 e = _mm512_load_ps(s + k * LANES);
            const float *v = vt + k * hd + d0;
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) o[i] = _mm512_fmadd_ps(e, _mm512_set1_ps(v[i]), o[i]);
        }
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) _mm512_store_ps(st->ot + (d0 + i) * LANES, o[i]);
    }
}

/* ---- rows: a few rows, keys in the lanes -------------------------------------- */

/* Keys [PAGE][hd] -> ktt [hd][PAGE], 16 x 16 blocks in registers; the
 * keys are floats at kt (row stride hd), or fp16 at k16 (row stride
 * ld16), converted on the way (exactly). */
static ALWAYS_INLINE void transpose_keys(const float *kt, const uint16_t *k16, size_t ld16, float *ktt, int hd,
                                         int np) {
    for (int s0 = 0; s0 < np; s0 += 16)
        for (int d0 = 0; d0 < hd; d0 += 16) {
            __m512 x[16], t[16];
            for (int i = 0; i < 16; i++)
                x[i] = k16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k16 + (s0 + i) * ld16 + d0)))
                           : _mm512_loadu_ps(kt + (s0 + i) * hd + d0);
            for (int i = 0; i < 16; i += 2) {
                t[i] = _mm512_unpacklo_ps(x[i], x[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(x[i], x[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) {
                x[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
                x[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
                x[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                x[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
            }
            /* x[4a + j], lane 4L + i: element (row 4a + i, column 4L + j) */
            for (int j = 0; j < 4; j++) {
                __m512 a0 = _mm512_shuffle_f32x4(x[j], x[4 + j], 0x88), a1 = _mm512_shuffle_f32x4(x[8 + j], x[12 + j], 0x88);
                __m512 b0 = _mm512_shuffle_f32x4(x[j], x[4 + j], 0xdd), b1 = _mm512_shuffle_f32x4(x[8 + j], x[12 + j], 0xdd);
                t[j] = _mm512_shuffle_f32x4(a0, a1, 0x88);
                t[8 + j] = _mm512_shuffle_f32x4(a0, a1, 0xdd);
                t[4 + j] = _mm512_shuffle_f32x4(b0, b1, 0x88);
                t[12 + j] = _mm512_shuffle_f32x4(b0, b1, 0xdd);
            }
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(ktt + (d0 + i) * PAGE + s0, t[i]);
        }
}

/* The block's rows (fewer than LANES_MIN) against one page: their FMA
 * chains side by side, as many as rows x 2 key vectors for the scores and
 * rows x 4 output vectors for P.V, so that the chains' latencies overlap. */
#define FEW (LANES_MIN - 1)
static ALWAYS_INLINE void rows_page(fr_attn_block *b, const fr_kv_page *p, const float *ktt, const float *vt,
                                    const uint16_t *v16, size_t ld16) {
    const int hd = b->hd, np = p->n, nr = b->nr;
    const __m512 scale = _mm512_set1_ps(b->scale), ninf = _mm512_set1_ps(-INFINITY);
    __m512 a[FEW][2];
#pragma GCC unroll 5
    for (int r = 0; r < FEW; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
    if (np > 16)
        for (int d = 0; d < hd; d++) {
            __m512 k0 = _mm512_load_ps(ktt + d * PAGE), k1 = _mm512_load_ps(ktt + d * PAGE + 16);
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
            __m512 k0 = _mm512_load_ps(ktt + d * PAGE);
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
            const float *v = vt + k * hd + d0;
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                if (i >= nv) break;
                __m512 vi = v16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v16 + k * ld16 + d0 + 16 * i)))
                                : _mm512_load_ps(v + 16 * i);
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
    float kt[PAGE * MAX_HD] __attribute__((aligned(64))), vt[PAGE * MAX_HD] __attribute__((aligned(64)));
    float ktt[MAX_HD * PAGE] __attribute__((aligned(64)));
    float qt[MAX_HD * LANES] __attribute__((aligned(64))), ot[MAX_HD * LANES] __attribute__((aligned(64)));
    float s[PAGE * LANES] __attribute__((aligned(64)));
    const bool lanes = nr >= LANES_MIN;
    int qmax = 0, lo_min = INT32_MAX, all_lo = INT32_MIN, all_qpos = INT32_MAX;
    for (int r = 0; r < nr; r++) {
        qmax = b->qpos[r] > qmax ? b->qpos[r] : qmax;
        lo_min = b->lo[r] < lo_min ? b->lo[r] : lo_min;
        all_lo = b->lo[r] > all_lo ? b->lo[r] : all_lo;
        all_qpos = b->qpos[r] < all_qpos ? b->qpos[r] : all_qpos;
    }
    lanes_state st = { .b = b, .qt = qt, .ot = ot, .s = s, .all_lo = all_lo, .all_qpos = all_qpos };
    if (lanes) {
        int32_t qp[LANES], lo[LANES];
        float m[LANES], l[LANES];
        for (int r = 0; r < LANES; r++) { /* spare lanes see nothing */
            qp[r] = r < nr ? b->qpos[r] : -1;
            lo[r] = r < nr ? b->lo[r] : INT32_MAX;
            m[r] = r < nr ? b->m[r] : -INFINITY;
            l[r] = r < nr ? b->l[r] : 0;
            for (int d = 0; d < hd; d++) {
                qt[d * LANES + r] = r < nr ? b->q[r][d] : 0;
                ot[d * LANES + r] = r < nr ? b->out[r][d] : 0;
            }
        }
        st.qpos = _mm512_loadu_si512(qp);
        st.lo = _mm512_loadu_si512(lo);
        st.m = _mm512_loadu_ps(m);
        st.l = _mm512_loadu_ps(l);
    }
    for (int pi = p0; pi < p1; pi++) {
        const fr_kv_page *p = pages[pi];
        if (p->n == 0 || p->pos[p->n - 1] < lo_min) continue;
        if (p->pos[0] > qmax) break; /* positions ascend along the table */
        if (pi + 1 < p1) fr_kv_prefetch_head(kvc, pages[pi + 1], kvh, hd);
        int np = p->n;
        if (!lanes && !p->packed) { /* fp16 read in place: no float copy of the page */
            const uint16_t *k16 = (const uint16_t *)p->k + (size_t)kvh * hd, *v16 = (const uint16_t *)p->v + (size_t)kvh * hd;
            transpose_keys(NULL, k16, (size_t)kvc->kv_dim, ktt, hd, np);
            rows_page(b, p, ktt, NULL, v16, (size_t)kvc->kv_dim);
            continue;
        }
        fr_kv_load_head(kvc, p, kvh, hd, kt, vt, hd);
        /* unwritten slots up to the next 8 (lanes) or 16 (rows) keys are
         * read, and masked: make them numbers */
        int read = lanes ? (np + 7) / 8 * 8 : (np + 15) / 16 * 16;
        if (np < read) memset(kt + (size_t)np * hd, 0, (size_t)(read - np) * hd * sizeof(float));
        if (lanes) {
            lanes_page(&st, p, kt, vt);
        } else {
            transpose_keys(kt, NULL, 0, ktt, hd, np);
            rows_page(b, p, ktt, vt, NULL, 0);
        }
    }
    if (!lanes) return;
    float m[LANES], l[LANES];
    _mm512_storeu_ps(m, st.m);
    _mm512_storeu_ps(l, st.l);
    for (int r = 0; r < nr; r++) {
        b->m[r] = m[r];
        b->l[r] = l[r];
        for (int d = 0; d < hd; d++) b->out[r][d] = ot[d * LANES + r];
    }
}
