/*
 * ops.c - building blocks of the forward pass (see ops.h).
 *
 * Numerics follow llama.cpp's CPU path where it matters for agreement:
 * activations are quantized once per matmul input to the weight type's
 * activation format (Q8_0 / Q8_1), RMSNorm sums in double, RoPE angles are
 * advanced by repeated multiplication, and the KV cache is fp16.
 */
#include <math.h>
#include <string.h>
#include "ops.h"
#include "quant.h"

void fr_rmsnorm(float *y, const float *x, const float *w, int n, int d, float eps) {
    if (fr_kernels_isa() >= FR_ISA_AVX512) fr_rmsnorm_avx512(y, x, w, n, d, eps);
    else if (fr_kernels_isa() >= FR_ISA_AVX2) fr_rmsnorm_avx2(y, x, w, n, d, eps);
    else fr_rmsnorm_scalar(y, x, w, n, d, eps);
}

void fr_rmsnorm_scalar(float *y, const float *x, const float *w, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d;
        float *yr = y + (size_t)t * d;
        /* eight independent partial sums: one chain would wait on the
         * add latency for every element */
        double p[8] = {0};
        int i = 0;
        for (; i + 8 <= d; i += 8)
            for (int k = 0; k < 8; k++) p[k] += (double)xr[i + k] * xr[i + k];
        for (; i < d; i++) p[0] += (double)xr[i] * xr[i];
        double ss = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
        float scale = 1.0f / sqrtf((float)(ss / d) + eps);
        for (int i = 0; i < d; i++) yr[i] = xr[i] * scale * w[i];
    }
}

/* Angles: pair i of a token at position p turns by p * theta^(-2i/rope_dim),
 * advanced by repeated multiplication as llama.cpp does. */
void fr_rope_table(float *cs, int pos, int rope_dim, float theta) {
    float theta_scale = powf(theta, -2.0f / rope_dim), angle = (float)pos;
    for (int i = 0; i < rope_dim / 2; i++) {
        cs[2 * i] = cosf(angle);
        cs[2 * i + 1] = sinf(angle);
        angle *= theta_scale;
    }
}

/* NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX rotates (x[i],
 * x[i + rope_dim/2]). cs holds each token's table (rope_dim floats). */
void fr_rope(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind) {
    if (fr_kernels_isa() >= FR_ISA_AVX512 && rope_dim % 32 == 0) fr_rope_avx512(x, n, n_heads, head_dim, rope_dim, cs, kind);
    else if (fr_kernels_isa() >= FR_ISA_AVX2 && rope_dim % 16 == 0) fr_rope_avx2(x, n, n_heads, head_dim, rope_dim, cs, kind);
    else fr_rope_scalar(x, n, n_heads, head_dim, rope_dim, cs, kind);
}

void fr_rope_scalar(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind) {
    int half = rope_dim / 2;
    for (int t = 0; t < n; t++) {
        const float *c = cs + (size_t)t * rope_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                int a = kind == FR_ROPE_NEOX ? i : 2 * i;
                int b = kind == FR_ROPE_NEOX ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * c[2 * i] - x1 * c[2 * i + 1];
                v[b] = x0 * c[2 * i + 1] + x1 * c[2 * i];
            }
        }
    }
}

void fr_glu(float *a, const float *b, int64_t count, int act) {
    if (fr_kernels_isa() >= FR_ISA_AVX2) fr_glu_avx2(a, b, count, act);
    else fr_glu_scalar(a, b, count, act);
}

void fr_glu_scalar(float *a, const float *b, int64_t count, int act) {
    if (act == FR_ACT_SILU) {
        for (int64_t i = 0; i < count; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
    } else {
        const float k = 0.79788456080286535587989211986876f; /* sqrt(2/pi) */
        for (int64_t i = 0; i < count; i++) {
            float x = a[i];
            a[i] = 0.5f * x * (1.0f + tanhf(k * x * (1.0f + 0.044715f * x * x))) * b[i];
        }
    }
}

void fr_get_row(const fr_weight *w, int64_t r, float *out) {
    const fr_type_traits *tt = fr_traits(w->type);
    tt->dequant((const uint8_t *)w->data + (size_t)r * w->row_bytes, out, w->cols);
}
