/*
 * ops.h - the building blocks of the forward pass, each over a batch of
 * n tokens stored row after row: normalisation, rotary embedding,
 * activations, matrix multiplication and attention. Matmul and attention
 * run on the context's thread pool.
 */
#ifndef FR_OPS_H
#define FR_OPS_H

#include "model.h"

/* y[t] = x[t] / rms(x[t]) * w, for n rows of d (y may be x). */
void fr_rmsnorm(float *y, const float *x, const float *w, int n, int d, float eps);
/* Rotary embedding in place on n rows of n_heads heads of head_dim. */
void fr_rope(float *x, int n, int n_heads, int head_dim, int rope_dim, int pos0,
             float theta, int kind);
/* a = silu(a) * b (SwiGLU) or gelu_tanh(a) * b (GeGLU), count elements. */
void fr_glu(float *a, const float *b, int64_t count, int act);
/* Row r of a matrix as floats (embedding lookup). */
void fr_get_row(const fr_weight *w, int64_t r, float *out);

/* y[t][r] = W[r] . x[t] for n tokens; y is [n][w->rows]. */
void fr_matmul(frugal_ctx *ctx, const fr_weight *w, const float *x, int n, float *y);

/* Causal attention of n new tokens at positions pos0.. over the layer's
 * cache (which already holds them). q: [n][n_head*hd], out: same shape. */
void fr_attention(frugal_ctx *ctx, int layer, const float *q, int n, int pos0, float *out);

#endif
