/*
 * chat.c - the chat templates we render in C (see chat.h).
 *
 * GGUF files carry their chat template as Jinja source. Running Jinja is a
 * project of its own, so we recognise the two families we ship and write
 * out exactly what their templates produce:
 *
 *   ChatML (SmolLM2, Qwen):  <|im_start|>{role}\n{content}<|im_end|>\n ...
 *                            then <|im_start|>assistant\n to prompt a reply.
 *                            SmolLM2's template inserts a default system
 *                            message when the conversation has none.
 *   Gemma:                   <start_of_turn>user\n{content}<end_of_turn>\n
 *                            with "assistant" called "model", no system
 *                            role (its text goes before the first user
 *                            message, followed by a blank line), contents
 *                            trimmed, and user/model strictly alternating.
 *                            The template starts with the BOS token; we
 *                            leave it out because the tokenizer adds it.
 *
 * Anything else is FR_CHAT_UNKNOWN and the caller refuses to guess.
 */
#include <string.h>
#include "chat.h"

/* ---- Recognising a template ------------------------------------------ */

/* Position of needle in hay[0..n), or NULL. (memmem is not C11.) */
static const char *find_text(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    if (m == 0 || m > n) return NULL;
    for (size_t i = 0; i + m <= n; i++) {
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0) return hay + i;
    }
    return NULL;
}

int fr_chat_detect(const char *tmpl, size_t len) {
    if (!tmpl || len == 0) return FR_CHAT_NONE;
    if (find_text(tmpl, len, "<|im_start|>")) return FR_CHAT_CHATML;
    if (find_text(tmpl, len, "<start_of_turn>")) return FR_CHAT_GEMMA;
    return FR_CHAT_UNKNOWN;
}

const char *fr_chat_name(int kind) {
    switch (kind) {
    case FR_CHAT_NONE: return "none";
    case FR_CHAT_CHATML: return "chatml";
    case FR_CHAT_GEMMA: return "gemma";
    default: return "unknown";
    }
}

/* ---- The default system message -------------------------------------- */

/*
 * SmolLM2's template contains the literal
 *     '<|im_start|>system\nYou are a helpful AI assistant ...<|im_end|>\n'
 * inside a Jinja string, where "\n" is either a real newline (as in the
 * GGUF) or the two characters backslash-n (as in tokenizer_config.json).
 * We take the text between "system" + newline and <|im_end|> as the
 * default, but only when it is plain literal text: a template that writes
 * '<|im_start|>system\n' + message['content'] has quotes or braces there,
 * which means "no default".
 */
char *fr_chat_default_system(const char *tmpl, size_t len) {
    static const char *const openers[] = { "<|im_start|>system\n", "<|im_start|>system\\n" };
    if (!tmpl || len == 0) return NULL;
    for (size_t k = 0; k < 2; k++) {
        const char *start = find_text(tmpl, len, openers[k]);
        if (!start) continue;
        start += strlen(openers[k]);
        const char *end = find_text(start, len - (size_t)(start - tmpl), "<|im_end|>");
        if (!end || end == start) continue;
        size_t n = (size_t)(end - start);
        if (memchr(start, '\'', n) || memchr(start, '"', n) || memchr(start, '{', n) ||
            memchr(start, '}', n))
            continue;
        char *msg = fr_malloc(n + 1);
        if (!msg) return NULL;
        /* Undo the Jinja string escapes \n and \\ where the template used them. */
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if (k == 1 && start[i] == '\\' && i + 1 < n) {
                char c = start[++i];
                msg[w++] = c == 'n' ? '\n' : c;
            } else {
                msg[w++] = start[i];
            }
        }
        msg[w] = 0;
        return msg;
    }
    return NULL;
}

/* ---- Rendering --------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} text_buf;

static void append_n(text_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = fr_realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void append(text_buf *b, const char *s) { append_n(b, s, strlen(s)); }

static bool is_known_role(const char *role) {
    return !strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant");
}

static frugal_status check_messages(const frugal_chat_msg *msgs, size_t n) {
    if (n && !msgs) return fr_error(FRUGAL_ERR_INVALID_ARG, "chat: messages is NULL");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role)
            return fr_error(FRUGAL_ERR_TEMPLATE, "chat: message %zu has no role", i);
        if (!is_known_role(msgs[i].role))
            return fr_error(FRUGAL_ERR_TEMPLATE,
                            "chat: message %zu has role '%s' (expected system, user or assistant)",
                            i, msgs[i].role);
        if (!msgs[i].content)
            return fr_error(FRUGAL_ERR_TEMPLATE, "chat: message %zu (%s) has no content", i,
                            msgs[i].role);
    }
    return FRUGAL_OK;
}

static void render_chatml(text_buf *b, const char *default_system, const frugal_chat_msg *msgs,
                          size_t n, bool add_generation_prompt) {
    /* SmolLM2: the default is inserted inside the message loop, so an
     * empty conversation gets none. */
    if (n > 0 && default_system && strcmp(msgs[0].role, "system") != 0) {
        append(b, "<|im_start|>system\n");
        append(b, default_system);
        append(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        append(b, "<|im_start|>");
        append(b, msgs[i].role);
        append(b, "\n");
        append(b, msgs[i].content);
        append(b, "<|im_end|>\n");
    }
    if (add_generation_prompt) append(b, "<|im_start|>assistant\n");
}

static bool is_jinja_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Jinja's |trim: leading and trailing whitespace removed. */
static void append_trimmed(text_buf *b, const char *s) {
    size_t n = strlen(s);
    while (n > 0 && is_jinja_space(s[n - 1])) n--;
    while (n > 0 && is_jinja_space(*s)) {
        s++;
        n--;
    }
    append_n(b, s, n);
}

static frugal_status render_gemma(text_buf *b, const frugal_chat_msg *msgs, size_t n,
                                  bool add_generation_prompt) {
    const char *system = NULL;
    size_t first = 0;
    if (n > 0 && !strcmp(msgs[0].role, "system")) {
        system = msgs[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        bool want_user = (i - first) % 2 == 0;
        bool is_user = !strcmp(msgs[i].role, "user");
        if (!strcmp(msgs[i].role, "system"))
            return fr_error(FRUGAL_ERR_TEMPLATE,
                            "chat: Gemma allows a system message only as the first message "
                            "(message %zu)", i);
        if (is_user != want_user)
            return fr_error(FRUGAL_ERR_TEMPLATE,
                            "chat: Gemma needs user and assistant messages to alternate, "
                            "starting with user (message %zu is %s)", i, msgs[i].role);
        append(b, is_user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (i == first && system) {
            append(b, system);
            append(b, "\n\n");
        }
        append_trimmed(b, msgs[i].content);
        append(b, "<end_of_turn>\n");
    }
    if (add_generation_prompt) append(b, "<start_of_turn>model\n");
    return FRUGAL_OK;
}

frugal_status fr_chat_render(int kind, const char *default_system, const frugal_chat_msg *msgs,
                             size_t n, bool add_generation_prompt, char **out) {
    if (!out) return fr_error(FRUGAL_ERR_INVALID_ARG, "chat: out is NULL");
    *out = NULL;
    if (kind == FR_CHAT_NONE)
        return fr_error(FRUGAL_ERR_TEMPLATE, "chat: the model has no chat template");
    if (kind != FR_CHAT_CHATML && kind != FR_CHAT_GEMMA)
        return fr_error(FRUGAL_ERR_TEMPLATE,
                        "chat: unrecognised chat template (known: chatml, gemma)");
    frugal_status st = check_messages(msgs, n);
    if (st) return st;

    text_buf b = { 0 };
    append(&b, "");   /* an empty conversation still yields a string */
    if (kind == FR_CHAT_CHATML) {
        render_chatml(&b, default_system, msgs, n, add_generation_prompt);
    } else {
        st = render_gemma(&b, msgs, n, add_generation_prompt);
    }
    if (!st && b.failed) st = fr_error(FRUGAL_ERR_NOMEM, "chat: out of memory");
    if (st) {
        fr_free(b.p);
        return st;
    }
    *out = b.p;
    return FRUGAL_OK;
}
