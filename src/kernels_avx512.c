/*
 * kernels_avx512.c - dot products and activation quantizers for AVX-512
 * F/BW/VL/DQ + VNNI (built with those flags; only called after kernels.c
 * has checked the CPU and OS).
 *
 * Quantized dots put two 32-element blocks in one 512-bit register and take
 * their integer dot with one VPDPBUSD (u8 x s8, four products summed into
 * each s32 lane, no saturation): lanes 0-7 belong to the first block, lanes
 * 8-15 to the second. The s32 sums are converted to float and multiplied by
 * a vector holding each block's scale product d_w * d_a in its eight lanes.
 *
 * Signed weights: VPDPBUSD wants the first operand unsigned, so
 *   Q8_0  uses w + 128 (= w ^ 0x80) and subtracts 128 * sum(a),
 *   Q4_0  uses the raw nibble q and subtracts 8 * sum(a) (x = q - 8).
 * The correction depends only on the activations, so it is computed once per
 * block pair and shared by all rows, as the accumulator VPDPBUSD starts from.
 *
 * Scales: the fp16 headers sit at the block stride. Each chunk of blocks
 * first copies them into small arrays with scalar moves, converts 8 blocks'
 * worth at once (VCVTPH2PS), multiplies weight by activation scales, and
 * spreads each pair's two products over the halves of a register with one
 * VPERMPS. For Q4_1 the same multiply also yields m_w * s_a, the min term.
 *
 * Every kernel is written for NR weight rows against one activation row
 * (matrix-vector): the activation loads, its scales and the corrections are
 * shared, and the NR independent accumulators hide FMA latency. The single
 * dot is the NR = 1 case.
 */
#include <immintrin.h>
#include <string.h>
#include "quant.h"

#define CHUNK 32 /* blocks whose headers are prepared at once (multiple of 8) */
#define MAXR 4   /* rows per kernel call */
#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE uint32_t load32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static ALWAYS_INLINE uint16_t load16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Block sizes and field offsets; rows may sit at any byte address, so
 * blocks are addressed as bytes (d is always at offset 0). */
enum {
    Q4_0_SZ = sizeof(block_q4_0), Q4_1_SZ = sizeof(block_q4_1),
    Q8_0_SZ = sizeof(block_q8_0), Q8_1_SZ = sizeof(block_q8_1),
    Q4_0_QS = 2, Q4_1_QS = 4, Q8_0_QS = 2, Q8_1_QS = 4,
};

/* Two blocks' 32 activation bytes: block b in the low half, b+1 in the high
 * half; with one block the high half is zero so it adds nothing. */
static ALWAYS_INLINE __m512i act_pair(const uint8_t *q0, const uint8_t *q1, int two) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)q0);
    if (!two) return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)q1), 1);
}

/* Two 4-bit blocks as 64 bytes 0..15 in element order: each block's 16
 * bytes go to two 128-bit lanes, the second of which is shifted right by 4
 * (low nibbles = elements 0..15, high nibbles = 16..31). */
static ALWAYS_INLINE __m512i q4_pair(const uint8_t *qs0, const uint8_t *qs1, int two) {
    const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    __m512i v;
    if (two) {
        v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)qs0));
        v = _mm512_mask_broadcast_i32x4(v, 0xff00, _mm_loadu_si128((const __m128i *)qs1));
    } else {
        v = _mm512_maskz_broadcast_i32x4(0x00ff, _mm_loadu_si128((const __m128i *)qs0));
    }
    return _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(15));
}

/* Index vector that spreads lane lo over the low 8 lanes, hi over the high 8. */
static ALWAYS_INLINE __m512i spread(int lo, int hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(lo)), _mm256_set1_epi32(hi), 1);
}

/* ---- Q4_1 x Q8_1 ------------------------------------------------------- */

/* One block pair of NR rows: P[r] holds the group's scale products
 * [dd0, ms0, dd1, ms1, ...] (dd = d_w d_a, ms = m_w s_a); k is the pair's
 * index in the group of 8 blocks. */
static ALWAYS_INLINE void q4_1_pair(const uint8_t *w, size_t ws, const uint8_t *a, int k,
                                    int two, const __m512 *P, __m512 (*acc)[2], const int NR) {
    __m512i av = act_pair(a + Q8_1_QS, a + Q8_1_SZ + Q8_1_QS, two);
    __m512i idx = spread(4 * k, 4 * k + 2);
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        const uint8_t *x = w + r * ws;
        __m512i wq = q4_pair(x + Q4_1_QS, x + Q4_1_SZ + Q4_1_QS, two);
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, av);
        __m512 s = _mm512_permutexvar_ps(idx, P[r]);
        acc[r][k & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[r][k & 1]);
    }
}

static ALWAYS_INLINE void q4_1_rows(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,
                                    float *out, const int NR) {
    const int64_t nb = n / QK4_1;
    __m512 acc[MAXR][2], macc[MAXR];
    for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = macc[r] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nb; c0 += CHUNK) {
        const int m = (int)FR_MIN(CHUNK, nb - c0);
        uint32_t ha[CHUNK], hw[MAXR][CHUNK];
        for (int j = 0; j < m; j++) {
            ha[j] = load32(a + (c0 + j) * Q8_1_SZ);
            for (int r = 0; r < NR; r++) hw[r][j] = load32(w + r * ws + (c0 + j) * Q4_1_SZ);
        }
        for (int j = m; j < ((m + 7) & ~7); j++) {
            ha[j] = 0;
            for (int r = 0; r < NR; r++) hw[r][j] = 0;
        }
        for (int g = 0; g < m; g += 8) {
            __m512 A = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ha + g)));
            __m512 P[MAXR];
            for (int r = 0; r < NR; r++) {
                P[r] = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(hw[r] + g))), A);
                macc[r] = _mm512_add_ps(macc[r], P[r]); /* odd lanes: m_w s_a */
            }
            const int64_t b = c0 + g;
            const uint8_t *wb = w + b * Q4_1_SZ, *ab = a + b * Q8_1_SZ;
            const int gm = FR_MIN(8, m - g);
            if (gm == 8) {
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    q4_1_pair(wb + 2 * k * Q4_1_SZ, ws, ab + 2 * k * Q8_1_SZ, k, 1, P, acc, NR);
            } else {
                for (int k = 0; 2 * k < gm; k++)
                    q4_1_pair(wb + 2 * k * Q4_1_SZ, ws, ab + 2 * k * Q8_1_SZ, k, 2 * k + 1 < gm,
                              P, acc, NR);
            }
        }
    }
    for (int r = 0; r < NR; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1])) +
                 _mm512_mask_reduce_add_ps(0xaaaa, macc[r]);
}

/* ---- Q4_0 / Q8_0 x Q8_0 -------------------------------------------------- */

/* One block pair of NR rows of Q4_0 (is_q4) or Q8_0 weights; P[r] holds the
 * group's d_w d_a, one per block. */
static ALWAYS_INLINE void q8_pair(const uint8_t *w, size_t ws, const uint8_t *a, int k, int two,
                                  const __m512 *P, __m512 (*acc)[2], const int NR, const int is_q4) {
    __m512i av = act_pair(a + Q8_0_QS, a + Q8_0_SZ + Q8_0_QS, two);
    const __m512i offset = _mm512_set1_epi8(is_q4 ? 8 : (char)0x80);
    __m512i corr = _mm512_sub_epi32(_mm512_setzero_si512(),
                                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, av));
    __m512i idx = spread(2 * k, 2 * k + 1);
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        const uint8_t *x = w + r * ws;
        __m512i wq = is_q4 ? q4_pair(x + Q4_0_QS, x + Q4_0_SZ + Q4_0_QS, two)
                           : _mm512_xor_si512(act_pair(x + Q8_0_QS, x + Q8_0_SZ + Q8_0_QS, two), offset);
        __m512i p = _mm512_dpbusd_epi32(corr, wq, av);
        __m512 s = _mm512_permutexvar_ps(idx, P[r]);
        acc[r][k & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[r][k & 1]);
    }
}

static ALWAYS_INLINE void q8_rows(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,
                                  float *out, const int NR, const int is_q4) {
    const size_t wblk = is_q4 ? Q4_0_SZ : Q8_0_SZ;
    const int64_t nb = n / 32;
    __m512 acc[MAXR][2];
    for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nb; c0 += CHUNK) {
        const int m = (int)FR_MIN(CHUNK, nb - c0);
        uint16_t ha[CHUNK], hw[MAXR][CHUNK];
        for (int j = 0; j < m; j++) {
            ha[j] = load16(a + (c0 + j) * Q8_0_SZ);
            for (int r = 0; r < NR; r++) hw[r][j] = load16(w + r * ws + (c0 + j) * wblk);
        }
        for (int j = m; j < ((m + 7) & ~7); j++) {
            ha[j] = 0;
            for (int r = 0; r < NR; r++) hw[r][j] = 0;
        }
        for (int g = 0; g < m; g += 8) {
            __m256 A = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ha + g)));
            __m512 P[MAXR];
            for (int r = 0; r < NR; r++)
                P[r] = _mm512_castps256_ps512(
                    _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(hw[r] + g))), A));
            const int64_t b = c0 + g;
            const uint8_t *wb = w + b * wblk, *ab = a + b * Q8_0_SZ;
            const int gm = FR_MIN(8, m - g);
            if (gm == 8) {
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    q8_pair(wb + 2 * k * wblk, ws, ab + 2 * k * Q8_0_SZ, k, 1, P, acc, NR, is_q4);
            } else {
                for (int k = 0; 2 * k < gm; k++)
                    q8_pair(wb + 2 * k * wblk, ws, ab + 2 * k * Q8_0_SZ, k, 2 * k + 1 < gm, P, acc,
                            NR, is_q4);
            }
        }
    }
    for (int r = 0; r < NR; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

/* ---- entry points: rows in groups of MAXR, single dot = one row ---------- */

static void rows_q4_1_q8_1(int64_t n, const void *w, size_t ws, const void *a, float *out, int nr) {
    const uint8_t *wp = w;
    int r = 0;
    for (; r + 4 <= nr; r += 4) q4_1_rows(n, wp + r * ws, ws, a, out + r, 4);
    switch (nr - r) {
    case 3: q4_1_rows(n, wp + r * ws, ws, a, out + r, 3); break;
    case 2: q4_1_rows(n, wp + r * ws, ws, a, out + r, 2); break;
    case 1: q4_1_rows(n, wp + r * ws, ws, a, out + r, 1); break;
    }
}

static float dot_q4_1_q8_1(int64_t n, const void *w, const void *a) {
    float out;
    q4_1_rows(n, w, 0, a, &out, 1);
    return out;
}

#define Q8_ENTRY(rows_name, dot_name, is_q4)                                              \
    static void rows_name(int64_t n, const void *w, size_t ws, const void *a, float *out, \
                          int nr) {                                                       \
        const uint8_t *wp = w;                                                            \
        int r = 0;                                                                        \
        for (; r + 4 <= nr; r += 4) q8_rows(n, wp + r * ws, ws, a, out + r, 4, is_q4);    \
        switch (nr - r) {                                                                 \
        case 3: q8_rows(n, wp + r * ws, ws, a, out + r, 3, is_q4); break;                 \
        case 2: q8_rows(n, wp + r * ws, ws, a, out + r, 2, is_q4); break;                 \
        case 1: q8_rows(n, wp + r * ws, ws, a, out + r, 1, is_q4); break;                 \
        }                                                                                 \
    }                                                                                     \
    static float dot_name(int64_t n, const void *w, const void *a) {                      \
        float out;                                                                        \
        q8_rows(n, w, 0, a, &out, 1, is_q4);                                              \
        return out;                                                                       \
    }
Q8_ENTRY(rows_q4_0_q8_0, dot_q4_0_q8_0, 1)
Q8_ENTRY(rows_q8_0_q8_0, dot_q8_0_q8_0, 0)

/* ---- float dots ---------------------------------------------------------- */

/* Four accumulators of 16 hide the FMA latency; the tail is a masked load. */
static float dot_f32(int64_t n, const void *wv, const void *av) {
    const float *x = wv, *y = av;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static ALWAYS_INLINE __m512 load_f16x16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static float dot_f16(int64_t n, const void *wv, const void *av) {
    const uint16_t *x = wv, *y = av;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(load_f16x16(x + i), load_f16x16(y + i), s0);
        s1 = _mm512_fmadd_ps(load_f16x16(x + i + 16), load_f16x16(y + i + 16), s1);
        s2 = _mm512_fmadd_ps(load_f16x16(x + i + 32), load_f16x16(y + i + 32), s2);
        s3 = _mm512_fmadd_ps(load_f16x16(x + i + 48), load_f16x16(y + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(load_f16x16(x + i), load_f16x16(y + i), s0);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, x + i));
        __m512 yv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, y + i));
        s1 = _mm512_fmadd_ps(xv, yv, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

#define ROWS_OF(name, dot)                                                              \
    static void name(int64_t n, const void *w, size_t w_stride, const void *a, float *out, \
                     int nr) {                                                          \
        for (int r = 0; r < nr; r++) out[r] = dot(n, (const uint8_t *)w + r * w_stride, a); \
    }
ROWS_OF(rows_f32, dot_f32)
ROWS_OF(rows_f16, dot_f16)

/* ---- activation quantizers ---------------------------------------------- */

/* roundf: truncate, then step one away from zero when the dropped fraction
 * is >= 0.5 (v - trunc(v) is exact, so ties go exactly like roundf). */
static ALWAYS_INLINE __m512 round_half_away(__m512 v) {
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 ge = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 step = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
    return _mm512_mask_add_ps(t, ge, t, step);
}

/* One block of 32 like the scalar reference: d = amax/127, id = 1/d,
 * q = roundf(x*id). Returns d (fp32) and the sum of q. */
static ALWAYS_INLINE float quant_block(const float *x, int8_t *qs, int *sum) {
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m512 vid = _mm512_set1_ps(id);
    __m512i q0 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v0, vid)));
    __m512i q1 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v1, vid)));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtepi32_epi8(q1));
    return d;
}

static ALWAYS_INLINE uint16_t to_fp16(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static ALWAYS_INLINE void put_fp16(uint8_t *p, float f) {
    uint16_t h = to_fp16(f);
    memcpy(p, &h, 2);
}

static void quant_q8_0(const float *x, void *yv, int64_t n) {
    uint8_t *y = yv;
    for (int64_t i = 0; i < n / QK8_0; i++, y += Q8_0_SZ) {
        int sum;
        put_fp16(y, quant_block(x + i * QK8_0, (int8_t *)(y + Q8_0_QS), &sum));
    }
}

static void quant_q8_1(const float *x, void *yv, int64_t n) {
    uint8_t *y = yv;
    for (int64_t i = 0; i < n / QK8_1; i++, y += Q8_1_SZ) {
        int sum;
        float d = quant_block(x + i * QK8_1, (int8_t *)(y + Q8_1_QS), &sum);
        put_fp16(y, d);
        put_fp16(y + 2, (float)sum * d);
    }
}

void fr_kernels_fill_avx512(fr_kernel_table *t) {
    t->dot[FR_Q4_0] = dot_q4_0_q8_0;
    t->dot[FR_Q4_1] = dot_q4_1_q8_1;
    t->dot[FR_Q8_0] = dot_q8_0_q8_0;
    t->dot[FR_F32] = dot_f32;
    t->dot[FR_F16] = dot_f16;
    t->dot_rows[FR_Q4_0] = rows_q4_0_q8_0;
    t->dot_rows[FR_Q4_1] = rows_q4_1_q8_1;
    t->dot_rows[FR_Q8_0] = rows_q8_0_q8_0;
    t->dot_rows[FR_F32] = rows_f32;
    t->dot_rows[FR_F16] = rows_f16;
    t->quant[FR_Q8_0] = quant_q8_0;
    t->quant[FR_Q8_1] = quant_q8_1;
}
