/*
 * replay.c - runs a fuzz target's LLVMFuzzerTestOneInput over files, so
 * corpora are regression tests without libFuzzer (built with gcc and
 * -fsanitize=address,undefined by `make fuzz-replay`).
 *
 *   replay_fuzz_gguf DIR_OR_FILE...
 *
 * Each input is read into a buffer of exactly its size (so ASan catches a
 * read one byte past the end, as under libFuzzer). Directories are read
 * in name order, not recursively; a missing path is skipped with a note.
 * Any crash, sanitizer report or failed check ends the run, naming the
 * input that caused it (REPLAY_VERBOSE=1 names every input as it runs).
 */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<sanitizer/common_interface_defs.h>)
#include <sanitizer/common_interface_defs.h>
#define HAVE_DEATH_CALLBACK 1
#endif
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *current;   /* the input being run */

/* Async-signal-safe: names the input that crashed. */
static void name_current(void) {
    if (!current) return;
    static const char msg[] = "\nreplay: the input that failed: ";
    if (write(2, msg, sizeof msg - 1) < 0 || write(2, current, strlen(current)) < 0 ||
        write(2, "\n", 1) < 0)
        return;
}

static void on_abort(int sig) {
    name_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0) {
        perror(path);
        fclose(f);
        return 1;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf || fread(buf, 1, size, f) != size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return 1;
    }
    fclose(f);
    if (getenv("REPLAY_VERBOSE")) fprintf(stderr, "replay: %s\n", path);
    current = path;
    LLVMFuzzerTestOneInput(buf, size);
    current = NULL;
    free(buf);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, int *count) {
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return 1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
            if (!names) abort();
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, by_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            rc |= run_file(path);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv) {
    int rc = 0, count = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    signal(SIGABRT, on_abort);   /* failed checks; sanitizers keep their own handlers */
#ifdef HAVE_DEATH_CALLBACK
    __sanitizer_set_death_callback(name_current);
#endif
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: %s does not exist, skipped\n", argv[i]);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            rc |= run_dir(argv[i], &count);
        } else {
            rc |= run_file(argv[i]);
            count++;
        }
    }
    printf("%s: %d inputs replayed%s\n", argv[0], count, rc ? ", some unreadable" : "");
    return rc;
}
