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
/* Rotary embedding: the cos/sin table of one position (rope_dim floats),
 * and its application in place to n rows of n_heads heads of head_dim,
 * row t using table cs + t * rope_dim. */
void fr_rope_table(float *cs, int pos, int rope_dim, float theta);
void fr_rope(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind);
/* a = silu(a) * b (SwiGLU) or gelu_tanh(a) * b (GeGLU), count elements. */
void fr_glu(float *a, const float *b, int64_t count, int act);
void fr_add(float *x, const float *y, int64_t count); /* x += y */
void fr_scale(float *y, const float *x, float c, int64_t count); /* y = x c */
/* Its scalar reference and AVX2 twin (act_avx2.c). */
void fr_glu_scalar(float *a, const float *b, int64_t count, int act);
void fr_glu_avx2(float *a, const float *b, int64_t count, int act);
/* RMSNorm's and RoPE's scalar references and AVX-512 and AVX2 twins
 * (ops_avx512.c, ops_avx2.c: the same bits). */
void fr_rmsnorm_scalar(float *y, const float *x, const float *w, int n, int d, float eps);
void fr_rmsnorm_avx512(float *y, const float *x, const float *w, int n, int d, float eps);
void fr_rmsnorm_avx2(float *y, const float *x, const float *w, int n, int d, float eps);
void fr_rope_scalar(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind);
void fr_rope_avx512(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind);
void fr_rope_avx2(float *x, int n, int n_heads, int head_dim, int rope_dim, const float *cs, int kind);
/* Row r of a matrix as floats (embedding lookup). */
void fr_get_row(const fr_weight *w, int64_t r, float *out);

/* y[t][r] = W[r] . x[t] for n tokens; y is [n][w->rows]. */
void fr_matmul(frugal_ctx *ctx, const fr_weight *w, const float *x, int n, float *y);
/* Several matrices over the same input in one parallel step (Q, K, V):
 * the input is quantized once and the rows of all matrices are shared
 * out between the threads together. With norm, the input is
 * RMSNorm(x) * norm (computed into ctx->xb on the way). */
void fr_matmul_multi(frugal_ctx *ctx, const fr_weight *const *ws, float *const *ys, int nw,
                     const float *x, const float *norm, int n);
/* a = act(Wgate x) * (Wup x), the gated FFN input, fused: each thread
 * computes the same rows of both products and applies the activation
 * while they are in cache. a is [n][w_gate->rows]; tmp is scratch of the
 * same size. */
void fr_matmul_glu(frugal_ctx *ctx, const fr_weight *w_gate, const fr_weight *w_up, const float *x,
                   const float *norm, int n, float *a, float *tmp, int act);

/* Causal (and, for window layers, windowed) attention of n new tokens at
 * positions pos0.. over the layer's cache, which already holds them.
 * q: [n][n_head * head_dim], out: same shape. */
frugal_status fr_attention(frugal_ctx *ctx, fr_pool *pool, int layer, const float *q, int n, int pos0, float *out);
/* Attention of every run of a batch, in one pool run; each run's cache
 * must already hold its new keys and values. q: the batch's rows. keep:
 * NULL for every row, or per run how many of its last rows to compute
 * (the others only needed their keys and values cached); out: the rows
 * computed, run after run. */
frugal_status fr_attention_batch(frugal_ctx *ctx, const fr_batch *b, int layer, const float *q, const int *keep,
                                 float *out);

/* Attention primitives, scalar and AVX2 twins (attention.c, attn_avx2.c). */
typedef struct {
    void (*f16_to_f32)(const uint16_t *x, float *y, int n);
    void (*f32_to_f16)(const float *x, uint16_t *y, int n);
    float (*dot)(const float *a, const float *b, int n);
    void (*scale_add)(float *acc, float c, float p, const float *v, int n); /* acc = acc*c + p*v */
    float (*exp_sub)(float *s, float m, int n); /* s[i] = exp(s[i] - m); returns the sum */
    /* For each of nr rows r: acc[r][i] = acc[r][i] * c[r] + sum_p e[r][p] *
     * v[p * v_stride + i], i < n, p < np; a row's bits are the same in any
     * set of rows or alone. */
    void (*pv)(float *const *acc, const float *c, const float *const *e, int nr, const float *v, int v_stride, int np,
               int n);
    /* s[p] = scale * dot(q, k + p*k_stride, n), p < np; returns the largest */
    float (*dots)(const float *q, const float *k, int k_stride, int np, int n, float scale, float *s);
    /* pv on an fp16 page's values as stored (kv.h), converted as they
     * are read: the same bits as converting them first, and a row's the
     * same in any set of rows. dots_t_h: the scores of nr query rows q[r]
     * against an fp16 page's 32 keys as stored, channel-major (key p's
     * channel i is kt[i * FR_KV_PAGE + p]): s[r * FR_KV_PAGE + p] = scale *
     * q_r.k_p for every slot, a row's bits depending on that row alone.
     * ahead: the same values or keys of the page read next, requested as
     * these are read (NULL: none). */
    void (*pv_h)(float *const *acc, const float *c, const float *const *e, int nr, const uint16_t *v, int v_stride,
                 int np, int n, const uint16_t *ahead);
    void (*dots_t_h)(const float *const *q, int nr, const uint16_t *kt, int n, float scale, float *s,
                     const uint16_t *ahead);
} fr_attn_kernels;
extern const fr_attn_kernels fr_attn_scalar, fr_attn_avx2;

#endif
