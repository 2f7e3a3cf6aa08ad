/*
 * fuzz_api.c - libFuzzer target: the HTTP server's request parsers
 * (server/api.c), which see every byte a client sends.
 *
 * The whole input is a request body (not NUL-terminated, exact size), given
 * to each of api_parse_chat, api_parse_completion, api_parse_tokenize and
 * api_parse_detokenize with fixed limits (context 4096, vocabulary 32000,
 * one model named "m"); bodies over 1 MiB are skipped, as the server
 * refuses them before parsing.
 *
 * Checks: api_utf8_valid agrees with fuzz_utf8_valid (RFC 3629); success
 * <=> an error was not filled; a failure leaves a 4xx/5xx status, a type
 * and a message, and nothing allocated; a success holds only what the
 * validation promises (known roles, stop strings non-empty and at most
 * API_MAX_STOP, max_tokens within the context, token ids inside the
 * vocabulary, sampling parameters in range, every string valid UTF-8;
 * tools only in a chat that offers them, their prompt in the system
 * message and their reply's schema compiling or failing with a message;
 * tool messages rendered as user messages). The body is also read as a
 * reply that calls tools (tools_reply_calls): the arguments it cuts from
 * the text must be the values the text holds.
 * Everything allocated is freed, so LeakSanitizer catches leaks.
 */
#include <math.h>
#include <string.h>
#include "api.h"
#include "json_schema.h"
#include "tools.h"
#include "fuzz.h"

#define N_CTX 4096
#define N_VOCAB 32000
#define MAX_BODY (1u << 20)

static const char *const model_names[] = { "m" };
static const api_limits limits = { N_CTX, N_VOCAB, model_names, 1 };

static bool str_ok(const char *s) {
    return s && fuzz_utf8_valid((const uint8_t *)s, strlen(s));
}

static void check_error(int rc, const api_error *err) {
    FUZZ_CHECK(rc == -1);
    FUZZ_CHECK(err->status >= 400 && err->status < 600);
    FUZZ_CHECK(err->type != NULL && err->message[0] != 0);
    FUZZ_CHECK(memchr(err->param, 0, sizeof err->param) != NULL);
}

static void check_request(int rc, const api_request *r, const api_error *err, api_kind kind, const char *body,
                          size_t size) {
    if (rc != 0) {
        check_error(rc, err);
        /* a failed parse leaves nothing behind */
        FUZZ_CHECK(!r->msgs && !r->n_msgs && !r->prompt && !r->prompt_tokens && !r->n_stop && !r->bias_tokens &&
                   !r->n_bias && !r->tool_schema && !r->tool_prompt);
        return;
    }
    FUZZ_CHECK(r->kind == kind);
    FUZZ_CHECK(r->max_tokens >= 0 && r->max_tokens <= N_CTX);
    FUZZ_CHECK(r->n_stop >= 0 && r->n_stop <= API_MAX_STOP);
    for (int i = 0; i < r->n_stop; i++) FUZZ_CHECK(str_ok(r->stop[i]) && r->stop[i][0]);
    const frugal_sampler_params *sp = &r->sampling;
    FUZZ_CHECK(sp->temperature >= 0 && sp->temperature <= 2);
    FUZZ_CHECK(sp->top_p >= 0 && sp->top_p <= 1);
    FUZZ_CHECK(sp->min_p >= 0 && sp->min_p <= 1);
    FUZZ_CHECK(sp->top_k >= 0 && sp->top_k <= N_VOCAB);
    FUZZ_CHECK(isfinite(sp->repeat_penalty) && sp->repeat_penalty > 0);
    FUZZ_CHECK(fabsf(sp->frequency_penalty) <= 2 && fabsf(sp->presence_penalty) <= 2);
    FUZZ_CHECK(r->top_logprobs >= 0 && r->top_logprobs <= API_MAX_TOP_LOGPROBS && (r->logprobs || !r->top_logprobs));
    FUZZ_CHECK((!r->echo || kind == API_COMPLETION) && (!r->echo_only || (r->echo && r->max_tokens == 0)));
    FUZZ_CHECK(r->n_bias >= 0 && r->n_bias <= FRUGAL_MAX_LOGIT_BIAS && (!r->n_bias || (r->bias_tokens && r->bias)));
    for (int i = 0; i < r->n_bias; i++) {
        FUZZ_CHECK(r->bias_tokens[i] >= 0 && r->bias_tokens[i] < N_VOCAB && fabsf(r->bias[i]) <= 100);
        for (int k = 0; k < i; k++) FUZZ_CHECK(r->bias_tokens[k] != r->bias_tokens[i]);
    }
    /* JSON mode only when asked for by name; a schema compiles, or fails with a message */
    FUZZ_CHECK(!r->json_object || memmem(body, size, "json_object", 11) || memmem(body, size, "json_schema", 11));
    FUZZ_CHECK(!r->json_schema || r->json_object);
    if (r->json_schema) {
        fr_schema *sch = NULL;
        frugal_status st = fr_schema_compile(r->json_schema, strlen(r->json_schema), &sch);
        FUZZ_CHECK(st ? !sch && frugal_last_error()[0] : sch && sch->n_nodes > 0);
        fr_schema_free(sch);
    }
    /* tools: only in a chat, offered, and then as a system message first and a schema of the reply */
    FUZZ_CHECK(!r->tools || (kind == API_CHAT && memmem(body, size, "tools", 5)));
    FUZZ_CHECK(!r->tools == !r->tool_schema && !r->tools == !r->tool_prompt && !(r->tools && r->json_object));
    if (r->tools) {
        FUZZ_CHECK(!strcmp(r->msgs[0].role, "system") && strstr(r->msgs[0].content, r->tool_prompt));
        fr_schema *sch = NULL;
        frugal_status st = fr_schema_compile(r->tool_schema, strlen(r->tool_schema), &sch);
        FUZZ_CHECK(st ? !sch && frugal_last_error()[0] : sch && sch->n_nodes > 0);
        fr_schema_free(sch);
    }
    if (kind == API_CHAT) {
        FUZZ_CHECK(r->msgs && r->n_msgs > 0);
        FUZZ_CHECK(!r->prompt && !r->prompt_tokens);
        for (size_t i = 0; i < r->n_msgs; i++) {
            const char *role = r->msgs[i].role;
            FUZZ_CHECK(role && (!strcmp(role, "system") || !strcmp(role, "user") ||
                                !strcmp(role, "assistant")));
            FUZZ_CHECK(str_ok(r->msgs[i].content));
        }
    } else {
        FUZZ_CHECK(!r->msgs && !r->n_msgs);
        FUZZ_CHECK(!r->prompt != !r->prompt_tokens);
        if (r->prompt) FUZZ_CHECK(str_ok(r->prompt));
        if (r->prompt_tokens) {
            FUZZ_CHECK(r->n_prompt_tokens > 0);
            for (int i = 0; i < r->n_prompt_tokens; i++)
                FUZZ_CHECK(r->prompt_tokens[i] >= 0 && r->prompt_tokens[i] < N_VOCAB);
        }
    }
}

/* The body as a reply that calls tools: either not one (NULL), or each
 * call's arguments, as cut from the text, are the value the text holds. */
static void check_reply_calls(const char *body, size_t size) {
    cJSON *calls = tools_reply_calls(body, size, "x"), *c;
    if (!calls) return;
    cJSON *root = cJSON_ParseWithLength(body, size), *orig = cJSON_GetObjectItemCaseSensitive(root, "tool_calls")->child;
    cJSON_ArrayForEach(c, calls) {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function"), *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        /* (compared as printed: cJSON_Compare finds only the first of keys that repeat) */
        cJSON *parsed = cJSON_Parse(cJSON_GetStringValue(args));
        char *a = parsed ? cJSON_PrintUnformatted(parsed) : NULL;
        char *b = orig ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(orig, "arguments")) : NULL;
        FUZZ_CHECK(a && b && !strcmp(a, b));
        free(a);
        free(b);
        FUZZ_CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "name")),
                           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(orig, "name"))));
        cJSON_Delete(parsed);
        orig = orig->next;
    }
    FUZZ_CHECK(!orig);
    cJSON_Delete(root);
    cJSON_Delete(calls);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FUZZ_CHECK(api_utf8_valid((const char *)data, size) == fuzz_utf8_valid(data, size));
    if (size > MAX_BODY) return 0;
    const char *body = (const char *)data;
    api_error err;

    for (int k = 0; k < 2; k++) {
        api_kind kind = k ? API_COMPLETION : API_CHAT;
        api_request r;
        memset(&err, 0, sizeof err);
        int rc = kind == API_CHAT ? api_parse_chat(body, size, &limits, &r, &err)
                                  : api_parse_completion(body, size, &limits, &r, &err);
        check_request(rc, &r, &err, kind, body, size);
        api_request_free(&r);
        FUZZ_CHECK(!r.msgs && !r.prompt && !r.prompt_tokens && !r.n_stop);
    }

    check_reply_calls(body, size);

    char *content = (char *)"unset";
    size_t content_len = (size_t)-1;
    bool add_special = true;
    memset(&err, 0, sizeof err);
    int rc = api_parse_tokenize(body, size, &content, &content_len, &add_special, &err);
    if (rc != 0) {
        check_error(rc, &err);
        FUZZ_CHECK(content == NULL);
    } else {
        FUZZ_CHECK(content != NULL && strlen(content) == content_len && str_ok(content));
        free(content);
    }

    int32_t *tokens = (int32_t *)&rc;
    int n = -1;
    memset(&err, 0, sizeof err);
    rc = api_parse_detokenize(body, size, N_VOCAB, &tokens, &n, &err);
    if (rc != 0) {
        check_error(rc, &err);
        FUZZ_CHECK(tokens == NULL && n == 0);
    } else {
        FUZZ_CHECK(tokens != NULL && n >= 0);
        for (int i = 0; i < n; i++) FUZZ_CHECK(tokens[i] >= 0 && tokens[i] < N_VOCAB);
        free(tokens);
    }
    return 0;
}
