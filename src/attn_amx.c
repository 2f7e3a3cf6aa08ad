/*
 * attn_amx.c - a prompt's query block against KV pages on the AMX tile
 * unit (attn_block.h: the block's rows carry m, l and out in and out).
 *
 * Why: in prefill the AVX-512 kernel (attn_avx512.c, "lanes") runs near
 * the peak of its FMAs, and still takes a sixth of a 512-token prompt's
 * time; per page and block its two products, Q.K^T and P.V, are 32 x 32
 * x head_dim each, which the tile unit computes in bf16 faster (the
 * softmax between them stays in fp32 vectors, and is now half the time). Prompts only, like the matmuls' bf16 (matmul.c): decoding keeps
 * the fp32 kernels, exact alike alone and batched.
 *
 * Per page, for the block's rows r (up to 32, two tile panels) and the
 * page's 32 keys k:
 *   s[r][k] = sum over d of q[r][d] k[k][d], in three bf16 products:
 *             hi(q) hi(k) + hi(q) lo(k) + lo(q) hi(k)     (tiles, fp32)
 *             (hi(x) = bf16(x), lo(x) = bf16(x - hi(x)); an fp16 key is
 *             exactly hi + lo, a query nearly: a score is as precise as
 *             fp32's, where one bf16 product would err by ~2^-9 of it,
 *             which the exponential turns into up to a few % of p)
 *   s *= scale; keys the row may not see: -inf
 *   m' = max(m, max_k s); z = m' or 0 when m' = -inf
 *   c = exp(m - z); p = exp(s - z); l = l c + sum_k p
 *   out[r] = fma(out[r], c, sum over k of bf16(p[r][k]) bf16(v[k][d]))  (tiles)
 * Every step is row by row (a tile row is a query row), so a row's bits
 * do not depend on the other rows of its block, how many there are, or
 * how a prompt was cut into calls.
 *
 * Operand layouts (B rows hold pairs along the product's K dimension):
 *   A of Q.K^T: the queries' hi and lo parts, row-major, a panel's 32
 *               channels a row
 *   B of Q.K^T: per 32 channels and 16 keys, row j = for each key the
 *               pair (channel 2j, 2j + 1): two channels of an fp16 page's
 *               channel-major keys, interleaved; hi and lo parts apart
 *   A of P.V:   the probabilities as bf16, [r][32 keys]
 *   B of P.V:   per 16 channels, row j = for each channel the pair of keys
 *               (2j, 2j + 1): two slot-major value rows, interleaved
 */
#include <immintrin.h>
#include <string.h>
#include "amx.h"
#include "attn512.h"
#include "attn_block.h"

#define ROWS FR_ATTN_BLOCK_ROWS /* 32: two panels of 16 */
#define PAGE FR_KV_PAGE         /* 32 keys */
#define MAX_HD FR_ATTN_AMX_MAX_HD

typedef struct {
    uint16_t q[2][ROWS * MAX_HD]; /* [hi, lo][r][hd] bf16 */
    float o[ROWS * MAX_HD];      /* [r][hd] the rows' unnormalised outputs */
    float pv[ROWS * MAX_HD];     /* [r][hd] this page's P.V */
    float c[ROWS];               /* the factor of each row's output for this page */
    float s[ROWS * PAGE];        /* [r][k] scores */
    uint16_t p[ROWS * PAGE];     /* [r][k] probabilities, bf16 */
    uint16_t bk[2][MAX_HD * PAGE]; /* [hi, lo][hd / 32][2 halves of keys][16][32] */
    uint16_t bv[PAGE * MAX_HD];    /* [hd / 16][16][32] */
    float kt[PAGE * MAX_HD];     /* a compressed page's keys as floats, [PAGE][hd] */
    float ktt[MAX_HD * PAGE];    /* the same channel-major, [hd][PAGE] */
    float vt[PAGE * MAX_HD];     /* and its values, [PAGE][hd] */
} amx_attn;

/* Two vectors of 16 floats as 32 bf16 interleaved: a0 b0 a1 b1 ... */
static inline __m512i zip_bf16(__m512 a, __m512 b) {
    static const uint16_t zip[32] = { 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31 };
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(zip), (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

static inline __m512 load16_f16(const uint16_t *x) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x)); }

/* x rounded to bf16 (to nearest even), as a float: x's hi part. */
static inline __m512 hi_part(__m512 x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), odd);
    return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
}

/* B of Q.K^T, hi and lo parts, from channel-major keys: fp16 (k16) or
 * floats (kf), channel d's 32 slots at d * PAGE. */
static void keys_b(uint16_t *bk[2], const uint16_t *k16, const float *kf, int hd) {
    for (int d = 0; d < hd; d += 2)
        for (int h = 0; h < 2; h++) {
            __m512 a = k16 ? load16_f16(k16 + d * PAGE + 16 * h) : _mm512_loadu_ps(kf + d * PAGE + 16 * h);
            __m512 b = k16 ? load16_f16(k16 + (d + 1) * PAGE + 16 * h) : _mm512_loadu_ps(kf + (d + 1) * PAGE + 16 * h);
            const __m512 ah = hi_part(a), bh = hi_part(b);
            const size_t at = (((size_t)d / 32 * 2 + h) * 16 + (d % 32) / 2) * 32;
            _mm512_storeu_si512(bk[0] + at, zip_bf16(ah, bh));
            _mm512_storeu_si512(bk[1] + at, zip_bf16(_mm512_sub_ps(a, ah), _mm512_sub_ps(b, bh)));
        }
}

/* B of P.V from slot-major values, fp16 rows ld apart (v16) or floats hd
 * apart (vf); slots past np are zeros (their probabilities are 0, and
 * what an unwritten slot holds could be NaN). */
static void values_b(uint16_t *bv, const uint16_t *v16, size_t ld, const float *vf, int hd, int np) {
    for (int k = 0; k < PAGE; k += 2)
        for (int d0 = 0; d0 < hd; d0 += 16) {
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
            if (k < np) a = v16 ? load16_f16(v16 + k * ld + d0) : _mm512_loadu_ps(vf + k * hd + d0);
            if (k + 1 < np) b = v16 ? load16_f16(v16 + (k + 1) * ld + d0) : _mm512_loadu_ps(vf + (k + 1) * hd + d0);
            _mm512_storeu_si512(bv + ((d0 / 16) * 16 + k / 2) * 32, zip_bf16(a, b));
        }
}

/* C += A.B for the 2 x 2 tiles of both panels (TA1, TC2, TC3 only if two). */
#define PRODUCTS(two)                        \
    do {                                     \
        _tile_dpbf16ps(TC0, TA0, TB0);       \
        _tile_dpbf16ps(TC1, TA0, TB1);       \
        if (two) {                           \
            _tile_dpbf16ps(TC2, TA1, TB0);   \
            _tile_dpbf16ps(TC3, TA1, TB1);   \
        }                                    \
    } while (0)

/* The scores of both panels against the page's keys into w->s: per 32
 * channels hi(q) hi(k), hi(q) lo(k), lo(q) hi(k). */
static void scores(amx_attn *w, int hd, int two) {
    const size_t qs = (size_t)hd * sizeof(uint16_t);
    _tile_zero(TC0);
    _tile_zero(TC1);
    if (two) {
        _tile_zero(TC2);
        _tile_zero(TC3);
    }
    for (int c = 0; c < hd / 32; c++) {
        const uint16_t *kh = w->bk[0] + c * 2 * 16 * 32, *kl = w->bk[1] + c * 2 * 16 * 32;
        _tile_loadd(TA0, w->q[0] + 32 * c, qs);
        if (two) _tile_loadd(TA1, w->q[0] + 16 * hd + 32 * c, qs);
        _tile_loadd(TB0, kh, 64);
        _tile_loadd(TB1, kh + 16 * 32, 64);
        PRODUCTS(two);
        _tile_loadd(TB0, kl, 64);
        _tile_loadd(TB1, kl + 16 * 32, 64);
        PRODUCTS(two);
        _tile_loadd(TA0, w->q[1] + 32 * c, qs);
        if (two) _tile_loadd(TA1, w->q[1] + 16 * hd + 32 * c, qs);
        _tile_loadd(TB0, kh, 64);
        _tile_loadd(TB1, kh + 16 * 32, 64);
        PRODUCTS(two);
    }
    _tile_stored(TC0, w->s, PAGE * 4);
    _tile_stored(TC1, w->s + 16, PAGE * 4);
    if (two) {
        _tile_stored(TC2, w->s + 16 * PAGE, PAGE * 4);
        _tile_stored(TC3, w->s + 16 * PAGE + 16, PAGE * 4);
    }
}

/* Row r's scores become its probabilities (w->p) and its state moves on;
 * w->c[r]: the factor of its output. */
static void softmax_row(amx_attn *w, fr_attn_block *b, const fr_kv_page *p, int r, bool whole) {
    const __m512 scale = _mm512_set1_ps(b->scale), ninf = _mm512_set1_ps(-INFINITY);
    __m512 s0 = _mm512_mul_ps(_mm512_loadu_ps(w->s + r * PAGE), scale);
    __m512 s1 = _mm512_mul_ps(_mm512_loadu_ps(w->s + r * PAGE + 16), scale);
    __mmask16 v0, v1;
    if (whole) { /* every written slot visible: only the unwritten ones are masked */
        uint32_t written = p->n >= 32 ? 0xffffffffu : (1u << p->n) - 1;
        v0 = (__mmask16)written, v1 = (__mmask16)(written >> 16);
    } else {
        v0 = visible16(p, 0, b->lo[r], b->qpos[r]);
        v1 = visible16(p, 16, b->lo[r], b->qpos[r]);
    }
    s0 = _mm512_mask_mov_ps(ninf, v0, s0);
    s1 = _mm512_mask_mov_ps(ninf, v1, s1);
    const float mt = _mm512_reduce_max_ps(_mm512_max_ps(s0, s1)), m = b->m[r];
    const __m512 z = finite_or_zero(_mm512_set1_ps(mt > m ? mt : m));
    const __m512 e0 = exp_neg16(_mm512_sub_ps(s0, z)), e1 = exp_neg16(_mm512_sub_ps(s1, z));
    const __m512 c = exp_neg16(_mm512_sub_ps(_mm512_set1_ps(m), z));
    b->l[r] = b->l[r] * _mm512_cvtss_f32(c) + _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));
    b->m[r] = mt > m ? mt : m;
    _mm512_storeu_si512(w->p + r * PAGE, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    w->c[r] = _mm512_cvtss_f32(c);
}

/* out = out c + P.V for both panels: P.V by the tiles from zero, then the
 * sum in vectors (loading the outputs, rescaled, into the tiles instead
 * measured 1 % slower). */
static void add_pv(amx_attn *w, int hd, int nr) {
    const size_t os = (size_t)hd * sizeof(float);
    const int two = nr > 16;
    _tile_loadd(TA0, w->p, PAGE * 2);
    if (two) _tile_loadd(TA1, w->p + 16 * PAGE, PAGE * 2);
    for (int d = 0; d < hd; d += 32) {
        float *o0 = w->pv + d, *o1 = w->pv + 16 * hd + d;
        _tile_zero(TC0);
        _tile_zero(TC1);
        if (two) {
            _tile_zero(TC2);
            _tile_zero(TC3);
        }
        _tile_loadd(TB0, w->bv + (d / 16) * 16 * 32, 64);
        _tile_loadd(TB1, w->bv + (d / 16 + 1) * 16 * 32, 64);
        PRODUCTS(two);
        _tile_stored(TC0, o0, os);
        _tile_stored(TC1, o0 + 16, os);
        if (two) {
            _tile_stored(TC2, o1, os);
            _tile_stored(TC3, o1 + 16, os);
        }
    }
    for (int r = 0; r < nr; r++) {
        const __m512 c = _mm512_set1_ps(w->c[r]);
        float *o = w->o + (size_t)r * hd, *pv = w->pv + (size_t)r * hd;
        for (int d = 0; d < hd; d += 16)
            _mm512_storeu_ps(o + d, _mm512_fmadd_ps(_mm512_loadu_ps(o + d), c, _mm512_loadu_ps(pv + d)));
    }
}

/* The page's keys and values of KV head kvh as B operands. */
static void operands(amx_attn *w, const fr_kv_cache *kvc, const fr_kv_page *p, int kvh, int hd) {
    uint16_t *bk[2] = { w->bk[0], w->bk[1] };
    if (!p->packed) {
        keys_b(bk, fr_kv_f16_keys(p, kvh, hd), NULL, hd);
        values_b(w->bv, fr_kv_f16_values(p, kvh, hd), (size_t)hd, NULL, hd, p->n);
        return;
    }
    /* a compressed page: decoded to floats, keys slot-major, then turned */
    fr_kv_load_head(kvc, p, kvh, hd, w->kt, w->vt, hd, NULL);
    for (int d = 0; d < hd; d++)
        for (int k = 0; k < PAGE; k++) w->ktt[d * PAGE + k] = k < p->n ? w->kt[k * hd + d] : 0.0f;
    keys_b(bk, NULL, w->ktt, hd);
    values_b(w->bv, NULL, 0, w->vt, hd, p->n);
}

void fr_attn_block_pages_amx(fr_attn_block *b, const fr_kv_cache *kvc, fr_kv_page *const *pages, int p0, int p1,
                             int kvh) {
    const int hd = b->hd, nr = b->nr, two = nr > 16;
    amx_attn w __attribute__((aligned(64)));
    int qmax = 0, lo_min = INT32_MAX, lo_max = INT32_MIN, qmin = INT32_MAX;
    for (int r = 0; r < nr; r++) {
        qmax = b->qpos[r] > qmax ? b->qpos[r] : qmax;
        qmin = b->qpos[r] < qmin ? b->qpos[r] : qmin;
        lo_min = b->lo[r] < lo_min ? b->lo[r] : lo_min;
        lo_max = b->lo[r] > lo_max ? b->lo[r] : lo_max;
        const float *q = b->q[r];
        for (int d = 0; d < hd; d += 32) {
            const __m512 x0 = _mm512_loadu_ps(q + d), x1 = _mm512_loadu_ps(q + d + 16);
            const __m512 h0 = hi_part(x0), h1 = hi_part(x1);
            _mm512_storeu_si512(w.q[0] + r * hd + d, (__m512i)_mm512_cvtne2ps_pbh(h1, h0));
            _mm512_storeu_si512(w.q[1] + r * hd + d,
                                (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0)));
        }
        memcpy(w.o + (size_t)r * hd, b->out[r], (size_t)hd * sizeof(float));
    }
    _tile_loadconfig(fr_amx_pair_config(two ? 16 : nr, two ? nr - 16 : 0));
    for (int pi = p0; pi < p1; pi++) {
        const fr_kv_page *p = pages[pi];
        if (p->n == 0 || p->pos[p->n - 1] < lo_min) continue;
        if (p->pos[0] > qmax) break; /* positions ascend along the table */
        operands(&w, kvc, p, kvh, hd);
        scores(&w, hd, two);
        /* a page every row sees whole needs no mask but its unwritten slots' */
        const bool whole = p->dense && p->pos[0] >= lo_max && p->pos[p->n - 1] <= qmin;
        for (int r = 0; r < nr; r++) softmax_row(&w, b, p, r, whole);
        add_pv(&w, hd, nr);
    }
    _tile_release();
    for (int r = 0; r < nr; r++) memcpy(b->out[r], w.o + (size_t)r * hd, (size_t)hd * sizeof(float));
}
