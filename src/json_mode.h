/*
 * json_mode.h - JSON mode's constraint over a vocabulary (frugal_json in
 * frugal.h): the machine that walks a schema as the reply is written
 * (json_schema.h), each token judged by the bytes it decodes to.
 */
#ifndef FR_JSON_MODE_H
#define FR_JSON_MODE_H

#include <stdbool.h>
#include "frugal.h"
#include "json_schema.h"

/* What each token of a vocabulary decodes to, as the constraint reads
 * it: token t decodes to piece[t][0..len[t]) (NULL or empty: never
 * allowed), eog[t] marks the end-of-generation tokens. A model keeps one
 * (built by its first constraint) that all its constraints share. */
typedef struct fr_json_vocab fr_json_vocab;
frugal_status fr_json_vocab_new(int n, const char *const *piece, const int *len, const bool *eog,
                                fr_json_vocab **out);
void fr_json_vocab_free(fr_json_vocab *v);

/* A constraint over a vocabulary of n tokens: token t decodes to
 * piece[t][0..len[t]) (NULL or empty: never allowed), eog[t] marks the
 * end-of-generation tokens. Takes schema (freed with the constraint, or
 * on failure). frugal_json_new gives it the model's vocabulary. */
frugal_status fr_json_new_vocab(int n, const char *const *piece, const int *len, const bool *eog, fr_schema *schema,
                                frugal_json **out);
/* The sampler's mask: out[t] = logits[t] where j allows token t, else
 * -infinity, for t < n; returns how many it allows. */
int fr_json_mask(const frugal_json *j, const float *logits, float *out, int n);

#endif
