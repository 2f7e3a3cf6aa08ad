/*
 * chat.h - chat templates. We do not run Jinja: we recognise the templates
 * of the model families we ship (ChatML, Gemma) from tokenizer.chat_template
 * and render them in C. An unrecognised template is reported, not guessed.
 */
#ifndef FR_CHAT_H
#define FR_CHAT_H

#include "common.h"

enum fr_chat_kind { FR_CHAT_NONE = 0, FR_CHAT_UNKNOWN, FR_CHAT_CHATML, FR_CHAT_GEMMA };

/* Classifies a template string (NULL/empty: FR_CHAT_NONE). */
int fr_chat_detect(const char *tmpl, size_t len);
const char *fr_chat_name(int kind);
/* Renders; *out malloc'ed. default_system is the system message the
 * template inserts when the conversation has none (SmolLM2's ChatML does),
 * or NULL; fr_chat_default_system extracts it from the template text. */
frugal_status fr_chat_render(int kind, const char *default_system,
                             const frugal_chat_msg *msgs, size_t n,
                             bool add_generation_prompt, char **out);

/* malloc'ed copy of the default system message in a template, or NULL. */
char *fr_chat_default_system(const char *tmpl, size_t len);

#endif
