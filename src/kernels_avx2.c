/*
 * kernels_avx2.c - dot products and activation quantizers for AVX2 + FMA +
 * F16C (built with -mavx2 -mfma -mf16c; only called after kernels.c has
 * checked the CPU). No VNNI here: AVX2 machines without it exist.
 *
 * The 32-element formats (Q4_0, Q4_1, Q5_0, Q8_0) have their own kernels,
 * on rows packed at load (kernels_avx2_packed.c), and so has Q4_K
 * (kernels_avx2_packed_k.c). Here: Q6_K, the float types and the
 * activation quantizers.
 *
 * Q6_K (256-element super-blocks against Q8_K): maddubs (u8 codes x s8
 * activations -> s16 pair sums, exact as no pair reaches 2^15), then
 * madd by each 16 weights' small integer scale, so a whole super-block's
 * integer sum is exact before its one FMA; see the Q6_K section. The
 * multi-row and tile entries are one dot per output, except Q6_K's tile,
 * which lays out 16 rows at a time for a prompt (lanes are rows) or
 * unpacks each row once for a few tokens. Q6_K's arithmetic is the
 * block-exact one of fr_dot_exact_ref, bit for bit.
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "simd_common.h"
#include "kernel_loops.h"

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256i load256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
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

/* One super-block of one token, the block-exact arithmetic of
 * fr_dot_exact_ref(FR_Q6_K): sum (q - 32) a = sum q a - 32 sum a, codes
 * 0..63 to maddubs unsigned and 32 * sum_k sc_k bsums_k off the sum; the
 * lanes' exact sums added up, then one FMA. */
static inline __attribute__((always_inline)) float q6_k_block(const ksb *u, const uint8_t *y, float acc) {
    __m256i corr = _mm256_madd_epi16(u->s16, load256(y + Q8_K_BS));
    __m256i isum = _mm256_sub_epi32(ksb_isum(u, y), _mm256_slli_epi32(corr, 5));
    float dd = _mm_cvtss_f32(u->d) * load_f32(y);
    return __builtin_fmaf(dd, (float)hsum_epi32(isum), acc);
}

static float dot_q6_k_q8_k(int64_t n, const void *wv, const void *av) {
    const uint8_t *x = wv, *y = av;
    float acc = 0;
    for (int64_t i = 0; i < n / QK_K; i++, x += Q6_K_SZ, y += Q8_K_SZ) {
        ksb u;
        q6_k_unpack(x, &u);
        acc = q6_k_block(&u, y, acc);
    }
    return acc;
}

/* A few tokens (batched decode): each weight row unpacked once into a
 * work buffer, which every token then reads. */
static void rows_tokens_q6_k(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as, int nc,
                             float *out, size_t ldo, ksb *buf) {
    const int64_t nsb = n / QK_K;
    for (int r = 0; r < nr; r++) {
        const uint8_t *row = w + r * ws;
        if (r + ROWS_AHEAD < nr) prefetch_row(row + ROWS_AHEAD * ws, ws);
        for (int64_t i = 0; i < nsb; i++) q6_k_unpack(row + i * Q6_K_SZ, &buf[i]);
        for (int c = 0; c < nc; c++) {
            const uint8_t *y = a + c * as;
            float acc = 0;
            for (int64_t i = 0; i < nsb; i++, y += Q8_K_SZ) acc = q6_k_block(&buf[i], y, acc);
            out[c * ldo + r] = acc;
        }
    }
}

/* ---- Q6_K against many tokens: lanes are rows ------------------------------
 *
 * A prompt's products take 16 rows at a time, laid out per call (not at
 * load: decode streams the rows as stored) as the lanes-are-rows kernels
 * of kernels_avx2_packed*.c have them: a 32-byte vector holds 4 codes of
 * each of 8 rows, as bytes 0..63, and maddubs against a token's 4
 * activation bytes broadcast gives each row its pair sums in its own
 * lanes. Two steps add up exactly in 16 bits (4 * 63 * 128 < 2^15); one
 * madd by the rows' sub-block scales takes them to 32 bits. The offset 32
 * meets the activation's bsums with 8 madds per super-block. No sum
 * crosses lanes, so ~1 operation per 32 products besides the maddubs and
 * broadcasts, where a row at a time (rows_tokens_q6_k) takes a madd, a
 * load and an add per maddubs and a horizontal sum per super-block. The
 * integers are those of fr_dot_exact_ref, and so is the FMA: same bits. */
#define Q6_NT 4          /* tokens sharing each load of codes */
#define Q6_GROUP_MIN 16  /* fewer tokens: rows_tokens_q6_k (laying out a group costs ~a token of products) */

typedef struct {
    uint8_t q[2][16][4][32];  /* half h (rows 8h..), sub-block k, step s: row i's codes 16k + 4s.. in bytes 4i.. */
    int16_t sc[2][16][16];    /* half, sub-block k: row i's sc_k in words 2i and 2i + 1 (madd by it) */
    int16_t scp[2][8][16];    /* half, pair j: row i's (sc_2j, sc_2j+1) in words 2i, 2i + 1 */
    float d[2][8];
} q6_group;

/* Rows [0, rows) of a group (rows <= 16; the others zero) over nsb
 * super-blocks into g. */
static void q6_k_group(const uint8_t *w, size_t ws, int rows, int64_t nsb, q6_group *g) {
    memset(g, 0, (size_t)nsb * sizeof *g);
    for (int r = 0; r < rows; r++)
        for (int64_t b = 0; b < nsb; b++) {
            const uint8_t *x = w + r * ws + b * Q6_K_SZ;
            const int8_t *sc = (const int8_t *)(x + Q6_K_SC);
            q6_group *u = g + b;
            const int h = r / 8, i = r % 8;
            _Alignas(32) uint8_t q[QK_K];
            __m256i v[8];
            q6_k_half(x + Q6_K_QL, x + Q6_K_QH, v);
            q6_k_half(x + Q6_K_QL + 64, x + Q6_K_QH + 32, v + 4);
            for (int k = 0; k < 8; k++) _mm256_store_si256((__m256i *)(q + 32 * k), v[k]);
            for (int k = 0; k < 16; k++) {
                for (int s = 0; s < 4; s++) memcpy(&u->q[h][k][s][4 * i], q + 16 * k + 4 * s, 4);
                u->sc[h][k][2 * i] = u->sc[h][k][2 * i + 1] = sc[k];
                u->scp[h][k / 2][2 * i + k % 2] = sc[k];
            }
            u->d[h][i] = _cvtsh_ss(load16(x + Q6_K_D));
        }
}

/* Half h of a group against nt tokens at a (stride as): acc[t] holds the
 * 8 rows' sums for token t. */
static inline __attribute__((always_inline)) void q6_k_half_tokens(const q6_group *g, int h, int64_t nsb,
                                                                   const uint8_t *a, size_t as, const int nt,
                                                                   __m256 *acc) {
    for (int64_t b = 0; b < nsb; b++) {
        const q6_group *u = g + b;
        const uint8_t *ab = a + b * Q8_K_SZ;
        __m256i isum[Q6_NT];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
        for (int k = 0; k < 16; k++) {
            const __m256i sc = _mm256_loadu_si256((const __m256i *)u->sc[h][k]);
#pragma GCC unroll 2
            for (int s = 0; s < 4; s += 2) {
                const __m256i c0 = load256(u->q[h][k][s]), c1 = load256(u->q[h][k][s + 1]);
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    const uint8_t *qa = ab + t * as + Q8_K_QS + 16 * k + 4 * s;
                    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(c0, _mm256_set1_epi32((int)load32(qa))),
                                                 _mm256_maddubs_epi16(c1, _mm256_set1_epi32((int)load32(qa + 4))));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, sc));
                }
            }
        }
        const __m256 d = _mm256_loadu_ps(u->d[h]);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const uint8_t *y = ab + t * as;
            __m256i msum = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)u->scp[h][j]),
                                                                _mm256_set1_epi32((int)load32(y + Q8_K_BS + 4 * j))));
            __m256i is = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(msum, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(load_f32(y))), _mm256_cvtepi32_ps(is), acc[t]);
        }
    }
}

/* A group of `rows` rows against tokens [0, nc), into out. */
static void q6_k_group_tokens(const q6_group *g, int rows, int64_t nsb, const uint8_t *a, size_t as, int nc,
                              float *out, size_t ldo) {
    for (int c = 0; c < nc; c += Q6_NT) {
        const int m = nc - c < Q6_NT ? nc - c : Q6_NT;
        for (int h = 0; h < 2 && 8 * h < rows; h++) {
            __m256 acc[Q6_NT];
            for (int t = 0; t < Q6_NT; t++) acc[t] = _mm256_setzero_ps();
            const uint8_t *ac = a + c * as;
            switch (m) { /* a constant count keeps the sums in registers */
            case 1: q6_k_half_tokens(g, h, nsb, ac, as, 1, acc); break;
            case 2: q6_k_half_tokens(g, h, nsb, ac, as, 2, acc); break;
            case 3: q6_k_half_tokens(g, h, nsb, ac, as, 3, acc); break;
            default: q6_k_half_tokens(g, h, nsb, ac, as, 4, acc); break;
            }
            const int n8 = rows - 8 * h < 8 ? rows - 8 * h : 8;
            for (int t = 0; t < m; t++) {
                float o[8];
                _mm256_storeu_ps(o, acc[t]);
                memcpy(out + (size_t)(c + t) * ldo + 8 * h, o, (size_t)n8 * sizeof(float));
            }
        }
    }
}

/* Several tokens: a prompt's (Q6_GROUP_MIN or more) through groups of 16
 * rows, a few (batched decode) a row at a time; without memory for the
 * work buffer (plain aligned_alloc: no error here), one dot each, which
 * gives the same bits. */
static void tile_q6_k_q8_k(int64_t n, const void *wv, size_t ws, int nr, const void *av, size_t as, int nc,
                           float *out, size_t ldo) {
    const uint8_t *w = wv, *a = av;
    const int64_t nsb = n / QK_K;
    const bool groups = nc >= Q6_GROUP_MIN;
    void *buf = nsb > 0 ? aligned_alloc(32, (size_t)nsb * (groups ? sizeof(q6_group) : sizeof(ksb))) : NULL;
    if (!buf) {
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < nr; r++) out[c * ldo + r] = dot_q6_k_q8_k(n, w + r * ws, a + c * as);
    } else if (!groups) {
        rows_tokens_q6_k(n, w, ws, nr, a, as, nc, out, ldo, buf);
    } else {
        for (int r0 = 0; r0 < nr; r0 += 16) {
            const int rows = nr - r0 < 16 ? nr - r0 : 16;
            q6_k_group(w + (size_t)r0 * ws, ws, rows, nsb, buf);
            q6_k_group_tokens(buf, rows, nsb, a, as, nc, out + r0, ldo);
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

/* Lane i: the largest of the 8 lanes of v[i], as unsigned integers; and
 * the sum of them. Pairs of lanes step by step, as for the 8 sums of a
 * tree of horizontal adds. */
static inline __m256i pair_max(__m256i a, __m256i b) {
    __m256 fa = _mm256_castsi256_ps(a), fb = _mm256_castsi256_ps(b);
    return _mm256_max_epu32(_mm256_castps_si256(_mm256_shuffle_ps(fa, fb, 0x88)),
                            _mm256_castps_si256(_mm256_shuffle_ps(fa, fb, 0xdd)));
}
static inline __m256i lanes_max8(const __m256i *v) {
    __m256i h01 = pair_max(v[0], v[1]), h23 = pair_max(v[2], v[3]);
    __m256i h45 = pair_max(v[4], v[5]), h67 = pair_max(v[6], v[7]);
    __m256i h0123 = pair_max(h01, h23), h4567 = pair_max(h45, h67);
    return _mm256_max_epu32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}
static inline __m256i lanes_sum8(const __m256i *v) {
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

static inline uint16_t to_fp16(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static inline void put_fp16(uint8_t *p, float f) {
    uint16_t h = to_fp16(f);
    memcpy(p, &h, 2);
}

/* Q8_0 and Q8_1 like the scalar reference, eight blocks at a time: per
 * block d = amax / 127, id = 1 / d (0 for d = 0), codes roundf(x id), and
 * for Q8_1 s = (sum of codes) d. A block's amax is the largest bit
 * pattern of its |x|, which for finite floats orders them as their
 * values do; eight blocks' maxima and code sums are reduced across lanes
 * together, and d and id are a division each for all eight (one block at
 * a time, the reductions and two scalar divisions were a chain of waits
 * per block). A pattern above the largest finite one is an infinity or a
 * NaN, so the pass is also the finiteness check (fr_quant_checked_fn):
 * false, and y is to be written again. */
static inline bool quant_q8_groups(const float *x, uint8_t *y, int64_t n, const bool q8_1) {
    const size_t bsz = q8_1 ? Q8_1_SZ : Q8_0_SZ, qs = q8_1 ? Q8_1_QS : Q8_0_QS;
    const __m256i abs_bits = _mm256_set1_epi32(0x7fffffff), top = _mm256_set1_epi32(0x7f7fffff);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i bad = _mm256_setzero_si256();
    const int64_t nb = n / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        const float *xb = x + b0 * 32;
        uint8_t *yb = y + b0 * bsz;
        __m256i r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = _mm256_setzero_si256();
            for (int k = 0; i < m && k < 4; k++)
                r[i] = _mm256_max_epu32(r[i], _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(xb + 32 * i + 8 * k)),
                                                               abs_bits));
        }
        const __m256i amax = lanes_max8(r);
        bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(amax, top));
        const __m256 d = _mm256_div_ps(_mm256_castsi256_ps(amax), _mm256_set1_ps(127.0f));
        const __m256 id = _mm256_and_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_OQ),
                                        _mm256_div_ps(_mm256_set1_ps(1.0f), d));
        for (int i = 0; i < 8; i++) {
            r[i] = _mm256_setzero_si256();
            if (i >= m) continue;
            const __m256 vid = _mm256_permutevar8x32_ps(id, _mm256_set1_epi32(i));
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * i + 8 * k), vid)));
            r[i] = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            /* s32 -> s8: the packs interleave 128-bit lanes, the permute restores order */
            __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(yb + i * bsz + qs), _mm256_permutevar8x32_epi32(p8, order));
        }
        uint16_t dh[8], sh[8];
        _mm_storeu_si128((__m128i *)dh, _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (q8_1) {
            __m256 sd = _mm256_mul_ps(_mm256_cvtepi32_ps(lanes_sum8(r)), d); /* sums: small integers, exact */
            _mm_storeu_si128((__m128i *)sh, _mm256_cvtps_ph(sd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        for (int i = 0; i < m; i++) {
            memcpy(yb + i * bsz, dh + i, 2);
            if (q8_1) memcpy(yb + i * bsz + 2, sh + i, 2);
        }
    }
    return _mm256_testz_si256(bad, bad);
}

static bool quant_q8_0_checked(const float *x, void *y, int64_t n) { return quant_q8_groups(x, y, n, false); }
static bool quant_q8_1_checked(const float *x, void *y, int64_t n) { return quant_q8_groups(x, y, n, true); }
static void quant_q8_0(const float *x, void *y, int64_t n) { quant_q8_groups(x, y, n, false); }
static void quant_q8_1(const float *x, void *y, int64_t n) { quant_q8_groups(x, y, n, true); }

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
    t->dot[FR_F32] = dot_f32;
    t->dot[FR_F16] = dot_f16;
    t->dot[FR_BF16] = dot_bf16;
    t->dot_rows[FR_F32] = rows_f32;
    t->dot_rows[FR_F16] = rows_f16;
    t->dot_rows[FR_BF16] = rows_bf16;
    t->dot_tile[FR_F32] = tile_f32;
    t->dot_tile[FR_F16] = tile_f16;
    t->dot_tile[FR_BF16] = tile_bf16;
    t->quant[FR_Q8_0] = quant_q8_0;
    t->quant[FR_Q8_1] = quant_q8_1;
    t->quant_checked[FR_Q8_0] = quant_q8_0_checked;
    t->quant_checked[FR_Q8_1] = quant_q8_1_checked;
    t->quant[FR_F16] = quant_f16;
    t->dot[FR_Q6_K] = dot_q6_k_q8_k;
    t->dot_rows[FR_Q6_K] = rows_q6_k_q8_k;
    t->dot_tile[FR_Q6_K] = tile_q6_k_q8_k;
    t->quant[FR_Q8_K] = quant_q8_k;
    fr_kernels_fill_avx2_packed(t); /* kernels_avx2_packed.c */
}
