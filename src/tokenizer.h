/*
 * tokenizer.h - text <-> token ids from GGUF metadata (tokenizer.ggml.*).
 *
 * "gpt2": byte-level BPE with ranked merges and a regex pre-tokenizer
 * (PCRE2 for the Unicode classes), pre-tokenizer chosen by
 * tokenizer.ggml.pre ("smollm": digits split one by one before the GPT-2
 * pattern). "llama": SentencePiece BPE (Gemma): merges by token score,
 * spaces as U+2581, byte fallback. Control tokens written in the text are
 * recognised when asked to, user-defined ones always. Ids match
 * llama.cpp's (see tokenizer.c).
 */
#ifndef FR_TOKENIZER_H
#define FR_TOKENIZER_H

#include "common.h"
#include "gguf.h"

typedef struct fr_tokenizer fr_tokenizer;

/* GGUF token types */
enum { FR_TOK_NORMAL = 1, FR_TOK_UNKNOWN = 2, FR_TOK_CONTROL = 3,
       FR_TOK_USER_DEFINED = 4, FR_TOK_UNUSED = 5, FR_TOK_BYTE = 6 };

/* Reads tokenizer.ggml.* (model "gpt2" or "llama"); FRUGAL_ERR_FORMAT with a
 * message for a malformed vocabulary, FRUGAL_ERR_UNSUPPORTED for another
 * tokenizer model. */
frugal_status fr_tokenizer_load(const gguf_file *g, fr_tokenizer **out);
/* The same from plain arrays (tests, tools). types may be NULL (all
 * normal); merges are "left right" strings, rank = index; bos/eos may be -1.
 * A merge whose halves or result are not tokens is ignored. */
frugal_status fr_tokenizer_new_bpe(const char *const *tokens, const int32_t *types, int n_vocab,
                                   const char *const *merges, int n_merges, const char *pre,
                                   int32_t bos, int32_t eos, bool add_bos, fr_tokenizer **out);
void fr_tokenizer_free(fr_tokenizer *t);

/* Returns the full token count (writes at most cap), or -1 on error.
 * add_bos prepends BOS whenever it is true (and the vocabulary has one):
 * the public API passes it only when the model's add_bos_token says so.
 * parse_special: control tokens written in the text become their ids;
 * user-defined tokens are always recognised (as llama.cpp does). */
int64_t fr_tokenize(const fr_tokenizer *t, const char *text, size_t len, bool add_bos,
                    bool parse_special, int32_t *out, int64_t cap);

/* Bytes a token decodes to; returns the count (may exceed cap; then only
 * cap bytes were written), -1 bad id. Control tokens decode to their text
 * (llama.cpp only does so when asked), byte tokens "<0xAB>" to that byte. */
int fr_token_to_bytes(const fr_tokenizer *t, int32_t tok, char *buf, int cap);

int fr_tokenizer_n_vocab(const fr_tokenizer *t);
int32_t fr_tokenizer_bos(const fr_tokenizer *t);  /* -1 if none */
int32_t fr_tokenizer_eos(const fr_tokenizer *t);  /* -1 if none */
bool fr_tokenizer_add_bos(const fr_tokenizer *t);
bool fr_tokenizer_is_eog(const fr_tokenizer *t, int32_t tok);
/* The token for an exact piece of text (e.g. "<|im_end|>"), -1 if none. */
int32_t fr_tokenizer_find(const fr_tokenizer *t, const char *piece);
const char *fr_tokenizer_model(const fr_tokenizer *t); /* "gpt2" or "llama" */
/* tokenizer.ggml.pre as given ("" if absent). */
const char *fr_tokenizer_pre(const fr_tokenizer *t);
/* False when that name is not one we know (the GPT-2 pattern is used) or is
 * missing (llama.cpp's default patterns are used): worth a warning. Always
 * true for "llama", which has no pre-tokenizer. */
bool fr_tokenizer_pre_known(const fr_tokenizer *t);
/* The token's GGUF type (FR_TOK_*), -1 for a bad id. */
int fr_tokenizer_token_type(const fr_tokenizer *t, int32_t tok);

#endif
