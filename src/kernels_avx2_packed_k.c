/*
 * kernels_avx2_packed_k.c - Q4_K at the AVX2 level, on rows packed in
 * groups of 16 at load (quant.h: fr_pack_q4_k): decode, batched decode
 * and prefill.
 *
 * Why: kernels_avx2.c gives each (row, token) pair a register per
 * super-block, as the 32-element formats had before kernels_avx2_packed.c
 * (~80 GFLOP/s in a prompt's matmul on one core, against Q4_1's ~155).
 * Here too the lanes are rows: a 32-byte load holds 4 codes of each of 8
 * rows, two sub-block elements per byte; maddubs against a token's 4
 * activation bytes broadcast gives each row its pair sums in its own
 * lanes, which add up exactly in 16 bits over the sub-block's 4 steps
 * (4 * 2 * 2 * 15 * 128 < 2^15); one madd by the rows' sub-block scales
 * then adds them into 32 bits. The mins meet the activation's sub-block
 * sums, from its bsums, with 4 madds per super-block.
 *
 * Arithmetic: the block-exact one of fr_dot_exact_ref(FR_Q4_K), bit for
 * bit: per super-block the exact integers isum = sum_j sc_j (q_j . a_j)
 * and msum = sum_j m_j (sum a_j), then acc = fma(d d_a, isum, acc) and
 * acc = fma(-(dmin d_a), msum, acc). Each lane is one (row, token) pair,
 * so decode alone, decode in a batch and prefill agree. Rows that are not
 * packed (below) get the same bits.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "simd_common.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define NT 4           /* tokens sharing each unpacked step of codes */
#define TILE_TOKENS 64 /* tokens whose activation headers are prepared together */
#define KSB 8          /* super-blocks per pass: a group's scales for them are unpacked once */
#define GB FR_Q4_K_GROUP_BLOCK
#define AH 8           /* floats of activation header per token and super-block */
#define PF_SB 4        /* a group's first pass requests its super-blocks this far ahead */
#define ROWS_PF 16     /* rows that are not packed: each is requested this many rows ahead */

/* One super-block's scales of a group, as the kernel's operands: per half
 * h (8 rows) and sub-block j, each row's sc_j in both 16-bit halves of its
 * lane (madd by it scales a pair sum); per pair i of sub-blocks, each
 * row's (m_2i, m_2i+1); the rows' d and dmin as floats. */
typedef struct {
    __m256i sc[2][8], m[2][4];
    __m256 d[2], dmin[2];
} kscales;

static ALWAYS_INLINE __m128i bytes_srl(__m128i x, int s, int mask) {
    return _mm_and_si128(_mm_srli_epi16(x, s), _mm_set1_epi8((char)mask));
}

/* The 6-bit scales and mins of 16 rows from their 12 byte planes (as
 * q4_k_scales: for j < 4 the low 6 bits of bytes j and j + 4; for j >= 4
 * the nibbles of byte j + 4 with the top 2 bits of bytes j - 4 and j). */
static void unpack_scales(const uint8_t *blk, kscales *u) {
    __m128i p[12], sc[8], m[8];
    const __m128i low6 = _mm_set1_epi8(63), low4 = _mm_set1_epi8(15);
    for (int k = 0; k < 12; k++) p[k] = _mm_loadu_si128((const __m128i *)(blk + 64 + 16 * k));
    for (int j = 0; j < 4; j++) {
        sc[j] = _mm_and_si128(p[j], low6);
        m[j] = _mm_and_si128(p[j + 4], low6);
        sc[j + 4] = _mm_or_si128(_mm_and_si128(p[j + 8], low4), _mm_slli_epi16(bytes_srl(p[j], 6, 3), 4));
        m[j + 4] = _mm_or_si128(bytes_srl(p[j + 8], 4, 15), _mm_slli_epi16(bytes_srl(p[j + 4], 6, 3), 4));
    }
    for (int h = 0; h < 2; h++) {
        for (int j = 0; j < 8; j++) {
            __m256i w = _mm256_cvtepu8_epi32(h ? _mm_srli_si128(sc[j], 8) : sc[j]);
            u->sc[h][j] = _mm256_or_si256(w, _mm256_slli_epi32(w, 16));
        }
        for (int i = 0; i < 4; i++) {
            __m128i a = h ? _mm_srli_si128(m[2 * i], 8) : m[2 * i];
            __m128i b = h ? _mm_srli_si128(m[2 * i + 1], 8) : m[2 * i + 1];
            u->m[h][i] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
        }
        u->d[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
        u->dmin[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * h)));
    }
}

/* Activation headers of tokens [c0, c1), super-blocks [b0, b1): d_a, then
 * the sub-block sums (bsums in pairs) as 4 int32 of two int16 each. */
static void act_headers(const uint8_t *a, size_t as, int c0, int c1, int64_t b0, int64_t b1, float *af) {
    for (int c = c0; c < c1; c++)
        for (int64_t b = b0; b < b1; b++) {
            const uint8_t *y = a + c * as + b * Q8_K_SZ;
            float *f = af + ((c - c0) * KSB + (b - b0)) * AH;
            int16_t bs[16];
            memcpy(bs, y + Q8_K_BS, sizeof bs);
            f[0] = load_f32(y);
            for (int i = 0; i < 4; i++) {
                uint32_t lo = (uint16_t)(bs[4 * i] + bs[4 * i + 1]), hi = (uint16_t)(bs[4 * i + 2] + bs[4 * i + 3]);
                uint32_t v = lo | hi << 16;
                memcpy(&f[1 + i], &v, sizeof v);
            }
            f[5] = f[6] = f[7] = 0;
        }
}

/* Half h (8 rows) of a group against nt tokens, super-blocks [b0, b1)
 * (their scales in ks): acc[t] holds the rows' sums for token t. ahead:
 * the group's first tokens, which request its super-blocks ahead and
 * unpack their scales into ks as they come to them (unpacking them all
 * up front left decode waiting on memory: ~20 % slower streaming a
 * matrix). */
static ALWAYS_INLINE void half_sbs(const uint8_t *g, kscales *ks, int h, int64_t b0, int64_t b1,
                                   const uint8_t *a, size_t as, const float *af, const int nt, int ahead,
                                   __m256 *acc) {
    const __m256i low4 = _mm256_set1_epi8(15);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = g + b * GB;
        kscales *u = ks + (b - b0);
        if (ahead) {
            for (int l = 0; l < GB; l += 64) _mm_prefetch((const char *)blk + PF_SB * GB + l, _MM_HINT_T0);
            unpack_scales(blk, u);
        }
        __m256i isum[NT];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
        for (int j = 0; j < 8; j++) {
            __m256i s16[NT];
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
            for (int s = 0; s < 4; s++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 256 + 256 * j + 64 * s + 32 * h));
                __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    const uint8_t *qa = a + t * as + b * Q8_K_SZ + Q8_K_QS + 32 * j + 4 * s;
                    __m256i p = _mm256_maddubs_epi16(lo, _mm256_set1_epi32((int)load32(qa)));
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi, _mm256_set1_epi32((int)load32(qa + 16))));
                    s16[t] = _mm256_add_epi16(s16[t], p);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], u->sc[h][j]));
        }
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const float *f = af + (t * KSB + (b - b0)) * AH;
            __m256i msum = _mm256_setzero_si256();
            for (int i = 0; i < 4; i++) { /* (m_2i, m_2i+1) . (S_2i, S_2i+1) per row */
                __m256i s = _mm256_castps_si256(_mm256_broadcast_ss(f + 1 + i));
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(u->m[h][i], s));
            }
            __m256 da = _mm256_broadcast_ss(f);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(u->d[h], da), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(u->dmin[h], _mm256_sub_ps(_mm256_setzero_ps(), da)),
                                     _mm256_cvtepi32_ps(msum), acc[t]);
        }
    }
}

/* Both halves of a group for nt tokens, continuing the sums in out unless
 * first. */
static ALWAYS_INLINE void group_tokens(const uint8_t *g, kscales *ks, int64_t b0, int64_t b1, const uint8_t *a,
                                       size_t as, const float *af, const int nt, float *out, size_t ldo, int first,
                                       int ahead) {
    for (int h = 0; h < 2; h++) {
        __m256 acc[NT];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) acc[t] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(out + t * ldo + 8 * h);
        half_sbs(g, ks, h, b0, b1, a, as, af, nt, ahead && h == 0, acc);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * ldo + 8 * h, acc[t]);
    }
}

/* nr rows (a multiple of 16, w at a group's start) against nc tokens:
 * tokens in tiles, super-blocks in passes of KSB (the sums carried through
 * out, which changes no bit: each lane's FMAs run in super-block order). */
static void dot_packed_q4_k(int64_t n, const void *wv, int nr, const void *av, size_t as, int nc, float *out,
                            size_t ldo) {
    const uint8_t *w = wv, *a = av;
    const int64_t nsb = n / QK_K;
    _Alignas(32) float af[TILE_TOKENS * KSB * AH];
    _Alignas(32) kscales ks[KSB];
    for (int c0 = 0; c0 < nc; c0 += TILE_TOKENS) {
        const int c1 = nc - c0 < TILE_TOKENS ? nc : c0 + TILE_TOKENS;
        for (int64_t b0 = 0; b0 < nsb; b0 += KSB) {
            const int64_t b1 = nsb - b0 < KSB ? nsb : b0 + KSB;
            act_headers(a, as, c0, c1, b0, b1, af);
            for (int r = 0; r < nr; r += 16) {
                const uint8_t *g = w + (size_t)(r / 16) * nsb * GB;
                for (int c = c0; c < c1; c += NT) {
                    const uint8_t *ac = a + c * as;
                    const float *f = af + (c - c0) * KSB * AH;
                    float *o = out + c * ldo + r;
                    const int first = b0 == 0, ahead = c == c0;
                    switch (c1 - c < NT ? c1 - c : NT) { /* a constant count keeps the sums in registers */
                    case 1: group_tokens(g, ks, b0, b1, ac, as, f, 1, o, ldo, first, ahead); break;
                    case 2: group_tokens(g, ks, b0, b1, ac, as, f, 2, o, ldo, first, ahead); break;
                    case 3: group_tokens(g, ks, b0, b1, ac, as, f, 3, o, ldo, first, ahead); break;
                    default: group_tokens(g, ks, b0, b1, ac, as, f, 4, o, ldo, first, ahead); break;
                    }
                }
            }
        }
    }
}

/* ---- rows that are not packed --------------------------------------------
 *
 * For a few tokens (decode), one dot per output: per super-block the
 * integer sums in vectors, summed across the lanes (exact), then the same
 * two FMAs in scalar. For more tokens, each group of up to 16 rows is
 * packed into a buffer (the missing rows zero) and goes through the kernel
 * above, its outputs copied out; without memory, the scalar twin. */

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}

/* sub-block j's scale in every 16-bit lane, from the scale words (as
 * q4_k_scales, widened): word j (j < 4) or j + 4, each 128-bit half
 * broadcast, then the word picked with a shuffle. */
static inline __m256i sub_scale(__m256i lo, __m256i hi, int j) {
    const int b = 2 * (j % 4);
    return _mm256_shuffle_epi8(j < 4 ? lo : hi, _mm256_set1_epi16((short)(b | (b + 1) << 8)));
}

static float dot_q4_k(int64_t n, const void *wv, const void *av) {
    const uint8_t *x = wv, *y = av;
    const __m256i low4 = _mm256_set1_epi8(15);
    float acc = 0;
    for (int64_t i = 0; i < n / QK_K; i++, x += Q4_K_SZ, y += Q8_K_SZ) {
        const __m256i s16 = _mm256_cvtepu8_epi16(q4_k_scales(x + Q4_K_SC));
        const __m256i lo = _mm256_permute2x128_si256(s16, s16, 0x00), hi = _mm256_permute2x128_si256(s16, s16, 0x11);
        __m256i v = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x + Q4_K_QS + 32 * (j / 2)));
            q = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(q, 4) : q, low4);
            __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(y + Q8_K_QS + 32 * j)));
            v = _mm256_add_epi32(v, _mm256_madd_epi16(p, sub_scale(lo, hi, j)));
        }
        const int32_t isum = hsum_epi32(v), msum = hsum_epi32(_mm256_madd_epi16(s16, q8_k_pair_sums(y + Q8_K_BS)));
        const float da = load_f32(y), dd = _cvtsh_ss(load16(x)) * da, dm = _cvtsh_ss(load16(x + 2)) * da;
        acc = __builtin_fmaf(dd, (float)isum, acc);
        acc = __builtin_fmaf(-dm, (float)msum, acc);
    }
    return acc;
}

static void tile_q4_k(int64_t n, const void *wv, size_t ws, int nr, const void *av, size_t as, int nc, float *out,
                      size_t ldo) {
    const uint8_t *w = wv, *a = av;
    const size_t gbytes = (size_t)(n / QK_K) * GB;
    uint8_t *g = nc >= NT && gbytes > 0 ? aligned_alloc(32, gbytes + (size_t)nc * 16 * sizeof(float)) : NULL;
    if (!g) {
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r++) out[c * ldo + r] = dot_q4_k(n, w + r * ws, a + c * as);
        return;
    }
    float *o16 = (float *)(g + gbytes);
    for (int r0 = 0; r0 < nr; r0 += 16) {
        const int rows = nr - r0 < 16 ? nr - r0 : 16;
        fr_pack_group(FR_Q4_K, n, w + (size_t)r0 * ws, ws, rows, g);
        dot_packed_q4_k(n, g, 16, a, as, nc, o16, 16);
        for (int c = 0; c < nc; c++) memcpy(out + c * ldo + r0, o16 + c * 16, (size_t)rows * sizeof(float));
    }
    free(g);
}

/* One row at a time, each requested ROWS_PF rows ahead (the hardware
 * prefetchers alone left it ~15 % slower streaming a matrix). */
static void rows_q4_k(int64_t n, const void *wv, size_t ws, const void *a, float *out, int nr) {
    const uint8_t *w = wv;
    for (int r = 0; r < nr; r++) {
        if (r + ROWS_PF < nr)
            for (size_t o = 0; o < ws; o += 64) _mm_prefetch((const char *)w + (r + ROWS_PF) * ws + o, _MM_HINT_T0);
        out[r] = dot_q4_k(n, w + r * ws, a);
    }
}

void fr_kernels_fill_avx2_packed_k(fr_kernel_table *t) {
    t->dot[FR_Q4_K] = dot_q4_k;
    t->dot_rows[FR_Q4_K] = rows_q4_k;
    t->dot_tile[FR_Q4_K] = tile_q4_k;
    t->pack[FR_Q4_K] = fr_pack_q4_k;
    t->dot_packed[FR_Q4_K] = dot_packed_q4_k;
}
