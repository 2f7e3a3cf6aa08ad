/*
 * quant.c - element types: the traits table, fp16/bf16 conversion, scalar
 * dequantization, the reference quantizers and the scalar reference dot
 * products that every SIMD kernel is tested against (see quant.h).
 *
 * Numerics. Activations are quantized exactly like ggml's reference
 * quantize_row_q8_0/q8_1 (amax/127 scale, roundf, fp16 scale; Q8_1's s is
 * computed from the fp32 scale) so our matmuls see the same integers as
 * llama.cpp. Q8_K (the K-quants' activations) is ggml's
 * quantize_row_q8_K_ref to the bit (see quant_q8_k; llama.cpp uses it on
 * x86). The reference dots accumulate block by block in float: the
 * integer part of a block is exact, then scaled by the product of the two
 * block scales (Q4_K: minus dmin d_a times the exact min sum). SIMD kernels
 * differ only in float summation order.
 *
 * Dequantization of Q5_0, Q4_K and Q6_K does the same float operations as
 * ggml's and the gguf package's (d * sc first), and was checked bit for bit
 * against the gguf package on every such tensor of Gemma 3 270M Q4_K_M. The
 * weight quantizers of those types are plain ones for tests and benches
 * (llama-quantize searches for better scales).
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
    Q5_0_QH = offsetof(block_q5_0, qh), Q5_0_QS = offsetof(block_q5_0, qs),
    Q4_K_DMIN = offsetof(block_q4_K, dmin), Q4_K_SC = offsetof(block_q4_K, scales),
    Q4_K_QS = offsetof(block_q4_K, qs),
    Q6_K_QL = offsetof(block_q6_K, ql), Q6_K_QH = offsetof(block_q6_K, qh),
    Q6_K_SC = offsetof(block_q6_K, scales), Q6_K_D = offsetof(block_q6_K, d),
    Q8_K_QS = offsetof(block_q8_K, qs), Q8_K_BS = offsetof(block_q8_K, bsums),
};

static inline uint32_t u32_at(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float f32_at(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

/* Q4_K's 6-bit sub-block scales and mins (layout in quant.h). */
static void q4_k_scales(const uint8_t *s, int sc[8], int m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 15) | (s[j] >> 6) << 4;
        m[j + 4] = (s[j + 8] >> 4) | (s[j + 4] >> 6) << 4;
    }
}

/* The 6-bit codes (0..63) of a Q6_K block in element order. */
static void q6_k_codes(const uint8_t *b, uint8_t q[QK_K]) {
    const uint8_t *ql = b + Q6_K_QL, *qh = b + Q6_K_QH;
    for (int h = 0; h < 2; h++, ql += 64, qh += 32, q += 128)
        for (int l = 0; l < 32; l++) {
            q[l] = (uint8_t)((ql[l] & 15) | (qh[l] & 3) << 4);
            q[l + 32] = (uint8_t)((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4);
            q[l + 64] = (uint8_t)((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4);
            q[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (qh[l] >> 6) << 4);
        }
}

/* The 5-bit codes (0..31) of a Q5_0 block in element order. */
static void q5_0_codes(const uint8_t *b, uint8_t q[QK5_0]) {
    uint32_t qh = u32_at(b + Q5_0_QH);
    const uint8_t *qs = b + Q5_0_QS;
    for (int j = 0; j < 16; j++) {
        q[j] = (uint8_t)((qs[j] & 15) | (qh >> j & 1) << 4);
        q[j + 16] = (uint8_t)((qs[j] >> 4) | (qh >> (j + 16) & 1) << 4);
    }
}

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

/* The K-quant and Q5_0 dequantizers compute d * sc first, then times the
 * code, minus dmin * m for Q4_K: the same float operations as ggml's and
 * the gguf package's dequantizers, so the results are bit-identical. */
static void dequant_q5_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, b += sizeof(block_q5_0), dst += QK5_0) {
        float d = half_at(b);
        uint8_t q[QK5_0];
        q5_0_codes(b, q);
        for (int j = 0; j < QK5_0; j++) dst[j] = d * (q[j] - 16);
    }
}

static void dequant_q4_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q4_K), dst += QK_K) {
        float d = half_at(b), dmin = half_at(b + Q4_K_DMIN);
        int sc[8], m[8];
        q4_k_scales(b + Q4_K_SC, sc, m);
        const uint8_t *qs = b + Q4_K_QS;
        for (int c = 0; c < 4; c++) {
            float d0 = d * sc[2 * c], m0 = dmin * m[2 * c];
            float d1 = d * sc[2 * c + 1], m1 = dmin * m[2 * c + 1];
            for (int l = 0; l < 32; l++) {
                dst[64 * c + l] = d0 * (qs[32 * c + l] & 15) - m0;
                dst[64 * c + 32 + l] = d1 * (qs[32 * c + l] >> 4) - m1;
            }
        }
    }
}

static void dequant_q6_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q6_K), dst += QK_K) {
        float d = half_at(b + Q6_K_D);
        const int8_t *sc = (const int8_t *)(b + Q6_K_SC);
        uint8_t q[QK_K];
        q6_k_codes(b, q);
        for (int e = 0; e < QK_K; e++) dst[e] = d * sc[e / 16] * (q[e] - 32);
    }
}

static void dequant_q8_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q8_K), dst += QK_K) {
        float d = f32_at(b);
        const int8_t *qs = (const int8_t *)(b + Q8_K_QS);
        for (int j = 0; j < QK_K; j++) dst[j] = d * qs[j];
    }
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

/* Q5_0: like Q4_0, the value of largest magnitude maps to code 0 (d = it
 * / -16). */
static void quant_q5_0(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, b += sizeof(block_q5_0)) {
        const float *x = src + i * QK5_0;
        float big = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > fabsf(big)) big = x[j];
        float d = big / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t q[32];
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++) {
            int v = (int)(x[j] * id + 16.5f);
            q[j] = (uint8_t)(v < 0 ? 0 : v > 31 ? 31 : v);
            qh |= (uint32_t)(q[j] >> 4) << j;
            q[j] &= 15;
        }
        put_half(b, d);
        memcpy(b + Q5_0_QH, &qh, 4);
        pack_nibbles(q, b + Q5_0_QS);
    }
}

static int clamp_round(float v, int lo, int hi) {
    int q = (int)roundf(v);
    return q < lo ? lo : q > hi ? hi : q;
}

/* Q4_K, plainly (no search for the best scales as llama-quantize does):
 * each sub-block spans [min(0, lo), hi] in 15 steps, its scale and min
 * rounded to 6 bits of the block's fp16 d and dmin, then each value to the
 * nearest code of its sub-block. */
static void quant_q4_k(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q4_K)) {
        const float *x = src + i * QK_K;
        float scale[8], mn[8], smax = 0, mmax = 0;
        for (int j = 0; j < 8; j++) {
            float lo = 0, hi = 0;
            for (int l = 0; l < 32; l++) lo = fminf(lo, x[32 * j + l]), hi = fmaxf(hi, x[32 * j + l]);
            scale[j] = (hi - lo) / 15.0f, mn[j] = -lo;
            smax = fmaxf(smax, scale[j]), mmax = fmaxf(mmax, mn[j]);
        }
        put_half(b, smax / 63.0f);
        put_half(b + Q4_K_DMIN, mmax / 63.0f);
        float d = half_at(b), dmin = half_at(b + Q4_K_DMIN);
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = d > 0 ? clamp_round(scale[j] / d, 0, 63) : 0;
            m[j] = dmin > 0 ? clamp_round(mn[j] / dmin, 0, 63) : 0;
        }
        uint8_t *s = b + Q4_K_SC;
        for (int j = 0; j < 4; j++) {
            s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
            s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
            s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
        }
        uint8_t q[QK_K];
        for (int e = 0; e < QK_K; e++) {
            float ds = d * sc[e / 32], ms = dmin * m[e / 32];
            q[e] = (uint8_t)(ds > 0 ? clamp_round((x[e] + ms) / ds, 0, 15) : 0);
        }
        uint8_t *qs = b + Q4_K_QS;
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
}

/* Q6_K: each group of 16 maps its value of largest magnitude to code 0
 * (scale = it / -32); the scales are rounded to int8 steps of the block's
 * fp16 d = max |scale| / 127. */
static void quant_q6_k(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q6_K)) {
        const float *x = src + i * QK_K;
        float scale[16], amax = 0;
        for (int k = 0; k < 16; k++) {
            float big = 0;
            for (int l = 0; l < 16; l++)
                if (fabsf(x[16 * k + l]) > fabsf(big)) big = x[16 * k + l];
            scale[k] = big / -32.0f;
            amax = fmaxf(amax, fabsf(scale[k]));
        }
        put_half(b + Q6_K_D, amax / 127.0f);
        float d = half_at(b + Q6_K_D);
        int8_t *sc = (int8_t *)(b + Q6_K_SC);
        for (int k = 0; k < 16; k++) sc[k] = (int8_t)(d > 0 ? clamp_round(scale[k] / d, -128, 127) : 0);
        uint8_t q[QK_K];
        for (int e = 0; e < QK_K; e++) {
            float ds = d * sc[e / 16];
            q[e] = (uint8_t)(ds != 0 ? clamp_round(x[e] / ds + 32, 0, 63) : 32);
        }
        uint8_t *ql = b + Q6_K_QL, *qh = b + Q6_K_QH;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
            const uint8_t *qq = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((qq[l] & 15) | (qq[l + 64] & 15) << 4);
                ql[l + 32] = (uint8_t)((qq[l + 32] & 15) | (qq[l + 96] & 15) << 4);
                qh[l] = (uint8_t)(qq[l] >> 4 | (qq[l + 32] >> 4) << 2 | (qq[l + 64] >> 4) << 4 |
                                  (qq[l + 96] >> 4) << 6);
            }
        }
    }
}

/* Q8_K exactly as ggml's quantize_row_q8_K_ref, which llama.cpp uses on
 * x86, so the integers our K-quant matmuls see are llama.cpp's: max = the
 * first value of largest magnitude, iscale = -127 / max (the value max
 * becomes code -127), q = iscale * x rounded to nearest, ties to even (as
 * rintf in the default rounding mode; ggml's nearest_int is the same),
 * capped at 127, d = 1 / iscale (fp32; note it has the opposite sign of
 * max). An all-zero block gets d = 0, zero codes and sums, and so does a
 * block too small for iscale to be finite (max below ~3.7e-37, where
 * ggml's codes would be undefined). */
static void quant_q8_k(const float *src, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q8_K)) {
        const float *x = src + i * QK_K;
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
        int8_t *qs = (int8_t *)(b + Q8_K_QS);
        int16_t bsums[QK_K / 16];
        float d = 0, iscale = amax != 0 ? -127.0f / max : 0;
        if (amax == 0 || isinf(iscale)) {
            memset(qs, 0, QK_K);
            memset(bsums, 0, sizeof bsums);
        } else {
            for (int j = 0; j < QK_K; j++) {
                int v = (int)rintf(iscale * x[j]);
                qs[j] = (int8_t)(v > 127 ? 127 : v);
            }
            for (int k = 0; k < QK_K / 16; k++) {
                int sum = 0;
                for (int l = 0; l < 16; l++) sum += qs[16 * k + l];
                bsums[k] = (int16_t)sum;
            }
            d = 1.0f / iscale;
        }
        memcpy(b, &d, 4);
        memcpy(b + Q8_K_BS, bsums, sizeof bsums);
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

/* Q5_0 . Q8_0: sum_j d_w (q_j - 16) * d_a a_j per block. */
static float dot_q5_0_q8_0(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / QK5_0; i++, x += sizeof(block_q5_0), y += sizeof(block_q8_0)) {
        uint8_t q[QK5_0];
        q5_0_codes(x, q);
        const int8_t *qa = (const int8_t *)(y + Q8_0_QS);
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += (q[j] - 16) * qa[j];
        s += half_at(x) * half_at(y) * (float)isum;
    }
    return s;
}

/* Q4_K . Q8_K per block: d_w d_a sum_j sc_j sum q a - dmin d_a sum_j m_j
 * sum a, both integer sums exact (the kernels take sum a from bsums). */
static float dot_q4_k_q8_k(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / QK_K; i++, x += sizeof(block_q4_K), y += sizeof(block_q8_K)) {
        int sc[8], m[8];
        q4_k_scales(x + Q4_K_SC, sc, m);
        const uint8_t *qs = x + Q4_K_QS;
        const int8_t *qa = (const int8_t *)(y + Q8_K_QS);
        int isum = 0, msum = 0;
        for (int c = 0; c < 4; c++) {
            int s0 = 0, s1 = 0, a0 = 0, a1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (qs[32 * c + l] & 15) * qa[64 * c + l];
                s1 += (qs[32 * c + l] >> 4) * qa[64 * c + 32 + l];
                a0 += qa[64 * c + l];
                a1 += qa[64 * c + 32 + l];
            }
            isum += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
            msum += m[2 * c] * a0 + m[2 * c + 1] * a1;
        }
        float da = f32_at(y);
        s += half_at(x) * da * (float)isum - half_at(x + Q4_K_DMIN) * da * (float)msum;
    }
    return s;
}

/* Q6_K . Q8_K per block: d_w d_a sum_k sc_k sum (q - 32) a (exact integer). */
static float dot_q6_k_q8_k(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / QK_K; i++, x += sizeof(block_q6_K), y += sizeof(block_q8_K)) {
        uint8_t q[QK_K];
        q6_k_codes(x, q);
        const int8_t *sc = (const int8_t *)(x + Q6_K_SC), *qa = (const int8_t *)(y + Q8_K_QS);
        int isum = 0;
        for (int k = 0; k < 16; k++) {
            int sk = 0;
            for (int l = 0; l < 16; l++) sk += (q[16 * k + l] - 32) * qa[16 * k + l];
            isum += sc[k] * sk;
        }
        s += half_at(x + Q6_K_D) * f32_at(y) * (float)isum;
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
DOT_TILE_REF(tile_q5_0_q8_0, dot_q5_0_q8_0)
DOT_TILE_REF(tile_q4_k_q8_k, dot_q4_k_q8_k)
DOT_TILE_REF(tile_q6_k_q8_k, dot_q6_k_q8_k)

DOT_ROWS_REF(rows_f32, dot_f32)
DOT_ROWS_REF(rows_f16, dot_f16)
DOT_ROWS_REF(rows_bf16_f32, dot_bf16_f32)
DOT_ROWS_REF(rows_q4_0_q8_0, dot_q4_0_q8_0)
DOT_ROWS_REF(rows_q4_1_q8_1, dot_q4_1_q8_1)
DOT_ROWS_REF(rows_q8_0_q8_0, dot_q8_0_q8_0)
DOT_ROWS_REF(rows_q5_0_q8_0, dot_q5_0_q8_0)
DOT_ROWS_REF(rows_q4_k_q8_k, dot_q4_k_q8_k)
DOT_ROWS_REF(rows_q6_k_q8_k, dot_q6_k_q8_k)

/* ---- block-exact dots ---------------------------------------------------
 *
 * The arithmetic of the AMX level (kernels_amx.c), whose tile unit hands
 * back one exact integer sum per block: for each block in order,
 *   acc = fma(d_w * d_a, (float) sum_i w_i a_i, acc)   (then, for Q4_1,
 *   acc = fma(m_w, s_a, acc)),
 * with w_i the signed codes. These scalar twins are what the tests hold the
 * AMX level's dot_rows and dot_tile to, bit for bit. d_w * d_a is a product
 * of two fp16 values, exact in fp32, so only the FMAs round. */
static void signed_codes(uint32_t type, const uint8_t *b, int8_t q[32]) {
    uint8_t u[32];
    int offset = 0;
    switch (type) {
    case FR_Q8_0: memcpy(q, b + Q8_0_QS, 32); return;
    case FR_Q5_0: q5_0_codes(b, u); offset = 16; break;
    case FR_Q4_0:
    case FR_Q4_1: {
        const uint8_t *qs = b + (type == FR_Q4_0 ? Q4_0_QS : Q4_1_QS);
        for (int j = 0; j < 16; j++) u[j] = qs[j] & 15, u[j + 16] = qs[j] >> 4;
        offset = type == FR_Q4_0 ? 8 : 0;
        break;
    }
    }
    for (int j = 0; j < 32; j++) q[j] = (int8_t)(u[j] - offset);
}

static float dot_exact(uint32_t type, int64_t n, const uint8_t *x, const uint8_t *y) {
    const int q41 = type == FR_Q4_1;
    const size_t wb = type == FR_Q8_0 ? sizeof(block_q8_0) : type == FR_Q4_1 ? sizeof(block_q4_1)
                      : type == FR_Q4_0 ? sizeof(block_q4_0) : sizeof(block_q5_0);
    const size_t ab = q41 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t qa_off = q41 ? Q8_1_QS : Q8_0_QS;
    float acc = 0;
    for (int64_t i = 0; i < n / 32; i++, x += wb, y += ab) {
        int8_t q[32];
        signed_codes(type, x, q);
        const int8_t *qa = (const int8_t *)(y + qa_off);
        int32_t isum = 0;
        for (int j = 0; j < 32; j++) isum += q[j] * qa[j];
        float dd = half_at(x) * half_at(y);
        acc = fmaf(dd, (float)isum, acc);
        if (q41) acc = fmaf(half_at(x + Q4_1_M), half_at(y + Q8_1_S), acc);
    }
    return acc;
}

/* Q4_K at the AMX level: per super-block the exact integers
 * isum = sum_j sc_j (sum over sub-block j of q a) and msum = sum_j m_j
 * (sum over j of a), then acc = fma(d d_a, isum, acc) and
 * acc = fma(-(dmin d_a), msum, acc). */
static float dot_exact_q4_k(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK_K; i++, x += sizeof(block_q4_K), y += sizeof(block_q8_K)) {
        int sc[8], m[8];
        q4_k_scales(x + Q4_K_SC, sc, m);
        int32_t isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *qs = x + Q4_K_QS + 32 * (j / 2);
            const int8_t *qa = (const int8_t *)(y + Q8_K_QS) + 32 * j;
            int32_t s = 0, as = 0;
            for (int l = 0; l < 32; l++) {
                s += (j & 1 ? qs[l] >> 4 : qs[l] & 15) * qa[l];
                as += qa[l];
            }
            isum += sc[j] * s;
            msum += m[j] * as;
        }
        float da = f32_at(y), dd = half_at(x) * da, dm = half_at(x + Q4_K_DMIN) * da;
        acc = fmaf(dd, (float)isum, acc);
        acc = fmaf(-dm, (float)msum, acc);
    }
    return acc;
}

/* Q6_K at the AMX level: per super-block the exact integer
 * isum = sum_k sc_k (sub-block k's (q - 32) . a), sub-blocks of 16, then
 * acc = fma(d d_a, isum, acc). */
static float dot_exact_q6_k(int64_t n, const void *w, const void *a) {
    const uint8_t *x = w, *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK_K; i++, x += sizeof(block_q6_K), y += sizeof(block_q8_K)) {
        uint8_t q[QK_K];
        q6_k_codes(x, q);
        const int8_t *sc = (const int8_t *)(x + Q6_K_SC), *qa = (const int8_t *)(y + Q8_K_QS);
        int32_t isum = 0;
        for (int k = 0; k < 16; k++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++) s += (q[16 * k + l] - 32) * qa[16 * k + l];
            isum += sc[k] * s;
        }
        float dd = half_at(x + Q6_K_D) * f32_at(y);
        acc = fmaf(dd, (float)isum, acc);
    }
    return acc;
}

static float dot_exact_q4_0(int64_t n, const void *w, const void *a) { return dot_exact(FR_Q4_0, n, w, a); }
static float dot_exact_q4_1(int64_t n, const void *w, const void *a) { return dot_exact(FR_Q4_1, n, w, a); }
static float dot_exact_q8_0(int64_t n, const void *w, const void *a) { return dot_exact(FR_Q8_0, n, w, a); }
static float dot_exact_q5_0(int64_t n, const void *w, const void *a) { return dot_exact(FR_Q5_0, n, w, a); }

fr_dot_fn fr_dot_exact_ref(uint32_t type) {
    switch (type) {
    case FR_Q4_0: return dot_exact_q4_0;
    case FR_Q4_1: return dot_exact_q4_1;
    case FR_Q8_0: return dot_exact_q8_0;
    case FR_Q5_0: return dot_exact_q5_0;
    case FR_Q4_K: return dot_exact_q4_k;
    case FR_Q6_K: return dot_exact_q6_k;
    }
    return NULL;
}

/* ---- rows packed in groups of 16 (layouts in quant.h) -------------------- */

/* Q4_K's group layout (quant.h): sub-block j's element e is the low
 * (j even) or high (j odd) nibble of code byte 32 (j / 2) + e. */
static void pack_group_q4_k(int64_t n, const uint8_t *src, size_t ws, int rows, uint8_t *dst) {
    for (int64_t b = 0; b < n / QK_K; b++) {
        uint8_t *o = dst + b * FR_Q4_K_GROUP_BLOCK;
        memset(o, 0, FR_Q4_K_GROUP_BLOCK); /* rows past `rows`: scales 0, codes 0 */
        for (int r = 0; r < rows; r++) {
            const uint8_t *x = src + (size_t)r * ws + b * sizeof(block_q4_K);
            memcpy(o + 2 * r, x, 2);                  /* d */
            memcpy(o + 32 + 2 * r, x + Q4_K_DMIN, 2); /* dmin */
            for (int k = 0; k < 12; k++) o[64 + 16 * k + r] = x[Q4_K_SC + k];
            for (int j = 0; j < 8; j++) {
                const uint8_t *qs = x + Q4_K_QS + 32 * (j / 2);
                for (int e = 0; e < 16; e++) {
                    int lo = j & 1 ? qs[e] >> 4 : qs[e] & 15, hi = j & 1 ? qs[16 + e] >> 4 : qs[16 + e] & 15;
                    o[256 + 256 * j + 64 * (e / 4) + 4 * r + e % 4] = (uint8_t)(lo | hi << 4);
                }
            }
        }
    }
}

/* Q8_0's group layout (quant.h): the codes as the 4-bit formats' unpack. */
static void pack_group_q8_0(int64_t n, const uint8_t *src, size_t ws, int rows, uint8_t *dst) {
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t *o = dst + b * FR_Q8_0_GROUP_BLOCK;
        memset(o, 0, FR_Q8_0_GROUP_BLOCK); /* rows past `rows`: scales 0, codes 0 */
        for (int r = 0; r < rows; r++) {
            const uint8_t *x = src + (size_t)r * ws + b * sizeof(block_q8_0);
            memcpy(o + 2 * r, x, 2); /* d */
            const uint8_t *qs = x + offsetof(block_q8_0, qs);
            for (int s = 0; s < 4; s++)
                for (int k = 0; k < 2; k++)
                    memcpy(o + 32 + 256 * (r / 8) + 64 * s + 32 * k + 4 * (r % 8), qs + 16 * k + 4 * s, 4);
        }
    }
}

void fr_pack_group(uint32_t type, int64_t n, const void *src, size_t ws, int rows, void *dst) {
    if (type == FR_Q4_K) {
        pack_group_q4_k(n, src, ws, rows, dst);
        return;
    }
    if (type == FR_Q8_0) {
        pack_group_q8_0(n, src, ws, rows, dst);
        return;
    }
    const size_t bb = fr_traits(type)->bytes, gb = 16 * bb, codes = gb - 256; /* the codes come last */
    const int qs = type == FR_Q4_0 ? 2 : type == FR_Q4_1 ? Q4_1_QS : 6;
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t *o = (uint8_t *)dst + b * gb;
        memset(o, 0, gb); /* rows past `rows`: scales 0, codes 0 */
        for (int r = 0; r < rows; r++) {
            const uint8_t *x = (const uint8_t *)src + (size_t)r * ws + b * bb;
            memcpy(o + 2 * r, x, 2); /* d */
            if (type == FR_Q4_1) memcpy(o + 32 + 2 * r, x + 2, 2); /* m */
            uint32_t qh = 0;
            if (type == FR_Q5_0) memcpy(&qh, x + 2, 4);
            for (int h = 0; h < 4; h++) {
                for (int c = 0; type == FR_Q5_0 && c < 4; c++)
                    o[32 + 4 * r + c] |= (uint8_t)((qh >> (4 * h + c) & 1) << 2 * h | (qh >> (16 + 4 * h + c) & 1) << (2 * h + 1));
                memcpy(o + codes + 64 * h + 4 * r, x + qs + 4 * h, 4);
            }
        }
    }
}

static void pack_rows(uint32_t type, int64_t n, const void *src, size_t ws, int64_t nr, void *dst) {
    const size_t group = (size_t)(n / fr_traits(type)->blck) * 16 * fr_traits(type)->bytes;
    for (int64_t g = 0; g < nr / 16; g++)
        fr_pack_group(type, n, (const uint8_t *)src + (size_t)g * 16 * ws, ws, 16, (uint8_t *)dst + g * group);
}

void fr_pack_q4_0(int64_t n, const void *src, size_t ws, int64_t nr, void *dst) { pack_rows(FR_Q4_0, n, src, ws, nr, dst); }
void fr_pack_q4_1(int64_t n, const void *src, size_t ws, int64_t nr, void *dst) { pack_rows(FR_Q4_1, n, src, ws, nr, dst); }
void fr_pack_q5_0(int64_t n, const void *src, size_t ws, int64_t nr, void *dst) { pack_rows(FR_Q5_0, n, src, ws, nr, dst); }
void fr_pack_q4_k(int64_t n, const void *src, size_t ws, int64_t nr, void *dst) {
    pack_rows(FR_Q4_K, n, src, ws, nr, dst);
}
void fr_pack_q8_0(int64_t n, const void *src, size_t ws, int64_t nr, void *dst) {
    pack_rows(FR_Q8_0, n, src, ws, nr, dst);
}

float fr_dot_prompt_ref(uint32_t type, int64_t n, const void *w, const uint16_t *x) {
    if (type != FR_Q4_1) return NAN;
    const uint8_t *b = w;
    float acc = 0;
    for (int64_t i = 0; i < n / QK4_1; i++, b += sizeof(block_q4_1), x += QK4_1) {
        const float d = half_at(b), m = half_at(b + Q4_1_M);
        const uint8_t *qs = b + Q4_1_QS;
        for (int j = 0; j < QK4_1; j++) {
            const float q = (float)(j < 16 ? qs[j] & 15 : qs[j - 16] >> 4);
            acc += fr_bf16_to_fp32(fr_fp32_to_bf16(fmaf(d, q, m))) * fr_bf16_to_fp32(x[j]);
        }
    }
    return acc;
}

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
    IMPL(FR_Q5_0, "Q5_0", QK5_0, sizeof(block_q5_0), dequant_q5_0, quant_q5_0, FR_Q8_0,
         dot_q5_0_q8_0, rows_q5_0_q8_0, tile_q5_0_q8_0),
    IMPL(FR_Q4_K, "Q4_K", QK_K, sizeof(block_q4_K), dequant_q4_k, quant_q4_k, FR_Q8_K,
         dot_q4_k_q8_k, rows_q4_k_q8_k, tile_q4_k_q8_k),
    IMPL(FR_Q6_K, "Q6_K", QK_K, sizeof(block_q6_K), dequant_q6_k, quant_q6_k, FR_Q8_K,
         dot_q6_k_q8_k, rows_q6_k_q8_k, tile_q6_k_q8_k),
    /* Q8_K is an activation format like Q8_1. */
    IMPL(FR_Q8_K, "Q8_K", QK_K, sizeof(block_q8_K), dequant_q8_k, quant_q8_k, FR_Q8_K,
         NULL, NULL, NULL),
    KNOWN(FR_Q5_1, "Q5_1", 32, 24, FR_Q8_1),
    KNOWN(FR_Q2_K, "Q2_K", 256, 84, FR_Q8_K),
    KNOWN(FR_Q3_K, "Q3_K", 256, 110, FR_Q8_K),
    KNOWN(FR_Q5_K, "Q5_K", 256, 176, FR_Q8_K),
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
                           fr_dot_tile_fn dot_tile, fr_quant_fn quant_fast, fr_quant_checked_fn quant_checked) {
    if (type >= FR_TYPE_COUNT || !traits[type].dequant) return;
    traits[type].dot = dot;
    traits[type].dot_rows = dot_rows;
    traits[type].dot_tile = dot_tile;
    traits[type].quant_fast = quant_fast;
    traits[type].quant_checked = quant_checked;
}

void fr_traits_set_packed(uint32_t type, fr_pack_fn pack, fr_dot_packed_fn dot_packed, fr_dot_prompt_fn dot_prompt) {
    if (type >= FR_TYPE_COUNT || !traits[type].dequant) return;
    traits[type].pack = pack;
    traits[type].dot_packed = pack ? dot_packed : NULL;
    traits[type].dot_prompt = pack ? dot_prompt : NULL;
}
