/*
 * attention.c - micro-benchmark of decode attention over the KV cache
 * (not a test): one layer shaped like SmolLM2-135M's (9 query heads, 3 KV
 * heads of 64) or Gemma 3 270M's (4 query heads, 1 KV head of 256), a
 * cache filled to a depth, then one-token attention steps on one thread.
 * Prints microseconds per step and the cache bytes the step reads per
 * microsecond, for each KV cache type. CPU time of the thread is used, so
 * other load on the machine matters less than for wall time.
 *
 * Build and run (from the repo root, after make):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/attention.c build/libfrugal.a \
 *       -lpcre2-8 -lm -lpthread -o /tmp/bench_attention && /tmp/bench_attention [DEPTH] [gemma]
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

static double bench(int type, int depth, int n_head, int n_kv, int hd, double *bytes) {
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
    if (fr_kv_init(&ctx.kv, &cfg, 1, kvd, &zero) || fr_pool_new(1, &ctx.pool)) return -1;
    float *k = malloc((size_t)512 * kvd * sizeof(float)), *q = malloc((size_t)n_head * hd * sizeof(float));
    float *out = malloc((size_t)n_head * hd * sizeof(float));
    unsigned s = 1;
    for (int i = 0; i < 512 * kvd; i++) { s = s * 1103515245u + 12345u; k[i] = ((s >> 9) & 1023) / 512.0f - 1; }
    for (int i = 0; i < n_head * hd; i++) q[i] = k[i];
    for (int p = 0; p < depth; p += 512) {
        int n = depth - p < 512 ? depth - p : 512;
        fr_kv_append(&ctx.kv, 0, k, k, n, p);
    }
    fr_kv_commit(&ctx.kv, depth, 0);
    *bytes = (double)fr_kv_bytes(&ctx.kv);
    int reps = 0;
    double t0 = cpu_now(), t;
    do {
        fr_attention(&ctx, ctx.pool, 0, q, 1, depth - 1, out);
        reps++;
    } while ((t = cpu_now() - t0) < 0.5);
    fr_pool_free(ctx.pool);
    fr_kv_free(&ctx.kv);
    free(k); free(q); free(out); free(ctx.attn_partial);
    return t / reps * 1e6;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 8192;
    bool gemma = argc > 2 && !strcmp(argv[2], "gemma");
    int n_head = gemma ? 4 : 9, n_kv = gemma ? 1 : 3, hd = gemma ? 256 : 64;
    fr_kernels_init_from_env();
    printf("decode attention, one layer (%d heads, %d KV heads of %d), depth %d, 1 thread\n", n_head, n_kv, hd, depth);
    printf("| kv type | us/step | cache MiB | GB/s of cache |\n|---|---|---|---|\n");
    for (int type = 0; type < FR_KV_TYPES; type++) {
        double bytes, us = bench(type, depth, n_head, n_kv, hd, &bytes);
        printf("| %s | %.1f | %.2f | %.2f |\n", fr_kv_type_name(type), us, bytes / 1048576.0, bytes / us / 1e3);
    }
    return 0;
}
