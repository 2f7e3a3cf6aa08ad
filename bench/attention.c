/*
 * attention.c - micro-benchmark of attention over the KV cache (not a
 * test): one layer shaped like SmolLM2-135M's (9 query heads, 3 KV heads
 * of 64) or Gemma 3 270M's (4 query heads, 1 KV head of 256), on one
 * thread, for each KV cache type. Decode: a cache filled to DEPTH, then
 * one-token steps; prints microseconds a step and the cache bytes it
 * reads per microsecond. `prefill`: a prompt of DEPTH tokens (at most
 * 512) attending causally to itself; prints microseconds a prompt and
 * GFLOP/s (4 x head_dim per query head and visible key). Times are the
 * thread's CPU time, the best of batches of calls: on a shared machine
 * the mean carries other load.
 *
 * Build and run (from the repo root, after make):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/attention.c build/libfrugal.a \
 *       -lpcre2-8 -lcjson -lm -lpthread -o /tmp/bench_attention && /tmp/bench_attention [prefill] [DEPTH] [gemma]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "quant.h"
#include "kv.h"
#include "model.h"
#include "ops.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Microseconds per decode step at depth, or per prompt of depth tokens
 * (prefill: the cache holds the prompt, its rows attend causally). */
static double bench(int type, int depth, bool prefill, int n_head, int n_kv, int hd, double *bytes) {
    frugal_model model = { 0 };
    fr_layer layer = { 0 };
    frugal_ctx ctx = { 0 };
    model.hp = (fr_hparams){ .n_head = n_head, .n_head_kv = n_kv, .head_dim = hd, .n_layer = 1,
                             .attn_scale = 0.125f };
    model.layers = &layer;
    ctx.model = &model;
    ctx.n_batch = 512;
    ctx.n_threads = 1;
    ctx.attn_partial = calloc((size_t)4 * n_head * (hd + 2), sizeof(float));
    fr_kv_config cfg = { .type = type, .residual = 32 };
    int zero = 0, kvd = n_kv * hd;
    fr_kv_pool *pages = NULL; /* fp16 pages from a pool of huge pages, as a model's */
    if (fr_kv_pool_new(fr_kv_f16_page_bytes(kvd), &pages) || fr_kv_init(&ctx.kv, &cfg, 1, n_kv, hd, &zero) ||
        fr_pool_new(1, &ctx.pool))
        return -1;
    ctx.kv.pool = pages;
    int rows = prefill ? depth : 1;
    float *k = malloc((size_t)512 * kvd * sizeof(float)), *q = malloc((size_t)rows * n_head * hd * sizeof(float));
    float *out = malloc((size_t)rows * n_head * hd * sizeof(float));
    unsigned s = 1;
    for (int i = 0; i < 512 * kvd; i++) { s = s * 1103515245u + 12345u; k[i] = ((s >> 9) & 1023) / 512.0f - 1; }
    for (int i = 0; i < rows * n_head * hd; i++) q[i] = k[i % (512 * kvd)];
    for (int p = 0; p < depth; p += 512) {
        int n = depth - p < 512 ? depth - p : 512;
        fr_kv_append(&ctx.kv, 0, k, k, n, p);
    }
    fr_kv_commit(&ctx.kv, depth, 0);
    *bytes = (double)fr_kv_bytes(&ctx.kv);
    /* batches of about 10 ms; the best batch's time a call */
    double best = 1e30, start = cpu_now();
    int per_batch = 1;
    do {
        double t0 = cpu_now();
        for (int i = 0; i < per_batch; i++) fr_attention(&ctx, ctx.pool, 0, q, rows, depth - rows, out);
        double t = (cpu_now() - t0) / per_batch;
        if (t < best) best = t;
        if (t * per_batch < 0.01) per_batch *= 2;
    } while (cpu_now() - start < 1.0);
    fr_pool_free(ctx.pool);
    fr_kv_free(&ctx.kv);
    fr_kv_pool_free(pages);
    free(k); free(q); free(out); free(ctx.attn_partial);
    return best * 1e6;
}

int main(int argc, char **argv) {
    bool prefill = argc > 1 && !strcmp(argv[1], "prefill");
    if (prefill) argc--, argv++;
    int depth = argc > 1 ? atoi(argv[1]) : prefill ? 512 : 8192;
    bool gemma = argc > 2 && !strcmp(argv[2], "gemma");
    if (depth < 1 || (prefill && depth > 512)) {
        fprintf(stderr, "DEPTH: 1.. (a prompt: 1..512)\n");
        return 1;
    }
    int n_head = gemma ? 4 : 9, n_kv = gemma ? 1 : 3, hd = gemma ? 256 : 64;
    fr_kernels_init_from_env();
    printf("%s attention, one layer (%d heads, %d KV heads of %d), %s %d, 1 thread\n", prefill ? "prompt" : "decode",
           n_head, n_kv, hd, prefill ? "tokens" : "depth", depth);
    if (prefill)
        printf("| kv type | us/prompt | GFLOP/s |\n|---|---|---|\n");
    else
        printf("| kv type | us/step | cache MiB | GB/s of cache |\n|---|---|---|---|\n");
    for (int type = 0; type < FR_KV_TYPES; type++) {
        double bytes, us = bench(type, depth, prefill, n_head, n_kv, hd, &bytes);
        double flops = 4.0 * hd * n_head * depth * (depth + 1) / 2;
        if (prefill)
            printf("| %s | %.1f | %.1f |\n", fr_kv_type_name(type), us, flops / us / 1e3);
        else
            printf("| %s | %.1f | %.2f | %.2f |\n", fr_kv_type_name(type), us, bytes / 1048576.0, bytes / us / 1e3);
    }
    return 0;
}
