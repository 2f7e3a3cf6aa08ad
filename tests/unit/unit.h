/*
 * unit.h - the unit test runner's macros. A test file includes this and
 * defines TEST(name) { ... } blocks; they register themselves at start-up
 * and tests/unit/main.c runs them all (or those whose name contains argv[1])
 * and ends with the line "N passed, N failed".
 *
 * CHECK stops the current test at the first failed condition and reports
 * file:line and the expression.
 */
#ifndef UNIT_H
#define UNIT_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*unit_fn)(void);
void unit_register(const char *name, unit_fn fn);
void unit_fail(const char *file, int line, const char *fmt, ...);
extern int unit_failed_flag;

#define TEST(name)                                                      \
    static void name(void);                                             \
    __attribute__((constructor)) static void unit_reg_##name(void) {    \
        unit_register(#name, name);                                     \
    }                                                                   \
    static void name(void)

#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) { unit_fail(__FILE__, __LINE__, "%s", #cond); return; } \
    } while (0)

#define CHECK_MSG(cond, ...)                                            \
    do {                                                                \
        if (!(cond)) { unit_fail(__FILE__, __LINE__, __VA_ARGS__); return; } \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                           \
    do {                                                                \
        double a_ = (a), b_ = (b);                                      \
        if (!(fabs(a_ - b_) <= (tol))) {                                \
            unit_fail(__FILE__, __LINE__, "%s = %g, %s = %g, tol %g",   \
                      #a, a_, #b, b_, (double)(tol));                   \
            return;                                                     \
        }                                                               \
    } while (0)

/* Runs body once per ISA level this CPU has, then restores the level
 * (the file includes quant.h). */
#define FOR_EACH_LEVEL(lvl)                                                             \
    for (int lvl = 0, saved_ = fr_kernels_isa(), once_ = 1; once_; once_ = 0, fr_kernels_select(saved_)) \
        for (; lvl <= fr_isa_detect() && fr_kernels_select(lvl) == lvl; lvl++)

#endif
