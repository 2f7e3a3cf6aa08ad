/*
 * arch_gemma3.c - Gemma 3 (text): the Llama block plus
 *   - QK-norm: RMSNorm of each query and key head (attn_q_norm, attn_k_norm);
 *   - norms on the attention and FFN outputs before the residual add
 *     (post_attention_norm, post_ffw_norm);
 *   - GeGLU with tanh-approximated GELU;
 *   - embeddings scaled by sqrt(n_embd);
 *   - interleaved sliding-window (local) and global layers: every
 *     SWA_PATTERN-th layer is global; local layers see the last
 *     `attention.sliding_window` tokens and use RoPE base 10000, global
 *     ones the file's rope.freq_base;
 *   - NEOX RoPE (halves, not pairs); head size from attention.key_length;
 *   - attention scale 1/sqrt(key_length) (query_pre_attn_scalar = head size).
 * Gemma's (1 + w) norm weights are already folded into the GGUF file.
 */
#include <math.h>
#include "model.h"

#define SWA_PATTERN 6            /* 5 local layers, then 1 global */
#define LOCAL_ROPE_BASE 10000.0f

frugal_status fr_arch_gemma3_load(frugal_model *m) {
    fr_hparams *hp = &m->hp;
    frugal_status st;
    if ((st = fr_read_common_hparams(m))) return st;
    if ((st = fr_hp_u32(m, "attention.key_length", false, &hp->head_dim))) return st;
    int v_len = hp->head_dim, window = 0;
    if ((st = fr_hp_u32(m, "attention.value_length", false, &v_len))) return st;
    if (v_len != hp->head_dim)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "key length %d != value length %d", hp->head_dim, v_len);
    hp->rope_dim = hp->head_dim;
    hp->rope_theta = 1000000.0f;
    if ((st = fr_hp_f32(m, "rope.freq_base", false, &hp->rope_theta))) return st;
    hp->norm_eps = 1e-6f;
    if ((st = fr_hp_f32(m, "attention.layer_norm_rms_epsilon", false, &hp->norm_eps))) return st;
    if ((st = fr_hp_u32(m, "attention.sliding_window", false, &window))) return st;
    hp->rope_kind = FR_ROPE_NEOX;
    hp->ffn_act = FR_ACT_GELU_TANH;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = sqrtf((float)hp->n_embd);
    if ((st = fr_bind_common(m))) return st;
    int64_t d = hp->n_embd, hd = hp->head_dim;
    for (int i = 0; i < hp->n_layer; i++) {
        fr_layer *L = &m->layers[i];
        if ((st = fr_bind_block(m, i)) ||
            (st = fr_bind(m, &L->q_norm, hd, 1, true, "blk.%d.attn_q_norm.weight", i)) ||
            (st = fr_bind(m, &L->k_norm, hd, 1, true, "blk.%d.attn_k_norm.weight", i)) ||
            (st = fr_bind(m, &L->post_attn_norm, d, 1, true, "blk.%d.post_attention_norm.weight", i)) ||
            (st = fr_bind(m, &L->post_ffn_norm, d, 1, true, "blk.%d.post_ffw_norm.weight", i)))
            return st;
        bool global = (i + 1) % SWA_PATTERN == 0;
        L->window = global ? 0 : window;
        L->rope_theta = global ? hp->rope_theta : LOCAL_ROPE_BASE;
    }
    return fr_check_hparams(m);
}
