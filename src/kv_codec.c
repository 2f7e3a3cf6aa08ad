/*
 * kv_codec.c - sizes and names of the KV cache page formats, the scalar
 * reference codec and the dispatch (layouts in kv_codec.h).
 *
 * The reference decodes with the same float operations as the SIMD twin
 * (Q8: one multiply; KIVI: one fused multiply-add), so the two agree bit
 * for bit, not just within a tolerance.
 */
#include <math.h>
#include <string.h>
#include "kv_codec.h"
#include "quant.h"

/* Bytes per channel of a page (K or V): 32 slots of fp16; 32 blocks of
 * {d, 32 q} per 32 channels; KIVI s, z plus 32 codes of b bits. */
static const int page_bytes_per_channel[FR_KV_TYPES] = { 64, 34, 20, 12 };
static const char *const type_names[FR_KV_TYPES] = { "f16", "q8", "kivi4", "kivi2" };

size_t fr_kv_page_bytes(int type, int kv_dim) {
    if (type < 0 || type >= FR_KV_TYPES) return 0;
    return (size_t)page_bytes_per_channel[type] * (size_t)kv_dim;
}

double fr_kv_token_bytes(int type, int kv_dim) {
    return 2.0 * (double)fr_kv_page_bytes(type, kv_dim) / FR_KV_PAGE;
}

const char *fr_kv_type_name(int type) {
    return type >= 0 && type < FR_KV_TYPES ? type_names[type] : "unknown";
}

int fr_kv_type_parse(const char *name) {
    for (int t = 0; name && t < FR_KV_TYPES; t++)
        if (!strcmp(name, type_names[t])) return t;
    return -1;
}

const fr_kv_codec *fr_kv_codec_get(void) {
    return fr_kernels_isa() >= FR_ISA_AVX2 ? &fr_kv_codec_avx2 : &fr_kv_codec_scalar;
}

/* ---- helpers ---- */

static uint16_t get_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static float get_half(const uint8_t *p) { return fr_fp16_to_fp32(get_u16(p)); }

/* An input value; Inf and NaN count as 0 (converting them to integers
 * would be undefined, and one bad value must not wipe out its group).
 * Adding +0 turns -0 into +0: a group's min or max must not depend on the
 * order it is searched in (fminf and SIMD min may pick either zero), or
 * z's sign bit, and with it the packed bytes, could differ between twins. */
static float input(uint16_t h) {
    float x = fr_fp16_to_fp32(h);
    return isfinite(x) ? x + 0.0f : 0.0f;
}

static int kivi_bits(int type) { return type == FR_KV_KIVI4 ? 4 : 2; }

/* Packs 32 codes of `bits` bits into 4 * bits bytes (kv_codec.h): 4 bits,
 * code k in the low nibble of byte k or the high nibble of byte k - 16;
 * 2 bits, byte j holds codes j, j + 8, j + 16, j + 24 from bit 0 up. */
static void pack_codes(const uint8_t *q, int bits, uint8_t *out) {
    if (bits == 4) {
        for (int j = 0; j < 16; j++) out[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    } else {
        for (int j = 0; j < 8; j++)
            out[j] = (uint8_t)(q[j] | q[j + 8] << 2 | q[j + 16] << 4 | q[j + 24] << 6);
    }
}

/* Code k of a packed group (the inverse of pack_codes). */
static int code_at(const uint8_t *codes, int bits, int k) {
    if (bits == 4) return (codes[k & 15] >> (k >> 4) * 4) & 15;
    return (codes[k & 7] >> (k >> 3) * 2) & 3;
}

/* ---- pack ---- */

/* One Q8 block: d = amax / 127 rounded to fp16, then q = round(x / d)
 * with that d, so the stored scale is the one the codes were made for
 * (the clamp catches amax / d just above 127 when d rounded down). */
static void pack_q8_block(const uint16_t *src, uint8_t *blk) {
    float x[32], amax = 0;
    for (int j = 0; j < 32; j++) {
        x[j] = input(src[j]);
        amax = fmaxf(amax, fabsf(x[j]));
    }
    uint16_t dh = fr_fp32_to_fp16(amax / 127.0f);
    float d = fr_fp16_to_fp32(dh);
    put_u16(blk, dh);
    for (int j = 0; j < 32; j++) {
        float q = d != 0.0f ? fminf(fmaxf(roundf(x[j] / d), -127.0f), 127.0f) : 0.0f;
        blk[2 + j] = (uint8_t)(int8_t)q;
    }
}

/* One KIVI group of 32 values: s and z into sz[0..1] (fp16), the codes
 * packed into codes. */
static void pack_kivi_group(const float *x, int bits, uint8_t *sz, uint8_t *codes) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
    float top = (float)((1 << bits) - 1);
    uint16_t sh = fr_fp32_to_fp16((hi - lo) / top), zh = fr_fp32_to_fp16(lo);
    float s = fr_fp16_to_fp32(sh), z = fr_fp16_to_fp32(zh);
    uint8_t q[32];
    for (int j = 0; j < 32; j++)
        q[j] = (uint8_t)(s != 0.0f ? fminf(fmaxf(roundf((x[j] - z) / s), 0.0f), top) : 0.0f);
    put_u16(sz, sh);
    put_u16(sz + 2, zh);
    pack_codes(q, bits, codes);
}

static void pack_q8(const uint16_t *src, uint8_t *dst, int kv_dim) {
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c += 32, dst += 34) pack_q8_block(src + (size_t)t * kv_dim + c, dst);
}

/* Keys: one group per channel, along the page's 32 slots. */
static void pack_kivi_keys(const uint16_t *src, uint8_t *dst, int kv_dim, int bits) {
    uint8_t *codes = dst + (size_t)4 * kv_dim;
    float x[32];
    for (int c = 0; c < kv_dim; c++) {
        for (int t = 0; t < FR_KV_PAGE; t++) x[t] = input(src[(size_t)t * kv_dim + c]);
        pack_kivi_group(x, bits, dst + (size_t)4 * c, codes + (size_t)4 * bits * c);
    }
}

/* Values: one group per slot and 32 channels. */
static void pack_kivi_values(const uint16_t *src, uint8_t *dst, int kv_dim, int bits) {
    float x[32];
    for (int t = 0; t < FR_KV_PAGE; t++) {
        for (int c = 0; c < kv_dim; c += 32, dst += 4 + 4 * bits) {
            for (int j = 0; j < 32; j++) x[j] = input(src[(size_t)t * kv_dim + c + j]);
            pack_kivi_group(x, bits, dst, dst + 4);
        }
    }
}

static void pack_scalar(int type, bool is_key, const uint16_t *src, void *dst, int kv_dim) {
    switch (type) {
    case FR_KV_F16: memcpy(dst, src, fr_kv_page_bytes(type, kv_dim)); break;
    case FR_KV_Q8: pack_q8(src, dst, kv_dim); break;
    case FR_KV_KIVI4:
    case FR_KV_KIVI2:
        if (is_key) pack_kivi_keys(src, dst, kv_dim, kivi_bits(type));
        else pack_kivi_values(src, dst, kv_dim, kivi_bits(type));
        break;
    }
}

/* ---- load ---- */

static void load_f16(const uint8_t *src, int kv_dim, int c0, int n, float *tile, int stride) {
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int i = 0; i < n; i++)
            tile[(size_t)t * stride + i] = get_half(src + 2 * ((size_t)t * kv_dim + c0 + i));
}

static void load_q8(const uint8_t *src, int kv_dim, int c0, int n, float *tile, int stride) {
    for (int t = 0; t < FR_KV_PAGE; t++) {
        const uint8_t *blk = src + ((size_t)t * kv_dim + c0) / 32 * 34;
        for (int i = 0; i < n; i += 32, blk += 34) {
            float d = get_half(blk);
            for (int j = 0; j < 32; j++) tile[(size_t)t * stride + i + j] = (float)(int8_t)blk[2 + j] * d;
        }
    }
}

static void load_kivi_keys(const uint8_t *src, int kv_dim, int bits, int c0, int n, float *tile, int stride) {
    for (int i = 0; i < n; i++) {
        int c = c0 + i;
        float s = get_half(src + (size_t)4 * c), z = get_half(src + (size_t)4 * c + 2);
        const uint8_t *codes = src + (size_t)4 * kv_dim + (size_t)4 * bits * c;
        for (int t = 0; t < FR_KV_PAGE; t++)
            tile[(size_t)t * stride + i] = fmaf(s, (float)code_at(codes, bits, t), z);
    }
}

static void load_kivi_values(const uint8_t *src, int kv_dim, int bits, int c0, int n, float *tile, int stride) {
    size_t group_bytes = 4 + 4 * (size_t)bits;
    for (int t = 0; t < FR_KV_PAGE; t++) {
        const uint8_t *g = src + ((size_t)t * kv_dim + c0) / 32 * group_bytes;
        for (int i = 0; i < n; i += 32, g += group_bytes) {
            float s = get_half(g), z = get_half(g + 2);
            for (int j = 0; j < 32; j++)
                tile[(size_t)t * stride + i + j] = fmaf(s, (float)code_at(g + 4, bits, j), z);
        }
    }
}

static void load_scalar(int type, bool is_key, const void *src, int kv_dim, int c0, int n, float *tile,
                        int stride) {
    switch (type) {
    case FR_KV_F16: load_f16(src, kv_dim, c0, n, tile, stride); break;
    case FR_KV_Q8: load_q8(src, kv_dim, c0, n, tile, stride); break;
    case FR_KV_KIVI4:
    case FR_KV_KIVI2:
        if (is_key) load_kivi_keys(src, kv_dim, kivi_bits(type), c0, n, tile, stride);
        else load_kivi_values(src, kv_dim, kivi_bits(type), c0, n, tile, stride);
        break;
    }
}

/* ---- scores from KIVI keys ---- */

static void kivi_scores_scalar(int bits, const void *src_, int kv_dim, int c0, int n, const float *const *q, int nq,
                               float scale, float *s) {
    const uint8_t *src = src_;
    for (int r = 0; r < nq; r++) {
        float acc[FR_KV_PAGE] = { 0 }, bias = 0;
        for (int i = 0; i < n; i++) {
            int c = c0 + i;
            float sc = get_half(src + (size_t)4 * c), z = get_half(src + (size_t)4 * c + 2), qs = q[r][i] * sc;
            const uint8_t *codes = src + (size_t)4 * kv_dim + (size_t)4 * bits * c;
            bias = fmaf(q[r][i], z, bias);
            for (int t = 0; t < FR_KV_PAGE; t++) acc[t] = fmaf(qs, (float)code_at(codes, bits, t), acc[t]);
        }
        for (int t = 0; t < FR_KV_PAGE; t++) s[r * FR_KV_PAGE + t] = (acc[t] + bias) * scale;
    }
}

const fr_kv_codec fr_kv_codec_scalar = { pack_scalar, load_scalar, kivi_scores_scalar };
