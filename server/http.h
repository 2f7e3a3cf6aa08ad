/*
 * http.h - the HTTP front end: libmicrohttpd with a thread per
 * connection. A connection thread parses and validates its request,
 * submits a job to the scheduler and then waits on the job, sending the
 * reply at the end or as server-sent events while it grows. Blocking in
 * a connection's own thread keeps the code straight-line; the number of
 * connections is bounded (HTTP_MAX_CONNECTIONS).
 */
#ifndef FRUGAL_SERVER_HTTP_H
#define FRUGAL_SERVER_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include "frugal.h"
#include "metrics.h"
#include "scheduler.h"

#define HTTP_MAX_CONNECTIONS 256
#ifndef HTTP_IDLE_TIMEOUT_S
#define HTTP_IDLE_TIMEOUT_S 60 /* an idle keep-alive connection is closed after this */
#endif

typedef struct {
    frugal_model *model;
    scheduler *sched;
    metrics *metrics;
    const char *model_id;           /* what GET /v1/models lists */
    const char *model_names[3];     /* accepted in "model": the id, -m's argument, general.name */
    int n_ctx, n_vocab;
    const char *api_key;            /* NULL: no authentication */
    size_t max_body;                /* bytes; larger bodies get 413 */
    time_t started;
    bool verbose;                   /* a log line per request on stderr */
    atomic_int n_replying;          /* connections with a job, until their reply is sent */
} http_server;

struct MHD_Daemon;

/* Serves on an already listening socket (which it then owns). NULL on
 * failure. */
struct MHD_Daemon *http_start(http_server *srv, int listen_fd);
/* Stops accepting connections; the ones open go on. */
void http_quiesce(struct MHD_Daemon *d);
/* Waits up to timeout_s for the replies of finished jobs to be sent
 * (call after sched_stop: then every job is done). */
void http_drain(http_server *srv, double timeout_s);
/* Closes all connections and joins their threads. */
void http_stop(struct MHD_Daemon *d);

/* The chat page served at GET / (page.c). */
extern const char page_html[];

#endif
