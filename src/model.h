/*
 * model.h - a loaded model: hyperparameters, weight views into the mapped
 * GGUF file, tokenizer and chat template; and the inference context.
 *
 * An architecture (arch_*.c) fills fr_hparams from the metadata and binds
 * the weights of each block; the forward pass (forward.c) is shared and
 * reads which variant of each building block to use from fr_hparams.
 */
#ifndef FR_MODEL_H
#define FR_MODEL_H

#include "common.h"
#include "gguf.h"
#include "tokenizer.h"
#include "threadpool.h"

/* A weight matrix (or vector): rows of `cols` elements of `type`. */
typedef struct {
    const void *data;   /* NULL: absent (optional tensor) */
    uint32_t type;
    int64_t cols, rows;
    size_t row_bytes;
} fr_weight;

typedef struct {
    fr_weight attn_norm, wq, wk, wv, wo;
    fr_weight ffn_norm, w_gate, w_up, w_down;
} fr_layer;

enum fr_rope_kind { FR_ROPE_NORM = 0, FR_ROPE_NEOX = 1 };
enum fr_ffn_act { FR_ACT_SILU = 0, FR_ACT_GELU_TANH = 1 };

typedef struct {
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train;
    int rope_dim, rope_kind, ffn_act;
    float rope_theta, norm_eps;
} fr_hparams;

struct frugal_model {
    gguf_file *gguf;
    fr_tokenizer *tok;
    fr_hparams hp;
    char *arch;              /* general.architecture */
    char *name;              /* general.name or "" */
    fr_weight tok_embd, output_norm, output;
    fr_layer *layers;
    int chat_kind;           /* enum fr_chat_kind */
    char *chat_default_system;
    int isa;                 /* kernel level in use */
};

/* Binds a required tensor of the given shape (cols, rows; rows 1 for a
 * vector); `fmt` names it with printf arguments. */
frugal_status fr_bind(const frugal_model *m, fr_weight *w, int64_t cols, int64_t rows,
                      bool required, const char *fmt, ...) FR_PRINTF(6, 7);

/* Architectures. */
frugal_status fr_arch_llama_load(frugal_model *m);

/* ---- inference context ---- */

struct frugal_ctx {
    frugal_model *model;
    fr_pool *pool;
    int n_ctx, n_batch, pos;
    /* KV cache, fp16: [layer][position][n_head_kv * head_dim] */
    uint16_t *k_cache, *v_cache;
    /* activations for up to n_batch tokens */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
    void *qbuf;              /* activations quantized for a matmul */
    size_t qbuf_bytes;
    float *logits;           /* [n_logits][n_vocab] */
    int n_logits_cap;        /* rows the logits buffer holds */
    int logits_first;        /* token index (in the last eval) of logits row 0 */
    int logits_count;        /* rows valid */
};

/* Runs n <= n_batch tokens at ctx->pos; writes logits for tokens
 * [n - n_out, n) into ctx->logits. */
void fr_forward(frugal_ctx *ctx, const int32_t *tokens, int n, int n_out);

#endif
