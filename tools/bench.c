/*
 * bench.c - `frugal bench`, like llama-bench: prefill (pp) and decode (tg)
 * speed as mean +/- stddev over repetitions, with the roofline context a
 * reader needs to judge them:
 *   tg: weight bytes read per token x tokens/s = achieved bandwidth, and its
 *       fraction of the machine's read bandwidth measured by --probe;
 *   pp: 2 x matrix parameters x tokens/s = achieved GFLOP/s.
 * With -b B, tg decodes B sequences in lockstep (one frugal_eval_batch per
 * step, as the server does) and reports their aggregate tokens/s: the
 * weights are read once per step for all B, so the roofline bytes are
 * per step, not per token.
 * Tokens are random ids; tokenization and sampling are not timed.
 * With --profile, each test is followed by its time per part of the
 * forward pass (frugal_ctx_profile) with the same roofline context per
 * part: the bytes it must read and the GB/s that makes, and its GFLOP/s.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

typedef struct { double mean, sd; } stat2;

static stat2 stats(const double *v, int n) {
    stat2 s = { 0, 0 };
    for (int i = 0; i < n; i++) s.mean += v[i];
    s.mean /= n;
    for (int i = 0; i < n; i++) s.sd += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0;
    return s;
}

/* ---- STREAM-style read bandwidth probe ---- */

typedef struct { const uint64_t *p; size_t n; uint64_t sum; } probe_arg;

/* Reads a->n words: XORs into eight independent lanes (no FP latency chain,
 * so the loop is bound by memory, not by adds), with the lines 4 KiB ahead
 * requested in advance, as the decode kernels do: the figure is what a
 * well-fed core can read, the ceiling the kernels are measured against. */
static void *probe_read(void *v) {
    probe_arg *a = v;
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= a->n; i += 8) {
        __builtin_prefetch(a->p + i + 512);
        for (int k = 0; k < 8; k++) s[k] ^= a->p[i + k];
    }
    a->sum = s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6] ^ s[7];
    return NULL;
}

/* Best-of-5 read bandwidth in GB/s over a buffer far larger than the
 * caches, all threads reading disjoint parts. */
static double probe_bandwidth(int n_threads) {
    size_t bytes = (size_t)1 << 30, n = bytes / sizeof(uint64_t);
    uint64_t *buf = malloc(bytes);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = i & 7;
    double best = 0;
    pthread_t th[64];
    probe_arg args[64];
    if (n_threads > 64) n_threads = 64;
    for (int r = 0; r < 5; r++) {
        double t0 = cli_now();
        for (int t = 0; t < n_threads; t++) {
            args[t] = (probe_arg){ buf + n / n_threads * t, n / n_threads, 0 };
            pthread_create(&th[t], NULL, probe_read, &args[t]);
        }
        for (int t = 0; t < n_threads; t++) pthread_join(th[t], NULL);
        double gbs = bytes / (cli_now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* Adds ctx's profile so far to sum. */
static void add_parts(frugal_part_stats *sum, const frugal_ctx *ctx) {
    frugal_part_stats p[FRUGAL_PARTS];
    frugal_ctx_profile_get(ctx, p);
    for (int i = 0; i < FRUGAL_PARTS; i++) {
        sum[i].seconds += p[i].seconds, sum[i].bytes += p[i].bytes, sum[i].flops += p[i].flops;
        sum[i].calls += p[i].calls;
    }
}

/* A test's profile in JSON: per part, the sums over n tokens (pp) or
 * steps (tg). */
static void print_profile_json(const frugal_part_stats *parts, double n) {
    printf("{\"units\": %.0f, \"parts\": [", n);
    for (int i = 0; i < FRUGAL_PARTS; i++)
        printf("%s{\"part\": \"%s\", \"seconds\": %.6f, \"bytes\": %.0f, \"flops\": %.0f}", i ? ", " : "",
               frugal_part_name(i), parts[i].seconds, parts[i].bytes, parts[i].flops);
    printf("]}");
}

/* The profile of one test as a table, per token (pp) or per step (tg); n:
 * tokens or steps timed. */
static void print_profile(const char *test, const frugal_part_stats *parts, double n, double bw) {
    double total = 0;
    for (int i = 0; i < FRUGAL_PARTS; i++) total += parts[i].seconds;
    printf("\n%s, per %s:\n\n| part | ms | share | MB read | GB/s | GFLOP/s |\n|---|---|---|---|---|---|\n", test,
           strncmp(test, "pp", 2) ? "step" : "token");
    for (int i = 0; i < FRUGAL_PARTS; i++) {
        const frugal_part_stats *p = &parts[i];
        double sec = p->seconds > 0 ? p->seconds : 1e-12;
        char gbs[48] = "", gflops[24] = "";
        if (p->bytes > 0) {
            int k = snprintf(gbs, sizeof gbs, "%.2f", p->bytes / sec / 1e9);
            if (bw > 0) snprintf(gbs + k, sizeof gbs - (size_t)k, " (%.0f%%)", 100 * p->bytes / sec / 1e9 / bw);
        }
        if (p->flops > 0) snprintf(gflops, sizeof gflops, "%.1f", p->flops / sec / 1e9);
        printf("| %s | %.3f | %.1f%% | %.2f | %s | %s |\n", frugal_part_name(i), p->seconds / n * 1e3,
               total > 0 ? 100 * p->seconds / total : 0, p->bytes / n / 1e6, gbs, gflops);
    }
    printf("| all | %.3f | 100%% | | | |\n", total / n * 1e3);
}

/* Bytes of weights one decoded token reads: every matrix once; the
 * embedding table only one row, unless it doubles as the output matrix. */
static void weight_traffic(const frugal_model *m, double *bytes_per_tok, double *matrix_params) {
    frugal_tensor_info t;
    bool tied = true;
    for (int i = 0; frugal_model_tensor(m, i, &t); i++)
        if (!strcmp(t.name, "output.weight")) tied = false;
    *bytes_per_tok = *matrix_params = 0;
    for (int i = 0; frugal_model_tensor(m, i, &t); i++) {
        bool embd = !strcmp(t.name, "token_embd.weight");
        if (embd && !tied) continue;
        *bytes_per_tok += (double)t.bytes;
        if (t.n_dims >= 2) *matrix_params += (double)t.ne[0] * t.ne[1];
    }
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    int n_p = 512, n_g = 128, reps = 5, n_threads = 0, depth = 0, n_seq = 1;
    frugal_ctx_params kv = frugal_ctx_default_params();
    bool json = false, probe_only = false, probe = true, profile = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--probe")) { probe_only = true; continue; }
        if (!strcmp(a, "--no-probe")) { probe = false; continue; }
        if (!strcmp(a, "--profile")) { profile = true; continue; }
        if (!v) ok = false;
        else if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-p")) ok = cli_int(a, v, 0, 1 << 16, &n_p);
        else if (!strcmp(a, "-n")) ok = cli_int(a, v, 0, 1 << 16, &n_g);
        else if (!strcmp(a, "-r")) ok = cli_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "-t")) ok = cli_int(a, v, 1, 1024, &n_threads);
        else if (!strcmp(a, "-d") || !strcmp(a, "--depth")) ok = cli_int(a, v, 0, 1 << 22, &depth);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) ok = cli_int(a, v, 1, 64, &n_seq);
        else if (cli_kv_option(a, v, &kv, &ok)) {}
        else ok = false;
        if (!ok) {
            fprintf(stderr, "usage: frugal bench -m MODEL [-p 512] [-n 128] [-r 5] [-t N] [-d DEPTH] [-b B] [--json] [--no-probe] [--profile]\n"
                            "       frugal bench --probe [-t N]   (read bandwidth only)\n"
                            "  -d DEPTH         tokens already in the KV cache when pp and tg are timed\n"
                            "  -b B             tg decodes B sequences together (aggregate t/s; default 1)\n"
                            "  --profile        time per part of the forward pass after each test\n"
                            CLI_KV_USAGE);
            return 2;
        }
        i++;
    }
    int threads_probe = n_threads ? n_threads : 2;
    double bw = probe || probe_only ? probe_bandwidth(threads_probe) : 0;
    if (probe_only) {
        if (json) printf("{\"read_bandwidth_gbs\": %.2f, \"threads\": %d}\n", bw, threads_probe);
        else printf("read bandwidth: %.2f GB/s (%d threads, 1 GiB buffer, best of 5)\n", bw, threads_probe);
        return 0;
    }
    frugal_model *m = cli_load_model(model);
    if (!m) return 1;
    frugal_model_info info;
    frugal_model_get_info(m, &info);
    frugal_ctx_params cp = frugal_ctx_default_params();
    cp.n_ctx = depth + (n_p > n_g ? n_p : n_g) + 1;
    cp.n_threads = n_threads;
    cli_kv_apply(&cp, &kv);
    frugal_ctx *seqs[64] = { 0 }, *ctx = NULL;
    frugal_status st = FRUGAL_OK;
    for (int b = 0; b < n_seq && !st; b++) { /* the sequences run on the first one's threads */
        cp.share_threads = b > 0 ? seqs[0] : NULL;
        st = frugal_ctx_new(m, &cp, &seqs[b]);
    }
    ctx = seqs[0];
    if (st) {
        cli_die_status(st, "context");
        for (int b = n_seq - 1; b >= 0; b--) frugal_ctx_free(seqs[b]); /* seqs[0]'s threads last */
        frugal_model_free(m);
        return 1;
    }
    int n_toks = (n_p > 16 ? n_p : 16) > depth ? (n_p > 16 ? n_p : 16) : depth;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_toks);
    srand(1234);
    for (int i = 0; i < n_toks; i++) toks[i] = rand() % info.n_vocab;
    double bytes_tok, mparams;
    weight_traffic(m, &bytes_tok, &mparams);
    double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
    /* one warm-up round brings the weights into the page cache; then each
     * sequence's cache is filled to the depth once (untimed), and each
     * timed run rewinds back to it */
    st = frugal_eval(ctx, toks, 16 < cp.n_ctx ? 16 : 1, false);
    if (!st) st = frugal_ctx_rewind(ctx, 0);
    for (int b = 0; b < n_seq && !st && depth; b++) st = frugal_eval(seqs[b], toks, depth, false);
    size_t kv_bytes = 0;
    for (int b = 0; b < n_seq; b++) kv_bytes += frugal_ctx_kv_bytes(seqs[b]);
    int32_t step[64];
    for (int b = 0; b < n_seq; b++) step[b] = toks[b];
    frugal_part_stats pp_parts[FRUGAL_PARTS] = { 0 }, tg_parts[FRUGAL_PARTS] = { 0 };
    for (int r = 0; r < reps && !st; r++) {
        if (n_p) {
            frugal_ctx_rewind(ctx, depth);
            if (profile) st = frugal_ctx_profile(ctx, true);
            double t0 = cli_now();
            if (!st) st = frugal_eval(ctx, toks, n_p, false);
            pp[r] = n_p / (cli_now() - t0);
            if (profile) add_parts(pp_parts, ctx);
        }
        if (n_g && !st) {
            for (int b = 0; b < n_seq; b++) frugal_ctx_rewind(seqs[b], depth);
            if (profile) st = frugal_ctx_profile(ctx, true);
            double t0 = cli_now();
            for (int i = 0; i < n_g && !st; i++)
                st = n_seq == 1 ? frugal_eval(ctx, step, 1, false) : frugal_eval_batch(seqs, step, n_seq);
            tg[r] = (double)n_g * n_seq / (cli_now() - t0);
            if (profile) add_parts(tg_parts, ctx);
        }
    }
    if (!st && frugal_ctx_pos(ctx) < depth) {
        fprintf(stderr, "frugal: the cache could not be rewound to depth %d (sliding-window layers)\n", depth);
        st = FRUGAL_ERR_INVALID_ARG;
    }
    if (st) {
        cli_die_status(st, "bench");
        free(pp); free(tg); free(toks);
        for (int b = n_seq - 1; b >= 0; b--) frugal_ctx_free(seqs[b]); /* seqs[0]'s threads last */
        frugal_model_free(m);
        return 1;
    }
    stat2 sp = stats(pp, reps), sg = stats(tg, reps);
    int threads = frugal_ctx_threads(ctx);
    /* a decode step reads every weight once and every cache once; per
     * token that is 1/n_seq of it */
    double tg_bytes = (bytes_tok + (double)kv_bytes) / n_seq;
    char kvdesc[96] = "", at[32] = "";
    snprintf(kvdesc, sizeof kvdesc, "%s%s%s", frugal_kv_type_name(kv.kv_type), kv.kv_budget ? " budget " : "",
             kv.kv_budget ? frugal_kv_policy_name(kv.kv_policy) : "");
    if (depth) snprintf(at, sizeof at, " @ d%d", depth);
    if (n_seq > 1) snprintf(at + strlen(at), sizeof at - strlen(at), " x%d seqs", n_seq);
    if (json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"read_bandwidth_gbs\": %.2f, \"weight_bytes_per_token\": %.0f, \"matrix_params\": %.0f,\n",
               info.name, threads, bw, bytes_tok, mparams);
        printf(" \"batch\": %d, \"depth\": %d, \"kv_type\": \"%s\", \"kv_budget\": %d, \"kv_bytes\": %zu,\n", n_seq, depth,
               frugal_kv_type_name(kv.kv_type), kv.kv_budget, kv_bytes);
        printf(" \"pp\": {\"n\": %d, \"tps\": %.2f, \"sd\": %.2f, \"gflops\": %.1f},\n", n_p, sp.mean, sp.sd, 2 * mparams * sp.mean / 1e9);
        printf(" \"tg\": {\"n\": %d, \"tps\": %.2f, \"sd\": %.2f, \"gbs\": %.2f, \"bw_fraction\": %.3f}", n_g, sg.mean, sg.sd,
               tg_bytes * sg.mean / 1e9, bw > 0 ? tg_bytes * sg.mean / 1e9 / bw : 0);
        if (profile) {
            printf(",\n \"profile\": {\"pp\": ");
            print_profile_json(pp_parts, (double)n_p * reps);
            printf(", \"tg\": ");
            print_profile_json(tg_parts, (double)n_g * reps);
            printf("}");
        }
        printf("}\n");
    } else {
        printf("| model | size | params | threads | kv cache | test | t/s | roofline |\n|---|---|---|---|---|---|---|---|\n");
        if (n_p)
            printf("| %s | %.1f MiB | %.1f M | %d | %s | pp%d%s | %.2f ± %.2f | %.1f GFLOP/s |\n", info.name,
                   info.weight_bytes / 1048576.0, info.n_params / 1e6, threads, kvdesc, n_p, at, sp.mean, sp.sd,
                   2 * mparams * sp.mean / 1e9);
        if (n_g) {
            char frac[64] = "";
            if (bw > 0) snprintf(frac, sizeof frac, " = %.0f%% of %.2f GB/s read", 100 * tg_bytes * sg.mean / 1e9 / bw, bw);
            printf("| %s | %.1f MiB | %.1f M | %d | %s | tg%d%s | %.2f ± %.2f | %.2f GB/s%s |\n", info.name,
                   info.weight_bytes / 1048576.0, info.n_params / 1e6, threads, kvdesc, n_g, at, sg.mean, sg.sd,
                   tg_bytes * sg.mean / 1e9, frac);
        }
        if (depth) printf("KV cache at depth %d: %.1f MiB\n", depth, kv_bytes / 1048576.0);
    }
    char test[48];
    if (profile && n_p && !json) {
        snprintf(test, sizeof test, "pp%d%s", n_p, at);
        print_profile(test, pp_parts, (double)n_p * reps, bw);
    }
    if (profile && n_g && !json) {
        snprintf(test, sizeof test, "tg%d%s", n_g, at);
        print_profile(test, tg_parts, (double)n_g * reps, bw);
    }
    free(pp); free(tg); free(toks);
    for (int b = n_seq - 1; b >= 0; b--) frugal_ctx_free(seqs[b]); /* seqs[0]'s threads last */
    frugal_model_free(m);
    return 0;
}
