/*
 * attn_avx2.c - AVX2 + F16C twins of the attention primitives in
 * attention.c (compiled with -mavx2 -mfma -mf16c; used only when the CPU
 * has them). Tests compare them with the scalar ones.
 */
#include <immintrin.h>
#include <math.h>
#include "ops.h"
#include "quant.h"

static void f16_to_f32(const uint16_t *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = fr_fp16_to_fp32(x[i]);
}

static void f32_to_f16(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = fr_fp32_to_fp16(x[i]);
}

static float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float dot(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* s[i] = scale * q.k_i for np keys: eight keys at a time, their eight
 * partial-sum vectors reduced together by a tree of horizontal adds (one
 * per pair instead of a full horizontal sum per key). */
static float dots(const float *q, const float *k, int k_stride, int np, int n, float scale, float *s) {
    int i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    if (n % 8 == 0)
        for (; i + 8 <= np; i += 8) {
            __m256 acc[8];
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
            for (int c = 0; c < n; c += 8) {
                __m256 qc = _mm256_loadu_ps(q + c);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    acc[j] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k + (size_t)(i + j) * k_stride + c), acc[j]);
            }
            __m256 h01 = _mm256_hadd_ps(acc[0], acc[1]), h23 = _mm256_hadd_ps(acc[2], acc[3]);
            __m256 h45 = _mm256_hadd_ps(acc[4], acc[5]), h67 = _mm256_hadd_ps(acc[6], acc[7]);
            __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
            /* lanes: [0 1 2 3 | 0 1 2 3] halves of keys 0-3 and of 4-7 */
            __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20), hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
            __m256 r = _mm256_mul_ps(_mm256_add_ps(lo, hi), _mm256_set1_ps(scale));
            _mm256_storeu_ps(s + i, r);
            vmax = _mm256_max_ps(vmax, r);
        }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (; i < np; i++) {
        s[i] = dot(q, k + (size_t)i * k_stride, n) * scale;
        m = s[i] > m ? s[i] : m;
    }
    return m;
}

static void scale_add(float *acc, float c, float p, const float *v, int n) {
    __m256 vc = _mm256_set1_ps(c), vp = _mm256_set1_ps(p);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vp, _mm256_loadu_ps(v + i), _mm256_mul_ps(vc, _mm256_loadu_ps(acc + i))));
    for (; i < n; i++) acc[i] = acc[i] * c + p * v[i];
}

/* exp(x) for x <= 0, 8 lanes: x = k ln2 + g with k = round(x log2 e) and
 * |g| <= ln2/2 (g computed with ln2 split in two parts, Cody-Waite, so it
 * stays exact for large |x|); e^g from a degree-6 Taylor polynomial
 * (relative error < 3e-7), 2^k put straight into the exponent bits.
 * Below -87 the result is flushed to 0, as the float would underflow. */
static __m256 exp_neg(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693145751953125f), ln2_lo = _mm256_set1_ps(1.42860682030941723e-6f);
    __m256 valid = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 t = _mm256_mul_ps(x, log2e);
    __m256 k = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 g = _mm256_fnmadd_ps(k, ln2_hi, x);
    g = _mm256_fnmadd_ps(k, ln2_lo, g);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), valid);
}

static float exp_sub(float *s, float m, int n) {
    __m256 vm = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = hsum(sum);
    for (; i < n; i++) total += s[i] = expf(s[i] - m);
    return total;
}

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Eight floats of x at i: floats, or fp16 converted (exactly). */
static ALWAYS_INLINE __m256 load8(const void *x, size_t i, const bool f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + i)));
    return _mm256_loadu_ps((const float *)x + i);
}
static ALWAYS_INLINE float load1(const void *x, size_t i, const bool f16) {
    return f16 ? fr_fp16_to_fp32(((const uint16_t *)x)[i]) : ((const float *)x)[i];
}

/* acc = acc * c + sum_p e[p] * v[p]: 64 output lanes at a time stay in
 * eight registers across all the tile's keys, so the FMAs of one key are
 * independent of each other (a narrower block would wait on the latency
 * of one accumulator per key). v in floats or fp16 (pv_h); ahead: fp16
 * values of the page read next, laid out as v, each slot's requested as
 * this one's is first read (NULL: none). */
static ALWAYS_INLINE void pv_any(float *acc, float c, const float *e, const void *v, int v_stride, int np, int n,
                                 const uint16_t *ahead, const bool f16) {
    int i = 0;
    __m256 vc = _mm256_set1_ps(c);
    for (; i + 64 <= n; i += 64) {
        __m256 a[8];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) a[k] = _mm256_mul_ps(vc, _mm256_loadu_ps(acc + i + 8 * k));
        for (int p = 0; p < np; p++) {
            __m256 ep = _mm256_set1_ps(e[p]);
            size_t vp = (size_t)p * v_stride + i;
            for (int o = 0; ahead && i == 0 && o < n; o += 32) /* 32 fp16 values: a line */
                _mm_prefetch((const char *)(ahead + vp + o), _MM_HINT_T0);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(ep, load8(v, vp + 8 * k, f16), a[k]);
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(acc + i + 8 * k, a[k]);
    }
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = _mm256_mul_ps(vc, _mm256_loadu_ps(acc + i)), a1 = _mm256_mul_ps(vc, _mm256_loadu_ps(acc + i + 8));
        for (int p = 0; p < np; p++) {
            __m256 ep = _mm256_set1_ps(e[p]);
            a0 = _mm256_fmadd_ps(ep, load8(v, (size_t)p * v_stride + i, f16), a0);
            a1 = _mm256_fmadd_ps(ep, load8(v, (size_t)p * v_stride + i + 8, f16), a1);
        }
        _mm256_storeu_ps(acc + i, a0);
        _mm256_storeu_ps(acc + i + 8, a1);
    }
    for (; i < n; i++) {
        float a = acc[i] * c;
        for (int p = 0; p < np; p++) a += e[p] * load1(v, (size_t)p * v_stride + i, f16);
        acc[i] = a;
    }
}

/* R rows (1 to 3) of pv over lanes [0, n0), n0 a multiple of 8 W, values
 * in floats or fp16: each value vector is loaded (and converted) once for
 * all R rows, W vectors of lanes a pass (R W accumulators); a lane's
 * arithmetic is pv_any's (a multiply by c, then one FMA a slot), so a
 * row's bits are those it has alone. */
static ALWAYS_INLINE void pv_rows(float *const *acc, const float *c, const float *const *e, const void *v,
                                  int v_stride, int np, int n0, const uint16_t *ahead, const bool f16, const int R,
                                  const int W) {
    for (int i = 0; i < n0; i += 8 * W) {
        __m256 a[3][8];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++)
#pragma GCC unroll 8
            for (int w = 0; w < W; w++)
                a[r][w] = _mm256_mul_ps(_mm256_set1_ps(c[r]), _mm256_loadu_ps(acc[r] + i + 8 * w));
        for (int p = 0; p < np; p++) {
            size_t vp = (size_t)p * v_stride + i;
            for (int o = 0; ahead && i == 0 && o < n0; o += 32) /* 32 fp16 values: a line */
                _mm_prefetch((const char *)(ahead + vp + o), _MM_HINT_T0);
            __m256 ep[3];
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) ep[r] = _mm256_set1_ps(e[r][p]);
#pragma GCC unroll 8
            for (int w = 0; w < W; w++) {
                __m256 x = load8(v, vp + 8 * w, f16);
                __asm__("" : "+x"(x)); /* loaded once for all the rows */
#pragma GCC unroll 3
                for (int r = 0; r < R; r++) a[r][w] = _mm256_fmadd_ps(ep[r], x, a[r][w]);
            }
        }
#pragma GCC unroll 3
        for (int r = 0; r < R; r++)
#pragma GCC unroll 8
            for (int w = 0; w < W; w++) _mm256_storeu_ps(acc[r] + i + 8 * w, a[r][w]);
    }
}

/* Rows three at a time where they can (two of four: 12 or 8 chains each
 * wait on no other), sharing each value vector; the lanes past the last
 * whole pass, and a row alone, take pv_any. */
static ALWAYS_INLINE void pv_sets(float *const *acc, const float *c, const float *const *e, int nr, const void *v,
                                  int v_stride, int np, int n, const uint16_t *ahead, const bool f16) {
    for (int r = 0; r < nr;) {
        const int left = nr - r, R = left >= 3 && left != 4 ? 3 : left >= 2 ? 2 : 1, n0 = R > 1 ? n / 32 * 32 : 0;
        if (R == 3) pv_rows(acc + r, c + r, e + r, v, v_stride, np, n0, ahead, f16, 3, 4);
        if (R == 2) pv_rows(acc + r, c + r, e + r, v, v_stride, np, n0, ahead, f16, 2, 4);
        for (int k = r; k < r + R; k++) {
            const void *vk = f16 ? (const void *)((const uint16_t *)v + n0) : (const void *)((const float *)v + n0);
            pv_any(acc[k] + n0, c[k], e[k], vk, v_stride, np, n - n0, k == r && n0 == 0 ? ahead : NULL, f16);
        }
        ahead = NULL;
        r += R;
    }
}

static void pv(float *const *acc, const float *c, const float *const *e, int nr, const float *v, int v_stride, int np,
               int n) {
    pv_sets(acc, c, e, nr, v, v_stride, np, n, NULL, false);
}

static void pv_h(float *const *acc, const float *c, const float *const *e, int nr, const uint16_t *v, int v_stride,
                 int np, int n, const uint16_t *ahead) {
    pv_sets(acc, c, e, nr, v, v_stride, np, n, ahead, true);
}

_Static_assert(FR_KV_PAGE == 32, "dots_t_h: a page is 4 vectors of 8 slots");

/* R rows (1 to 3) of dots_t_h: 4 R chains over the channels, each key
 * vector converted once for all R rows. */
static ALWAYS_INLINE void dots_t_rows(const float *const *q, const uint16_t *kt, int n, __m256 vs, float *s,
                                      const uint16_t *ahead, const int R) {
    __m256 a[3][4];
#pragma GCC unroll 3
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) a[r][v] = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        const size_t k = (size_t)i * FR_KV_PAGE;
        if (ahead) _mm_prefetch((const char *)(ahead + k), _MM_HINT_T0);
        __m256 x[3];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) x[r] = _mm256_set1_ps(q[r][i]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m256 kv = load8(kt, k + 8 * v, true);
            __asm__("" : "+x"(kv));
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) a[r][v] = _mm256_fmadd_ps(x[r], kv, a[r][v]);
        }
    }
#pragma GCC unroll 3
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) _mm256_storeu_ps(s + (size_t)r * FR_KV_PAGE + 8 * v, _mm256_mul_ps(a[r][v], vs));
}

/* Keys channel-major: a row's 32 scores are 4 vectors of slots side by
 * side, FMA chains over the channels. Rows three at a time where they
 * can (pairs of four), so that 12 or 8 chains are in flight (a row's 4
 * alone would wait on the FMA latency; 8 left a prompt's rows well short
 * of the FMA rate) and each key vector serves them all; a slot's chain is
 * the same for a row in any set or alone. ahead as for pv_any, requested
 * on the first pass. */
static void dots_t_h(const float *const *q, int nr, const uint16_t *kt, int n, float scale, float *s,
                     const uint16_t *ahead) {
    const __m256 vs = _mm256_set1_ps(scale);
    for (int r = 0; r < nr;) {
        const int left = nr - r, R = left >= 3 && left != 4 ? 3 : left >= 2 ? 2 : 1;
        const uint16_t *pf = r == 0 ? ahead : NULL;
        float *sr = s + (size_t)r * FR_KV_PAGE;
        if (R == 3) dots_t_rows(q + r, kt, n, vs, sr, pf, 3);
        if (R == 2) dots_t_rows(q + r, kt, n, vs, sr, pf, 2);
        if (R == 1) dots_t_rows(q + r, kt, n, vs, sr, pf, 1);
        r += R;
    }
}

const fr_attn_kernels fr_attn_avx2 = { f16_to_f32, f32_to_f16, dot, scale_add, exp_sub, pv, dots,
                                       pv_h, dots_t_h };
