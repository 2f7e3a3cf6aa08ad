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
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d;
        float *yr = y + (size_t)t * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        float scale = 1.0f / sqrtf((float)(ss / d) + eps);
        for (int i = 0; i < d; i++) yr[i] = xr[i] * scale * w[i];
    }
}

/* NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX rotates (x[i],
 * x[i + rope_dim/2]). Pair i turns by pos * theta^(-2i/rope_dim). */
void fr_rope(float *x, int n, int n_heads, int head_dim, int rope_dim, int pos0,
             float theta, int kind) {
    float cs[512], sn[512];
    int half = rope_dim / 2;
    float theta_scale = powf(theta, -2.0f / rope_dim);
    for (int t = 0; t < n; t++) {
        float angle = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            cs[i] = cosf(angle);
            sn[i] = sinf(angle);
            angle *= theta_scale;
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                int a = kind == FR_ROPE_NEOX ? i : 2 * i;
                int b = kind == FR_ROPE_NEOX ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs[i] - x1 * sn[i];
                v[b] = x0 * sn[i] + x1 * cs[i];
            }
        }
    }
}

void fr_glu(float *a, const float *b, int64_t count, int act) {
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

/* ---- matmul ---- */

typedef struct {
    const fr_weight *w;
    const float *x;
    int n;
    uint32_t act_type;
    void *xq;
    size_t xq_row;   /* bytes of one quantized activation row */
    float *y;
} matmul_job;

static void quantize_worker(void *arg, int ith, int nth) {
    matmul_job *j = arg;
    int64_t lo, hi;
    fr_split(j->n, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++)
        fr_quantize_act(j->act_type, j->x + t * j->w->cols, (uint8_t *)j->xq + t * j->xq_row,
                        j->w->cols);
}

/* Rows are split between threads; a thread computes all n tokens for a
 * block of rows, so each weight row is read from memory once per call. */
static void matmul_worker(void *arg, int ith, int nth) {
    matmul_job *j = arg;
    const fr_weight *w = j->w;
    fr_dot_fn dot = fr_traits(w->type)->dot;
    int64_t lo, hi;
    fr_split(w->rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const uint8_t *row = (const uint8_t *)w->data + r * w->row_bytes;
        for (int t = 0; t < j->n; t++)
            j->y[(size_t)t * w->rows + r] = dot(w->cols, row, (const uint8_t *)j->xq + t * j->xq_row);
    }
}

void fr_matmul(frugal_ctx *ctx, const fr_weight *w, const float *x, int n, float *y) {
    matmul_job j = { .w = w, .x = x, .n = n, .y = y };
    j.act_type = fr_traits(w->type)->act_type;
    j.xq_row = fr_row_bytes(j.act_type, w->cols);
    j.xq = ctx->qbuf;
    fr_pool_run(ctx->pool, quantize_worker, &j);
    fr_pool_run(ctx->pool, matmul_worker, &j);
}

/* ---- attention ---- */

typedef struct {
    frugal_ctx *ctx;
    int layer, n, pos0;
    const float *q;
    float *out;
} attn_job;

/* One query head over positions [0, pos]: a single pass with an online
 * softmax (running max m and normaliser l), so no score row is stored. */
static void attend_one(const float *q, const uint16_t *kc, const uint16_t *vc, int pos,
                       int kv_stride, int hd, float scale, float *out) {
    float acc[512];
    float m = -INFINITY, l = 0;
    for (int i = 0; i < hd; i++) acc[i] = 0;
    for (int p = 0; p <= pos; p++) {
        const uint16_t *k = kc + (size_t)p * kv_stride;
        float s = 0;
        for (int i = 0; i < hd; i++) s += q[i] * fr_fp16_to_fp32(k[i]);
        s *= scale;
        float m_new = s > m ? s : m;
        float corr = expf(m - m_new), e = expf(s - m_new);
        l = l * corr + e;
        const uint16_t *v = vc + (size_t)p * kv_stride;
        for (int i = 0; i < hd; i++) acc[i] = acc[i] * corr + e * fr_fp16_to_fp32(v[i]);
        m = m_new;
    }
    for (int i = 0; i < hd; i++) out[i] = acc[i] / l;
}

static void attention_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const fr_hparams *hp = &j->ctx->model->hp;
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    int kv_stride = hp->n_head_kv * hd;
    size_t layer_off = (size_t)j->layer * j->ctx->n_ctx * kv_stride;
    float scale = 1.0f / sqrtf((float)hd);
    int64_t lo, hi;
    fr_split((int64_t)j->n * hp->n_head, ith, nth, &lo, &hi);
    for (int64_t w = lo; w < hi; w++) {
        int t = (int)(w / hp->n_head), h = (int)(w % hp->n_head);
        int kvh = h / group;
        const uint16_t *kc = j->ctx->k_cache + layer_off + (size_t)kvh * hd;
        const uint16_t *vc = j->ctx->v_cache + layer_off + (size_t)kvh * hd;
        attend_one(j->q + ((size_t)t * hp->n_head + h) * hd, kc, vc, j->pos0 + t, kv_stride, hd,
                   scale, j->out + ((size_t)t * hp->n_head + h) * hd);
    }
}

void fr_attention(frugal_ctx *ctx, int layer, const float *q, int n, int pos0, float *out) {
    attn_job j = { ctx, layer, n, pos0, q, out };
    fr_pool_run(ctx->pool, attention_worker, &j);
}
