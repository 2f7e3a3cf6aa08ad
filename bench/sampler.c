/*
 * sampler.c - micro-benchmark of frugal_sampler_sample (not a test).
 *
 * The server samples every decoding sequence's next token on its one
 * scheduling thread, between steps, while the compute threads wait; this
 * times one sample over a SmolLM2-sized vocabulary (49,152 logits, drawn
 * from a normal distribution) with bench/serve's settings (temperature
 * 0.8, top-k 40, top-p 0.95, min-p 0.05), without and with a repetition
 * penalty over 64 tokens, and greedy. Prints microseconds per sample
 * (CPU time of the thread) and a checksum of the tokens drawn, which is
 * the same for every version of the sampler that draws the same tokens.
 *
 * Build and run (from the repo root, after make):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude bench/sampler.c build/libfrugal.a \
 *       -lpcre2-8 -lcjson -lm -lpthread -o /tmp/bench_sampler && /tmp/bench_sampler
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "frugal.h"

enum { VOCAB = 49152, SAMPLES = 4000 };

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void run(const char *name, float temperature, float penalty, const float *logits) {
    frugal_sampler_params p = frugal_sampler_default_params();
    p.temperature = temperature;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = penalty;
    p.seed = 1;
    frugal_sampler *s = NULL;
    if (frugal_sampler_new(&p, VOCAB, &s) != FRUGAL_OK) {
        fprintf(stderr, "frugal_sampler_new: %s\n", frugal_last_error());
        exit(1);
    }
    for (int i = 0; i < 64; i++) frugal_sampler_accept(s, (i * 7919) % VOCAB);
    unsigned long sum = 0;
    double t0 = cpu_now();
    for (int i = 0; i < SAMPLES; i++) sum = sum * 31 + (unsigned long)frugal_sampler_sample(s, logits);
    double us = (cpu_now() - t0) / SAMPLES * 1e6;
    printf("%-34s %7.1f us per sample   tokens checksum %016lx\n", name, us, sum);
    frugal_sampler_free(s);
}

int main(void) {
    float *logits = malloc(VOCAB * sizeof *logits);
    if (!logits) return 1;
    srand(1);
    for (int i = 0; i < VOCAB; i++) { /* Box-Muller, sigma 2 */
        float u = (rand() + 1.0f) / ((float)RAND_MAX + 2.0f), v = (rand() + 1.0f) / ((float)RAND_MAX + 2.0f);
        logits[i] = 2.0f * sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
    }
    run("temperature 0.8, top-k 40", 0.8f, 1.0f, logits);
    run("the same, repeat penalty 1.1", 0.8f, 1.1f, logits);
    run("greedy", 0.0f, 1.0f, logits);
    free(logits);
    return 0;
}
