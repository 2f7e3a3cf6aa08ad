/*
 * threadpool.c - see threadpool.h.
 *
 * Protocol: the caller publishes (fn, arg) and bumps `generation`; each
 * worker that sees a new generation runs its share and increments `done`.
 * The caller runs share 0 itself, then waits until done == n - 1.
 * Waiting spins on the atomic for a while before falling back to the
 * condition variable, so back-to-back steps never pay a syscall. After a
 * short spin the waiter yields its core on every poll: when there are
 * more runnable threads than cores (another program busy, a server with
 * several contexts), the thread being waited for gets to run.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "threadpool.h"

#define SPIN_ITERS 20000  /* polls before sleeping on the condition variable */
#define PAUSE_ITERS 2000  /* polls with a pause; after that each poll yields the core */

struct fr_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* workers sleep here for a new generation */
    pthread_cond_t finished;   /* caller sleeps here for done == n - 1 */
    fr_task_fn fn;
    void *arg;
    atomic_uint generation;
    atomic_int done;
    atomic_int sleepers;       /* workers blocked on `wake` */
    atomic_bool caller_sleeping;
    atomic_bool stop;
};

typedef struct { fr_pool *p; int ith; } worker_arg;

static inline void cpu_relax(int iter) {
    if (iter >= PAUSE_ITERS) {
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static unsigned wait_generation(fr_pool *p, unsigned seen) {
    for (int i = 0; i < SPIN_ITERS; i++) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load(&p->stop)) return g;
        cpu_relax(i);
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    unsigned g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *v) {
    worker_arg *wa = v;
    fr_pool *p = wa->p;
    int ith = wa->ith;
    fr_free(wa);
    unsigned seen = 0;
    for (;;) {
        seen = wait_generation(p, seen);
        if (atomic_load(&p->stop)) break;
        p->fn(p->arg, ith, p->n);
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == p->n - 1 &&
            atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->finished);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

frugal_status fr_pool_new(int n_threads, fr_pool **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "thread count %d out of range 1..1024", n_threads);
    fr_pool *p = fr_calloc(1, sizeof *p);
    if (!p) return fr_error(FRUGAL_ERR_NOMEM, "out of memory creating thread pool");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->finished, NULL);
    if (n_threads > 1) {
        p->threads = fr_calloc((size_t)n_threads, sizeof *p->threads);
        if (!p->threads) { p->n = 1; fr_pool_free(p); /* no workers to join */ return fr_error(FRUGAL_ERR_NOMEM, "out of memory creating thread pool"); }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = fr_malloc(sizeof *wa);
        if (!wa) { p->n = i; fr_pool_free(p); return fr_error(FRUGAL_ERR_NOMEM, "out of memory creating thread pool"); }
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            fr_free(wa);
            p->n = i;
            fr_pool_free(p);
            return fr_error(FRUGAL_ERR_NOMEM, "cannot create worker thread %d", i);
        }
    }
    *out = p;
    return FRUGAL_OK;
}

void fr_pool_free(fr_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->finished);
    fr_free(p->threads);
    fr_free(p);
}

int fr_pool_size(const fr_pool *p) { return p->n; }

void fr_pool_run(fr_pool *p, fr_task_fn fn, void *arg) {
    if (p->n == 1) { fn(arg, 0, 1); return; }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->done, 0);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&p->done, memory_order_acquire) == p->n - 1) return;
        cpu_relax(i);
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, true);
    while (atomic_load(&p->done) != p->n - 1) pthread_cond_wait(&p->finished, &p->mu);
    atomic_store(&p->caller_sleeping, false);
    pthread_mutex_unlock(&p->mu);
}

/* Physical cores: distinct (physical id, core id) pairs in /proc/cpuinfo;
 * falls back to the online CPU count. */
int fr_physical_cores(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    if (!f) return (int)online;
    char line[256];
    int phys = -1, n = 0;
    int seen[1024][2];
    while (fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
        else if (sscanf(line, "core id : %d", &v) == 1) {
            bool dup = false;
            for (int i = 0; i < n; i++)
                if (seen[i][0] == phys && seen[i][1] == v) dup = true;
            if (!dup && n < 1024) { seen[n][0] = phys; seen[n][1] = v; n++; }
        }
    }
    fclose(f);
    return n > 0 ? n : (int)online;
}
