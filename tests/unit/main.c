/* main.c - runs the registered unit tests; see unit.h. */
#include <stdarg.h>
#include <stdlib.h>
#include "unit.h"

#define MAX_TESTS 4096

static struct { const char *name; unit_fn fn; } tests[MAX_TESTS];
static int n_tests;
int unit_failed_flag;

void unit_register(const char *name, unit_fn fn) {
    if (n_tests < MAX_TESTS) {
        tests[n_tests].name = name;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

void unit_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "  FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    unit_failed_flag = 1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    qsort(tests, n_tests, sizeof tests[0], by_name);
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        unit_failed_flag = 0;
        tests[i].fn();
        if (unit_failed_flag) {
            failed++;
            fprintf(stderr, "not ok %s\n", tests[i].name);
        } else {
            passed++;
            printf("ok %s\n", tests[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
