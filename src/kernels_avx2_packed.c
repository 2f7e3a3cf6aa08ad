/*
 * kernels_avx2_packed.c - Q4_0, Q4_1 and Q5_0 at the AVX2 level, on rows
 * packed in groups of 16 at load (quant.h: fr_pack_q4_1 and the others):
 * decode, batched decode and prefill.
 *
 * Why: the 32-element dots of kernels_avx2.c give one (row, token) pair a
 * register per block: 8 partial sums that cost the pair a madd, a
 * conversion and an FMA per block and a horizontal sum at the end, which
 * made a prompt's matmuls ~6 vector operations per 32 products. Here the
 * lanes are rows. A 32-byte load of a packed block holds 4 codes of each
 * of 8 rows in their low nibbles and 4 more in their high ones (Q5_0 adds
 * their 5th bits from a vector laid out as the codes, two bits per byte
 * and step); against a token's 4 activation
 * bytes broadcast, maddubs gives each row its own pair sums in its own
 * lanes. They add up in 16 bits exactly (Q4_0, Q4_1: a block's 4 steps,
 * |sum| <= 4 * 2 * 2 * 15 * 128 < 2^15; Q5_0: 2 steps, 2 * 2 * 2 * 31 * 128 <
 * 2^15, then a madd), so the per-block work (a madd or two, a conversion,
 * the scale product and an FMA or two) is shared by 8 rows and nothing is
 * summed across lanes: ~2.5 operations per 32 products for Q4_1, most of
 * them the maddubs and the adds.
 *
 * Arithmetic: the block-exact one of the AMX level (fr_dot_exact_ref), bit
 * for bit: per block the exact integer sum of the signed codes times the
 * activations (Q4_0's q - 8 and Q5_0's q - 16 as sum q a - 8 or 16 sum a), then acc = fma(d_w
 * d_a, isum, acc) (and for Q4_1 acc = fma(m_w, s_a, acc)), block after
 * block. Each lane is one (row, token) pair, so a token's bits depend on
 * nothing else in the call and decode alone, decode in a batch and prefill
 * agree. Rows that are not packed (odd row counts, or out of memory at
 * load) take the same kernel on a group packed per call, or the scalar
 * twin: the same bits.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "simd_common.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define NT 4          /* tokens sharing each unpacked half-group of codes */
#define TILE_TOKENS 64 /* tokens whose activation headers are converted together */
#define KB 64         /* blocks per pass: headers of TILE_TOKENS x KB on the stack */
#define PF_BLOCKS 8   /* a group's first pass requests its blocks this far ahead */
#define ROWS_PF 512   /* rows8 requests each row this many bytes ahead */
#define XB 16         /* blocks whose codes are unpacked at a time (8 KB) */
#define XC_BLOCK 512  /* bytes of a block's unpacked codes: 2 halves x 4 steps x 2 vectors */

enum { FMT_Q4_0, FMT_Q4_1, FMT_Q5_0, FMT_Q8_0 };

/* Q4_0, Q5_0 and Q8_0 meet Q8_0 activations, Q4_0's and Q5_0's codes
 * offset by 8 or 16. */
#define Q8_0_ACTS(fmt) ((fmt) != FMT_Q4_1)
#define OFFSET(fmt) ((fmt) == FMT_Q4_0 ? 8 : (fmt) == FMT_Q5_0 ? 16 : 0)

static ALWAYS_INLINE size_t group_block(const int fmt) {
    return fmt == FMT_Q4_0   ? FR_Q4_0_GROUP_BLOCK
           : fmt == FMT_Q4_1 ? FR_Q4_1_GROUP_BLOCK
           : fmt == FMT_Q5_0 ? FR_Q5_0_GROUP_BLOCK
                             : FR_Q8_0_GROUP_BLOCK;
}

/* Type, block size and offset of the codes in a block of the original rows. */
static ALWAYS_INLINE uint32_t fmt_type(const int fmt) {
    return fmt == FMT_Q4_0 ? FR_Q4_0 : fmt == FMT_Q4_1 ? FR_Q4_1 : fmt == FMT_Q5_0 ? FR_Q5_0 : FR_Q8_0;
}
static ALWAYS_INLINE size_t fmt_block(const int fmt) {
    return fmt == FMT_Q4_0 ? Q4_0_SZ : fmt == FMT_Q4_1 ? Q4_1_SZ : fmt == FMT_Q5_0 ? Q5_0_SZ : Q8_0_SZ;
}
static ALWAYS_INLINE int fmt_qs(const int fmt) {
    return fmt == FMT_Q4_0 ? Q4_0_QS : fmt == FMT_Q4_1 ? Q4_1_QS : fmt == FMT_Q5_0 ? Q5_0_QS : Q8_0_QS;
}

/* Step q's codes of half h as two vectors of bytes (elements 4q.. of each
 * row, and 16 + 4q..), Q5_0's with their 5th bits: hb holds the half's
 * hb bytes, lane for lane with the codes, shifted right by 2q so far, its
 * bits 0 and 1 now the step's; it moves on by 2 for the next step. */
static ALWAYS_INLINE void step_codes(const uint8_t *blk, int h, int q, const int fmt, __m256i *hb, __m256i *lo,
                                     __m256i *hi) {
    if (fmt == FMT_Q8_0) { /* stored in this order (quant.h) */
        *lo = _mm256_loadu_si256((const __m256i *)(blk + 32 + 256 * h + 64 * q));
        *hi = _mm256_loadu_si256((const __m256i *)(blk + 32 + 256 * h + 64 * q + 32));
        return;
    }
    const __m256i low4 = _mm256_set1_epi8(15);
    const int codes = fmt == FMT_Q4_0 ? 32 : fmt == FMT_Q4_1 ? 64 : 96; /* the last 256 bytes */
    __m256i v = _mm256_loadu_si256((const __m256i *)(blk + codes + 64 * q + 32 * h));
    *lo = _mm256_and_si256(v, low4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    if (fmt == FMT_Q5_0) { /* bit 0 or 1 of each byte up to bit 4 (within its byte: shifts of at most 4) */
        const __m256i sixteen = _mm256_set1_epi8(16);
        *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_slli_epi16(*hb, 4), sixteen));
        *hi = _mm256_or_si256(*hi, _mm256_and_si256(_mm256_slli_epi16(*hb, 3), sixteen));
        *hb = _mm256_srli_epi16(*hb, 2);
    }
}

/* A token's products with a step's codes lo (elements 4q.. of each row)
 * and hi (16 + 4q..), its activation bytes at qa: into the 16-bit sums
 * s16; Q8_0's signed codes (ulo, uhi: their magnitudes) as |w| x sign(a,
 * w), into the 32-bit sums s32 (each pair sum |2 x 128 x 127| < 2^15, but
 * not two of them). */
static ALWAYS_INLINE void step_products(__m256i lo, __m256i hi, __m256i ulo, __m256i uhi, const uint8_t *qa,
                                        __m256i *s16, __m256i *s32, const int fmt) {
    const __m256i alo = _mm256_set1_epi32((int)load32(qa)), ahi = _mm256_set1_epi32((int)load32(qa + 16));
    if (fmt == FMT_Q8_0) {
        const __m256i ones = _mm256_set1_epi16(1);
        __m256i plo = _mm256_maddubs_epi16(ulo, _mm256_sign_epi8(alo, lo));
        __m256i phi = _mm256_maddubs_epi16(uhi, _mm256_sign_epi8(ahi, hi));
        *s32 = _mm256_add_epi32(*s32, _mm256_add_epi32(_mm256_madd_epi16(plo, ones), _mm256_madd_epi16(phi, ones)));
        return;
    }
    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi));
    *s16 = _mm256_add_epi16(*s16, p);
}

/* Halves h0 .. h0 + nh - 1 (8 rows each) of a group against nt tokens,
 * blocks [b0, b1): acc[(h - h0) nt + t] holds half h's 8 rows' sums for
 * token t. af: the tokens' activation
 * headers, two 4-byte values per block from b0 (Q4_1: d and s as floats;
 * Q4_0, Q5_0: d as a float and sum a as an int32; Q8_0: d and 0), afs
 * floats apart. ahead:
 * request the group's blocks PF_BLOCKS on (the hardware prefetcher alone
 * left decode ~10 % slower). */
static ALWAYS_INLINE void half_blocks(const uint8_t *g, const uint8_t *xc, int h0, const int nh, int64_t b0,
                                      int64_t b1, const uint8_t *a, size_t as, const float *af, int afs, const int nt,
                                      int ahead, __m256 *acc_all, const int fmt) {
    const size_t blk_bytes = group_block(fmt), ablk = Q8_0_ACTS(fmt) ? Q8_0_SZ : Q8_1_SZ;
    const int aqs = Q8_0_ACTS(fmt) ? Q8_0_QS : Q8_1_QS;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = g + b * blk_bytes;
        if (ahead) /* the group's first pass brings it in from memory */
            for (size_t l = 0; l < blk_bytes; l += 64)
                _mm_prefetch((const char *)blk + PF_BLOCKS * blk_bytes + l, _MM_HINT_T0);
#pragma GCC unroll 2
        for (int hh = 0; hh < nh; hh++) {
            const int h = h0 + hh;
            __m256 *acc = acc_all + hh * nt;
            __m256i s16[NT], s32[NT];
            __m256i hb = _mm256_setzero_si256();
            if (fmt == FMT_Q5_0 && !xc) hb = _mm256_loadu_si256((const __m256i *)(blk + 32 + 32 * h));
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) s16[t] = s32[t] = _mm256_setzero_si256();
            /* Q5_0 takes its steps two at a time, then moves the 16-bit sums
             * on to 32 bits; the others one at a time (unrolled, the four
             * steps' codes stay live and the sums spill). */
            const int steps = fmt == FMT_Q5_0 ? 2 : 1;
#pragma GCC unroll 1
            for (int q0 = 0; q0 < 4; q0 += steps) {
#pragma GCC unroll 2
                for (int q = q0; q < q0 + steps; q++) {
                    __m256i lo, hi;
                    if (xc) {
                        const uint8_t *x = xc + (b - b0) * XC_BLOCK + 256 * h + 64 * q;
                        lo = _mm256_load_si256((const __m256i *)x);
                        hi = _mm256_load_si256((const __m256i *)(x + 32));
                    } else {
                        step_codes(blk, h, q, fmt, &hb, &lo, &hi);
                    }
                    const __m256i ulo = _mm256_abs_epi8(lo), uhi = _mm256_abs_epi8(hi); /* Q8_0's */
#pragma GCC unroll 4
                    for (int t = 0; t < nt; t++)
                        step_products(lo, hi, ulo, uhi, a + t * as + b * ablk + aqs + 4 * q, &s16[t], &s32[t], fmt);
                }
                if (fmt == FMT_Q5_0)
#pragma GCC unroll 4
                    for (int t = 0; t < nt; t++) {
                        s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
                        s16[t] = _mm256_setzero_si256();
                    }
            }
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
            __m256 mw = fmt == FMT_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * h)))
                                        : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                const float *f = af + t * afs + 2 * (b - b0);
                __m256i isum;
                if (fmt == FMT_Q4_1) {
                    isum = _mm256_madd_epi16(s16[t], ones);
                } else if (fmt == FMT_Q8_0) {
                    isum = s32[t];
                } else { /* sum (q - o) a = sum q a - o sum a */
                    __m256i sa = _mm256_castps_si256(_mm256_broadcast_ss(f + 1));
                    isum = fmt == FMT_Q5_0 ? s32[t] : _mm256_madd_epi16(s16[t], ones);
                    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sa, fmt == FMT_Q5_0 ? 4 : 3));
                }
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(f)), _mm256_cvtepi32_ps(isum), acc[t]);
                if (fmt == FMT_Q4_1) acc[t] = _mm256_fmadd_ps(mw, _mm256_broadcast_ss(f + 1), acc[t]);
            }
        }
    }
}

/* Both halves of group g for nt tokens over blocks [b0, b1), continuing
 * the sums already in out unless first. A lone token (decode) takes both
 * halves block by block, reading the group once, front to back, as it
 * streams in (half by half, the Q8_0 output matrix of Gemma 3 read ~30 %
 * slower than one row at a time). Several take one half at a time (both
 * at once, each broadcast serving 16 rows, two tokens at a time: ~10 %
 * slower). */
static ALWAYS_INLINE void group_tokens(const uint8_t *g, const uint8_t *xc, int64_t b0, int64_t b1, const uint8_t *a,
                                       size_t as, const float *af, int afs, const int nt, float *out, size_t ldo,
                                       int first, int ahead, const int fmt) {
    if (nt == 1) {
        __m256 acc[2];
        for (int h = 0; h < 2; h++) acc[h] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(out + 8 * h);
        half_blocks(g, xc, 0, 2, b0, b1, a, as, af, afs, 1, ahead, acc, fmt);
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(out + 8 * h, acc[h]);
        return;
    }
    for (int h = 0; h < 2; h++) {
        __m256 acc[NT];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            acc[t] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(out + t * ldo + 8 * h);
        half_blocks(g, xc, h, 1, b0, b1, a, as, af, afs, nt, ahead && h == 0, acc, fmt);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * ldo + 8 * h, acc[t]);
    }
}

/* Sum of a Q8_0 block's 32 codes, exact. */
static inline int32_t code_sum(const uint8_t *qs) {
    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i *)qs)),
                                  _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    return _mm_cvtsi128_si32(s4);
}

/* Activation headers of tokens [c0, c1), blocks [b0, b1) into af (2 KB
 * values a token): Q8_1's d and s as floats; Q8_0's d as a float and the
 * block's sum of codes as an int32. */
static ALWAYS_INLINE void act_headers(const uint8_t *a, size_t as, int c0, int c1, int64_t b0, int64_t b1, float *af,
                                      const int fmt) {
    for (int c = c0; c < c1; c++)
        for (int64_t b = b0; b < b1; b++) {
            float *f = af + (c - c0) * 2 * KB + 2 * (b - b0);
            if (!Q8_0_ACTS(fmt)) {
                const uint8_t *hd = a + c * as + b * Q8_1_SZ;
                f[0] = _cvtsh_ss(load16(hd));
                f[1] = _cvtsh_ss(load16(hd + 2));
            } else {
                const uint8_t *blk = a + c * as + b * Q8_0_SZ;
                int32_t sum = fmt == FMT_Q8_0 ? 0 : code_sum(blk + Q8_0_QS); /* (no offset to take off) */
                f[0] = _cvtsh_ss(load16(blk));
                memcpy(&f[1], &sum, sizeof sum);
            }
        }
}

/* Group g's codes for blocks [b0, b1) written out as the kernel's step
 * vectors (XC_BLOCK bytes a block: half, step, low then high), for the
 * tokens of a tile to load instead of each set of NT unpacking them
 * again. */
static ALWAYS_INLINE void expand_codes(const uint8_t *g, int64_t b0, int64_t b1, uint8_t *xc, const int fmt) {
    const size_t blk_bytes = group_block(fmt);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = g + b * blk_bytes;
        for (size_t l = 0; l < blk_bytes; l += 64)
            _mm_prefetch((const char *)blk + PF_BLOCKS * blk_bytes + l, _MM_HINT_T0);
        for (int h = 0; h < 2; h++) {
            __m256i hb = _mm256_setzero_si256();
            if (fmt == FMT_Q5_0) hb = _mm256_loadu_si256((const __m256i *)(blk + 32 + 32 * h));
            for (int q = 0; q < 4; q++) {
                __m256i lo, hi;
                step_codes(blk, h, q, fmt, &hb, &lo, &hi);
                uint8_t *x = xc + (b - b0) * XC_BLOCK + 256 * h + 64 * q;
                _mm256_store_si256((__m256i *)x, lo);
                _mm256_store_si256((__m256i *)(x + 32), hi);
            }
        }
    }
}

/* Group g over blocks [b0, b1) against tokens [c0, c1) of a tile whose
 * headers af holds from block b0. */
static ALWAYS_INLINE void group_pass(const uint8_t *g, const uint8_t *xc, int64_t b0, int64_t b1, const uint8_t *a,
                                     size_t as, int c0, int c1, const float *af, float *out, size_t ldo, int first,
                                     const int fmt) {
    for (int c = c0; c < c1; c += NT) {
        const uint8_t *ac = a + c * as;
        const float *f = af + (c - c0) * 2 * KB;
        float *o = out + c * ldo;
        const int ahead = !xc && c == c0;
        switch (c1 - c < NT ? c1 - c : NT) { /* a constant count keeps the sums in registers */
        case 1: group_tokens(g, xc, b0, b1, ac, as, f, 2 * KB, 1, o, ldo, first, ahead, fmt); break;
        case 2: group_tokens(g, xc, b0, b1, ac, as, f, 2 * KB, 2, o, ldo, first, ahead, fmt); break;
        case 3: group_tokens(g, xc, b0, b1, ac, as, f, 2 * KB, 3, o, ldo, first, ahead, fmt); break;
        default: group_tokens(g, xc, b0, b1, ac, as, f, 2 * KB, 4, o, ldo, first, ahead, fmt); break;
        }
    }
}

/* dot_packed: nr rows (a multiple of 16, w at a group's start) against nc
 * tokens. Tokens go in tiles whose headers are converted once, and rows
 * in passes of up to KB blocks (the sums carried through out between
 * passes, which changes no bit: each lane's FMAs run in block order).
 * Q5_0's codes take 11 operations a step to unpack, as many as the
 * products of 2 tokens: for a tile of more than NT tokens they are
 * unpacked once, XB blocks at a time (kept in L1), and loaded from there:
 * ~1.28x on Gemma 3's Q5_0 products against 512 tokens. (Q4_1's take 3,
 * and unpacking them once gained nothing.) */
static ALWAYS_INLINE void packed(int64_t n, const uint8_t *w, int nr, const uint8_t *a, size_t as, int nc,
                                 float *out, size_t ldo, const int fmt) {
    const int64_t nb = n / 32;
    _Alignas(32) float af[TILE_TOKENS * 2 * KB];
    _Alignas(32) uint8_t xc[XB * XC_BLOCK];
    for (int c0 = 0; c0 < nc; c0 += TILE_TOKENS) {
        const int c1 = nc - c0 < TILE_TOKENS ? nc : c0 + TILE_TOKENS;
        const int expand = fmt == FMT_Q5_0 && c1 - c0 > NT;
        for (int64_t b0 = 0; b0 < nb; b0 += KB) {
            const int64_t b1 = nb - b0 < KB ? nb : b0 + KB;
            act_headers(a, as, c0, c1, b0, b1, af, fmt);
            for (int r = 0; r < nr; r += 16) {
                const uint8_t *g = w + (size_t)(r / 16) * nb * group_block(fmt);
                if (!expand) {
                    group_pass(g, NULL, b0, b1, a, as, c0, c1, af, out + r, ldo, b0 == 0, fmt);
                    continue;
                }
                for (int64_t bs = b0; bs < b1; bs += XB) {
                    const int64_t be = b1 - bs < XB ? b1 : bs + XB;
                    expand_codes(g, bs, be, xc, fmt);
                    group_pass(g, xc, bs, be, a, as, c0, c1, af + 2 * (bs - b0), out + r, ldo, bs == 0, fmt);
                }
            }
        }
    }
}

static void dot_packed_q4_1(int64_t n, const void *w, int nr, const void *a, size_t as, int nc, float *out,
                            size_t ldo) {
    packed(n, w, nr, a, as, nc, out, ldo, FMT_Q4_1);
}

static void dot_packed_q4_0(int64_t n, const void *w, int nr, const void *a, size_t as, int nc, float *out,
                            size_t ldo) {
    packed(n, w, nr, a, as, nc, out, ldo, FMT_Q4_0);
}

static void dot_packed_q5_0(int64_t n, const void *w, int nr, const void *a, size_t as, int nc, float *out,
                            size_t ldo) {
    packed(n, w, nr, a, as, nc, out, ldo, FMT_Q5_0);
}

static void dot_packed_q8_0(int64_t n, const void *w, int nr, const void *a, size_t as, int nc, float *out,
                            size_t ldo) {
    packed(n, w, nr, a, as, nc, out, ldo, FMT_Q8_0);
}

/* ---- rows that are not packed --------------------------------------------
 *
 * For a few tokens (decode), 8 rows at a time: each row's block against
 * the token as 8 partial sums, the 8 rows' vectors reduced together by a
 * tree of horizontal adds into one vector of exact block sums, one row
 * per lane, then the same FMAs as above. For more tokens, each group of
 * up to 16 rows is packed into a buffer (the missing rows zero) and goes
 * through the kernel above, its outputs copied out; without memory, the
 * scalar twin. */

/* A block's codes as 32 bytes in element order (Q5_0's 5th bits
 * included; Q8_0's as they are, signed). */
static ALWAYS_INLINE __m256i block_codes(const uint8_t *x, const int fmt) {
    const int qs = fmt_qs(fmt);
    if (fmt == FMT_Q8_0) return _mm256_loadu_si256((const __m256i *)(x + qs));
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x + qs)));
    v = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(15));
    if (fmt == FMT_Q5_0) { /* bit j of qh: element j's 5th bit */
        const __m256i which = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                               2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
        __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)load32(x + 2)), which);
        v = _mm256_or_si256(v, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit), _mm256_set1_epi8(16)));
    }
    return v;
}

/* rows (1..8) rows at w (stride ws) against one token a: out[0..rows). */
static ALWAYS_INLINE void rows8(int64_t n, const uint8_t *w, size_t ws, int rows, const uint8_t *a, float *out,
                                const int fmt) {
    const size_t wblk = fmt_block(fmt);
    const size_t ablk = Q8_0_ACTS(fmt) ? Q8_0_SZ : Q8_1_SZ;
    const int aqs = Q8_0_ACTS(fmt) ? Q8_0_QS : Q8_1_QS;
    const __m256i ones = _mm256_set1_epi16(1);
    const uint8_t *row[8];
    for (int i = 0; i < 8; i++) row[i] = w + (size_t)(i < rows ? i : rows - 1) * ws; /* spare lanes repeat a row */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *ab = a + b * ablk;
        const __m256i act = _mm256_loadu_si256((const __m256i *)(ab + aqs));
        __m256i v[8];
        float d[8], m[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            const uint8_t *x = row[i] + b * wblk;
            _mm_prefetch((const char *)x + ROWS_PF, _MM_HINT_T0);
            const __m256i c = block_codes(x, fmt); /* Q8_0's signed: |w| x sign(a, w) */
            const __m256i p = fmt == FMT_Q8_0 ? _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(act, c))
                                              : _mm256_maddubs_epi16(c, act);
            v[i] = _mm256_madd_epi16(p, ones);
            d[i] = _cvtsh_ss(load16(x));
            m[i] = fmt == FMT_Q4_1 ? _cvtsh_ss(load16(x + 2)) : 0.0f;
        }
        __m256i t0 = _mm256_hadd_epi32(v[0], v[1]), t1 = _mm256_hadd_epi32(v[2], v[3]);
        __m256i t2 = _mm256_hadd_epi32(v[4], v[5]), t3 = _mm256_hadd_epi32(v[6], v[7]);
        __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
        __m256i isum = _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
        if (OFFSET(fmt)) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(OFFSET(fmt) * code_sum(ab + Q8_0_QS)));
        const float da = _cvtsh_ss(load16(ab));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(d), _mm256_set1_ps(da)), _mm256_cvtepi32_ps(isum), acc);
        if (fmt == FMT_Q4_1) acc = _mm256_fmadd_ps(_mm256_loadu_ps(m), _mm256_set1_ps(_cvtsh_ss(load16(ab + 2))), acc);
    }
    float o[8];
    _mm256_storeu_ps(o, acc);
    memcpy(out, o, (size_t)rows * sizeof(float));
}

static ALWAYS_INLINE void tile_unpacked(int64_t n, const uint8_t *w, size_t ws, int nr, const void *a, size_t as,
                                        int nc, float *out, size_t ldo, const int fmt) {
    if (nc < NT) {
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r += 8)
                rows8(n, w + (size_t)r * ws, ws, nr - r < 8 ? nr - r : 8, (const uint8_t *)a + c * as,
                      out + c * ldo + r, fmt);
        return;
    }
    const uint32_t type = fmt_type(fmt);
    const size_t gbytes = (size_t)(n / 32) * group_block(fmt);
    uint8_t *g = gbytes > 0 ? aligned_alloc(32, gbytes + (size_t)nc * 16 * sizeof(float)) : NULL;
    if (!g) {
        fr_dot_fn exact = fr_dot_exact_ref(type);
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r++) out[c * ldo + r] = exact(n, w + r * ws, (const uint8_t *)a + c * as);
        return;
    }
    float *o16 = (float *)(g + gbytes);
    for (int r0 = 0; r0 < nr; r0 += 16) {
        const int rows = nr - r0 < 16 ? nr - r0 : 16;
        fr_pack_group(type, n, w + (size_t)r0 * ws, ws, rows, g);
        packed(n, g, 16, a, as, nc, o16, 16, fmt);
        for (int c = 0; c < nc; c++) memcpy(out + c * ldo + r0, o16 + c * 16, (size_t)rows * sizeof(float));
    }
    free(g);
}

static void tile_q4_1(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nc, float *out,
                      size_t ldo) {
    tile_unpacked(n, w, ws, nr, a, as, nc, out, ldo, FMT_Q4_1);
}

static void tile_q4_0(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nc, float *out,
                      size_t ldo) {
    tile_unpacked(n, w, ws, nr, a, as, nc, out, ldo, FMT_Q4_0);
}

static void tile_q5_0(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nc, float *out,
                      size_t ldo) {
    tile_unpacked(n, w, ws, nr, a, as, nc, out, ldo, FMT_Q5_0);
}

static void tile_q8_0(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nc, float *out,
                      size_t ldo) {
    tile_unpacked(n, w, ws, nr, a, as, nc, out, ldo, FMT_Q8_0);
}

static void rows_q4_1(int64_t n, const void *w, size_t ws, const void *a, float *out, int nr) {
    tile_q4_1(n, w, ws, nr, a, 0, 1, out, 0);
}

static void rows_q4_0(int64_t n, const void *w, size_t ws, const void *a, float *out, int nr) {
    tile_q4_0(n, w, ws, nr, a, 0, 1, out, 0);
}

static void rows_q5_0(int64_t n, const void *w, size_t ws, const void *a, float *out, int nr) {
    tile_q5_0(n, w, ws, nr, a, 0, 1, out, 0);
}

static void rows_q8_0(int64_t n, const void *w, size_t ws, const void *a, float *out, int nr) {
    tile_q8_0(n, w, ws, nr, a, 0, 1, out, 0);
}

/* One dot: per block the exact integer sum (maddubs, madd, then across the
 * lanes), then the two FMAs in scalar. */
static float dot_q4_1(int64_t n, const void *wv, const void *av) {
    const uint8_t *w = wv, *a = av;
    const __m256i low4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    float acc = 0;
    for (int64_t b = 0; b < n / 32; b++, w += Q4_1_SZ, a += Q8_1_SZ) {
        __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w + Q4_1_QS)));
        q = _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_set_epi64x(4, 4, 0, 0)), low4);
        __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(a + Q8_1_QS))), ones);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        const float dd = _cvtsh_ss(load16(w)) * _cvtsh_ss(load16(a));
        acc = __builtin_fmaf(dd, (float)_mm_cvtsi128_si32(s4), acc);
        acc = __builtin_fmaf(_cvtsh_ss(load16(w + 2)), _cvtsh_ss(load16(a + 2)), acc);
    }
    return acc;
}


/* Q4_0's, Q5_0's and Q8_0's single dots are their scalar twins: nothing
 * calls them on a hot path. */
void fr_kernels_fill_avx2_packed(fr_kernel_table *t) {
    t->dot[FR_Q4_0] = fr_dot_exact_ref(FR_Q4_0);
    t->dot_rows[FR_Q4_0] = rows_q4_0;
    t->dot_tile[FR_Q4_0] = tile_q4_0;
    t->pack[FR_Q4_0] = fr_pack_q4_0;
    t->dot_packed[FR_Q4_0] = dot_packed_q4_0;
    t->dot[FR_Q4_1] = dot_q4_1;
    t->dot_rows[FR_Q4_1] = rows_q4_1;
    t->dot_tile[FR_Q4_1] = tile_q4_1;
    t->pack[FR_Q4_1] = fr_pack_q4_1;
    t->dot_packed[FR_Q4_1] = dot_packed_q4_1;
    t->dot[FR_Q5_0] = fr_dot_exact_ref(FR_Q5_0);
    t->dot_rows[FR_Q5_0] = rows_q5_0;
    t->dot_tile[FR_Q5_0] = tile_q5_0;
    t->pack[FR_Q5_0] = fr_pack_q5_0;
    t->dot_packed[FR_Q5_0] = dot_packed_q5_0;
    t->dot[FR_Q8_0] = fr_dot_exact_ref(FR_Q8_0);
    t->dot_rows[FR_Q8_0] = rows_q8_0;
    t->dot_tile[FR_Q8_0] = tile_q8_0;
    t->pack[FR_Q8_0] = fr_pack_q8_0;
    t->dot_packed[FR_Q8_0] = dot_packed_q8_0;
    fr_kernels_fill_avx2_packed_k(t); /* Q4_K: kernels_avx2_packed_k.c */
}
