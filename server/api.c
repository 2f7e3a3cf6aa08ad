/*
 * api.c - parsing and validating request bodies (see api.h).
 *
 * The rules follow OpenAI's API where it has one: unknown fields are
 * ignored, null means "not given", and a field we cannot honour (n > 1,
 * suffix, the legacy functions, ...) is refused rather than silently
 * ignored, because a client that asks for it would otherwise get
 * something it did not ask for without knowing. Tools are read by
 * tools.c.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api.h"
#include "tools.h"

void api_set_error(api_error *err, int status, const char *type, const char *param,
                   const char *code, const char *fmt, ...) {
    err->status = status;
    err->type = type ? type : "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static int bad(api_error *err, const char *param, const char *fmt, const char *what) {
    api_set_error(err, 400, NULL, param, NULL, fmt, what);
    return -1;
}

static int nomem(api_error *err) {
    api_set_error(err, 500, "server_error", NULL, NULL, "out of memory");
    return -1;
}

bool api_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len;
        unsigned cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8 */
        static const unsigned min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (cp < min_cp[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
        i += len;
    }
    return true;
}

/* True when the JSON text has a NUL character in a string, raw or as
 * the escape \u0000. A backslash only occurs inside strings, and one
 * escapes the next character, so "\\u0000" is a backslash and text. */
static bool has_nul(const char *s, size_t n) {
    if (memchr(s, 0, n)) return true;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (i + 5 < n && !memcmp(s + i + 1, "u0000", 5)) return true;
        i++;
    }
    return false;
}

/* Parses the body into a JSON object, or fills err. JSON text must be
 * UTF-8 (RFC 8259), and cJSON would pass invalid bytes through into
 * strings we later tokenize and echo back, so we check that first. */
static cJSON *parse_object(const char *body, size_t len, api_error *err) {
    if (!body || len == 0) { bad(err, NULL, "%s", "the request body is empty; expected a JSON object"); return NULL; }
    if (!api_utf8_valid(body, len)) { bad(err, NULL, "%s", "the request body is not valid UTF-8"); return NULL; }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) { bad(err, NULL, "%s", "the request body is not valid JSON"); return NULL; }
    size_t value_len = end ? (size_t)(end - body) : 0;
    while (end && end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r' || !*end)) end++;
    if (!end || end != body + len) {
        cJSON_Delete(root);
        bad(err, NULL, "%s", "the request body has data after the JSON value");
        return NULL;
    }
    /* cJSON keeps strings NUL-terminated: a NUL in one would silently cut
     * off the rest of a message or prompt */
    if (has_nul(body, value_len)) {
        cJSON_Delete(root);
        bad(err, NULL, "%s", "strings must not contain NUL characters (\\u0000)");
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        bad(err, NULL, "%s", "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* A field, or NULL when it is absent or null (both mean "not given"). */
static const cJSON *field(const cJSON *o, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

/* Numeric fields: 0 when not given (*out unchanged), 1 when set, -1 with
 * err filled when of the wrong type or out of [lo, hi]. */
static int get_number(const cJSON *o, const char *name, double lo, double hi, bool integral,
                      double *out, api_error *err) {
    const cJSON *it = field(o, name);
    if (!it) return 0;
    double v = it->valuedouble;
    if (!cJSON_IsNumber(it)) return bad(err, name, integral ? "'%s' must be an integer" : "'%s' must be a number", name);
    if (integral && (!isfinite(v) || floor(v) != v)) return bad(err, name, "'%s' must be an integer", name);
    if (!isfinite(v) || v < lo || v > hi) {
        api_set_error(err, 400, NULL, name, NULL, "'%s' must be in [%g, %g]", name, lo, hi);
        return -1;
    }
    *out = v;
    return 1;
}

static int get_bool(const cJSON *o, const char *name, bool *out, api_error *err) {
    const cJSON *it = field(o, name);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return bad(err, name, "'%s' must be true or false", name);
    *out = cJSON_IsTrue(it);
    return 1;
}

/* True for a value that asks for nothing: false, 0, "", [] or {}. */
static bool is_empty_value(const cJSON *it) {
    if (cJSON_IsFalse(it)) return true;
    if (cJSON_IsNumber(it)) return it->valuedouble == 0;
    if (cJSON_IsString(it)) return !it->valuestring[0];
    if (cJSON_IsArray(it) || cJSON_IsObject(it)) return !it->child;
    return false;
}

/* Features of the OpenAI API we do not implement: asking for them is an
 * error, sending their "off" value is fine. */
static int refuse_unsupported(const cJSON *o, api_kind kind, api_error *err) {
    static const char *const names[] = { "echo", "suffix", "tools", "functions", "tool_choice", "function_call" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const cJSON *it = field(o, names[i]);
        if (!it || is_empty_value(it) || (kind == API_COMPLETION && !strcmp(names[i], "echo"))) continue;
        if (kind == API_CHAT && !strncmp(names[i], "tool", 4)) continue; /* (tools.c) */
        if (!strcmp(names[i], "tool_choice") && cJSON_IsString(it) && !strcmp(it->valuestring, "none")) continue;
        return bad(err, names[i], "'%s' is not supported by this server", names[i]);
    }
    const cJSON *bo = field(o, "best_of");
    if (bo && !(cJSON_IsNumber(bo) && bo->valuedouble == 1)) return bad(err, "best_of", "'%s' must be 1", "best_of");
    return 0;
}

/* response_format: {"type": "text"} (the default), {"type":
 * "json_object"} (JSON mode), or {"type": "json_schema", "json_schema":
 * {"name", "schema", "strict", "description"}}: the schema is kept as
 * text, and compiled against the model later (http.c), which is where a
 * schema JSON mode cannot follow is refused. */
static int parse_response_format(const cJSON *o, api_request *r, api_error *err) {
    const cJSON *rf = field(o, "response_format");
    if (!rf) return 0;
    const cJSON *t = cJSON_IsObject(rf) ? field(rf, "type") : NULL;
    const char *type = t && cJSON_IsString(t) ? t->valuestring : "";
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) {
        r->json_object = true;
        return 0;
    }
    if (strcmp(type, "json_schema"))
        return bad(err, "response_format", "'%s' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                   "{\"type\": \"json_schema\", \"json_schema\": {...}}", "response_format");
    const cJSON *js = field(rf, "json_schema"), *name = js ? field(js, "name") : NULL;
    const cJSON *schema = js ? field(js, "schema") : NULL;
    if (!cJSON_IsObject(js) || !cJSON_IsString(name))
        return bad(err, "response_format", "%s", "'response_format.json_schema' must be an object with a 'name'");
    r->json_object = true;
    if (!schema) return 0; /* no schema: any object */
    if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema))
        return bad(err, "response_format", "%s", "'response_format.json_schema.schema' must be a JSON Schema object");
    if (!(r->json_schema = cJSON_PrintUnformatted(schema))) {
        api_set_error(err, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    return 0;
}

/* Chat: "logprobs": bool and "top_logprobs": 0..20, which needs logprobs
 * true. Completions (the legacy form): "logprobs": N, 0..20, the
 * alternatives per token. */
static int parse_logprobs(const cJSON *o, api_request *r, api_error *err) {
    double v = 0;
    int got;
    if (r->kind == API_COMPLETION) {
        if ((got = get_number(o, "logprobs", 0, API_MAX_TOP_LOGPROBS, true, &v, err)) < 0) return -1;
        r->logprobs = got;
        r->top_logprobs = (int)v;
        return 0;
    }
    if (get_bool(o, "logprobs", &r->logprobs, err) < 0) return -1;
    if ((got = get_number(o, "top_logprobs", 0, API_MAX_TOP_LOGPROBS, true, &v, err)) < 0) return -1;
    if (got && !r->logprobs) return bad(err, "top_logprobs", "%s", "'top_logprobs' needs 'logprobs': true");
    r->top_logprobs = (int)v;
    return 0;
}

/* logit_bias: {"token id": bias, ...}, ids as decimal strings (OpenAI's
 * form), biases in [-100, 100], each id once. */
static int parse_logit_bias(const cJSON *o, const api_limits *lim, api_request *r, api_error *err) {
    const cJSON *lb = field(o, "logit_bias"), *it;
    if (!lb) return 0;
    if (!cJSON_IsObject(lb))
        return bad(err, "logit_bias", "%s", "'logit_bias' must be an object of token ids to biases");
    int n = cJSON_GetArraySize(lb);
    if (n > FRUGAL_MAX_LOGIT_BIAS) {
        api_set_error(err, 400, NULL, "logit_bias", NULL, "'logit_bias' names at most %d tokens",
                      FRUGAL_MAX_LOGIT_BIAS);
        return -1;
    }
    if (!n) return 0;
    r->bias_tokens = malloc((size_t)n * sizeof *r->bias_tokens);
    r->bias = malloc((size_t)n * sizeof *r->bias);
    if (!r->bias_tokens || !r->bias) return nomem(err);
    cJSON_ArrayForEach(it, lb) {
        size_t digits = strspn(it->string, "0123456789");
        long id = digits && digits <= 9 && !it->string[digits] ? strtol(it->string, NULL, 10) : -1;
        if (id < 0 || id >= lim->n_vocab) {
            api_set_error(err, 400, NULL, "logit_bias", NULL,
                          "'logit_bias' keys must be token ids in [0, %d]; got '%.40s'", lim->n_vocab - 1, it->string);
            return -1;
        }
        for (int i = 0; i < r->n_bias; i++)
            if (r->bias_tokens[i] == id)
                return bad(err, "logit_bias", "'logit_bias' names token %s twice", it->string);
        if (!cJSON_IsNumber(it) || !(fabs(it->valuedouble) <= 100))
            return bad(err, "logit_bias", "%s", "'logit_bias' values must be numbers in [-100, 100]");
        r->bias_tokens[r->n_bias] = (int32_t)id;
        r->bias[r->n_bias++] = (float)it->valuedouble;
    }
    return 0;
}

static int parse_stop(const cJSON *o, api_request *r, api_error *err) {
    const cJSON *s = field(o, "stop");
    if (!s) return 0;
    const cJSON *one = cJSON_IsString(s) ? s : NULL, *it;
    if (!one && !cJSON_IsArray(s)) return bad(err, "stop", "%s", "'stop' must be a string or a list of strings");
    if (!one && cJSON_GetArraySize(s) > API_MAX_STOP) {
        api_set_error(err, 400, NULL, "stop", NULL, "'stop' holds at most %d strings", API_MAX_STOP);
        return -1;
    }
    for (it = one ? one : s->child; it; it = one ? NULL : it->next) {
        if (!cJSON_IsString(it)) return bad(err, "stop", "%s", "'stop' must be a string or a list of strings");
        if (!it->valuestring[0]) return bad(err, "stop", "%s", "stop strings must not be empty");
        if (!(r->stop[r->n_stop] = strdup(it->valuestring))) return nomem(err);
        r->stop_len[r->n_stop] = strlen(it->valuestring);
        r->n_stop++;
    }
    return 0;
}

/* The fields chat and completions share: model, sampling, limits, stream. */
static int parse_common(const cJSON *o, const api_limits *lim, api_request *r, api_error *err) {
    if (refuse_unsupported(o, r->kind, err) || parse_response_format(o, r, err)) return -1;
    if (r->kind == API_COMPLETION && get_bool(o, "echo", &r->echo, err) < 0) return -1;
    const cJSON *model = field(o, "model");
    if (model) {
        if (!cJSON_IsString(model)) return bad(err, "model", "'%s' must be a string", "model");
        bool known = false;
        for (int i = 0; i < lim->n_model_names && !known; i++)
            known = lim->model_names[i] && !strcmp(model->valuestring, lim->model_names[i]);
        if (!known) {
            api_set_error(err, 400, NULL, "model", "model_not_found",
                          "the model '%.100s' is not served here (GET /v1/models lists it)", model->valuestring);
            return -1;
        }
    }
    double v = 1;
    if (get_number(o, "n", -1e18, 1e18, true, &v, err) < 0) return -1;
    if (v != 1) return bad(err, "n", "%s", "only n = 1 (one choice per request) is supported");
    int got = 0;
    if (r->kind == API_CHAT && (got = get_number(o, "max_completion_tokens", 1, lim->n_ctx, true, &v, err)) < 0) return -1;
    if (got) r->max_tokens = (int)v;
    /* 0 only with echo: the prompt (and its logprobs) alone, as OpenAI allows */
    if ((got = get_number(o, "max_tokens", r->echo ? 0 : 1, lim->n_ctx, true, &v, err)) < 0) return -1;
    if (got) r->max_tokens = (int)v;
    r->echo_only = got && v == 0;

    frugal_sampler_params *sp = &r->sampling;
    *sp = frugal_sampler_default_params();
    if ((got = get_number(o, "temperature", 0, 2, false, &v, err)) < 0) return -1;
    if (got) sp->temperature = (float)v;
    if ((got = get_number(o, "top_p", 0, 1, false, &v, err)) < 0) return -1;
    if (got) sp->top_p = (float)v;
    if ((got = get_number(o, "min_p", 0, 1, false, &v, err)) < 0) return -1;
    if (got) sp->min_p = (float)v;
    /* top_k past the vocabulary means "all of it"; -1 is llama.cpp's "off" */
    if ((got = get_number(o, "top_k", -1, 1e9, true, &v, err)) < 0) return -1;
    if (got) sp->top_k = v < 0 ? 0 : v > lim->n_vocab ? lim->n_vocab : (int)v;
    if ((got = get_number(o, "repeat_penalty", 0.01, 100, false, &v, err)) < 0) return -1;
    if (got) sp->repeat_penalty = (float)v;
    if ((got = get_number(o, "frequency_penalty", -2, 2, false, &v, err)) < 0) return -1;
    if (got) sp->frequency_penalty = (float)v;
    if ((got = get_number(o, "presence_penalty", -2, 2, false, &v, err)) < 0) return -1;
    if (got) sp->presence_penalty = (float)v;
    if (parse_logit_bias(o, lim, r, err)) return -1;
    if (parse_logprobs(o, r, err)) return -1;
    /* any integer a client may send: negative seeds wrap as in C */
    if ((got = get_number(o, "seed", -9223372036854775808.0, 18446744073709551615.0, true, &v, err)) < 0) return -1;
    if (got) {
        sp->seed = v < 0 ? (uint64_t)(int64_t)v : v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v;
        r->seed_given = true;
    }
    if (parse_stop(o, r, err)) return -1;
    if (get_bool(o, "stream", &r->stream, err) < 0) return -1;
    const cJSON *so = field(o, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return bad(err, "stream_options", "'%s' must be an object", "stream_options");
        if (get_bool(so, "include_usage", &r->include_usage, err) < 0) return -1;
    }
    if (r->kind == API_CHAT && tools_parse(o, r, err)) return -1;
    /* a call is JSON mode of its own, and its tokens are no content to score */
    if (r->tools && r->json_object)
        return bad(err, "response_format", "'%s' cannot be combined with 'tools'", "response_format");
    if (r->tools && r->logprobs) return bad(err, "logprobs", "'%s' cannot be combined with 'tools'", "logprobs");
    return 0;
}

/* A message's content: a string, or a list of {"type": "text", "text": ...}
 * parts, which we join with newlines. Returns a malloc'd string. */
static char *message_content(const cJSON *c, api_error *err) {
    if (cJSON_IsString(c)) {
        char *s = strdup(c->valuestring);
        if (!s) nomem(err);
        return s;
    }
    if (!cJSON_IsArray(c)) {
        bad(err, "messages", "%s", "a message's 'content' must be a string or a list of text parts");
        return NULL;
    }
    size_t total = 1;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *type = cJSON_IsObject(p) ? field(p, "type") : NULL, *text = type ? field(p, "text") : NULL;
        if (!type || !cJSON_IsString(type) || strcmp(type->valuestring, "text") || !text || !cJSON_IsString(text)) {
            bad(err, "messages", "%s", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
            return NULL;
        }
        total += strlen(text->valuestring) + 1;
    }
    char *s = malloc(total), *at = s;
    if (!s) { nomem(err); return NULL; }
    cJSON_ArrayForEach(p, c) {
        size_t n = strlen(field(p, "text")->valuestring);
        if (at != s) *at++ = '\n';
        memcpy(at, field(p, "text")->valuestring, n);
        at += n;
    }
    *at = 0;
    return s;
}

/* Appends to the last message's content (a tool result after another). */
static int append_content(frugal_chat_msg *m, const char *more, api_error *err) {
    size_t n = strlen(m->content), k = strlen(more);
    char *s = realloc((char *)m->content, n + 2 + k + 1);
    if (!s) return nomem(err);
    memcpy(s + n, "\n\n", 2);
    memcpy(s + n + 2, more, k + 1);
    m->content = s;
    return 0;
}

/* A tool's result, as the user message the model reads it in: "Result of
 * NAME:\n..." (results in a row share one message). */
static char *tool_result(const cJSON *msgs, const cJSON *m, const char *content, api_error *err) {
    const cJSON *id = field(m, "tool_call_id");
    const char *name = cJSON_IsString(id) ? tools_called_name(msgs, m, id->valuestring) : NULL;
    if (!cJSON_IsString(id)) bad(err, "messages", "%s", "a tool message needs a 'tool_call_id' string");
    else if (!name) bad(err, "messages", "%s", "a tool message's 'tool_call_id' names no earlier tool call");
    if (!name) return NULL;
    size_t n = strlen(name) + strlen(content) + 16;
    char *s = malloc(n);
    if (!s) nomem(err);
    else snprintf(s, n, "Result of %s:\n%s", name, content);
    return s;
}

/* An assistant message that called tools: its content (if any), then the
 * calls as the reply that makes them (tools.h). */
static char *assistant_calls(const cJSON *calls, const char *content, api_error *err) {
    char *t = tools_calls_text(calls, err);
    if (!t || !content[0]) return t;
    size_t n = strlen(content) + strlen(t) + 3;
    char *s = malloc(n);
    if (!s) nomem(err);
    else snprintf(s, n, "%s\n\n%s", content, t);
    free(t);
    return s;
}

/* One message's role and text (both malloc'd), or -1. Tool messages
 * become user messages; *merge: add to the message before (a tool result
 * or a user message after tool results: templates that want user and
 * assistant turns to alternate, Gemma's, refuse two user turns in a row). */
static int parse_message(const cJSON *msgs, const cJSON *m, bool after_tool, char **role_out, char **text_out,
                         bool *merge, api_error *err) {
    const cJSON *role = cJSON_IsObject(m) ? field(m, "role") : NULL, *content = role ? field(m, "content") : NULL;
    if (!cJSON_IsObject(m)) return bad(err, "messages", "%s", "each message must be an object");
    if (!role || !cJSON_IsString(role)) return bad(err, "messages", "%s", "each message needs a 'role' string");
    const char *name = role->valuestring;
    if (!strcmp(name, "developer")) name = "system"; /* OpenAI's newer name for it */
    bool tool = !strcmp(name, "tool");
    const cJSON *calls = !strcmp(name, "assistant") ? field(m, "tool_calls") : NULL;
    if (cJSON_IsArray(calls) && !calls->child) calls = NULL; /* (some clients send an empty list) */
    if (strcmp(name, "system") && strcmp(name, "user") && strcmp(name, "assistant") && !tool)
        return bad(err, "messages", "%s", "a message's role must be system, developer, user, assistant or tool");
    if (!content && !calls) return bad(err, "messages", "%s", "each message needs a 'content'");
    char *text = content ? message_content(content, err) : strdup(""), *t = text;
    if (!text) return content ? -1 : nomem(err);
    if (tool) text = tool_result(msgs, m, t, err);
    else if (calls) text = assistant_calls(calls, t, err);
    if (text != t) free(t);
    if (!text) return -1;
    *merge = (tool || !strcmp(name, "user")) && after_tool;
    *role_out = *merge ? NULL : strdup(tool ? "user" : name);
    *text_out = text;
    if (*merge || *role_out) return 0;
    free(text);
    return nomem(err);
}

/* The functions offered, in the system message: after the conversation's
 * own, or as the first message. */
static int add_tool_prompt(api_request *r, api_error *err) {
    frugal_chat_msg *first = &r->msgs[0];
    if (!strcmp(first->role, "system")) return append_content(first, r->tool_prompt, err);
    char *role = strdup("system"), *text = strdup(r->tool_prompt);
    if (!role || !text) { free(role); free(text); return nomem(err); }
    memmove(r->msgs + 1, r->msgs, r->n_msgs * sizeof *r->msgs);
    r->msgs[0] = (frugal_chat_msg){ role, text };
    r->n_msgs++;
    return 0;
}

static int parse_messages(const cJSON *o, api_request *r, api_error *err) {
    const cJSON *msgs = field(o, "messages"), *m;
    if (!msgs) return bad(err, "messages", "%s", "'messages' is required");
    if (!cJSON_IsArray(msgs) || !msgs->child) return bad(err, "messages", "%s", "'messages' must be a non-empty list");
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (!(r->msgs = calloc(n + 1, sizeof *r->msgs))) return nomem(err); /* (+1: the tools' system message) */
    bool after_tool = false;
    cJSON_ArrayForEach(m, msgs) {
        char *role, *text;
        bool merge;
        if (parse_message(msgs, m, after_tool, &role, &text, &merge, err)) return -1;
        if (merge) {
            int rc = append_content(&r->msgs[r->n_msgs - 1], text, err);
            free(text);
            if (rc) return -1;
        } else {
            r->msgs[r->n_msgs++] = (frugal_chat_msg){ role, text };
        }
        const cJSON *role_item = field(m, "role");
        after_tool = !strcmp(role_item->valuestring, "tool");
    }
    return r->tools ? add_tool_prompt(r, err) : 0;
}

/* Reads a list of token ids, each in [0, n_vocab). */
static int parse_token_list(const cJSON *a, const char *param, int n_vocab, int32_t **out, int *n, api_error *err) {
    int count = cJSON_GetArraySize(a);
    int32_t *ids = malloc((size_t)(count ? count : 1) * sizeof *ids);
    if (!ids) return nomem(err);
    const cJSON *t;
    int i = 0;
    cJSON_ArrayForEach(t, a) {
        double v = t->valuedouble;
        if (!cJSON_IsNumber(t) || floor(v) != v || v < 0 || v >= n_vocab) {
            free(ids);
            api_set_error(err, 400, NULL, param, NULL, "token ids must be integers in [0, %d)", n_vocab);
            return -1;
        }
        ids[i++] = (int32_t)v;
    }
    *out = ids;
    *n = i;
    return 0;
}

/* "prompt": a string, a list of one string, a list of token ids, or a list
 * of one list of token ids. Several prompts at once are refused (n = 1). */
static int parse_prompt(const cJSON *o, const api_limits *lim, api_request *r, api_error *err) {
    const cJSON *p = field(o, "prompt");
    if (!p) return bad(err, "prompt", "%s", "'prompt' is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        if (!(r->prompt = strdup(p->valuestring))) return nomem(err);
        return 0;
    }
    if (!cJSON_IsArray(p) || !p->child) return bad(err, "prompt", "%s", "'prompt' must be a string or a non-empty list of token ids");
    if (!cJSON_IsNumber(p->child)) return bad(err, "prompt", "%s", "'prompt' must be one string or one list of token ids");
    return parse_token_list(p, "prompt", lim->n_vocab, &r->prompt_tokens, &r->n_prompt_tokens, err);
}

static int parse_request(api_kind kind, const char *body, size_t len, const api_limits *lim,
                         api_request *out, api_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    cJSON *root = parse_object(body, len, err);
    if (!root) return -1;
    int rc = parse_common(root, lim, out, err);
    if (!rc) rc = kind == API_CHAT ? parse_messages(root, out, err) : parse_prompt(root, lim, out, err);
    cJSON_Delete(root);
    if (rc) api_request_free(out);
    return rc;
}

int api_parse_chat(const char *body, size_t len, const api_limits *lim, api_request *out, api_error *err) {
    return parse_request(API_CHAT, body, len, lim, out, err);
}

int api_parse_completion(const char *body, size_t len, const api_limits *lim, api_request *out,
                         api_error *err) {
    return parse_request(API_COMPLETION, body, len, lim, out, err);
}

void api_request_free(api_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((void *)r->msgs[i].role);
        free((void *)r->msgs[i].content);
    }
    free(r->msgs);
    free(r->prompt);
    free(r->prompt_tokens);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->bias_tokens);
    free(r->bias);
    free(r->json_schema);
    free(r->tool_schema);
    free(r->tool_prompt);
    memset(r, 0, sizeof *r);
}

int api_parse_tokenize(const char *body, size_t len, char **content, size_t *content_len,
                       bool *add_special, api_error *err) {
    *content = NULL;
    *add_special = false;
    cJSON *root = parse_object(body, len, err);
    if (!root) return -1;
    const cJSON *c = field(root, "content");
    int rc = -1;
    if (!c || !cJSON_IsString(c)) bad(err, "content", "%s", "'content' must be a string");
    else if (get_bool(root, "add_special", add_special, err) >= 0) {
        *content_len = strlen(c->valuestring);
        if ((*content = strdup(c->valuestring))) rc = 0;
        else nomem(err);
    }
    cJSON_Delete(root);
    return rc;
}

int api_parse_detokenize(const char *body, size_t len, int n_vocab, int32_t **tokens, int *n,
                         api_error *err) {
    *tokens = NULL;
    *n = 0;
    cJSON *root = parse_object(body, len, err);
    if (!root) return -1;
    const cJSON *t = field(root, "tokens");
    int rc = !t || !cJSON_IsArray(t) ? bad(err, "tokens", "%s", "'tokens' must be a list of token ids")
                                     : parse_token_list(t, "tokens", n_vocab, tokens, n, err);
    cJSON_Delete(root);
    return rc;
}
