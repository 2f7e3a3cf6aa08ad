/* Thread pool: every share runs exactly once per step, for many steps in a
 * row (the spin path) and after idle pauses (the sleep path). */
#include <stdatomic.h>
#include <time.h>
#include "threadpool.h"
#include "unit.h"

typedef struct { atomic_int calls[8]; atomic_int bad_nth; int expect_nth; } count_job;

static void count_task(void *arg, int ith, int nth) {
    count_job *j = arg;
    if (nth != j->expect_nth) atomic_fetch_add(&j->bad_nth, 1);
    atomic_fetch_add(&j->calls[ith], 1);
}

TEST(threadpool_runs_each_share_once_per_step) {
    for (int n = 1; n <= 4; n++) {
        fr_pool *p = NULL;
        CHECK(fr_pool_new(n, &p) == FRUGAL_OK);
        count_job j = { .expect_nth = n };
        for (int step = 0; step < 2000; step++) fr_pool_run(p, count_task, &j);
        for (int i = 0; i < n; i++) CHECK(atomic_load(&j.calls[i]) == 2000);
        CHECK(atomic_load(&j.bad_nth) == 0);
        fr_pool_free(p);
    }
}

TEST(threadpool_survives_idle_sleep) {
    fr_pool *p = NULL;
    CHECK(fr_pool_new(2, &p) == FRUGAL_OK);
    count_job j = { .expect_nth = 2 };
    for (int step = 0; step < 3; step++) {
        struct timespec ts = { 0, 150 * 1000 * 1000 }; /* long enough for workers to sleep */
        nanosleep(&ts, NULL);
        fr_pool_run(p, count_task, &j);
    }
    CHECK(atomic_load(&j.calls[0]) == 3 && atomic_load(&j.calls[1]) == 3);
    fr_pool_free(p);
}

TEST(threadpool_split_covers_range_exactly) {
    for (int64_t n = 0; n < 50; n++)
        for (int nth = 1; nth <= 5; nth++) {
            int64_t next = 0;
            for (int i = 0; i < nth; i++) {
                int64_t lo, hi;
                fr_split(n, i, nth, &lo, &hi);
                CHECK(lo == next && hi >= lo && hi - lo <= n / nth + 1);
                next = hi;
            }
            CHECK(next == n);
        }
}

TEST(threadpool_rejects_bad_counts) {
    fr_pool *p = NULL;
    CHECK(fr_pool_new(0, &p) == FRUGAL_ERR_INVALID_ARG && !p);
    CHECK(fr_pool_new(100000, &p) == FRUGAL_ERR_INVALID_ARG && !p);
}
