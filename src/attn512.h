/*
 * attn512.h - the pieces of a page's softmax that the AVX-512 attention
 * kernels share (attn_avx512.c, and attn_amx.c for prompts): e^x of a
 * vector, the maximum to subtract, and which 16 keys of a page a row
 * sees. Include only from files built with the AVX-512 flags.
 */
#ifndef FR_ATTN512_H
#define FR_ATTN512_H

#include <math.h>
#include "kv.h"
#include "simd512.h"

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
    if (p->n - k0 < 16) m &= (__mmask16)((1u << (p->n > k0 ? p->n - k0 : 0)) - 1);
    __m512i pos = _mm512_loadu_si512(p->pos + k0);
    m &= _mm512_cmp_epi32_mask(pos, _mm512_set1_epi32(lo), _MM_CMPINT_NLT);
    m &= _mm512_cmp_epi32_mask(pos, _mm512_set1_epi32(qpos), _MM_CMPINT_LE);
    return m;
}

#endif
