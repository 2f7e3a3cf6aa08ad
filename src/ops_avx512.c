/*
 * ops_avx512.c - AVX-512 twins of RMSNorm and RoPE (ops.c), with the
 * scalar versions' bits: in prefill they run over every activation row
 * and, as scalar loops, cost a few per cent of the time.
 *
 * RMSNorm: the scalar code keeps eight double partial sums, element i
 * going to sum i % 8; here they are the eight lanes of one vector, and
 * (double)x * x is exact, so an FMA adds it with the one rounding of the
 * scalar add. The sums are combined in the scalar code's order, and the
 * output is (x * scale) * w, two roundings as there.
 * RoPE: out_a = x_a c - x_b s and out_b = x_a s + x_b c, each product
 * rounded and then added (no FMA: the build's ISO C mode does not fuse
 * the intrinsics either); the sum's operands are swapped in one case,
 * which IEEE addition does not notice.
 */
#include <immintrin.h>
#include <math.h>
#include "ops.h"

void fr_rmsnorm_avx512(float *y, const float *x, const float *w, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d;
        float *yr = y + (size_t)t * d;
        __m512d acc = _mm512_setzero_pd();
        int i = 0;
        for (; i + 8 <= d; i += 8) {
            __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(xr + i));
            acc = _mm512_fmadd_pd(v, v, acc);
        }
        double p[8];
        _mm512_storeu_pd(p, acc);
        for (; i < d; i++) p[0] += (double)xr[i] * xr[i];
        double ss = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
        float scale = 1.0f / sqrtf((float)(ss / d) + eps);
        const __m512 vs = _mm512_set1_ps(scale);
        for (i = 0; i + 16 <= d; i += 16)
            _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vs), _mm512_loadu_ps(w + i)));
        for (; i < d; i++) yr[i] = xr[i] * scale * w[i];
    }
}

/* The table's cosines and sines of pairs i .. i + 15 ((c, s) interleaved
 * in cs), as two vectors. */
static inline void cos_sin16(const float *cs, int i, __m512 *c, __m512 *s) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 lo = _mm512_loadu_ps(cs + 2 * i), hi = _mm512_loadu_ps(cs + 2 * i + 16);
    *c = _mm512_permutex2var_ps(lo, even, hi);
    *s = _mm512_permutex2var_ps(lo, odd, hi);
}

/* rope_dim a multiple of 32 (else the scalar code is used). */
void fr_rope_avx512(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind) {
    const int half = rope_dim / 2;
    const __m512 neg_even = _mm512_castsi512_ps(_mm512_set1_epi64(0x80000000)); /* sign of the even lanes */
    for (int t = 0; t < n; t++) {
        const float *c = cs + (size_t)t * rope_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            if (kind == FR_ROPE_NEOX) { /* pairs (i, i + half) */
                for (int i = 0; i < half; i += 16) {
                    __m512 co, si, a = _mm512_loadu_ps(v + i), b = _mm512_loadu_ps(v + i + half);
                    cos_sin16(c, i, &co, &si);
                    _mm512_storeu_ps(v + i, _mm512_sub_ps(_mm512_mul_ps(a, co), _mm512_mul_ps(b, si)));
                    _mm512_storeu_ps(v + i + half, _mm512_add_ps(_mm512_mul_ps(a, si), _mm512_mul_ps(b, co)));
                }
            } else { /* pairs (2i, 2i + 1): lanes 2i and 2i + 1 of the same vector */
                for (int i = 0; i < rope_dim; i += 16) {
                    __m512 xv = _mm512_loadu_ps(v + i), tab = _mm512_loadu_ps(c + i);
                    __m512 co = _mm512_moveldup_ps(tab), si = _mm512_movehdup_ps(tab); /* (c, c), (s, s) */
                    __m512 sw = _mm512_permute_ps(xv, 0xb1);                           /* (x_b, x_a) */
                    __m512 p = _mm512_mul_ps(xv, co), q = _mm512_xor_ps(_mm512_mul_ps(sw, si), neg_even);
                    _mm512_storeu_ps(v + i, _mm512_add_ps(p, q));
                }
            }
        }
    }
}
