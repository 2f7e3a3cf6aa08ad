/*
 * simd_common.h - small helpers shared by the AVX2 and the AVX-512 kernel
 * files: block layouts as byte offsets, unaligned scalar loads, Q4_K's
 * scale unpacking (SSE2 only, so it builds with either file's flags) and
 * Q8_K's sub-block sums (AVX2).
 */
#ifndef FR_SIMD_COMMON_H
#define FR_SIMD_COMMON_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include "quant.h"

/* Block sizes and field offsets; rows may sit at any byte address, so
 * blocks are addressed as bytes (d is always at offset 0). */
enum {
    Q4_0_SZ = sizeof(block_q4_0), Q4_1_SZ = sizeof(block_q4_1),
    Q8_0_SZ = sizeof(block_q8_0), Q8_1_SZ = sizeof(block_q8_1), Q5_0_SZ = sizeof(block_q5_0),
    Q4_0_QS = 2, Q4_1_QS = 4, Q8_0_QS = 2, Q8_1_QS = 4, Q5_0_QH = 2, Q5_0_QS = 6,
    Q4_K_SZ = sizeof(block_q4_K), Q6_K_SZ = sizeof(block_q6_K), Q8_K_SZ = sizeof(block_q8_K),
    Q4_K_SC = 4, Q4_K_QS = 16, Q6_K_QL = 0, Q6_K_QH = 128, Q6_K_SC = 192, Q6_K_D = 208,
    Q8_K_QS = 4, Q8_K_BS = 260,
};

static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t load16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline float load_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

/* Q4_K's 12 scale bytes as 16 bytes [sc0..3, m0..3, sc4..7, m4..7]: the
 * low 6 bits of bytes 0..7, then for sub-blocks 4..7 the nibbles of bytes
 * 8..11 with the top 2 bits of bytes 0..7 above them. */
static inline __m128i q4_k_scales(const uint8_t *s) {
    uint64_t lo = load64(s), hi = load32(s + 8);
    hi = (hi | (hi >> 4) << 32) & 0x0f0f0f0f0f0f0f0full;
    hi |= (lo >> 2) & 0x3030303030303030ull;
    return _mm_set_epi64x((long long)hi, (long long)(lo & 0x3f3f3f3f3f3f3f3full));
}

#ifdef __AVX2__
/* A Q8_K block's 16 bsums summed in pairs (one per 32-element sub-block),
 * as s16 at the lanes of the mins in q4_k_scales' order widened to 16
 * bits, zeros at the scales': madd with those then gives the min sums. */
static inline __m256i q8_k_pair_sums(const uint8_t *bsums) {
    __m256i p = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), _mm256_set1_epi16(1));
    return _mm256_packs_epi32(_mm256_setzero_si256(), p);
}
#endif

#endif
