/*
 * ops_avx2.c - the AVX2 twins of RMSNorm and RoPE (ops.c), with the
 * scalar versions' bits: in prefill they run over every activation row,
 * where the scalar loops cost 2-3 % and ~0.8 % of the time.
 *
 * The scalar code keeps eight double partial sums, element i going to
 * sum i % 8; here they are the lanes of two vectors of four, and
 * (double)x * x is exact, so an FMA adds it with the one rounding of the
 * scalar add. The sums are combined in the scalar code's order, and the
 * output is (x * scale) * w, two roundings as there.
 */
#include <immintrin.h>
#include <math.h>
#include "ops.h"

void fr_rmsnorm_avx2(float *y, const float *x, const float *w, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d;
        float *yr = y + (size_t)t * d;
        __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
        int i = 0;
        for (; i + 8 <= d; i += 8) {
            __m256d v0 = _mm256_cvtps_pd(_mm_loadu_ps(xr + i)), v1 = _mm256_cvtps_pd(_mm_loadu_ps(xr + i + 4));
            acc0 = _mm256_fmadd_pd(v0, v0, acc0);
            acc1 = _mm256_fmadd_pd(v1, v1, acc1);
        }
        double p[8];
        _mm256_storeu_pd(p, acc0);
        _mm256_storeu_pd(p + 4, acc1);
        for (; i < d; i++) p[0] += (double)xr[i] * xr[i];
        double ss = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
        float scale = 1.0f / sqrtf((float)(ss / d) + eps);
        const __m256 vs = _mm256_set1_ps(scale);
        for (i = 0; i + 8 <= d; i += 8)
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), vs), _mm256_loadu_ps(w + i)));
        for (; i < d; i++) yr[i] = xr[i] * scale * w[i];
    }
}

/* RoPE, rope_dim a multiple of 16 (else the scalar code is used): the
 * scalar products and their one subtraction or addition, no FMA, so the
 * same bits. cs holds (cos, sin) pairs. */
void fr_rope_avx2(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind) {
    const int half = rope_dim / 2;
    for (int t = 0; t < n; t++) {
        const float *c = cs + (size_t)t * rope_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            if (kind == FR_ROPE_NEOX) { /* pairs (i, i + half): the table's 8 pairs split into cos and sin */
                for (int i = 0; i < half; i += 8) {
                    /* the shuffles give pairs 0 1 4 5 | 2 3 6 7; the permute puts them in order */
                    __m256 t0 = _mm256_loadu_ps(c + 2 * i), t1 = _mm256_loadu_ps(c + 2 * i + 8);
                    __m256 co = _mm256_castpd_ps(_mm256_permute4x64_pd(
                        _mm256_castps_pd(_mm256_shuffle_ps(t0, t1, 0x88)), 0xd8));
                    __m256 si = _mm256_castpd_ps(_mm256_permute4x64_pd(
                        _mm256_castps_pd(_mm256_shuffle_ps(t0, t1, 0xdd)), 0xd8));
                    __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + half);
                    _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(a, co), _mm256_mul_ps(b, si)));
                    _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(a, si), _mm256_mul_ps(b, co)));
                }
            } else { /* pairs (2i, 2i + 1): lanes of the same vector */
                for (int i = 0; i < rope_dim; i += 8) {
                    __m256 xv = _mm256_loadu_ps(v + i), tab = _mm256_loadu_ps(c + i);
                    __m256 co = _mm256_moveldup_ps(tab), si = _mm256_movehdup_ps(tab); /* (c, c), (s, s) */
                    __m256 sw = _mm256_permute_ps(xv, 0xb1);                           /* (x_b, x_a) */
                    /* even lanes x_a c - x_b s, odd lanes x_b c + x_a s */
                    _mm256_storeu_ps(v + i, _mm256_addsub_ps(_mm256_mul_ps(xv, co), _mm256_mul_ps(sw, si)));
                }
            }
        }
    }
}
