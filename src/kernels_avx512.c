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
 *   Q4_0  uses the raw nibble q and subtracts 8 * sum(a) (x = q - 8),
 *   Q5_0  uses the 5-bit code q (nibble | 16 where the qh bit, read as a
 *         byte mask, is set) and subtracts 16 * sum(a).
 * The correction depends only on the activations, so it is computed once per
 * block pair and shared by all rows, as the accumulator VPDPBUSD starts from.
 *
 * Scales: the fp16 headers sit at the block stride. Each group of 8 blocks
 * gathers them into a register with scalar loads, converts them at once
 * (VCVTPH2PS), multiplies weight by activation scales, and spreads each
 * pair's two products over the halves of a register with one VPERMPS. For
 * Q4_1 the same multiply also yields m_w * s_a, the min term.
 *
 * Every kernel is written for a tile of NR weight rows x NC activation rows:
 * NR x 1 is matrix-vector (decode: activation loads, scales and corrections
 * shared by the rows), 1 x 1 for leftover rows. Independent accumulators per
 * tile entry hide the FMA latency. (The single quantized dot is AVX2's, see
 * fr_kernels_fill_avx512.) Prefill (many activation rows) first unpacks
 * panels of 16 activation rows into ready operands, then runs every weight
 * row against a panel in 1 x 16 tiles; see "prefill" below.
 *
 * Prefill tiles give each (row, activation) entry exactly the float that
 * dot_rows gives it (same integer sums, same float operations in the same
 * order, same final reduction), so batched, chunked and single-token
 * evaluation agree bit for bit; only which entries are computed together
 * differs. For the 32-blocks the arithmetic of a row depends on whether it
 * sits in a full group of four of the call (one accumulator) or is left
 * over (two), for dot_rows and dot_tile alike.
 *
 * The K-quants (Q4_K, Q6_K against Q8_K) have their own tiles, described at
 * their section.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "quant.h"
#include "kernel_loops.h"
#include "simd512.h"

#define MAXR 4   /* weight rows per tile */
#define MAXC 2   /* activation rows per tile (prefill) */

/* VPERMPS indices that give pair k of a group its two blocks' scales, one
 * block per 256-bit half: lanes 4k, 4k+2 of Q4_1's interleaved (dd, ms)
 * products, lanes 2k, 2k+1 of the plain dd products. Loaded from memory
 * rather than built, which would cost shuffles in the inner loop. */
#define SPREAD(lo, hi) {lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi}
static const int32_t spread_q4_1[4][16] __attribute__((aligned(64))) = {
    SPREAD(0, 2), SPREAD(4, 6), SPREAD(8, 10), SPREAD(12, 14)};
static const int32_t spread_dd[4][16] __attribute__((aligned(64))) = {
    SPREAD(0, 1), SPREAD(2, 3), SPREAD(4, 5), SPREAD(6, 7)};

/* ---- quantized dots: Q4_0 . Q8_0, Q4_1 . Q8_1, Q8_0 . Q8_0, Q5_0 . Q8_0 ---- */

/* Header j of the gm blocks at p, or 0 past gm: the address is clamped to
 * block 0 so nothing past the row is read, and no branch is needed. */
static ALWAYS_INLINE uint32_t header32(const uint8_t *p, size_t stride, int j, int gm) {
    uint32_t v = load32(p + (j < gm ? j : 0) * stride);
    return j < gm ? v : 0;
}

static ALWAYS_INLINE uint16_t header16(const uint8_t *p, size_t stride, int j, int gm) {
    uint16_t v = load16(p + (j < gm ? j : 0) * stride);
    return j < gm ? v : 0;
}

/* The headers of a group's gm (<= 8) blocks in one register, zeros past
 * gm: 4 bytes each (d, m / d, s) for Q4_1 and Q8_1, else the 2-byte d.
 * Built from scalar loads packed into two 64-bit integers, then one MOVQ
 * and one PINSRQ: word or dword inserts would cost a shuffle uop each (8
 * per group and row, about a sixth of the Q4_0 / Q5_0 kernels' time). Going
 * through a small array in memory instead would make the vector load wait
 * for the scalar stores to retire (a failed store forward). */
static ALWAYS_INLINE __m128i headers4_32(const uint8_t *p, size_t stride, int j0, int gm) {
    uint64_t lo = header32(p, stride, j0, gm) | (uint64_t)header32(p, stride, j0 + 1, gm) << 32;
    uint64_t hi = header32(p, stride, j0 + 2, gm) | (uint64_t)header32(p, stride, j0 + 3, gm) << 32;
    return _mm_insert_epi64(_mm_cvtsi64_si128((long long)lo), (long long)hi, 1);
}

static ALWAYS_INLINE __m128i headers8_16(const uint8_t *p, size_t stride, int gm) {
    uint64_t lo = (uint64_t)header16(p, stride, 0, gm) | (uint64_t)header16(p, stride, 1, gm) << 16 |
                  (uint64_t)header16(p, stride, 2, gm) << 32 | (uint64_t)header16(p, stride, 3, gm) << 48;
    uint64_t hi = (uint64_t)header16(p, stride, 4, gm) | (uint64_t)header16(p, stride, 5, gm) << 16 |
                  (uint64_t)header16(p, stride, 6, gm) << 32 | (uint64_t)header16(p, stride, 7, gm) << 48;
    return _mm_insert_epi64(_mm_cvtsi64_si128((long long)lo), (long long)hi, 1);
}

/* Block scales of a group as floats: Q4_1 / Q8_1 give [d0, m0, d1, m1, ...]
 * (m = s for Q8_1), the d-only formats [d0 .. d7] in the low 8 lanes. */
static ALWAYS_INLINE __m512 group_headers(const uint8_t *p, size_t stride, int gm, const int pairs) {
    if (pairs)
        return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(headers4_32(p, stride, 0, gm)),
                                                       headers4_32(p, stride, 4, gm), 1));
    return _mm512_castps256_ps512(_mm256_cvtph_ps(headers8_16(p, stride, gm)));
}


/* A tile is NR weight rows x NC activation rows; tile entry (r, c) is
 * index r * NC + c of P and acc. With fewer than 4 entries each gets two
 * accumulators (even and odd pairs) to cover FMA latency. */
#define SLOTS(NR, NC) ((NR) * (NC) >= 4 ? 1 : 2)
#define MAXT (MAXR * MAXC)

/* Pair k of a group: acc(r, c) += idot(r, c) * scales(r, c) for the tile. */
static ALWAYS_INLINE void pair_step(const uint8_t *w, size_t ws, const uint8_t *a, size_t as, int k,
                                    int two, const __m512 *P, __m512 *acc, int slot, const int NR,
                                    const int NC, const int fmt) {
    __m512i av[MAXC], corr[MAXC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; c++) {
        av[c] = load_pair(a + c * as + A_QS(fmt), A_SZ(fmt), two);
        corr[c] = pair_corr(av[c], fmt);
    }
    __m512i idx = _mm512_load_si512(fmt == FMT_Q4_1 ? spread_q4_1[k] : spread_dd[k]);
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        __m512i wq = weight_pair(w + r * ws, two, fmt);
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            const int t = r * NC + c, i = t * SLOTS(NR, NC) + slot;
            __m512i p = _mm512_dpbusd_epi32(corr[c], wq, av[c]);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(idx, P[t]), acc[i]);
        }
    }
}

/* gm blocks (8 in all groups but the last) of the tile. The scale
 * products P(r, c) = scales of row r x scales of activation c; for Q4_1 the
 * odd lanes are the min terms m_w s_a, which go straight into the first
 * accumulator, whose lanes are all summed at the end anyway. The short last
 * group uses one slot. */
static ALWAYS_INLINE void group(const uint8_t *w, size_t ws, const uint8_t *a, size_t as, int gm,
                                __m512 *acc, const int NR, const int NC, const int fmt) {
    const int pairs = fmt == FMT_Q4_1;
    __m512 A[MAXC], P[MAXT];
#pragma GCC unroll 4
    for (int c = 0; c < NC; c++) A[c] = group_headers(a + c * as, A_SZ(fmt), gm, pairs);
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        __m512 W = group_headers(w + r * ws, W_SZ(fmt), gm, pairs);
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            const int t = r * NC + c, i = t * SLOTS(NR, NC);
            P[t] = _mm512_mul_ps(W, A[c]);
            if (pairs) acc[i] = _mm512_mask_add_ps(acc[i], 0xaaaa, acc[i], P[t]);
        }
    }
    if (gm == 8) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            pair_step(w + 2 * k * W_SZ(fmt), ws, a + 2 * k * A_SZ(fmt), as, k, 1, P, acc,
                      k % SLOTS(NR, NC), NR, NC, fmt);
    } else {
        for (int k = 0; 2 * k < gm; k++)
            pair_step(w + 2 * k * W_SZ(fmt), ws, a + 2 * k * A_SZ(fmt), as, k, 2 * k + 1 < gm, P, acc,
                      0, NR, NC, fmt);
    }
}

/* One tile: out[c * ldo + r] for NR rows x NC activation rows. */
static ALWAYS_INLINE void qdot_tile(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,
                                    size_t as, float *out, size_t ldo, const int NR, const int NC,
                                    const int fmt) {
    const int64_t nb = n / 32;
    __m512 acc[MAXT * 2];
    for (int i = 0; i < MAXT * 2; i++) acc[i] = _mm512_setzero_ps(); /* unused ones fold away */
    int64_t g = 0;
    for (; g + 8 <= nb; g += 8) /* gm a constant: straight-line code */
        group(w + g * W_SZ(fmt), ws, a + g * A_SZ(fmt), as, 8, acc, NR, NC, fmt);
    if (g < nb) group(w + g * W_SZ(fmt), ws, a + g * A_SZ(fmt), as, (int)(nb - g), acc, NR, NC, fmt);
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            const int i = (r * NC + c) * SLOTS(NR, NC);
            __m512 s = SLOTS(NR, NC) == 2 ? _mm512_add_ps(acc[i], acc[i + 1]) : acc[i];
            out[c * ldo + r] = _mm512_reduce_add_ps(s);
        }
    }
}

/* ---- unpacked tiles ------------------------------------------------------------
 *
 * For decode (dot_rows), and in prefill for the rows past the last full
 * group of four and for rows too long for a panel (see below). Rows go in
 * groups of MAXR (leftovers one at a time), and for each group the
 * activations in groups of MAXC (a leftover one alone): rows outside, so
 * each weight row is read from memory once and stays in L1 while the
 * activations, small and shared, are re-read from cache. Four tile shapes
 * per format: MAXR x MAXC, MAXR x 1 (matrix-vector), 1 x MAXC, 1 x 1. */

/* NR rows against nc activation rows. */
static ALWAYS_INLINE void qdot_cols(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a,
                                    size_t as, int nc, float *out, size_t ldo, const int NR,
                                    const int fmt) {
    int c = 0;
    for (; c + MAXC <= nc; c += MAXC) qdot_tile(n, w, ws, a + c * as, as, out + c * ldo, ldo, NR, MAXC, fmt);
    if (c < nc) qdot_tile(n, w, ws, a + c * as, as, out + c * ldo, ldo, NR, 1, fmt);
}

static ALWAYS_INLINE void qdot_tiles(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *a,
                                     size_t as, int nc, float *out, size_t ldo, const int fmt) {
    int r = 0;
    for (; r + MAXR <= nr; r += MAXR) qdot_cols(n, w + r * ws, ws, a, as, nc, out + r, ldo, MAXR, fmt);
    for (; r < nr; r++) qdot_cols(n, w + r * ws, ws, a, as, nc, out + r, ldo, 1, fmt);
}

/* ---- prefill: packed activation panels --------------------------------------
 *
 * A prefill product is a thread's whole row range against up to hundreds of
 * tokens, so whatever the tile does per activation block pair that is not
 * tied to a weight row can be done once ahead. The tokens go in panels of
 * 16 (fewer where 16 do not fit in PANEL_BYTES), and each panel's pairs are
 * unpacked into a buffer on the stack that stays in L1 as ready operands:
 * the pair's 64 codes, its scales spread the way VPERMPS spreads them above
 * (d_a of each block in its eight lanes), the offset correction, and for
 * Q4_1 the group's header floats. Every weight row then goes past the panel
 * in a 1 x 16 tile (16 accumulators): each weight pair is expanded and its
 * scales spread once for 16 tokens, and each entry costs four uops per pair
 * (VPDPBUSD from the packed codes, the scale product, VCVTDQ2PS, FMA, the
 * first two with a memory operand). The 16 sums are reduced together
 * (reduce16). A panel of 8 uses 2 x 8 tiles, the end of the batch 4 x 4, 4 x
 * 2, 4 x 1; the weight rows come from L2 (or memory: prefetched a tile
 * ahead), once per panel.
 *
 * The same arithmetic as the 4 x 1 tile of rows_* (what decode computes for
 * a row in a full group of four): the same integer sum per pair, the same
 * scale products (permuting W and A, then multiplying, gives the lane values
 * that multiplying, then permuting gives), the same FMA into one accumulator
 * per entry, the same reduction. Q4_1's min terms go in with a masked FMA
 * of W and A where the tile adds their product: the product of two fp16
 * values is exact in fp32, so the one rounding is the same. Rows past the
 * last full group of four take the unpacked 1 x NC tiles with two slots,
 * like rows_*'s 1 x 1.
 *
 * Panel layout, group by group of 8 blocks: for Q4_1, each token's header
 * floats (64 bytes); then pair by pair, each token's entry of PK_ES bytes:
 * codes, spread scales, correction (not for Q4_1, whose dot starts at 0). */
#define PK_NR 4  /* at most this many weight rows per tile */
#define PK_NT 16 /* at most this many tile entries (accumulators) */
#define PANEL_BYTES (32 * 1024) /* packed activations per panel: in L1 with the weights */
#define PK_HDR(fmt) ((fmt) == FMT_Q4_1 ? 64 : 0)
#define PK_ES(fmt) ((fmt) == FMT_Q4_1 ? 128 : 192)

/* Packed bytes of one token's row of nb blocks. */
static ALWAYS_INLINE size_t packed_bytes(int64_t nb, const int fmt) {
    return (size_t)(((nb + 7) / 8) * PK_HDR(fmt) + (nb + 1) / 2 * PK_ES(fmt));
}

/* tp activation rows (stride as) of nb blocks into the panel at p. */
static ALWAYS_INLINE void pack_panel(int64_t nb, const uint8_t *a, size_t as, int tp, uint8_t *p,
                                     const int fmt) {
    const int pairs = fmt == FMT_Q4_1, hdr = PK_HDR(fmt), es = PK_ES(fmt);
    for (int64_t g = 0; g < nb; g += 8) {
        int gm = (int)FR_MIN(8, nb - g);
        for (int c = 0; c < tp; c++) {
            const uint8_t *y = a + c * as + g * A_SZ(fmt);
            __m512 A = group_headers(y, A_SZ(fmt), gm, pairs);
            if (fmt == FMT_Q4_1) _mm512_store_ps(p + c * hdr, A);
            for (int k = 0; 2 * k < gm; k++) {
                uint8_t *e = p + (size_t)tp * (hdr + k * es) + c * es;
                __m512i av = load_pair(y + 2 * k * A_SZ(fmt) + A_QS(fmt), A_SZ(fmt), 2 * k + 1 < gm);
                __m512i idx = _mm512_load_si512(fmt == FMT_Q4_1 ? spread_q4_1[k] : spread_dd[k]);
                _mm512_store_si512(e, av);
                _mm512_store_ps(e + 64, _mm512_permutexvar_ps(idx, A));
                if (fmt != FMT_Q4_1) _mm512_store_si512(e + 128, pair_corr(av, fmt));
            }
        }
        p += (size_t)tp * (hdr + (gm + 1) / 2 * es);
    }
}

/* gm blocks of NR weight rows (stride ws) against tokens c0 .. c0 + NC - 1
 * of the group at p in a panel of tp tokens. acc(r, c) is index r * NC + c. */
static ALWAYS_INLINE void packed_group(const uint8_t *w, size_t ws, const uint8_t *p, int tp, int c0,
                                       int gm, __m512 *acc, const int NR, const int NC, const int fmt) {
    const int pairs = fmt == FMT_Q4_1, hdr = PK_HDR(fmt), es = PK_ES(fmt);
    __m512 W[PK_NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) W[r] = group_headers(w + r * ws, W_SZ(fmt), gm, pairs);
    if (fmt == FMT_Q4_1) {
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) {
            __m512 A = _mm512_load_ps(p + (c0 + c) * hdr);
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                acc[r * NC + c] = _mm512_mask3_fmadd_ps(W[r], A, acc[r * NC + c], 0xaaaa);
        }
    }
    p += (size_t)tp * hdr + (size_t)c0 * es;
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        if (2 * k >= gm) break;
        const int two = 2 * k + 1 < gm;
        __m512i idx = _mm512_load_si512(fmt == FMT_Q4_1 ? spread_q4_1[k] : spread_dd[k]);
        __m512i wq[PK_NR];
        __m512 wsp[PK_NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            wq[r] = weight_pair(w + r * ws + 2 * k * W_SZ(fmt), two, fmt);
            wsp[r] = _mm512_permutexvar_ps(idx, W[r]);
        }
        const uint8_t *e = p + (size_t)tp * k * es;
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) {
            __m512i av = _mm512_load_si512(e + c * es);
            __m512 asp = _mm512_load_ps(e + c * es + 64);
#pragma GCC unroll 4
            for (int r = 0; r < NR; r++) {
                __m512i s0 = fmt == FMT_Q4_1 ? _mm512_setzero_si512() : _mm512_load_si512(e + c * es + 128);
                __m512 sc = _mm512_mul_ps(wsp[r], asp);
                __m512i d = _mm512_dpbusd_epi32(s0, wq[r], av);
                acc[r * NC + c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, acc[r * NC + c]);
            }
        }
    }
}

/* _mm512_reduce_add_ps of 16 registers at once, the same additions: it
 * adds the halves (lane i + lane i + 8), then the quarters, then lanes 0 +
 * 2 and 1 + 3, then those two. Here each step works on registers holding
 * several inputs' partial sums side by side: 45 uops for 16 sums rather
 * than 8 each. res[4 c + q] = the sum of A[4 q + c]. */
static ALWAYS_INLINE void reduce16(const __m512 *A, float *res) {
    __m512 U[8], V[4], W[2];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) /* [A 2j: lanes 0-7 + 8-15, A 2j+1: same] */
        U[j] = _mm512_add_ps(_mm512_shuffle_f32x4(A[2 * j], A[2 * j + 1], 0x44),
                             _mm512_shuffle_f32x4(A[2 * j], A[2 * j + 1], 0xee));
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) /* chunk k: A 4j+k's lanes 0-3 + 4-7 of the above */
        V[j] = _mm512_add_ps(_mm512_shuffle_f32x4(U[2 * j], U[2 * j + 1], 0x88),
                             _mm512_shuffle_f32x4(U[2 * j], U[2 * j + 1], 0xdd));
#pragma GCC unroll 2
    for (int j = 0; j < 2; j++) /* chunk k: [0 + 2, 1 + 3] of A 8j+k, then of A 8j+4+k */
        W[j] = _mm512_add_ps(_mm512_shuffle_ps(V[2 * j], V[2 * j + 1], 0x44),
                             _mm512_shuffle_ps(V[2 * j], V[2 * j + 1], 0xee));
    _mm512_store_ps(res, _mm512_add_ps(_mm512_shuffle_ps(W[0], W[1], 0x88), _mm512_shuffle_ps(W[0], W[1], 0xdd)));
}

/* NR rows x tokens c0 .. c0 + NC - 1 of the panel at p (tp tokens). */
static ALWAYS_INLINE void packed_tile(int64_t nb, const uint8_t *w, size_t ws, const uint8_t *p, int tp,
                                      int c0, float *out, size_t ldo, const int NR, const int NC,
                                      const int fmt) {
    const int hdr = PK_HDR(fmt), es = PK_ES(fmt);
    __m512 acc[PK_NT];
#pragma GCC unroll 64
    for (int i = 0; i < NR * NC; i++) acc[i] = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= nb; g += 8, p += (size_t)tp * (hdr + 4 * es)) /* gm a constant: straight-line code */
        packed_group(w + g * W_SZ(fmt), ws, p, tp, c0, 8, acc, NR, NC, fmt);
    if (g < nb) packed_group(w + g * W_SZ(fmt), ws, p, tp, c0, (int)(nb - g), acc, NR, NC, fmt);
    if (NR * NC == 16) {
        float res[16] __attribute__((aligned(64)));
        reduce16(acc, res);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) out[(c0 + i % NC) * ldo + i / NC] = res[4 * (i % 4) + i / 4];
        return;
    }
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) out[(c0 + c) * ldo + r] = _mm512_reduce_add_ps(acc[r * NC + c]);
}

/* Asks for the k rows of rb bytes (stride ws) at w into L1 ahead of their
 * tile, if they are rows of the call (r + k <= nr): every panel streams all
 * the rows, and from memory (a large matrix) the hardware prefetcher alone
 * falls behind. */
static ALWAYS_INLINE void prefetch_rows(const uint8_t *w, size_t ws, size_t rb, int r, int k, int nr) {
    if (r + k > nr) return;
    for (int i = 0; i < k; i++)
        for (size_t o = 0; o < rb; o += 64) _mm_prefetch((const char *)w + (r + i) * ws + o, _MM_HINT_T0);
}

/* Rows [0, nr) (a multiple of four) against a panel of tp tokens: 16
 * tokens a row at a time, 8 two rows at a time (16 accumulators either
 * way); what is left of a last panel in 4, 2, 1 four rows at a time. Each
 * tile first asks for the next tile's rows. */
static ALWAYS_INLINE void packed_rows(int64_t nb, const uint8_t *w, size_t ws, int nr, const uint8_t *p,
                                      int tp, float *out, size_t ldo, const int fmt) {
    const size_t rb = (size_t)nb * W_SZ(fmt);
    int c = 0;
    if (tp == 16) {
        for (int r = 0; r < nr; r++) {
            prefetch_rows(w, ws, rb, r + 1, 1, nr);
            packed_tile(nb, w + r * ws, ws, p, tp, 0, out + r, ldo, 1, 16, fmt);
        }
        return;
    }
    if (tp >= 8) {
        for (int r = 0; r < nr; r += 2) {
            prefetch_rows(w, ws, rb, r + 2, 2, nr);
            packed_tile(nb, w + r * ws, ws, p, tp, 0, out + r, ldo, 2, 8, fmt);
        }
        c = 8;
    }
    if (c == tp) return;
    /* the rest in 4 x 4, 4 x 2 and 4 x 1 tiles, all of a row group's before
     * the next group's, so that its rows are read once (three tokens
     * decoded together went slower than two when each shape took its own
     * pass over the rows) */
    for (int r = 0; r < nr; r += 4) {
        prefetch_rows(w, ws, rb, r + 4, 4, nr);
        int cc = c;
        if (tp - cc >= 4) packed_tile(nb, w + r * ws, ws, p, tp, cc, out + r, ldo, 4, 4, fmt), cc += 4;
        if (tp - cc >= 2) packed_tile(nb, w + r * ws, ws, p, tp, cc, out + r, ldo, 4, 2, fmt), cc += 2;
        if (tp - cc >= 1) packed_tile(nb, w + r * ws, ws, p, tp, cc, out + r, ldo, 4, 1, fmt);
    }
}

/* The tile entry: rows in full groups of four against panels of tokens,
 * then the rows left over unpacked. A panel is 16 tokens, or fewer where
 * 16 would not fit in PANEL_BYTES; rows too long for a panel of one token
 * go unpacked. */
static ALWAYS_INLINE void qdot_packed(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *a,
                                      size_t as, int nc, float *out, size_t ldo, const int fmt) {
    const int64_t nb = n / 32;
    const size_t pt = packed_bytes(nb, fmt);
    const int nr4 = nr / MAXR * MAXR;
    if (pt > PANEL_BYTES || nr4 == 0) {
        qdot_tiles(n, w, ws, nr, a, as, nc, out, ldo, fmt);
        return;
    }
    uint8_t panel[PANEL_BYTES] __attribute__((aligned(64)));
    int tpmax = 16;
    while (tpmax * pt > PANEL_BYTES) tpmax /= 2;
    for (int c0 = 0; c0 < nc; c0 += tpmax) {
        int tp = FR_MIN(tpmax, nc - c0);
        pack_panel(nb, a + c0 * as, as, tp, panel, fmt);
        packed_rows(nb, w, ws, nr4, panel, tp, out + c0 * ldo, ldo, fmt);
    }
    for (int r = nr4; r < nr; r++) qdot_cols(n, w + r * ws, ws, a, as, nc, out + r, ldo, 1, fmt);
}

/* Decode (rows_*) asks for the rows AHEAD rows on while it computes a
 * group of four: four rows read side by side are streams the hardware
 * prefetcher follows too late (1.4x on SmolLM2's tg128, 1.15x on Gemma
 * 3's, measured at this level). */
#define AHEAD (4 * MAXR)

#define QDOT_ENTRIES(suffix, fmt)                                                          \
    static void rows_##suffix(int64_t n, const void *w, size_t ws, const void *a, float *out, \
                              int nr) {                                                    \
        const uint8_t *wp = w;                                                             \
        int r = 0;                                                                         \
        for (; r + MAXR <= nr; r += MAXR) {                                                \
            prefetch_rows(wp, ws, (size_t)(n / 32) * W_SZ(fmt), r + AHEAD, MAXR, nr);      \
            qdot_tile(n, wp + r * ws, ws, a, 0, out + r, 1, MAXR, 1, fmt);                 \
        }                                                                                  \
        for (; r < nr; r++) qdot_tile(n, wp + r * ws, ws, a, 0, out + r, 1, 1, 1, fmt);   \
    }                                                                                      \
    static void tile_##suffix(int64_t n, const void *w, size_t ws, int nr, const void *a,  \
                              size_t as, int nc, float *out, size_t ldo) {                 \
        qdot_packed(n, w, ws, nr, a, as, nc, out, ldo, fmt);                               \
    }
QDOT_ENTRIES(q4_0_q8_0, FMT_Q4_0)
QDOT_ENTRIES(q4_1_q8_1, FMT_Q4_1)
QDOT_ENTRIES(q8_0_q8_0, FMT_Q8_0)
QDOT_ENTRIES(q5_0_q8_0, FMT_Q5_0)

/* ---- K-quant dots: Q4_K . Q8_K, Q6_K . Q8_K ---------------------------------
 *
 * A super-block of 256 is four registers of 64 codes in element order (u8:
 * 0..15 for Q4_K, 0..63 for Q6_K). Against the activations (s8), VPMADDUBSW
 * gives s16 pair sums (at most 2*63*128, no saturation), and VPDPWSSD
 * multiplies those by the pairs' sub-block scales (s16, put in place by one
 * VPERMW per register) and adds them into the block's s32 sums, exactly.
 * The block's scale product then goes on with one FMA.
 *
 * The parts that do not depend on the codes come from the activation
 * block's bsums, once per activation block for all rows: Q4_K's min term
 * dmin * d_a * sum_j m_j sum a (madd of the widened mins with the bsums
 * summed in pairs), Q6_K's offset 32 * sum_k sc_k bsums_k, taken off the
 * integer sums.
 *
 * Tiles are NR weight rows x NC activation rows as for the 32-blocks: each
 * row's codes and scale vectors are built once per block and used for the
 * NC activation rows. An entry's arithmetic (one accumulator) does not
 * depend on the tile shape. */
enum { KFMT_Q4_K, KFMT_Q6_K };



/* One weight row's super-block, ready for the tile: the codes q[4], the
 * scale vectors sv[4], the widened scales w16 (Q4_K: with the mins, for
 * the min term; Q6_K: for the offset term) and d (Q4_K: d, dmin). */
typedef struct {
    __m512i q[4], sv[4];
    __m256i w16;
    __m128 d;
} kblock;

static ALWAYS_INLINE void k_weights(const uint8_t *x, kblock *b, const int fmt) {
    if (fmt == KFMT_Q4_K) {
        b->w16 = _mm256_cvtepu8_epi16(q4_k_scales(x + Q4_K_SC));
        __m512i w = _mm512_castsi256_si512(b->w16);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            b->q[k] = q4_k_codes(x, k);
            b->sv[k] = _mm512_permutexvar_epi16(_mm512_load_si512(perm_q4_k[k]), w);
        }
        b->d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load32(x)));
    } else {
        b->w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + Q6_K_SC)));
        __m512i w = _mm512_castsi256_si512(b->w16);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) q6_k_codes(x, h, &b->q[2 * h], &b->q[2 * h + 1]);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) b->sv[k] = _mm512_permutexvar_epi16(_mm512_load_si512(perm_q6_k[k]), w);
        b->d = _mm_set_ss(_cvtsh_ss(load16(x + Q6_K_D)));
    }
}

/* An activation block's terms shared by all rows: d_a, and the bsums (for
 * Q4_K summed in pairs, one per sub-block, at the mins' words, zeros at the
 * scales'). */
static ALWAYS_INLINE void k_act(const uint8_t *y, __m256i *bs, __m128 *da, const int fmt) {
    *da = _mm_set1_ps(load_f32(y));
    *bs = _mm256_loadu_si256((const __m256i *)(y + Q8_K_BS));
    if (fmt == KFMT_Q4_K)
        *bs = _mm256_packs_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(*bs, _mm256_set1_epi16(1)));
}

/* Tile entry t += the block of weight row b against the activation block y. */
static ALWAYS_INLINE void k_entry(const kblock *b, const uint8_t *y, __m256i bs, __m128 da, __m512 *t,
                                  const int fmt) {
    const uint8_t *qa = y + Q8_K_QS;
    __m512i isum = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(b->q[k], _mm512_loadu_si512(qa + 64 * k)), b->sv[k]);
    __m256i side = _mm256_madd_epi16(b->w16, bs);
    __m128 dd = _mm_mul_ps(b->d, da);
    if (fmt == KFMT_Q6_K) {
        isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(_mm256_slli_epi32(side, 5)));
        *t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(dd), *t);
    } else { /* d d_a sums - dmin d_a min sums (the upper 8 lanes of side are zero) */
        *t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(dd), *t);
        *t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(side)),
                              _mm512_broadcastss_ps(_mm_movehdup_ps(dd)), *t);
    }
}

#define K_MAXC 16 /* activation rows per tile, one weight row (prefill) */

/* One block of the tile, NR rows x NC activation rows. acc(r, c) is index
 * r * NC + c. With several rows the activation terms are made once for
 * all; with one, as each activation row comes (no registers to keep 16). */
static ALWAYS_INLINE void k_block(const uint8_t *w, size_t ws, const uint8_t *a, size_t as, __m512 *acc,
                                  const int NR, const int NC, const int fmt) {
    __m256i bs[K_MAXC];
    __m128 da[K_MAXC];
    if (NR > 1)
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) k_act(a + c * as, &bs[c], &da[c], fmt);
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        kblock b;
        k_weights(w + r * ws, &b, fmt);
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) {
            if (NR == 1) k_act(a + c * as, &bs[c], &da[c], fmt);
            k_entry(&b, a + c * as, bs[c], da[c], &acc[r * NC + c], fmt);
        }
    }
}

static ALWAYS_INLINE void k_tile(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a, size_t as,
                                 float *out, size_t ldo, const int NR, const int NC, const int fmt) {
    const size_t wsz = fmt == KFMT_Q4_K ? Q4_K_SZ : Q6_K_SZ;
    __m512 acc[K_MAXC];
#pragma GCC unroll 16
    for (int i = 0; i < NR * NC; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) k_block(w + i * wsz, ws, a + i * Q8_K_SZ, as, acc, NR, NC, fmt);
    if (NR * NC == 16) {
        float res[16] __attribute__((aligned(64)));
        reduce16(acc, res);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) out[(i % NC) * ldo + i / NC] = res[4 * (i % 4) + i / 4];
        return;
    }
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 16
        for (int c = 0; c < NC; c++) out[c * ldo + r] = _mm512_reduce_add_ps(acc[r * NC + c]);
}

#define K_PANEL_BYTES (40 * 1024) /* activation rows read by one 1 x 16 tile */

/* Prefill: the tokens in panels of 16 activation rows, or 8 where 16 do
 * not fit in K_PANEL_BYTES (read in place: they stay in L1 while every
 * weight row passes, prefetched a row ahead), each weight row against the
 * panel at once in a 1 x 16 (1 x 8) tile: a super-block's codes and scales
 * are expanded once per row and panel. The end of the batch goes in 1 x 8,
 * 4, 2, 1 tiles. */
static ALWAYS_INLINE void k_tiles(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *a,
                                  size_t as, int nc, float *out, size_t ldo, const int fmt) {
    const size_t rb = (size_t)(n / QK_K) * (fmt == KFMT_Q4_K ? Q4_K_SZ : Q6_K_SZ);
    const int wide = 16 * as <= K_PANEL_BYTES;
    int c = 0;
    for (; wide && c + 16 <= nc; c += 16)
        for (int r = 0; r < nr; r++) {
            prefetch_rows(w, ws, rb, r + 1, 1, nr);
            k_tile(n, w + r * ws, ws, a + c * as, as, out + c * ldo + r, ldo, 1, 16, fmt);
        }
    for (int nt = 8; nt >= 1; nt /= 2) {
        for (; c + nt <= nc; c += nt)
            for (int r = 0; r < nr; r++) {
                prefetch_rows(w, ws, rb, r + 1, 1, nr);
                if (nt == 8) k_tile(n, w + r * ws, ws, a + c * as, as, out + c * ldo + r, ldo, 1, 8, fmt);
                if (nt == 4) k_tile(n, w + r * ws, ws, a + c * as, as, out + c * ldo + r, ldo, 1, 4, fmt);
                if (nt == 2) k_tile(n, w + r * ws, ws, a + c * as, as, out + c * ldo + r, ldo, 1, 2, fmt);
                if (nt == 1) k_tile(n, w + r * ws, ws, a + c * as, as, out + c * ldo + r, ldo, 1, 1, fmt);
            }
    }
}

#define KDOT_ENTRIES(suffix, fmt)                                                          \
    static float dot_##suffix(int64_t n, const void *w, const void *a) {                   \
        float out;                                                                         \
        k_tile(n, w, 0, a, 0, &out, 1, 1, 1, fmt);                                         \
        return out;                                                                        \
    }                                                                                      \
    static void rows_##suffix(int64_t n, const void *w, size_t ws, const void *a, float *out, \
                              int nr) {                                                    \
        const uint8_t *wp = w;                                                             \
        int r = 0;                                                                         \
        for (; r + MAXR <= nr; r += MAXR) {                                                \
            prefetch_rows(wp, ws, (size_t)(n / QK_K) * (fmt == KFMT_Q4_K ? Q4_K_SZ : Q6_K_SZ), r + AHEAD, MAXR, nr); \
            k_tile(n, wp + r * ws, ws, a, 0, out + r, 1, MAXR, 1, fmt);                    \
        }                                                                                  \
        for (; r < nr; r++) k_tile(n, wp + r * ws, ws, a, 0, out + r, 1, 1, 1, fmt);      \
    }                                                                                      \
    static void tile_##suffix(int64_t n, const void *w, size_t ws, int nr, const void *a,  \
                              size_t as, int nc, float *out, size_t ldo) {                 \
        k_tiles(n, w, ws, nr, a, as, nc, out, ldo, fmt);                                   \
    }
KDOT_ENTRIES(q4_k_q8_k, KFMT_Q4_K)
KDOT_ENTRIES(q6_k_q8_k, KFMT_Q6_K)

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

ROWS_OF(rows_f32, dot_f32)
ROWS_OF(rows_f16, dot_f16)

TILE_OF(tile_f32, dot_f32)
TILE_OF(tile_f16, dot_f16)

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

/* Q8_0 and Q8_1 sixteen blocks at a time, with the same bits as
 * quant_block's one at a time: each block's |x| maxima (exact, in any
 * order) and code sums (integers) are reduced across lanes by one 16 x 16
 * transpose for all sixteen, and d = amax / 127 and 1 / d are one
 * division each for all sixteen, not two scalar ones per block. The pass
 * also looks for NaN and infinity (fr_quant_checked_fn), so the caller
 * needs no pass of its own over x. */
static ALWAYS_INLINE bool quant_q8_groups(const float *x, uint8_t *y, int64_t n, const bool q8_1) {
    const size_t bsz = q8_1 ? Q8_1_SZ : Q8_0_SZ, qs = q8_1 ? Q8_1_QS : Q8_0_QS;
    const __m512i expo = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    const int64_t nb = n / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int m = nb - b0 < 16 ? (int)(nb - b0) : 16;
        const float *xb = x + b0 * 32;
        uint8_t *yb = y + b0 * bsz;
        __m512 r[16];
        for (int i = 0; i < 16; i++) {
            if (i >= m) { r[i] = _mm512_setzero_ps(); continue; }
            __m512 v0 = _mm512_loadu_ps(xb + 32 * i), v1 = _mm512_loadu_ps(xb + 32 * i + 16);
            bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v0), expo), expo) |
                   _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v1), expo), expo);
            r[i] = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
        }
        transpose16(r); /* lane i of every r: block i */
        __m512 amax = r[0];
        for (int i = 1; i < 16; i++) amax = _mm512_max_ps(amax, r[i]);
        const __m512 d = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
        const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_OQ),
                                              _mm512_set1_ps(1.0f), d);
        float ids[16];
        _mm512_storeu_ps(ids, id);
        for (int i = 0; i < 16; i++) {
            if (i >= m) { r[i] = _mm512_setzero_ps(); continue; }
            const __m512 vid = _mm512_set1_ps(ids[i]);
            __m512i q0 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(_mm512_loadu_ps(xb + 32 * i), vid)));
            __m512i q1 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(_mm512_loadu_ps(xb + 32 * i + 16), vid)));
            _mm_storeu_si128((__m128i *)(yb + i * bsz + qs), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(yb + i * bsz + qs + 16), _mm512_cvtepi32_epi8(q1));
            r[i] = _mm512_castsi512_ps(_mm512_add_epi32(q0, q1));
        }
        uint16_t dh[16], sh[16];
        _mm256_storeu_si256((__m256i *)dh, _mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (q8_1) {
            transpose16(r);
            __m512i sum = _mm512_castps_si512(r[0]);
            for (int i = 1; i < 16; i++) sum = _mm512_add_epi32(sum, _mm512_castps_si512(r[i]));
            __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), d);
            _mm256_storeu_si256((__m256i *)sh, _mm512_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        for (int i = 0; i < m; i++) {
            memcpy(yb + i * bsz, dh + i, 2);
            if (q8_1) memcpy(yb + i * bsz + 2, sh + i, 2);
        }
    }
    return !bad;
}

static bool quant_q8_0_checked(const float *x, void *y, int64_t n) { return quant_q8_groups(x, y, n, false); }
static bool quant_q8_1_checked(const float *x, void *y, int64_t n) { return quant_q8_groups(x, y, n, true); }

/* Q8_K like the reference (ggml's): the first value of largest magnitude
 * sets iscale = -127 / max; codes are iscale * x rounded to nearest even
 * (VCVTPS2DQ in the default rounding mode, like rintf), saturated by the
 * packs (only 127 can be exceeded, by rounding); d = 1 / iscale. The max
 * and min of the block give max's sign unless both +amax and -amax occur,
 * when the first of them is looked up. bsums: VPSADBW of the codes + 128
 * sums each 8, less 8 * 128. */
static void quant_q8_k(const float *x, void *yv, int64_t n) {
    uint8_t *y = yv;
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, y += Q8_K_SZ) {
        __m512 v[16];
        for (int k = 0; k < 16; k++) v[k] = _mm512_loadu_ps(x + 16 * k);
        __m512 hi = v[0], lo = v[0];
        for (int k = 1; k < 16; k++) hi = _mm512_max_ps(hi, v[k]), lo = _mm512_min_ps(lo, v[k]);
        float vmax = _mm512_reduce_max_ps(hi), vmin = _mm512_reduce_min_ps(lo);
        float amax = vmax > -vmin ? vmax : -vmin, max = vmax > -vmin ? vmax : vmin, d = 0;
        if (vmax == -vmin) /* +amax and -amax (or all zero): the first one counts */
            for (int j = 0; j < QK_K; j++)
                if (x[j] == vmax || x[j] == vmin) { max = x[j]; break; }
        float iscale = amax != 0 ? -127.0f / max : 0;
        if (amax == 0 || isinf(iscale)) {
            memset(y + Q8_K_QS, 0, QK_K + 32);
            memcpy(y, &d, 4);
            continue;
        }
        const __m512 is = _mm512_set1_ps(iscale);
        __m512i sad[4];
        for (int k = 0; k < 4; k++) {
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v[4 * k], is));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v[4 * k + 1], is));
            __m512i q2 = _mm512_cvtps_epi32(_mm512_mul_ps(v[4 * k + 2], is));
            __m512i q3 = _mm512_cvtps_epi32(_mm512_mul_ps(v[4 * k + 3], is));
            /* per 128-bit lane L the packs give q0..q3's dwords 4L..4L+3 */
            __m512i p8 = _mm512_packs_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
            p8 = _mm512_permutexvar_epi32(order, p8);
            _mm512_storeu_si512(y + Q8_K_QS + 64 * k, p8);
            sad[k] = _mm512_sad_epu8(_mm512_xor_si512(p8, _mm512_set1_epi8((char)0x80)), _mm512_setzero_si512());
        }
        /* sad[k] qwords 2j, 2j+1: group 4k + j */
        __m512i g0 = _mm512_add_epi64(_mm512_permutex2var_epi64(sad[0], even, sad[1]),
                                      _mm512_permutex2var_epi64(sad[0], odd, sad[1]));
        __m512i g1 = _mm512_add_epi64(_mm512_permutex2var_epi64(sad[2], even, sad[3]),
                                      _mm512_permutex2var_epi64(sad[2], odd, sad[3]));
        __m256i bs = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi64_epi16(g0)),
                                             _mm512_cvtepi64_epi16(g1), 1);
        _mm256_storeu_si256((__m256i *)(y + Q8_K_BS), _mm256_sub_epi16(bs, _mm256_set1_epi16(16 * 128)));
        d = 1.0f / iscale;
        memcpy(y, &d, 4);
    }
}

void fr_kernels_fill_avx512(fr_kernel_table *t) {
    /* The single quantized dot stays AVX2's (for Q4_0, Q5_0 and Q8_0 its
     * block-exact scalar twin: nothing calls a single dot on a hot path;
     * the multi-row and tile kernels below are this level's). For the
     * K-quants the 1 x 1 tile is as fast or faster, so it is used. */
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
    t->quant_checked[FR_Q8_0] = quant_q8_0_checked;
    t->quant_checked[FR_Q8_1] = quant_q8_1_checked;
    t->dot_rows[FR_Q5_0] = rows_q5_0_q8_0;
    t->dot_tile[FR_Q5_0] = tile_q5_0_q8_0;
    t->dot[FR_Q4_K] = dot_q4_k_q8_k;
    t->dot_rows[FR_Q4_K] = rows_q4_k_q8_k;
    t->dot_tile[FR_Q4_K] = tile_q4_k_q8_k;
    t->dot[FR_Q6_K] = dot_q6_k_q8_k;
    t->dot_rows[FR_Q6_K] = rows_q6_k_q8_k;
    t->dot_tile[FR_Q6_K] = tile_q6_k_q8_k;
    t->quant[FR_Q8_K] = quant_q8_k;
}
