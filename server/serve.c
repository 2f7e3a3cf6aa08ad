/*
 * serve.c - `frugal serve`: options, startup and shutdown of the
 * OpenAI-compatible HTTP server.
 *
 * Threads: libmicrohttpd's (one listening, one per connection), the
 * scheduler (all model work), and this one, which only waits for SIGINT
 * or SIGTERM. The signals are blocked before any thread starts, so every
 * thread inherits the mask and sigwait here is the only place they
 * arrive: no handler runs in a random thread at a random point.
 *
 * Shutdown order: stop accepting connections; stop the scheduler (queued
 * requests get 503, running ones SHUTDOWN_GRACE_S seconds to finish);
 * let the connections send what their jobs produced; then close them,
 * their threads no longer waiting on anything; then free the slots and
 * the model.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "http.h"

#define SHUTDOWN_GRACE_S 5.0

typedef struct {
    const char *model, *host, *api_key;
    int port, parallel, queue, n_ctx, n_threads, max_body, prefix_mib;
    frugal_ctx_params kv;    /* the KV cache options */
    bool verbose;
} serve_opts;

static void usage(void) {
    fprintf(stderr,
            "usage: frugal serve -m MODEL [options]\n"
            "  -m MODEL          path to a GGUF file or a known name (smollm2-135m)\n"
            "  --host ADDR       address to listen on (default 127.0.0.1)\n"
            "  --port N          port (default 8080; 0 = any free port, printed at startup)\n"
            "  --parallel N      slots: requests decoded together (default 4)\n"
            "  --queue N         requests that may wait for a slot before 503 (default 64)\n"
            "  -c N              context tokens per slot (default min(training context, 4096))\n"
            "  -t N              threads (default: physical cores)\n"
            "  --api-key KEY     require 'Authorization: Bearer KEY' (or set FRUGAL_API_KEY)\n"
            "  --max-body BYTES  largest request body (default 1048576)\n"
            "  --prefix-cache MIB  KV memory for prompt prefixes shared across requests (default 256; 0 = off)\n"
            "  -v, --verbose     log every request on stderr\n"
            CLI_KV_USAGE);
}

static bool parse_args(int argc, char **argv, serve_opts *o) {
    *o = (serve_opts){ .host = "127.0.0.1", .port = 8080, .parallel = 4, .queue = 64, .max_body = 1 << 20, .prefix_mib = 256 };
    o->api_key = getenv("FRUGAL_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true, takes = true;
        if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (v && cli_kv_option(a, v, &o->kv, &ok)) {}
        else if (!strcmp(a, "--port")) ok = cli_int(a, v, 0, 65535, &o->port);
        else if (!strcmp(a, "--parallel")) ok = cli_int(a, v, 1, 64, &o->parallel);
        else if (!strcmp(a, "--queue")) ok = cli_int(a, v, 0, 65536, &o->queue);
        else if (!strcmp(a, "-c")) ok = cli_int(a, v, 16, 1 << 20, &o->n_ctx);
        else if (!strcmp(a, "-t")) ok = cli_int(a, v, 1, 1024, &o->n_threads);
        else if (!strcmp(a, "--prefix-cache")) ok = cli_int(a, v, 0, 1 << 20, &o->prefix_mib);
        else if (!strcmp(a, "--max-body")) ok = cli_int(a, v, 1024, 1 << 30, &o->max_body);
        else {
            takes = false;
            if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = true;
            else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); exit(0); }
            else { fprintf(stderr, "frugal serve: unknown option '%s'\n", a); usage(); return false; }
        }
        if (takes && !v) { fprintf(stderr, "frugal serve: %s needs a value\n", a); return false; }
        if (!ok) return false;
        i += takes;
    }
    if (o->api_key && !*o->api_key) o->api_key = NULL;
    return true;
}

/* Opens the listening socket ourselves (MHD then serves on it): that way
 * any address getaddrinfo understands works, IPv6 included, and with port
 * 0 we can tell which port the kernel chose. */
static int listen_on(const char *host, int port, int *bound_port) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) {
        fprintf(stderr, "frugal serve: cannot resolve --host %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
            fprintf(stderr, "frugal serve: cannot listen on %s port %d: %s\n", host, port, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    *bound_port = port;
    if (!getsockname(fd, (struct sockaddr *)&ss, &len))
        *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* "SmolLM2-135M-Instruct.Q4_1" from ".../SmolLM2-135M-Instruct.Q4_1.gguf". */
static char *model_id(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    return strndup(base, n);
}

int cmd_serve(int argc, char **argv) {
    serve_opts o;
    if (!parse_args(argc, argv, &o)) return 2;

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not death */

    const char *path = cli_model_path(o.model);
    frugal_model *model = path ? cli_load_model(path) : NULL;
    if (!model) return 1;
    frugal_model_info info;
    frugal_model_get_info(model, &info);
    int n_ctx = o.n_ctx ? o.n_ctx : (info.n_ctx_train < 4096 ? info.n_ctx_train : 4096);
    char *id = model_id(path);
    metrics *m = metrics_new();
    scheduler *sched = NULL;
    struct MHD_Daemon *daemon = NULL;
    int rc = 1, fd = -1, port = 0;
    char err[256];
    if (!id || !m) { fprintf(stderr, "frugal serve: out of memory\n"); goto out; }

    sched_params sp = { o.parallel, o.queue, n_ctx, o.n_threads, o.kv, (size_t)o.prefix_mib << 20 };
    if (!(sched = sched_start(model, &sp, m, err, sizeof err))) {
        fprintf(stderr, "frugal serve: %s\n", err);
        goto out;
    }
    http_server srv = {
        .model = model, .sched = sched, .metrics = m, .model_id = id,
        .model_names = { id, o.model, info.name && *info.name ? info.name : id },
        .n_ctx = n_ctx, .n_vocab = frugal_n_vocab(model), .api_key = o.api_key,
        .max_body = (size_t)o.max_body, .started = time(NULL), .verbose = o.verbose,
    };
    if ((fd = listen_on(o.host, o.port, &port)) < 0) goto out;
    if (!(daemon = http_start(&srv, fd))) {
        fprintf(stderr, "frugal serve: cannot start the HTTP server\n");
        close(fd);
        goto out;
    }
    bool v6 = strchr(o.host, ':') != NULL;
    fprintf(stderr, "frugal serve: %s, %d slots of %d tokens\n", id, o.parallel, n_ctx);
    if (!o.api_key && strcmp(o.host, "127.0.0.1") && strcmp(o.host, "::1") && strcmp(o.host, "localhost"))
        fprintf(stderr, "frugal serve: warning: listening beyond this machine without --api-key\n");
    fprintf(stderr, "frugal serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", o.host, v6 ? "]" : "", port);

    int sig = 0;
    while (sigwait(&stop_signals, &sig)) {}
    fprintf(stderr, "frugal serve: %s, shutting down\n", sig == SIGINT ? "interrupted" : "terminated");
    http_quiesce(daemon);
    sched_stop(sched, SHUTDOWN_GRACE_S);
    http_drain(&srv, 2.0);
    http_stop(daemon);
    rc = 0;
out:
    sched_free(sched);
    metrics_free(m);
    free(id);
    frugal_model_free(model);
    if (!rc) fprintf(stderr, "frugal serve: stopped\n");
    return rc;
}
