/*
 * arch_llama.c - the Llama architecture (SmolLM2, TinyLlama, Llama 2/3,
 * Mistral without sliding window): RMSNorm, RoPE on adjacent pairs
 * (the GGUF converter permutes Q/K rows to match), grouped-query
 * attention, SwiGLU FFN, output matrix tied to the embedding when
 * output.weight is absent.
 */
#include <math.h>
#include "model.h"

frugal_status fr_arch_llama_load(frugal_model *m) {
    fr_hparams *hp = &m->hp;
    frugal_status st;
    if ((st = fr_read_common_hparams(m))) return st;
    hp->rope_dim = hp->head_dim;
    if ((st = fr_hp_u32(m, "rope.dimension_count", false, &hp->rope_dim))) return st;
    hp->rope_theta = 10000.0f;
    if ((st = fr_hp_f32(m, "rope.freq_base", false, &hp->rope_theta))) return st;
    hp->norm_eps = 1e-5f;
    if ((st = fr_hp_f32(m, "attention.layer_norm_rms_epsilon", false, &hp->norm_eps))) return st;
    hp->rope_kind = FR_ROPE_NORM;
    hp->ffn_act = FR_ACT_SILU;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;
    if ((st = fr_bind_common(m))) return st;
    for (int i = 0; i < hp->n_layer; i++) {
        if ((st = fr_bind_block(m, i))) return st;
        m->layers[i].rope_theta = hp->rope_theta;
        m->layers[i].window = 0;
    }
    return fr_check_hparams(m);
}
