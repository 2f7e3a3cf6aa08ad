/*
 * kv.h - the KV cache: per layer, a table of pages of FR_KV_PAGE slots.
 *
 * Pages are allocated as tokens arrive (nothing is reserved for the whole
 * context) and each slot records the position of its token, so the cache
 * need not hold a contiguous range of positions:
 *   - sliding-window layers free pages that fell out of the window;
 *   - a budgeted cache (--kv-budget) evicts single tokens, leaving holes
 *     that compaction later squeezes out;
 *   - pages can be compressed (kv_codec.h): a page is written in fp16 and
 *     packed into the cache's type once it is full and older than the
 *     full-precision residual (KIVI's R most recent tokens).
 * A page is reference-counted so that contexts can share full pages of a
 * common prompt prefix; a shared page is never written again.
 *
 * Slots are appended in position order and compaction keeps that order,
 * so positions increase along a layer's page table.
 */
#ifndef FR_KV_H
#define FR_KV_H

#include "common.h"
#include "kv_codec.h"

struct fr_kv_pool;

typedef struct fr_kv_page {
    int refs;                    /* page tables holding it */
    int n;                       /* slots written, 0..FR_KV_PAGE */
    bool packed;                 /* data in a compressed format, else fp16 */
    bool merged;                 /* rebuilt by compaction from scattered tokens */
    int8_t format;               /* enum fr_kv_type of the data (F16 when not packed) */
    bool dense;                  /* every written slot live, pos[i] = pos[0] + i */
    uint32_t live;               /* bit i: slot i holds a token (not evicted) */
    int32_t pos[FR_KV_PAGE];     /* position of the token in each slot */
    uint64_t unimportant[FR_KV_PAGE]; /* scissorhands history: bit j set = low attention j steps ago */
    uint8_t *k, *v;              /* fp16 (below), or packed (kv_codec.h) */
    size_t bytes;                /* allocation size, header included */
    struct fr_kv_pool *pool;     /* where it goes back when freed; NULL: fr_malloc'd */
} fr_kv_page;

/* An fp16 page (not packed) holds its keys and its values head by head.
 * A head's keys are channel-major, k[head][channel][FR_KV_PAGE]: a
 * channel's 32 slots side by side, a block of head_dim x 32. Decode
 * attention scores the 32 keys of a page at once with keys in the vector
 * lanes: stored this way they load straight into the lanes, where
 * slot-major keys had to be transposed at every read (bench/attention.c,
 * one layer's decode at depth 1500 on one AVX-512 thread: 87-94 -> 51-53
 * us). A head's values are slot-major, v[head][slot][head_dim], also one
 * block: a head's keys and values are two runs of memory read front to
 * back. (Values were v[slot][kv_dim] before: a head's read a slice of
 * every slot, rows kv_dim apart, which the hardware prefetchers follow
 * poorly; BENCHMARKS.md has the figures.) Slots not yet written hold keys
 * of 0: kernels that read whole vectors of slots read them, and mask
 * them. */
static inline const uint16_t *fr_kv_f16_keys(const fr_kv_page *p, int h, int hd) {
    return (const uint16_t *)p->k + (size_t)h * hd * FR_KV_PAGE;
}
static inline const uint16_t *fr_kv_f16_values(const fr_kv_page *p, int h, int hd) {
    return (const uint16_t *)p->v + (size_t)h * hd * FR_KV_PAGE;
}

typedef struct {
    fr_kv_page **pages;          /* in position order */
    int n_pages, cap_pages;
    int window;                  /* sliding window of the layer, 0 = global */
    int live;                    /* tokens held */
} fr_kv_layer;

enum fr_kv_policy { FR_KV_EVICT_WINDOW = 0, FR_KV_EVICT_SCISSORHANDS = 1 };

typedef struct {
    int type;                    /* enum fr_kv_type */
    int residual;                /* recent tokens kept in fp16 before packing (multiple of FR_KV_PAGE) */
    int budget;                  /* max tokens per layer, 0 = unbounded */
    int policy;                  /* enum fr_kv_policy */
    int n_sink;                  /* window policy: first tokens always kept */
    int n_recent;                /* scissorhands: most recent tokens never evicted */
    int history;                 /* scissorhands: decode steps of importance history (<= 64) */
} fr_kv_config;

typedef struct {
    fr_kv_config cfg;
    int n_layer, kv_dim;
    int n_head_kv, head_dim;     /* kv_dim = n_head_kv x head_dim */
    fr_kv_layer *layers;
    /* scissorhands: the last query row's raw attention scores per head and
     * slot of the layer being tracked, [n_head][cap_slots] */
    float *scores;
    int cap_slots;
    struct fr_kv_pool *pool;     /* where fp16 pages come from, or NULL (fr_malloc) */
} fr_kv_cache;

/* Memory for fp16 pages of one size, shared by all contexts of a model:
 * freed pages are kept and handed out again (kv.c, "page memory"). Every
 * page must be back (contexts and prefix caches freed) before the pool is
 * freed. */
typedef struct fr_kv_pool fr_kv_pool;
frugal_status fr_kv_pool_new(size_t page_bytes, fr_kv_pool **out);
void fr_kv_pool_free(fr_kv_pool *pool);
fr_kv_page *fr_kv_pool_get(fr_kv_pool *pool); /* NULL: out of memory */
void fr_kv_pool_put(fr_kv_pool *pool, fr_kv_page *p);
size_t fr_kv_pool_in_use(fr_kv_pool *pool);   /* pages handed out and not yet back */
size_t fr_kv_f16_page_bytes(int kv_dim);       /* allocation of an fp16 page, header included */

frugal_status fr_kv_init(fr_kv_cache *c, const fr_kv_config *cfg, int n_layer, int n_head_kv, int head_dim,
                         const int *windows);
void fr_kv_free(fr_kv_cache *c);
/* Page memory the cache's tables hold (shared pages counted in full). */
size_t fr_kv_bytes(const fr_kv_cache *c);
void fr_kv_page_ref(fr_kv_page *p);
/* Appends a full page shared with another cache (taking a reference);
 * its positions must follow the layer's last ones. */
frugal_status fr_kv_adopt(fr_kv_cache *c, int l, fr_kv_page *p);
void fr_kv_page_unref(fr_kv_page *p);

/* Appends n tokens at positions pos0.. to layer l (rows of kv_dim floats). */
frugal_status fr_kv_append(fr_kv_cache *c, int l, const float *k, const float *v, int n, int pos0);
/* After a forward step that ended at position `next` (the next token's):
 * packs pages that left the residual, frees what a window layer can no
 * longer see (keeping `slack` positions for rewinds), enforces the budget. */
frugal_status fr_kv_commit(fr_kv_cache *c, int next, int slack);
/* Drops every token at position >= pos. */
frugal_status fr_kv_truncate(fr_kv_cache *c, int pos);
/* Whether every window layer still holds the positions a query at pos
 * sees (what rewinding to pos needs). */
bool fr_kv_can_rewind(const fr_kv_cache *c, int pos);

/* Loads slots [0, page->n) of KV head h of a page into float tiles
 * kt/vt [FR_KV_PAGE][stride]; kt NULL: the values only. ahead, an fp16
 * page (or NULL): each slot's values are preceded by a request for the
 * same slot's of ahead, so that it streams in at the pace of this one. */
void fr_kv_load_head(const fr_kv_cache *c, const fr_kv_page *p, int h, int hd, float *kt, float *vt, int stride,
                     const fr_kv_page *ahead);

/* Whether a page's keys are scored by fr_kv_key_scores instead of loaded
 * (packed KIVI pages). */
bool fr_kv_scores_fused(const fr_kv_page *p);
/* Scores of nq query rows against the 32 slots of KV head h of such a
 * page: s[r * FR_KV_PAGE + t] = scale * q[r] . k_t (kv_codec.h). */
void fr_kv_key_scores(const fr_kv_cache *c, const fr_kv_page *p, int h, int hd, const float *const *q, int nq,
                      float scale, float *s);
/* Prefetches what fr_kv_load_head(c, p, h, ...) will read. */
void fr_kv_prefetch_head(const fr_kv_cache *c, const fr_kv_page *p, int h, int hd);
/* Scissorhands bookkeeping: before layer l's attention, prepare_scores
 * sizes c->scores and fills it with -inf; after it, c->scores holds the
 * last query's scores; a token whose attention probability, averaged over
 * the heads, is below 1/live is marked unimportant for this step. */
frugal_status fr_kv_prepare_scores(fr_kv_cache *c, int l, int n_head);
void fr_kv_track(fr_kv_cache *c, int l, int n_head);

/* The eviction rule, pure for tests: of n live tokens (positions pos[],
 * ascending; unimportant counts cnt[]), marks evict[i] for the n - budget
 * that the policy drops. */
void fr_kv_choose_evictions(const fr_kv_config *cfg, int n, const int32_t *pos, const int *cnt, bool *evict);

#endif
