/*
 * tokens.c - the public face of the tokenizer, the streaming detokenizer
 * and chat templates (the work is in tokenizer.c, utf8.c and chat.c).
 */
#include <string.h>
#include "chat.h"
#include "model.h"
#include "utf8.h"

int64_t frugal_tokenize(const frugal_model *m, const char *text, size_t len, int32_t *tokens,
                        int64_t cap, unsigned flags) {
    if (!m || (!text && len) || cap < 0 || (!tokens && cap > 0)) {
        fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_tokenize");
        return -1;
    }
    bool add_bos = (flags & FRUGAL_TOKENIZE_ADD_BOS) && fr_tokenizer_add_bos(m->tok);
    return fr_tokenize(m->tok, text ? text : "", len, add_bos,
                       (flags & FRUGAL_TOKENIZE_PARSE_SPECIAL) != 0, tokens, cap);
}

int frugal_token_bytes(const frugal_model *m, int32_t token, char *buf, int cap) {
    return fr_token_to_bytes(m->tok, token, buf, cap);
}

int frugal_n_vocab(const frugal_model *m) { return m->hp.n_vocab; }

bool frugal_token_is_eog(const frugal_model *m, int32_t token) {
    return fr_tokenizer_is_eog(m->tok, token);
}

struct frugal_stream {
    const frugal_model *model;
    fr_utf8_stream utf8;
};

frugal_status frugal_stream_new(const frugal_model *m, frugal_stream **out) {
    *out = fr_calloc(1, sizeof **out);
    if (!*out) return fr_error(FRUGAL_ERR_NOMEM, "out of memory");
    (*out)->model = m;
    return FRUGAL_OK;
}

int frugal_stream_push(frugal_stream *s, int32_t token, char *out, size_t cap) {
    char piece[256];
    int n = fr_token_to_bytes(s->model->tok, token, piece, sizeof piece);
    if (n < 0 || n > (int)sizeof piece) n = 0;
    if (cap < 3 * (size_t)n + 8 + 1) return -1;
    size_t w = fr_utf8_push(&s->utf8, piece, (size_t)n, out);
    out[w] = 0;
    return (int)w;
}

int frugal_stream_flush(frugal_stream *s, char *out, size_t cap) {
    if (cap < 16) return -1;
    size_t w = fr_utf8_flush(&s->utf8, out);
    out[w] = 0;
    return (int)w;
}

void frugal_stream_free(frugal_stream *s) { fr_free(s); }

frugal_status frugal_chat_apply(const frugal_model *m, const frugal_chat_msg *msgs, size_t n,
                                bool add_generation_prompt, char **out) {
    if (!m || !out || (!msgs && n)) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_chat_apply");
    *out = NULL;
    if (m->chat_kind == FR_CHAT_UNKNOWN)
        return fr_error(FRUGAL_ERR_TEMPLATE, "the model's chat template is not one frugal knows "
                        "(known: chatml, gemma); use raw mode");
    if (m->chat_kind == FR_CHAT_NONE)
        return fr_error(FRUGAL_ERR_TEMPLATE, "the model has no chat template; use raw mode");
    return fr_chat_render(m->chat_kind, m->chat_default_system, msgs, n, add_generation_prompt, out);
}
