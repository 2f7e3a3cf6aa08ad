/*
 * run.c - `frugal run`: one prompt to one streamed reply, or, on a
 * terminal without -p/-f, an interactive multi-turn chat.
 *
 * Chat turns reuse the KV cache: each turn renders the whole conversation
 * with the model's template, tokenizes it, keeps the cached tokens that
 * match its beginning and evaluates only the rest.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

typedef struct {
    const char *model, *prompt, *file, *system;
    int n_predict, n_ctx, n_threads, chat; /* chat: -1 auto, 0 raw, 1 chat */
    frugal_ctx_params kv;                  /* the KV cache options */
    bool stats, json;                      /* json: --json, the reply is one JSON object */
    const char *json_schema;               /* --json-schema FILE: ... valid against that schema */
    frugal_sampler_params sp;
    int n_bias;                            /* --logit-bias ID=BIAS, repeatable */
    int32_t bias_id[FRUGAL_MAX_LOGIT_BIAS];
    float bias[FRUGAL_MAX_LOGIT_BIAS];
} run_opts;

typedef struct { char *s; size_t len, cap; } strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *ns = realloc(b->s, cap);
        if (!ns) return;
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static volatile sig_atomic_t generating, interrupted;

static void on_sigint(int sig) {
    (void)sig;
    if (!generating) _exit(130);
    interrupted = 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: frugal run -m MODEL [-p PROMPT | -f FILE] [options]\n"
            "  -m MODEL         path to a GGUF file or a known name (smollm2-135m)\n"
            "  -p PROMPT        prompt text;  -f FILE: prompt from a file\n"
            "                   (neither: interactive chat on a terminal, else stdin)\n"
            "  -n N             tokens to generate (default 256; -1 until end or context full)\n"
            "  -c N             context size in tokens (default min(training context, 4096);\n"
            "                   with --kv-budget, positions up to 2^20)\n"
            "  -t N             threads (default: physical cores)\n"
            "  --chat / --raw   apply the model's chat template or not (default: chat if it has one)\n"
            "  --system TEXT    system message (chat mode)\n"
            "  --temp T         temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K        (default 40; 0 = off)   --top-p P (default 0.95)   --min-p P (default 0.05)\n"
            "  --repeat-penalty R (default 1.0 = off)   --repeat-last-n N (default 64)\n"
            "  --frequency-penalty F, --presence-penalty P  OpenAI's penalties, -2..2 (default 0 = off)\n"
            "  --logit-bias ID=BIAS  add BIAS (-100..100) to token ID's logit (repeatable)\n"
            "  --seed S         RNG seed (default: random)\n"
            "  --json           JSON mode: the reply is one JSON object (tokens that would break it are\n"
            "                   never drawn; ends when the object closes)\n"
            "  --json-schema FILE  JSON mode for a value valid against the JSON Schema in FILE\n"
            CLI_KV_USAGE
            "  --no-stats       no statistics line on stderr\n");
}

/* --logit-bias ID=BIAS (the sampler checks ID against the vocabulary). */
static bool parse_bias(const char *v, run_opts *o) {
    char *end;
    long id = v ? strtol(v, &end, 10) : -1;
    if (!v || end == v || *end != '=' || id < 0 || id > INT32_MAX) {
        fprintf(stderr, "frugal: --logit-bias expects TOKEN_ID=BIAS, e.g. 42=-100\n");
        return false;
    }
    if (o->n_bias == FRUGAL_MAX_LOGIT_BIAS) {
        fprintf(stderr, "frugal: at most %d --logit-bias options\n", FRUGAL_MAX_LOGIT_BIAS);
        return false;
    }
    o->bias_id[o->n_bias] = (int32_t)id;
    return cli_float("--logit-bias", end + 1, -100, 100, &o->bias[o->n_bias++]);
}

static bool parse_args(int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->chat = -1;
    o->stats = true;
    o->sp = frugal_sampler_default_params();
    o->sp.seed = (uint64_t)(cli_now() * 1e6) ^ (uint64_t)getpid();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true, takes = true;
        if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "-p")) o->prompt = v;
        else if (!strcmp(a, "-f")) o->file = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "-n")) ok = cli_int(a, v, -1, 1 << 24, &o->n_predict);
        else if (!strcmp(a, "-c")) ok = cli_int(a, v, 1, 1 << 24, &o->n_ctx);
        else if (!strcmp(a, "-t")) ok = cli_int(a, v, 1, 1024, &o->n_threads);
        else if (v && cli_kv_option(a, v, &o->kv, &ok)) {}
        else if (!strcmp(a, "--temp")) ok = cli_float(a, v, 0, 100, &o->sp.temperature);
        else if (!strcmp(a, "--top-k")) ok = cli_int(a, v, 0, 1 << 24, &o->sp.top_k);
        else if (!strcmp(a, "--top-p")) ok = cli_float(a, v, 0, 1, &o->sp.top_p);
        else if (!strcmp(a, "--min-p")) ok = cli_float(a, v, 0, 1, &o->sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) ok = cli_float(a, v, 0.01, 100, &o->sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n")) ok = cli_int(a, v, 0, 4096, &o->sp.repeat_last_n);
        else if (!strcmp(a, "--frequency-penalty")) ok = cli_float(a, v, -2, 2, &o->sp.frequency_penalty);
        else if (!strcmp(a, "--presence-penalty")) ok = cli_float(a, v, -2, 2, &o->sp.presence_penalty);
        else if (!strcmp(a, "--logit-bias")) ok = parse_bias(v, o);
        else if (!strcmp(a, "--json-schema")) o->json_schema = v;
        else if (!strcmp(a, "--seed")) {
            char *end;
            o->sp.seed = v ? strtoull(v, &end, 10) : 0;
            if (!v || !*v || *end) { fprintf(stderr, "frugal: --seed expects a non-negative integer\n"); ok = false; }
        } else {
            takes = false;
            if (!strcmp(a, "--chat")) o->chat = 1;
            else if (!strcmp(a, "--raw")) o->chat = 0;
            else if (!strcmp(a, "--no-stats")) o->stats = false;
            else if (!strcmp(a, "--json")) o->json = true;
            else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); exit(0); }
            else { fprintf(stderr, "frugal run: unknown option '%s'\n", a); usage(); return false; }
        }
        if (takes && !v) { fprintf(stderr, "frugal run: %s needs a value\n", a); return false; }
        if (!ok) return false;
        i += takes;
    }
    if (o->prompt && o->file) { fprintf(stderr, "frugal run: give -p or -f, not both\n"); return false; }
    return true;
}

/* Tokenizes text, parsing special tokens; caller frees. */
static int32_t *tokenize(frugal_model *m, const char *text, int64_t *n) {
    unsigned flags = FRUGAL_TOKENIZE_ADD_BOS | FRUGAL_TOKENIZE_PARSE_SPECIAL;
    *n = frugal_tokenize(m, text, strlen(text), NULL, 0, flags);
    if (*n < 0) return NULL;
    int32_t *ids = malloc((size_t)(*n ? *n : 1) * sizeof *ids);
    if (ids && frugal_tokenize(m, text, strlen(text), ids, *n, flags) != *n) { free(ids); ids = NULL; }
    return ids;
}

typedef struct { int n_prompt, n_gen; double t_prefill, t_decode; } gen_stats;

/* Evaluates tokens[0..n) and streams up to n_predict tokens, in JSON
 * mode (json not NULL) until the object closes. `cached`
 * (n_ctx entries) mirrors the KV cache: the longest common prefix of it
 * and tokens is not evaluated again, and every evaluated token is
 * recorded in it. The generated text is appended to reply. */
static bool generate(frugal_model *m, frugal_ctx *ctx, frugal_sampler *smp, frugal_json *json,
                     const int32_t *tokens, int n, int32_t *cached, int n_predict, strbuf *reply, gen_stats *gs) {
    memset(gs, 0, sizeof *gs);
    if (n >= frugal_ctx_size(ctx)) {
        fprintf(stderr, "frugal: the prompt has %d tokens but the context holds %d; use a larger -c "
                        "or a shorter prompt\n", n, frugal_ctx_size(ctx));
        return false;
    }
    int keep = 0, pos = frugal_ctx_pos(ctx);
    while (keep < pos && keep < n - 1 && cached[keep] == tokens[keep]) keep++;
    frugal_ctx_rewind(ctx, keep);
    keep = frugal_ctx_pos(ctx); /* sliding-window models may keep less */
    memcpy(cached, tokens, (size_t)n * sizeof *tokens);
    frugal_sampler_reset(smp);
    if (json) frugal_json_reset(json);
    for (int i = 0; i < n; i++) frugal_sampler_accept(smp, tokens[i]);
    double t0 = cli_now();
    frugal_status st = frugal_eval(ctx, tokens + keep, n - keep, false);
    if (st) { cli_die_status(st, "prompt"); return false; }
    gs->n_prompt = n - keep;
    gs->t_prefill = cli_now() - t0;
    frugal_stream *stream = NULL;
    if (frugal_stream_new(m, &stream)) return false;
    char out[1024];
    generating = 1;
    interrupted = 0;
    t0 = cli_now();
    for (int i = 0; n_predict < 0 || i < n_predict; i++) {
        int32_t tok = frugal_sampler_sample(smp, frugal_logits(ctx, -1));
        frugal_sampler_accept(smp, tok);
        if (json && !frugal_json_accept(json, tok)) break; /* (no token of the vocabulary continues it) */
        if (frugal_token_is_eog(m, tok)) break;
        int w = frugal_stream_push(stream, tok, out, sizeof out);
        if (w > 0) { fwrite(out, 1, (size_t)w, stdout); fflush(stdout); sb_add(reply, out, (size_t)w); }
        gs->n_gen++;
        if (interrupted || (json && frugal_json_done(json))) break;
        if (frugal_ctx_pos(ctx) >= frugal_ctx_size(ctx)) {
            fprintf(stderr, "\n[context full: %d tokens]\n", frugal_ctx_size(ctx));
            break;
        }
        cached[frugal_ctx_pos(ctx)] = tok;
        if ((st = frugal_eval(ctx, &tok, 1, false))) { cli_die_status(st, "decode"); break; }
    }
    gs->t_decode = cli_now() - t0;
    generating = 0;
    int w = frugal_stream_flush(stream, out, sizeof out);
    if (w > 0) { fwrite(out, 1, (size_t)w, stdout); sb_add(reply, out, (size_t)w); }
    frugal_stream_free(stream);
    return st == FRUGAL_OK;
}

static void print_stats(const gen_stats *gs) {
    fprintf(stderr, "\nfrugal: prompt %d tokens, prefill %.1f t/s; generated %d tokens, decode %.1f t/s\n",
            gs->n_prompt, gs->t_prefill > 0 ? gs->n_prompt / gs->t_prefill : 0.0, gs->n_gen,
            gs->t_decode > 0 && gs->n_gen > 1 ? (gs->n_gen - 1) / gs->t_decode : 0.0);
}

static char *render(frugal_model *m, const frugal_chat_msg *msgs, size_t n) {
    char *text = NULL;
    frugal_status st = frugal_chat_apply(m, msgs, n, true, &text);
    if (st) { cli_die_status(st, "chat template"); return NULL; }
    return text;
}

static int single_shot(frugal_model *m, frugal_ctx *ctx, frugal_sampler *smp, frugal_json *json,
                       const run_opts *o, const char *prompt) {
    char *text = NULL;
    if (o->chat) {
        frugal_chat_msg msgs[2] = { { "system", o->system }, { "user", prompt } };
        text = o->system ? render(m, msgs, 2) : render(m, msgs + 1, 1);
        if (!text) return 1;
    }
    int64_t n;
    int32_t *ids = tokenize(m, text ? text : prompt, &n);
    frugal_free(text);
    if (!ids) { fprintf(stderr, "frugal: tokenize failed: %s\n", frugal_last_error()); return 1; }
    strbuf reply = { 0 };
    gen_stats gs;
    int32_t *cached = malloc((size_t)frugal_ctx_size(ctx) * sizeof *cached);
    bool ok = cached && generate(m, ctx, smp, json, ids, (int)n, cached, o->n_predict, &reply, &gs);
    printf("\n");
    if (ok && o->stats) print_stats(&gs);
    free(cached);
    free(ids);
    free(reply.s);
    return ok ? 0 : 1;
}

static int interactive(frugal_model *m, frugal_ctx *ctx, frugal_sampler *smp, frugal_json *json, const run_opts *o) {
    frugal_chat_msg *msgs = NULL;
    size_t n_msgs = 0;
    char *line = NULL;
    size_t line_cap = 0;
    int32_t *cached = malloc((size_t)frugal_ctx_size(ctx) * sizeof *cached);
    if (!cached) return 1;
    if (o->system) {
        msgs = malloc(sizeof *msgs);
        msgs[n_msgs++] = (frugal_chat_msg){ "system", strdup(o->system) };
    }
    fprintf(stderr, "frugal chat: type a message; Ctrl-C stops a reply, Ctrl-D exits.\n");
    for (;;) {
        fprintf(stderr, "\n> ");
        ssize_t len = getline(&line, &line_cap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        msgs = realloc(msgs, (n_msgs + 2) * sizeof *msgs);
        msgs[n_msgs++] = (frugal_chat_msg){ "user", strdup(line) };
        char *text = render(m, msgs, n_msgs);
        if (!text) break;
        int64_t n;
        int32_t *ids = tokenize(m, text, &n);
        frugal_free(text);
        if (!ids) break;
        strbuf reply = { 0 };
        gen_stats gs;
        bool ok = generate(m, ctx, smp, json, ids, (int)n, cached, o->n_predict, &reply, &gs);
        free(ids);
        printf("\n");
        if (o->stats && ok) print_stats(&gs);
        msgs[n_msgs++] = (frugal_chat_msg){ "assistant", reply.s ? reply.s : strdup("") };
        if (!ok) break;
    }
    for (size_t i = 0; i < n_msgs; i++) free((void *)msgs[i].content);
    free(msgs);
    free(line);
    free(cached);
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    if (!parse_args(argc, argv, &o)) return 2;
    char *file_text = NULL;
    size_t len;
    if (o.file && !(file_text = cli_read_file(o.file, &len))) return 1;
    bool tty = isatty(0);
    if (!o.prompt && !o.file && !tty) {
        /* prompt from standard input */
        if (!(file_text = cli_read_file("/dev/stdin", &len))) return 1;
    }
    size_t schema_len = 0;
    char *schema = NULL;
    if (o.json_schema && !(schema = cli_read_file(o.json_schema, &schema_len))) { free(file_text); return 1; }
    frugal_model *m = cli_load_model(o.model);
    if (!m) { free(file_text); free(schema); return 1; }
    frugal_model_info info;
    frugal_model_get_info(m, &info);
    if (o.chat < 0) o.chat = strcmp(info.chat_template, "unknown") && strcmp(info.chat_template, "none");
    frugal_ctx_params cp = frugal_ctx_default_params();
    cp.n_ctx = o.n_ctx ? o.n_ctx : (info.n_ctx_train < 4096 ? info.n_ctx_train : 4096);
    /* with a budget, memory follows the budget: positions may run on */
    if (!o.n_ctx && o.kv.kv_budget) cp.n_ctx = 1 << 20;
    cp.n_threads = o.n_threads;
    cli_kv_apply(&cp, &o.kv);
    frugal_ctx *ctx = NULL;
    frugal_sampler *smp = NULL;
    frugal_json *json = NULL;
    frugal_status st = frugal_ctx_new(m, &cp, &ctx);
    if (!st) st = frugal_sampler_new(&o.sp, frugal_n_vocab(m), &smp);
    if (!st) st = frugal_sampler_set_logit_bias(smp, o.bias_id, o.bias, o.n_bias);
    if (!st && schema) st = frugal_json_new_schema(m, schema, schema_len, &json);
    else if (!st && o.json) st = frugal_json_new(m, true, &json);
    if (!st && json) st = frugal_sampler_set_json(smp, json);
    free(schema);
    int rc = 1;
    if (st) cli_die_status(st, "setup");
    else {
        struct sigaction sa = { 0 };
        sa.sa_handler = on_sigint;
        sigaction(SIGINT, &sa, NULL);
        const char *prompt = o.prompt ? o.prompt : file_text;
        if (prompt) rc = single_shot(m, ctx, smp, json, &o, prompt);
        else if (!o.chat) fprintf(stderr, "frugal: interactive mode needs a chat template; give -p\n");
        else rc = interactive(m, ctx, smp, json, &o);
    }
    frugal_sampler_free(smp);
    frugal_json_free(json);
    frugal_ctx_free(ctx);
    frugal_model_free(m);
    free(file_text);
    return rc;
}
