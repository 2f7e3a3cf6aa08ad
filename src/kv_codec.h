/*
 * kv_codec.h - the storage formats of a KV cache page and their kernels.
 *
 * The KV cache (kv.c) is made of pages of FR_KV_PAGE consecutive slots of
 * one layer, all KV heads together: kv_dim = n_head_kv * head_dim channels
 * per slot, a head's channels contiguous. A page is written in fp16 while
 * it fills (and while it is within the recent full-precision residual);
 * then it is packed once into the cache's type. This file packs a whole
 * page and loads one head's slice of a packed page back as floats, one
 * tile at a time inside the attention kernel, so no full-precision copy of
 * the cache ever exists.
 *
 * Formats of one packed page, K and V separately (both the same size):
 *
 *   F16    [32 slots][kv_dim] fp16: the rows pack takes (a cache of type
 *          f16 never packs; its pages keep kv.h's fp16 layout).
 *   Q8     per slot, kv_dim/32 blocks {fp16 d; int8 q[32]} (Q8_0 layout,
 *          symmetric: x = d * q), slot-major. Keys and values alike.
 *   KIVI-b (b = 4 or 2 bits), asymmetric: x = s * q + z, q in [0, 2^b).
 *     keys, per channel (KIVI quantizes keys along the token axis, so an
 *     outlier channel gets its own range): first kv_dim pairs {fp16 s,
 *     fp16 z}, then for each channel 32 codes of the page's slots, 4*b
 *     bytes: b = 4: slot t in the low nibble of byte t (t < 16) or the high
 *     nibble of byte t - 16; b = 2: byte j holds slots j, j+8, j+16, j+24 in
 *     bits 0-1, 2-3, 4-5, 6-7.
 *     values, per slot (per token, grouped along the channels): for each
 *     slot, kv_dim/32 groups {fp16 s; fp16 z; codes of the group's 32
 *     channels, packed as the key codes are, channel for slot}.
 *
 * Bytes per page for K (or V) = fr_kv_page_bytes(type, kv_dim):
 *   F16 64 kv_dim, Q8 34 kv_dim, KIVI4 20 kv_dim, KIVI2 12 kv_dim.
 *
 * Quantization rule (KIVI): z = min, s = (max - min) / (2^b - 1), both
 * rounded to fp16 first, q = round((x - z) / s) clamped to [0, 2^b - 1];
 * s = 0 when all values are equal. Non-finite inputs count as 0.
 *
 * Every kernel has a scalar twin (fr_kv_codec_scalar) that tests compare
 * the dispatched one with.
 */
#ifndef FR_KV_CODEC_H
#define FR_KV_CODEC_H

#include "common.h"

#define FR_KV_PAGE 32

/* Same values as frugal_kv_type in frugal.h. */
enum fr_kv_type { FR_KV_F16 = 0, FR_KV_Q8 = 1, FR_KV_KIVI4 = 2, FR_KV_KIVI2 = 3, FR_KV_TYPES };

typedef struct {
    /* Packs a full page src[32][kv_dim] (fp16) of keys (is_key) or values
     * into dst (fr_kv_page_bytes bytes). kv_dim % 32 == 0. */
    void (*pack)(int type, bool is_key, const uint16_t *src, void *dst, int kv_dim);
    /* Loads channels [c0, c0 + n) of all 32 slots of a packed page into
     * tile[slot * stride + i], i < n. c0 and n are multiples of 32. */
    void (*load)(int type, bool is_key, const void *src, int kv_dim, int c0, int n, float *tile, int stride);
    /* Attention scores of nq query rows q[r][0..n) against the 32 slots of
     * a KIVI key page (bits 4 or 2), channels [c0, c0 + n), straight from
     * the codes, fused with the dot product:
     *   q.k_t = sum_i q_i (s_i code_it + z_i) = sum_i (q_i s_i) code_it + sum_i q_i z_i,
     * so no key is dequantized; each channel's 32 codes are widened once for
     * all rows, and the sums run along the slots (no horizontal adds).
     * s[r * 32 + t] = scale * ((sum_i (q_i s_i) code_it) + sum_i q_i z_i),
     * each sum a chain of fused multiply-adds in channel order (the twins
     * agree bit for bit). */
    void (*kivi_scores)(int bits, const void *src, int kv_dim, int c0, int n, const float *const *q, int nq,
                        float scale, float *s);
} fr_kv_codec;

extern const fr_kv_codec fr_kv_codec_scalar;
extern const fr_kv_codec fr_kv_codec_avx2;

/* The codec for the CPU (after fr_kernels_select). */
const fr_kv_codec *fr_kv_codec_get(void);

/* Bytes of one packed page of K (or of V). */
size_t fr_kv_page_bytes(int type, int kv_dim);
/* Bytes per cached token (K + V) of a layer, pages full. */
double fr_kv_token_bytes(int type, int kv_dim);
/* "f16", "q8", "kivi4", "kivi2"; parse returns -1 for an unknown name. */
const char *fr_kv_type_name(int type);
int fr_kv_type_parse(const char *name);

#endif
