/*
 * kernels.c - micro-benchmark of the dot kernels (not a test).
 *
 * For each weight type and ISA level this CPU runs, times a matrix-vector
 * product over a row set shaped like SmolLM2-135M's layers (1536 rows of 576
 * and 576 rows of 1536) and its Q8_0 output matrix (49152 rows of 576), and
 * like Gemma 3 270M's (Q5_0 2048 and 1024 rows of 640, Q4_K 640 rows of
 * 1024 and 2048, Q6_K 640 rows of 2048), once with one dot call per row and
 * once with the multi-row kernel. Prints GB/s of weight bytes read and
 * GFLOP/s (2 flops per weight). Then a prefill-like batch of 64 activation
 * rows (tile kernel vs dot_rows vs dot), prefill-shaped products at the
 * best level only (pp512-like: whole matrices against 512 tokens, the
 * output matrix against 64, on one thread), the activation quantizers, and
 * the KV cache page codecs (kv_codec.h): loading one head (64 channels of
 * 32 slots) of a packed page, as attention does per tile, and packing a
 * page. An argument keeps only the lines of types whose name contains it
 * (/tmp/bench_kernels Q5_0; kv_ names the KV cache types: kv_kivi4, or kv
 * for all); "prefill" first runs only the prefill-shaped products
 * (/tmp/bench_kernels prefill Q4_1).
 *
 *   hot     one matrix, re-read from cache each pass
 *   stream  enough copies to exceed the caches (64 MiB), read in turn
 *
 * Build and run (from the repo root, after `make`, which builds every
 * level's kernels with their flags into the library):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/kernels.c build/libfrugal.a \
 *       -lm -lpthread -o /tmp/bench_kernels && /tmp/bench_kernels
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "quant.h"
#include "kv_codec.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * 0x1p-23 - 1.0);
}

typedef struct {
    uint32_t type;
    int64_t n, rows;
} shape;

/* CPU time of this thread: on a shared machine, time the thread was
 * descheduled does not count (the prefill section uses it). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static volatile float sink;

/* Seconds per matrix-vector product over copies of the matrix (one for
 * hot), using dot per row or dot_rows over the whole matrix. The best of
 * several short trials, since a shared machine adds noise. */
static double time_matvec(const fr_type_traits *tt, const shape *s, const uint8_t *w, int copies,
                          const void *a, float *out, int use_rows) {
    size_t rb = fr_row_bytes(s->type, s->n), mb = rb * (size_t)s->rows;
    double best = 1e9;
    for (int trial = 0; trial < 15; trial++) {
        long passes = 0;
        double t0 = now(), t;
        do {
            for (int c = 0; c < copies; c++) {
                const uint8_t *m = w + (size_t)c * mb;
                if (use_rows) {
                    tt->dot_rows(s->n, m, rb, a, out, (int)s->rows);
                } else {
                    for (int64_t r = 0; r < s->rows; r++) out[r] = tt->dot(s->n, m + r * rb, a);
                }
                sink = out[0];
            }
            passes += copies;
            t = now() - t0;
        } while (t < 0.02);
        if (t / passes < best) best = t / passes;
    }
    return best;
}

static void bench_shape(const shape *s) {
    const fr_type_traits *tt = fr_traits(s->type);
    size_t rb = fr_row_bytes(s->type, s->n), mb = rb * (size_t)s->rows;
    int copies = (int)((64u << 20) / mb) + 1;
    uint8_t *w = malloc(mb * copies);
    float *x = malloc(sizeof(float) * s->n), *out = malloc(sizeof(float) * s->rows);
    void *a = malloc(fr_row_bytes(tt->act_type, s->n));
    for (int64_t r = 0; r < s->rows; r++) {
        for (int64_t i = 0; i < s->n; i++) x[i] = frand();
        tt->quant(x, w + r * rb, s->n);
    }
    for (int c = 1; c < copies; c++) memcpy(w + c * mb, w, mb);
    for (int64_t i = 0; i < s->n; i++) x[i] = frand();
    fr_traits(tt->act_type)->quant(x, a, s->n);

    for (int lvl = 0; lvl <= fr_isa_detect(); lvl++) {
        fr_kernels_select(lvl);
        for (int use_rows = 0; use_rows < 2; use_rows++) {
            double hot = time_matvec(tt, s, w, 1, a, out, use_rows);
            double cold = time_matvec(tt, s, w, copies, a, out, use_rows);
            double flop = 2.0 * s->n * s->rows;
            printf("%-5s %5lld x %-5lld %-7s %-8s  hot %7.1f us %6.1f GB/s %6.1f GFLOP/s   stream %6.1f GB/s\n",
                   tt->name, (long long)s->rows, (long long)s->n, fr_isa_name(lvl),
                   use_rows ? "dot_rows" : "dot", hot * 1e6, mb / hot * 1e-9, flop / hot * 1e-9,
                   mb / cold * 1e-9);
        }
    }
    free(w), free(x), free(out), free(a);
}

/* Prefill: the same matrix against a batch of activation rows, as one
 * tile call, as dot_rows per activation row, and as single dots. */
static void bench_batch(const shape *s, int batch) {
    const fr_type_traits *tt = fr_traits(s->type);
    size_t rb = fr_row_bytes(s->type, s->n), arb = fr_row_bytes(tt->act_type, s->n);
    uint8_t *w = malloc(rb * s->rows), *a = malloc(arb * batch);
    float *x = malloc(sizeof(float) * s->n), *out = malloc(sizeof(float) * s->rows * batch);
    for (int64_t r = 0; r < s->rows; r++) {
        for (int64_t i = 0; i < s->n; i++) x[i] = frand();
        tt->quant(x, w + r * rb, s->n);
    }
    for (int c = 0; c < batch; c++) {
        for (int64_t i = 0; i < s->n; i++) x[i] = frand();
        fr_traits(tt->act_type)->quant(x, a + c * arb, s->n);
    }
    for (int lvl = 0; lvl <= fr_isa_detect(); lvl++) {
        fr_kernels_select(lvl);
        for (int how = 0; how < 3; how++) {
            double best = 1e9;
            for (int trial = 0; trial < 7; trial++) {
                double t0 = now();
                if (how == 0) {
                    tt->dot_tile(s->n, w, rb, (int)s->rows, a, arb, batch, out, (size_t)s->rows);
                } else if (how == 1) {
                    for (int c = 0; c < batch; c++)
                        tt->dot_rows(s->n, w, rb, a + c * arb, out + c * s->rows, (int)s->rows);
                } else {
                    for (int64_t r = 0; r < s->rows; r++)
                        for (int c = 0; c < batch; c++)
                            out[c * s->rows + r] = tt->dot(s->n, w + r * rb, a + c * arb);
                }
                double t = now() - t0;
                if (t < best) best = t;
                sink = out[0];
            }
            printf("batch %-5s %5lld x %-5lld x %d tok %-7s %-8s %8.1f us %6.1f GFLOP/s\n", tt->name,
                   (long long)s->rows, (long long)s->n, batch, fr_isa_name(lvl),
                   how == 0 ? "dot_tile" : how == 1 ? "dot_rows" : "dot", best * 1e6,
                   2.0 * s->n * s->rows * batch / best * 1e-9);
        }
    }
    free(w), free(a), free(x), free(out);
}

/* Prefill-shaped: one tile call over the whole matrix and batch, as
 * matmul.c makes it, at the best level; dot_rows per token for reference;
 * where the level packs the type, dot_packed (the integer arithmetic) and
 * dot_prompt (prompts' bf16 arithmetic) on the packed rows. Trials
 * alternate, so machine noise hits all alike; times are the thread's CPU
 * time, best of the trials. */
static void bench_prefill(const shape *s, int batch) {
    const fr_type_traits *tt = fr_traits(s->type);
    size_t rb = fr_row_bytes(s->type, s->n), arb = fr_row_bytes(tt->act_type, s->n);
    uint8_t *w = malloc(rb * s->rows), *a = malloc(arb * batch);
    float *x = malloc(sizeof(float) * s->n), *out = malloc(sizeof(float) * s->rows * batch);
    for (int64_t r = 0; r < s->rows; r++) {
        for (int64_t i = 0; i < s->n; i++) x[i] = frand();
        tt->quant(x, w + r * rb, s->n);
    }
    for (int c = 0; c < batch; c++) {
        for (int64_t i = 0; i < s->n; i++) x[i] = frand();
        fr_traits(tt->act_type)->quant(x, a + c * arb, s->n);
    }
    int lvl = fr_kernels_select(fr_isa_detect());
    const int hows = tt->pack && s->rows % 16 == 0 ? (tt->dot_prompt ? 4 : 3) : 2;
    static const char *names[4] = {"dot_tile", "dot_rows", "dot_packed", "dot_prompt"};
    uint8_t *packed = hows > 2 ? malloc(rb * s->rows) : NULL;
    uint16_t *xh = hows > 3 ? malloc(sizeof(uint16_t) * s->n * batch) : NULL;
    if (packed) tt->pack(s->n, w, rb, s->rows, packed);
    if (xh) {
        for (int c = 0; c < batch; c++) {
            for (int64_t i = 0; i < s->n; i++) x[i] = frand();
            fr_quantize_act(FR_BF16, x, xh + c * s->n, s->n);
        }
    }
    double best[4] = {1e9, 1e9, 1e9, 1e9};
    for (int trial = 0; trial < 10; trial++) {
        for (int how = 0; how < hows; how++) {
            double t0 = cpu_now();
            if (how == 0) {
                tt->dot_tile(s->n, w, rb, (int)s->rows, a, arb, batch, out, (size_t)s->rows);
            } else if (how == 2) {
                tt->dot_packed(s->n, packed, (int)s->rows, a, arb, batch, out, (size_t)s->rows);
            } else if (how == 3) {
                tt->dot_prompt(s->n, packed, (int)s->rows, xh, sizeof(uint16_t) * s->n, batch, out, (size_t)s->rows);
            } else {
                for (int c = 0; c < batch; c++)
                    tt->dot_rows(s->n, w, rb, a + c * arb, out + c * s->rows, (int)s->rows);
            }
            double t = cpu_now() - t0;
            if (t < best[how]) best[how] = t;
            sink = out[0];
        }
    }
    for (int how = 0; how < hows; how++)
        printf("prefill %-5s %5lld x %-5lld x %3d tok %-7s %-10s %8.1f us %6.1f GFLOP/s\n", tt->name,
               (long long)s->rows, (long long)s->n, batch, fr_isa_name(lvl), names[how],
               best[how] * 1e6, 2.0 * s->n * s->rows * batch / best[how] * 1e-9);
    free(w), free(a), free(x), free(out), free(packed), free(xh);
}

static void bench_quantize(uint32_t act_type, int64_t n) {
    float *x = malloc(sizeof(float) * n);
    void *y = malloc(fr_row_bytes(act_type, n));
    for (int64_t i = 0; i < n; i++) x[i] = frand();
    for (int lvl = 0; lvl <= fr_isa_detect(); lvl++) {
        fr_kernels_select(lvl);
        double best = 1e9;
        for (int trial = 0; trial < 15; trial++) {
            double t0 = now();
            for (int k = 0; k < 200; k++) fr_quantize_act(act_type, x, y, n);
            double t = (now() - t0) / 200;
            if (t < best) best = t;
        }
        printf("quantize %-5s n=%-5lld %-7s %7.1f ns/row  %6.2f ns/32 values\n", fr_traits(act_type)->name,
               (long long)n, fr_isa_name(lvl), best * 1e9, best * 1e9 / (n / 32));
    }
    free(x), free(y);
}

/* KV cache pages (kv_codec.h) shaped like SmolLM2-135M's: kv_dim 192 (3
 * KV heads of 64). Load: the middle head's 64 channels of all 32 slots
 * into a tile, what attention decodes per head and tile at every step;
 * pack: the whole page, once per 32 tokens and layer. At each level this
 * CPU runs up to AVX2 (the codec has no AVX-512 level). */
static void bench_kv(int type) {
    const int kv_dim = 192, hd = 64;
    const fr_kv_codec *codecs[2] = { &fr_kv_codec_scalar, &fr_kv_codec_avx2 };
    uint16_t *page = malloc(sizeof(uint16_t) * FR_KV_PAGE * kv_dim);
    uint8_t *packed = malloc(fr_kv_page_bytes(type, kv_dim));
    float tile[FR_KV_PAGE * 64];
    for (int i = 0; i < FR_KV_PAGE * kv_dim; i++) page[i] = fr_fp32_to_fp16(frand() * (i % 37 ? 1 : 20));
    for (int lvl = 0; lvl <= FR_MIN(fr_isa_detect(), FR_ISA_AVX2); lvl++)
        for (int is_key = 1; is_key >= 0; is_key--) {
            const fr_kv_codec *k = codecs[lvl];
            double load = 1e9, pack = 1e9;
            k->pack(type, is_key, page, packed, kv_dim);
            for (int trial = 0; trial < 15; trial++) {
                double t0 = now();
                for (int r = 0; r < 1000; r++) {
                    k->load(type, is_key, packed, kv_dim, hd, hd, tile, hd);
                    sink = tile[r & 63];
                }
                double t1 = now();
                for (int r = 0; r < 20; r++) k->pack(type, is_key, page, packed, kv_dim);
                double t2 = now();
                load = FR_MIN(load, (t1 - t0) / 1000), pack = FR_MIN(pack, (t2 - t1) / 20);
            }
            printf("kv_%-5s %-6s load 32 x %d %-7s %7.1f ns/tile %6.2f ns/32 values   pack 32 x %d %8.1f ns/page\n",
                   fr_kv_type_name(type), is_key ? "keys" : "values", hd, fr_isa_name(lvl), load * 1e9,
                   load * 1e9 / (FR_KV_PAGE * hd / 32), kv_dim, pack * 1e9);
        }
    free(page), free(packed);
}

static const char *only; /* type name filter */

static int wanted(uint32_t type) { return !only || strstr(fr_traits(type)->name, only); }

int main(int argc, char **argv) {
    const shape shapes[] = {
        {FR_Q4_1, 576, 1536}, {FR_Q4_1, 1536, 576}, {FR_Q8_0, 576, 1536}, {FR_Q8_0, 576, 49152},
        {FR_Q4_0, 576, 1536}, {FR_F16, 576, 1536},  {FR_F32, 576, 1536},
        /* Gemma 3 270M Q4_K_M */
        {FR_Q5_0, 640, 2048}, {FR_Q5_0, 640, 1024}, {FR_Q4_K, 1024, 640}, {FR_Q4_K, 2048, 640},
        {FR_Q6_K, 2048, 640}, {FR_Q8_0, 640, 2048},
    };
    int prefill_only = argc > 1 && !strcmp(argv[1], "prefill");
    only = argc > 1 + prefill_only ? argv[1 + prefill_only] : NULL;
    printf("cpu level: %s\n", fr_isa_name(fr_isa_detect()));
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0] && !prefill_only; i++)
        if (wanted(shapes[i].type)) bench_shape(&shapes[i]);
    const shape batches[] = {
        {FR_Q4_1, 576, 1536}, {FR_Q8_0, 576, 1536}, {FR_Q5_0, 640, 2048}, {FR_Q4_K, 2048, 640}, {FR_Q6_K, 2048, 640},
    };
    for (size_t i = 0; i < sizeof batches / sizeof batches[0] && !prefill_only; i++)
        if (wanted(batches[i].type)) bench_batch(&batches[i], 64);
    const struct { shape s; int batch; } prefills[] = {
        {{FR_Q4_1, 576, 1536}, 512}, {{FR_Q4_1, 1536, 576}, 512}, {{FR_Q4_0, 576, 1536}, 512}, {{FR_Q8_0, 576, 49152}, 64},
        {{FR_Q5_0, 640, 2048}, 512}, {{FR_Q4_K, 1024, 640}, 512}, {{FR_Q6_K, 2048, 640}, 512},
        /* a server's decode step of 8 sequences */
        {{FR_Q4_1, 576, 1536}, 8}, {{FR_Q4_1, 1536, 576}, 8}, {{FR_Q8_0, 576, 49152}, 8},
    };
    for (size_t i = 0; i < sizeof prefills / sizeof prefills[0]; i++)
        if (wanted(prefills[i].s.type)) bench_prefill(&prefills[i].s, prefills[i].batch);
    const shape quants[] = {{FR_Q8_1, 576, 0}, {FR_Q8_0, 1536, 0}, {FR_Q8_0, 640, 0}, {FR_Q8_K, 2048, 0}, {FR_Q8_K, 1024, 0}};
    for (size_t i = 0; i < sizeof quants / sizeof quants[0] && !prefill_only; i++)
        if (wanted(quants[i].type)) bench_quantize(quants[i].type, quants[i].n);
    for (int type = 0; type < FR_KV_TYPES && !prefill_only; type++) {
        char name[16];
        snprintf(name, sizeof name, "kv_%s", fr_kv_type_name(type));
        if (!only || strstr(name, only)) bench_kv(type);
    }
    return 0;
}
