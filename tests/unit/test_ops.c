/* Element-wise building blocks: the gated activations (scalar vs AVX2,
 * and against the textbook formulas), RMSNorm and RoPE on known values,
 * and their AVX-512 twins bit for bit against the scalar code. */
#include "ops.h"
#include "quant.h"
#include "unit.h"

TEST(ops_glu_matches_formulas_and_avx2_matches_scalar) {
    enum { N = 203 };
    float x[N], b[N], s[N], v[N];
    for (int act = FR_ACT_SILU; act <= FR_ACT_GELU_TANH; act++) {
        for (int i = 0; i < N; i++) { x[i] = (i - 101) * 0.37f; b[i] = 1.0f + (i % 7) * 0.25f; }
        x[0] = -95.0f; x[1] = 95.0f; /* beyond the exp clamp */
        memcpy(s, x, sizeof x);
        memcpy(v, x, sizeof x);
        fr_glu_scalar(s, b, N, act);
        for (int i = 0; i < N; i++) {
            double t = x[i], want = act == FR_ACT_SILU
                ? t / (1 + exp(-t)) * b[i]
                : 0.5 * t * (1 + tanh(0.7978845608028654 * (t + 0.044715 * t * t * t))) * b[i];
            CHECK_NEAR(s[i], want, 1e-5 * fabs(want) + 1e-6);
        }
        if (fr_isa_detect() < FR_ISA_AVX2) continue;
        fr_glu_avx2(v, b, N, act);
        for (int i = 0; i < N; i++) CHECK_NEAR(v[i], s[i], 2e-6 * fabs(s[i]) + 1e-6);
    }
}

TEST(ops_rmsnorm_known_values) {
    float x[4] = { 1, -2, 3, -4 }, w[4] = { 1, 1, 2, 0.5f }, y[4];
    fr_rmsnorm(y, x, w, 1, 4, 0.0f);
    float r = 1.0f / sqrtf(30.0f / 4);
    CHECK_NEAR(y[0], 1 * r, 1e-6);
    CHECK_NEAR(y[2], 6 * r, 1e-6);
    CHECK_NEAR(y[3], -2 * r, 1e-6);
}

TEST(ops_rope_rotates_pairs_and_halves) {
    float cs[4], a[4] = { 1, 0, 0, 1 }, b[4] = { 1, 0, 0, 1 };
    fr_rope_table(cs, 2, 4, 10000.0f);   /* pair 0 turns by 2 rad, pair 1 by 2/100 */
    CHECK_NEAR(cs[0], cosf(2.0f), 1e-6);
    CHECK_NEAR(cs[3], sinf(0.02f), 1e-6);
    fr_rope(a, 1, 1, 4, 4, cs, FR_ROPE_NORM); /* pairs (0,1), (2,3) */
    CHECK_NEAR(a[0], cosf(2.0f), 1e-6);
    CHECK_NEAR(a[1], sinf(2.0f), 1e-6);
    CHECK_NEAR(a[2], -sinf(0.02f), 1e-6);
    fr_rope(b, 1, 1, 4, 4, cs, FR_ROPE_NEOX); /* pairs (0,2), (1,3) */
    CHECK_NEAR(b[0], cosf(2.0f), 1e-6);
    CHECK_NEAR(b[2], sinf(2.0f), 1e-6);
    CHECK_NEAR(b[1], -sinf(0.02f), 1e-6);
}

enum { TWIN_MAX = 4 * 2 * 320 };

/* Activations over many magnitudes and norm weights, for the twins below. */
static void twin_inputs(float *x, float *w) {
    unsigned seed = 5;
    for (int i = 0; i < TWIN_MAX; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = ((int)(seed >> 8 & 0xffff) - 32768) * ldexpf(1.0f, (int)(seed >> 28) - 20);
        w[i] = 0.5f + (float)(i % 13) / 7;
    }
}

/* An RMSNorm twin gives the scalar code's bits: widths with and without
 * tails, in place and not. */
static void check_rmsnorm_twin(const char *name, void (*norm)(float *, const float *, const float *, int, int, float)) {
    static float x[TWIN_MAX], w[TWIN_MAX], a[TWIN_MAX], b[TWIN_MAX];
    twin_inputs(x, w);
    const int widths[] = { 576, 640, 100, 7, 16, 1536, 12 };
    for (size_t k = 0; k < sizeof widths / sizeof widths[0]; k++) {
        int d = widths[k], n = TWIN_MAX / d < 3 ? TWIN_MAX / d : 3;
        fr_rmsnorm_scalar(a, x, w, n, d, 1e-5f);
        norm(b, x, w, n, d, 1e-5f);
        CHECK_MSG(!memcmp(a, b, (size_t)n * d * sizeof(float)), "%s rmsnorm d=%d", name, d);
        memcpy(a, x, (size_t)n * d * sizeof(float));
        norm(a, a, w, n, d, 1e-5f); /* in place */
        CHECK_MSG(!memcmp(a, b, (size_t)n * d * sizeof(float)), "%s rmsnorm in place d=%d", name, d);
    }
}

/* A RoPE twin gives the scalar code's bits: both layouts, partial
 * rotation (rope_dim < head_dim). */
static void check_rope_twin(const char *name, void (*rope)(float *, int, int, int, int, const float *, int)) {
    static float x[TWIN_MAX], w[TWIN_MAX], a[TWIN_MAX], b[TWIN_MAX], cs[4 * 256];
    twin_inputs(x, w);
    const int shapes[][3] = { { 2, 64, 64 }, { 1, 256, 256 }, { 3, 96, 64 }, { 2, 128, 32 } }; /* heads, head_dim, rope_dim */
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int kind = FR_ROPE_NORM; kind <= FR_ROPE_NEOX; kind++) {
            int nh = shapes[k][0], hd = shapes[k][1], rd = shapes[k][2], n = 4;
            for (int t = 0; t < n; t++) fr_rope_table(cs + t * rd, 17 + 1000 * t, rd, 10000.0f);
            memcpy(a, x, (size_t)n * nh * hd * sizeof(float));
            memcpy(b, x, (size_t)n * nh * hd * sizeof(float));
            fr_rope_scalar(a, n, nh, hd, rd, cs, kind);
            rope(b, n, nh, hd, rd, cs, kind);
            CHECK_MSG(!memcmp(a, b, (size_t)n * nh * hd * sizeof(float)), "%s rope kind %d shape %zu", name, kind, k);
        }
}

/* The AVX-512 RMSNorm and RoPE give the scalar code's bits. */
TEST(ops_rmsnorm_and_rope_avx512_bit_identical) {
    if (fr_isa_detect() < FR_ISA_AVX512) return;
    check_rmsnorm_twin("avx512", fr_rmsnorm_avx512);
    check_rope_twin("avx512", fr_rope_avx512);
}

TEST(ops_rmsnorm_and_rope_avx2_bit_identical) {
    if (fr_isa_detect() < FR_ISA_AVX2) return;
    check_rmsnorm_twin("avx2", fr_rmsnorm_avx2);
    check_rope_twin("avx2", fr_rope_avx2);
}

TEST(ops_nonfinite_activations_quantize_as_zero) {
    /* only a broken model produces them; float-to-int of NaN/Inf would be
     * undefined, so they count as 0 (the rest of the row is unaffected),
     * at every level */
    uint32_t types[3] = { FR_Q8_0, FR_Q8_1, FR_Q8_K };
    FOR_EACH_LEVEL(lvl)
    for (int k = 0; k < 3; k++) {
        float x[512], z[512];
        for (int i = 0; i < 512; i++) x[i] = z[i] = sinf(i * 0.1f);
        x[3] = NAN; z[3] = 0;
        x[300] = INFINITY; z[300] = 0;
        x[301] = -INFINITY; z[301] = 0;
        uint8_t a[1024], b[1024];
        size_t bytes = fr_row_bytes(types[k], 512);
        fr_quantize_act(types[k], x, a, 512);
        fr_quantize_act(types[k], z, b, 512);
        CHECK_MSG(memcmp(a, b, bytes) == 0, "%s, type %u", fr_isa_name(lvl), types[k]);
        /* one Inf or NaN anywhere, in every lane of the finiteness check's
         * steps (one left to the quantizer would spoil its whole block) */
        for (int p = 0; p < 512; p += p < 32 ? 1 : 37) {
            for (int i = 0; i < 512; i++) x[i] = z[i] = sinf(i * 0.1f);
            x[p] = p % 3 == 0 ? -NAN : p & 1 ? INFINITY : -INFINITY, z[p] = 0;
            fr_quantize_act(types[k], x, a, 512);
            fr_quantize_act(types[k], z, b, 512);
            CHECK_MSG(memcmp(a, b, bytes) == 0, "%s, type %u, Inf or NaN at %d", fr_isa_name(lvl), types[k], p);
        }
    }
}
