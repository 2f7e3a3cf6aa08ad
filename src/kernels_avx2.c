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
 * blocks first gathers the headers 8 at a time into a register,
 * converts them with F16C, and stores the scale products; the main loop
 * then broadcasts each from memory, which needs no shuffle port. Of the
 * 32-element formats only Q8_0 is here: Q4_0, Q4_1 and Q5_0 have their
 * own kernels, on rows packed at load (kernels_avx2_packed.c), and so has
 * Q4_K (kernels_avx2_packed_k.c).
 *
 * Q6_K (256-element super-blocks against Q8_K) scales each 16 weights'
 * s16 pair sums by their small integer scale with madd, so a whole
 * super-block's integer sum is exact before its one FMA; see the Q6_K
 * section. Q8_0's tiles read each weight block once for four
 * tokens (see "tiles" below); the other multi-row and tile entries are
 * one dot per output.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "simd_common.h"
#include "kernel_loops.h"

#define CHUNK 32 /* blocks whose scales are prepared at once */

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}


/* u8 x s8 -> 8 x s32 partial sums (pairs must fit s16, see callers). */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

static inline __m256i load256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* ---- scale preparation ------------------------------------------------ */

/* Header j of the gm blocks at p, or 0 past gm: the address is clamped to
 * block 0 so nothing past the row is read, and no branch is needed. */
static inline uint16_t header16(const uint8_t *p, size_t stride, int j, int gm) {
    uint16_t v = load16(p + (size_t)(j < gm ? j : 0) * stride);
    return j < gm ? v : 0;
}

/* The 2-byte scales d of up to 8 blocks in one register, built with inserts from scalar loads. Going through
 * a small array in memory would make the vector load wait for the scalar
 * stores to retire (a failed store forward), which costs far more. */
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

/* For Q8_0 weights against Q8_0 activations: sc[j] = d_w d_a. */
static inline void scales_d(const uint8_t *x, size_t x_blk, const uint8_t *y, int m, float *sc) {
    for (int j = 0; j < m; j += 8) {
        int gm = FR_MIN(8, m - j);
        __m256 W = _mm256_cvtph_ps(headers8_16(x + (size_t)j * x_blk, x_blk, gm));
        __m256 A = _mm256_cvtph_ps(headers8_16(y + (size_t)j * Q8_0_SZ, Q8_0_SZ, gm));
        _mm256_storeu_ps(sc + j, _mm256_mul_ps(W, A));
    }
}

/* ---- quantized dots --------------------------------------------------- */

#define NT 4 /* activation rows (tokens) that share each unpacked weight block */

/* A weight block as the operands each token's activations meet. maddubs
 * wants one operand unsigned: u holds |w|, and the sign of w moves onto
 * the activations (sign(a, w)). */
typedef struct { __m256i w, u; } wblock;

static inline __attribute__((always_inline)) wblock weight_block(const uint8_t *xb) {
    wblock b;
    b.w = load256(xb + Q8_0_QS);
    b.u = _mm256_abs_epi8(b.w);
    return b;
}

/* Integer dot of a weight block with an activation block: 8 s32 partial
 * sums of four products each, exact: |w| x sign(w)*a, |w| <= 128 and
 * |a| <= 127. */
static inline __attribute__((always_inline)) __m256i block_idot(wblock b, const uint8_t *yb) {
    return dot_u8s8(b.u, _mm256_sign_epi8(load256(yb + Q8_0_QS), b.w));
}

/* The blocks of one chunk (m blocks at xc) against nt (1..NT) activation
 * rows yc, yc + ys, ...: two blocks per step, each unpacked once and met
 * by every token, into two accumulators per token to cover the FMA
 * latency; sc[t] holds token t's scale products. The single dot and the tiles
 * both run this, so each token gets the same float operations in the same
 * order either way. */
static inline __attribute__((always_inline)) void chunk_blocks(const uint8_t *xc, int m, const uint8_t *yc,
                                                               size_t ys, int nt, float (*sc)[CHUNK],
                                                               __m256 *acc0, __m256 *acc1) {
    const size_t xsz = Q8_0_SZ;
    const size_t ysz = Q8_0_SZ;
    int j = 0;
    for (; j + 1 < m; j += 2) {
        wblock w0 = weight_block(xc + j * xsz), w1 = weight_block(xc + (j + 1) * xsz);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const uint8_t *yb = yc + t * ys + j * ysz;
            acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_idot(w0, yb)),
                                      _mm256_broadcast_ss(sc[t] + j), acc0[t]);
            acc1[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_idot(w1, yb + ysz)),
                                      _mm256_broadcast_ss(sc[t] + j + 1), acc1[t]);
        }
    }
    if (j < m) {
        wblock w0 = weight_block(xc + j * xsz);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_idot(w0, yc + t * ys + j * ysz)),
                                      _mm256_broadcast_ss(sc[t] + j), acc0[t]);
    }
}

/* The dot's result from its accumulators. */
static inline __attribute__((always_inline)) float finish(__m256 acc0, __m256 acc1) {
    return hsum256(_mm256_add_ps(acc0, acc1));
}

/* One dot: per chunk, the scale products from the blocks' fp16 headers,
 * then the chunk's blocks. */
static inline __attribute__((always_inline)) float qdot(int64_t n, const uint8_t *x, const uint8_t *y) {
    const size_t xsz = Q8_0_SZ;
    const size_t ysz = Q8_0_SZ;
    const int64_t nb = n / 32;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float sc[1][CHUNK];
    for (int64_t c0 = 0; c0 < nb; c0 += CHUNK) {
        const int m = (int)FR_MIN(CHUNK, nb - c0);
        const uint8_t *xc = x + c0 * xsz, *yc = y + c0 * ysz;
        scales_d(xc, xsz, yc, m, sc[0]);
        chunk_blocks(xc, m, yc, 0, 1, sc, &acc0, &acc1);
    }
    return finish(acc0, acc1);
}

/* ---- Q8_0 tiles ----------------------------------------------------------
 *
 * A tile call runs every weight row against groups of up to TILE_TOKENS
 * activation rows (kernel_loops.h), NT tokens at a time sharing each
 * unpacked weight block. The fp16 headers are converted once: a group's
 * activation headers when the group starts, a row's weight headers once per
 * group; a (row, token) pair's scale products are then plain multiplies of
 * those floats in groups of 8 lanes, which are the very products that
 * scales_d forms for the single dot: the same floats multiplied, zeros
 * past the last block as there. */

/* nb blocks' scales d as floats; zeros up to a multiple of 8 blocks. */
static inline __attribute__((always_inline)) void headers_f32(const uint8_t *p, size_t stride, int64_t nb,
                                                              float *f) {
    const int64_t padded = (nb + 7) / 8 * 8;
    for (int64_t j = 0; j < padded; j++) f[j] = j < nb ? _cvtsh_ss(load16(p + j * stride)) : 0.0f;
}

/* One weight row (its header floats in wf) against nt tokens (theirs in
 * af, af_stride apart): out[t * ldo]. */
static inline __attribute__((always_inline)) void row_tokens(int64_t n, const uint8_t *row, const float *wf,
                                                             const uint8_t *a, size_t as, const float *af,
                                                             size_t af_stride, const int nt, float *out, size_t ldo) {
    const size_t xsz = Q8_0_SZ;
    const size_t ysz = Q8_0_SZ;
    const int64_t nb = n / 32;
    __m256 acc0[NT], acc1[NT];
    float sc[NT][CHUNK];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += CHUNK) {
        const int m = (int)FR_MIN(CHUNK, nb - b0);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            for (int j = 0; j < m; j += 8)
                _mm256_storeu_ps(sc[t] + j, _mm256_mul_ps(_mm256_load_ps(wf + b0 + j),
                                                          _mm256_load_ps(af + (size_t)t * af_stride + b0 + j)));
        chunk_blocks(row + b0 * xsz, m, a + b0 * ysz, as, nt, sc, acc0, acc1);
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) out[t * ldo] = finish(acc0[t], acc1[t]);
}

static inline __attribute__((always_inline)) void qtile(int64_t n, const uint8_t *w, size_t ws, int nr,
                                                        const uint8_t *a, size_t as, int nc, float *out,
                                                        size_t ldo) {
    const size_t xsz = Q8_0_SZ;
    const size_t ysz = Q8_0_SZ;
    const int64_t nb = n / 32, padded = (nb + 7) / 8 * 8;
    /* work space: the row's header floats and the group's; plain malloc,
     * as a failure is no error here: one dot per output gives the same bits */
    const size_t hdr = (size_t)padded;
    float *work = nb > 0 ? aligned_alloc(32, (1 + TILE_TOKENS) * hdr * sizeof(float)) : NULL;
    if (!work) {
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r++) out[c * ldo + r] = qdot(n, w + r * ws, a + c * as);
        return;
    }
    float *wf = work, *af = wf + hdr;
    for (int c0 = 0; c0 < nc; c0 += TILE_TOKENS) {
        int c1 = nc - c0 < TILE_TOKENS ? nc : c0 + TILE_TOKENS;
        for (int c = c0; c < c1; c++) headers_f32(a + c * as, ysz, nb, af + (c - c0) * hdr);
        for (int r = 0; r < nr; r++) {
            const uint8_t *row = w + r * ws;
            if (r + ROWS_AHEAD < nr) prefetch_row(row + ROWS_AHEAD * ws, ws);
            headers_f32(row, xsz, nb, wf);
            for (int c = c0; c < c1; c += NT) {
                const float *at = af + (c - c0) * hdr;
                float *o = out + c * ldo + r;
                const uint8_t *ac = a + c * as;
                switch (c1 - c < NT ? c1 - c : NT) { /* a constant count keeps the accumulators in registers */
                case 1: row_tokens(n, row, wf, ac, as, at, hdr, 1, o, ldo); break;
                case 2: row_tokens(n, row, wf, ac, as, at, hdr, 2, o, ldo); break;
                case 3: row_tokens(n, row, wf, ac, as, at, hdr, 3, o, ldo); break;
                default: row_tokens(n, row, wf, ac, as, at, hdr, 4, o, ldo); break;
                }
            }
        }
    }
    free(work);
}

static float dot_q8_0_q8_0(int64_t n, const void *w, const void *a) { return qdot(n, w, a); }

static void tile_q8_0_q8_0(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nc, float *out,
                           size_t ldo) {
    qtile(n, w, ws, nr, a, as, nc, out, ldo);
}

/* ---- Q6_K dots (super-blocks of 256 against Q8_K) -------------------------
 *
 * Per 32 weights: maddubs (code u8 x activation s8 -> s16 pair sums, at
 * most 2*63*128 for the 6-bit codes), then madd with the sub-block's
 * scale broadcast to 16 lanes (-> s32, exact), added into the block's
 * integer sum; the block's float scale product goes on with one FMA. The
 * offset 32, which does not depend on the codes, comes from the
 * activation block's bsums. (Q4_K has its own kernels, on rows packed at
 * load: kernels_avx2_packed_k.c.) */

/* Q6_K codes of one half (128 elements) as four 32-byte vectors in
 * element order: low nibbles of ql[0..31], ql[32..63], then their high
 * nibbles, each with two bits of qh above (bits 0-1, 2-3, 4-5, 6-7). */
static inline void q6_k_half(const uint8_t *ql, const uint8_t *qh, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30);
    __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(qh);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
}

/* A super-block unpacked for its integer dot with activations: 8 vectors
 * of 32 codes (in the order of the activation's 32-byte groups), for each
 * the scale words madd multiplies their pair sums by, the widened scales
 * (for the offset) and the fp16 d as a float. The single dots unpack one
 * at a time (it stays in registers); the tiles unpack a row's
 * super-blocks once into a buffer that every token of the group then
 * reads. */
typedef struct { __m256i q[8], sc[8], s16; __m128 d; } ksb;

/* Q6_K: the 32 codes at 32g cover scales 2g and 2g + 1, one per 128-bit half. */
static inline __attribute__((always_inline)) void q6_k_unpack(const uint8_t *x, ksb *u) {
    u->s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + Q6_K_SC)));
    __m256i slo = _mm256_permute2x128_si256(u->s16, u->s16, 0x00), shi = _mm256_permute2x128_si256(u->s16, u->s16, 0x11);
    q6_k_half(x + Q6_K_QL, x + Q6_K_QH, u->q);
    q6_k_half(x + Q6_K_QL + 64, x + Q6_K_QH + 32, u->q + 4);
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) {
        const int b0 = 4 * g % 16; /* byte of scale word 2g in its half */
        __m256i idx = _mm256_setr_epi8(b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0,
                                       b0 + 1, b0, b0 + 1, b0, b0 + 1, b0 + 2, b0 + 3, b0 + 2, b0 + 3,
                                       b0 + 2, b0 + 3, b0 + 2, b0 + 3, b0 + 2, b0 + 3, b0 + 2, b0 + 3,
                                       b0 + 2, b0 + 3, b0 + 2, b0 + 3);
        u->sc[g] = _mm256_shuffle_epi8(g < 4 ? slo : shi, idx);
    }
    u->d = _mm_set_ss(_cvtsh_ss(load16(x + Q6_K_D)));
}

/* sum_g sc_g (codes_g . a_g), exact: maddubs pairs stay below 2^15
 * (2*63*128 for the 6-bit codes), madd by the small scales to s32. */
static inline __attribute__((always_inline)) __m256i ksb_isum(const ksb *u, const uint8_t *y) {
    __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++)
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(u->q[g], load256(y + Q8_K_QS + 32 * g)),
                                                        u->sc[g]));
    return isum;
}

/* One super-block of one token into the accumulator: sum (q - 32) a =
 * sum q a - 32 sum a: codes 0..63 go to maddubs unsigned, and
 * 32 * sum_k sc_k bsums_k comes off the sum. */
static inline __attribute__((always_inline)) void q6_k_step(const ksb *u, const uint8_t *y, __m256 *acc) {
    __m256i corr = _mm256_madd_epi16(u->s16, load256(y + Q8_K_BS));
    __m256i isum = _mm256_sub_epi32(ksb_isum(u, y), _mm256_slli_epi32(corr, 5));
    float dd = _mm_cvtss_f32(u->d) * load_f32(y);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dd), *acc);
}

static float dot_q6_k_q8_k(int64_t n, const void *wv, const void *av) {
    const uint8_t *x = wv, *y = av;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, x += Q6_K_SZ, y += Q8_K_SZ) {
        ksb u;
        q6_k_unpack(x, &u);
        q6_k_step(&u, y, &acc);
    }
    return hsum256(acc);
}

/* Q6_K tiles: tokens in groups of TILE_TOKENS; each weight row is
 * unpacked once per group into a work buffer, and every token of the
 * group runs the single dot's steps on it. */
static void tile_q6_k_q8_k(int64_t n, const void *wv, size_t ws, int nr, const void *av, size_t as, int nc,
                           float *out, size_t ldo) {
    const uint8_t *w = wv, *a = av;
    const int64_t nsb = n / QK_K;
    /* plain aligned_alloc: a failure is no error here, one dot each gives the same bits */
    ksb *buf = nsb > 0 ? aligned_alloc(32, (size_t)nsb * sizeof(ksb)) : NULL;
    if (!buf) {
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r++) out[c * ldo + r] = dot_q6_k_q8_k(n, w + r * ws, a + c * as);
        return;
    }
    for (int c0 = 0; c0 < nc; c0 += TILE_TOKENS) {
        int c1 = nc - c0 < TILE_TOKENS ? nc : c0 + TILE_TOKENS;
        for (int r = 0; r < nr; r++) {
            const uint8_t *row = w + r * ws;
            if (r + ROWS_AHEAD < nr) prefetch_row(row + ROWS_AHEAD * ws, ws);
            for (int64_t i = 0; i < nsb; i++) q6_k_unpack(row + i * Q6_K_SZ, &buf[i]);
            for (int c = c0; c < c1; c++) {
                const uint8_t *y = a + c * as;
                __m256 acc = _mm256_setzero_ps();
                for (int64_t i = 0; i < nsb; i++, y += Q8_K_SZ) q6_k_step(&buf[i], y, &acc);
                out[c * ldo + r] = hsum256(acc);
            }
        }
    }
    free(buf);
}

/* ---- float dots ------------------------------------------------------- */

/* The float dots differ only in how 8 elements are widened to fp32: one
 * body, four accumulators to hide the FMA latency, the tail element by
 * element. */
static inline __m256 load_f32x8(const float *p) { return _mm256_loadu_ps(p); }

static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* a bf16 is the top half of an fp32, so widening is a 16-bit shift */
static inline __m256 load_bf16x8(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static inline float f32_of(float v) { return v; }
static inline float bf16_of(uint16_t v) { return fr_bf16_to_fp32(v); }
static inline float f16_of(uint16_t v) { return _cvtsh_ss(v); }

#define FLOAT_DOT(name, WT, AT, load_w, load_a, w_of, a_of)                              \
    static float name(int64_t n, const void *wv, const void *av) {                       \
        const WT *x = wv;                                                                \
        const AT *y = av;                                                                \
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                      \
        int64_t i = 0;                                                                   \
        for (; i + 32 <= n; i += 32) {                                                   \
            s0 = _mm256_fmadd_ps(load_w(x + i), load_a(y + i), s0);                      \
            s1 = _mm256_fmadd_ps(load_w(x + i + 8), load_a(y + i + 8), s1);              \
            s2 = _mm256_fmadd_ps(load_w(x + i + 16), load_a(y + i + 16), s2);            \
            s3 = _mm256_fmadd_ps(load_w(x + i + 24), load_a(y + i + 24), s3);            \
        }                                                                                \
        for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load_w(x + i), load_a(y + i), s0); \
        float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));   \
        for (; i < n; i++) s += w_of(x[i]) * a_of(y[i]);                                 \
        return s;                                                                        \
    }

FLOAT_DOT(dot_f32, float, float, load_f32x8, load_f32x8, f32_of, f32_of)
FLOAT_DOT(dot_f16, uint16_t, uint16_t, load_f16x8, load_f16x8, f16_of, f16_of)
FLOAT_DOT(dot_bf16, uint16_t, float, load_bf16x8, load_f32x8, bf16_of, f32_of)

/* ---- multi-row (all) and float tiles: one dot each ------------------------ */

ROWS_OF(rows_q8_0_q8_0, dot_q8_0_q8_0)
ROWS_OF(rows_q6_k_q8_k, dot_q6_k_q8_k)
ROWS_OF(rows_f32, dot_f32)
ROWS_OF(rows_f16, dot_f16)
ROWS_OF(rows_bf16, dot_bf16)

TILE_OF(tile_f32, dot_f32)
TILE_OF(tile_f16, dot_f16)
TILE_OF(tile_bf16, dot_bf16)

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

/* Q8_K like the reference (ggml's): the first value of largest magnitude
 * sets iscale = -127 / max; codes are iscale * x rounded to nearest even
 * (VCVTPS2DQ in the default rounding mode, like rintf), saturated by the
 * packs (only 127 can be exceeded, by rounding); d = 1 / iscale. The max
 * and min of the block give max's sign unless both +amax and -amax occur,
 * when the first of them is looked up. */
static void quant_q8_k(const float *x, void *yv, int64_t n) {
    uint8_t *y = yv;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += Q8_K_SZ) {
        __m256 hi = _mm256_loadu_ps(x), lo = hi;
        for (int k = 8; k < QK_K; k += 8) {
            __m256 v = _mm256_loadu_ps(x + k);
            hi = _mm256_max_ps(hi, v), lo = _mm256_min_ps(lo, v);
        }
        __m128 h4 = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1));
        __m128 l4 = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
        h4 = _mm_max_ps(h4, _mm_movehl_ps(h4, h4)), l4 = _mm_min_ps(l4, _mm_movehl_ps(l4, l4));
        float vmax = _mm_cvtss_f32(_mm_max_ss(h4, _mm_movehdup_ps(h4)));
        float vmin = _mm_cvtss_f32(_mm_min_ss(l4, _mm_movehdup_ps(l4)));
        float amax = vmax > -vmin ? vmax : -vmin, max = vmax > -vmin ? vmax : vmin, d = 0;
        if (vmax == -vmin) /* +amax and -amax (or all zero): the first one counts */
            for (int j = 0; j < QK_K; j++)
                if (x[j] == vmax || x[j] == vmin) { max = x[j]; break; }
        float iscale = amax != 0 ? -127.0f / max : 0;
        if (amax == 0 || isinf(iscale)) {
            memset(y + Q8_K_QS, 0, QK_K + 32);
        } else {
            const __m256 is = _mm256_set1_ps(iscale);
            const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), ones8 = _mm256_set1_epi8(1);
            __m256i quads[8];
            for (int k = 0; k < 8; k++) {
                __m256i q[4];
                for (int j = 0; j < 4; j++)
                    q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * j), is));
                __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
                p8 = _mm256_permutevar8x32_epi32(p8, order);
                _mm256_storeu_si256((__m256i *)(y + Q8_K_QS + 32 * k), p8);
                /* sums of 4 codes: low half group 2k, high half group 2k + 1 */
                quads[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, p8), _mm256_set1_epi16(1));
            }
            /* two rounds of horizontal adds (within 128-bit halves) give whole
             * groups: e0's low half holds groups 0, 2, 4, 6, its high half 1,
             * 3, 5, 7, e1 likewise 8..15; packed to s16, interleaving the
             * halves puts them in order */
            __m256i e0 = _mm256_hadd_epi32(_mm256_hadd_epi32(quads[0], quads[1]), _mm256_hadd_epi32(quads[2], quads[3]));
            __m256i e1 = _mm256_hadd_epi32(_mm256_hadd_epi32(quads[4], quads[5]), _mm256_hadd_epi32(quads[6], quads[7]));
            __m256i w = _mm256_packs_epi32(e0, e1);
            __m128i wl = _mm256_castsi256_si128(w), wh = _mm256_extracti128_si256(w, 1);
            _mm_storeu_si128((__m128i *)(y + Q8_K_BS), _mm_unpacklo_epi16(wl, wh));
            _mm_storeu_si128((__m128i *)(y + Q8_K_BS + 16), _mm_unpackhi_epi16(wl, wh));
            d = 1.0f / iscale;
        }
        memcpy(y, &d, 4);
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
    t->dot[FR_Q8_0] = dot_q8_0_q8_0;
    t->dot[FR_F32] = dot_f32;
    t->dot[FR_F16] = dot_f16;
    t->dot[FR_BF16] = dot_bf16;
    t->dot_rows[FR_Q8_0] = rows_q8_0_q8_0;
    t->dot_rows[FR_F32] = rows_f32;
    t->dot_rows[FR_F16] = rows_f16;
    t->dot_rows[FR_BF16] = rows_bf16;
    t->dot_tile[FR_Q8_0] = tile_q8_0_q8_0;
    t->dot_tile[FR_F32] = tile_f32;
    t->dot_tile[FR_F16] = tile_f16;
    t->dot_tile[FR_BF16] = tile_bf16;
    t->quant[FR_Q8_0] = quant_q8_0;
    t->quant[FR_Q8_1] = quant_q8_1;
    t->quant[FR_F16] = quant_f16;
    t->dot[FR_Q6_K] = dot_q6_k_q8_k;
    t->dot_rows[FR_Q6_K] = rows_q6_k_q8_k;
    t->dot_tile[FR_Q6_K] = tile_q6_k_q8_k;
    t->quant[FR_Q8_K] = quant_q8_k;
    fr_kernels_fill_avx2_packed(t); /* kernels_avx2_packed.c */
}
