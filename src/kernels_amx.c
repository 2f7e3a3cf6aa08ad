/*
 * kernels_amx.c - the AMX level: the 32-element block formats (Q4_0, Q4_1,
 * Q5_0, Q8_0) and the K-quants (Q4_K, Q6_K), with matrix products on the
 * AMX tile unit and matrix-vector products with AVX-512 VNNI. Built with
 * the AVX-512 and AMX flags; only called after kernels.c has checked the
 * CPU and obtained the kernel's permission to use the tile registers.
 *
 * Why a new arithmetic: a tile product (TDPBSSD) hands back one exact int32
 * sum per (row, token, block), and cannot reproduce the AVX-512 level's
 * float sums of per-lane partials. Batched, chunked and token-by-token
 * evaluation must agree bit for bit (see fr_dot_tile_fn), so at this level
 * decode computes the same thing as the tiles:
 *
 *   acc = 0; for each block b in order:
 *       acc = fma(d_w * d_a, (float) sum_i w_i a_i, acc)   (exact int sum)
 *       acc = fma(m_w, s_a, acc)                           (Q4_1 only)
 *
 * with w_i the signed codes (Q4_0: q - 8, Q5_0: q - 16, Q4_1: q, Q8_0: q).
 * The K-quants sum a whole super-block of 256 exactly in integers (the
 * sub-block scales multiply integer sums) and then take one FMA per
 * super-block, two for Q4_K's mins. quant.c's fr_dot_exact_ref is the
 * scalar twin; the tests hold both kernels to it bit for bit.
 *
 * Decode (rows): 16 weight rows at a time, block pairs loaded as in
 * kernels_avx512.c (one VPDPBUSD per row and pair), then a tree of unpacks
 * and adds (reduce_pairs) turns the 16 registers of lane partials into two
 * holding each row's exact sum for each block, so that scaling is one
 * multiply and one FMA per block for 16 rows, their scales fetched with one
 * gather. The next 16 rows' bytes are requested in slices meanwhile.
 *
 * Prefill and batched decode (tile): per block, C (16 rows x 16 tokens,
 * int32) = A (16 rows x 32 codes) . B (32 codes x 16 tokens), one TDPBSSD
 * (16 codes for Q6_K's sub-blocks). A: the weight codes as signed bytes,
 * unpacked once per group of 16 rows (Q8_0 rows are loaded in place). B:
 * the tokens' codes rearranged once per panel of 16 into the layout
 * TDPBSSD wants (four consecutive codes of a token side by side, tokens
 * across a 64-byte row). C is stored and scaled into 16 accumulators, one
 * per weight row with the tokens in its lanes, by the same multiply and
 * FMA as decode (the K-quants first sum C times the sub-block scales in
 * integers). Two pairs of C tiles alternate so that the tile unit works on
 * the next blocks while the vector units scale these.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "simd512.h"
#include "amx.h"

#define GR 16          /* weight rows per group */
#define PT 16          /* tokens per panel */
#define CHUNK_PANELS 8 /* panels prepared together: each row group is unpacked once per chunk */
#define MIN_TOKENS 4   /* fewer tokens: the rows kernel, the tokens sharing each weight read */
#define MAX_ROW_TOKENS 3 /* tokens the rows kernel takes at once */

/* ---- decode -------------------------------------------------------------- */

/* x[r]: row r's lane partials of a block pair (lanes 0-7 block b, 8-15
 * block b + 1). Returns in lane r of *s0 row r's sum for block b, of *s1
 * for block b + 1: pairs of rows fold 32-bit lanes, pairs of those fold
 * 64-bit lanes, leaving 128-bit chunks of one row each; then the two
 * chunks of each block are added and gathered in row order. */
static ALWAYS_INLINE void reduce_pairs(const __m512i x[GR], __m512i *s0, __m512i *s1) {
    __m512i y[8], z[4], w[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        y[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]),
                                _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        z[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(y[2 * i], y[2 * i + 1]),
                                _mm512_unpackhi_epi64(y[2 * i], y[2 * i + 1]));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* chunks (0, 2) + (1, 3) of each */
        w[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(z[2 * i], z[2 * i + 1], 0x88),
                                _mm512_shuffle_i32x4(z[2 * i], z[2 * i + 1], 0xdd));
    *s0 = _mm512_shuffle_i32x4(w[0], w[1], 0x88);
    *s1 = _mm512_shuffle_i32x4(w[0], w[1], 0xdd);
}

/* acc += d_w d_a isum (+ m_w s_a) for 16 rows of one block; the rows'
 * 4-byte headers (d, or d and m) come with one gather. */
static ALWAYS_INLINE __m512 scale_block(__m512 acc, __m512i isum, const uint8_t *wb, __m512i off,
                                        const uint8_t *ab, const int fmt) {
    __m512i h = _mm512_i32gather_epi32(off, wb, 1);
    __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h));
    __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(load16(ab))));
    acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum), acc);
    if (fmt == FMT_Q4_1) {
        __m512 mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16)));
        acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(_cvtsh_ss(load16(ab + 2))), acc);
    }
    return acc;
}

/* m (1..16) rows at w against nt (1..MAX_ROW_TOKENS) activation rows at
 * a, a + as, ...; rows past m repeat the last one and are not stored. The
 * tokens take turns on each block pair, so the weights are read from
 * memory once for all of them (the later turns find them in L1); each
 * token's arithmetic is the single token's, so the bits are too. */
static ALWAYS_INLINE void rows16(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a, size_t as, int nt,
                                 float *out, size_t ldo, int m, size_t pf_bytes, const int fmt) {
    const int64_t nb = n / 32;
    int32_t offs[GR];
    for (int r = 0; r < GR; r++) offs[r] = (int32_t)((r < m ? r : m - 1) * ws);
    const __m512i off = _mm512_loadu_si512(offs);
    __m512 acc[MAX_ROW_TOKENS];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    const uint8_t *pf = w + GR * ws;
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        const uint8_t *wb = w + b * W_SZ(fmt);
        for (size_t o = pf_bytes * b / nb & ~(size_t)63, e = pf_bytes * (b + 2) / nb; o < e; o += 64)
            _mm_prefetch((const char *)pf + o, _MM_HINT_T0);
        for (int t = 0; t < nt; t++) {
            const uint8_t *ab = a + t * as + b * A_SZ(fmt);
            __m512i av = load_pair(ab + A_QS(fmt), A_SZ(fmt), two), corr = pair_corr(av, fmt), x[GR];
#pragma GCC unroll 16
            for (int r = 0; r < GR; r++) x[r] = _mm512_dpbusd_epi32(corr, weight_pair(wb + offs[r], two, fmt), av);
            __m512i s0, s1;
            reduce_pairs(x, &s0, &s1);
            acc[t] = scale_block(acc[t], s0, wb, off, ab, fmt);
            if (two) acc[t] = scale_block(acc[t], s1, wb + W_SZ(fmt), off, ab + A_SZ(fmt), fmt);
        }
    }
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(out + t * ldo, (__mmask16)((1u << m) - 1), acc[t]);
}

/* ---- decode, K-quants ------------------------------------------------------
 *
 * Q6_K: isum = sum_k sc_k (sub-block k's (q - 32) . a), one FMA. Q4_K, per
 * super-block of 256, exact integers (quant.c's dot_exact_q4_k):
 * isum = sum_j sc_j (sub-block j's q . a) and msum = sum_j m_j (sub-block
 * j's sum of a); then acc = fma(d d_a, isum, acc), acc = fma(-(dmin d_a),
 * msum, acc). A row's isum comes as 16 lanes (VPMADDUBSW pair sums,
 * VPDPWSSD by each pair's sub-block scale, as in kernels_avx512.c), its
 * msum as 8 (the mins against the bsums summed in pairs); reduce_pairs
 * folds 16 rows of each into one register. */
enum { FMT_Q4_K = FMT_Q5_0 + 1, FMT_Q6_K };

static ALWAYS_INLINE __m512i q4_k_isum(const uint8_t *x, const __m512i qa[4]) {
    __m512i w = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(q4_k_scales(x + Q4_K_SC)));
    __m512i s = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q4_k_codes(x, k), qa[k]),
                                _mm512_permutexvar_epi16(_mm512_load_si512(perm_q4_k[k]), w));
    return s;
}

static ALWAYS_INLINE __m512i q4_k_msum(const uint8_t *x, __m256i bsp) {
    return _mm512_zextsi256_si512(_mm256_madd_epi16(_mm256_cvtepu8_epi16(q4_k_scales(x + Q4_K_SC)), bsp));
}

/* Q6_K: isum = sum_k sc_k (sub-block k's (q - 32) . a), sub-blocks of 16:
 * the codes' offset comes off as 32 sum_k sc_k bsums_k. */
static ALWAYS_INLINE __m512i q6_k_isum(const uint8_t *x, const __m512i qa[4], __m256i bs) {
    __m512i q[4], s = _mm512_setzero_si512();
    q6_k_codes(x, 0, &q[0], &q[1]);
    q6_k_codes(x, 1, &q[2], &q[3]);
    __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + Q6_K_SC)));
    __m512i w = _mm512_castsi256_si512(w16);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q[k], qa[k]),
                                _mm512_permutexvar_epi16(_mm512_load_si512(perm_q6_k[k]), w));
    return _mm512_sub_epi32(s, _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_madd_epi16(w16, bs), 5)));
}

static ALWAYS_INLINE __m512i sum_rows(const __m512i x[GR]) {
    __m512i s0, s1;
    reduce_pairs(x, &s0, &s1);
    return _mm512_add_epi32(s0, s1);
}

static ALWAYS_INLINE void rows16_k(int64_t n, const uint8_t *w, size_t ws, const uint8_t *a, size_t as, int nt,
                                   float *out, size_t ldo, int m, size_t pf_bytes, const int fmt) {
    const int64_t nsb = n / QK_K;
    const size_t wsz = fmt == FMT_Q4_K ? Q4_K_SZ : Q6_K_SZ;
    int32_t offs[GR];
    for (int r = 0; r < GR; r++) offs[r] = (int32_t)((r < m ? r : m - 1) * ws);
    const __m512i off = _mm512_loadu_si512(offs);
    const uint8_t *pf = w + GR * ws;
    __m512 acc[MAX_ROW_TOKENS];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++) {
        for (size_t o = pf_bytes * s / nsb & ~(size_t)63, e = pf_bytes * (s + 1) / nsb; o < e; o += 64)
            _mm_prefetch((const char *)pf + o, _MM_HINT_T0);
        const uint8_t *x = w + s * wsz;
        for (int t = 0; t < nt; t++) { /* the tokens take turns, as in rows16 */
            const uint8_t *y = a + t * as + s * Q8_K_SZ;
            __m512i qa[4], v[GR];
            for (int k = 0; k < 4; k++) qa[k] = _mm512_loadu_si512(y + Q8_K_QS + 64 * k);
            __m256i bs = _mm256_loadu_si256((const __m256i *)(y + Q8_K_BS));
            __m512 da = _mm512_set1_ps(load_f32(y));
            if (fmt == FMT_Q6_K) {
#pragma GCC unroll 16
                for (int r = 0; r < GR; r++) v[r] = q6_k_isum(x + offs[r], qa, bs);
                /* d is the block's last field: read with the two scale bytes before it */
                __m512i h = _mm512_i32gather_epi32(off, x + Q6_K_D - 2, 1);
                __m512 dd = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16))), da);
                acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sum_rows(v)), acc[t]);
                continue;
            }
            /* bsums summed in pairs, at the words of the mins: [0 x4, p0..p3, 0 x4, p4..p7] */
            __m256i bsp = _mm256_packs_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(bs, _mm256_set1_epi16(1)));
#pragma GCC unroll 16
            for (int r = 0; r < GR; r++) v[r] = q4_k_isum(x + offs[r], qa);
            __m512i isum = sum_rows(v);
#pragma GCC unroll 16
            for (int r = 0; r < GR; r++) v[r] = q4_k_msum(x + offs[r], bsp);
            __m512i msum = sum_rows(v);
            __m512i h = _mm512_i32gather_epi32(off, x, 1); /* d, dmin */
            __m512 dd = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)), da);
            __m512 dm = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16))), da);
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum), acc[t]);
            acc[t] = _mm512_fnmadd_ps(dm, _mm512_cvtepi32_ps(msum), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(out + t * ldo, (__mmask16)((1u << m) - 1), acc[t]);
}

/* nr rows against nt (1..MAX_ROW_TOKENS) activation rows: out[t * ldo + r]. */
static ALWAYS_INLINE void rows_exact(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as,
                                     int nt, float *out, size_t ldo, const int fmt) {
    if (ws > (size_t)INT32_MAX / GR) { /* offsets do not fit the gather: scalar twin, same bits */
        fr_dot_fn dot = fr_dot_exact_ref(fmt == FMT_Q4_0 ? FR_Q4_0 : fmt == FMT_Q4_1 ? FR_Q4_1
                                         : fmt == FMT_Q5_0 ? FR_Q5_0 : fmt == FMT_Q4_K ? FR_Q4_K
                                         : fmt == FMT_Q6_K ? FR_Q6_K : FR_Q8_0);
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < nr; r++) out[t * ldo + r] = dot(n, w + r * ws, a + t * as);
        return;
    }
    /* Each group of 16 reads its rows at 16 places at once, which the
     * hardware prefetcher follows poorly: the next group's bytes are
     * requested in slices while this one computes. */
    for (int r = 0; r < nr; r += GR) {
        const int m = nr - r < GR ? nr - r : GR;
        size_t next = r + GR < nr ? (size_t)(nr - r - GR < GR ? nr - r - GR : GR) * ws : 0;
        if (fmt == FMT_Q4_K || fmt == FMT_Q6_K)
            rows16_k(n, w + r * ws, ws, a, as, nt, out + r, ldo, m, next, fmt);
        else
            rows16(n, w + r * ws, ws, a, as, nt, out + r, ldo, m, next, fmt);
    }
}

/* ---- tiles ----------------------------------------------------------------- */

static const fr_tile_config tiles = {
    .palette = 1,
    .colsb = {PT * 4, PT * 4, PT * 4, PT * 4, 32, 32, PT * 4, PT * 4},
    .rows = {GR, GR, GR, GR, GR, GR, 8, 8},
};
/* Q6_K's sub-blocks of 16: A 16 rows x 16 codes, B 4 rows. */
static const fr_tile_config tiles_k16 = {
    .palette = 1,
    .colsb = {PT * 4, PT * 4, PT * 4, PT * 4, 16, 16, PT * 4, PT * 4},
    .rows = {GR, GR, GR, GR, GR, GR, 4, 4},
};

/* amx.h's scratch: one block per kernel file and thread, a header
 * recording its size, the usable memory 64-byte aligned after it. */
typedef struct { size_t cap; } scratch_head;
static pthread_key_t scratch_keys[FR_AMX_SCRATCH_COUNT];
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_free(void *p) { free(p); }
static void scratch_keys_make(void) {
    scratch_ok = 1;
    for (int i = 0; i < FR_AMX_SCRATCH_COUNT; i++)
        if (pthread_key_create(&scratch_keys[i], scratch_free) != 0) scratch_ok = 0;
}

void *fr_amx_scratch(int owner, size_t bytes) {
    if (owner < 0 || owner >= FR_AMX_SCRATCH_COUNT || pthread_once(&scratch_once, scratch_keys_make) != 0 ||
        !scratch_ok)
        return NULL;
    scratch_head *h = pthread_getspecific(scratch_keys[owner]);
    if (!h || h->cap < bytes) {
        free(h);
        h = malloc(sizeof *h + 64 + bytes);
        if (pthread_setspecific(scratch_keys[owner], h) != 0 && h) free(h), h = NULL;
        if (!h) return NULL;
        h->cap = bytes;
    }
    return (void *)(((uintptr_t)(h + 1) + 63) & ~(uintptr_t)63);
}

/* Per-thread work space (amx.h's scratch): a row group's codes and
 * scales, a chunk's panels, the stored C tiles. */
typedef struct {
    int8_t *a;      /* [nb / 2][GR][64] weight codes */
    float *aw, *am; /* [nb][GR] d_w, m_w */
    int8_t *b;      /* [panel][nb][8][PT * 4] activation codes */
    float *bd, *bs; /* [panel][nb][PT] d_a, s_a */
    int32_t *c;     /* [2][GR][PT] */
    int32_t *ksc;   /* Q4_K: [super-block][GR][16] scales and mins, as q4_k_scales orders them */
    float *kmf;     /* Q4_K: the same as floats (the mins' terms are summed in float, exactly) */
    float *accm;    /* Q4_K: [GR][PT] the float accumulators (the registers hold the integer sums) */
} work;

static work *work_get(int64_t nb) {
    const size_t per = (size_t)(nb + 1) * (GR * 32 + 2 * GR * 4 + CHUNK_PANELS * (8 * PT * 4 + 2 * PT * 4));
    const size_t need = sizeof(work) + 64 + per + 3 * GR * PT * 4 + 2 * (size_t)(nb / 8 + 1) * GR * 16 * 4;
    work *w = fr_amx_scratch(FR_AMX_SCRATCH_TILES, need);
    if (!w) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)(w + 1) + 63) & ~(uintptr_t)63);
    w->c = (int32_t *)p, p += 2 * GR * PT * 4;
    w->a = (int8_t *)p, p += (size_t)(nb + 1) / 2 * GR * 64;
    w->b = (int8_t *)p, p += (size_t)nb * CHUNK_PANELS * 8 * PT * 4;
    w->aw = (float *)p, p += (size_t)nb * GR * 4;
    w->am = (float *)p, p += (size_t)nb * GR * 4;
    w->bd = (float *)p, p += (size_t)nb * CHUNK_PANELS * PT * 4;
    w->bs = (float *)p, p += (size_t)nb * CHUNK_PANELS * PT * 4;
    w->accm = (float *)p, p += GR * PT * 4;
    w->ksc = (int32_t *)p, p += (size_t)(nb / 8 + 1) * GR * 16 * 4;
    w->kmf = (float *)p;
    return w;
}

/* A block pair's 64 signed codes of a weight row (zeros for a missing
 * second block). */
static ALWAYS_INLINE __m512i signed_pair(const uint8_t *x, int two, const int fmt) {
    if (fmt == FMT_Q8_0) return load_pair(x + Q8_0_QS, Q8_0_SZ, two);
    __m512i u = weight_pair(x, two, fmt);
    if (fmt == FMT_Q4_0) return _mm512_sub_epi8(u, _mm512_set1_epi8(8));
    if (fmt == FMT_Q5_0) return _mm512_sub_epi8(u, _mm512_set1_epi8(16));
    return u;
}

/* A row group's codes (rows past m repeat the last), pair by pair: row r's
 * 64 codes of pair b / 2 at (b / 2 * GR + r) * 64, so that a block's A tile
 * has a stride of 64. Q8_0's codes are read in place when the group is
 * whole (codes = 0 then). The scales come with one gather per block. */
static ALWAYS_INLINE void prepare_rows(work *k, int64_t nb, const uint8_t *w, __m512i off, int m, int codes,
                                       size_t ws, const int fmt) {
    if (fmt == FMT_Q6_K) { /* chunk c of super-block s: sub-blocks 16s + 4c .. 16s + 4c + 3 */
        const int64_t nsb = nb / 8;
        for (int r = 0; r < GR; r++) {
            const uint8_t *x = w + (size_t)(r < m ? r : m - 1) * ws;
            for (int64_t s = 0; s < nsb; s++, x += Q6_K_SZ) {
                __m512i q[4];
                q6_k_codes(x, 0, &q[0], &q[1]);
                q6_k_codes(x, 1, &q[2], &q[3]);
                for (int c = 0; c < 4; c++)
                    _mm512_store_si512(k->a + ((s * 4 + c) * GR + r) * 64, _mm512_sub_epi8(q[c], _mm512_set1_epi8(32)));
                _mm512_store_si512(k->ksc + (s * GR + r) * 16,
                                   _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x + Q6_K_SC))));
            }
        }
        for (int64_t s = 0; s < nsb; s++) { /* d, read with the two scale bytes before it */
            __m512i h = _mm512_i32gather_epi32(off, w + s * Q6_K_SZ + Q6_K_D - 2, 1);
            _mm512_store_ps(k->aw + s * GR, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16))));
        }
        return;
    }
    if (fmt == FMT_Q4_K) { /* chunk c of super-block s: sub-blocks 8s + 2c, 8s + 2c + 1 */
        const int64_t nsb = nb / 8;
        for (int r = 0; r < GR; r++) {
            const uint8_t *x = w + (size_t)(r < m ? r : m - 1) * ws;
            for (int64_t s = 0; s < nsb; s++, x += Q4_K_SZ) {
                for (int c = 0; c < 4; c++) _mm512_store_si512(k->a + ((s * 4 + c) * GR + r) * 64, q4_k_codes(x, c));
                __m512i v = _mm512_cvtepu8_epi32(q4_k_scales(x + Q4_K_SC));
                _mm512_store_si512(k->ksc + (s * GR + r) * 16, v);
                _mm512_store_ps(k->kmf + (s * GR + r) * 16, _mm512_cvtepi32_ps(v));
            }
        }
        for (int64_t s = 0; s < nsb; s++) { /* d, dmin */
            __m512i h = _mm512_i32gather_epi32(off, w + s * Q4_K_SZ, 1);
            _mm512_store_ps(k->aw + s * GR, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)));
            _mm512_store_ps(k->am + s * GR, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16))));
        }
        return;
    }
    if (codes)
        for (int r = 0; r < GR; r++) {
            const uint8_t *x = w + (size_t)(r < m ? r : m - 1) * ws;
            for (int64_t b = 0; b < nb; b += 2)
                _mm512_store_si512(k->a + (b / 2 * GR + r) * 64, signed_pair(x + b * W_SZ(fmt), b + 1 < nb, fmt));
        }
    for (int64_t b = 0; b < nb; b++) {
        __m512i h = _mm512_i32gather_epi32(off, w + b * W_SZ(fmt), 1);
        _mm512_store_ps(k->aw + b * GR, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)));
        if (fmt == FMT_Q4_1)
            _mm512_store_ps(k->am + b * GR, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16))));
    }
}

/* Panel p of the chunk: tokens a .. a + (nt - 1) as; missing tokens are zeros. */
static ALWAYS_INLINE void prepare_panel(work *k, int p, int64_t nb, const uint8_t *a, size_t as, int nt,
                                        const int fmt) {
    int8_t *bp = k->b + (size_t)p * nb * 8 * PT * 4;
    float *bd = k->bd + (size_t)p * nb * PT, *bs = k->bs + (size_t)p * nb * PT;
    if (fmt == FMT_Q6_K) { /* sub-block g of 16 codes: B is 4 rows; d_a per super-block */
        for (int64_t g = 0; g < 2 * nb; g++) {
            const int64_t sb = g / 16;
            const int j = (int)(g % 16);
            uint32_t *row = (uint32_t *)(bp + g * 4 * PT * 4);
            for (int t = 0; t < PT; t++) {
                const uint8_t *y = a + (size_t)t * as + sb * Q8_K_SZ;
                for (int kk = 0; kk < 4; kk++) row[kk * PT + t] = t < nt ? load32(y + Q8_K_QS + 16 * j + 4 * kk) : 0;
                if (j == 0) bd[sb * PT + t] = t < nt ? load_f32(y) : 0.0f;
            }
        }
        return;
    }
    if (fmt == FMT_Q4_K) { /* sub-block g of 32 codes; d_a per super-block, bs = the sub-block's sum of a */
        for (int64_t g = 0; g < nb; g++) {
            const int64_t sb = g / 8;
            const int j = (int)(g % 8);
            uint32_t *row = (uint32_t *)(bp + g * 8 * PT * 4);
            for (int t = 0; t < PT; t++) {
                const uint8_t *y = a + (size_t)t * as + sb * Q8_K_SZ;
                for (int kk = 0; kk < 8; kk++) row[kk * PT + t] = t < nt ? load32(y + Q8_K_QS + 32 * j + 4 * kk) : 0;
                if (j == 0) bd[sb * PT + t] = t < nt ? load_f32(y) : 0.0f;
                int sum = (int16_t)load16(y + Q8_K_BS + 4 * j) + (int16_t)load16(y + Q8_K_BS + 4 * j + 2);
                bs[g * PT + t] = t < nt ? (float)sum : 0.0f;
            }
        }
        return;
    }
    for (int64_t b = 0; b < nb; b++) {
        uint32_t *row = (uint32_t *)(bp + b * 8 * PT * 4);
        for (int t = 0; t < PT; t++) {
            const uint8_t *y = a + (size_t)t * as + b * A_SZ(fmt);
            for (int kk = 0; kk < 8; kk++) row[kk * PT + t] = t < nt ? load32(y + A_QS(fmt) + 4 * kk) : 0;
            bd[b * PT + t] = t < nt ? _cvtsh_ss(load16(y)) : 0.0f;
            if (fmt == FMT_Q4_1) bs[b * PT + t] = t < nt ? _cvtsh_ss(load16(y + 2)) : 0.0f;
        }
    }
}

/* Q4_K, sub-block g: the integer sums in acc[r] (int32 bits in a float
 * register) += sc_j * C; after the super-block's last, the float
 * accumulators in accm take fma(d d_a, isum) and fma(-(dmin d_a), msum),
 * msum summed in float from exact integer products (below 2^24, so
 * exactly). */
static ALWAYS_INLINE void scale_tile_q4_k(__m512 acc[GR], const int32_t *c, const work *k, int64_t g,
                                          const float *bd, const float *bs) {
    const int64_t sb = g / 8;
    const int j = (int)(g % 8), si = j < 4 ? j : j + 4;
#pragma GCC unroll 16
    for (int r = 0; r < GR; r++) {
        __m512i p = _mm512_mullo_epi32(_mm512_load_si512(c + r * PT), _mm512_set1_epi32(k->ksc[(sb * GR + r) * 16 + si]));
        acc[r] = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(acc[r]), p));
    }
    if (j < 7) return;
    const __m512 da = _mm512_load_ps(bd + sb * PT);
    #pragma GCC unroll 16
    for (int r = 0; r < GR; r++) {
        const float *mf = k->kmf + (sb * GR + r) * 16;
        __m512 msum = _mm512_setzero_ps();
        for (int jj = 0; jj < 8; jj++)
            msum = _mm512_fmadd_ps(_mm512_set1_ps(mf[jj < 4 ? 4 + jj : 8 + jj]), _mm512_load_ps(bs + (sb * 8 + jj) * PT), msum);
        __m512 dd = _mm512_mul_ps(_mm512_set1_ps(k->aw[sb * GR + r]), da);
        __m512 dm = _mm512_mul_ps(_mm512_set1_ps(k->am[sb * GR + r]), da);
        __m512 f = _mm512_load_ps(k->accm + r * PT);
        f = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_castps_si512(acc[r])), f);
        _mm512_store_ps(k->accm + r * PT, _mm512_fnmadd_ps(dm, msum, f));
        acc[r] = _mm512_setzero_ps();
    }
}

/* Q6_K, sub-block g of 16: the integer sums in acc[r] += sc_k * C; after
 * the super-block's last, accm takes fma(d d_a, isum). */
static ALWAYS_INLINE void scale_tile_q6_k(__m512 acc[GR], const int32_t *c, const work *k, int64_t g,
                                          const float *bd) {
    const int64_t sb = g / 16;
    const int j = (int)(g % 16);
#pragma GCC unroll 16
    for (int r = 0; r < GR; r++) {
        __m512i p = _mm512_mullo_epi32(_mm512_load_si512(c + r * PT), _mm512_set1_epi32(k->ksc[(sb * GR + r) * 16 + j]));
        acc[r] = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(acc[r]), p));
    }
    if (j < 15) return;
    const __m512 da = _mm512_load_ps(bd + sb * PT);
    #pragma GCC unroll 16
    for (int r = 0; r < GR; r++) {
        __m512 dd = _mm512_mul_ps(_mm512_set1_ps(k->aw[sb * GR + r]), da);
        __m512 f = _mm512_load_ps(k->accm + r * PT);
        _mm512_store_ps(k->accm + r * PT, _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_castps_si512(acc[r])), f));
        acc[r] = _mm512_setzero_ps();
    }
}

/* acc[r] (lanes = tokens) += d_w d_a isum (+ m_w s_a) for block b. */
static ALWAYS_INLINE void scale_tile(__m512 acc[GR], const int32_t *c, const work *k, int64_t b, const float *bd,
                                     const float *bs, const int fmt) {
    if (fmt == FMT_Q4_K) {
        scale_tile_q4_k(acc, c, k, b, bd, bs);
        return;
    }
    if (fmt == FMT_Q6_K) {
        scale_tile_q6_k(acc, c, k, b, bd);
        return;
    }
    __m512 da = _mm512_load_ps(bd + b * PT), sa = _mm512_setzero_ps();
    if (fmt == FMT_Q4_1) sa = _mm512_load_ps(bs + b * PT);
#pragma GCC unroll 16
    for (int r = 0; r < GR; r++) {
        __m512 dd = _mm512_mul_ps(_mm512_set1_ps(k->aw[b * GR + r]), da);
        acc[r] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_load_si512(c + r * PT)), acc[r]);
        if (fmt == FMT_Q4_1) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(k->am[b * GR + r]), sa, acc[r]);
    }
}

/* TDPBSSD of blocks blk and blk + 1 (if any) into tiles t0 and t1. */
#define ISSUE(t0, t1, blk)                                                    \
    do {                                                                      \
        _tile_zero(t0);                                                       \
        _tile_loadd(TA0, A_OF(blk), (long)astride);                           \
        _tile_loadd(TB0, B_OF(blk), PT * 4);                                  \
        _tile_dpbssd(t0, TA0, TB0);                                           \
        if ((blk) + 1 < ns) {                                                 \
            _tile_zero(t1);                                                   \
            _tile_loadd(TA1, A_OF((blk) + 1), (long)astride);                 \
            _tile_loadd(TB1, B_OF((blk) + 1), PT * 4);                        \
            _tile_dpbssd(t1, TA1, TB1);                                       \
        }                                                                     \
    } while (0)

/* Stores tiles t0, t1 and scales them into acc, block blk first. */
#define DRAIN(t0, t1, blk)                                                    \
    do {                                                                      \
        _tile_stored(t0, k->c, PT * 4);                                       \
        scale_tile(acc, k->c, k, blk, bd, bs, fmt);                           \
        if ((blk) + 1 < ns) {                                                 \
            _tile_stored(t1, k->c + GR * PT, PT * 4);                         \
            scale_tile(acc, k->c + GR * PT, k, (blk) + 1, bd, bs, fmt);       \
        }                                                                     \
    } while (0)

/* One row group against panel p: out[t * ldo + r] for r < m, t < nt. The
 * blocks go in pairs through two sets of C tiles, so that the tile unit
 * computes the next pair while the vector units scale this one; the
 * scaling still runs block by block in order. */
static ALWAYS_INLINE void tile_panel(const work *k, int64_t nb, const uint8_t *w, size_t ws, int in_place, int p,
                                     int m, int nt, float *out, size_t ldo, const uint8_t *pf, size_t pf_bytes,
                                     const int fmt) {
    const int8_t *bp = k->b + (size_t)p * nb * 8 * PT * 4;
    const float *bd = k->bd + (size_t)p * nb * PT, *bs = k->bs + (size_t)p * nb * PT;
    const size_t astride = in_place ? ws : 64;
    /* ns tile products: one per block of 32, or per sub-block of 16 for Q6_K
     * (whose codes sit four sub-blocks to a 64-byte row of k->a) */
    const int64_t ns = fmt == FMT_Q6_K ? 2 * nb : nb;
#define A_OF(bb) (in_place ? (const void *)(w + (bb) * W_SZ(fmt) + Q8_0_QS)                           \
                  : fmt == FMT_Q6_K ? (const void *)(k->a + (bb) / 4 * GR * 64 + (bb) % 4 * 16)      \
                  : (const void *)(k->a + (bb) / 2 * GR * 64 + (bb) % 2 * 32))
#define B_OF(bb) (bp + (bb) * (fmt == FMT_Q6_K ? 4 : 8) * PT * 4)
    __m512 acc[GR];
#pragma GCC unroll 16
    for (int r = 0; r < GR; r++) acc[r] = _mm512_setzero_ps();
    if (fmt == FMT_Q4_K || fmt == FMT_Q6_K) memset(k->accm, 0, GR * PT * sizeof(float));
    ISSUE(TC0, TC1, 0);
    for (int64_t b = 0; b < ns; b += 4) {
        /* a slice of the next row group's bytes, fetched while this runs */
        for (size_t o = pf_bytes * b / ns & ~(size_t)63, e = pf_bytes * (b + 4) / ns; o < e; o += 64)
            _mm_prefetch((const char *)pf + o, _MM_HINT_T0);
        if (b + 2 < ns) ISSUE(TC2, TC3, b + 2);
        DRAIN(TC0, TC1, b);
        if (b + 2 >= ns) break;
        if (b + 4 < ns) ISSUE(TC0, TC1, b + 4);
        DRAIN(TC2, TC3, b + 2);
    }
#undef A_OF
#undef B_OF
    if (fmt == FMT_Q4_K || fmt == FMT_Q6_K)
        #pragma GCC unroll 16
        for (int r = 0; r < GR; r++) acc[r] = _mm512_load_ps(k->accm + r * PT);
    transpose16(acc);
    /* unrolled with constant indexes: an index that varies would keep acc
     * in memory for the whole function */
#pragma GCC unroll 16
    for (int t = 0; t < PT; t++)
        if (t < nt) _mm512_mask_storeu_ps(out + t * ldo, (__mmask16)((1u << m) - 1), acc[t]);
}

static ALWAYS_INLINE void tile_exact(int64_t n, const uint8_t *w, size_t ws, int nr, const uint8_t *a, size_t as,
                                     int nc, float *out, size_t ldo, const int fmt) {
    const int64_t nb = n / 32;
    work *k = nc >= MIN_TOKENS && ws <= (size_t)INT32_MAX / GR ? work_get(nb) : NULL;
    if (!k) { /* a few tokens, strides past the gather's reach, or no memory for the
                work space: the rows kernel, same bits */
        for (int c = 0; c < nc; c += MAX_ROW_TOKENS)
            rows_exact(n, w, ws, nr, a + c * as, as, nc - c < MAX_ROW_TOKENS ? nc - c : MAX_ROW_TOKENS,
                       out + c * ldo, ldo, fmt);
        return;
    }
    _tile_loadconfig(fmt == FMT_Q6_K ? &tiles_k16 : &tiles);
    for (int t0 = 0; t0 < nc; t0 += CHUNK_PANELS * PT) {
        const int np = (nc - t0 + PT - 1) / PT < CHUNK_PANELS ? (nc - t0 + PT - 1) / PT : CHUNK_PANELS;
        for (int p = 0; p < np; p++) {
            int t = t0 + p * PT;
            prepare_panel(k, p, nb, a + t * as, as, nc - t < PT ? nc - t : PT, fmt);
        }
        for (int r0 = 0; r0 < nr; r0 += GR) {
            const int m = nr - r0 < GR ? nr - r0 : GR, in_place = fmt == FMT_Q8_0 && m == GR;
            const uint8_t *wr = w + r0 * ws;
            int32_t offs[GR];
            for (int r = 0; r < GR; r++) offs[r] = (int32_t)((r < m ? r : m - 1) * ws);
            /* The next group's weights are fetched from memory in slices
             * while this group's first panel computes: its rows are
             * contiguous, but unpacking them in one burst would wait on
             * memory with the tile unit idle. */
            size_t next_bytes = r0 + GR < nr ? (size_t)(nr - r0 - GR < GR ? nr - r0 - GR : GR) * ws : 0;
            prepare_rows(k, nb, wr, _mm512_loadu_si512(offs), m, !in_place, ws, fmt);
            for (int p = 0; p < np; p++) {
                int t = t0 + p * PT;
                tile_panel(k, nb, wr, ws, in_place, p, m, nc - t < PT ? nc - t : PT, out + t * ldo + r0, ldo,
                           wr + GR * ws, p == 0 ? next_bytes : 0, fmt);
            }
        }
    }
    _tile_release();
}

#define EXACT_ENTRIES(suffix, fmt)                                                              \
    static void rows_##suffix(int64_t n, const void *w, size_t ws, const void *a, float *out, int nr) { \
        rows_exact(n, w, ws, nr, a, 0, 1, out, 0, fmt);                                         \
    }                                                                                           \
    static void tile_##suffix(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, \
                              int nc, float *out, size_t ldo) {                                 \
        tile_exact(n, w, ws, nr, a, as, nc, out, ldo, fmt);                                     \
    }
/* The K-quants' single dot: the rows kernel with one row. The level
 * below's (AVX-512's 1 x 1 tile) sums Q4_K in another order, and every
 * dot of this level must give the block-exact twin's bits. */
#define EXACT_DOT(suffix, fmt)                                          \
    static float dot_##suffix(int64_t n, const void *w, const void *a) { \
        float out;                                                      \
        rows_exact(n, w, 0, 1, a, 0, 1, &out, 0, fmt);                  \
        return out;                                                     \
    }
EXACT_ENTRIES(q4_0_q8_0, FMT_Q4_0)
EXACT_ENTRIES(q4_1_q8_1, FMT_Q4_1)
EXACT_ENTRIES(q8_0_q8_0, FMT_Q8_0)
EXACT_ENTRIES(q5_0_q8_0, FMT_Q5_0)
EXACT_ENTRIES(q4_k_q8_k, FMT_Q4_K)
EXACT_ENTRIES(q6_k_q8_k, FMT_Q6_K)
EXACT_DOT(q4_k_q8_k, FMT_Q4_K)
EXACT_DOT(q6_k_q8_k, FMT_Q6_K)

void fr_kernels_fill_amx(fr_kernel_table *t) {
    t->dot_rows[FR_Q4_0] = rows_q4_0_q8_0;
    t->dot_rows[FR_Q4_1] = rows_q4_1_q8_1;
    t->dot_rows[FR_Q8_0] = rows_q8_0_q8_0;
    t->dot_rows[FR_Q5_0] = rows_q5_0_q8_0;
    t->dot_tile[FR_Q4_0] = tile_q4_0_q8_0;
    t->dot_tile[FR_Q4_1] = tile_q4_1_q8_1;
    t->dot_tile[FR_Q8_0] = tile_q8_0_q8_0;
    t->dot_tile[FR_Q5_0] = tile_q5_0_q8_0;
    t->dot[FR_Q4_K] = dot_q4_k_q8_k;
    t->dot[FR_Q6_K] = dot_q6_k_q8_k;
    t->dot_rows[FR_Q4_K] = rows_q4_k_q8_k;
    t->dot_tile[FR_Q4_K] = tile_q4_k_q8_k;
    t->dot_rows[FR_Q6_K] = rows_q6_k_q8_k;
    t->dot_tile[FR_Q6_K] = tile_q6_k_q8_k;
}
