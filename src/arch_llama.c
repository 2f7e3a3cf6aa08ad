/*
 * arch_llama.c - the Llama architecture (SmolLM2, TinyLlama, Llama 2/3,
 * Mistral without sliding window): RMSNorm, RoPE on adjacent pairs
 * (the GGUF converter permutes Q/K rows to match), grouped-query
 * attention, SwiGLU FFN, output matrix tied to the embedding when
 * output.weight is absent.
 */
#include <stdio.h>
#include <string.h>
#include "model.h"

static frugal_status read_hparams(frugal_model *m) {
    const gguf_file *g = m->gguf;
    fr_hparams *hp = &m->hp;
    uint32_t u;
    frugal_status st;
#define GET_U32(key, field)                                            \
    if ((st = gguf_get_u32(g, key, &u)) != FRUGAL_OK) return st;      \
    if (u == 0 || u > (1u << 24))                                      \
        return fr_error(FRUGAL_ERR_FORMAT, "key %s: value %u out of range", key, u); \
    hp->field = (int)u;
    GET_U32("llama.block_count", n_layer);
    GET_U32("llama.embedding_length", n_embd);
    GET_U32("llama.feed_forward_length", n_ff);
    GET_U32("llama.attention.head_count", n_head);
    GET_U32("llama.context_length", n_ctx_train);
#undef GET_U32
    hp->n_head_kv = hp->n_head;
    if (gguf_find(g, "llama.attention.head_count_kv")) {
        if ((st = gguf_get_u32(g, "llama.attention.head_count_kv", &u)) != FRUGAL_OK) return st;
        hp->n_head_kv = (int)u;
    }
    if (hp->n_head_kv < 1 || hp->n_head % hp->n_head_kv != 0)
        return fr_error(FRUGAL_ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                        hp->n_head, hp->n_head_kv);
    if (hp->n_embd % hp->n_head != 0)
        return fr_error(FRUGAL_ERR_FORMAT, "embedding_length %d not divisible by head_count %d",
                        hp->n_embd, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    hp->rope_dim = hp->head_dim;
    if (gguf_find(g, "llama.rope.dimension_count")) {
        if ((st = gguf_get_u32(g, "llama.rope.dimension_count", &u)) != FRUGAL_OK) return st;
        hp->rope_dim = (int)u;
    }
    if (hp->rope_dim < 2 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2 || hp->head_dim > 512)
        return fr_error(FRUGAL_ERR_FORMAT, "rope dimension %d invalid for head size %d",
                        hp->rope_dim, hp->head_dim);
    hp->rope_theta = 10000.0f;
    if (gguf_find(g, "llama.rope.freq_base") &&
        (st = gguf_get_f32(g, "llama.rope.freq_base", &hp->rope_theta)) != FRUGAL_OK)
        return st;
    hp->norm_eps = 1e-5f;
    if (gguf_find(g, "llama.attention.layer_norm_rms_epsilon") &&
        (st = gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &hp->norm_eps)) != FRUGAL_OK)
        return st;
    if (!(hp->rope_theta > 0) || !(hp->norm_eps > 0))
        return fr_error(FRUGAL_ERR_FORMAT, "rope freq_base and rms epsilon must be positive");
    hp->rope_kind = FR_ROPE_NORM;
    hp->ffn_act = FR_ACT_SILU;
    return FRUGAL_OK;
}

static frugal_status bind_layer(frugal_model *m, int i) {
    const fr_hparams *hp = &m->hp;
    fr_layer *L = &m->layers[i];
    int64_t d = hp->n_embd, kv = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim;
    frugal_status st;
    if ((st = fr_bind(m, &L->attn_norm, d, 1, true, "blk.%d.attn_norm.weight", i)) ||
        (st = fr_bind(m, &L->wq, d, qd, true, "blk.%d.attn_q.weight", i)) ||
        (st = fr_bind(m, &L->wk, d, kv, true, "blk.%d.attn_k.weight", i)) ||
        (st = fr_bind(m, &L->wv, d, kv, true, "blk.%d.attn_v.weight", i)) ||
        (st = fr_bind(m, &L->wo, qd, d, true, "blk.%d.attn_output.weight", i)) ||
        (st = fr_bind(m, &L->ffn_norm, d, 1, true, "blk.%d.ffn_norm.weight", i)) ||
        (st = fr_bind(m, &L->w_gate, d, ff, true, "blk.%d.ffn_gate.weight", i)) ||
        (st = fr_bind(m, &L->w_up, d, ff, true, "blk.%d.ffn_up.weight", i)) ||
        (st = fr_bind(m, &L->w_down, ff, d, true, "blk.%d.ffn_down.weight", i)))
        return st;
    if (L->attn_norm.type != 0 || L->ffn_norm.type != 0)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "layer %d: norm weights must be F32", i);
    return FRUGAL_OK;
}

frugal_status fr_arch_llama_load(frugal_model *m) {
    frugal_status st = read_hparams(m);
    if (st) return st;
    const fr_hparams *hp = &m->hp;
    m->hp.n_vocab = fr_tokenizer_n_vocab(m->tok);
    if ((st = fr_bind(m, &m->tok_embd, hp->n_embd, hp->n_vocab, true, "token_embd.weight")) ||
        (st = fr_bind(m, &m->output_norm, hp->n_embd, 1, true, "output_norm.weight")) ||
        (st = fr_bind(m, &m->output, hp->n_embd, hp->n_vocab, false, "output.weight")))
        return st;
    if (m->output_norm.type != 0)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "output_norm.weight must be F32");
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    m->layers = fr_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for layer table");
    for (int i = 0; i < hp->n_layer; i++)
        if ((st = bind_layer(m, i))) return st;
    return FRUGAL_OK;
}
