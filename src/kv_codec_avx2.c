/*
 * kv_codec_avx2.c - AVX2 + FMA + F16C twin of the KV page codec in
 * kv_codec.c (built with -mavx2 -mfma -mf16c, used only on a CPU that has
 * them). Same packed bytes and same loaded floats, bit for bit: tests
 * compare the two.
 *
 * load is the hot path: attention calls it for every tile of 32 slots of
 * every KV head at every step. Byte p of a group's codes holds codes p +
 * 4b m (m < 8 / b) at bit b m (kv_codec.h), so 8 code bytes widened to 8
 * int32 lanes give 8 / b vectors of 8 codes with one shift and mask each,
 * then one convert and one FMA per 8 floats. Q8 and KIVI values are
 * stored along the channels, as a tile row is. KIVI keys are stored per
 * channel along the slots, the transpose of a tile: 8 channels are
 * decoded together after a byte transpose that gives, for each byte
 * position p, the byte of each of the 8 channels.
 *
 * pack runs once per page, so only its arithmetic is vectorized, in the
 * scalar twin's order (roundf's halves away from zero emulated exactly).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kv_codec.h"
#include "quant.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

static float get_half(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return _cvtsh_ss(h); }
static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ---- load ---- */

/* Stores s * q + z for 8 codes q. */
static ALWAYS_INLINE void put8(float *out, __m256 s, __m256i q, __m256 z) {
    _mm256_storeu_ps(out, _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(q), z));
}

/* 8 code bytes (in the low half of bytes) -> for each m < 8 / bits, the 8
 * codes at bit bits * m decoded to s * q + z and stored at out + m * step.
 * Written out rather than looped: the loop is not unrolled at -O2. */
static ALWAYS_INLINE void decode8(__m128i bytes, int bits, __m256 s, __m256 z, float *out, size_t step) {
    __m256i v = _mm256_cvtepu8_epi32(bytes), mask = _mm256_set1_epi32((1 << bits) - 1);
    put8(out, s, _mm256_and_si256(v, mask), z);
    if (bits == 4) {
        put8(out + step, s, _mm256_srli_epi32(v, 4), z); /* the top code needs no mask */
    } else {
        put8(out + step, s, _mm256_and_si256(_mm256_srli_epi32(v, 2), mask), z);
        put8(out + 2 * step, s, _mm256_and_si256(_mm256_srli_epi32(v, 4), mask), z);
        put8(out + 3 * step, s, _mm256_srli_epi32(v, 6), z);
    }
}

/* The s and z of 8 consecutive KIVI key channels ({s, z} fp16 pairs). */
static ALWAYS_INLINE void scale_zero8(const uint8_t *p, __m256 *s, __m256 *z) {
    /* per 128-bit lane: the four s, then the four z */
    const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                           0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)p), split);
    v = _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0)); /* s0-3 s4-7 z0-3 z4-7 */
    *s = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    *z = _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1));
}

/* Byte transpose of the codes of 8 channels (rows), in two halves: these
 * first two rounds of unpacks interleave the rows pairwise in units of 1,
 * then 2 bytes, giving for each 4 byte positions 4q..4q+3 one register
 * for rows 0-3 (quad[q]) and one for rows 4-7 (quad[q + nq]); decode_quad
 * does the last round. Rows of 16 bytes (4-bit codes): nq = 4. */
static ALWAYS_INLINE void transpose_rows16(const uint8_t *rows, __m128i quad[8]) {
    __m128i r[8], a[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) r[k] = _mm_loadu_si128((const __m128i *)(rows + 16 * k));
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) { /* rows 2k, 2k+1: a[k] bytes 0-7, a[k + 4] bytes 8-15 */
        a[k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
        a[k + 4] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* bytes 8h .. 8h + 7 */
        quad[2 * h] = _mm_unpacklo_epi16(a[4 * h], a[4 * h + 1]);
        quad[2 * h + 1] = _mm_unpackhi_epi16(a[4 * h], a[4 * h + 1]);
        quad[4 + 2 * h] = _mm_unpacklo_epi16(a[4 * h + 2], a[4 * h + 3]);
        quad[4 + 2 * h + 1] = _mm_unpackhi_epi16(a[4 * h + 2], a[4 * h + 3]);
    }
}

/* The same for rows of 8 bytes (2-bit codes): nq = 2. */
static ALWAYS_INLINE void transpose_rows8(const uint8_t *rows, __m128i quad[4]) {
    __m128i r[8], a[4];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) r[k] = _mm_loadl_epi64((const __m128i *)(rows + 8 * k));
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) a[k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
    quad[0] = _mm_unpacklo_epi16(a[0], a[1]);
    quad[1] = _mm_unpackhi_epi16(a[0], a[1]);
    quad[2] = _mm_unpacklo_epi16(a[2], a[3]);
    quad[3] = _mm_unpackhi_epi16(a[2], a[3]);
}

/* The last round for byte positions p..p+3 (rows 0-3 in r03, 4-7 in r47),
 * each decoded at once into slots p + len m, channels out[0..7]. */
static ALWAYS_INLINE void decode_quad(__m128i r03, __m128i r47, int p, int bits, __m256 s, __m256 z, float *out,
                                      int stride) {
    __m128i lo = _mm_unpacklo_epi32(r03, r47), hi = _mm_unpackhi_epi32(r03, r47);
    size_t step = (size_t)4 * bits * stride;
    decode8(lo, bits, s, z, out + (size_t)p * stride, step);
    decode8(_mm_unpackhi_epi64(lo, lo), bits, s, z, out + (size_t)(p + 1) * stride, step);
    decode8(hi, bits, s, z, out + (size_t)(p + 2) * stride, step);
    decode8(_mm_unpackhi_epi64(hi, hi), bits, s, z, out + (size_t)(p + 3) * stride, step);
}

static void load_f16(const uint8_t *src, int kv_dim, int c0, int n, float *tile, int stride) {
    for (int t = 0; t < FR_KV_PAGE; t++) {
        const uint8_t *row = src + 2 * ((size_t)t * kv_dim + c0);
        float *out = tile + (size_t)t * stride;
        for (int i = 0; i < n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * i))));
    }
}

static void load_q8(const uint8_t *src, int kv_dim, int c0, int n, float *tile, int stride) {
    for (int t = 0; t < FR_KV_PAGE; t++) {
        const uint8_t *blk = src + ((size_t)t * kv_dim + c0) / 32 * 34;
        float *out = tile + (size_t)t * stride;
        for (int i = 0; i < n; i += 32, blk += 34) {
            __m256 d = _mm256_set1_ps(get_half(blk));
#pragma GCC unroll 4
            for (int k = 0; k < 32; k += 8) {
                __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + k)));
                _mm256_storeu_ps(out + i + k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
            }
        }
    }
}

/* Keys: channel c's codes are len = 4 bits bytes holding its 32 slots;
 * after the transpose, byte p of 8 channels gives slots p + len m. */
static ALWAYS_INLINE void load_kivi_keys(const uint8_t *src, int kv_dim, int bits, int c0, int n, float *tile,
                                         int stride) {
    const int len = 4 * bits, nq = len / 4;
    const uint8_t *codes = src + (size_t)4 * kv_dim;
    for (int i = 0; i < n; i += 8) {
        int c = c0 + i;
        __m256 s, z;
        __m128i quad[8];
        scale_zero8(src + (size_t)4 * c, &s, &z);
        if (bits == 4) transpose_rows16(codes + (size_t)len * c, quad);
        else transpose_rows8(codes + (size_t)len * c, quad);
#pragma GCC unroll 4
        for (int q = 0; q < nq; q++) decode_quad(quad[q], quad[q + nq], 4 * q, bits, s, z, tile + i, stride);
    }
}

/* Values: one group {s, z, codes} per slot and 32 channels. */
static ALWAYS_INLINE void load_kivi_values(const uint8_t *src, int kv_dim, int bits, int c0, int n, float *tile,
                                           int stride) {
    const int len = 4 * bits;
    const size_t group = 4 + (size_t)len;
    for (int t = 0; t < FR_KV_PAGE; t++) {
        const uint8_t *g = src + ((size_t)t * kv_dim + c0) / 32 * group;
        float *out = tile + (size_t)t * stride;
        for (int i = 0; i < n; i += 32, g += group) {
            uint32_t sz;
            memcpy(&sz, g, 4);
            __m128 h = _mm_cvtph_ps(_mm_cvtsi32_si128((int)sz)); /* s, z, 0, 0 */
            __m256 s = _mm256_broadcastss_ps(h), z = _mm256_broadcastss_ps(_mm_movehdup_ps(h));
#pragma GCC unroll 2
            for (int p = 0; p < len; p += 8)
                decode8(_mm_loadl_epi64((const __m128i *)(g + 4 + p)), bits, s, z, out + i + p, (size_t)len);
        }
    }
}

static void load_avx2(int type, bool is_key, const void *src, int kv_dim, int c0, int n, float *tile, int stride) {
    switch (type) {
    case FR_KV_F16: load_f16(src, kv_dim, c0, n, tile, stride); break;
    case FR_KV_Q8: load_q8(src, kv_dim, c0, n, tile, stride); break;
    case FR_KV_KIVI4:
        if (is_key) load_kivi_keys(src, kv_dim, 4, c0, n, tile, stride);
        else load_kivi_values(src, kv_dim, 4, c0, n, tile, stride);
        break;
    case FR_KV_KIVI2:
        if (is_key) load_kivi_keys(src, kv_dim, 2, c0, n, tile, stride);
        else load_kivi_values(src, kv_dim, 2, c0, n, tile, stride);
        break;
    }
}

/* ---- pack ---- */

/* 8 fp16 inputs; Inf and NaN as 0, -0 as +0 (see input() in kv_codec.c). */
static __m256 input8(const uint16_t *p) {
    __m256 x = _mm256_add_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)), _mm256_setzero_ps());
    __m256 finite = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(INFINITY), _CMP_LT_OQ);
    return _mm256_and_ps(x, finite);
}

static float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

static float hmin(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

/* roundf (halves away from zero), clamped to [lo, hi], as int32. The
 * fraction v - trunc(v) is exact, so the tie test is too. */
static __m256i round_clamp(__m256 v, float lo, float hi) {
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
    __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, t));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    t = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_or_ps(sign, _mm256_set1_ps(1.0f))));
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
    return _mm256_cvtps_epi32(t);
}

/* Four vectors of 8 small int32 -> 32 bytes in order. */
static __m256i to_bytes(const __m256i q[4]) {
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void pack_q8_block(const uint16_t *src, uint8_t *blk) {
    __m256 x[4], amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        x[k] = input8(src + 8 * k);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x[k]));
    }
    uint16_t dh = fr_fp32_to_fp16(hmax(amax) / 127.0f);
    float d = fr_fp16_to_fp32(dh);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = d != 0.0f ? round_clamp(_mm256_div_ps(x[k], _mm256_set1_ps(d)), -127.0f, 127.0f)
                         : _mm256_setzero_si256();
    put_u16(blk, dh);
    _mm256_storeu_si256((__m256i *)(blk + 2), to_bytes(q));
}

static void pack_q8(const uint16_t *src, uint8_t *dst, int kv_dim) {
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c += 32, dst += 34) pack_q8_block(src + (size_t)t * kv_dim + c, dst);
}

/* One value group: 32 channels of one slot, as pack_kivi_group does. */
static void pack_value_group(const uint16_t *src, int bits, uint8_t *g) {
    __m256 x[4], lo, hi;
    for (int k = 0; k < 4; k++) x[k] = input8(src + 8 * k);
    lo = _mm256_min_ps(_mm256_min_ps(x[0], x[1]), _mm256_min_ps(x[2], x[3]));
    hi = _mm256_max_ps(_mm256_max_ps(x[0], x[1]), _mm256_max_ps(x[2], x[3]));
    float mn = hmin(lo), top = (float)((1 << bits) - 1);
    uint16_t sh = fr_fp32_to_fp16((hmax(hi) - mn) / top), zh = fr_fp32_to_fp16(mn);
    float s = fr_fp16_to_fp32(sh), z = fr_fp16_to_fp32(zh);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = s != 0.0f ? round_clamp(_mm256_div_ps(_mm256_sub_ps(x[k], _mm256_set1_ps(z)), _mm256_set1_ps(s)),
                                       0.0f, top)
                         : _mm256_setzero_si256();
    put_u16(g, sh);
    put_u16(g + 2, zh);
    /* codes k < 16 | codes k + 16 << 4; for 2 bits, then byte j | byte j + 8 << 2 */
    __m256i b = to_bytes(q);
    __m128i nib = _mm_or_si128(_mm256_castsi256_si128(b), _mm_slli_epi16(_mm256_extracti128_si256(b, 1), 4));
    if (bits == 4) _mm_storeu_si128((__m128i *)(g + 4), nib);
    else _mm_storel_epi64((__m128i *)(g + 4), _mm_or_si128(nib, _mm_slli_epi16(_mm_srli_si128(nib, 8), 2)));
}

static void pack_kivi_values(const uint16_t *src, uint8_t *dst, int kv_dim, int bits) {
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c += 32, dst += 4 + 4 * bits)
            pack_value_group(src + (size_t)t * kv_dim + c, bits, dst);
}

/* Keys, 8 channels in the lanes: their ranges over the 32 slots, then the
 * codes, OR-ed into the byte each goes to (slot t: byte t % len, bits
 * t / len); the [byte][channel] result is written out transposed. */
static void pack_key_channels(const uint16_t *src, int kv_dim, int bits, uint8_t *sz, uint8_t *codes) {
    const int len = 4 * bits;
    const float top = (float)((1 << bits) - 1);
    __m256 lo = input8(src), hi = lo;
    for (int t = 1; t < FR_KV_PAGE; t++) {
        __m256 x = input8(src + (size_t)t * kv_dim);
        lo = _mm256_min_ps(lo, x), hi = _mm256_max_ps(hi, x);
    }
    __m128i sh = _mm256_cvtps_ph(_mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(top)), _MM_FROUND_TO_NEAREST_INT);
    __m128i zh = _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128((__m128i *)sz, _mm_unpacklo_epi16(sh, zh));
    _mm_storeu_si128((__m128i *)(sz + 16), _mm_unpackhi_epi16(sh, zh));
    __m256 s = _mm256_cvtph_ps(sh), z = _mm256_cvtph_ps(zh);
    __m256 nonzero = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_NEQ_OQ);
    __m256 div = _mm256_blendv_ps(_mm256_set1_ps(1.0f), s, nonzero); /* s = 0: codes 0, no 0/0 */
    __m256i acc[16];
    for (int p = 0; p < len; p++) acc[p] = _mm256_setzero_si256();
    for (int t = 0; t < FR_KV_PAGE; t++) {
        __m256 x = input8(src + (size_t)t * kv_dim);
        __m256i q = round_clamp(_mm256_div_ps(_mm256_sub_ps(x, z), div), 0.0f, top);
        q = _mm256_and_si256(q, _mm256_castps_si256(nonzero));
        acc[t % len] = _mm256_or_si256(acc[t % len], _mm256_slli_epi32(q, bits * (t / len)));
    }
    int32_t bytes[16][8];
    for (int p = 0; p < len; p++) _mm256_storeu_si256((__m256i *)bytes[p], acc[p]);
    for (int k = 0; k < 8; k++)
        for (int p = 0; p < len; p++) codes[k * len + p] = (uint8_t)bytes[p][k];
}

static void pack_kivi_keys(const uint16_t *src, uint8_t *dst, int kv_dim, int bits) {
    for (int c = 0; c < kv_dim; c += 8)
        pack_key_channels(src + c, kv_dim, bits, dst + (size_t)4 * c, dst + (size_t)4 * kv_dim + (size_t)4 * bits * c);
}

static void pack_avx2(int type, bool is_key, const uint16_t *src, void *dst, int kv_dim) {
    switch (type) {
    case FR_KV_F16: memcpy(dst, src, fr_kv_page_bytes(type, kv_dim)); break;
    case FR_KV_Q8: pack_q8(src, dst, kv_dim); break;
    case FR_KV_KIVI4:
    case FR_KV_KIVI2: {
        int bits = type == FR_KV_KIVI4 ? 4 : 2;
        if (is_key) pack_kivi_keys(src, dst, kv_dim, bits);
        else pack_kivi_values(src, dst, kv_dim, bits);
        break;
    }
    }
}

/* ---- scores from KIVI keys ---- */

/* A key channel's 32 codes as floats, slots 8m..8m+7 in k[m]. 4 bits:
 * slots 0-15 are the low nibbles of the 16 bytes, 16-31 the high ones;
 * 2 bits: bits 2m, 2m+1 of the 8 bytes are slots 8m..8m+7. (A 16-bit
 * shift moves bits of the next byte into the top of each byte, which the
 * mask drops.) */
static ALWAYS_INLINE void key_codes(const uint8_t *codes, int bits, __m256 k[4]) {
    if (bits == 4) {
        __m128i b = _mm_loadu_si128((const __m128i *)codes), m = _mm_set1_epi8(15);
        __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        k[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
        k[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
        k[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
        k[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
    } else {
        __m128i b = _mm_loadl_epi64((const __m128i *)codes), m = _mm_set1_epi8(3);
        k[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(b, m)));
        k[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 2), m)));
        k[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), m)));
        k[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 6), m)));
    }
}

/* Up to four rows at a time: 16 accumulators of 8 slots. */
static ALWAYS_INLINE void kivi_scores_rows(int bits, const uint8_t *src, int kv_dim, int c0, int n, const float *const *q,
                                           const int nr, float scale, float *s) {
    const uint8_t *codes = src + (size_t)4 * kv_dim;
    const size_t len = (size_t)4 * bits;
    __m256 acc[4][4];
    float bias[4] = { 0, 0, 0, 0 };
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        for (int m = 0; m < 4; m++) acc[r][m] = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        int c = c0 + i;
        float sc = get_half(src + (size_t)4 * c), z = get_half(src + (size_t)4 * c + 2);
        __m256 k[4];
        key_codes(codes + len * c, bits, k);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            float qi = q[r][i];
            bias[r] = fmaf(qi, z, bias[r]);
            __m256 qs = _mm256_set1_ps(qi * sc);
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) acc[r][m] = _mm256_fmadd_ps(qs, k[m], acc[r][m]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        __m256 b = _mm256_set1_ps(bias[r]), sv = _mm256_set1_ps(scale);
        for (int m = 0; m < 4; m++)
            _mm256_storeu_ps(s + r * FR_KV_PAGE + 8 * m, _mm256_mul_ps(_mm256_add_ps(acc[r][m], b), sv));
    }
}

static void kivi_scores_avx2(int bits, const void *src, int kv_dim, int c0, int n, const float *const *q, int nq,
                             float scale, float *s) {
    int r = 0;
    for (; r + 4 <= nq; r += 4) kivi_scores_rows(bits, src, kv_dim, c0, n, q + r, 4, scale, s + r * FR_KV_PAGE);
    switch (nq - r) {
    case 3: kivi_scores_rows(bits, src, kv_dim, c0, n, q + r, 3, scale, s + r * FR_KV_PAGE); break;
    case 2: kivi_scores_rows(bits, src, kv_dim, c0, n, q + r, 2, scale, s + r * FR_KV_PAGE); break;
    case 1: kivi_scores_rows(bits, src, kv_dim, c0, n, q + r, 1, scale, s + r * FR_KV_PAGE); break;
    }
}

const fr_kv_codec fr_kv_codec_avx2 = { pack_avx2, load_avx2, kivi_scores_avx2 };
