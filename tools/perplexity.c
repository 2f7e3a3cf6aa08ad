/*
 * perplexity.c - `frugal perplexity`, scored like llama-perplexity: the
 * text is cut into non-overlapping windows of CTX tokens, each window is
 * evaluated from an empty cache, and only the second half of each window
 * is scored (every scored token then has at least CTX/2 tokens of
 * context). Logit j predicts token j+1, so a window scores positions
 * CTX/2 .. CTX-2.
 *
 * --logits-out writes the scored logits as a float32 .npy [positions,
 * vocab]; --tokens-out writes the windows' token ids as an int32 .npy
 * [windows, CTX], so another engine can be run on exactly the same input.
 * --kl-base reads such a logits file (from an f16-cache run, say) and
 * reports the mean KL divergence from it and the top-1 agreement.
 *
 * With a compressed or budgeted KV cache the text is scored the way
 * decoding would see it: a full-window prefill would let each token
 * attend to its predecessors in fp16 and hide the cache's error. A
 * compressed cache is fed one page (32 tokens) at a time, which gives
 * every token exactly the cache decoding gives it (pages are packed at
 * page boundaries); a budgeted cache one token at a time, so eviction
 * happens after every token as in decoding.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

/* Writes a version 1.0 .npy header for a C-order array. */
static bool npy_header(FILE *f, const char *dtype, long d0, long d1) {
    char dict[128];
    int n = d1 >= 0 ? snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%ld, %ld), }", dtype, d0, d1)
                    : snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%ld,), }", dtype, d0);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0 };
    int hlen = n + pad + 1;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);
    fwrite(pre, 1, 10, f);
    fwrite(dict, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    return !ferror(f);
}

/* Reads a .npy header written by npy_header: float32 [d0, d1]. */
static bool npy_read_header(FILE *f, long *d0, long *d1) {
    unsigned char pre[10];
    char dict[512];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) || pre[6] != 1) return false;
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (hlen >= sizeof dict || fread(dict, 1, hlen, f) != hlen) return false;
    dict[hlen] = 0;
    const char *shape = strstr(dict, "'shape': (");
    return strstr(dict, "'descr': '<f4'") && strstr(dict, "'fortran_order': False") && shape &&
           sscanf(shape, "'shape': (%ld, %ld)", d0, d1) == 2;
}

/* KL(p || q) of two logits rows, in double; *same: equal argmax. */
static double kl_div(const float *p, const float *q, int n, bool *same) {
    int ap = 0, aq = 0;
    for (int i = 1; i < n; i++) {
        if (p[i] > p[ap]) ap = i;
        if (q[i] > q[aq]) aq = i;
    }
    double sp = 0, sq = 0, kl = 0;
    for (int i = 0; i < n; i++) { sp += exp((double)p[i] - p[ap]); sq += exp((double)q[i] - q[aq]); }
    double lp = log(sp) + p[ap], lq = log(sq) + q[aq];
    for (int i = 0; i < n; i++) {
        double a = p[i] - lp;
        kl += exp(a) * (a - (q[i] - lq));
    }
    *same = ap == aq;
    return kl;
}

/* -log p(target) from a logits row, in double. */
static double nll(const float *logits, int n_vocab, int32_t target) {
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++) if (logits[i] > max) max = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - max);
    return log(sum) - ((double)logits[target] - max);
}

int cmd_perplexity(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *logits_out = NULL, *tokens_out = NULL, *kl_base = NULL;
    int n_ctx = 512, n_threads = 0, max_chunks = 0;
    frugal_ctx_params kv = frugal_ctx_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!v) ok = false;
        else if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "-c")) ok = cli_int(a, v, 4, 1 << 20, &n_ctx);
        else if (!strcmp(a, "-t")) ok = cli_int(a, v, 1, 1024, &n_threads);
        else if (!strcmp(a, "--chunks")) ok = cli_int(a, v, 1, 1 << 24, &max_chunks);
        else if (!strcmp(a, "--logits-out")) logits_out = v;
        else if (!strcmp(a, "--tokens-out")) tokens_out = v;
        else if (!strcmp(a, "--kl-base")) kl_base = v;
        else if (cli_kv_option(a, v, &kv, &ok)) {}
        else ok = false;
        if (!ok) {
            fprintf(stderr, "usage: frugal perplexity -m MODEL -f TEXT [-c CTX=512] [-t N] [--chunks N]\n"
                            "                         [--logits-out FILE.npy] [--tokens-out FILE.npy] [--kl-base FILE.npy]\n"
                            CLI_KV_USAGE);
            return 2;
        }
        i++;
    }
    if (!file) { fprintf(stderr, "frugal perplexity: -f TEXT is required\n"); return 2; }
    size_t len;
    char *text = cli_read_file(file, &len);
    if (!text) return 1;
    frugal_model *m = cli_load_model(model);
    if (!m) { free(text); return 1; }
    int rc = 1;
    int64_t n_tok = frugal_tokenize(m, text, len, NULL, 0, 0);
    int32_t *toks = n_tok > 0 ? malloc((size_t)n_tok * sizeof *toks) : NULL;
    FILE *lf = NULL, *tf = NULL, *bf = NULL;
    float *base_row = NULL;
    frugal_ctx *ctx = NULL;
    if (!toks || frugal_tokenize(m, text, len, toks, n_tok, 0) != n_tok) {
        fprintf(stderr, "frugal: cannot tokenize %s: %s\n", file, n_tok == 0 ? "empty text" : frugal_last_error());
        goto done;
    }
    int n_chunks = (int)(n_tok / n_ctx);
    if (max_chunks && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "frugal: %s has %lld tokens, fewer than one window of %d (use a smaller -c)\n",
                file, (long long)n_tok, n_ctx);
        goto done;
    }
    frugal_ctx_params cp = frugal_ctx_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = n_threads;
    cli_kv_apply(&cp, &kv);
    frugal_status st = frugal_ctx_new(m, &cp, &ctx);
    if (st) { cli_die_status(st, "context"); goto done; }
    int n_vocab = frugal_n_vocab(m), first = n_ctx / 2, per_chunk = n_ctx - 1 - first;
    frugal_model_info info;
    frugal_model_get_info(m, &info);
    if (logits_out && (!(lf = fopen(logits_out, "wb")) || !npy_header(lf, "<f4", (long)n_chunks * per_chunk, n_vocab))) {
        fprintf(stderr, "frugal: cannot write %s\n", logits_out);
        goto done;
    }
    if (tokens_out && (!(tf = fopen(tokens_out, "wb")) || !npy_header(tf, "<i4", n_chunks, n_ctx))) {
        fprintf(stderr, "frugal: cannot write %s\n", tokens_out);
        goto done;
    }
    if (kl_base) {
        long d0 = 0, d1 = 0;
        if (!(bf = fopen(kl_base, "rb")) || !npy_read_header(bf, &d0, &d1)) {
            fprintf(stderr, "frugal: %s is not a float32 logits .npy written by --logits-out\n", kl_base);
            goto done;
        }
        if (d0 != (long)n_chunks * per_chunk || d1 != n_vocab) {
            fprintf(stderr, "frugal: %s holds [%ld, %ld] logits, this run scores [%ld, %d]: use the same model, "
                            "text, -c and --chunks\n", kl_base, d0, d1, (long)n_chunks * per_chunk, n_vocab);
            goto done;
        }
        if (!(base_row = malloc((size_t)n_vocab * sizeof *base_row))) { fprintf(stderr, "frugal: out of memory\n"); goto done; }
    }
    /* tokens per frugal_eval: decoding's view of a compressed/budgeted cache */
    int step = kv.kv_budget ? 1 : kv.kv_type != FRUGAL_KV_F16 ? 32 : n_ctx;
    fprintf(stderr, "perplexity: %lld tokens, %d windows of %d, scoring %d positions each; KV cache %s%s%s, "
            "%d token%s per step\n", (long long)n_tok, n_chunks, n_ctx, per_chunk, frugal_kv_type_name(kv.kv_type),
            kv.kv_budget ? ", budget " : "", kv.kv_budget ? frugal_kv_policy_name(kv.kv_policy) : "", step,
            step > 1 ? "s" : "");
    double sum = 0, sum2 = 0, t0 = cli_now(), kl_sum = 0;
    long count = 0, agree = 0;
    size_t kv_peak = 0;
    for (int c = 0; c < n_chunks; c++) {
        int32_t *w = toks + (size_t)c * n_ctx;
        if (info.add_bos && info.bos_id >= 0) w[0] = info.bos_id; /* as llama-perplexity does */
        frugal_ctx_rewind(ctx, 0);
        for (int p0 = 0; p0 < n_ctx; p0 += step) {
            int n = n_ctx - p0 < step ? n_ctx - p0 : step;
            if ((st = frugal_eval(ctx, w + p0, n, true))) { cli_die_status(st, "eval"); goto done; }
            if (frugal_ctx_kv_bytes(ctx) > kv_peak) kv_peak = frugal_ctx_kv_bytes(ctx);
            for (int j = p0 > first ? p0 : first; j < p0 + n && j < n_ctx - 1; j++) {
                const float *lg = frugal_logits(ctx, j - p0);
                double v = nll(lg, n_vocab, w[j + 1]);
                sum += v;
                sum2 += v * v;
                count++;
                if (lf) fwrite(lg, sizeof(float), (size_t)n_vocab, lf);
                if (bf) {
                    bool same;
                    if (fread(base_row, sizeof(float), (size_t)n_vocab, bf) != (size_t)n_vocab) {
                        fprintf(stderr, "frugal: %s ends early\n", kl_base);
                        goto done;
                    }
                    kl_sum += kl_div(base_row, lg, n_vocab, &same);
                    agree += same;
                }
            }
        }
        if (tf) fwrite(w, sizeof(int32_t), (size_t)n_ctx, tf);
        printf("[%d]%.4f,", c + 1, exp(sum / count));
        fflush(stdout);
    }
    double mean = sum / count, var = sum2 / count - mean * mean;
    double ppl = exp(mean), err = ppl * sqrt(var > 0 ? var / (count - 1 > 0 ? count - 1 : 1) : 0);
    printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, err);
    if (bf) printf("KL divergence from %s: %.6f (mean over %ld positions), top-1 agreement %.2f%%\n", kl_base,
                   kl_sum / count, count, 100.0 * agree / count);
    printf("KV cache: %s, peak %.2f MiB\n", frugal_kv_type_name(kv.kv_type), kv_peak / 1048576.0);
    fprintf(stderr, "perplexity: %ld positions scored in %.1f s (%.1f tokens/s)\n", count, cli_now() - t0,
            (double)n_chunks * n_ctx / (cli_now() - t0));
    rc = 0;
    if ((lf && ferror(lf)) || (tf && ferror(tf))) { fprintf(stderr, "frugal: write error\n"); rc = 1; }
done:
    if (lf && fclose(lf)) rc = 1;
    if (tf && fclose(tf)) rc = 1;
    if (bf) fclose(bf);
    free(base_row);
    frugal_ctx_free(ctx);
    free(toks);
    free(text);
    frugal_model_free(m);
    return rc;
}
