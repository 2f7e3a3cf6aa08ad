/*
 * scheduler.h - the one thread that runs the model for all requests.
 *
 * An HTTP thread turns a request into a job (prompt tokens, sampler,
 * limits) and submits it. The scheduler gives it a slot (a frugal_ctx
 * with its own KV cache) when one is free, evaluates its prompt in chunks
 * and then decodes it together with every other decoding slot, one token
 * per slot per step. The text it produces is appended to the job, where
 * the HTTP thread waiting on the job picks it up.
 *
 * A job is shared by two threads, so it is reference counted: the HTTP
 * side holds one reference from job_new, the scheduler takes one while
 * the job is queued or running; the last job_release frees it.
 */
#ifndef FRUGAL_SERVER_SCHEDULER_H
#define FRUGAL_SERVER_SCHEDULER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "api.h"
#include "frugal.h"
#include "metrics.h"

/* A generated token's log-probability and its most likely alternatives
 * (req.logprobs): log-softmax of the model's logits, before temperature,
 * penalties and bias. */
typedef struct {
    int32_t token;
    bool scored;    /* false for a prompt's first token: nothing predicts it */
    float logprob;
    size_t offset;  /* where the token's text starts in the reply (the prompt's: in the echo) */
    int n_top;
    int32_t top[API_MAX_TOP_LOGPROBS]; /* most likely first */
    float top_logprob[API_MAX_TOP_LOGPROBS];
} lp_token;

typedef struct job {
    /* Set by the HTTP side before job_submit, read-only afterwards. */
    api_request req;       /* owned: the stop strings live here */
    int32_t *prompt;       /* owned */
    int n_prompt;
    int max_tokens;        /* >= 1 */
    frugal_sampler *smp;   /* owned: each request brings its own settings */
    frugal_json *json;     /* owned, JSON mode (response_format json_object or json_schema), else NULL */
    frugal_stream *stream; /* owned: turns its tokens into UTF-8 */
    char *echo;            /* req.echo, owned: the prompt as its tokens decode ... */
    size_t echo_len;
    size_t *echo_off;      /* ... and where each prompt token's text starts in it */

    atomic_bool cancelled; /* set by the HTTP side when the client is gone */
    atomic_int refs;

    /* Written by the scheduler, read by the HTTP side, all under mu. */
    pthread_mutex_t mu;
    pthread_cond_t changed; /* signalled when text grows or done is set */
    char *text;             /* generated text so far (never a partial stop string) */
    size_t len, cap;
    bool done;
    const char *finish_reason; /* "stop" or "length", when done without error */
    int error_status;          /* when done with an error: its HTTP status ... */
    char error[160];           /* ... and message */
    int n_gen;                 /* tokens generated */
    lp_token *lp;              /* req.logprobs: one per generated token, in order */
    int n_lp, lp_cap;
    lp_token *plp;             /* echo and logprobs: one per prompt token (n_prompt), ... */
    int n_plp;                 /* ... this many evaluated */
    bool prompt_done;          /* echo: the prompt is evaluated */
    int n_cached;              /* prompt tokens reused from the slot's KV cache */

    double t_submit;           /* the scheduler's own: for time to first token */
} job;

/* A job that owns nothing yet, with one reference; NULL when out of memory. */
job *job_new(void);
void job_release(job *j);
/* Waits up to timeout_ms for j->len to exceed `have` or j->done; returns
 * with j->mu unlocked. */
void job_wait(job *j, size_t have, int timeout_ms);

typedef struct scheduler scheduler;

typedef struct {
    int n_slots;    /* --parallel */
    int n_queue;    /* --queue: jobs that may wait beyond the free slots */
    int n_ctx;      /* tokens per slot */
    int n_threads;  /* per context */
    frugal_ctx_params kv; /* KV cache options (the kv_* fields) */
    size_t prefix_cache_bytes; /* shared prefix cache limit, 0 = none */
} sched_params;

/* Creates the slots (contexts) and starts the thread. NULL on failure,
 * with a message in err. */
scheduler *sched_start(frugal_model *model, const sched_params *p, metrics *m, char *err, size_t errlen);

typedef enum { SCHED_OK, SCHED_FULL, SCHED_STOPPING } sched_submit_result;
/* Queues a job (taking a reference). */
sched_submit_result sched_submit(scheduler *s, job *j);

/* Stops taking jobs, fails the queued ones, gives running ones up to
 * grace_s seconds to finish, cancels the rest, and joins the thread. */
void sched_stop(scheduler *s, double grace_s);
/* Frees the slots; call after sched_stop. */
void sched_free(scheduler *s);

#endif
