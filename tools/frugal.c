/*
 * frugal.c - the command line tool: dispatch to subcommands, and the
 * small ones (info, tokenize) plus helpers the others share.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "cli.h"

static const struct { const char *name, *file; } known_models[] = {
    { "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf" },
    { "gemma3-270m", "gemma-3-270m-Q4_K_M.gguf" },
};

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_die_status(frugal_status st, const char *what) {
    fprintf(stderr, "frugal: %s: %s: %s\n", what, frugal_status_str(st), frugal_last_error());
}

const char *cli_model_path(const char *arg) {
    static char path[4096];
    struct stat sb;
    if (!arg) {
        fprintf(stderr, "frugal: no model given (-m PATH or -m smollm2-135m)\n");
        return NULL;
    }
    for (size_t i = 0; i < sizeof known_models / sizeof known_models[0]; i++) {
        if (strcmp(arg, known_models[i].name)) continue;
        const char *dir = getenv("FRUGAL_MODELS"), *home = getenv("HOME");
        if (dir && *dir) snprintf(path, sizeof path, "%s/%s", dir, known_models[i].file);
        else snprintf(path, sizeof path, "%s/.cache/frugal/models/%s", home ? home : ".", known_models[i].file);
        if (stat(path, &sb) != 0) {
            fprintf(stderr, "frugal: model %s is not downloaded (looked for %s);\n"
                            "        fetch it with: scripts/fetch-model %s\n", arg, path, arg);
            return NULL;
        }
        return path;
    }
    if (stat(arg, &sb) != 0) {
        fprintf(stderr, "frugal: cannot open model %s: %s (known names:", arg, strerror(errno));
        for (size_t i = 0; i < sizeof known_models / sizeof known_models[0]; i++)
            fprintf(stderr, " %s", known_models[i].name);
        fprintf(stderr, ")\n");
        return NULL;
    }
    return arg;
}

frugal_model *cli_load_model(const char *arg) {
    const char *path = cli_model_path(arg);
    if (!path) return NULL;
    frugal_model *m = NULL;
    frugal_status st = frugal_model_load(path, &m);
    if (st) {
        fprintf(stderr, "frugal: cannot load %s: %s: %s\n", path, frugal_status_str(st), frugal_last_error());
        return NULL;
    }
    return m;
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "frugal: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) {
        fprintf(stderr, "frugal: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

bool cli_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "frugal: %s expects an integer in %ld..%ld, got '%s'\n", opt, lo, hi, s ? s : "");
        return false;
    }
    *out = (int)v;
    return true;
}

bool cli_kv_option(const char *opt, const char *val, frugal_ctx_params *kv, bool *ok) {
    int *field = NULL, parsed = -1;
    if (!strcmp(opt, "--kv-type")) field = &kv->kv_type, parsed = frugal_kv_type_parse(val);
    else if (!strcmp(opt, "--kv-policy")) field = &kv->kv_policy, parsed = frugal_kv_policy_parse(val);
    else if (!strcmp(opt, "--kv-budget")) { *ok = cli_int(opt, val, 64, 1 << 24, &kv->kv_budget); return true; }
    else if (!strcmp(opt, "--kv-residual")) {
        *ok = cli_int(opt, val, 32, 1 << 24, &kv->kv_residual);
        if (*ok && kv->kv_residual % 32) {
            fprintf(stderr, "frugal: --kv-residual must be a multiple of 32, got %d\n", kv->kv_residual);
            *ok = false;
        }
        return true;
    } else return false;
    *ok = parsed >= 0;
    if (*ok) *field = parsed;
    else fprintf(stderr, "frugal: unknown value '%s' for %s (%s)\n", val ? val : "", opt,
                 field == &kv->kv_type ? "f16, q8, kivi4, kivi2" : "window, scissorhands");
    return true;
}

void cli_kv_apply(frugal_ctx_params *dst, const frugal_ctx_params *src) {
    dst->kv_type = src->kv_type;
    dst->kv_budget = src->kv_budget;
    dst->kv_policy = src->kv_policy;
    dst->kv_residual = src->kv_residual;
}

bool cli_float(const char *opt, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "frugal: %s expects a number in %g..%g, got '%s'\n", opt, lo, hi, s ? s : "");
        return false;
    }
    *out = (float)v;
    return true;
}

static const char *human_bytes(double b, char *buf, size_t cap) {
    const char *u[] = { "B", "KiB", "MiB", "GiB" };
    int i = 0;
    while (b >= 1024 && i < 3) { b /= 1024; i++; }
    snprintf(buf, cap, "%.2f %s", b, u[i]);
    return buf;
}

static int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    bool all_meta = true, tensors = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--no-tensors")) tensors = false;
        else if (!strcmp(argv[i], "--no-meta")) all_meta = false;
        else if (argv[i][0] != '-' && !model) model = argv[i];
        else { fprintf(stderr, "usage: frugal info [-m] MODEL [--no-meta] [--no-tensors]\n"); return 2; }
    }
    frugal_model *m = cli_load_model(model);
    if (!m) return 1;
    frugal_model_info in;
    char b1[32], b2[32];
    frugal_model_get_info(m, &in);
    printf("model:        %s (%s)\n", in.name, cli_model_path(model));
    printf("architecture: %s\n", in.arch);
    printf("parameters:   %.1f M, tensor data %s, file %s\n", in.n_params / 1e6,
           human_bytes((double)in.weight_bytes, b1, sizeof b1), human_bytes((double)in.file_bytes, b2, sizeof b2));
    printf("layers %d, embedding %d, feed-forward %d, heads %d (kv %d), head size %d\n",
           in.n_layer, in.n_embd, in.n_ff, in.n_head, in.n_head_kv, in.head_dim);
    printf("vocabulary %d, training context %d, rope theta %g, norm eps %g\n",
           in.n_vocab, in.n_ctx_train, in.rope_theta, in.norm_eps);
    printf("tokenizer:    %s (pre-tokenizer %s), bos %d, eos %d, add bos %s\n", in.tokenizer_model,
           in.tokenizer_pre, in.bos_id, in.eos_id, in.add_bos ? "yes" : "no");
    printf("chat template: %s\n", in.chat_template);
    if (all_meta) {
        printf("\nmetadata (%d keys):\n", frugal_model_meta_count(m));
        char val[1024];
        const char *key;
        for (int i = 0; frugal_model_meta(m, i, &key, val, sizeof val); i++)
            printf("  %-40s %s\n", key, val);
    }
    if (tensors) {
        printf("\ntensors (%d):\n  %-32s %-6s %-24s %12s\n", frugal_model_tensor_count(m), "name", "type", "shape", "bytes");
        frugal_tensor_info t;
        for (int i = 0; frugal_model_tensor(m, i, &t); i++) {
            char shape[64];
            int n = snprintf(shape, sizeof shape, "[%lld", (long long)t.ne[0]);
            for (int d = 1; d < t.n_dims; d++) n += snprintf(shape + n, sizeof shape - n, ", %lld", (long long)t.ne[d]);
            snprintf(shape + n, sizeof shape - n, "]");
            printf("  %-32s %-6s %-24s %12llu\n", t.name, t.type, shape, (unsigned long long)t.bytes);
        }
    }
    frugal_model_free(m);
    return 0;
}

/* Prints the ids of one text on one line (or id and piece per line). */
static int print_tokens(frugal_model *m, const char *src, size_t len, unsigned flags, bool pieces) {
    int64_t n = frugal_tokenize(m, src, len, NULL, 0, flags);
    int32_t *ids = n >= 0 ? malloc((size_t)(n ? n : 1) * sizeof *ids) : NULL;
    if (!ids || frugal_tokenize(m, src, len, ids, n, flags) != n) {
        fprintf(stderr, "frugal: tokenize failed: %s\n", frugal_last_error());
        free(ids);
        return 1;
    }
    for (int64_t i = 0; i < n; i++) {
        if (pieces) {
            char piece[256];
            int pn = frugal_token_bytes(m, ids[i], piece, sizeof piece);
            printf("%6d '%.*s'\n", ids[i], pn > 0 && pn <= 256 ? pn : 0, piece);
        } else {
            printf(i ? " %d" : "%d", ids[i]);
        }
    }
    if (!pieces) printf("\n");
    free(ids);
    return 0;
}

static int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    bool special = true, bos = false, pieces = false, split_nul = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "-f") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--no-special")) special = false;
        else if (!strcmp(argv[i], "--bos")) bos = true;
        else if (!strcmp(argv[i], "--pieces")) pieces = true;
        else if (!strcmp(argv[i], "--split-nul")) split_nul = true;
        else {
            fprintf(stderr, "usage: frugal tokenize -m MODEL (-p TEXT | -f FILE) [--no-special] [--bos] [--pieces]\n"
                            "                       [--split-nul]  (FILE holds NUL-separated texts: one line of ids each)\n");
            return 2;
        }
    }
    if (!!text == !!file) { fprintf(stderr, "frugal tokenize: give exactly one of -p TEXT or -f FILE\n"); return 2; }
    frugal_model *m = cli_load_model(model);
    if (!m) return 1;
    size_t len = 0;
    char *buf = file ? cli_read_file(file, &len) : NULL;
    if (file && !buf) { frugal_model_free(m); return 1; }
    if (text) len = strlen(text);
    const char *src = file ? buf : text;
    unsigned flags = (special ? FRUGAL_TOKENIZE_PARSE_SPECIAL : 0) | (bos ? FRUGAL_TOKENIZE_ADD_BOS : 0);
    int rc = 0;
    if (!split_nul) rc = print_tokens(m, src, len, flags, pieces);
    for (size_t at = 0; split_nul && at <= len && !rc; ) {
        size_t n = strnlen(src + at, len - at);
        rc = print_tokens(m, src + at, n, flags, pieces);
        at += n + 1;
        if (at == len) break; /* a trailing NUL ends the last text */
    }
    free(buf);
    frugal_model_free(m);
    return rc;
}


static void usage(void) {
    fprintf(stderr,
            "frugal %s - fast, small LLM inference on the CPU\n\n"
            "usage: frugal COMMAND [options]\n\n"
            "  run         generate text or chat            frugal run -m smollm2-135m -p \"Hello\"\n"
            "  info        describe a model file            frugal info smollm2-135m\n"
            "  tokenize    print token ids                  frugal tokenize -m smollm2-135m -p \"Hello\"\n"
            "  perplexity  score a text file                frugal perplexity -m smollm2-135m -f FILE\n"
            "  bench       measure prefill/decode speed     frugal bench -m smollm2-135m\n"
            "  serve       OpenAI-compatible HTTP server    frugal serve -m smollm2-135m --port 8080\n\n"
            "Run a command with --help for its options.\n", FRUGAL_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) { usage(); return argc < 2 ? 2 : 0; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity")) return cmd_perplexity(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "--version")) { printf("frugal %s\n", FRUGAL_VERSION); return 0; }
    fprintf(stderr, "frugal: unknown command '%s'\n\n", cmd);
    usage();
    return 2;
}
