/*
 * api.h - the OpenAI-style request bodies the server accepts, parsed and
 * validated into plain C structs.
 *
 * Everything here is a pure function of its arguments: bytes in, a struct
 * or an error out, no model, no globals, no I/O. That keeps the most
 * exposed code (it sees every byte a client sends) easy to test and to
 * fuzz on its own. What needs the model (rendering the chat template,
 * tokenizing, checking the prompt fits) happens later, in http.c.
 */
#ifndef FRUGAL_SERVER_API_H
#define FRUGAL_SERVER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "frugal.h"

#define API_MAX_STOP 4 /* stop strings per request, as in OpenAI's API */
#define API_MAX_TOP_LOGPROBS 20 /* alternatives per token with logprobs, as in OpenAI's API */

typedef enum { API_CHAT, API_COMPLETION } api_kind;

/* Tool calls (tools.h): none offered (or tool_choice "none"), the model
 * may call them, or it must. */
typedef enum { TOOLS_OFF, TOOLS_AUTO, TOOLS_REQUIRED } api_tools;

/* What validation needs to know about the server: the bounds that depend
 * on the loaded model and the options it was started with. */
typedef struct {
    int n_ctx;                      /* tokens a slot's context holds */
    int n_vocab;                    /* token ids must be below this */
    const char *const *model_names; /* accepted values of "model" */
    int n_model_names;
} api_limits;

/* An OpenAI-style error: the HTTP status and the fields of
 * {"error": {"message", "type", "param", "code"}}. */
typedef struct {
    int status;
    const char *type;  /* "invalid_request_error", "server_error", ... */
    char param[40];    /* the offending field, "" for none */
    const char *code;  /* a short machine-readable code, or NULL */
    char message[256];
} api_error;

typedef struct {
    api_kind kind;
    /* chat: the messages, role and content strings owned (malloc) */
    frugal_chat_msg *msgs;
    size_t n_msgs;
    /* completion: the prompt as text (owned, NUL-terminated) ... */
    char *prompt;
    /* ... or as token ids (owned) when the client sent a list of ints */
    int32_t *prompt_tokens;
    int n_prompt_tokens;
    int max_tokens;      /* 0: not given, the server picks */
    frugal_sampler_params sampling;
    bool seed_given;
    int32_t *bias_tokens; /* logit_bias, owned: tokens and their biases */
    float *bias;
    int n_bias;
    char *stop[API_MAX_STOP]; /* owned, non-empty */
    size_t stop_len[API_MAX_STOP]; /* their strlen: the scheduler needs it every step */
    int n_stop;
    bool stream;
    bool include_usage;  /* stream_options.include_usage: a last chunk with usage */
    bool logprobs;       /* chat "logprobs": true, or completions "logprobs": N */
    int top_logprobs;    /* alternatives per token: chat "top_logprobs", completions N */
    bool echo;           /* completions: the reply's text starts with the prompt's */
    bool echo_only;      /* echo with "max_tokens": 0: nothing is generated */
    bool json_object;    /* response_format json_object or json_schema: the reply is one JSON object ... */
    char *json_schema;   /* ... valid against this schema (JSON text, owned), when one was given */
    api_tools tools;     /* chat "tools" and "tool_choice": ... */
    char *tool_schema;   /* ... the schema of a reply that calls them (owned) ... */
    char *tool_prompt;   /* ... and what the system message tells the model of them (owned) */
} api_request;

/* Parse the body of POST /v1/chat/completions or /v1/completions. Return
 * 0 and fill *out (free it with api_request_free), or -1 and fill *err;
 * *out is then empty. */
int api_parse_chat(const char *body, size_t len, const api_limits *lim, api_request *out,
                   api_error *err);
int api_parse_completion(const char *body, size_t len, const api_limits *lim, api_request *out,
                         api_error *err);
void api_request_free(api_request *r);

/* POST /tokenize {"content": "...", "add_special": false}: *content is
 * owned by the caller (malloc). */
int api_parse_tokenize(const char *body, size_t len, char **content, size_t *content_len,
                       bool *add_special, api_error *err);
/* POST /detokenize {"tokens": [ids]}: *tokens is owned by the caller. */
int api_parse_detokenize(const char *body, size_t len, int n_vocab, int32_t **tokens, int *n,
                         api_error *err);

/* Fills err (status 400, invalid_request_error unless type is given). */
void api_set_error(api_error *err, int status, const char *type, const char *param,
                   const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
bool api_utf8_valid(const char *s, size_t n);

#endif
