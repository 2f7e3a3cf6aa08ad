/*
 * cli.h - what the subcommands of the frugal tool share. The tool is a
 * client of the public API (frugal.h) only.
 */
#ifndef FRUGAL_CLI_H
#define FRUGAL_CLI_H

#include <stdbool.h>
#include <stdio.h>
#include "frugal.h"

/* Resolves -m: a path, or a known short name ("smollm2-135m") looked up in
 * $FRUGAL_MODELS (default ~/.cache/frugal/models). Prints an error and
 * returns NULL when the file is not there. The result is static. */
const char *cli_model_path(const char *arg);
/* Loads the model named by -m, printing a clear error on failure. */
frugal_model *cli_load_model(const char *arg);
/* Reads a whole file (NUL-terminated); NULL + message on failure. */
char *cli_read_file(const char *path, size_t *len);
/* Parses numbers strictly (whole string, in range); prints an error naming
 * the option and returns false otherwise. */
bool cli_int(const char *opt, const char *s, long lo, long hi, int *out);
bool cli_float(const char *opt, const char *s, double lo, double hi, float *out);
double cli_now(void);

/* The KV cache options every subcommand takes: --kv-type, --kv-budget,
 * --kv-policy, --kv-residual. If `opt` is one of them, parses `val` into
 * kv (printing an error when bad) and returns true with *ok set. */
bool cli_kv_option(const char *opt, const char *val, frugal_ctx_params *kv, bool *ok);
/* Copies the KV fields of src into dst. */
void cli_kv_apply(frugal_ctx_params *dst, const frugal_ctx_params *src);
#define CLI_KV_USAGE \
    "  --kv-type T      KV cache type: f16 (default), q8, kivi4, kivi2\n" \
    "  --kv-budget N    keep at most N tokens per layer (evicting older ones)\n" \
    "  --kv-policy P    which tokens a budget keeps: window (default), scissorhands\n" \
    "  --kv-residual R  recent tokens a compressed cache keeps in fp16 (default 32)\n"
void cli_die_status(frugal_status st, const char *what);

int cmd_run(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv); /* server/serve.c */

#endif
