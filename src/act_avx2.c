/*
 * act_avx2.c - AVX2 twins of the gated activations in ops.c (fr_glu):
 * a = silu(a) * b and a = gelu_tanh(a) * b. Both are x * b / (1 + e^-y)
 * (silu: y = x; gelu_tanh: y = 2 sqrt(2/pi) (x + 0.044715 x^3), since
 * 0.5 (1 + tanh(z)) = 1 / (1 + e^-2z)), so one vector exp serves both.
 */
#include <immintrin.h>
#include <math.h>
#include "ops.h"

/* e^x for |x| <= 87 (clamped): x = k ln2 + g, Cody-Waite split of ln2,
 * degree-6 Taylor polynomial for e^g, 2^k into the exponent bits. */
static __m256 exp_clamped(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 g = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    g = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.42860682030941723e-6f), g);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void fr_glu_avx2(float *a, const float *b, int64_t count, int act) {
    const __m256 one = _mm256_set1_ps(1.0f), c1 = _mm256_set1_ps(-2.0f * 0.79788456080286535588f);
    const __m256 c3 = _mm256_set1_ps(0.044715f);
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i), minus_y;
        if (act == FR_ACT_SILU) minus_y = _mm256_sub_ps(_mm256_setzero_ps(), x);
        else minus_y = _mm256_mul_ps(c1, _mm256_fmadd_ps(_mm256_mul_ps(c3, x), _mm256_mul_ps(x, x), x));
        __m256 den = _mm256_add_ps(one, exp_clamped(minus_y));
        _mm256_storeu_ps(a + i, _mm256_div_ps(_mm256_mul_ps(x, _mm256_loadu_ps(b + i)), den));
    }
    if (i < count) fr_glu_scalar(a + i, b + i, count - i, act);
}
