/*
 * ops_avx2.c - the AVX2 twin of RMSNorm (ops.c), with the scalar
 * version's bits: in prefill it runs over every activation row, where the
 * scalar loop cost 2-3 % of the time.
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
