/*
 * attn_lanes512.h - the state and the softmax of the "lanes" shape of
 * attn_avx512.c's query block (attn_block.h), where the block's rows are
 * the lanes of two vectors: the rows moved into and out of the lanes, and
 * everything between the two products (Q.K, then P.V): the mask, the
 * running maximum, the exponentials, the fixed-order sum and the factor
 * the outputs are rescaled by. Include only from files built with the
 * AVX-512 flags.
 */
#ifndef FR_ATTN_LANES512_H
#define FR_ATTN_LANES512_H

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include "attn_block.h"
#include "simd512.h"

#define LANES 16
#define ROWS FR_ATTN_BLOCK_ROWS  /* 32: two vectors of rows */
#define PAGE FR_KV_PAGE       /* 32 slots */
#define MAX_HD 512

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

#endif
