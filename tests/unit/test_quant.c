/*
 * test_quant.c - element types, conversions, quantizers and dot kernels.
 *
 * Expected values are computed here independently of src/quant.c: hand-built
 * blocks with literal results, exhaustive fp16/bf16 checks against their
 * definition (nearest value, ties to even), and every SIMD kernel compared
 * with the scalar reference at every ISA level this machine runs, on random
 * data and on edge shapes (one block, odd block counts, several scale
 * chunks, rows at odd byte addresses).
 */
#include <stdlib.h>
#include "unit.h"
#include "quant.h"

/* ---- helpers ----------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Uniform in [-1, 1). */
static float rng_float(void) { return (float)((rng_next() >> 40) * 0x1p-23 - 1.0); }

static float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t float_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* fp16 by its definition: sign, 5-bit exponent (bias 15), 10-bit mantissa. */
static double half_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static void fill_random(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_float() * scale;
}

static int is_quantized(uint32_t type) { return fr_traits(type)->blck > 1; }

/* Byte offsets a row of this type is tested at: any for block types,
 * element-aligned for float types. */
static const int *row_offsets(uint32_t type) {
    static const int quantized[] = {0, 1, 3, -1}, f32[] = {0, 4, 12, -1}, f16[] = {0, 2, 6, -1};
    if (is_quantized(type)) return quantized;
    return type == FR_F32 ? f32 : f16;
}

/* ---- fp16 / bf16 ------------------------------------------------------- */

TEST(quant_fp16_special_values) {
    static const struct { float f; uint16_t h; } cases[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000},
        {65504.0f, 0x7bff}, {65519.99f, 0x7bff}, {65520.0f, 0x7c00}, {-1e9f, 0xfc00},
        {0x1p-14f, 0x0400}, {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000},        /* tie -> even 0 */
        {0x1.0002p-25f, 0x0001}, {0x3p-25f, 0x0002}, {0x1p-26f, 0x0000},   /* 1.5 -> 2 */
        {0x3ffp-24f, 0x03ff}, {0x7ffp-25f, 0x0400},                        /* rounds up to normal */
        {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02},              /* ties to even */
        {1.0f + 0x1.002p-11f, 0x3c01}, {0.1f, 0x2e66}, {-3.140625f, 0xc248},
        {INFINITY, 0x7c00}, {-INFINITY, 0xfc00}, {1e-45f, 0x0000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(fr_fp32_to_fp16(cases[i].f) == cases[i].h, "case %zu: %a -> %#x, want %#x", i,
                  (double)cases[i].f, fr_fp32_to_fp16(cases[i].f), cases[i].h);
    CHECK((fr_fp32_to_fp16(NAN) & 0x7c00) == 0x7c00 && (fr_fp32_to_fp16(NAN) & 0x3ff) != 0);
    CHECK(isnan(fr_fp16_to_fp32(0x7e00)) && isnan(fr_fp16_to_fp32(0xfc01)));
    CHECK(isinf(fr_fp16_to_fp32(0x7c00)) && fr_fp16_to_fp32(0xfc00) < 0);
    CHECK(fr_fp16_to_fp32(0x0001) == 0x1p-24f);
    CHECK(signbit(fr_fp16_to_fp32(0x8000)));
}

/* Every half decodes to its defined value and encodes back to itself. */
TEST(quant_fp16_exhaustive_decode) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fr_fp16_to_fp32((uint16_t)h);
        int e = (h >> 10) & 31;
        if (e == 31) {
            CHECK_MSG((h & 1023) ? isnan(f) : isinf(f), "h=%#x", h);
            continue;
        }
        CHECK_MSG((double)f == half_value((uint16_t)h), "h=%#x", h);
        CHECK_MSG(fr_fp32_to_fp16(f) == h, "h=%#x", h);
    }
}

/* Midpoints between neighbouring halves round to the even one; a hair
 * either side rounds to the nearer one. */
TEST(quant_fp16_exhaustive_ties) {
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double lo = half_value((uint16_t)h);
        double hi = h == 0x7bff ? 65536.0 : half_value((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* 12 significant bits: exact */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        CHECK_MSG(fr_fp32_to_fp16(mid) == even, "h=%#x", h);
        CHECK_MSG(fr_fp32_to_fp16(-mid) == (even | 0x8000), "h=%#x", h);
        CHECK_MSG(fr_fp32_to_fp16(nextafterf(mid, 0)) == h, "h=%#x", h);
        CHECK_MSG(fr_fp32_to_fp16(nextafterf(mid, INFINITY)) == h + 1, "h=%#x", h);
    }
}

/* Random floats across the half range: the result is a nearest half. */
TEST(quant_fp16_random_nearest) {
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rng_next();
        if (i & 1) /* concentrate on exponents half can represent */
            u = (u & 0x807fffff) | (uint32_t)(127 - 26 + (int)(rng_next() % 44)) << 23;
        float f = bits_to_float(u);
        if (isnan(f)) continue;
        uint16_t h = fr_fp32_to_fp16(f);
        CHECK(((h >> 15) & 1) == (u >> 31));
        if (fabsf(f) >= 65520.0f) {
            CHECK((h & 0x7fff) == 0x7c00);
            continue;
        }
        double err = fabs((double)f - half_value(h));
        uint16_t mag = h & 0x7fff;
        if (mag > 0) CHECK_MSG(err <= fabs((double)f - half_value((uint16_t)(h - 1))), "%a", (double)f);
        if (mag < 0x7bff) CHECK_MSG(err <= fabs((double)f - half_value((uint16_t)(h + 1))), "%a", (double)f);
    }
}

TEST(quant_bf16_conversions) {
    CHECK(fr_fp32_to_bf16(1.0f) == 0x3f80);
    CHECK(fr_fp32_to_bf16(-2.0f) == 0xc000);
    CHECK(fr_fp32_to_bf16(bits_to_float(0x7f7fffff)) == 0x7f80); /* FLT_MAX rounds to inf */
    CHECK(fr_fp32_to_bf16(INFINITY) == 0x7f80 && fr_fp32_to_bf16(-INFINITY) == 0xff80);
    CHECK(fr_fp32_to_bf16(bits_to_float(0x00008000)) == 0x0000); /* subnormal tie -> even */
    CHECK(fr_fp32_to_bf16(bits_to_float(0x00018000)) == 0x0002);
    CHECK(fr_fp32_to_bf16(bits_to_float(0x00010001)) == 0x0001); /* subnormals kept */
    uint16_t qn = fr_fp32_to_bf16(bits_to_float(0x7f800001));     /* signalling nan */
    CHECK((qn & 0x7f80) == 0x7f80 && (qn & 0x7f) != 0);
    CHECK(fr_bf16_to_fp32(0x3f80) == 1.0f && isnan(fr_bf16_to_fp32(0x7fc0)));
    /* Every finite bf16: exact round trip; midpoint to even; either side to nearer. */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80) == 0x7f80) continue;
        uint32_t u = h << 16;
        CHECK(float_to_bits(fr_bf16_to_fp32((uint16_t)h)) == u);
        CHECK(fr_fp32_to_bf16(bits_to_float(u)) == h);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        CHECK_MSG(fr_fp32_to_bf16(bits_to_float(u | 0x8000)) == even, "h=%#x", h);
        CHECK(fr_fp32_to_bf16(bits_to_float(u | 0x7fff)) == h);
        CHECK(fr_fp32_to_bf16(bits_to_float(u | 0x8001)) == (uint16_t)(h + 1));
    }
}

/* ---- traits table ------------------------------------------------------ */

TEST(quant_traits_table) {
    static const struct { uint32_t type; const char *name; int64_t blck; size_t bytes; int impl; int act; } t[] = {
        {FR_F32, "F32", 1, 4, 1, FR_F32},       {FR_F16, "F16", 1, 2, 1, FR_F16},
        {FR_BF16, "BF16", 1, 2, 1, FR_F32},     {FR_Q4_0, "Q4_0", 32, 18, 1, FR_Q8_0},
        {FR_Q4_1, "Q4_1", 32, 20, 1, FR_Q8_1},  {FR_Q8_0, "Q8_0", 32, 34, 1, FR_Q8_0},
        {FR_Q8_1, "Q8_1", 32, 36, 1, FR_Q8_1},  {FR_Q5_0, "Q5_0", 32, 22, 1, FR_Q8_0},
        {FR_Q5_1, "Q5_1", 32, 24, 0, FR_Q8_1},  {FR_Q2_K, "Q2_K", 256, 84, 0, FR_Q8_K},
        {FR_Q3_K, "Q3_K", 256, 110, 0, FR_Q8_K}, {FR_Q4_K, "Q4_K", 256, 144, 1, FR_Q8_K},
        {FR_Q5_K, "Q5_K", 256, 176, 0, FR_Q8_K}, {FR_Q6_K, "Q6_K", 256, 210, 1, FR_Q8_K},
        {FR_Q8_K, "Q8_K", 256, 292, 1, FR_Q8_K}, {FR_IQ4_NL, "IQ4_NL", 32, 18, 0, FR_Q8_0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const fr_type_traits *tt = fr_traits(t[i].type);
        CHECK(tt && !strcmp(tt->name, t[i].name));
        CHECK(tt->blck == t[i].blck && tt->bytes == t[i].bytes && tt->act_type == t[i].act);
        CHECK((tt->dequant != NULL) == t[i].impl);
        int has_dot = t[i].impl && t[i].type != FR_Q8_1 && t[i].type != FR_Q8_K;
        CHECK(!tt->dot == !has_dot && !tt->dot_rows == !has_dot && !tt->dot_tile == !has_dot);
        CHECK(!tt->dot_ref == !has_dot && !tt->dot_rows_ref == !has_dot && !tt->dot_tile_ref == !has_dot);
    }
    CHECK(sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20);
    CHECK(sizeof(block_q8_0) == 34 && sizeof(block_q8_1) == 36);
    CHECK(sizeof(block_q5_0) == 22 && sizeof(block_q4_K) == 144 && sizeof(block_q6_K) == 210);
    CHECK(sizeof(block_q8_K) == 292 && fr_traits(FR_Q8_K)->dot == NULL);
    CHECK(!fr_traits(4) && !fr_traits(5) && !fr_traits(31) && !fr_traits(40) && !fr_traits(99999));
    CHECK(fr_traits(FR_Q8_1)->dot == NULL); /* activation-only */
    CHECK(fr_row_bytes(FR_Q4_1, 576) == 360 && fr_row_bytes(FR_Q8_0, 576) == 612);
    CHECK(fr_row_bytes(FR_F16, 7) == 14 && fr_row_bytes(FR_Q4_K, 512) == 288);
    CHECK(fr_row_bytes(77, 32) == 0);
}

/* ---- dequantization of hand-built blocks ----------------------------------- */

static int floats_equal(const float *a, const float *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

TEST(quant_dequant_q4_0) {
    /* block 0: d = 0.5, qs[j] = j | (15 - j) << 4; block 1: d = -2, all codes 8 -> 0, then 0 */
    uint8_t row[36] = {0x00, 0x38};
    for (int j = 0; j < 16; j++) row[2 + j] = (uint8_t)(j | (15 - j) << 4);
    row[18] = 0x00, row[19] = 0xc0;
    memset(row + 20, 0x08, 16); /* low nibble 8 (-> 0), high nibble 0 (-> -8) */
    static const float want[64] = {
        -4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5,
        3.5, 3, 2.5, 2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2, -2.5, -3, -3.5, -4,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    };
    float got[64];
    fr_traits(FR_Q4_0)->dequant(row, got, 64);
    CHECK(floats_equal(got, want, 64));
}

TEST(quant_dequant_q4_1) {
    /* d = 0.25, m = -1: x = q/4 - 1; qs[j] = (2j mod 16) | 15 << 4 */
    uint8_t row[20] = {0x00, 0x34, 0x00, 0xbc};
    for (int j = 0; j < 16; j++) row[4 + j] = (uint8_t)((2 * j) % 16 | 15 << 4);
    static const float want[32] = {
        -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5,
        2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75, 2.75,
    };
    float got[32];
    fr_traits(FR_Q4_1)->dequant(row, got, 32);
    CHECK(floats_equal(got, want, 32));
}

TEST(quant_dequant_q8) {
    /* Q8_0: d = 2, qs = -128, 127, -1, 0, 1, ...; Q8_1: d = 0.125, s ignored */
    uint8_t q80[34] = {0x00, 0x40}, q81[36] = {0x00, 0x30, 0x12, 0x34};
    int8_t qs[32];
    for (int j = 0; j < 32; j++) qs[j] = (int8_t)(j == 0 ? -128 : j == 1 ? 127 : j - 3);
    memcpy(q80 + 2, qs, 32);
    memcpy(q81 + 4, qs, 32);
    float want0[32], want1[32], got[32];
    want0[0] = -256, want0[1] = 254, want1[0] = -16, want1[1] = 15.875;
    for (int j = 2; j < 32; j++) want0[j] = 2.0f * (j - 3), want1[j] = 0.125f * (j - 3);
    fr_traits(FR_Q8_0)->dequant(q80, got, 32);
    CHECK(floats_equal(got, want0, 32));
    fr_traits(FR_Q8_1)->dequant(q81, got, 32);
    CHECK(floats_equal(got, want1, 32));
}

TEST(quant_dequant_float_types) {
    const uint16_t h[5] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x3555};
    const float hw[5] = {1, -2, 0x1p-24f, 65504, 0x1.554p-2f};
    const uint16_t b[4] = {0x3f80, 0xc040, 0x0001, 0x4049};
    const float bw[4] = {1, -3, 0x1p-133f, 3.140625f};
    const float f[3] = {1.5f, -0.0f, 1e30f};
    float got[5];
    fr_traits(FR_F16)->dequant(h, got, 5);
    CHECK(floats_equal(got, hw, 5));
    fr_traits(FR_BF16)->dequant(b, got, 4);
    CHECK(floats_equal(got, bw, 4));
    fr_traits(FR_F32)->dequant(f, got, 3);
    CHECK(floats_equal(got, f, 3) && signbit(got[1]));
}

/* ---- quantizers ------------------------------------------------------------ */

/* Quantize -> dequantize stays within half a step (plus fp16 rounding of the
 * scales), per block. */
TEST(quant_roundtrip_error) {
    const int n = 32 * 64;
    static float x[32 * 64], y[32 * 64];
    static uint8_t q[32 * 64 * 4];
    const uint32_t types[] = {FR_Q4_0, FR_Q4_1, FR_Q8_0, FR_Q8_1, FR_F16, FR_BF16, FR_F32};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const fr_type_traits *tt = fr_traits(types[t]);
        for (int trial = 0; trial < 4; trial++) {
            fill_random(x, n, trial == 3 ? 1000.0f : 1.0f);
            if (trial == 1) x[5] = 0; /* a block with an exact zero, one all zero */
            if (trial == 2) memset(x + 64, 0, 32 * sizeof(float));
            tt->quant(x, q, n);
            tt->dequant(q, y, n);
            for (int b = 0; b < n / 32; b++) {
                const float *xb = x + 32 * b, *yb = y + 32 * b;
                float lo = xb[0], hi = xb[0], amax = 0;
                for (int j = 0; j < 32; j++) {
                    lo = fminf(lo, xb[j]), hi = fmaxf(hi, xb[j]), amax = fmaxf(amax, fabsf(xb[j]));
                }
                for (int j = 0; j < 32; j++) {
                    double err = fabs((double)xb[j] - yb[j]), bound;
                    switch (types[t]) {
                    case FR_Q4_0: bound = amax / 8 * 1.01; break;   /* far side of zero: up to a full step */
                    case FR_Q4_1: bound = (hi - lo) / 15 * 0.52 + fabsf(lo) * 0x1p-10 + (hi - lo) * 0x1p-9; break;
                    case FR_Q8_0: case FR_Q8_1: bound = amax / 127 * 0.5 + amax * 0x1p-10; break;
                    case FR_F16: bound = fabsf(xb[j]) * 0x1p-11 + 0x1p-25; break;
                    case FR_BF16: bound = fabsf(xb[j]) * 0x1p-8; break;
                    default: bound = 0;
                    }
                    CHECK_MSG(err <= bound, "%s trial %d elem %d: %g vs %g", tt->name, trial, 32 * b + j,
                              (double)xb[j], (double)yb[j]);
                }
            }
        }
    }
}

/* Q8_1's s is fp16(d * sum(q)) with the fp32 d = amax / 127. */
TEST(quant_q8_1_s_field) {
    float x[32 * 8];
    block_q8_1 q[8];
    fill_random(x, 32 * 8, 3.0f);
    for (int j = 0; j < 32; j++) x[32 * 7 + j] = 0.5f; /* all equal: sum(q) = 32 * 127 */
    fr_traits(FR_Q8_1)->quant(x, q, 32 * 8);
    for (int b = 0; b < 8; b++) {
        float amax = 0;
        int sum = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j])), sum += q[b].qs[j];
        float d = amax / 127.0f;
        CHECK(q[b].d == fr_fp32_to_fp16(d));
        CHECK(q[b].s == fr_fp32_to_fp16((float)sum * d));
        CHECK_NEAR(fr_fp16_to_fp32(q[b].s), fr_fp16_to_fp32(q[b].d) * sum, fabs(sum * d) * 0x1p-9);
    }
    CHECK(q[7].qs[0] == 127 && fr_fp16_to_fp32(q[7].s) == fr_fp16_to_fp32(fr_fp32_to_fp16(16.0f)));
}

/* amax = 127 makes d = id = 1, so x.5 values are exact ties: roundf takes
 * them away from zero (nearest-even would give 2, -2, 0, 0). Every level's
 * quantizer must agree. */
TEST(quant_q8_ties_away_from_zero) {
    float x[32] = {127, 2.5f, -2.5f, 0.5f, -0.5f, 1.5f, -1.5f, 0.49999997f, -126.5f, 3.4999998f};
    static const int8_t want[10] = {127, 3, -3, 1, -1, 2, -2, 0, -127, 3};
    FOR_EACH_LEVEL(lvl) {
        block_q8_0 q0;
        block_q8_1 q1;
        fr_quantize_act(FR_Q8_0, x, &q0, 32);
        fr_quantize_act(FR_Q8_1, x, &q1, 32);
        for (int j = 0; j < 10; j++) {
            CHECK_MSG(q0.qs[j] == want[j], "%s: q[%d] = %d", fr_isa_name(lvl), j, q0.qs[j]);
            CHECK_MSG(q1.qs[j] == want[j], "%s: q[%d] = %d", fr_isa_name(lvl), j, q1.qs[j]);
        }
        CHECK(q0.d == 0x3c00 && q1.d == 0x3c00);
        CHECK(q1.s == fr_fp32_to_fp16(127 + 3 - 3 + 1 - 1 + 2 - 2 + 0 - 127 + 3));
    }
}

/* The SIMD activation quantizers produce the reference's bytes exactly. */
TEST(quant_act_simd_bit_identical) {
    enum { N = 32 * 70 };
    static float x[N];
    static uint8_t want[N * 4], got[N * 4 + 8];
    const uint32_t types[] = {FR_Q8_0, FR_Q8_1, FR_F16, FR_BF16, FR_F32};
    const int sizes[] = {32, 96, 32 * 33, N};
    const float scales[] = {1.0f, 1e-3f, 7.5f, 1e4f};
    FOR_EACH_LEVEL(lvl) {
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            const fr_type_traits *tt = fr_traits(types[t]);
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                for (size_t sc = 0; sc < sizeof scales / sizeof scales[0]; sc++) {
                    int n = sizes[s];
                    fill_random(x, n, scales[sc]);
                    memset(x + 32, 0, 32 * sizeof(float)); /* an all-zero block */
                    x[0] = -x[0] * 3;                      /* a negative amax */
                    size_t bytes = fr_row_bytes(types[t], n);
                    tt->quant(x, want, n);
                    int off = tt->blck > 1 ? 3 : 0;
                    fr_quantize_act(types[t], x, got + off, n);
                    CHECK_MSG(!memcmp(want, got + off, bytes), "%s %s n=%d scale %g",
                              fr_isa_name(lvl), tt->name, n, (double)scales[sc]);
                }
            }
        }
    }
}

/* ---- dot kernels ------------------------------------------------------------ */

/* dmin * m_j of sub-block j of a Q4_K block, decoded here from the
 * layout: m_j is the low 6 bits of scales[j + 4] for j < 4, else the high
 * nibble of scales[j + 4] with the top 2 bits of scales[j] above it. */
static double q4_k_min_term(const uint8_t *b, int j) {
    uint16_t h;
    memcpy(&h, b + 2, 2);
    const uint8_t *s = b + 4;
    int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    return (double)fr_fp16_to_fp32(h) * m;
}

/* Sum of |terms| the kernels add up, the scale of their float rounding:
 * from dequantized values, with Q4_1's d*q and m parts counted apart
 * (they are added separately and may cancel). */
static double abs_terms(uint32_t type, int64_t n, const void *w, const void *a) {
    const fr_type_traits *tw = fr_traits(type), *ta = fr_traits(tw->act_type);
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    tw->dequant(w, x, n);
    ta->dequant(a, y, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double wi = fabs(x[i]);
        if (type == FR_Q4_1) {
            uint16_t mh; /* block i/32's m, at byte 2 */
            memcpy(&mh, (const uint8_t *)w + (i / 32) * sizeof(block_q4_1) + 2, 2);
            float m = fr_fp16_to_fp32(mh);
            wi = fabs(x[i] - m) + fabs(m);
        }
        if (type == FR_Q4_K) { /* x = d sc q - dmin m: count dmin m apart */
            double m = q4_k_min_term((const uint8_t *)w + (i / 256) * sizeof(block_q4_K), (int)(i % 256 / 32));
            wi = fabs(x[i] + m) + fabs(m);
        }
        s += wi * fabs(y[i]);
    }
    free(x);
    free(y);
    return s;
}

/* Makes a weight row (reference quantizer) and an activation row. */
static void make_rows(uint32_t type, int64_t n, int rows, uint8_t *w, uint8_t *a) {
    const fr_type_traits *tw = fr_traits(type);
    float *x = malloc((size_t)n * sizeof(float));
    for (int r = 0; r < rows; r++) {
        fill_random(x, n, 0.1f + (float)r);
        /* K-quants: groups of 16 with their own spread and offset, so the
         * sub-block scales and mins differ (a kernel that mixed them up
         * would show) */
        if (tw->blck == 256)
            for (int64_t g = 0; g < n; g += 16) {
                float spread = 0.05f + fabsf(rng_float()), shift = rng_float() * (0.1f + (float)r);
                for (int l = 0; l < 16; l++) x[g + l] = x[g + l] * spread + shift;
            }
        tw->quant(x, w + (size_t)r * fr_row_bytes(type, n), n);
    }
    fill_random(x, n, 2.0f);
    fr_traits(tw->act_type)->quant(x, a, n);
    free(x);
}

static const uint32_t dot_types[] = {FR_F32, FR_F16, FR_BF16, FR_Q4_0, FR_Q4_1, FR_Q8_0,
                                     FR_Q5_0, FR_Q4_K, FR_Q6_K};

static int test_sizes(uint32_t type, const int64_t **sizes) {
    static const int64_t blocks[] = {32, 64, 96, 224, 256, 288, 544, 576, 1024, 1056, 1536, 2048, 2080, 4096};
    static const int64_t floats[] = {1, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 576, 1000, 1536};
    static const int64_t super[] = {256, 512, 768, 1024, 1280, 2048, 2304, 4096};
    if (fr_traits(type)->blck == 256) {
        *sizes = super;
        return (int)(sizeof super / sizeof super[0]);
    }
    *sizes = is_quantized(type) ? blocks : floats;
    return is_quantized(type) ? (int)(sizeof blocks / sizeof blocks[0]) : (int)(sizeof floats / sizeof floats[0]);
}

/* Every level's dot against the scalar reference, rows at several byte
 * offsets. */
TEST(quant_dot_kernels_match_reference) {
    enum { MAXN = 4096 };
    static uint8_t w[MAXN * 4], a[MAXN * 4], wb[MAXN * 4 + 16], ab[MAXN * 4 + 16];
    FOR_EACH_LEVEL(lvl) {
        for (size_t t = 0; t < sizeof dot_types / sizeof dot_types[0]; t++) {
            uint32_t type = dot_types[t];
            const fr_type_traits *tt = fr_traits(type);
            const int64_t *sizes;
            int ns = test_sizes(type, &sizes);
            for (int s = 0; s < ns; s++) {
                int64_t n = sizes[s];
                make_rows(type, n, 1, w, a);
                float want = tt->dot_ref(n, w, a);
                double tol = 1e-5 * abs_terms(type, n, w, a) + 1e-30;
                const int *ow = row_offsets(type), *oa = row_offsets(tt->act_type);
                for (int i = 0; ow[i] >= 0; i++) {
                    memcpy(wb + ow[i], w, fr_row_bytes(type, n));
                    memcpy(ab + oa[i], a, fr_row_bytes(tt->act_type, n));
                    float got = tt->dot(n, wb + ow[i], ab + oa[i]);
                    CHECK_MSG(fabs((double)got - want) <= tol, "%s %s n=%lld off %d: %.9g vs %.9g (tol %g)",
                              fr_isa_name(lvl), tt->name, (long long)n, ow[i], (double)got, (double)want, tol);
                }
            }
        }
    }
}

/* Extreme codes: full-scale weights against full-scale activations, where
 * an overflowing 16-bit intermediate would show. */
TEST(quant_dot_extreme_codes) {
    enum { NB = 9 };
    static block_q8_0 w8[NB], a8[NB];
    static block_q4_0 w40[NB];
    static block_q4_1 w41[NB];
    static block_q8_1 a81[NB];
    for (int b = 0; b < NB; b++) {
        w8[b].d = a8[b].d = w40[b].d = w41[b].d = a81[b].d = 0x3c00;
        w41[b].m = 0xbc00;
        a81[b].s = fr_fp32_to_fp16((b & 1 ? -127.0f : 127.0f) * 32);
        for (int j = 0; j < 32; j++) {
            w8[b].qs[j] = (int8_t)(b % 3 == 0 ? -128 : b % 3 == 1 ? 127 : -127);
            a8[b].qs[j] = a81[b].qs[j] = (int8_t)(b & 1 ? -127 : 127);
        }
        memset(w40[b].qs, b & 2 ? 0x00 : 0xff, 16); /* codes 0 (-8) or 15 (7) */
        memset(w41[b].qs, 0xff, 16);
    }
    FOR_EACH_LEVEL(lvl) {
        for (int nb = 1; nb <= NB; nb++) {
            int64_t n = 32 * nb;
            CHECK(fr_traits(FR_Q8_0)->dot(n, w8, a8) == fr_traits(FR_Q8_0)->dot_ref(n, w8, a8));
            CHECK(fr_traits(FR_Q4_0)->dot(n, w40, a8) == fr_traits(FR_Q4_0)->dot_ref(n, w40, a8));
            CHECK(fr_traits(FR_Q4_1)->dot(n, w41, a81) == fr_traits(FR_Q4_1)->dot_ref(n, w41, a81));
        }
        /* Q8_0's multi-row, tile and (where the level packs it) packed
         * kernels, on 16 copies of the row: the sums are exact integers */
        const fr_type_traits *t8 = fr_traits(FR_Q8_0);
        static uint8_t p8[16 * sizeof w8];
        float want = t8->dot_ref(32 * NB, w8, a8), rows[16], tile[2 * 16];
        t8->dot_rows(32 * NB, w8, 0, a8, rows, 16);
        for (int r = 0; r < 16; r++) CHECK(rows[r] == want);
        t8->dot_tile(32 * NB, w8, 0, 16, a8, 0, 2, tile, 16);
        for (int r = 0; r < 32; r++) CHECK(tile[r] == want);
        if (t8->pack) {
            t8->pack(32 * NB, w8, 0, 16, p8);
            t8->dot_packed(32 * NB, p8, 16, a8, 0, 2, tile, 16);
            for (int r = 0; r < 32; r++) CHECK_MSG(tile[r] == want, "%s: packed %g vs %g", fr_isa_name(lvl),
                                                   (double)tile[r], (double)want);
        }
        /* one block of each: exact integers the reference can spell out */
        CHECK(fr_traits(FR_Q8_0)->dot(32, w8, a8) == -128.0f * 127 * 32);
        CHECK(fr_traits(FR_Q4_0)->dot(32, w40, a8) == 7.0f * 127 * 32);
    }
}

/* Multi-row kernels: each out[r] matches the reference dot of row r, for
 * row counts around the kernels' group of 4, strides with odd padding. */
TEST(quant_dot_rows_match_reference) {
    enum { MAXN = 1536, MAXR = 9 };
    static uint8_t w[MAXR * MAXN * 4], a[MAXN * 4], wb[MAXR * (MAXN * 4 + 8) + 16], ab[MAXN * 4 + 16];
    const int64_t qsizes[] = {32, 96, 288, 576, 1056, 1536}, fsizes[] = {7, 64, 100, 576};
    const int64_t ksizes[] = {256, 768, 1024, 1536};
    FOR_EACH_LEVEL(lvl) {
        for (size_t t = 0; t < sizeof dot_types / sizeof dot_types[0]; t++) {
            uint32_t type = dot_types[t];
            const fr_type_traits *tt = fr_traits(type);
            int k = tt->blck == 256;
            const int64_t *sizes = k ? ksizes : is_quantized(type) ? qsizes : fsizes;
            int ns = k ? 4 : is_quantized(type) ? 6 : 4;
            for (int s = 0; s < ns; s++) {
                int64_t n = sizes[s];
                size_t rb = fr_row_bytes(type, n);
                make_rows(type, n, MAXR, w, a);
                int pad = is_quantized(type) ? 3 : (int)(tt->bytes * 2);
                for (int nr = 1; nr <= MAXR; nr++) {
                    for (int stride_pad = 0; stride_pad <= pad; stride_pad += pad) {
                        size_t stride = rb + (size_t)stride_pad;
                        int off = is_quantized(type) ? 1 : 0;
                        for (int r = 0; r < nr; r++) memcpy(wb + off + r * stride, w + r * rb, rb);
                        memcpy(ab + off, a, fr_row_bytes(tt->act_type, n));
                        float out[MAXR], ref[MAXR];
                        tt->dot_rows(n, wb + off, stride, ab + off, out, nr);
                        tt->dot_rows_ref(n, wb + off, stride, ab + off, ref, nr);
                        for (int r = 0; r < nr; r++) {
                            float want = tt->dot_ref(n, w + r * rb, a);
                            double tol = 1e-5 * abs_terms(type, n, w + r * rb, a) + 1e-30;
                            CHECK(ref[r] == want);
                            CHECK_MSG(fabs((double)out[r] - want) <= tol, "%s %s n=%lld nr=%d r=%d: %g vs %g",
                                      fr_isa_name(lvl), tt->name, (long long)n, nr, r, (double)out[r],
                                      (double)want);
                        }
                    }
                }
            }
        }
    }
}

/* Tile kernels (prefill): out[c * ldo + r] matches the reference dot of
 * row r with activation c, for small tiles (the panels of 16 are checked
 * against dot_rows below), and entries outside the tile stay untouched. */
TEST(quant_dot_tile_match_reference) {
    enum { MAXN = 1056, MAXR = 6, MAXC = 5, LDO = MAXR + 3 };
    static uint8_t w[MAXR * MAXN * 4], a[MAXC * MAXN * 4], x[MAXN * 4];
    static uint8_t wb[MAXR * (MAXN * 4 + 8) + 16], ab[MAXC * (MAXN * 4 + 8) + 16];
    const int64_t qsizes[] = {32, 96, 576, 1056}, fsizes[] = {7, 100}, ksizes[] = {256, 768, 1024};
    FOR_EACH_LEVEL(lvl) {
        for (size_t t = 0; t < sizeof dot_types / sizeof dot_types[0]; t++) {
            uint32_t type = dot_types[t];
            const fr_type_traits *tt = fr_traits(type);
            int q = is_quantized(type), k = tt->blck == 256;
            for (int s = 0; s < (k ? 3 : q ? 4 : 2); s++) {
                int64_t n = k ? ksizes[s] : q ? qsizes[s] : fsizes[s];
                size_t rb = fr_row_bytes(type, n), ab_row = fr_row_bytes(tt->act_type, n);
                for (int c = 0; c < MAXC; c++) { /* MAXC activation rows, one weight row set */
                    make_rows(type, n, c == 0 ? MAXR : 0, w, x);
                    memcpy(a + c * ab_row, x, ab_row);
                }
                /* odd padding between rows for block types, element padding otherwise */
                size_t ws = rb + (q ? 3 : tt->bytes), as = ab_row + (q ? 5 : fr_traits(tt->act_type)->bytes);
                int off = q ? 1 : 0;
                for (int r = 0; r < MAXR; r++) memcpy(wb + off + r * ws, w + r * rb, rb);
                for (int c = 0; c < MAXC; c++) memcpy(ab + off + c * as, a + c * ab_row, ab_row);
                for (int nr = 1; nr <= MAXR; nr++) {
                    for (int nc = 1; nc <= MAXC; nc++) {
                        float out[MAXC * LDO];
                        for (int i = 0; i < MAXC * LDO; i++) out[i] = 12345.0f;
                        tt->dot_tile(n, wb + off, ws, nr, ab + off, as, nc, out, LDO);
                        for (int c = 0; c < MAXC; c++) {
                            for (int r = 0; r < LDO; r++) {
                                float got = out[c * LDO + r];
                                if (c >= nc || r >= nr) {
                                    CHECK_MSG(got == 12345.0f, "%s %s: wrote outside the tile", fr_isa_name(lvl), tt->name);
                                    continue;
                                }
                                float want = tt->dot_ref(n, w + r * rb, a + c * ab_row);
                                double tol = 1e-5 * abs_terms(type, n, w + r * rb, a + c * ab_row) + 1e-30;
                                CHECK_MSG(fabs((double)got - want) <= tol, "%s %s n=%lld %dx%d (%d,%d): %g vs %g",
                                          fr_isa_name(lvl), tt->name, (long long)n, nr, nc, r, c,
                                          (double)got, (double)want);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Tile kernels against the multi-row kernel, bit for bit: prefill (a tile
 * over all tokens) must give each token exactly what decode (dot_rows over
 * the same rows) gives it, so that batched and chunked evaluation equal
 * token-by-token evaluation. Row counts 1..9 and token counts around the
 * kernels' tiles and panels (several panels for the longer rows; rows so
 * long that a panel holds one token, or none), rows at odd addresses and
 * odd strides. */
TEST(quant_dot_tile_bit_identical_to_dot_rows) {
    enum { MAXN = 16384, MAXR = 9, MAXC = 40, LDO = MAXR + 2 };
    static const int ncs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 23, 33, 40};
    static uint8_t w[MAXR * MAXN * 4], a[MAXC * MAXN * 4], x[MAXN * 4];
    static uint8_t wb[MAXR * (MAXN * 4 + 8) + 16], ab[MAXC * (MAXN * 4 + 8) + 16];
    static float out[MAXC * LDO], ref[MAXR];
    const int64_t qsizes[] = {32, 96, 288, 576, 640, 1056, 1536, 8192, 16384}, fsizes[] = {7, 100};
    const int64_t ksizes[] = {256, 1024, 1536};
    FOR_EACH_LEVEL(lvl) {
        for (size_t t = 0; t < sizeof dot_types / sizeof dot_types[0]; t++) {
            uint32_t type = dot_types[t];
            const fr_type_traits *tt = fr_traits(type);
            int q = is_quantized(type), k = tt->blck == 256;
            for (int s = 0; s < (k ? 3 : q ? 9 : 2); s++) {
                int64_t n = k ? ksizes[s] : q ? qsizes[s] : fsizes[s];
                size_t rb = fr_row_bytes(type, n), ab_row = fr_row_bytes(tt->act_type, n);
                for (int c = 0; c < MAXC; c++) {
                    make_rows(type, n, c == 0 ? MAXR : 0, w, x);
                    memcpy(a + c * ab_row, x, ab_row);
                }
                size_t ws = rb + (q ? 5 : tt->bytes), as = ab_row + (q ? 3 : fr_traits(tt->act_type)->bytes);
                int off = q ? 3 : 0;
                for (int r = 0; r < MAXR; r++) memcpy(wb + off + r * ws, w + r * rb, rb);
                for (int c = 0; c < MAXC; c++) memcpy(ab + off + c * as, a + c * ab_row, ab_row);
                int big = n > 1536; /* the long rows: a few shapes */
                for (int nr = big ? 5 : 1; nr <= (big ? 5 : MAXR); nr++) {
                    for (size_t ic = 0; ic < sizeof ncs / sizeof ncs[0]; ic++) {
                        int nc = ncs[ic], bad = 0;
                        if (big && nc != 3 && nc != 17) continue;
                        for (int i = 0; i < MAXC * LDO; i++) out[i] = 12345.0f;
                        tt->dot_tile(n, wb + off, ws, nr, ab + off, as, nc, out, LDO);
                        for (int c = 0; c < MAXC && !bad; c++) {
                            if (c < nc) tt->dot_rows(n, wb + off, ws, ab + off + c * as, ref, nr);
                            for (int r = 0; r < LDO; r++) {
                                float got = out[c * LDO + r];
                                if (c >= nc || r >= nr) bad |= got != 12345.0f;
                                else bad |= memcmp(&got, &ref[r], sizeof got) != 0;
                            }
                        }
                        CHECK_MSG(!bad, "%s %s n=%lld %dx%d: tile differs from dot_rows", fr_isa_name(lvl),
                                  tt->name, (long long)n, nr, nc);
                    }
                }
            }
        }
    }
}

/* The block-exact scalar twins (the AMX level's arithmetic, and the AVX2
 * level's for Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K; the K-quants' sum
 * their super-blocks exactly) are dots
 * like the others: within rounding of the double-precision sum. At those
 * levels, dot, dot_rows and dot_tile give exactly its bits for every row
 * and token: row counts around the group of 16, token counts around the
 * panels and chunks, odd addresses and strides, long rows. A kernel that
 * summed in another order, or skipped a row of a group, fails. */
static bool block_exact_at(int level, uint32_t type) {
    return level == FR_ISA_AMX || (level == FR_ISA_AVX2 && (type == FR_Q4_0 || type == FR_Q4_1 || type == FR_Q5_0 ||
                                                            type == FR_Q8_0 || type == FR_Q4_K || type == FR_Q6_K));
}

TEST(quant_block_exact_levels) {
    enum { MAXN = 2048, MAXR = 35, MAXC = 70, LDO = MAXR + 1 };
    static const uint32_t types[] = {FR_Q4_0, FR_Q4_1, FR_Q5_0, FR_Q8_0, FR_Q4_K, FR_Q6_K};
    static const int nrs[] = {1, 5, 15, 16, 17, 33, 35}, ncs[] = {1, 2, 3, 4, 16, 17, 40, 64, 65, 70};
    static const int64_t sizes[] = {32, 64, 96, 576, 2048}, ksizes[] = {256, 512, 768, 2048};
    static uint8_t w[MAXR * MAXN * 2], a[MAXC * MAXN * 2], x[MAXN * 2];
    static uint8_t wb[MAXR * (MAXN * 2 + 8) + 16], ab[MAXC * (MAXN * 2 + 8) + 16];
    static float out[MAXC * LDO], ref[MAXR];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const fr_type_traits *tt = fr_traits(types[t]);
        fr_dot_fn exact = fr_dot_exact_ref(types[t]);
        CHECK(exact != NULL);
        const int k = tt->blck == 256;
        for (size_t s = 0; s < (k ? 4 : sizeof sizes / sizeof sizes[0]); s++) {
            int64_t n = k ? ksizes[s] : sizes[s];
            size_t rb = fr_row_bytes(types[t], n), arb = fr_row_bytes(tt->act_type, n);
            make_rows(types[t], n, MAXR, w, x);
            for (int c = 0; c < MAXC; c++) {
                make_rows(types[t], n, 0, w + MAXR * rb, x); /* fresh activations */
                memcpy(a + c * arb, x, arb);
            }
            for (int r = 0; r < MAXR; r++) {
                float got = exact(n, w + r * rb, a);
                double tol = 1e-5 * abs_terms(types[t], n, w + r * rb, a) + 1e-30;
                CHECK_MSG(fabs((double)got - tt->dot_ref(n, w + r * rb, a)) <= tol, "%s n=%lld r=%d", tt->name,
                          (long long)n, r);
            }
            size_t ws = rb + 7, as = arb + 3;
            for (int r = 0; r < MAXR; r++) memcpy(wb + 1 + r * ws, w + r * rb, rb);
            for (int c = 0; c < MAXC; c++) memcpy(ab + 5 + c * as, a + c * arb, arb);
            FOR_EACH_LEVEL(lvl) {
            if (!block_exact_at(lvl, types[t])) continue;
            for (int r = 0; r < MAXR; r += 7) {
                float got = tt->dot(n, wb + 1 + r * ws, ab + 5 + r * as), want = exact(n, w + r * rb, a + r * arb);
                CHECK_MSG(!memcmp(&got, &want, sizeof got), "%s %s n=%lld: dot is not the exact twin", fr_isa_name(lvl),
                          tt->name, (long long)n);
            }
            for (size_t ir = 0; ir < sizeof nrs / sizeof nrs[0]; ir++) {
                int nr = nrs[ir];
                tt->dot_rows(n, wb + 1, ws, ab + 5, ref, nr);
                int bad = 0;
                for (int r = 0; r < nr; r++) {
                    float want = exact(n, w + r * rb, a);
                    bad |= memcmp(&ref[r], &want, sizeof want) != 0;
                }
                CHECK_MSG(!bad, "%s %s n=%lld nr=%d: dot_rows is not the exact twin", fr_isa_name(lvl), tt->name,
                          (long long)n, nr);
                for (size_t ic = 0; ic < sizeof ncs / sizeof ncs[0]; ic++) {
                    int nc = ncs[ic];
                    for (int i = 0; i < MAXC * LDO; i++) out[i] = 12345.0f;
                    tt->dot_tile(n, wb + 1, ws, nr, ab + 5, as, nc, out, LDO);
                    for (int c = 0; c < MAXC && !bad; c++)
                        for (int r = 0; r < LDO; r++) {
                            float got = out[c * LDO + r];
                            if (c >= nc || r >= nr) { bad |= got != 12345.0f; continue; }
                            float want = exact(n, w + r * rb, a + c * arb);
                            bad |= memcmp(&got, &want, sizeof got) != 0;
                        }
                    CHECK_MSG(!bad, "%s %s n=%lld %dx%d: dot_tile is not the exact twin", fr_isa_name(lvl), tt->name,
                              (long long)n, nr, nc);
                }
            }
            }
        }
    }
}

/* Weights packed at load (quant.h's groups of 16 rows), at the levels
 * that have packed kernels (Q4_1 at AVX2 and AMX, Q4_0, Q5_0, Q8_0 and
 * Q4_K at AVX2): for every token count
 * (the AMX rows kernel below 4, panels and chunks, the last panel short)
 * and group count, dot_packed gives the exact twin's bits, from rows read
 * at an odd stride and activations at an odd address. A packing that put
 * one code, scale or min in the wrong place, or a kernel that summed in
 * another order, fails. The other levels and types pack nothing (the
 * AVX-512 level's own dots have other bits than the AVX2 level's packed
 * ones). */
TEST(quant_packed_is_block_exact) {
    enum { MAXN = 2048, MAXR = 48, MAXC = 150, LDO = MAXR + 3 };
    static const int nrs[] = {16, 32, 48}, ncs[] = {1, 2, 3, 4, 5, 8, 15, 16, 17, 40, 64, 65, 128, 129, 150};
    static const int64_t sizes[] = {32, 64, 96, 576, 2048, 2080}, ksizes[] = {256, 512, 2048, 2304};
    enum { ROWB = (MAXN + 32) * 2 }; /* room for a row of any type (Q8_0: 34 bytes per 32) */
    static uint8_t w[MAXR * ROWB], a[MAXC * ROWB], x[ROWB], wb[MAXR * (ROWB + 8)];
    static uint8_t ab[MAXC * (ROWB + 8) + 8], packed[MAXR * ROWB + 64];
    static float out[MAXC * LDO];
    int packed_levels = 0;
    FOR_EACH_LEVEL(level) {
    for (uint32_t t = 0; t < FR_TYPE_COUNT; t++) {
        const bool packs = (t == FR_Q4_1 && (level == FR_ISA_AVX2 || level == FR_ISA_AMX)) ||
                           ((t == FR_Q4_0 || t == FR_Q5_0 || t == FR_Q8_0 || t == FR_Q4_K) && level == FR_ISA_AVX2);
        if (fr_traits(t)) CHECK_MSG(!fr_traits(t)->pack == !packs && !fr_traits(t)->dot_packed == !packs,
                                    "%s %s", fr_isa_name(level), fr_traits(t)->name);
    }
    packed_levels += fr_traits(FR_Q4_1)->pack != NULL;
    for (uint32_t type = 0; type < FR_TYPE_COUNT; type++) {
        const fr_type_traits *tt = fr_traits(type);
        if (!tt || !tt->pack) continue;
        CHECK(tt->dot_packed != NULL);
        fr_dot_fn exact = fr_dot_exact_ref(type);
        CHECK(exact != NULL);
        const int k = tt->blck == QK_K;
        for (size_t s = 0; s < (k ? sizeof ksizes : sizeof sizes) / sizeof sizes[0]; s++) {
            int64_t n = k ? ksizes[s] : sizes[s];
            size_t rb = fr_row_bytes(type, n), arb = fr_row_bytes(tt->act_type, n);
            make_rows(type, n, MAXR, w, x);
            for (int c = 0; c < MAXC; c++) {
                make_rows(type, n, 0, wb, x); /* fresh activations */
                memcpy(a + c * arb, x, arb);
            }
            size_t ws = rb + 5, as = arb + 3;
            for (int r = 0; r < MAXR; r++) memcpy(wb + 1 + r * ws, w + r * rb, rb);
            for (int c = 0; c < MAXC; c++) memcpy(ab + 7 + c * as, a + c * arb, arb);
            tt->pack(n, wb + 1, ws, MAXR, packed + 64);
            for (size_t ir = 0; ir < sizeof nrs / sizeof nrs[0]; ir++)
                for (size_t ic = 0; ic < sizeof ncs / sizeof ncs[0]; ic++) {
                    int nr = nrs[ir], nc = ncs[ic], bad = 0;
                    for (int i = 0; i < MAXC * LDO; i++) out[i] = 12345.0f;
                    /* the last groups: a range that does not start at row 0 */
                    int r0 = MAXR - nr;
                    tt->dot_packed(n, packed + 64 + (size_t)r0 * rb, nr, ab + 7, as, nc, out, LDO);
                    for (int c = 0; c < MAXC && !bad; c++)
                        for (int r = 0; r < LDO; r++) {
                            float got = out[c * LDO + r];
                            if (c >= nc || r >= nr) { bad |= got != 12345.0f; continue; }
                            float want = exact(n, w + (r0 + r) * rb, a + c * arb);
                            bad |= memcmp(&got, &want, sizeof got) != 0;
                        }
                    CHECK_MSG(!bad, "%s %s n=%lld %dx%d: dot_packed is not the exact twin", fr_isa_name(level),
                              tt->name, (long long)n, nr, nc);
                }
        }
    }
    }
    CHECK(packed_levels == (fr_isa_detect() >= FR_ISA_AVX2) + (fr_isa_detect() >= FR_ISA_AMX));
}

/* The prompt arithmetic (dot_prompt, AMX level): every output within
 * rounding of the scalar twin, so a weight or activation in the wrong
 * place fails; the same bits for a token however many tokens share the
 * call (chunks of 512, panels of 16, pairs of groups, the last ones
 * short); nothing written outside the nr x nc outputs. */
TEST(quant_prompt_matches_its_twin) {
    enum { MAXN = 1536, MAXR = 80, MAXC = 600, LDO = MAXR + 3 };
    static const int nrs[] = {16, 32, 48, 80}, ncs[] = {1, 2, 15, 16, 17, 31, 33, 48, 256, 513, 600};
    static const int64_t sizes[] = {32, 64, 576, 1536};
    static uint8_t w[MAXR * MAXN], wb[MAXR * (MAXN + 8)], packed[MAXR * MAXN + 64], unused[MAXN * 2];
    static float x[MAXN], out[MAXC * LDO], alone[LDO], deq[MAXR][MAXN];
    static uint16_t xh[MAXC * (MAXN + 5)];
    int saved = fr_kernels_isa();
    for (int level = FR_ISA_SCALAR; level < FR_ISA_AMX && level <= fr_isa_detect(); level++) {
        fr_kernels_select(level);
        CHECK(!fr_traits(FR_Q4_1)->dot_prompt);
    }
    CHECK(isnan(fr_dot_prompt_ref(FR_Q8_0, 32, w, xh)));
    if (fr_isa_detect() < FR_ISA_AMX) {
        fr_kernels_select(saved);
        return;
    }
    fr_kernels_select(FR_ISA_AMX);
    const fr_type_traits *tt = fr_traits(FR_Q4_1);
    CHECK(tt->dot_prompt != NULL);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        size_t rb = fr_row_bytes(FR_Q4_1, n), ws = rb + 5, xs = (size_t)n + 5;
        make_rows(FR_Q4_1, n, MAXR, w, unused);
        for (int c = 0; c < MAXC; c++) {
            fill_random(x, n, 0.5f + (float)(c % 7));
            fr_quantize_act(FR_BF16, x, xh + c * xs, n);
        }
        for (int r = 0; r < MAXR; r++) memcpy(wb + 1 + r * ws, w + r * rb, rb);
        for (int r = 0; r < MAXR; r++) tt->dequant(w + r * rb, deq[r], n);
        tt->pack(n, wb + 1, ws, MAXR, packed + 64);
        for (size_t ir = 0; ir < sizeof nrs / sizeof nrs[0]; ir++)
            for (size_t ic = 0; ic < sizeof ncs / sizeof ncs[0]; ic++) {
                int nr = nrs[ir], nc = ncs[ic], r0 = MAXR - nr, bad = 0, apart = 0;
                for (int i = 0; i < MAXC * LDO; i++) out[i] = 12345.0f;
                tt->dot_prompt(n, packed + 64 + (size_t)r0 * rb, nr, xh, xs * 2, nc, out, LDO);
                for (int c = 0; c < MAXC && !bad; c++)
                    for (int r = 0; r < LDO; r++) {
                        float got = out[c * LDO + r];
                        if (c >= nc || r >= nr) { bad |= got != 12345.0f; continue; }
                        float want = fr_dot_prompt_ref(FR_Q4_1, n, w + (r0 + r) * rb, xh + c * xs);
                        float scale = 0; /* sum of |w x|: what rounding is relative to */
                        for (int64_t e = 0; e < n; e++) scale += fabsf(deq[r0 + r][e] * fr_bf16_to_fp32(xh[c * xs + e]));
                        bad |= !(fabsf(got - want) <= 1e-6f * scale); /* seen: 1e-7 */
                    }
                for (int c = 0; c < nc && !bad && !apart; c += 13) {
                    tt->dot_prompt(n, packed + 64 + (size_t)r0 * rb, nr, xh + c * xs, xs * 2, 1, alone, LDO);
                    apart |= memcmp(alone, out + c * LDO, (size_t)nr * sizeof(float)) != 0;
                }
                CHECK_MSG(!bad, "n=%lld %dx%d: dot_prompt is not its twin", (long long)n, nr, nc);
                CHECK_MSG(!apart, "n=%lld %dx%d: a token's bits depend on the others", (long long)n, nr, nc);
            }
    }
    fr_kernels_select(saved);
}

/* ---- ISA selection ------------------------------------------------------------ */

TEST(quant_isa_selection) {
    int best = fr_isa_detect(), saved = fr_kernels_isa();
    CHECK(best >= FR_ISA_SCALAR && best <= FR_ISA_AMX);
    CHECK(fr_kernels_select(FR_ISA_SCALAR) == FR_ISA_SCALAR && fr_kernels_isa() == FR_ISA_SCALAR);
    CHECK(fr_traits(FR_Q4_1)->dot == fr_traits(FR_Q4_1)->dot_ref);
    CHECK(fr_kernels_select(99) == best);
    if (best > FR_ISA_SCALAR) CHECK(fr_traits(FR_Q4_1)->dot != fr_traits(FR_Q4_1)->dot_ref);
    CHECK(!strcmp(fr_isa_name(FR_ISA_SCALAR), "scalar") && !strcmp(fr_isa_name(FR_ISA_AVX2), "avx2"));
    CHECK(!strcmp(fr_isa_name(FR_ISA_AVX512), "avx512") && !strcmp(fr_isa_name(FR_ISA_AMX), "amx"));
    const char *old = getenv("FRUGAL_ISA");
    char *saved_env = old ? strdup(old) : NULL;
    setenv("FRUGAL_ISA", "scalar", 1);
    CHECK(fr_kernels_init_from_env() == FR_ISA_SCALAR);
    setenv("FRUGAL_ISA", "avx2", 1);
    CHECK(fr_kernels_init_from_env() == FR_MIN(FR_ISA_AVX2, best));
    setenv("FRUGAL_ISA", "avx512", 1);
    CHECK(fr_kernels_init_from_env() == FR_MIN(FR_ISA_AVX512, best));
    setenv("FRUGAL_ISA", "amx", 1);
    CHECK(fr_kernels_init_from_env() == best);
    unsetenv("FRUGAL_ISA");
    CHECK(fr_kernels_init_from_env() == best);
    if (saved_env) setenv("FRUGAL_ISA", saved_env, 1);
    free(saved_env);
    fr_kernels_select(saved);
}

/* ---- Q5_0, Q4_K, Q6_K, Q8_K ------------------------------------------------ */

/* fp16 bit patterns used below: 0.25, 0.5, 1, -2 */
enum { H_QUARTER = 0x3400, H_HALF = 0x3800, H_ONE = 0x3c00, H_MINUS2 = 0xc000 };

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Block 0: d = 0.5, qh = 0x0000ffff (5th bit on elements 0..15), qs[j] =
 * j | (15 - j) << 4. Block 1: d = -2, qh = 0x80000001, all nibbles 15. */
static void q5_0_hand_row(uint8_t row[44]) {
    memset(row, 0, 44);
    put16(row, H_HALF);
    row[2] = 0xff, row[3] = 0xff;
    for (int j = 0; j < 16; j++) row[6 + j] = (uint8_t)(j | (15 - j) << 4);
    put16(row + 22, H_MINUS2);
    row[24] = 0x01, row[27] = 0x80;
    memset(row + 28, 0xff, 16);
}

TEST(quant_dequant_q5_0) {
    uint8_t row[44];
    q5_0_hand_row(row);
    static const float want[64] = {
        0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5,
        -0.5, -1, -1.5, -2, -2.5, -3, -3.5, -4, -4.5, -5, -5.5, -6, -6.5, -7, -7.5, -8,
        -30, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
        2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, -30,
    };
    float got[64];
    fr_traits(FR_Q5_0)->dequant(row, got, 64);
    CHECK(floats_equal(got, want, 64));
}

/* d = 1, dmin = 0.5; the scale bytes encode sc = 1 2 3 63 17 32 48 5 and
 * m = 0 1 2 3 40 60 4 20 (worked out by hand from the layout; the top bits
 * and nibbles of sc4..7 and m4..7 all differ, so a mixed-up field shows);
 * chunk c's byte l is ((l + c) & 15) | (l >> 1) << 4. */
static const int hand_sc[8] = {1, 2, 3, 63, 17, 32, 48, 5}, hand_m[8] = {0, 1, 2, 3, 40, 60, 4, 20};

static void q4_k_hand_block(uint8_t b[144]) {
    static const uint8_t scales[12] = {0x41, 0x82, 0xc3, 0x3f, 0x80, 0xc1, 0x02, 0x43, 0x81, 0xc0, 0x40, 0x45};
    put16(b, H_ONE);
    put16(b + 2, H_HALF);
    memcpy(b + 4, scales, 12);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b[16 + 32 * c + l] = (uint8_t)(((l + c) & 15) | (l >> 1) << 4);
}

static void q4_k_hand_values(float x[256]) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            x[64 * c + l] = (float)(hand_sc[2 * c] * ((l + c) & 15)) - 0.5f * hand_m[2 * c];
            x[64 * c + 32 + l] = (float)(hand_sc[2 * c + 1] * (l >> 1)) - 0.5f * hand_m[2 * c + 1];
        }
}

TEST(quant_dequant_q4_k) {
    uint8_t b[144];
    float want[256], got[256];
    q4_k_hand_block(b);
    q4_k_hand_values(want);
    fr_traits(FR_Q4_K)->dequant(b, got, 256);
    CHECK(floats_equal(got, want, 256));
    /* spelled out: element (value) */
    static const struct { int e; float v; } spot[] = {
        {0, 0}, {33, -0.5f}, {69, 17}, {127, 943.5f}, {138, 184}, {164, 34}, {223, 94}, {255, 65},
    };
    for (size_t i = 0; i < sizeof spot / sizeof spot[0]; i++)
        CHECK_MSG(got[spot[i].e] == spot[i].v, "element %d: %g", spot[i].e, (double)got[spot[i].e]);
}

/* d = 0.25, scales 127, -13, -11, ..., 13 (2k - 15), -128; all codes 0
 * (x = -8 sc) except a few set through ql[5], ql[37], qh[5] = 0xe4 (bit
 * pairs 0, 1, 2, 3) in the first half and ql[64] = qh[32] = 0xff in the
 * second. */
static void q6_k_hand_block(uint8_t b[210], float want[256]) {
    memset(b, 0, 210);
    b[5] = 0xa9, b[37] = 0x3c, b[128 + 5] = 0xe4, b[64] = 0xff, b[128 + 32] = 0xff;
    int8_t sc[16];
    for (int k = 0; k < 16; k++) sc[k] = (int8_t)(k == 0 ? 127 : k == 15 ? -128 : 2 * k - 15);
    memcpy(b + 192, sc, 16);
    put16(b + 208, H_QUARTER);
    for (int e = 0; e < 256; e++) want[e] = -8.0f * sc[e / 16];
    static const struct { int e; float v; } spot[] = {
        {5, -730.25f}, /* code 9: 127 * -23 / 4 */
        {37, 11},      /* 12 | 1 << 4 = 28: -11 * -4 / 4 */
        {69, -17.5f},  /* 10 | 2 << 4 = 42: -7 * 10 / 4 */
        {101, -14.25f}, /* 3 | 3 << 4 = 51: -3 * 19 / 4 */
        {128, 7.75f},  /* 63: 1 * 31 / 4 */
        {160, 20},     /* 0 | 3 << 4 = 48: 5 * 16 / 4 */
        {192, 69.75f}, /* 63: 9 * 31 / 4 */
        {224, 52},     /* 48: 13 * 16 / 4 */
    };
    for (size_t i = 0; i < sizeof spot / sizeof spot[0]; i++) want[spot[i].e] = spot[i].v;
}

TEST(quant_dequant_q6_k) {
    uint8_t b[210];
    float want[256], got[256];
    q6_k_hand_block(b, want);
    fr_traits(FR_Q6_K)->dequant(b, got, 256);
    CHECK(floats_equal(got, want, 256));
    CHECK(got[0] == -1016 && got[255] == 1024);
}

static void q8_k_fields(const uint8_t *b, float *d, const int8_t **qs, int16_t bsums[16]) {
    memcpy(d, b, 4);
    *qs = (const int8_t *)(b + 4);
    memcpy(bsums, b + 260, 32);
}

/* ggml's rule: iscale = -127 / (first value of largest magnitude), codes
 * rounded to nearest even, d = 1 / iscale; checked at every level. */
TEST(quant_q8_k_rounding) {
    static float x[256 * 3];
    memset(x, 0, sizeof x);
    /* block 0: max 127 -> iscale -1, codes -x with ties to even */
    const float b0[9] = {127, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 1.5f, -126.5f, 100.25f};
    const int8_t q0[9] = {-127, -2, 2, -4, 0, 0, -2, 126, -100};
    memcpy(x, b0, sizeof b0);
    /* block 1: -4 comes before 4, so max = -4 and iscale = 31.75 */
    const float b1[6] = {-4, 4, 1, 2, -2, 0.0625f};
    const int8_t q1[6] = {-127, 127, 32, 64, -64, 2};
    memcpy(x + 256, b1, sizeof b1);
    /* block 2: all zero */
    static uint8_t y[292 * 3 + 1];
    FOR_EACH_LEVEL(lvl) {
        memset(y, 0x55, sizeof y);
        fr_quantize_act(FR_Q8_K, x, y + 1, 256 * 3);
        float d;
        const int8_t *qs;
        int16_t bs[16];
        q8_k_fields(y + 1, &d, &qs, bs);
        CHECK_MSG(d == -1.0f, "%s: d = %g", fr_isa_name(lvl), (double)d);
        for (int j = 0; j < 256; j++) CHECK_MSG(qs[j] == (j < 9 ? q0[j] : 0), "%s: q[%d] = %d", fr_isa_name(lvl), j, qs[j]);
        CHECK(bs[0] == -127 - 2 + 2 - 4 - 2 + 126 - 100);
        for (int k = 1; k < 16; k++) CHECK(bs[k] == 0);
        q8_k_fields(y + 1 + 292, &d, &qs, bs);
        CHECK(d == 1.0f / 31.75f);
        for (int j = 0; j < 256; j++) CHECK(qs[j] == (j < 6 ? q1[j] : 0));
        CHECK(bs[0] == -127 + 127 + 32 + 64 - 64 + 2);
        q8_k_fields(y + 1 + 584, &d, &qs, bs);
        CHECK(d == 0.0f && !signbit(d));
        for (int j = 0; j < 256; j++) CHECK(qs[j] == 0);
        for (int k = 0; k < 16; k++) CHECK(bs[k] == 0);
    }
}

/* The SIMD Q8_K quantizers produce the reference's bytes exactly, on random
 * rows of many scales, exact ties, +-amax pairs, zero blocks, a lone
 * nonzero value; and bsums are the sums of their 16 codes. */
TEST(quant_q8_k_simd_bit_identical) {
    enum { N = 256 * 9 };
    static float x[N];
    static uint8_t want[292 * 9], got[292 * 9 + 8];
    const int sizes[] = {256, 768, 2048, N};
    for (int trial = 0; trial < 60; trial++) {
        int n = sizes[trial % 4];
        fill_random(x, n, ldexpf(1.0f, trial % 31 - 15));
        if (trial % 5 == 1) /* many exact ties: multiples of 1/2 with amax 127 */
            for (int i = 0; i < n; i++) x[i] = i % 256 == 7 ? 127.0f : roundf(x[i] * 0x1p15f / ldexpf(1.0f, trial % 31 - 15)) * 0.5f;
        if (trial % 3 == 0) { /* +-amax in the same block, either first */
            x[17] = trial & 1 ? 40.0f : -40.0f, x[230] = -x[17];
            for (int j = 0; j < 256; j++) x[j] = fminf(fmaxf(x[j], -40.0f), 40.0f);
        }
        if (trial % 4 == 2) memset(x + 256, 0, 256 * sizeof(float));
        if (trial % 7 == 3) { memset(x, 0, 256 * sizeof(float)); x[255] = -1e-30f; }
        if (trial % 11 == 4) /* a block too small for a finite iscale: zero, like an all-zero one */
            for (int j = 0; j < 256; j++) x[j] = j == 9 ? -2e-37f : (float)j * 1e-40f;
        fr_traits(FR_Q8_K)->quant(x, want, n);
        if (trial % 11 == 4) {
            float d0;
            memcpy(&d0, want, 4);
            CHECK(d0 == 0 && want[4] == 0 && want[4 + 9] == 0);
        }
        for (int b = 0; b < n / 256; b++) {
            const uint8_t *blk = want + 292 * b;
            for (int k = 0; k < 16; k++) {
                int16_t bs;
                int sum = 0;
                memcpy(&bs, blk + 260 + 2 * k, 2);
                for (int l = 0; l < 16; l++) sum += (int8_t)blk[4 + 16 * k + l];
                CHECK(bs == sum);
            }
        }
        FOR_EACH_LEVEL(lvl) {
            int off = 1 + trial % 5;
            fr_quantize_act(FR_Q8_K, x, got + off, n);
            CHECK_MSG(!memcmp(want, got + off, fr_row_bytes(FR_Q8_K, n)), "%s trial %d n=%d", fr_isa_name(lvl), trial, n);
        }
    }
}

/* Quantize -> dequantize error of the reference weight quantizers, per
 * block: within a code step of the block's or sub-block's scale. */
TEST(quant_weight_quantizers_roundtrip) {
    enum { N = 256 * 8 };
    static float x[N], y[N];
    static uint8_t q[N];
    for (int trial = 0; trial < 6; trial++) {
        fill_random(x, N, trial == 5 ? 100.0f : 1.0f);
        for (int g = 0; g < N; g += 16) { /* varied groups */
            float spread = 0.05f + fabsf(rng_float()), shift = trial & 1 ? rng_float() : 0;
            for (int l = 0; l < 16; l++) x[g + l] = x[g + l] * spread + shift;
        }
        if (trial == 2) memset(x + 256, 0, 256 * sizeof(float));
        const uint32_t types[] = {FR_Q5_0, FR_Q4_K, FR_Q6_K};
        for (int t = 0; t < 3; t++) {
            const fr_type_traits *tt = fr_traits(types[t]);
            tt->quant(x, q, N);
            tt->dequant(q, y, N);
            int gs = types[t] == FR_Q5_0 ? 32 : types[t] == FR_Q4_K ? 32 : 16;
            for (int b = 0; b < N; b += (int)tt->blck) {
                float bmax = 0; /* largest |x| and largest sub-block range in the block */
                float rmax = 0;
                for (int g = b; g < b + tt->blck; g += gs) {
                    float lo = 0, hi = 0;
                    for (int l = 0; l < gs; l++) lo = fminf(lo, x[g + l]), hi = fmaxf(hi, x[g + l]);
                    rmax = fmaxf(rmax, hi - lo), bmax = fmaxf(bmax, fmaxf(hi, -lo));
                }
                for (int g = b; g < b + tt->blck; g += gs) {
                    float lo = 0, hi = 0, amax = 0;
                    for (int l = 0; l < gs; l++) {
                        lo = fminf(lo, x[g + l]), hi = fmaxf(hi, x[g + l]), amax = fmaxf(amax, fabsf(x[g + l]));
                    }
                    double bound;
                    if (types[t] == FR_Q5_0) bound = amax / 16 * 1.01;               /* far side: a full step */
                    else if (types[t] == FR_Q4_K) bound = (hi - lo) / 15 * 0.5 + rmax / 63 * 1.5 + bmax * 0x1p-9;
                    else bound = amax / 32 * 1.01 + bmax / 32 / 127 * 32 + bmax * 0x1p-9; /* + scale rounding */
                    for (int l = 0; l < gs; l++)
                        CHECK_MSG(fabs((double)x[g + l] - y[g + l]) <= bound, "%s trial %d elem %d: %g vs %g (bound %g)",
                                  tt->name, trial, g + l, (double)x[g + l], (double)y[g + l], bound);
                }
            }
        }
    }
}

/* Hand-built rows with exact answers (every value a multiple of 1/4 well
 * inside float's range), at every level and through all three entry points. */
TEST(quant_new_types_dot_literal) {
    /* Q5_0 (the hand row) . Q8_0 with d = 1, a_j = j - 16 in both blocks:
     * block 0 gives 0.5 sum j (j - 16) - 0.5 sum (j + 1) j = -1020, block 1
     * -30 * -16 + 2 * (465 - 480) - 30 * 15 = 0. */
    uint8_t w5[44], a8[68];
    q5_0_hand_row(w5);
    for (int b = 0; b < 2; b++) {
        put16(a8 + 34 * b, H_ONE);
        for (int j = 0; j < 32; j++) a8[34 * b + 2 + j] = (uint8_t)(int8_t)(j - 16);
    }
    /* K-quants against one Q8_K block: d = 0.5, codes (e * 7) % 41 - 20 */
    static uint8_t wk4[144], wk6[210], ak[292];
    float x4[256], x6[256];
    q4_k_hand_block(wk4);
    q4_k_hand_values(x4);
    q6_k_hand_block(wk6, x6);
    float da = 0.5f;
    memcpy(ak, &da, 4);
    int16_t bs[16] = {0};
    double want4 = 0, want6 = 0;
    for (int e = 0; e < 256; e++) {
        int8_t q = (int8_t)((e * 7) % 41 - 20);
        ak[4 + e] = (uint8_t)q;
        bs[e / 16] = (int16_t)(bs[e / 16] + q);
        want4 += (double)x4[e] * da * q;
        want6 += (double)x6[e] * da * q;
    }
    memcpy(ak + 260, bs, 32);
    FOR_EACH_LEVEL(lvl) {
        const uint32_t types[] = {FR_Q5_0, FR_Q4_K, FR_Q6_K};
        const void *ws[] = {w5, wk4, wk6}, *as[] = {a8, ak, ak};
        const double want[] = {-1020, want4, want6};
        const int64_t n[] = {64, 256, 256};
        for (int t = 0; t < 3; t++) {
            const fr_type_traits *tt = fr_traits(types[t]);
            float r1, r4[1], tile[1];
            r1 = tt->dot(n[t], ws[t], as[t]);
            tt->dot_rows(n[t], ws[t], 0, as[t], r4, 1);
            tt->dot_tile(n[t], ws[t], 0, 1, as[t], 0, 1, tile, 1);
            CHECK_MSG(r1 == want[t] && r4[0] == want[t] && tile[0] == want[t], "%s %s: %g %g %g, want %g",
                      fr_isa_name(lvl), tt->name, (double)r1, (double)r4[0], (double)tile[0], want[t]);
            CHECK(tt->dot_ref(n[t], ws[t], as[t]) == want[t]);
        }
    }
}

/* Full-scale codes, scales and activations (-128 included, which our
 * quantizers never produce but the kernels must take), where a saturating
 * or overflowing intermediate would show; many blocks of identical
 * content so integer sums run long. */
TEST(quant_new_types_dot_extremes) {
    enum { NB = 9 };
    static uint8_t w5[NB * 22], a8[NB * 34], w4[NB * 144], w6[NB * 210], ak[NB * 292];
    for (int v = 0; v < 4; v++) {
        int8_t av = v & 1 ? -128 : 127;
        for (int b = 0; b < NB; b++) {
            uint8_t *p = w5 + 22 * b, *a = a8 + 34 * b;
            put16(p, H_ONE);
            memset(p + 2, v & 2 ? 0x00 : 0xff, 20); /* codes 0 (-16) or 31 (15) */
            put16(a, H_ONE);
            memset(a + 2, (uint8_t)av, 32);
            p = w4 + 144 * b; /* sc = m = 63, codes 15 or 0 */
            put16(p, H_ONE), put16(p + 2, v & 2 ? H_ONE : H_HALF);
            memset(p + 4, 0xff, 12);
            memset(p + 16, v & 2 ? 0x00 : 0xff, 128);
            p = w6 + 210 * b; /* codes 63 or 0, scales 127 or -128 */
            memset(p, v & 2 ? 0x00 : 0xff, 192);
            memset(p + 192, v & 2 ? 0x80 : 0x7f, 16);
            put16(p + 208, H_ONE);
            a = ak + 292 * b;
            float d = 1;
            memcpy(a, &d, 4);
            memset(a + 4, (uint8_t)av, 256);
            for (int k = 0; k < 16; k++) {
                int16_t s = (int16_t)(16 * av);
                memcpy(a + 260 + 2 * k, &s, 2);
            }
        }
        FOR_EACH_LEVEL(lvl) {
            const uint32_t types[] = {FR_Q5_0, FR_Q4_K, FR_Q6_K};
            const uint8_t *ws[] = {w5, w4, w6}, *as[] = {a8, ak, ak};
            for (int t = 0; t < 3; t++) {
                const fr_type_traits *tt = fr_traits(types[t]);
                for (int nb = 1; nb <= NB; nb++) {
                    int64_t n = tt->blck * nb;
                    float want = tt->dot_ref(n, ws[t], as[t]), out[4], tile[2];
                    float got = tt->dot(n, ws[t], as[t]);
                    tt->dot_rows(n, ws[t], 0, as[t], out, 4); /* 4 copies of the row */
                    tt->dot_tile(n, ws[t], 0, 1, as[t], 0, 2, tile, 1);
                    double tol = fabs(want) * 1e-6;
                    CHECK_MSG(fabs(got - want) <= tol, "%s %s v%d nb=%d: %g vs %g", fr_isa_name(lvl), tt->name, v, nb,
                              (double)got, (double)want);
                    for (int r = 0; r < 4; r++) CHECK(fabs(out[r] - want) <= tol);
                    CHECK(fabs(tile[0] - want) <= tol && fabs(tile[1] - want) <= tol);
                }
            }
            /* one block, spelled out: Q6_K codes 0 x scale -128 x a -128:
             * 256 * (-32) * (-128) * (-128); Q4_K codes 15, dmin 0.5: 256 *
             * (63 * 15 - 31.5) * 127 */
            if (v == 3) CHECK(fr_traits(FR_Q6_K)->dot(256, w6, ak) == -32.0f * 128 * 128 * 256);
            if (v == 0) CHECK(fr_traits(FR_Q4_K)->dot(256, w4, ak) == (63.0f * 15 - 31.5f) * 127 * 256);
            if (v == 0) CHECK(fr_traits(FR_Q5_0)->dot(32, w5, a8) == 15.0f * 127 * 32);
        }
    }
}
