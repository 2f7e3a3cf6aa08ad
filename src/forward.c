/*
 * forward.c - the transformer forward pass, top to bottom.
 *
 * For a batch of n tokens at positions pos..pos+n-1:
 *   x = embedding rows
 *   per layer:  x += Wo . attention(rope(Wq . norm(x)), cache(rope(Wk . norm(x)), Wv . norm(x)))
 *               x += Wdown . (act(Wgate . norm(x)) * (Wup . norm(x)))
 *   logits = Wout . norm(x)   (only for the rows asked for)
 * Activations live in ctx buffers sized for n_batch tokens.
 */
#include <string.h>
#include "ops.h"
#include "quant.h"

/* Converts the new tokens' K and V rows to fp16 into the layer's cache. */
static void cache_store(frugal_ctx *ctx, int layer, int n) {
    const fr_hparams *hp = &ctx->model->hp;
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t off = ((size_t)layer * ctx->n_ctx + ctx->pos) * kv_dim;
    for (size_t i = 0; i < (size_t)n * kv_dim; i++) {
        ctx->k_cache[off + i] = fr_fp32_to_fp16(ctx->k[i]);
        ctx->v_cache[off + i] = fr_fp32_to_fp16(ctx->v[i]);
    }
}

static void attention_block(frugal_ctx *ctx, int l, int n) {
    const frugal_model *m = ctx->model;
    const fr_hparams *hp = &m->hp;
    const fr_layer *L = &m->layers[l];
    int d = hp->n_embd;
    fr_rmsnorm(ctx->xb, ctx->x, L->attn_norm.data, n, d, hp->norm_eps);
    fr_matmul(ctx, &L->wq, ctx->xb, n, ctx->q);
    fr_matmul(ctx, &L->wk, ctx->xb, n, ctx->k);
    fr_matmul(ctx, &L->wv, ctx->xb, n, ctx->v);
    fr_rope(ctx->q, n, hp->n_head, hp->head_dim, hp->rope_dim, ctx->pos, hp->rope_theta, hp->rope_kind);
    fr_rope(ctx->k, n, hp->n_head_kv, hp->head_dim, hp->rope_dim, ctx->pos, hp->rope_theta, hp->rope_kind);
    cache_store(ctx, l, n);
    fr_attention(ctx, l, ctx->q, n, ctx->pos, ctx->att);
    fr_matmul(ctx, &L->wo, ctx->att, n, ctx->xb);
    for (size_t i = 0; i < (size_t)n * d; i++) ctx->x[i] += ctx->xb[i];
}

static void ffn_block(frugal_ctx *ctx, int l, int n) {
    const frugal_model *m = ctx->model;
    const fr_hparams *hp = &m->hp;
    const fr_layer *L = &m->layers[l];
    int d = hp->n_embd;
    fr_rmsnorm(ctx->xb, ctx->x, L->ffn_norm.data, n, d, hp->norm_eps);
    fr_matmul(ctx, &L->w_gate, ctx->xb, n, ctx->hb);
    fr_matmul(ctx, &L->w_up, ctx->xb, n, ctx->hb2);
    fr_glu(ctx->hb, ctx->hb2, (int64_t)n * hp->n_ff, hp->ffn_act);
    fr_matmul(ctx, &L->w_down, ctx->hb, n, ctx->xb);
    for (size_t i = 0; i < (size_t)n * d; i++) ctx->x[i] += ctx->xb[i];
}

void fr_forward(frugal_ctx *ctx, const int32_t *tokens, int n, int n_out) {
    const frugal_model *m = ctx->model;
    const fr_hparams *hp = &m->hp;
    int d = hp->n_embd;
    for (int t = 0; t < n; t++) fr_get_row(&m->tok_embd, tokens[t], ctx->x + (size_t)t * d);
    for (int l = 0; l < hp->n_layer; l++) {
        attention_block(ctx, l, n);
        ffn_block(ctx, l, n);
    }
    if (n_out <= 0) return;
    float *xo = ctx->x + (size_t)(n - n_out) * d;
    fr_rmsnorm(xo, xo, m->output_norm.data, n_out, d, hp->norm_eps);
    fr_matmul(ctx, &m->output, xo, n_out, ctx->logits);
}
