/*
 * prefix_cache.c - micro-benchmark of the prefix cache when full (not a
 * test): each put of a new 1,024-token prompt adds 32 blocks and evicts
 * 32, on the server's scheduling thread. Prints milliseconds per put for
 * caches of several sizes in blocks.
 *
 * One 1,024-token evaluation serves every put: a put takes the context's
 * pages for whatever tokens it is told they hold, so made-up token
 * sequences fill the cache without evaluating them (the pages are shared;
 * the cache counts each block's bytes in full all the same).
 *
 * Build and run (from the repo root, after make):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude bench/prefix_cache.c build/libfrugal.a \
 *       -lpcre2-8 -lcjson -lm -lpthread -o /tmp/bench_prefix_cache && /tmp/bench_prefix_cache [MODEL.gguf]
 * (default: SmolLM2-135M from the model cache, where make run puts it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "frugal.h"

enum { N = 1024, PUTS = 50 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The seq-th made-up prompt. */
static void prompt(int32_t *t, int seq) {
    for (int i = 0; i < N; i++) t[i] = 100 + (seq * 7919 + i * 13) % 40000;
}

int main(int argc, char **argv) {
    char path[1024];
    const char *dir = getenv("FRUGAL_MODELS"), *home = getenv("HOME");
    if (argc > 1) snprintf(path, sizeof path, "%s", argv[1]);
    else if (dir && *dir) snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
    else snprintf(path, sizeof path, "%s/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : ".");
    frugal_model *m = NULL;
    frugal_ctx *ctx = NULL;
    frugal_ctx_params p = frugal_ctx_default_params();
    p.n_ctx = N;
    p.n_threads = 2;
    static int32_t t[N];
    prompt(t, 0);
    if (frugal_model_load(path, &m) || frugal_ctx_new(m, &p, &ctx) || frugal_eval(ctx, t, N, false)) {
        fprintf(stderr, "%s: %s\n", path, frugal_last_error());
        return 1;
    }
    frugal_prefix_cache *pc = NULL;
    frugal_prefix_cache_info info;
    if (frugal_prefix_cache_new(m, (size_t)1 << 40, &pc) || frugal_prefix_cache_put(pc, ctx, t, 32)) return 1;
    frugal_prefix_cache_stats(pc, &info);
    size_t block = info.bytes;
    frugal_prefix_cache_free(pc);
    const int sizes[] = { 350, 4000, 20000 };
    int seq = 1;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        if (frugal_prefix_cache_new(m, block * sizes[s], &pc)) return 1;
        for (int k = 0; k <= sizes[s] / 32; k++) { /* fill it */
            prompt(t, seq++);
            frugal_prefix_cache_put(pc, ctx, t, N);
        }
        double t0 = now();
        for (int k = 0; k < PUTS; k++) {
            prompt(t, seq++);
            frugal_prefix_cache_put(pc, ctx, t, N);
        }
        double ms = (now() - t0) / PUTS * 1e3;
        frugal_prefix_cache_stats(pc, &info);
        printf("%6d blocks: %.3f ms per put of 32 blocks (32 evictions), %d blocks held\n", sizes[s], ms,
               info.blocks);
        frugal_prefix_cache_free(pc);
    }
    frugal_ctx_free(ctx);
    frugal_model_free(m);
    return 0;
}
