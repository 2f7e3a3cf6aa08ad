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

#include <stdatomic.h>
#include "common.h"
#include "gguf.h"
#include "tokenizer.h"
#include "threadpool.h"
#include "kv.h"

/* A weight matrix (or vector): rows of `cols` elements of `type`. */
typedef struct {
    const void *data;   /* NULL: absent (optional tensor) */
    uint32_t type;
    int64_t cols, rows;
    size_t row_bytes;
    const void *packed; /* the first rows / 16 * 16 rows rearranged for this level's kernels (traits' pack),
                         * or NULL; the rest are read at data */
} fr_weight;

/* One transformer block. Optional weights (data == NULL when the
 * architecture has none) select variants of the shared building blocks:
 * q_norm/k_norm: per-head RMSNorm of Q and K (QK-norm); post_attn_norm /
 * post_ffn_norm: a norm on the block's output before the residual add. */
typedef struct {
    fr_weight attn_norm, wq, wk, wv, wo, q_norm, k_norm, post_attn_norm;
    fr_weight ffn_norm, w_gate, w_up, w_down, post_ffn_norm;
    float rope_theta;  /* RoPE base of this layer */
    int rope_table;    /* index of that base in frugal_model.rope_bases */
    int window;        /* sliding-window size in tokens; 0 = global attention */
} fr_layer;

enum fr_rope_kind { FR_ROPE_NORM = 0, FR_ROPE_NEOX = 1 };
#define FR_MAX_ROPE_BASES 4
enum fr_ffn_act { FR_ACT_SILU = 0, FR_ACT_GELU_TANH = 1 };

typedef struct {
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train;
    int rope_dim, rope_kind, ffn_act;
    float rope_theta, norm_eps;
    float attn_scale;  /* multiplies q.k; usually 1/sqrt(head_dim) */
    float embd_scale;  /* multiplies the embedding rows; 1 for most */
} fr_hparams;

struct frugal_model {
    gguf_file *gguf;
    fr_tokenizer *tok;
    fr_hparams hp;
    char *arch;              /* general.architecture */
    char *name;              /* general.name or "" */
    fr_weight tok_embd, output_norm, output;
    fr_layer *layers;
    float rope_bases[FR_MAX_ROPE_BASES]; /* distinct RoPE bases of the layers */
    int n_rope_bases;
    int chat_kind;           /* enum fr_chat_kind */
    char *chat_default_system;
    int isa;                 /* kernel level in use */
    fr_kv_pool *kv_pool;     /* fp16 KV pages of all its contexts (NULL: fr_malloc) */
    void *placed_mem;        /* the matrices' arena (model.c: place_weights), or NULL */
    uint8_t *placed_next;    /* where the next one goes */
    size_t placed_total;     /* bytes they take */
    _Atomic(struct fr_json_vocab *) json_vocab; /* JSON mode's table of the vocabulary, built when first needed */
};

/* Binds a required tensor of the given shape (cols, rows; rows 1 for a
 * vector); `fmt` names it with printf arguments. */
frugal_status fr_bind(const frugal_model *m, fr_weight *w, int64_t cols, int64_t rows,
                      bool required, const char *fmt, ...) FR_PRINTF(6, 7);

/* Architectures: each fills m->hp, binds the weights and sets per-layer
 * RoPE base and window. */
frugal_status fr_arch_llama_load(frugal_model *m);
frugal_status fr_arch_gemma3_load(frugal_model *m);

/* Reads an integer/float hyperparameter "<arch>.<suffix>", e.g.
 * fr_hp_u32(m, "block_count", true, 0, &v). Optional ones keep *out when
 * absent. Values must lie in [1, 2^24] (integers) / be finite and > 0. */
frugal_status fr_hp_u32(const frugal_model *m, const char *suffix, bool required, int *out);
frugal_status fr_hp_f32(const frugal_model *m, const char *suffix, bool required, float *out);

/* Shared building blocks of the architecture loaders (model.c):
 * block_count, embedding_length, feed_forward_length, head counts,
 * context_length; head_dim = n_embd / n_head (an architecture may
 * override it). */
frugal_status fr_read_common_hparams(frugal_model *m);
/* token_embd, output_norm, output (tied to token_embd when absent), and
 * the layer table. */
frugal_status fr_bind_common(frugal_model *m);
/* The weights every block has: attention and FFN norms and matrices. */
frugal_status fr_bind_block(frugal_model *m, int layer);
/* Consistency checks after loading (head sizes, rope dims); indexes the
 * layers' RoPE bases. */
frugal_status fr_check_hparams(frugal_model *m);

/* ---- inference context ---- */

/* Sums of frugal_ctx_profile, and the time of the last mark. */
typedef struct {
    frugal_part_stats part[FRUGAL_PARTS];
    double last;
} fr_profile;

struct frugal_ctx {
    frugal_model *model;
    fr_pool *pool;
    bool owns_pool;          /* false: another context's (frugal_ctx_params.share_threads) */
    int n_ctx, n_batch, pos, n_threads;
    fr_kv_cache kv;
    /* activations for up to n_batch tokens */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
    void *qbuf;              /* activations quantized for a matmul */
    uint8_t *is_prompt;      /* [n_batch] per row of the pass: 1 if a prompt's token (see prompt_rows) */
    const uint8_t *prompt_rows; /* during fr_forward, the rows of the next matmul: which take the prompt
                                 * arithmetic (matmul.c); NULL otherwise (none does) */
    size_t qbuf_bytes;
    float *attn_partial;     /* split-KV partial results (attention.c) */
    float *rope_cs[FR_MAX_ROPE_BASES]; /* [n_batch][rope_dim] cos/sin per base */
    float *logits;           /* [n_logits][n_vocab] */
    int n_logits_cap;        /* rows the logits buffer holds */
    int logits_first;        /* token index (in the last eval) of logits row 0 */
    int logits_count;        /* rows valid */
    fr_profile *prof;        /* frugal_ctx_profile: NULL when off */
};

#define FR_MAX_BATCH_SEQS 256 /* runs (sequences) in one batch */

/* A batch: runs of consecutive tokens, run r belonging to sequence
 * seq[r] (a context whose KV cache and position it uses). */
typedef struct {
    frugal_ctx *const *seq;
    const int *run_len;
    int n_runs;
    bool prompt;       /* every run is part of a prompt (frugal_eval of >= 2 tokens); else the runs of
                        * two tokens or more are, runs of one are decoding */
} fr_batch;

/* Runs n <= n_batch tokens through the model using ctx's buffers and
 * thread pool; writes logits for tokens [n - n_out, n) into ctx->logits,
 * or with n_out = FR_OUT_RUN_LAST for the last token of each run (row r:
 * run r). Appends to the sequences' KV caches but does not advance
 * positions. Fails only when the KV cache cannot grow. */
#define FR_OUT_RUN_LAST (-1)
frugal_status fr_forward(frugal_ctx *ctx, const fr_batch *b, const int32_t *tokens, int n, int n_out);

#endif
