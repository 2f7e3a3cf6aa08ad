/*
 * quant.c - element types: the traits table, fp16/bf16 conversion, scalar
 * dequantization, the reference quantizers and the scalar reference dot
 * products that every SIMD kernel is tested against (see quant.h).
 *
 * Numerics. Activations are quantized exactly like ggml's reference
 * quantize_row_q8_0/q8_1 (amax/127 scale, roundf, fp16 scale; Q8_1's s is
 * computed from the fp32 scale) so our matmuls see the same integers as
 * llama.cpp. The reference dots accumulate block by block in float: the
 * integer part of a block is exact, then scaled by the product of the two
 * block scales. SIMD kernels differ only in float summation order.
 *
 * BF16 weights pair with F32 activations (no rounding of the activations,
 * no conversion pass); F16 weights pair with F16 activations like ggml.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include "quant.h"

/* ---- fp16 / bf16 ---------------------------------------------------- */

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fr_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t em = h & 0x7fff;
    if (em >= 0x7c00) /* inf, or nan made quiet (as F16C does) */
        return bits_f32(sign | 0x7f800000 | (em & 0x3ff) << 13 | (em > 0x7c00 ? 0x400000 : 0));
    /* Placing exponent+mantissa in a float's low bits gives the value times
     * 2^-112, subnormals included; the power-of-two multiply is exact. */
    return bits_f32(sign | f32_bits(bits_f32(em << 13) * 0x1p112f));
}

uint16_t fr_fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) /* nan: quiet, keep the top payload bits */
        return sign | 0x7e00 | ((ax >> 13) & 0x3ff);
    if (ax >= 0x477ff000) /* >= 65520 rounds to inf (tie goes to even = inf) */
        return sign | 0x7c00;
    if (ax >= 0x38800000) { /* normal half: rebias exponent by 112, round mantissa */
        uint32_t m = ax - 0x38000000;
        return sign | (uint16_t)((m + 0xfff + ((m >> 13) & 1)) >> 13);
    }
    /* Subnormal half k * 2^-24: k = mantissa * 2^(e-126), rounded to even. */
    uint32_t e = ax >> 23;
    if (e < 102) return sign; /* below 2^-25: rounds to zero */
    uint32_t mant = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t k = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (k & 1))) k++;
    return sign | (uint16_t)k;
}

float fr_bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t fr_fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    /* Round to nearest even; a carry into the exponent is the right answer
     * (up to inf), and subnormals round like any other value. */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---- block access ------------------------------------------------------ */

/* Quantized rows may sit at any byte address (a row of Q4_0 is 18 bytes per
 * block; tests use odd offsets), so blocks are addressed as bytes and their
 * fp16 fields are read and written with memcpy. Float rows must be aligned
 * to their element size. */
static inline float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return fr_fp16_to_fp32(h);
}

static inline void put_half(uint8_t *p, float f) {
    uint16_t h = fr_fp32_to_fp16(f);
    memcpy(p, &h, 2);
}

/* Offsets of the fields; d is always at 0. */
enum {
    Q4_0_QS = offsetof(block_q4_0, qs),
    Q4_1_M = offsetof(block_q4_1, m), Q4_1_QS = offsetof(block_q4_1, qs),
    Q8_0_QS = offsetof(block_q8_0, qs),
    Q8_1_S = offsetof(block_q8_1, s), Q8_1_QS = offsetof(block_q8_1, qs),
};

/* ---- dequantization ------------------------------------------------- */

static void dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = fr_fp16_to_fp32(h[i]);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = fr_bf16_to_fp32(h[i]);
}

/* 4-bit blocks: the low nibble of qs[j] is element j, the high nibble
 * element j + 16. */
static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, b += sizeof(block_q4_0), dst += QK4_0) {
        float d = half_at(b);
        const uint8_t *qs = b + Q4_0_QS;
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = d * ((qs[j] & 15) - 8);
            dst[j + QK4_0 / 2] = d * ((qs[j] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++, b += sizeof(block_q4_1), dst += QK4_1) {
        float d = half_at(b), m = half_at(b + Q4_1_M);
        const uint8_t *qs = b + Q4_1_QS;
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[j] = d * (qs[j] & 15) + m;
            dst[j + QK4_1 / 2] = d * (qs[j] >> 4) + m;
        }
    }
}

/* Q8_0 and Q8_1 differ only in header size (Q8_1's s is not needed). */
static void dequant_8bit(const uint8_t *b, size_t blk, size_t qs_off, float *dst, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, b += blk, dst += 32) {
        float d = half_at(b);
        const int8_t *qs = (const int8_t *)(b + qs_off);
        for (int j = 0; j < 32; j++) dst[j] = d * qs[j];
    }
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    dequant_8bit(src, sizeof(block_q8_0), Q8_0_QS, dst, n);
}

static void dequant_q8_1(const void *src, float *dst, int64_t n) {
    dequant_8bit(src, sizeof(block_q8_1), Q8_1_QS, dst, n);
}

/* ---- reference quantizers ------------------------------------------- */

static void quant_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void quant_f16(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = fr_fp32_to_fp16(src[i]);
}

static void quant_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = fr_fp32_to_bf16(src[i]);
}

/* Symmetric 8-bit block: d = amax/127, q = roundf(x / d) (ties away from
 * zero). Returns d in fp32 and the sum of q (for Q8_1). */
static float quant_block_8bit(const float *x, int8_t *qs, int *sum) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int s = 0;
    for (int j = 0; j < 32; j++) {
        qs[j] = (int8_t)roundf(x[j] * id);
        s += qs[j];
    }
    *sum = s;
    return d;
}

static void quant_q8_0(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, b += sizeof(block_q8_0)) {
        int sum;
        put_half(b, quant_block_8bit(src + i * QK8_0, (int8_t *)(b + Q8_0_QS), &sum));
    }
}

/* s uses the fp32 d, as ggml's reference does (best agreement with it). */
static void quant_q8_1(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++, b += sizeof(block_q8_1)) {
        int sum;
        float d = quant_block_8bit(src + i * QK8_1, (int8_t *)(b + Q8_1_QS), &sum);
        put_half(b, d);
        put_half(b + Q8_1_S, (float)sum * d);
    }
}

/* Packs 32 codes (0..15) into the nibble order described above. */
static void pack_nibbles(const uint8_t *q, uint8_t *qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
}

/* Q4_0: the value of largest magnitude maps to code 0 (d = it / -8), so the
 * full range -8..7 is used on the side that matters. */
static void quant_q4_0(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, b += sizeof(block_q4_0)) {
        const float *x = src + i * QK4_0;
        float big = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > fabsf(big)) big = x[j];
        float d = big / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t q[32];
        for (int j = 0; j < 32; j++) {
            int v = (int)(x[j] * id + 8.5f);
            q[j] = (uint8_t)(v < 0 ? 0 : v > 15 ? 15 : v);
        }
        put_half(b, d);
        pack_nibbles(q, b + Q4_0_QS);
    }
}

/* Q4_1: x = d*q + m with m the block minimum and d = range / 15. */
static void quant_q4_1(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK4_1; i++, b += sizeof(block_q4_1)) {
        const float *x = src + i * QK4_1;
        float lo = x[0], hi = x[0];
        for (int j = 1; j < 32; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
        }
        float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t q[32];
        for (int j = 0; j < 32; j++) {
            int v = (int)((x[j] - lo) * id + 0.5f);
            q[j] = (uint8_t)(v > 15 ? 15 : v);
        }
        put_half(b, d);
        put_half(b + Q4_1_M, lo);
        pack_nibbles(q, b + Q4_1_QS);
    }
}

/* ---- reference dot products ----------------------------------------- */

static float dot_f32(int64_t n, const void *w, const void *a) {
    const float *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

static float dot_f16(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += fr_fp16_to_fp32(x[i]) * fr_fp16_to_fp32(y[i]);
    return s;
}

static float dot_bf16_f32(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w;
    const float *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += fr_bf16_to_fp32(x[i]) * y[i];
    return s;
}

/* Q4_0 . Q8_0: sum_j d_w (q_j - 8) * d_a a_j per block. */
static float dot_q4_0_q8_0(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / QK4_0; i++, x += sizeof(block_q4_0), y += sizeof(block_q8_0)) {
        const uint8_t *qw = x + Q4_0_QS;
        const int8_t *qa = (const int8_t *)(y + Q8_0_QS);
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += ((qw[j] & 15) - 8) * qa[j] + ((qw[j] >> 4) - 8) * qa[j + 16];
        s += half_at(x) * half_at(y) * (float)isum;
    }
    return s;
}

/* Q4_1 . Q8_1: sum_j (d_w q_j + m) d_a a_j = d_w d_a sum q_j a_j + m s_a,
 * where s_a = d_a sum a_j is carried by the activation block. */
static float dot_q4_1_q8_1(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / QK4_1; i++, x += sizeof(block_q4_1), y += sizeof(block_q8_1)) {
        const uint8_t *qw = x + Q4_1_QS;
        const int8_t *qa = (const int8_t *)(y + Q8_1_QS);
        int isum = 0;
        for (int j = 0; j < 16; j++) isum += (qw[j] & 15) * qa[j] + (qw[j] >> 4) * qa[j + 16];
        s += half_at(x) * half_at(y) * (float)isum + half_at(x + Q4_1_M) * half_at(y + Q8_1_S);
    }
    return s;
}

static float dot_q8_0_q8_0(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / QK8_0; i++, x += sizeof(block_q8_0), y += sizeof(block_q8_0)) {
        const int8_t *qw = (const int8_t *)(x + Q8_0_QS), *qa = (const int8_t *)(y + Q8_0_QS);
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += qw[j] * qa[j];
        s += half_at(x) * half_at(y) * (float)isum;
    }
    return s;
}

/* The scalar twins of the multi-row kernels: one dot per row. */
#define DOT_ROWS_REF(name, dot)                                                         \
    static void name(int64_t n, const void *w, size_t w_stride, const void *a, float *out, \
                     int nr) {                                                          \
        for (int r = 0; r < nr; r++) out[r] = dot(n, (const uint8_t *)w + r * w_stride, a); \
    }
/* ... and of the tile kernels: one dot per (row, activation) pair. */
#define DOT_TILE_REF(name, dot)                                                          \
    static void name(int64_t n, const void *w, size_t w_stride, int nr, const void *a,   \
                     size_t a_stride, int nc, float *out, size_t ldo) {                  \
        for (int c = 0; c < nc; c++)                                                     \
            for (int r = 0; r < nr; r++)                                                 \
                out[c * ldo + r] = dot(n, (const uint8_t *)w + r * w_stride,             \
                                       (const uint8_t *)a + c * a_stride);               \
    }
DOT_TILE_REF(tile_f32, dot_f32)
DOT_TILE_REF(tile_f16, dot_f16)
DOT_TILE_REF(tile_bf16_f32, dot_bf16_f32)
DOT_TILE_REF(tile_q4_0_q8_0, dot_q4_0_q8_0)
DOT_TILE_REF(tile_q4_1_q8_1, dot_q4_1_q8_1)
DOT_TILE_REF(tile_q8_0_q8_0, dot_q8_0_q8_0)

DOT_ROWS_REF(rows_f32, dot_f32)
DOT_ROWS_REF(rows_f16, dot_f16)
DOT_ROWS_REF(rows_bf16_f32, dot_bf16_f32)
DOT_ROWS_REF(rows_q4_0_q8_0, dot_q4_0_q8_0)
DOT_ROWS_REF(rows_q4_1_q8_1, dot_q4_1_q8_1)
DOT_ROWS_REF(rows_q8_0_q8_0, dot_q8_0_q8_0)

/* ---- the table -------------------------------------------------------- */

/* Implemented types start with dot = dot_ref so the table works before any
 * fr_kernels_select. */
#define IMPL(id, nm, bl, by, deq, q, act, dotf, rowsf, tilef)                            \
    [id] = { .name = nm, .blck = bl, .bytes = by, .dequant = deq, .quant = q,            \
             .act_type = act, .dot = dotf, .dot_ref = dotf, .quant_fast = q,             \
             .dot_rows = rowsf, .dot_rows_ref = rowsf, .dot_tile = tilef,                \
             .dot_tile_ref = tilef }
/* Known types without kernels: sizes so a loader can skip or reject them
 * with a clear message; act_type says what their kernels would pair with. */
#define KNOWN(id, nm, bl, by, act) [id] = { .name = nm, .blck = bl, .bytes = by, .act_type = act }

static fr_type_traits traits[FR_TYPE_COUNT] = {
    IMPL(FR_F32, "F32", 1, 4, dequant_f32, quant_f32, FR_F32, dot_f32, rows_f32, tile_f32),
    IMPL(FR_F16, "F16", 1, 2, dequant_f16, quant_f16, FR_F16, dot_f16, rows_f16, tile_f16),
    IMPL(FR_BF16, "BF16", 1, 2, dequant_bf16, quant_bf16, FR_F32, dot_bf16_f32, rows_bf16_f32, tile_bf16_f32),
    IMPL(FR_Q4_0, "Q4_0", QK4_0, sizeof(block_q4_0), dequant_q4_0, quant_q4_0, FR_Q8_0,
         dot_q4_0_q8_0, rows_q4_0_q8_0, tile_q4_0_q8_0),
    IMPL(FR_Q4_1, "Q4_1", QK4_1, sizeof(block_q4_1), dequant_q4_1, quant_q4_1, FR_Q8_1,
         dot_q4_1_q8_1, rows_q4_1_q8_1, tile_q4_1_q8_1),
    IMPL(FR_Q8_0, "Q8_0", QK8_0, sizeof(block_q8_0), dequant_q8_0, quant_q8_0,
         FR_Q8_0, dot_q8_0_q8_0, rows_q8_0_q8_0, tile_q8_0_q8_0),
    /* Q8_1 is an activation format: it dequantizes but has no dot. */
    IMPL(FR_Q8_1, "Q8_1", QK8_1, sizeof(block_q8_1), dequant_q8_1, quant_q8_1,
         FR_Q8_1, NULL, NULL, NULL),
    KNOWN(FR_Q5_0, "Q5_0", 32, 22, FR_Q8_0),
    KNOWN(FR_Q5_1, "Q5_1", 32, 24, FR_Q8_1),
    KNOWN(FR_Q2_K, "Q2_K", 256, 84, FR_Q8_K),
    KNOWN(FR_Q3_K, "Q3_K", 256, 110, FR_Q8_K),
    KNOWN(FR_Q4_K, "Q4_K", 256, 144, FR_Q8_K),
    KNOWN(FR_Q5_K, "Q5_K", 256, 176, FR_Q8_K),
    KNOWN(FR_Q6_K, "Q6_K", 256, 210, FR_Q8_K),
    KNOWN(FR_Q8_K, "Q8_K", 256, 292, FR_Q8_K),
    KNOWN(FR_IQ2_XXS, "IQ2_XXS", 256, 66, FR_Q8_K),
    KNOWN(FR_IQ2_XS, "IQ2_XS", 256, 74, FR_Q8_K),
    KNOWN(FR_IQ3_XXS, "IQ3_XXS", 256, 98, FR_Q8_K),
    KNOWN(FR_IQ1_S, "IQ1_S", 256, 50, FR_Q8_K),
    KNOWN(FR_IQ4_NL, "IQ4_NL", 32, 18, FR_Q8_0),
    KNOWN(FR_IQ3_S, "IQ3_S", 256, 110, FR_Q8_K),
    KNOWN(FR_IQ2_S, "IQ2_S", 256, 82, FR_Q8_K),
    KNOWN(FR_IQ4_XS, "IQ4_XS", 256, 136, FR_Q8_K),
    KNOWN(FR_I8, "I8", 1, 1, FR_I8),
    KNOWN(FR_I16, "I16", 1, 2, FR_I16),
    KNOWN(FR_I32, "I32", 1, 4, FR_I32),
    KNOWN(FR_I64, "I64", 1, 8, FR_I64),
    KNOWN(FR_F64, "F64", 1, 8, FR_F64),
    KNOWN(FR_IQ1_M, "IQ1_M", 256, 56, FR_Q8_K),
    KNOWN(FR_TQ1_0, "TQ1_0", 256, 54, FR_Q8_K),
    KNOWN(FR_TQ2_0, "TQ2_0", 256, 66, FR_Q8_K),
    KNOWN(FR_MXFP4, "MXFP4", 32, 17, FR_Q8_0),
};

const fr_type_traits *fr_traits(uint32_t type) {
    if (type >= FR_TYPE_COUNT || !traits[type].name) return NULL;
    return &traits[type];
}

size_t fr_row_bytes(uint32_t type, int64_t n) {
    const fr_type_traits *t = fr_traits(type);
    if (!t || n < 0) return 0;
    return (size_t)(n / t->blck) * t->bytes;
}

void fr_traits_set_kernels(uint32_t type, fr_dot_fn dot, fr_dot_rows_fn dot_rows,
                           fr_dot_tile_fn dot_tile, fr_quant_fn quant_fast) {
    if (type >= FR_TYPE_COUNT || !traits[type].dequant) return;
    traits[type].dot = dot;
    traits[type].dot_rows = dot_rows;
    traits[type].dot_tile = dot_tile;
    traits[type].quant_fast = quant_fast;
}
