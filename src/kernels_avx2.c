/*
 * kernels_avx2.c - dot products and activation quantizers for AVX2 + FMA +
 * F16C (built with -mavx2 -mfma -mf16c; only called after kernels.c has
 * checked the CPU). No VNNI here: AVX2 machines without it exist.
 *
 * Quantized dots work one 32-element block per 256-bit register:
 *   integer part  maddubs (u8 x s8 -> saturating s16 pair sums) then madd
 *                 with ones (-> 8 s32 partial sums); exact because each kernel
 *                 keeps the operands small enough that no pair reaches 2^15;
 *   float part    the partial sums are converted and multiplied by the block
 *                 scale product d_w * d_a with one FMA into an accumulator.
 * The block scales are fp16 fields scattered at the block stride. Converting
 * them one by one costs several shuffle uops per block, so each chunk of
 * blocks first gathers the headers 4 or 8 at a time into a register,
 * converts them with F16C, and stores the scale products; the main loop
 * then broadcasts each from memory, which needs no shuffle port.
 */
#include <immintrin.h>
#include <string.h>
#include "quant.h"

#define CHUNK 32 /* blocks whose scales are prepared at once */

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline uint32_t load32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t load16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* 32 nibbles of a 4-bit block as 32 bytes 0..15 in element order: the low
 * nibbles (elements 0..15) then the high ones (16..31). */
static inline __m256i q4_block(const uint8_t *qs) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    v = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

/* u8 x s8 -> 8 x s32 partial sums (pairs must fit s16, see callers). */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Block sizes and field offsets; rows may sit at any byte address, so
 * blocks are addressed as bytes (d is always at offset 0). */
enum {
    Q4_0_SZ = sizeof(block_q4_0), Q4_1_SZ = sizeof(block_q4_1),
    Q8_0_SZ = sizeof(block_q8_0), Q8_1_SZ = sizeof(block_q8_1),
    Q4_0_QS = 2, Q4_1_QS = 4, Q8_0_QS = 2, Q8_1_QS = 4,
};

static inline __m256i load256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* ---- scale preparation ------------------------------------------------ */

/* Header j of the gm blocks at p, or 0 past gm: the address is clamped to
 * block 0 so nothing past the row is read, and no branch is needed. */
static inline uint32_t header32(const uint8_t *p, size_t stride, int j, int gm) {
    uint32_t v = load32(p + (size_t)(j < gm ? j : 0) * stride);
    return j < gm ? v : 0;
}

static inline uint16_t header16(const uint8_t *p, size_t stride, int j, int gm) {
    uint16_t v = load16(p + (size_t)(j < gm ? j : 0) * stride);
    return j < gm ? v : 0;
}

/* Headers of up to 4 blocks (4 bytes: d, m / d, s) or 8 blocks (the 2-byte
 * d) in one register, built with inserts from scalar loads. Going through
 * a small array in memory would make the vector load wait for the scalar
 * stores to retire (a failed store forward), which costs far more. */
static inline __m128i headers4_32(const uint8_t *p, size_t stride, int gm) {
    __m128i v = _mm_cvtsi32_si128((int)header32(p, stride, 0, gm));
    v = _mm_insert_epi32(v, (int)header32(p, stride, 1, gm), 1);
    v = _mm_insert_epi32(v, (int)header32(p, stride, 2, gm), 2);
    return _mm_insert_epi32(v, (int)header32(p, stride, 3, gm), 3);
}

static inline __m128i headers8_16(const uint8_t *p, size_t stride, int gm) {
    __m128i v = _mm_cvtsi32_si128(header16(p, stride, 0, gm));
    v = _mm_insert_epi16(v, header16(p, stride, 1, gm), 1);
    v = _mm_insert_epi16(v, header16(p, stride, 2, gm), 2);
    v = _mm_insert_epi16(v, header16(p, stride, 3, gm), 3);
    v = _mm_insert_epi16(v, header16(p, stride, 4, gm), 4);
    v = _mm_insert_epi16(v, header16(p, stride, 5, gm), 5);
    v = _mm_insert_epi16(v, header16(p, stride, 6, gm), 6);
    return _mm_insert_epi16(v, header16(p, stride, 7, gm), 7);
}

/* For a chunk of m blocks of Q4_1 x Q8_1: sc[2j] = d_w d_a and
 * sc[2j+1] = m_w s_a of block j (both headers are two fp16, so one F16C
 * conversion gives d and m / d and s). Adds the products to macc, whose odd
 * lanes thus collect the m_w s_a terms. */
static inline __m256 scales_q4_1(const uint8_t *x, const uint8_t *y, int m, float *sc,
                                 __m256 macc) {
    for (int j = 0; j < m; j += 4) {
        int gm = FR_MIN(4, m - j);
        __m256 W = _mm256_cvtph_ps(headers4_32(x + (size_t)j * Q4_1_SZ, Q4_1_SZ, gm));
        __m256 A = _mm256_cvtph_ps(headers4_32(y + (size_t)j * Q8_1_SZ, Q8_1_SZ, gm));
        __m256 P = _mm256_mul_ps(W, A);
        _mm256_storeu_ps(sc + 2 * j, P);
        macc = _mm256_add_ps(macc, P);
    }
    return macc;
}

/* For Q4_0 / Q8_0 weights against Q8_0 activations: sc[j] = d_w d_a. */
static inline void scales_d(const uint8_t *x, size_t x_blk, const uint8_t *y, int m, float *sc) {
    for (int j = 0; j < m; j += 8) {
        int gm = FR_MIN(8, m - j);
        __m256 W = _mm256_cvtph_ps(headers8_16(x + (size_t)j * x_blk, x_blk, gm));
        __m256 A = _mm256_cvtph_ps(headers8_16(y + (size_t)j * Q8_0_SZ, Q8_0_SZ, gm));
        _mm256_storeu_ps(sc + j, _mm256_mul_ps(W, A));
    }
}

/* ---- quantized dots --------------------------------------------------- */

/* Integer dot of one block pair, per weight format: 8 s32 partial sums. */

/* Q4_1 . Q8_1: q in 0..15, a in -127..127, so |pair| <= 2*15*127. */
static inline __m256i idot_q4_1(const uint8_t *x, const uint8_t *y) {
    return dot_u8s8(q4_block(x + Q4_1_QS), load256(y + Q8_1_QS));
}

/* Q4_0 . Q8_0: sum (q-8) a = sum q a - sum 8 a, both maddubs with q and 8
 * unsigned; the s16 difference is exact (|pair| <= 2*15*127). */
static inline __m256i idot_q4_0(const uint8_t *x, const uint8_t *y) {
    __m256i a = load256(y + Q8_0_QS);
    __m256i d16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_block(x + Q4_0_QS), a),
                                   _mm256_maddubs_epi16(_mm256_set1_epi8(8), a));
    return _mm256_madd_epi16(d16, _mm256_set1_epi16(1));
}

/* Q8_0 . Q8_0: maddubs needs one operand unsigned, so move w's sign onto a:
 * |w| x sign(w)*a. |w| <= 128 and |a| <= 127 keep pairs below 2^15. */
static inline __m256i idot_q8_0(const uint8_t *x, const uint8_t *y) {
    __m256i w = load256(x + Q8_0_QS), a = load256(y + Q8_0_QS);
    return dot_u8s8(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
}

enum { FMT_Q4_0, FMT_Q4_1, FMT_Q8_0 };

/* acc += one block's integer dot times its scale product *sc. */
static inline __attribute__((always_inline)) __m256 block_fma(const uint8_t *xb, const uint8_t *yb,
                                                              const float *sc, __m256 acc,
                                                              const int fmt) {
    __m256i p = fmt == FMT_Q4_0 ? idot_q4_0(xb, yb)
              : fmt == FMT_Q4_1 ? idot_q4_1(xb, yb) : idot_q8_0(xb, yb);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(sc), acc);
}

/* The block loop shared by the three formats (fmt is a constant after
 * inlining): scales for a chunk, then two blocks per step into two
 * accumulators to cover the FMA latency. For Q4_1, sc interleaves d_w d_a
 * with the min terms, so block j's scale is sc[2j]. */
static inline __attribute__((always_inline)) float qdot(int64_t n, const uint8_t *x,
                                                        const uint8_t *y, const int fmt) {
    const size_t xsz = fmt == FMT_Q4_0 ? Q4_0_SZ : fmt == FMT_Q4_1 ? Q4_1_SZ : Q8_0_SZ;
    const size_t ysz = fmt == FMT_Q4_1 ? Q8_1_SZ : Q8_0_SZ;
    const int step = fmt == FMT_Q4_1 ? 2 : 1;
    const int64_t nb = n / 32;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
    float sc[2 * CHUNK];
    for (int64_t c0 = 0; c0 < nb; c0 += CHUNK) {
        const int m = (int)FR_MIN(CHUNK, nb - c0);
        const uint8_t *xc = x + c0 * xsz, *yc = y + c0 * ysz;
        if (fmt == FMT_Q4_1) macc = scales_q4_1(xc, yc, m, sc, macc);
        else scales_d(xc, xsz, yc, m, sc);
        int j = 0;
        for (; j + 1 < m; j += 2) {
            acc0 = block_fma(xc + j * xsz, yc + j * ysz, sc + step * j, acc0, fmt);
            acc1 = block_fma(xc + (j + 1) * xsz, yc + (j + 1) * ysz, sc + step * (j + 1), acc1, fmt);
        }
        if (j < m) acc0 = block_fma(xc + j * xsz, yc + j * ysz, sc + step * j, acc0, fmt);
    }
    float s = hsum256(_mm256_add_ps(acc0, acc1));
    if (fmt == FMT_Q4_1) { /* odd lanes of macc hold the m_w s_a sums */
        __m256 odd = _mm256_castsi256_ps(_mm256_set_epi32(-1, 0, -1, 0, -1, 0, -1, 0));
        s += hsum256(_mm256_and_ps(macc, odd));
    }
    return s;
}

static float dot_q4_0_q8_0(int64_t n, const void *w, const void *a) { return qdot(n, w, a, FMT_Q4_0); }
static float dot_q4_1_q8_1(int64_t n, const void *w, const void *a) { return qdot(n, w, a, FMT_Q4_1); }
static float dot_q8_0_q8_0(int64_t n, const void *w, const void *a) { return qdot(n, w, a, FMT_Q8_0); }

/* ---- float dots ------------------------------------------------------- */

/* Four accumulators hide the FMA latency; the tail goes element by element. */
static float dot_f32(int64_t n, const void *wv, const void *av) {
    const float *x = wv, *y = av;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static float dot_f16(int64_t n, const void *wv, const void *av) {
    const uint16_t *x = wv, *y = av;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), s0);
        s1 = _mm256_fmadd_ps(load_f16x8(x + i + 8), load_f16x8(y + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_f16x8(x + i + 16), load_f16x8(y + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_f16x8(x + i + 24), load_f16x8(y + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load_f16x8(x + i), load_f16x8(y + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += _cvtsh_ss(x[i]) * _cvtsh_ss(y[i]);
    return s;
}

/* ---- multi-row and tiles: one dot each (AVX2 has registers for no more) -- */

#define ROWS_OF(name, dot)                                                              \
    static void name(int64_t n, const void *w, size_t w_stride, const void *a, float *out, \
                     int nr) {                                                          \
        for (int r = 0; r < nr; r++) out[r] = dot(n, (const uint8_t *)w + r * w_stride, a); \
    }
ROWS_OF(rows_q4_0_q8_0, dot_q4_0_q8_0)
ROWS_OF(rows_q4_1_q8_1, dot_q4_1_q8_1)
ROWS_OF(rows_q8_0_q8_0, dot_q8_0_q8_0)
ROWS_OF(rows_f32, dot_f32)
ROWS_OF(rows_f16, dot_f16)

#define TILE_OF(name, dot)                                                               \
    static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, \
                     int nc, float *out, size_t ldo) {                                   \
        for (int c = 0; c < nc; c++)                                                     \
            for (int r = 0; r < nr; r++)                                                 \
                out[c * ldo + r] = dot(n, (const uint8_t *)w + r * ws, (const uint8_t *)a + c * as); \
    }
TILE_OF(tile_q4_0_q8_0, dot_q4_0_q8_0)
TILE_OF(tile_q4_1_q8_1, dot_q4_1_q8_1)
TILE_OF(tile_q8_0_q8_0, dot_q8_0_q8_0)
TILE_OF(tile_f32, dot_f32)
TILE_OF(tile_f16, dot_f16)

/* ---- activation quantizers -------------------------------------------- */

/* roundf in SIMD: truncate, then step one away from zero when the dropped
 * fraction is >= 0.5. v - trunc(v) is exact, so ties go exactly like roundf. */
static inline __m256 round_half_away(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    __m256 ge = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_add_ps(t, _mm256_and_ps(ge, step));
}

/* One block of 32 like the scalar reference: d = amax/127, id = 1/d,
 * q = roundf(x*id). Returns d (fp32) and the sum of q. */
static inline float quant_block(const float *x, int8_t *qs, int *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                              _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], vid)));
    /* sum of q: the values are small integers, exact in any order */
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    *sum = _mm_cvtsi128_si32(s4);
    /* s32 -> s8: the packs interleave 128-bit lanes, the permute restores order */
    __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, p8);
    return d;
}

static inline uint16_t to_fp16(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static inline void put_fp16(uint8_t *p, float f) {
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

static void quant_f16(const float *x, void *yv, int64_t n) {
    uint16_t *y = yv;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) y[i] = to_fp16(x[i]);
}

void fr_kernels_fill_avx2(fr_kernel_table *t) {
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
    t->dot_tile[FR_Q4_0] = tile_q4_0_q8_0;
    t->dot_tile[FR_Q4_1] = tile_q4_1_q8_1;
    t->dot_tile[FR_Q8_0] = tile_q8_0_q8_0;
    t->dot_tile[FR_F32] = tile_f32;
    t->dot_tile[FR_F16] = tile_f16;
    t->quant[FR_Q8_0] = quant_q8_0;
    t->quant[FR_Q8_1] = quant_q8_1;
    t->quant[FR_F16] = quant_f16;
}
