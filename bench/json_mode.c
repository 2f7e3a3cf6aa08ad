/*
 * json_mode.c - what JSON mode costs (not a test): a chat prompt asking
 * for JSON, replies of up to 300 tokens for a few seeds, with and without
 * the constraint; prints per reply the tokens, the sampler's time per
 * token, how many draws took the full-vocabulary mask (a sample over 0.3
 * ms), and the forward pass's time per token for scale.
 *
 * Build and run (from the repo root, after make):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude bench/json_mode.c build/libfrugal.a -lpcre2-8 -lcjson -lm -lpthread \
 *       -o /tmp/bench_json_mode && /tmp/bench_json_mode MODEL.gguf [TEMPERATURE] [THREADS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "frugal.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One reply from the prompt's cache state; prints its figures. */
static void reply(frugal_model *m, frugal_ctx *ctx, const int32_t *prompt, int n, float temp, uint64_t seed,
                  bool json_mode) {
    frugal_ctx_rewind(ctx, 0);
    if (frugal_eval(ctx, prompt, n, false)) { fprintf(stderr, "eval: %s\n", frugal_last_error()); exit(1); }
    frugal_sampler_params sp = frugal_sampler_default_params();
    sp.seed = seed, sp.temperature = temp;
    frugal_sampler *s = NULL;
    frugal_json *j = NULL;
    if (frugal_sampler_new(&sp, frugal_n_vocab(m), &s) || frugal_json_new(m, true, &j) ||
        (json_mode && frugal_sampler_set_json(s, j))) {
        fprintf(stderr, "setup: %s\n", frugal_last_error());
        exit(1);
    }
    double t_sample = 0, t_eval = 0;
    int masked = 0, g = 0;
    bool closed = false;
    while (g < 300) {
        const float *logits = frugal_logits(ctx, -1);
        double t0 = now();
        int32_t tok = frugal_sampler_sample(s, logits);
        double dt = now() - t0;
        t_sample += dt, masked += dt > 3e-4, g++;
        frugal_sampler_accept(s, tok);
        if (json_mode && (!frugal_json_accept(j, tok) || (closed = frugal_json_done(j)))) break;
        if (frugal_token_is_eog(m, tok)) break;
        t0 = now();
        if (frugal_eval(ctx, &tok, 1, false)) break;
        t_eval += now() - t0;
    }
    printf("| %s | %llu | %d | %s | %.3f | %d | %.2f |\n", json_mode ? "json" : "off", (unsigned long long)seed, g,
           closed ? "yes" : "no", t_sample * 1e3 / g, masked, t_eval * 1e3 / (g > 1 ? g - 1 : 1));
    frugal_json_free(j);
    frugal_sampler_free(s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_json_mode MODEL.gguf [TEMPERATURE] [THREADS]\n");
        return 2;
    }
    float temp = argc > 2 ? (float)atof(argv[2]) : 0.8f;
    frugal_model *m = NULL;
    frugal_ctx *ctx = NULL;
    frugal_ctx_params cp = frugal_ctx_default_params();
    cp.n_ctx = 1024;
    cp.n_threads = argc > 3 ? atoi(argv[3]) : 2;
    if (frugal_model_load(argv[1], &m) || frugal_ctx_new(m, &cp, &ctx)) {
        fprintf(stderr, "%s\n", frugal_last_error());
        return 1;
    }
    frugal_chat_msg msg = { "user", "List five European countries with their capitals and populations as a JSON "
                                    "object." };
    char *text = NULL;
    int32_t prompt[512];
    if (frugal_chat_apply(m, &msg, 1, true, &text)) {
        fprintf(stderr, "%s\n", frugal_last_error());
        return 1;
    }
    int n = (int)frugal_tokenize(m, text, strlen(text), prompt, 512, FRUGAL_TOKENIZE_PARSE_SPECIAL);
    frugal_free(text);
    printf("temperature %.2f, %d prompt tokens\n\n", temp, n);
    printf("| mode | seed | tokens | object closed | sample ms/token | masked draws | forward ms/token |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (uint64_t seed = 1; seed <= 4; seed++) {
        reply(m, ctx, prompt, n, temp, seed, false);
        reply(m, ctx, prompt, n, temp, seed, true);
    }
    frugal_ctx_free(ctx);
    frugal_model_free(m);
    return 0;
}
