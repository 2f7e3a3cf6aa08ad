/*
 * test_kv_codec.c - the KV cache page codecs (src/kv_codec.h).
 *
 * Round trips on random pages with outlier channels, each value checked
 * against its own group's range (a key channel's 32 slots, or a slot's 32
 * channels); hand-built pages whose packed bytes are spelled out from the
 * header's layout; constant groups (s = 0) and non-finite inputs; loads of
 * one head's channels; sizes and names; and the AVX2 codec bit for bit
 * against the scalar one on this machine when it has AVX2.
 */
#include <stdlib.h>
#include "kv_codec.h"
#include "quant.h"
#include "unit.h"

static const int dims[] = { 64, 192, 256 };
#define N_DIMS (int)(sizeof dims / sizeof dims[0])

static uint64_t rng_state = 0x243f6a8885a308d3ull;

/* Uniform in [-1, 1). */
static float rng_float(void) {
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (float)(((rng_state * 0x2545f4914f6cdd1dull) >> 40) * 0x1p-23 - 1.0);
}

/* The codecs to test: scalar, and AVX2 when this CPU has it. */
static int codecs(const fr_kv_codec *list[2]) {
    list[0] = &fr_kv_codec_scalar;
    list[1] = &fr_kv_codec_avx2;
    return fr_isa_detect() >= FR_ISA_AVX2 ? 2 : 1;
}

static bool is_kivi(int type) { return type == FR_KV_KIVI4 || type == FR_KV_KIVI2; }

/* A random page: values around 1 with every 37th channel an outlier
 * (large and offset, as some key channels are in real models). */
static void fill_page(uint16_t *page, int kv_dim) {
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c++) {
            float x = 2 * rng_float();
            if (c % 37 == 5) x = 40 * x + 25;
            page[t * kv_dim + c] = fr_fp32_to_fp16(x);
        }
}

/* A page value as the codecs read it: Inf and NaN count as 0. */
static float input(uint16_t h) {
    float x = fr_fp16_to_fp32(h);
    return isfinite(x) ? x : 0.0f;
}

/* The error allowed at (t, c): half a step of its group (a key channel
 * for KIVI keys, else the slot's 32 channels) from that group's own
 * range, plus slack for the fp16 scale and the float arithmetic. */
static double bound(int type, bool is_key, const uint16_t *page, int kv_dim, int t, int c) {
    double lo = INFINITY, hi = -INFINITY, amax = 0;
    for (int j = 0; j < 32; j++) {
        float x = is_kivi(type) && is_key ? input(page[j * kv_dim + c]) : input(page[t * kv_dim + c / 32 * 32 + j]);
        lo = fmin(lo, x), hi = fmax(hi, x), amax = fmax(amax, fabs(x));
    }
    if (type == FR_KV_Q8) return amax / 127 / 2 + amax / 1024 + 1e-30;
    int top = type == FR_KV_KIVI4 ? 15 : 3;
    return (hi - lo) / top / 2 + (hi - lo) / 1024 + amax * 0x1p-22 + 1e-30;
}

/* Packs and loads a whole page; the worst error over its bound (<= 1
 * passes). F16 must come back exactly: 0, or 1e9 on any difference. */
static double round_trip(const fr_kv_codec *k, int type, bool is_key, const uint16_t *page, int kv_dim) {
    int stride = kv_dim + 8;
    uint8_t *packed = malloc(fr_kv_page_bytes(type, kv_dim));
    float *tile = malloc(sizeof(float) * FR_KV_PAGE * stride);
    k->pack(type, is_key, page, packed, kv_dim);
    k->load(type, is_key, packed, kv_dim, 0, kv_dim, tile, stride);
    double worst = 0;
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c++) {
            float y = tile[t * stride + c];
            if (type == FR_KV_F16) {
                float x = fr_fp16_to_fp32(page[t * kv_dim + c]);
                if (memcmp(&x, &y, 4)) worst = 1e9;
            } else {
                double err = isfinite(y) ? fabs(y - input(page[t * kv_dim + c])) : INFINITY;
                worst = fmax(worst, err / bound(type, is_key, page, kv_dim, t, c));
            }
        }
    free(packed), free(tile);
    return worst;
}

TEST(kv_codec_sizes_and_names) {
    const int per_channel[FR_KV_TYPES] = { 64, 34, 20, 12 };
    for (int i = 0; i < N_DIMS; i++)
        for (int type = 0; type < FR_KV_TYPES; type++) {
            size_t bytes = fr_kv_page_bytes(type, dims[i]);
            CHECK(bytes == (size_t)per_channel[type] * dims[i]);
            CHECK(fr_kv_token_bytes(type, dims[i]) == 2.0 * bytes / FR_KV_PAGE);
        }
    CHECK(fr_kv_page_bytes(-1, 64) == 0 && fr_kv_page_bytes(FR_KV_TYPES, 64) == 0);
    const char *names[FR_KV_TYPES] = { "f16", "q8", "kivi4", "kivi2" };
    for (int type = 0; type < FR_KV_TYPES; type++) {
        CHECK(!strcmp(fr_kv_type_name(type), names[type]));
        CHECK(fr_kv_type_parse(names[type]) == type);
    }
    CHECK(fr_kv_type_parse("q4") == -1 && fr_kv_type_parse("") == -1 && fr_kv_type_parse("kivi") == -1);
    CHECK(fr_kv_type_parse("kivi44") == -1 && fr_kv_type_parse(NULL) == -1);
    CHECK(fr_kv_type_name(-1) != NULL && fr_kv_type_name(FR_KV_TYPES) != NULL);
}

TEST(kv_codec_dispatch_follows_isa) {
    int saved = fr_kernels_isa();
    fr_kernels_select(FR_ISA_SCALAR);
    CHECK(fr_kv_codec_get() == &fr_kv_codec_scalar);
    if (fr_kernels_select(FR_ISA_AVX2) >= FR_ISA_AVX2) CHECK(fr_kv_codec_get() == &fr_kv_codec_avx2);
    else CHECK(fr_kv_codec_get() == &fr_kv_codec_scalar);
    fr_kernels_select(saved);
}

TEST(kv_codec_round_trip_error_bounds) {
    const fr_kv_codec *list[2];
    int nc = codecs(list);
    for (int i = 0; i < N_DIMS; i++) {
        int kv_dim = dims[i];
        uint16_t *page = malloc(sizeof(uint16_t) * FR_KV_PAGE * kv_dim);
        for (int rep = 0; rep < 3; rep++) {
            fill_page(page, kv_dim);
            for (int k = 0; k < nc; k++)
                for (int type = 0; type < FR_KV_TYPES; type++)
                    for (int is_key = 0; is_key < 2; is_key++) {
                        double worst = round_trip(list[k], type, is_key, page, kv_dim);
                        CHECK_MSG(worst <= 1, "%s %s %s kv_dim %d: error %.3g of its bound",
                                  k ? "avx2" : "scalar", fr_kv_type_name(type), is_key ? "keys" : "values",
                                  kv_dim, worst);
                    }
        }
        free(page);
    }
}

/* ---- the packed layout, byte by byte ---- */

static uint16_t u16_at(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Codes (from the header): 4 bits, code k in the low nibble of byte k or
 * the high nibble of byte k - 16; 2 bits, byte j = codes j, j+8, j+16,
 * j+24 from bit 0 up. */
static void expected_codes(const int q[32], int bits, uint8_t *out) {
    for (int j = 0; j < 16 && bits == 4; j++) out[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    for (int j = 0; j < 8 && bits == 2; j++) out[j] = (uint8_t)(q[j] | q[j + 8] << 2 | q[j + 16] << 4 | q[j + 24] << 6);
}

/* Code k of a group in the layout pages: scrambled (a mix-up of bytes or
 * bit fields shows), with 0 and the top code always present. */
static int pattern(int k, int offset, int bits) {
    int top = (1 << bits) - 1;
    if (k < 2) return k ? top : 0;
    return (int)(((uint32_t)k * 2654435761u + (uint32_t)offset * 40503u) >> 20) & top;
}

/* Pages with x = 2 q - 3 and codes 0 and 2^b - 1 in every group, so s = 2
 * and z = -3 exactly: key channel c has code pattern(t, c) at slot t;
 * value channel 32 g + i at slot t, pattern(i, t + 3 g). */
static void check_kivi_layout(const fr_kv_codec *k, int type, bool is_key, int kv_dim) {
    int bits = type == FR_KV_KIVI4 ? 4 : 2, len = 4 * bits;
    uint16_t *page = malloc(sizeof(uint16_t) * FR_KV_PAGE * kv_dim);
    uint8_t *packed = malloc(fr_kv_page_bytes(type, kv_dim)), want[16];
    float *tile = malloc(sizeof(float) * FR_KV_PAGE * kv_dim);
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c++) {
            int q = is_key ? pattern(t, c, bits) : pattern(c % 32, t + 3 * (c / 32), bits);
            page[t * kv_dim + c] = fr_fp32_to_fp16(2.0f * q - 3);
        }
    k->pack(type, is_key, page, packed, kv_dim);
    int q[32];
    const uint16_t s2 = 0x4000, zm3 = 0xc200; /* fp16 2 and -3 */
    for (int g = 0; g < (is_key ? kv_dim : FR_KV_PAGE * kv_dim / 32); g++) {
        const uint8_t *sz, *codes;
        if (is_key) { /* channel g: header pair g, then its codes */
            sz = packed + 4 * g;
            codes = packed + 4 * kv_dim + len * g;
            for (int t = 0; t < 32; t++) q[t] = pattern(t, g, bits);
        } else { /* slot g / groups, channels 32 (g % groups) .. */
            sz = packed + (4 + len) * g;
            codes = sz + 4;
            int groups = kv_dim / 32;
            for (int i = 0; i < 32; i++) q[i] = pattern(i, g / groups + 3 * (g % groups), bits);
        }
        expected_codes(q, bits, want);
        CHECK_MSG(u16_at(sz) == s2 && u16_at(sz + 2) == zm3, "%s group %d: s %04x z %04x",
                  fr_kv_type_name(type), g, u16_at(sz), u16_at(sz + 2));
        CHECK_MSG(!memcmp(codes, want, len), "%s %s group %d codes", fr_kv_type_name(type), is_key ? "keys" : "values", g);
    }
    k->load(type, is_key, packed, kv_dim, 0, kv_dim, tile, kv_dim);
    for (int i = 0; i < FR_KV_PAGE * kv_dim; i++) CHECK(tile[i] == fr_fp16_to_fp32(page[i]));
    free(page), free(packed), free(tile);
}

/* Q8: x = k / 4 with k in -127..121 and -127 in every block, so d = 1/4
 * and the codes are the k; block g of slot t at (t kv_dim / 32 + g) 34. */
static int q8_pattern(int t, int c) { return ((7 * c + t + c / 32) % 32) * 8 - 127; }

static void check_q8_layout(const fr_kv_codec *k, int kv_dim) {
    uint16_t *page = malloc(sizeof(uint16_t) * FR_KV_PAGE * kv_dim);
    uint8_t *packed = malloc(fr_kv_page_bytes(FR_KV_Q8, kv_dim));
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int c = 0; c < kv_dim; c++)
            page[t * kv_dim + c] = fr_fp32_to_fp16(q8_pattern(t, c) / 4.0f);
    k->pack(FR_KV_Q8, false, page, packed, kv_dim);
    for (int t = 0; t < FR_KV_PAGE; t++)
        for (int g = 0; g < kv_dim / 32; g++) {
            const uint8_t *blk = packed + (t * kv_dim / 32 + g) * 34;
            CHECK(u16_at(blk) == 0x3400); /* fp16 0.25 */
            for (int i = 0; i < 32; i++) CHECK((int8_t)blk[2 + i] == q8_pattern(t, 32 * g + i));
        }
    free(page), free(packed);
}

TEST(kv_codec_layout_matches_header) {
    const fr_kv_codec *list[2];
    int nc = codecs(list);
    for (int k = 0; k < nc; k++)
        for (int i = 0; i < N_DIMS; i++) {
            check_q8_layout(list[k], dims[i]);
            for (int is_key = 0; is_key < 2; is_key++) {
                check_kivi_layout(list[k], FR_KV_KIVI4, is_key, dims[i]);
                check_kivi_layout(list[k], FR_KV_KIVI2, is_key, dims[i]);
            }
            if (unit_failed_flag) return;
        }
}

/* ---- constant groups, non-finite inputs, sub-ranges ---- */

/* Every group constant (a key channel's slots; a value slot's 32
 * channels): s = 0 and the page comes back exactly. */
TEST(kv_codec_constant_groups_exact) {
    const fr_kv_codec *list[2];
    int nc = codecs(list), kv_dim = 192;
    uint16_t page[FR_KV_PAGE * 192];
    float tile[FR_KV_PAGE * 192];
    uint8_t packed[64 * 192];
    for (int k = 0; k < nc; k++)
        for (int type = FR_KV_KIVI4; type <= FR_KV_KIVI2; type++)
            for (int is_key = 0; is_key < 2; is_key++) {
                for (int t = 0; t < FR_KV_PAGE; t++)
                    for (int c = 0; c < kv_dim; c++)
                        page[t * kv_dim + c] = fr_fp32_to_fp16(is_key ? c * 0.37f - 20 : (c / 32) * 1.5f - t * 0.75f);
                list[k]->pack(type, is_key, page, packed, kv_dim);
                int groups = is_key ? kv_dim : FR_KV_PAGE * kv_dim / 32, bits = type == FR_KV_KIVI4 ? 4 : 2;
                for (int g = 0; g < groups; g++) CHECK(u16_at(packed + (is_key ? 4 : 4 + 4 * bits) * g) == 0);
                list[k]->load(type, is_key, packed, kv_dim, 0, kv_dim, tile, kv_dim);
                for (int i = 0; i < FR_KV_PAGE * kv_dim; i++) CHECK(tile[i] == fr_fp16_to_fp32(page[i]));
            }
    /* Q8: an all-zero block has d = 0 and loads as zeros */
    memset(page, 0, sizeof page);
    for (int k = 0; k < nc; k++) {
        list[k]->pack(FR_KV_Q8, true, page, packed, kv_dim);
        list[k]->load(FR_KV_Q8, true, packed, kv_dim, 0, kv_dim, tile, kv_dim);
        for (int i = 0; i < FR_KV_PAGE * kv_dim; i++) CHECK(tile[i] == 0.0f);
    }
}

/* Inf, -Inf and NaN quantize as 0: everything loads finite and within the
 * bound computed with them as 0; a group of nothing else loads as 0. */
TEST(kv_codec_nonfinite_inputs_as_zero) {
    const fr_kv_codec *list[2];
    const uint16_t bad[3] = { 0x7c00, 0xfc00, 0x7e01 };
    int nc = codecs(list), kv_dim = 64;
    uint16_t page[FR_KV_PAGE * 64];
    fill_page(page, kv_dim);
    for (int i = 0; i < FR_KV_PAGE * kv_dim; i += 13) page[i] = bad[i % 3];
    for (int t = 0; t < FR_KV_PAGE; t++) page[t * kv_dim + 9] = bad[t % 3]; /* key channel 9 */
    for (int c = 32; c < 64; c++) page[3 * kv_dim + c] = bad[c % 3];      /* slot 3, channels 32-63 */
    for (int k = 0; k < nc; k++)
        for (int type = FR_KV_Q8; type < FR_KV_TYPES; type++)
            for (int is_key = 0; is_key < 2; is_key++) {
                double worst = round_trip(list[k], type, is_key, page, kv_dim);
                CHECK_MSG(worst <= 1, "%s %s: error %.3g of its bound", fr_kv_type_name(type),
                          is_key ? "keys" : "values", worst);
                uint8_t packed[34 * 64];
                float tile[FR_KV_PAGE * 64];
                list[k]->pack(type, is_key, page, packed, kv_dim);
                list[k]->load(type, is_key, packed, kv_dim, 0, kv_dim, tile, kv_dim);
                if (is_kivi(type) && is_key)
                    for (int t = 0; t < FR_KV_PAGE; t++) CHECK(tile[t * kv_dim + 9] == 0.0f);
                if (!is_key || type == FR_KV_Q8)
                    for (int c = 32; c < 64; c++) CHECK(tile[3 * kv_dim + c] == 0.0f);
            }
}

/* One head's channels [c0, c0 + n) equal those columns of a full load,
 * and nothing past n in a row is written. */
TEST(kv_codec_load_head_subrange) {
    const fr_kv_codec *list[2];
    int nc = codecs(list), kv_dim = 256;
    uint16_t page[FR_KV_PAGE * 256];
    uint8_t packed[64 * 256];
    float full[FR_KV_PAGE * 256], tile[FR_KV_PAGE * 136];
    fill_page(page, kv_dim);
    const int ranges[][2] = { { 0, 64 }, { 64, 64 }, { 192, 64 }, { 32, 32 }, { 224, 32 }, { 96, 128 } };
    for (int k = 0; k < nc; k++)
        for (int type = 0; type < FR_KV_TYPES; type++)
            for (int is_key = 0; is_key < 2; is_key++) {
                list[k]->pack(type, is_key, page, packed, kv_dim);
                list[k]->load(type, is_key, packed, kv_dim, 0, kv_dim, full, kv_dim);
                for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
                    int c0 = ranges[r][0], n = ranges[r][1], stride = n + 8;
                    for (int i = 0; i < FR_KV_PAGE * stride; i++) tile[i] = -12345.0f;
                    list[k]->load(type, is_key, packed, kv_dim, c0, n, tile, stride);
                    for (int t = 0; t < FR_KV_PAGE; t++) {
                        CHECK(!memcmp(tile + t * stride, full + t * kv_dim + c0, sizeof(float) * n));
                        for (int i = n; i < stride; i++) CHECK(tile[t * stride + i] == -12345.0f);
                    }
                }
            }
}

/* ---- AVX2 against scalar ---- */

/* Pages that stress the rounding paths: random with outliers, tiny
 * (fp16 subnormals), huge (near 65504), exact ties of x / s, constant and
 * non-finite groups, signed zeros. */
static void fill_stress_page(uint16_t *page, int kv_dim, int kind) {
    fill_page(page, kv_dim);
    for (int i = 0; i < FR_KV_PAGE * kv_dim; i++) {
        float r = rng_float();
        switch (kind) {
        case 1: page[i] = fr_fp32_to_fp16(r * 1e-5f); break;
        case 2: page[i] = fr_fp32_to_fp16(r * 65000.0f); break;
        case 3: page[i] = fr_fp32_to_fp16((float)((i * 7919) % 31) * 0.5f); break; /* halves: ties */
        case 4: page[i] = (uint16_t)((i % 5 == 0) ? 0x8000 : (i % 7 == 0) ? 0 : page[i]); break;
        case 5: if (i % 11 == 0) page[i] = (uint16_t)(0x7c00 | (i % 3) << 8 | (i & 1) << 15); break;
        case 6: if ((i / 64) % 3 == 0) page[i] = 0x3c00; break; /* runs of 1.0 */
        case 7: /* zeros of both signs at the minimum (even groups) or maximum */
            page[i] = i % 3 ? (uint16_t)(i % 2 ? 0x8000 : 0) : fr_fp32_to_fp16(fabsf(r) * ((i / 32) % 2 ? -1 : 1));
            break;
        }
    }
}

TEST(kv_codec_avx2_matches_scalar) {
    if (fr_isa_detect() < FR_ISA_AVX2) return;
    for (int i = 0; i < N_DIMS; i++) {
        int kv_dim = dims[i];
        size_t max_bytes = fr_kv_page_bytes(FR_KV_F16, kv_dim), nf = (size_t)FR_KV_PAGE * (kv_dim + 8);
        uint16_t *page = malloc(sizeof(uint16_t) * FR_KV_PAGE * kv_dim);
        uint8_t *p1 = malloc(max_bytes), *p2 = malloc(max_bytes);
        float *t1 = malloc(sizeof(float) * nf), *t2 = malloc(sizeof(float) * nf);
        for (int kind = 0; kind < 8; kind++) {
            fill_stress_page(page, kv_dim, kind);
            for (int type = 0; type < FR_KV_TYPES; type++)
                for (int is_key = 0; is_key < 2; is_key++) {
                    size_t bytes = fr_kv_page_bytes(type, kv_dim);
                    fr_kv_codec_scalar.pack(type, is_key, page, p1, kv_dim);
                    fr_kv_codec_avx2.pack(type, is_key, page, p2, kv_dim);
                    CHECK_MSG(!memcmp(p1, p2, bytes), "pack %s %s kv_dim %d kind %d", fr_kv_type_name(type),
                              is_key ? "keys" : "values", kv_dim, kind);
                    for (int c0 = 0; c0 < kv_dim; c0 += 64) {
                        int n = FR_MIN(64, kv_dim - c0), stride = n + 8;
                        memset(t1, 0, sizeof(float) * nf), memset(t2, 0, sizeof(float) * nf);
                        fr_kv_codec_scalar.load(type, is_key, p1, kv_dim, c0, n, t1, stride);
                        fr_kv_codec_avx2.load(type, is_key, p1, kv_dim, c0, n, t2, stride);
                        CHECK_MSG(!memcmp(t1, t2, sizeof(float) * FR_KV_PAGE * stride), "load %s %s kv_dim %d kind %d c0 %d",
                                  fr_kv_type_name(type), is_key ? "keys" : "values", kv_dim, kind, c0);
                    }
                }
        }
        free(page), free(p1), free(p2), free(t1), free(t2);
    }
}

/* Scores straight from KIVI key codes (kivi_scores): every codec against
 * a double-precision dot of the same query rows with the keys the scalar
 * load decodes from the page, for 1..6 rows and each head of the page;
 * and the AVX2 scores bit for bit equal to the scalar ones. */
TEST(kv_codec_kivi_scores_match_dequantized_dots) {
    const fr_kv_codec *list[2];
    int n_codecs = codecs(list);
    for (int d = 0; d < N_DIMS; d++) {
        int kv_dim = dims[d], hd = 64;
        uint16_t *page = malloc(sizeof(uint16_t) * FR_KV_PAGE * kv_dim);
        uint8_t *packed = malloc(fr_kv_page_bytes(FR_KV_KIVI4, kv_dim));
        float *keys = malloc(sizeof(float) * FR_KV_PAGE * hd), q[6][64], s[2][6 * FR_KV_PAGE];
        const float *qp[6];
        CHECK(page && packed && keys);
        if (!page || !packed || !keys) return;
        fill_page(page, kv_dim);
        for (int r = 0; r < 6; r++) {
            for (int i = 0; i < hd; i++) q[r][i] = rng_float();
            qp[r] = q[r];
        }
        for (int type = FR_KV_KIVI4; type <= FR_KV_KIVI2; type++) {
            int bits = type == FR_KV_KIVI4 ? 4 : 2;
            fr_kv_codec_scalar.pack(type, true, page, packed, kv_dim);
            for (int c0 = 0; c0 < kv_dim; c0 += hd) {
                fr_kv_codec_scalar.load(type, true, packed, kv_dim, c0, hd, keys, hd);
                for (int nq = 1; nq <= 6; nq++) {
                    for (int k = 0; k < n_codecs; k++)
                        list[k]->kivi_scores(bits, packed, kv_dim, c0, hd, qp, nq, 0.125f, s[k]);
                    double worst = 0;
                    for (int r = 0; r < nq; r++)
                        for (int t = 0; t < FR_KV_PAGE; t++) {
                            double ref = 0, mag = 0;
                            for (int i = 0; i < hd; i++) {
                                ref += (double)q[r][i] * keys[t * hd + i];
                                mag += fabs((double)q[r][i] * keys[t * hd + i]);
                            }
                            double err = fabs(s[0][r * FR_KV_PAGE + t] - 0.125 * ref) / (0.125 * mag + 1e-30);
                            if (err > worst) worst = err;
                        }
                    CHECK(worst < 1e-5);
                    if (n_codecs == 2) CHECK(memcmp(s[0], s[1], sizeof(float) * nq * FR_KV_PAGE) == 0);
                }
            }
        }
        free(page);
        free(packed);
        free(keys);
    }
}
