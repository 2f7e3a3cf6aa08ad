/*
 * http.c - routing, request bodies, responses and server-sent events
 * (see http.h).
 *
 * libmicrohttpd calls on_request several times per request: once when the
 * headers are in, once per piece of body, and once more when the body is
 * complete. Errors that the headers already show (unknown path, wrong
 * method, missing key, declared body too large) are remembered and sent
 * only after the body has been read and dropped: answering while the
 * client is still sending makes the kernel reset the connection, and the
 * client would see "connection reset" instead of our 4xx. Only a body too
 * large even to drop (DRAIN_LIMIT) is refused at once.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "http.h"
#include "tools.h"

#define DRAIN_LIMIT (16u << 20) /* body bytes we read and drop to answer 413 cleanly */
#define WAIT_MS 50               /* how often a waiting connection checks its client */
#define COMPLETION_DEFAULT_MAX_TOKENS 16 /* OpenAI's default for /v1/completions */

typedef enum {
    R_NONE, R_PAGE, R_HEALTH, R_MODELS, R_MODEL, R_METRICS, R_CHAT, R_COMPLETIONS, R_TOKENIZE, R_DETOKENIZE
} route_id;

#define MODEL_PATH "/v1/models/" /* GET MODEL_PATH{id}: one model */

static const struct {
    const char *path, *method;
    route_id id;
    bool open; /* served without the API key */
} routes[] = {
    { "/", "GET", R_PAGE, true },
    { "/health", "GET", R_HEALTH, true },
    { "/v1/models", "GET", R_MODELS, false },
    { MODEL_PATH, "GET", R_MODEL, false }, /* (a prefix: the id follows) */
    { "/metrics", "GET", R_METRICS, false },
    { "/v1/chat/completions", "POST", R_CHAT, false },
    { "/v1/completions", "POST", R_COMPLETIONS, false },
    { "/tokenize", "POST", R_TOKENIZE, false },
    { "/detokenize", "POST", R_DETOKENIZE, false },
};

typedef struct { char *s; size_t len, cap; } buf;

static bool buf_add(buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *t = realloc(b->s, cap);
        if (!t) return false;
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
    return true;
}

/* One request on one connection (MHD's "con_cls"). */
typedef struct {
    http_server *srv;
    struct MHD_Connection *mhd;
    route_id route;
    int fd;            /* the client's socket: polled to notice it left */
    char method[8], path[64];
    char model_asked[256]; /* R_MODEL: the id after MODEL_PATH ("" when too long) */
    double t_start;
    int status;        /* of the response sent, for the log */
    api_error err;     /* err.status != 0: an error to answer once the body is in */
    const char *allow; /* for a 405 */
    buf body;
    size_t dropped;    /* body bytes read and dropped after an error */
    job *job;          /* POST completions: our reference */
    char id[48];       /* "chatcmpl-..." */
    time_t created;
    /* server-sent events */
    buf out;           /* formatted events not yet handed to MHD */
    size_t out_off;
    size_t text_sent;  /* bytes of job->text already sent */
    size_t text_seen;  /* ... and looked at (more when a tool call is held back) */
    int lp_sent;       /* records of job->lp already sent */
    bool sent_role, sent_echo, ended;
} conn;

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- Responses ------------------------------------------------------------ */

static enum MHD_Result queue(conn *cs, struct MHD_Connection *c, int status, struct MHD_Response *r) {
    if (!r) return MHD_NO; /* out of memory: dropping the connection is all we can do */
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) {
        cs->status = status;
        metrics_count_request(cs->srv->metrics, status);
    }
    return ok;
}

/* Sends a malloc'd body (taking it), or drops the connection if NULL. */
static enum MHD_Result send_body(conn *cs, struct MHD_Connection *c, int status, char *body, size_t len,
                                 const char *type) {
    if (!body) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(body); return MHD_NO; }
    if (MHD_add_response_header(r, "Content-Type", type) != MHD_YES) { MHD_destroy_response(r); return MHD_NO; }
    return queue(cs, c, status, r);
}

static enum MHD_Result send_json(conn *cs, struct MHD_Connection *c, int status, cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return send_body(cs, c, status, s, s ? strlen(s) : 0, "application/json");
}

/* {"error": {"message", "type", "param", "code"}}, or NULL. */
static cJSON *error_object(const api_error *e) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(o, "error");
    bool ok = in && cJSON_AddStringToObject(in, "message", e->message) &&
              cJSON_AddStringToObject(in, "type", e->type ? e->type : "invalid_request_error") &&
              (e->param[0] ? cJSON_AddStringToObject(in, "param", e->param) : cJSON_AddNullToObject(in, "param")) &&
              (e->code ? cJSON_AddStringToObject(in, "code", e->code) : cJSON_AddNullToObject(in, "code"));
    if (!ok) { cJSON_Delete(o); return NULL; }
    return o;
}

static enum MHD_Result send_error(conn *cs, struct MHD_Connection *c, const api_error *e) {
    cJSON *o = error_object(e);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(s); return MHD_NO; }
    bool ok = MHD_add_response_header(r, "Content-Type", "application/json") == MHD_YES;
    if (e->status == 405 && cs->allow) ok = ok && MHD_add_response_header(r, "Allow", cs->allow) == MHD_YES;
    if (e->status == 401) ok = ok && MHD_add_response_header(r, "WWW-Authenticate", "Bearer") == MHD_YES;
    if (e->status == 503) ok = ok && MHD_add_response_header(r, "Retry-After", "1") == MHD_YES;
    if (!ok) { MHD_destroy_response(r); return MHD_NO; }
    return queue(cs, c, e->status, r);
}

static enum MHD_Result fail(conn *cs, struct MHD_Connection *c, int status, const char *type,
                            const char *code, const char *msg) {
    api_error e;
    api_set_error(&e, status, type, NULL, code, "%s", msg);
    return send_error(cs, c, &e);
}

/* ---- Checks on the headers ------------------------------------------------- */

/* Compares the whole key whatever the input, so the time taken does not
 * tell an attacker how many leading characters were right. */
static bool key_matches(const char *header, const char *key) {
    if (!header || strncmp(header, "Bearer ", 7)) return false;
    const char *given = header + 7;
    size_t n = strlen(given), m = strlen(key);
    volatile unsigned char diff = n != m;
    for (size_t i = 0; i < m; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < n ? given[i] : 0);
    return diff == 0;
}

/* Finds the route and the errors the headers alone reveal. Returns true
 * when the error must be sent right away (the body is too large to read). */
static bool check_headers(conn *cs, struct MHD_Connection *c, const char *url, const char *method) {
    http_server *srv = cs->srv;
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        bool prefix = routes[i].id == R_MODEL;
        if (prefix ? strncmp(url, routes[i].path, strlen(routes[i].path)) : strcmp(url, routes[i].path)) continue;
        if (prefix && strlen(url + strlen(MODEL_PATH)) < sizeof cs->model_asked)
            strcpy(cs->model_asked, url + strlen(MODEL_PATH));
        path_known = true;
        cs->allow = !strcmp(routes[i].method, "GET") ? "GET, HEAD" : routes[i].method;
        bool head = !strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET");
        if (!head && strcmp(method, routes[i].method)) continue;
        cs->route = routes[i].id;
        if (srv->api_key && !routes[i].open &&
            !key_matches(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"), srv->api_key))
            api_set_error(&cs->err, 401, NULL, NULL, "invalid_api_key",
                          "a valid API key is required: send 'Authorization: Bearer KEY'");
        break;
    }
    if (!path_known) api_set_error(&cs->err, 404, NULL, NULL, "not_found", "no such endpoint: %.100s", url);
    else if (cs->route == R_NONE) api_set_error(&cs->err, 405, NULL, NULL, "method_not_allowed",
                                                "%.16s is not allowed here; use %s", method, cs->allow);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    if (declared > srv->max_body)
        api_set_error(&cs->err, 413, NULL, NULL, "body_too_large", "the request body is over %zu bytes",
                      srv->max_body);
    /* a client that asked "Expect: 100-continue" waits for our go-ahead:
     * it can have the answer instead, without sending the body */
    bool expects = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect") != NULL;
    return cs->err.status && (expects || declared > DRAIN_LIMIT);
}

/* True when the client closed its end or the connection broke: recv peeks
 * without consuming, and returns 0 only at end of stream. */
static bool client_gone(int fd) {
    char ch;
    ssize_t r = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* libmicrohttpd closes a connection idle for HTTP_IDLE_TIMEOUT_S, and it
 * counts the time our handler or reader spends blocked (a request waiting
 * for a slot, a long prefill) as idle. Setting the timeout restarts the
 * clock, but in 0.9.75 only when it was 0, hence the two calls. */
static void restart_idle_timer(struct MHD_Connection *c) {
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S);
}

/* ---- Small endpoints -------------------------------------------------------- */

/* The served model as an OpenAI model object; NULL when out of memory. */
static cJSON *model_object(const http_server *srv) {
    cJSON *m = cJSON_CreateObject();
    bool ok = m && cJSON_AddStringToObject(m, "id", srv->model_id) && cJSON_AddStringToObject(m, "object", "model") &&
              cJSON_AddNumberToObject(m, "created", (double)srv->started) &&
              cJSON_AddStringToObject(m, "owned_by", "frugal") &&
              cJSON_AddNumberToObject(m, "context_length", srv->n_ctx);
    if (!ok) { cJSON_Delete(m); return NULL; }
    return m;
}

static enum MHD_Result handle_models(conn *cs, struct MHD_Connection *c) {
    cJSON *o = cJSON_CreateObject(), *data = o ? cJSON_AddArrayToObject(o, "data") : NULL, *m = model_object(cs->srv);
    bool ok = m && data && cJSON_AddItemToArray(data, m);
    if (!ok) cJSON_Delete(m);
    if (!ok || !cJSON_AddStringToObject(o, "object", "list")) {
        cJSON_Delete(o);
        return fail(cs, c, 500, "server_error", NULL, "out of memory");
    }
    return send_json(cs, c, 200, o);
}

/* GET /v1/models/{id}: the model, under any name "model" accepts. */
static enum MHD_Result handle_model(conn *cs, struct MHD_Connection *c) {
    http_server *srv = cs->srv;
    bool known = false;
    for (size_t i = 0; i < sizeof srv->model_names / sizeof srv->model_names[0] && !known; i++)
        known = cs->model_asked[0] && srv->model_names[i] && !strcmp(cs->model_asked, srv->model_names[i]);
    if (!known) {
        api_error e;
        api_set_error(&e, 404, NULL, "model", "model_not_found", "the model '%.100s' is not served here",
                      cs->model_asked);
        return send_error(cs, c, &e);
    }
    cJSON *m = model_object(srv);
    if (!m) return fail(cs, c, 500, "server_error", NULL, "out of memory");
    return send_json(cs, c, 200, m);
}

static enum MHD_Result handle_tokenize(conn *cs, struct MHD_Connection *c) {
    http_server *srv = cs->srv;
    api_error err;
    char *text;
    size_t len;
    bool special;
    if (api_parse_tokenize(cs->body.s, cs->body.len, &text, &len, &special, &err)) return send_error(cs, c, &err);
    unsigned flags = FRUGAL_TOKENIZE_PARSE_SPECIAL | (special ? FRUGAL_TOKENIZE_ADD_BOS : 0);
    int64_t n = frugal_tokenize(srv->model, text, len, NULL, 0, flags);
    int32_t *ids = n >= 0 ? malloc((size_t)(n ? n : 1) * sizeof *ids) : NULL;
    if (!ids || frugal_tokenize(srv->model, text, len, ids, n, flags) != n) {
        free(text);
        free(ids);
        return fail(cs, c, 500, "server_error", NULL, frugal_last_error()[0] ? frugal_last_error() : "out of memory");
    }
    free(text);
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "tokens");
    bool ok = arr != NULL;
    for (int64_t i = 0; i < n && ok; i++) {
        cJSON *num = cJSON_CreateNumber(ids[i]);
        ok = num && cJSON_AddItemToArray(arr, num);
        if (!ok) cJSON_Delete(num);
    }
    free(ids);
    if (!ok) { cJSON_Delete(o); return MHD_NO; }
    return send_json(cs, c, 200, o);
}

static enum MHD_Result handle_detokenize(conn *cs, struct MHD_Connection *c) {
    http_server *srv = cs->srv;
    api_error err;
    int32_t *ids;
    int n;
    if (api_parse_detokenize(cs->body.s, cs->body.len, srv->n_vocab, &ids, &n, &err)) return send_error(cs, c, &err);
    frugal_stream *st = NULL;
    buf text = { 0 };
    char piece[1024];
    bool ok = frugal_stream_new(srv->model, &st) == FRUGAL_OK && buf_add(&text, "", 0);
    for (int i = 0; i < n && ok; i++) {
        int w = frugal_stream_push(st, ids[i], piece, sizeof piece);
        ok = w >= 0 && buf_add(&text, piece, (size_t)w);
    }
    int w = ok ? frugal_stream_flush(st, piece, sizeof piece) : -1;
    ok = ok && w >= 0 && buf_add(&text, piece, (size_t)w);
    frugal_stream_free(st);
    free(ids);
    cJSON *o = ok ? cJSON_CreateObject() : NULL;
    ok = o && cJSON_AddStringToObject(o, "content", text.s);
    free(text.s);
    if (!ok) { cJSON_Delete(o); return fail(cs, c, 500, "server_error", NULL, "out of memory"); }
    return send_json(cs, c, 200, o);
}

/* ---- Completions ------------------------------------------------------------ */

/* Unique enough ids ("chatcmpl-..."): a counter mixed with the start time
 * (splitmix64), not a secret. */
static void make_id(conn *cs, const char *prefix) {
    static atomic_ullong counter;
    uint64_t z = (uint64_t)cs->srv->started * 0x9E3779B97F4A7C15ULL + atomic_fetch_add(&counter, 1) + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    snprintf(cs->id, sizeof cs->id, "%s-%016" PRIx64, prefix, z);
}

/* For echo: the prompt as its tokens decode (what the tokens' text
 * offsets count in) and where each token's text starts. */
static bool echo_prompt(const http_server *srv, job *j) {
    frugal_stream *st = NULL;
    buf text = { 0 };
    char piece[1024];
    bool ok = !frugal_stream_new(srv->model, &st) && (j->echo_off = malloc((size_t)j->n_prompt * sizeof *j->echo_off));
    for (int i = 0; ok && i < j->n_prompt; i++) {
        j->echo_off[i] = text.len;
        int w = frugal_stream_push(st, j->prompt[i], piece, sizeof piece);
        ok = w >= 0 && buf_add(&text, piece, (size_t)w);
    }
    int w = ok ? frugal_stream_flush(st, piece, sizeof piece) : -1;
    ok = ok && w >= 0 && buf_add(&text, piece, (size_t)w) && (text.s || buf_add(&text, "", 0));
    frugal_stream_free(st);
    if (!ok) { free(text.s); return false; }
    j->echo = text.s;
    j->echo_len = text.len;
    return true;
}

/* Turns the parsed request into prompt tokens, sampler and limits. */
static int prepare_job(http_server *srv, job *j, api_error *err) {
    api_request *r = &j->req;
    if (r->prompt_tokens) {
        j->prompt = r->prompt_tokens;
        j->n_prompt = r->n_prompt_tokens;
        r->prompt_tokens = NULL;
    } else {
        char *text = r->prompt;
        if (r->kind == API_CHAT) {
            frugal_status st = frugal_chat_apply(srv->model, r->msgs, r->n_msgs, true, &text);
            if (st == FRUGAL_ERR_NOMEM) goto nomem;
            if (st) {
                api_set_error(err, 400, NULL, "messages", NULL, "cannot render the chat: %s%s", frugal_last_error(),
                              st == FRUGAL_ERR_TEMPLATE ? " (use /v1/completions for a raw prompt)" : "");
                return -1;
            }
        }
        /* as frugal run does: BOS if the model wants one, special tokens
         * in the text (the template's markers) become their ids. A prompt
         * longer than the context is only counted, not stored. */
        unsigned flags = FRUGAL_TOKENIZE_ADD_BOS | FRUGAL_TOKENIZE_PARSE_SPECIAL;
        int64_t n = -1;
        if ((j->prompt = malloc((size_t)srv->n_ctx * sizeof *j->prompt)))
            n = frugal_tokenize(srv->model, text, strlen(text), j->prompt, srv->n_ctx, flags);
        if (text != r->prompt) frugal_free(text);
        if (!j->prompt) goto nomem;
        if (n < 0) {
            api_set_error(err, 500, "server_error", NULL, NULL, "tokenizing failed: %s", frugal_last_error());
            return -1;
        }
        j->n_prompt = (int)(n > srv->n_ctx ? srv->n_ctx + 1 : n);
    }
    if (j->n_prompt == 0) {
        api_set_error(err, 400, NULL, r->kind == API_CHAT ? "messages" : "prompt", NULL, "the prompt is empty");
        return -1;
    }
    if (j->n_prompt >= srv->n_ctx) {
        api_set_error(err, 400, NULL, r->kind == API_CHAT ? "messages" : "prompt", "context_length_exceeded",
                      "the prompt has %s%d tokens but the context holds %d (prompt and reply together)",
                      j->n_prompt > srv->n_ctx ? "over " : "", j->n_prompt > srv->n_ctx ? srv->n_ctx : j->n_prompt,
                      srv->n_ctx);
        return -1;
    }
    j->max_tokens = r->echo_only ? 0 : r->max_tokens ? r->max_tokens
                  : r->kind == API_CHAT ? srv->n_ctx - j->n_prompt : COMPLETION_DEFAULT_MAX_TOKENS;
    if (r->echo && !echo_prompt(srv, j)) goto nomem;
    if (r->echo && r->logprobs && !(j->plp = malloc((size_t)j->n_prompt * sizeof *j->plp))) goto nomem;
    if (!r->seed_given) { /* different for every request */
        static atomic_ullong seeds;
        r->sampling.seed = (uint64_t)srv->started * 6364136223846793005ULL + atomic_fetch_add(&seeds, 1) * 1442695040888963407ULL +
                           (uint64_t)(mono_now() * 1e9);
    }
    if (frugal_sampler_new(&r->sampling, srv->n_vocab, &j->smp) || frugal_stream_new(srv->model, &j->stream)) goto nomem;
    if (frugal_sampler_set_logit_bias(j->smp, r->bias_tokens, r->bias, r->n_bias)) { /* (checked by api.c) */
        api_set_error(err, 400, NULL, "logit_bias", NULL, "%s", frugal_last_error());
        return -1;
    }
    frugal_status st = FRUGAL_OK;
    const char *schema = r->json_schema ? r->json_schema : r->tool_schema;
    if (schema) st = frugal_json_new_schema(srv->model, schema, strlen(schema), &j->json);
    else if (r->json_object) st = frugal_json_new(srv->model, true, &j->json);
    if (st == FRUGAL_ERR_INVALID_ARG) { /* a schema JSON mode cannot follow */
        api_set_error(err, 400, NULL, r->tools ? "tools" : "response_format", NULL, "%s%s",
                      r->tools ? "a function's parameters: " : "", frugal_last_error());
        return -1;
    }
    if (!st && r->tools == TOOLS_AUTO) st = frugal_json_set_optional(j->json, true); /* a call, or plain text */
    if (st || (j->json && frugal_sampler_set_json(j->smp, j->json))) goto nomem;
    return 0;
nomem:
    api_set_error(err, 500, "server_error", NULL, NULL, "out of memory");
    return -1;
}

/* The fields every completion object and chunk starts with; NULL when out
 * of memory. */
static cJSON *envelope(const conn *cs, const char *object, cJSON **choice) {
    cJSON *o = cJSON_CreateObject(), *ch = cJSON_CreateObject();
    bool ok = o && ch && cJSON_AddStringToObject(o, "id", cs->id) && cJSON_AddStringToObject(o, "object", object) &&
              cJSON_AddNumberToObject(o, "created", (double)cs->created) &&
              cJSON_AddStringToObject(o, "model", cs->srv->model_id);
    cJSON *choices = ok ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (ch && !cJSON_AddItemToArray(choices, ch)) { cJSON_Delete(ch); ch = NULL; }
    ok = ok && ch && cJSON_AddNumberToObject(ch, "index", 0) && cJSON_AddNullToObject(ch, "logprobs");
    if (!ok) { cJSON_Delete(o); return NULL; }
    *choice = ch;
    return o;
}

/* ---- logprobs ---------------------------------------------------------------- */

#define TOKEN_RAW 256 /* bytes of a token's text kept (more is cut) */

/* Token tok's bytes into raw (*n of them) and its text into text: the
 * bytes with each invalid UTF-8 sequence as U+FFFD (OpenAI's "token"
 * strings; a token may hold part of a character). A character cut short
 * by the end of the token is one U+FFFD, as decoders count it. */
static void token_text(const http_server *srv, int32_t tok, char raw[TOKEN_RAW], int *n, char text[3 * TOKEN_RAW + 1]) {
    int len = frugal_token_bytes(srv->model, tok, raw, TOKEN_RAW), t = 0;
    *n = len < 0 ? 0 : len > TOKEN_RAW ? TOKEN_RAW : len;
    for (int i = 0; i < *n;) {
        unsigned c = (unsigned char)raw[i];
        int k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (k && i + k <= *n && api_utf8_valid(raw + i, (size_t)k) && c) {
            memcpy(text + t, raw + i, (size_t)k);
            t += k, i += k;
        } else { /* (and NUL, which would end the JSON string) */
            int m = 1;
            while (k > 1 && i + k > *n && i + m < *n && ((unsigned char)raw[i + m] & 0xC0) == 0x80) m++;
            if (i + m < *n) m = 1; /* not a character cut short by the end */
            memcpy(text + t, "\xEF\xBF\xBD", 3);
            t += 3, i += m;
        }
    }
    text[t] = 0;
}

/* A chat logprobs entry: {"token", "bytes", "logprob"}, and with top the
 * record's alternatives as "top_logprobs"; NULL when out of memory. */
static cJSON *chat_entry(const http_server *srv, int32_t tok, float logprob, const lp_token *top) {
    char raw[TOKEN_RAW], text[3 * TOKEN_RAW + 1];
    int n;
    token_text(srv, tok, raw, &n, text);
    cJSON *e = cJSON_CreateObject(), *b = e ? cJSON_AddArrayToObject(e, "bytes") : NULL, *alts = NULL;
    bool ok = b && cJSON_AddStringToObject(e, "token", text) && cJSON_AddNumberToObject(e, "logprob", logprob) &&
              (!top || (alts = cJSON_AddArrayToObject(e, "top_logprobs")));
    for (int i = 0; ok && i < n; i++) ok = cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)raw[i]));
    for (int k = 0; ok && top && k < top->n_top; k++) {
        cJSON *a = chat_entry(srv, top->top[k], top->top_logprob[k], NULL);
        ok = a && cJSON_AddItemToArray(alts, a);
        if (!ok) cJSON_Delete(a);
    }
    if (!ok) { cJSON_Delete(e); return NULL; }
    return e;
}

/* Chat: {"content": [entries], "refusal": null}. */
static cJSON *chat_logprobs(const http_server *srv, const lp_token *r, int n) {
    cJSON *o = cJSON_CreateObject(), *content = o ? cJSON_AddArrayToObject(o, "content") : NULL;
    bool ok = content && cJSON_AddNullToObject(o, "refusal");
    for (int i = 0; ok && i < n; i++) {
        cJSON *e = chat_entry(srv, r[i].token, r[i].logprob, &r[i]);
        ok = e && cJSON_AddItemToArray(content, e);
        if (!ok) cJSON_Delete(e);
    }
    if (!ok) { cJSON_Delete(o); return NULL; }
    return o;
}

/* Completions (the legacy form): {"tokens", "token_logprobs",
 * "top_logprobs": [{text: logprob}], "text_offset"}, offsets in bytes from
 * the start of the reply's text. */
static cJSON *completion_logprobs(const http_server *srv, const lp_token *r, int n) {
    cJSON *o = cJSON_CreateObject(), *toks = o ? cJSON_AddArrayToObject(o, "tokens") : NULL,
          *lps = toks ? cJSON_AddArrayToObject(o, "token_logprobs") : NULL,
          *tops = lps ? cJSON_AddArrayToObject(o, "top_logprobs") : NULL,
          *offs = tops ? cJSON_AddArrayToObject(o, "text_offset") : NULL;
    bool ok = offs != NULL;
    for (int i = 0; ok && i < n; i++) {
        char raw[TOKEN_RAW], text[3 * TOKEN_RAW + 1];
        int len;
        token_text(srv, r[i].token, raw, &len, text);
        cJSON *top = cJSON_CreateObject();
        ok = top && cJSON_AddItemToArray(tops, top);
        if (!ok) cJSON_Delete(top);
        for (int k = 0; ok && k < r[i].n_top; k++) {
            char alt[3 * TOKEN_RAW + 1];
            token_text(srv, r[i].top[k], raw, &len, alt);
            ok = cJSON_AddNumberToObject(top, alt, r[i].top_logprob[k]) != NULL;
        }
        if (ok && !r[i].scored) /* a prompt's first token: nothing predicts it */
            ok = cJSON_ReplaceItemInArray(tops, cJSON_GetArraySize(tops) - 1, cJSON_CreateNull());
        ok = ok && cJSON_AddItemToArray(toks, cJSON_CreateString(text)) &&
             cJSON_AddItemToArray(lps, r[i].scored ? cJSON_CreateNumber(r[i].logprob) : cJSON_CreateNull()) &&
             cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)r[i].offset));
    }
    if (!ok) { cJSON_Delete(o); return NULL; }
    return o;
}

/* Puts the logprobs of records r[0..n) into a choice (its "logprobs": null
 * until then); true when none were asked for. */
static bool set_logprobs(const conn *cs, cJSON *choice, const lp_token *r, int n) {
    if (!cs->job->req.logprobs) return true;
    cJSON *lp = cs->route == R_CHAT ? chat_logprobs(cs->srv, r, n) : completion_logprobs(cs->srv, r, n);
    if (lp && cJSON_ReplaceItemInObjectCaseSensitive(choice, "logprobs", lp)) return true;
    cJSON_Delete(lp);
    return false;
}

/* Records of j->lp whose text starts in j->text[0..len), from the first not
 * yet sent (under j->mu): tokens whose text a stop string cut away are
 * never reported. */
static int lp_ready(const job *j, int from) {
    int k = from;
    while (k < j->n_lp && j->lp[k].offset < j->len) k++;
    return k;
}

static bool add_usage(cJSON *o, const job *j) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage"), *d;
    return u && cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt) &&
           cJSON_AddNumberToObject(u, "completion_tokens", j->n_gen) &&
           cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_gen) &&
           (d = cJSON_AddObjectToObject(u, "prompt_tokens_details")) &&
           cJSON_AddNumberToObject(d, "cached_tokens", j->n_cached);
}

/* Non-streaming: wait for the whole reply, then send one JSON object. */
/* The reply's records: with echo, the prompt's first, then the generated
 * ones with their offsets moved past the prompt's text (j done: nothing
 * writes j any more). Caller frees; NULL when out of memory. */
static lp_token *all_records(const job *j, int *n) {
    int n_gen = lp_ready(j, 0), n_prompt = j->prompt_done ? j->n_plp : 0;
    lp_token *r = malloc((size_t)(n_prompt + n_gen + 1) * sizeof *r);
    if (!r) return NULL;
    if (n_prompt) memcpy(r, j->plp, (size_t)n_prompt * sizeof *r);
    for (int i = 0; i < n_gen; i++) {
        r[n_prompt + i] = j->lp[i];
        r[n_prompt + i].offset += j->echo_len;
    }
    *n = n_prompt + n_gen;
    return r;
}

/* A finished reply that calls tools, as OpenAI's "tool_calls" list; NULL
 * for one that does not (plain text, or a call cut short). */
static cJSON *reply_calls(const conn *cs) {
    const job *j = cs->job;
    bool undecided;
    if (!j->req.tools || !j->finish_reason || strcmp(j->finish_reason, "stop") || /* (NULL: an error) */
        !tools_text_is_call(j->text, j->len, &undecided))
        return NULL;
    return tools_reply_calls(j->text, j->len, strchr(cs->id, '-') + 1);
}

static enum MHD_Result reply_whole(conn *cs, struct MHD_Connection *c) {
    job *j = cs->job;
    for (;;) {
        job_wait(j, SIZE_MAX, WAIT_MS);
        pthread_mutex_lock(&j->mu);
        bool done = j->done;
        pthread_mutex_unlock(&j->mu);
        if (done) break;
        if (client_gone(cs->fd)) { atomic_store(&j->cancelled, true); return MHD_NO; }
    }
    restart_idle_timer(c);
    if (j->error_status) return fail(cs, c, j->error_status, "server_error", NULL, j->error);
    bool chat = cs->route == R_CHAT;
    cJSON *choice, *o = envelope(cs, chat ? "chat.completion" : "text_completion", &choice);
    cJSON *msg = o && chat ? cJSON_AddObjectToObject(choice, "message") : NULL;
    /* echo: the prompt's text, then the reply's */
    char *text = malloc(j->echo_len + j->len + 1);
    if (text) {
        if (j->echo_len) memcpy(text, j->echo, j->echo_len);
        if (j->len) memcpy(text + j->echo_len, j->text, j->len);
        text[j->echo_len + j->len] = 0;
    }
    int n_lp = 0;
    lp_token *lp = j->req.logprobs ? all_records(j, &n_lp) : NULL;
    cJSON *calls = reply_calls(cs);
    bool ok = o && text && (!j->req.logprobs || lp) &&
              (chat ? msg && cJSON_AddStringToObject(msg, "role", "assistant") &&
                          (calls ? cJSON_AddNullToObject(msg, "content") &&
                                       cJSON_AddItemToObject(msg, "tool_calls", calls)
                                 : cJSON_AddStringToObject(msg, "content", text) != NULL)
                    : cJSON_AddStringToObject(choice, "text", text) != NULL) &&
              cJSON_AddStringToObject(choice, "finish_reason", calls ? "tool_calls" : j->finish_reason) &&
              add_usage(o, j) && set_logprobs(cs, choice, lp, n_lp);
    if (calls && !cJSON_GetObjectItem(msg, "tool_calls")) cJSON_Delete(calls);
    free(text);
    free(lp);
    if (!ok) { cJSON_Delete(o); return fail(cs, c, 500, "server_error", NULL, "out of memory"); }
    return send_json(cs, c, 200, o);
}

/* Appends "data: JSON\n\n" to the connection's output, taking o. */
static bool emit(conn *cs, cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    bool ok = s && buf_add(&cs->out, "data: ", 6) && buf_add(&cs->out, s, strlen(s)) && buf_add(&cs->out, "\n\n", 2);
    free(s);
    return ok;
}

/* One chunk: new text (may be "") with the logprobs of lp[0..n_lp) when
 * asked for, or the last one with finish_reason. */
static bool emit_chunk(conn *cs, const char *text, const char *finish, const lp_token *lp, int n_lp) {
    bool chat = cs->route == R_CHAT;
    cJSON *choice, *o = envelope(cs, chat ? "chat.completion.chunk" : "text_completion", &choice);
    bool ok = o != NULL;
    if (ok && chat) {
        /* OpenAI's first chunk carries the role; the last an empty delta */
        cJSON *d = cJSON_AddObjectToObject(choice, "delta");
        bool role_only = !cs->sent_role && !text[0] && cs->job->req.tools; /* (a call may follow, not content) */
        ok = d && (cs->sent_role || cJSON_AddStringToObject(d, "role", "assistant")) &&
             (finish || role_only || cJSON_AddStringToObject(d, "content", text));
        cs->sent_role = true;
    } else if (ok) {
        ok = cJSON_AddStringToObject(choice, "text", text);
    }
    ok = ok && (finish ? cJSON_AddStringToObject(choice, "finish_reason", finish) != NULL
                       : cJSON_AddNullToObject(choice, "finish_reason") != NULL);
    ok = ok && (finish || !text[0] || set_logprobs(cs, choice, lp, n_lp));
    if (!ok) { cJSON_Delete(o); return false; }
    return emit(cs, o);
}

/* A reply's tool calls, all in one chunk (taking calls): each with its
 * "index", as streamed calls are. */
static bool emit_calls(conn *cs, cJSON *calls) {
    cJSON *choice, *o = envelope(cs, "chat.completion.chunk", &choice), *d = NULL, *c;
    int i = 0;
    bool ok = o && (d = cJSON_AddObjectToObject(choice, "delta")) && cJSON_AddNullToObject(choice, "finish_reason");
    cJSON_ArrayForEach(c, calls) ok = ok && cJSON_AddNumberToObject(c, "index", i++);
    if (ok && cJSON_AddItemToObject(d, "tool_calls", calls)) return emit(cs, o);
    cJSON_Delete(calls);
    cJSON_Delete(o);
    return false;
}

/* The events after the job is done: finish_reason (the job's unless
 * given, or the error), usage if asked for, and the [DONE] sentinel. */
static bool emit_end(conn *cs, const char *finish) {
    job *j = cs->job;
    bool ok;
    if (j->error_status) {
        api_error e;
        api_set_error(&e, j->error_status, "server_error", NULL, NULL, "%s", j->error);
        ok = emit(cs, error_object(&e));
    } else {
        ok = emit_chunk(cs, "", finish ? finish : j->finish_reason, NULL, 0);
        if (ok && j->req.include_usage) {
            cJSON *choice, *o = envelope(cs, cs->route == R_CHAT ? "chat.completion.chunk" : "text_completion", &choice);
            /* the usage chunk has no choices */
            if (o) cJSON_DeleteItemFromObject(o, "choices");
            ok = o && cJSON_AddArrayToObject(o, "choices") && add_usage(o, j);
            if (!ok) cJSON_Delete(o);
            else ok = emit(cs, o);
        }
    }
    return ok && buf_add(&cs->out, "data: [DONE]\n\n", 14);
}

/* MHD pulls the event stream from here, in the connection's thread. We
 * block until the job has news, checking every WAIT_MS whether the client
 * is still there: a client that left cancels its job, and the scheduler
 * frees the slot at its next step. */
static ssize_t sse_reader(void *cls, uint64_t pos, char *dst, size_t max) {
    conn *cs = cls;
    job *j = cs->job;
    while (cs->out_off == cs->out.len) {
        if (cs->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        cs->out.len = cs->out_off = 0;
        if (cs->route == R_CHAT && !cs->sent_role) {
            if (!emit_chunk(cs, "", NULL, NULL, 0)) goto broken;
            continue;
        }
        if (client_gone(cs->fd)) goto broken;
        if (j->req.echo && !cs->sent_echo) { /* the prompt's text (and logprobs) once it is evaluated */
            pthread_mutex_lock(&j->mu);
            bool ready = j->prompt_done;
            int n_plp = j->n_plp;
            bool done = j->done;
            pthread_mutex_unlock(&j->mu);
            if (ready && !emit_chunk(cs, j->echo, NULL, j->plp, n_plp)) goto broken;
            cs->sent_echo = ready || done; /* (done without it: an error, which follows) */
            if (!cs->sent_echo) job_wait(j, cs->text_sent, WAIT_MS);
            continue;
        }
        job_wait(j, cs->text_seen, WAIT_MS);
        pthread_mutex_lock(&j->mu);
        char *news = NULL;
        size_t n = j->len - cs->text_sent;
        bool done = j->done, oom = false, undecided;
        int lp_to = lp_ready(j, cs->lp_sent), n_lp = lp_to - cs->lp_sent;
        lp_token *lp = NULL;
        cJSON *calls = NULL;
        cs->text_seen = j->len;
        /* with tools, a reply that is (or may yet be) a call is held back
         * until it is whole, and then sent as tool calls (one cut short by
         * max_tokens as text, one cut short by an error not at all) */
        if (j->req.tools && !cs->text_sent && n) {
            bool call = tools_text_is_call(j->text, j->len, &undecided);
            if (call && done) calls = reply_calls(cs);
            if ((call || undecided) && (!done || calls || j->error_status)) n = 0;
        }
        if (n) {
            news = malloc(n + 1);
            lp = n_lp ? malloc((size_t)n_lp * sizeof *lp) : NULL;
            if (news && (lp || !n_lp)) {
                memcpy(news, j->text + cs->text_sent, n);
                news[n] = 0;
                cs->text_sent = j->len;
                if (n_lp) memcpy(lp, j->lp + cs->lp_sent, (size_t)n_lp * sizeof *lp);
                for (int i = 0; i < n_lp; i++) lp[i].offset += j->echo_len;
                cs->lp_sent = lp_to;
            } else {
                oom = true;
            }
        }
        pthread_mutex_unlock(&j->mu);
        bool ok = !oom && (!news || emit_chunk(cs, news, NULL, lp, n_lp)) && (!calls || emit_calls(cs, calls)) &&
                  (!done || emit_end(cs, calls ? "tool_calls" : NULL));
        free(news);
        free(lp);
        if (!ok) goto broken;
        cs->ended = done;
        restart_idle_timer(cs->mhd);
    }
    size_t n = cs->out.len - cs->out_off;
    if (n > max) n = max;
    memcpy(dst, cs->out.s + cs->out_off, n);
    cs->out_off += n;
    return (ssize_t)n;
broken:
    atomic_store(&j->cancelled, true);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result reply_stream(conn *cs, struct MHD_Connection *c) {
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_reader, cs, NULL);
    if (!r) return MHD_NO;
    if (MHD_add_response_header(r, "Content-Type", "text/event-stream") != MHD_YES ||
        MHD_add_response_header(r, "Cache-Control", "no-cache") != MHD_YES) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    return queue(cs, c, 200, r);
}

static enum MHD_Result handle_generate(conn *cs, struct MHD_Connection *c) {
    http_server *srv = cs->srv;
    api_error err;
    api_limits lim = { srv->n_ctx, srv->n_vocab, srv->model_names, 3 };
    job *j = job_new();
    if (!j) return fail(cs, c, 500, "server_error", NULL, "out of memory");
    int rc = cs->route == R_CHAT ? api_parse_chat(cs->body.s, cs->body.len, &lim, &j->req, &err)
                                 : api_parse_completion(cs->body.s, cs->body.len, &lim, &j->req, &err);
    if (!rc) rc = prepare_job(srv, j, &err);
    if (!rc) {
        sched_submit_result sr = sched_submit(srv->sched, j);
        if (sr == SCHED_FULL) api_set_error(&err, 503, "server_error", NULL, "server_busy",
                                            "all slots are busy and the queue is full; retry later");
        if (sr == SCHED_STOPPING) api_set_error(&err, 503, "server_error", NULL, NULL, "the server is shutting down");
        rc = sr == SCHED_OK ? 0 : -1;
    }
    if (rc) { job_release(j); return send_error(cs, c, &err); }
    cs->job = j;
    atomic_fetch_add(&srv->n_replying, 1);
    make_id(cs, cs->route == R_CHAT ? "chatcmpl" : "cmpl");
    cs->created = time(NULL);
    return j->req.stream ? reply_stream(cs, c) : reply_whole(cs, c);
}

/* ---- Dispatch ------------------------------------------------------------------ */

static enum MHD_Result dispatch(conn *cs, struct MHD_Connection *c) {
    http_server *srv = cs->srv;
    switch (cs->route) {
    case R_PAGE: {
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(page_html), (void *)page_html, MHD_RESPMEM_PERSISTENT);
        if (r && MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8") != MHD_YES) {
            MHD_destroy_response(r);
            return MHD_NO;
        }
        return queue(cs, c, 200, r);
    }
    case R_HEALTH: {
        static const char ok[] = "{\"status\":\"ok\"}";
        struct MHD_Response *r = MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
        if (r && MHD_add_response_header(r, "Content-Type", "application/json") != MHD_YES) {
            MHD_destroy_response(r);
            return MHD_NO;
        }
        return queue(cs, c, 200, r);
    }
    case R_MODELS: return handle_models(cs, c);
    case R_MODEL: return handle_model(cs, c);
    case R_METRICS: {
        size_t len = 0;
        char *text = metrics_render(srv->metrics, &len);
        return send_body(cs, c, 200, text, len, "text/plain; version=0.0.4; charset=utf-8");
    }
    case R_TOKENIZE: return handle_tokenize(cs, c);
    case R_DETOKENIZE: return handle_detokenize(cs, c);
    case R_CHAT:
    case R_COMPLETIONS: return handle_generate(cs, c);
    default: return fail(cs, c, 500, "server_error", NULL, "no handler");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    conn *cs = *con_cls;
    if (!cs) { /* the headers are in */
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        cs->srv = cls;
        cs->mhd = c;
        cs->t_start = mono_now();
        snprintf(cs->method, sizeof cs->method, "%s", method);
        snprintf(cs->path, sizeof cs->path, "%s", url);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cs->fd = ci ? ci->connect_fd : -1;
        if (check_headers(cs, c, url, method)) return send_error(cs, c, &cs->err);
        return MHD_YES;
    }
    if (cs->status) { *upload_size = 0; return MHD_YES; } /* answered already */
    if (*upload_size) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (!cs->err.status && cs->body.len + n > cs->srv->max_body) {
            api_set_error(&cs->err, 413, NULL, NULL, "body_too_large", "the request body is over %zu bytes",
                          cs->srv->max_body);
            cs->dropped = cs->body.len;
            free(cs->body.s);
            cs->body = (buf){ 0 };
        }
        if (!cs->err.status && !buf_add(&cs->body, upload, n))
            api_set_error(&cs->err, 500, "server_error", NULL, NULL, "out of memory for the request body");
        if (cs->err.status && (cs->dropped += n) > DRAIN_LIMIT) return send_error(cs, c, &cs->err);
        return MHD_YES;
    }
    /* the whole request is in */
    if (cs->err.status) return send_error(cs, c, &cs->err);
    return dispatch(cs, c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    http_server *srv = cls;
    conn *cs = *con_cls;
    if (!cs) return;
    if (srv->verbose)
        fprintf(stderr, "frugal serve: %s %s %d %.0f ms%s\n", cs->method, cs->path, cs->status,
                (mono_now() - cs->t_start) * 1e3, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (aborted)");
    if (cs->job) {
        atomic_store(&cs->job->cancelled, true); /* no effect once done */
        job_release(cs->job);
        atomic_fetch_sub(&srv->n_replying, 1);
    }
    free(cs->body.s);
    free(cs->out.s);
    free(cs);
    *con_cls = NULL;
}

struct MHD_Daemon *http_start(http_server *srv, int listen_fd) {
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    if (srv->verbose) flags |= MHD_USE_ERROR_LOG;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                            MHD_OPTION_END);
}

void http_quiesce(struct MHD_Daemon *d) {
    MHD_socket s = MHD_quiesce_daemon(d);
    if (s != MHD_INVALID_SOCKET) close(s);
}

void http_drain(http_server *srv, double timeout_s) {
    double end = mono_now() + timeout_s;
    while (atomic_load(&srv->n_replying) > 0 && mono_now() < end) {
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

void http_stop(struct MHD_Daemon *d) { MHD_stop_daemon(d); }
