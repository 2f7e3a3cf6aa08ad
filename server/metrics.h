/*
 * metrics.h - counters, gauges and histograms for GET /metrics, rendered
 * in Prometheus' text format. Written by the HTTP threads (requests) and
 * the scheduler (tokens, timings, occupancy); one mutex keeps them
 * consistent, which is cheap at the rate they change (a few per token).
 */
#ifndef FRUGAL_SERVER_METRICS_H
#define FRUGAL_SERVER_METRICS_H

#include <stddef.h>
#include "frugal.h"

typedef struct metrics metrics;

metrics *metrics_new(void);
void metrics_free(metrics *m);

/* One HTTP response sent with this status code. */
void metrics_count_request(metrics *m, int status);
/* A finished generation: prompt tokens (of which `cached` came from the
 * KV cache, not evaluated) and generated tokens. */
void metrics_count_tokens(metrics *m, int prompt, int cached, int completion);
void metrics_observe_ttft(metrics *m, double seconds);
void metrics_observe_tpot(metrics *m, double seconds);
/* The scheduler's current state. */
void metrics_set_state(metrics *m, int queued, int active, int slots, long kv_tokens, long kv_capacity);
void metrics_get_state(metrics *m, int *queued, int *active);
/* KV memory of the slots, and the shared prefix cache's figures. */
void metrics_set_kv(metrics *m, size_t kv_bytes, const frugal_prefix_cache_info *prefixes);

/* The whole text (malloc'd, NUL-terminated), or NULL when out of memory. */
char *metrics_render(metrics *m, size_t *len);

#endif
