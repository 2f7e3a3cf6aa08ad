/*
 * simd512.h - the AVX-512 pieces shared by the kernel files built with the
 * AVX-512 flags (kernels_avx512.c, kernels_amx*.c, attn_avx512.c):
 * loading a pair of 32-element blocks into one register as VPDPBUSD
 * operands, the offset correction of the formats whose codes are stored
 * unsigned, the K-quants' code unpacking, and a 16 x 16 float transpose
 * in registers. Include only from files built with the AVX-512 flags
 * (block layouts: simd_common.h).
 */
#ifndef FR_SIMD512_H
#define FR_SIMD512_H

#include <immintrin.h>
#include <string.h>
#include "quant.h"
#include "simd_common.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Two consecutive blocks' 32 quant bytes (at q and q + stride): the first
 * block in the low half, the second in the high half, or zeros there when
 * there is no second block. */
static ALWAYS_INLINE __m512i load_pair(const uint8_t *q, size_t stride, int two) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)q);
    if (!two) return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)(q + stride)), 1);
}

/* Two 4-bit blocks' 16-byte quants: each block's bytes in two 128-bit
 * lanes, the second of which is shifted right by 4, so that the low
 * nibbles are elements 0..15 and the high nibbles 16..31 (the bits above
 * them are garbage until masked). */
static ALWAYS_INLINE __m512i q4_pair_raw(const uint8_t *qs, size_t stride, int two) {
    const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    __m512i v;
    if (two) {
        v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)qs));
        v = _mm512_mask_broadcast_i32x4(v, 0xff00, _mm_loadu_si128((const __m128i *)(qs + stride)));
    } else {
        v = _mm512_maskz_broadcast_i32x4(0x00ff, _mm_loadu_si128((const __m128i *)qs));
    }
    return _mm512_srlv_epi64(v, shift);
}

/* ... as 64 bytes 0..15 in element order. */
static ALWAYS_INLINE __m512i q4_pair(const uint8_t *qs, size_t stride, int two) {
    return _mm512_and_si512(q4_pair_raw(qs, stride, two), _mm512_set1_epi8(15));
}

/* The 32-element block formats: Q4_0 . Q8_0, Q4_1 . Q8_1, Q8_0 . Q8_0,
 * Q5_0 . Q8_0. fmt is a compile-time constant in every instance (the
 * functions are always inlined), so each format gets its own straight-line
 * code. */
enum { FMT_Q4_0, FMT_Q4_1, FMT_Q8_0, FMT_Q5_0 };

#define W_SZ(fmt) ((fmt) == FMT_Q4_0 ? Q4_0_SZ : (fmt) == FMT_Q4_1 ? Q4_1_SZ \
                   : (fmt) == FMT_Q5_0 ? Q5_0_SZ : Q8_0_SZ)
#define A_SZ(fmt) ((fmt) == FMT_Q4_1 ? Q8_1_SZ : Q8_0_SZ)
#define A_QS(fmt) ((fmt) == FMT_Q4_1 ? Q8_1_QS : Q8_0_QS)


/* A weight row's block pair as VPDPBUSD's unsigned operand. Q5_0's two
 * 32-bit qh fields, bit j = element j's 5th bit, are exactly a byte mask
 * over the pair's 64 codes in element order: add 16 where it is set. */
static ALWAYS_INLINE __m512i weight_pair(const uint8_t *x, int two, const int fmt) {
    if (fmt == FMT_Q4_1) return q4_pair(x + Q4_1_QS, Q4_1_SZ, two);
    if (fmt == FMT_Q4_0) return q4_pair(x + Q4_0_QS, Q4_0_SZ, two);
    if (fmt == FMT_Q5_0) {
        uint64_t hb = load32(x + Q5_0_QH);
        if (two) hb |= (uint64_t)load32(x + Q5_0_SZ + Q5_0_QH) << 32;
        __m512i high = _mm512_maskz_mov_epi8(_cvtu64_mask64(hb), _mm512_set1_epi8(16));
        /* nibble | high: VPTERNLOG (a & 15) | b */
        return _mm512_ternarylogic_epi32(q4_pair_raw(x + Q5_0_QS, Q5_0_SZ, two), high, _mm512_set1_epi8(15), 0xec);
    }
    return _mm512_xor_si512(load_pair(x + Q8_0_QS, Q8_0_SZ, two), _mm512_set1_epi8((char)0x80));
}

/* -sum(offset * a) per lane: 8 for Q4_0's nibbles, 16 for Q5_0's codes,
 * 128 for Q8_0's w ^ 0x80; the integer dot starts from it, which removes
 * the offset. */
static ALWAYS_INLINE __m512i pair_corr(__m512i av, const int fmt) {
    if (fmt == FMT_Q4_1) return _mm512_setzero_si512();
    __m512i offset = _mm512_set1_epi8(fmt == FMT_Q4_0 ? 8 : fmt == FMT_Q5_0 ? 16 : (char)0x80);
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, av));
}

/* ---- Q4_K ---- */

/* Chunk k (0..3) of a Q4_K super-block's codes: its 32 bytes in both
 * halves, the high half shifted to the high nibbles, so elements 64k ..
 * 64k + 63 (sub-blocks 2k and 2k + 1) in order, as u8 0..15. */
static ALWAYS_INLINE __m512i q4_k_codes(const uint8_t *x, int k) {
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x + Q4_K_QS + 32 * k)));
    return _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(15));
}

/* VPERMW indices: chunk k's 32 s16 pair sums take their sub-block scales
 * from words 2k, 2k+1 of [sc0..3, m0..3, sc4..7, m4..7] (sc_j is word j + 4
 * for j >= 4), 16 lanes each. */
#define W16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
static const int16_t perm_q4_k[4][32] __attribute__((aligned(64))) = {
    {W16(0), W16(1)}, {W16(2), W16(3)}, {W16(8), W16(9)}, {W16(10), W16(11)}};

/* ---- Q6_K ---- */

/* Half h of a Q6_K super-block's codes (u8 0..63) in element order: *lo =
 * elements 128h + 0..63, *hi = 128h + 64..127. The 64 bytes of ql give the
 * low 4 bits (low nibbles, then high nibbles); qh's 32 bytes, in both
 * halves of a register, give bits 0-1 / 2-3 (lo) and 4-5 / 6-7 (hi),
 * shifted to bits 4-5 and merged by VPTERNLOG (a | b & c). */
static ALWAYS_INLINE void q6_k_codes(const uint8_t *x, int h, __m512i *lo, __m512i *hi) {
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(0x30);
    const __m512i sl = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4), sr = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    __m512i l = _mm512_loadu_si512(x + Q6_K_QL + 64 * h);
    __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x + Q6_K_QH + 32 * h)));
    *lo = _mm512_ternarylogic_epi32(_mm512_and_si512(l, m4), _mm512_sllv_epi64(qh, sl), m2, 0xf8);
    *hi = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi64(l, 4), m4), _mm512_srlv_epi64(qh, sr), m2, 0xf8);
}

/* VPERMW indices: register k of a Q6_K super-block takes the scales of its
 * sub-blocks 4k .. 4k + 3 (words of the widened sc0..15), 8 lanes each. */
#define W8(v) v, v, v, v, v, v, v, v
static const int16_t perm_q6_k[4][32] __attribute__((aligned(64))) = {
    {W8(0), W8(1), W8(2), W8(3)}, {W8(4), W8(5), W8(6), W8(7)},
    {W8(8), W8(9), W8(10), W8(11)}, {W8(12), W8(13), W8(14), W8(15)}};

/* x[r][c] -> x[c][r] for a 16 x 16 float matrix in registers: 2 x 2
 * blocks within 128-bit lanes, then 4 x 4, then the lanes themselves. */
static ALWAYS_INLINE void transpose16(__m512 x[16]) {
    __m512 t[16], u[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* u[4i + j], lane L: column 4L + j of rows 4i .. 4i + 3 */
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512 x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), x1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 y0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd), y1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
        x[j] = _mm512_shuffle_f32x4(x0, x1, 0x88);
        x[8 + j] = _mm512_shuffle_f32x4(x0, x1, 0xdd);
        x[4 + j] = _mm512_shuffle_f32x4(y0, y1, 0x88);
        x[12 + j] = _mm512_shuffle_f32x4(y0, y1, 0xdd);
    }
}

#endif
