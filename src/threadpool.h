/*
 * threadpool.h - a persistent pool of worker threads for the forward pass.
 *
 * The forward pass is a sequence of short parallel steps (a matmul, the
 * attention of a layer, ...), dozens per token. Creating threads per step
 * would cost more than the step, so workers live as long as the context
 * and wait between steps: they spin briefly (the next step usually comes
 * within microseconds) and then sleep on a condition variable so an idle
 * engine burns no CPU.
 *
 * fr_pool_run(pool, fn, arg) calls fn(arg, i, n) on every thread i in
 * [0, n) - the caller is thread 0 - and returns when all have finished.
 */
#ifndef FR_THREADPOOL_H
#define FR_THREADPOOL_H

#include "common.h"

typedef struct fr_pool fr_pool;
typedef void (*fr_task_fn)(void *arg, int ith, int nth);

frugal_status fr_pool_new(int n_threads, fr_pool **out);
void fr_pool_free(fr_pool *p);
int fr_pool_size(const fr_pool *p);
void fr_pool_run(fr_pool *p, fr_task_fn fn, void *arg);

/* Splits [0, n) into nth near-equal ranges; thread ith gets [*lo, *hi). */
static inline void fr_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = n / nth, extra = n % nth;
    *lo = ith * per + (ith < extra ? ith : extra);
    *hi = *lo + per + (ith < extra ? 1 : 0);
}

int fr_physical_cores(void);

#endif
