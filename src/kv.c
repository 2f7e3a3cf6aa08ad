/*
 * kv.c - the paged KV cache (see kv.h): appending tokens, packing pages
 * into the compressed type, window freeing, budgeted eviction and
 * compaction, truncation for rewinds.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include "kv.h"
#include "ops.h"
#include "quant.h"

#define MAX_PAGES (1 << 22)

static const fr_attn_kernels *attn_kernels(void) {
    return fr_kernels_isa() >= FR_ISA_AVX2 ? &fr_attn_avx2 : &fr_attn_scalar;
}

/* One allocation: header, then K, then V, in `format` (F16 = unpacked). */
/* ---- page memory ----
 *
 * Pages come and go at the rate tokens do (one per 32 tokens and layer).
 * Memory fresh from malloc costs a page fault per 4 KiB at its first
 * write, and the writes (fr_kv_append) run on the thread the others wait
 * for: in the server on a virtual machine that measured ~10 us a fault,
 * 4-5 % of its time, and the memory freed when a request's pages go did
 * not come back fault-free either. So fp16 pages, all one size for a
 * model, come from a pool: slabs of 2 MiB, faulted in at once (map_slab:
 * one system call for a whole slab, ~1 us per 4 KiB) and cut into pages;
 * a freed page goes on the pool's free list and is handed out again,
 * already in memory. The slabs are unmapped when the pool is freed, with
 * the model. Packed (compressed) pages, of other sizes, use fr_malloc. */

#define SLAB_BYTES ((size_t)2 << 20)

/* AddressSanitizer cannot see inside the slabs by itself: a page on the
 * free list is poisoned, so using one after its last unref is reported. */
#if defined(__SANITIZE_ADDRESS__)
#define FR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FR_ASAN 1
#endif
#endif
#ifdef FR_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

struct fr_kv_pool {
    pthread_mutex_t lock;        /* pages are freed from any thread */
    size_t page_bytes;           /* a page's share of a slab (64-byte multiple) */
    void **slabs;
    int n_slabs;
    fr_kv_page **free;           /* room for every page of every slab */
    size_t n_free, in_use;
};

size_t fr_kv_f16_page_bytes(int kv_dim) {
    return sizeof(fr_kv_page) + 2 * (size_t)FR_KV_PAGE * kv_dim * sizeof(uint16_t);
}

frugal_status fr_kv_pool_new(size_t page_bytes, fr_kv_pool **out) {
    *out = NULL;
    page_bytes = (page_bytes + 63) & ~(size_t)63;
    if (page_bytes > SLAB_BYTES) return fr_error(FRUGAL_ERR_INVALID_ARG, "KV pages larger than a slab");
    fr_kv_pool *pool = fr_calloc(1, sizeof *pool);
    if (!pool) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the KV page pool");
    pthread_mutex_init(&pool->lock, NULL);
    pool->page_bytes = page_bytes;
    *out = pool;
    return FRUGAL_OK;
}

void fr_kv_pool_free(fr_kv_pool *pool) {
    if (!pool) return;
    for (int i = 0; i < pool->n_slabs; i++) {
        ASAN_UNPOISON_MEMORY_REGION(pool->slabs[i], SLAB_BYTES);
        munmap(pool->slabs[i], SLAB_BYTES);
    }
    fr_free(pool->slabs);
    fr_free(pool->free);
    pthread_mutex_destroy(&pool->lock);
    fr_free(pool);
}

/* A slab in memory, on one 2 MiB huge page where the kernel grants it:
 * mapped twice as large, cut to a 2 MiB boundary, marked MADV_HUGEPAGE,
 * then faulted in. Attention streams the cache, and on 4 KiB pages
 * every 4 KiB of it was a TLB miss and a new start for the hardware
 * prefetcher (bench/attention, f16 at depth 8192 on one thread: ~15 %
 * slower). */
static uint8_t *map_slab(void) {
    const size_t span = 2 * SLAB_BYTES;
    uint8_t *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uint8_t *slab = (uint8_t *)(((uintptr_t)m + SLAB_BYTES - 1) & ~(uintptr_t)(SLAB_BYTES - 1));
    if (slab > m) munmap(m, (size_t)(slab - m));
    if (slab + SLAB_BYTES < m + span) munmap(slab + SLAB_BYTES, (size_t)(m + span - slab - SLAB_BYTES));
#ifdef MADV_HUGEPAGE
    (void)madvise(slab, SLAB_BYTES, MADV_HUGEPAGE);
#endif
#ifdef MADV_POPULATE_WRITE
    if (madvise(slab, SLAB_BYTES, MADV_POPULATE_WRITE) == 0) return slab;
#endif
    for (size_t o = 0; o < SLAB_BYTES; o += 4096) ((volatile uint8_t *)slab)[o] = 0; /* an older kernel */
    return slab;
}

/* Under the lock: one more slab, its pages on the free list. */
static bool add_slab(fr_kv_pool *pool) {
    size_t per = SLAB_BYTES / pool->page_bytes, total = (size_t)(pool->n_slabs + 1) * per;
    void **slabs = fr_realloc(pool->slabs, (size_t)(pool->n_slabs + 1) * sizeof *slabs);
    if (!slabs) return false;
    pool->slabs = slabs;
    fr_kv_page **free = fr_realloc(pool->free, total * sizeof *free);
    if (!free) return false;
    pool->free = free;
    uint8_t *slab = map_slab();
    if (!slab) return false;
    pool->slabs[pool->n_slabs++] = slab;
    for (size_t i = per; i-- > 0;) /* handed out in address order */
        pool->free[pool->n_free++] = (fr_kv_page *)(slab + i * pool->page_bytes);
    ASAN_POISON_MEMORY_REGION(slab, SLAB_BYTES);
    return true;
}

fr_kv_page *fr_kv_pool_get(fr_kv_pool *pool) {
    if (fr_alloc_fault()) return NULL;
    pthread_mutex_lock(&pool->lock);
    fr_kv_page *p = NULL;
    if (pool->n_free || add_slab(pool)) {
        p = pool->free[--pool->n_free];
        pool->in_use++;
    }
    pthread_mutex_unlock(&pool->lock);
    if (p) ASAN_UNPOISON_MEMORY_REGION(p, pool->page_bytes);
    return p;
}

void fr_kv_pool_put(fr_kv_pool *pool, fr_kv_page *p) {
    ASAN_POISON_MEMORY_REGION(p, pool->page_bytes);
    pthread_mutex_lock(&pool->lock);
    pool->free[pool->n_free++] = p; /* there is room: the page came from a slab */
    pool->in_use--;
    pthread_mutex_unlock(&pool->lock);
}

size_t fr_kv_pool_in_use(fr_kv_pool *pool) {
    if (!pool) return 0;
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->in_use;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

static fr_kv_page *page_new(fr_kv_cache *c, int format) {
    bool packed = format != FR_KV_F16;
    size_t db = packed ? fr_kv_page_bytes(format, c->kv_dim) : (size_t)FR_KV_PAGE * c->kv_dim * sizeof(uint16_t);
    size_t bytes = sizeof(fr_kv_page) + 2 * db;
    fr_kv_pool *pool = !packed && c->pool && c->pool->page_bytes >= bytes ? c->pool : NULL;
    fr_kv_page *p = pool ? fr_kv_pool_get(pool) : fr_malloc(bytes);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->refs = 1;
    p->packed = packed;
    p->format = (int8_t)format;
    p->dense = true;
    p->k = (uint8_t *)(p + 1);
    p->v = p->k + db;
    p->bytes = bytes;
    p->pool = pool;
    if (!packed) memset(p->k, 0, db); /* unwritten slots: keys of 0 (kv.h) */
    return p;
}

/* Pages may be shared between contexts used from different threads. */
void fr_kv_page_ref(fr_kv_page *p) { __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED); }

void fr_kv_page_unref(fr_kv_page *p) {
    if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (p->pool) fr_kv_pool_put(p->pool, p);
    else fr_free(p);
}

static void page_unref(fr_kv_cache *c, fr_kv_page *p) {
    (void)c;
    fr_kv_page_unref(p);
}

size_t fr_kv_bytes(const fr_kv_cache *c) {
    size_t total = 0;
    for (int l = 0; l < c->n_layer; l++)
        for (int i = 0; i < c->layers[l].n_pages; i++) total += c->layers[l].pages[i]->bytes;
    return total;
}

frugal_status fr_kv_init(fr_kv_cache *c, const fr_kv_config *cfg, int n_layer, int n_head_kv, int head_dim,
                         const int *windows) {
    fr_kv_config copy = *cfg; /* cfg may point into c */
    memset(c, 0, sizeof *c);
    c->cfg = copy;
    c->n_layer = n_layer;
    c->n_head_kv = n_head_kv;
    c->head_dim = head_dim;
    c->kv_dim = n_head_kv * head_dim;
    c->layers = fr_calloc((size_t)n_layer, sizeof *c->layers);
    if (!c->layers) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the KV cache table");
    for (int l = 0; l < n_layer; l++) c->layers[l].window = windows ? windows[l] : 0;
    return FRUGAL_OK;
}

void fr_kv_free(fr_kv_cache *c) {
    for (int l = 0; c->layers && l < c->n_layer; l++) {
        fr_kv_layer *L = &c->layers[l];
        for (int i = 0; i < L->n_pages; i++) page_unref(c, L->pages[i]);
        fr_free(L->pages);
    }
    fr_free(c->layers);
    fr_free(c->scores);
    memset(c, 0, sizeof *c);
}

static frugal_status push_page(fr_kv_cache *c, fr_kv_layer *L, fr_kv_page *p) {
    if (L->n_pages == L->cap_pages) {
        int cap = L->cap_pages ? L->cap_pages * 2 : 16;
        fr_kv_page **t = cap <= MAX_PAGES ? fr_realloc(L->pages, (size_t)cap * sizeof *t) : NULL;
        if (!t) { page_unref(c, p); return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the KV page table"); }
        L->pages = t;
        L->cap_pages = cap;
    }
    L->pages[L->n_pages++] = p;
    return FRUGAL_OK;
}

frugal_status fr_kv_adopt(fr_kv_cache *c, int l, fr_kv_page *p) {
    fr_kv_layer *L = &c->layers[l];
    fr_kv_page_ref(p);
    frugal_status st = push_page(c, L, p); /* drops the reference on failure */
    if (!st) L->live += __builtin_popcount(p->live);
    return st;
}

/* The page the next token goes to: the last one while it is private,
 * fp16 and not full; else a new one. */
static fr_kv_page *open_page(fr_kv_cache *c, fr_kv_layer *L) {
    fr_kv_page *p = L->n_pages ? L->pages[L->n_pages - 1] : NULL;
    if (p && p->n < FR_KV_PAGE && !p->packed && __atomic_load_n(&p->refs, __ATOMIC_ACQUIRE) == 1) return p;
    p = page_new(c, FR_KV_F16);
    if (!p) return NULL;
    return push_page(c, L, p) ? NULL : p;
}

/* ---- the fp16 page layout (kv.h) ---- */

/* Writes a token's keys and values (kv_dim floats each) into slot s of
 * an fp16 page. */
static void put_slot(const fr_kv_cache *c, fr_kv_page *p, int s, const float *k, const float *v) {
    const fr_attn_kernels *K = attn_kernels();
    uint16_t h[256];
    for (int c0 = 0; c0 < c->kv_dim; c0 += 256) {
        int n = FR_MIN(256, c->kv_dim - c0);
        K->f32_to_f16(k + c0, h, n);
        uint16_t *dst = (uint16_t *)p->k + (size_t)c0 * FR_KV_PAGE + s;
        for (int i = 0; i < n; i++) dst[(size_t)i * FR_KV_PAGE] = h[i];
    }
    int hd = c->head_dim;
    for (int h = 0; h < c->n_head_kv; h++)
        K->f32_to_f16(v + (size_t)h * hd, (uint16_t *)fr_kv_f16_values(p, h, hd) + (size_t)s * hd, hd);
}

/* Keys channel-major x (n channels) to slot-major floats:
 * kt[s * stride + i] = x[i * FR_KV_PAGE + s], s < np. */
static void keys_of_slots(const uint16_t *x, int np, int n, float *kt, int stride) {
    for (int s = 0; s < np; s++)
        for (int i = 0; i < n; i++) kt[(size_t)s * stride + i] = fr_fp16_to_fp32(x[(size_t)i * FR_KV_PAGE + s]);
}

/* The keys (key) or values of slots [0, p->n) of an fp16 page as rows of
 * kv_dim floats. */
static void get_rows(const fr_kv_cache *c, const fr_kv_page *p, bool key, float *rows) {
    if (!key) {
        int hd = c->head_dim;
        for (int s = 0; s < p->n; s++)
            for (int h = 0; h < c->n_head_kv; h++)
                attn_kernels()->f16_to_f32(fr_kv_f16_values(p, h, hd) + (size_t)s * hd,
                                           rows + (size_t)s * c->kv_dim + (size_t)h * hd, hd);
        return;
    }
    keys_of_slots((const uint16_t *)p->k, p->n, c->kv_dim, rows, c->kv_dim);
}

frugal_status fr_kv_append(fr_kv_cache *c, int l, const float *k, const float *v, int n, int pos0) {
    fr_kv_layer *L = &c->layers[l];
    int kv_dim = c->kv_dim;
    for (int t = 0; t < n; t++) {
        fr_kv_page *p = open_page(c, L);
        if (!p) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the KV cache (%.1f MiB in use)",
                                fr_kv_bytes(c) / 1048576.0);
        int s = p->n++;
        put_slot(c, p, s, k + (size_t)t * kv_dim, v + (size_t)t * kv_dim);
        p->pos[s] = pos0 + t;
        p->unimportant[s] = 0;
        p->live |= 1u << s;
        if (s > 0 && p->pos[s - 1] + 1 != pos0 + t) p->dense = false;
        L->live++;
    }
    return FRUGAL_OK;
}

/* ---- packing ---- */

static void unpack_rows(const fr_kv_cache *c, const fr_kv_page *p, bool key, float *rows) {
    if (!p->packed) {
        get_rows(c, p, key, rows);
        return;
    }
    fr_kv_codec_get()->load(p->format, key, key ? p->k : p->v, c->kv_dim, 0, c->kv_dim, rows, c->kv_dim);
}

/* Packs an fp16 page (n <= 32 slots; a short page is padded with copies of
 * slot 0, which leaves every group's min and max unchanged). */
static fr_kv_page *pack_page(fr_kv_cache *c, const fr_kv_page *p, int format) {
    fr_kv_page *q = page_new(c, format);
    if (!q) return NULL;
    size_t row = (size_t)c->kv_dim * sizeof(uint16_t);
    uint16_t *tmp = fr_malloc(FR_KV_PAGE * row);
    if (!tmp) { page_unref(c, q); return NULL; }
    const fr_kv_codec *codec = fr_kv_codec_get();
    for (int key = 0; key < 2; key++) {
        /* the codecs take slot-major rows of kv_dim (kv.h: fp16 pages hold
         * keys channel-major, and each head's values apart) */
        int hd = c->head_dim;
        for (int s = 0; s < p->n; s++)
            for (int h = 0; h < c->n_head_kv; h++) {
                uint16_t *dst = tmp + (size_t)s * c->kv_dim + (size_t)h * hd;
                if (key)
                    for (int i = 0; i < hd; i++) dst[i] = fr_kv_f16_keys(p, h, hd)[(size_t)i * FR_KV_PAGE + s];
                else
                    memcpy(dst, fr_kv_f16_values(p, h, hd) + (size_t)s * hd, (size_t)hd * sizeof *dst);
            }
        for (int s = p->n; s < FR_KV_PAGE; s++) memcpy((uint8_t *)tmp + s * row, tmp, row);
        codec->pack(format, key, tmp, key ? q->k : q->v, c->kv_dim);
    }
    fr_free(tmp);
    q->n = p->n;
    q->dense = p->dense;
    q->merged = p->merged;
    q->live = p->live;
    memcpy(q->pos, p->pos, sizeof p->pos);
    memcpy(q->unimportant, p->unimportant, sizeof p->unimportant);
    return q;
}

/* The format a page is packed into: the cache's type, except for pages
 * rebuilt by compaction in a KIVI cache. KIVI keys share a range per
 * channel across the page's tokens, so regrouping tokens rounds their
 * keys again, and a token that survives many compactions (the ones
 * scissorhands keeps) would drift further each time. Merged pages use the
 * per-token Q8 format instead, which survives regrouping unchanged. */
static int pack_format(const fr_kv_cache *c, const fr_kv_page *p) {
    bool kivi = c->cfg.type == FR_KV_KIVI4 || c->cfg.type == FR_KV_KIVI2;
    return p->merged && kivi ? FR_KV_Q8 : c->cfg.type;
}

/* A page stays fp16 while fewer than residual - FR_KV_PAGE slots were
 * written after it: the last R tokens (KIVI's residual) stay exact. */
static frugal_status pack_old_pages(fr_kv_cache *c, fr_kv_layer *L) {
    if (c->cfg.type == FR_KV_F16) return FRUGAL_OK;
    int after = 0;
    for (int i = L->n_pages - 1; i >= 0; i--) {
        fr_kv_page *p = L->pages[i];
        int n = p->n;
        bool ready = i < L->n_pages - 1 || n == FR_KV_PAGE;
        if (!p->packed && ready && after >= c->cfg.residual - FR_KV_PAGE) {
            fr_kv_page *q = pack_page(c, p, pack_format(c, p));
            if (!q) return fr_error(FRUGAL_ERR_NOMEM, "out of memory packing the KV cache");
            page_unref(c, p);
            L->pages[i] = q;
        }
        after += n;
    }
    return FRUGAL_OK;
}

/* ---- window freeing, eviction, compaction ---- */

static void drop_front(fr_kv_cache *c, fr_kv_layer *L, int count) {
    for (int i = 0; i < count; i++) {
        L->live -= __builtin_popcount(L->pages[i]->live);
        page_unref(c, L->pages[i]);
    }
    memmove(L->pages, L->pages + count, (size_t)(L->n_pages - count) * sizeof *L->pages);
    L->n_pages -= count;
}

/* Frees leading pages no query at `next` or later can see, keeping
 * `slack` more positions for rewinds. */
static void free_out_of_window(fr_kv_cache *c, fr_kv_layer *L, int next, int slack) {
    int i = 0;
    while (i < L->n_pages - 1 && L->pages[i]->pos[L->pages[i]->n - 1] < next - L->window + 1 - slack) i++;
    if (i) drop_front(c, L, i);
}

static int score_count(uint64_t bits, int history) {
    uint64_t mask = history >= 64 ? ~0ull : (1ull << history) - 1;
    return __builtin_popcountll(bits & mask);
}

void fr_kv_choose_evictions(const fr_kv_config *cfg, int n, const int32_t *pos, const int *cnt, bool *evict) {
    int drop = n - cfg->budget;
    for (int i = 0; i < n; i++) evict[i] = false;
    if (drop <= 0) return;
    if (cfg->policy == FR_KV_EVICT_WINDOW) {
        /* sinks [0, n_sink) and the newest budget - n_sink stay */
        int sink = FR_MIN(cfg->n_sink, cfg->budget);
        for (int i = sink; i < sink + drop; i++) evict[i] = true;
        return;
    }
    /* scissorhands: among all but the n_recent newest, drop the tokens
     * most often unimportant, the oldest first on ties */
    int candidates = FR_MAX(n - cfg->n_recent, drop);
    for (int k = 0; k < drop; k++) {
        int best = -1;
        for (int i = 0; i < candidates; i++)
            if (!evict[i] && (best < 0 || cnt[i] > cnt[best])) best = i;
        evict[best] = true;
    }
    (void)pos;
}

/* Merges adjacent pages whose live tokens fit in one, keeping order; the
 * last page is left alone (it is being filled). After this no two
 * neighbours hold 32 or fewer tokens together, so a layer of T tokens has
 * at most 2T/32 + 2 pages. A merged page is rebuilt in fp16 and repacked
 * by the next pack_old_pages (see pack_format). */
static frugal_status compact(fr_kv_cache *c, fr_kv_layer *L) {
    int kv_dim = c->kv_dim;
    float *rows = NULL; /* keys, then values: [2][FR_KV_PAGE][kv_dim] */
    for (int i = 0; i + 2 < L->n_pages; i++) {
        fr_kv_page *a = L->pages[i], *b = L->pages[i + 1];
        int la = __builtin_popcount(a->live), lb = __builtin_popcount(b->live);
        if (la + lb > FR_KV_PAGE || (a->live == (1ull << a->n) - 1 && b->live == (1ull << b->n) - 1)) continue;
        if (!rows && !(rows = fr_malloc((size_t)2 * FR_KV_PAGE * kv_dim * sizeof(float))))
            return fr_error(FRUGAL_ERR_NOMEM, "out of memory compacting the KV cache");
        fr_kv_page *m = page_new(c, FR_KV_F16);
        if (!m) { fr_free(rows); return fr_error(FRUGAL_ERR_NOMEM, "out of memory compacting the KV cache"); }
        m->dense = false;
        m->merged = true;
        for (int side = 0; side < 2; side++) {
            fr_kv_page *p = side ? b : a;
            float *vrows = rows + (size_t)FR_KV_PAGE * kv_dim;
            unpack_rows(c, p, true, rows);
            unpack_rows(c, p, false, vrows);
            for (int s = 0; s < p->n; s++)
                if (p->live >> s & 1) {
                    put_slot(c, m, m->n, rows + (size_t)s * kv_dim, vrows + (size_t)s * kv_dim);
                    m->pos[m->n] = p->pos[s];
                    m->unimportant[m->n] = p->unimportant[s];
                    m->live |= 1u << m->n++;
                }
        }
        page_unref(c, a);
        page_unref(c, b);
        L->pages[i] = m;
        memmove(L->pages + i + 1, L->pages + i + 2, (size_t)(L->n_pages - i - 2) * sizeof *L->pages);
        L->n_pages--;
        i--; /* the merged page may merge again with its new neighbour */
    }
    fr_free(rows);
    return FRUGAL_OK;
}

/* Evicts down to the budget (the policy decides which), then compacts. */
static frugal_status enforce_budget(fr_kv_cache *c, fr_kv_layer *L) {
    int n = L->live;
    if (!c->cfg.budget || n <= c->cfg.budget) return FRUGAL_OK;
    int32_t *pos = fr_malloc((size_t)n * sizeof *pos);
    int *cnt = fr_malloc((size_t)n * sizeof *cnt);
    bool *evict = fr_malloc((size_t)n * sizeof *evict);
    frugal_status st = FRUGAL_OK;
    if (!pos || !cnt || !evict) { st = fr_error(FRUGAL_ERR_NOMEM, "out of memory evicting from the KV cache"); goto out; }
    int k = 0;
    for (int i = 0; i < L->n_pages; i++)
        for (int s = 0; s < L->pages[i]->n; s++)
            if (L->pages[i]->live >> s & 1) {
                pos[k] = L->pages[i]->pos[s];
                cnt[k++] = score_count(L->pages[i]->unimportant[s], c->cfg.history);
            }
    fr_kv_choose_evictions(&c->cfg, n, pos, cnt, evict);
    k = 0;
    for (int i = 0; i < L->n_pages; i++) {
        fr_kv_page *p = L->pages[i];
        for (int s = 0; s < p->n; s++)
            if (p->live >> s & 1 && evict[k++]) {
                p->live &= ~(1u << s);
                p->dense = false;
                L->live--;
            }
    }
    /* pages left empty go at once */
    int w = 0;
    for (int i = 0; i < L->n_pages; i++) {
        if (L->pages[i]->live || i == L->n_pages - 1) L->pages[w++] = L->pages[i];
        else page_unref(c, L->pages[i]);
    }
    L->n_pages = w;
    st = compact(c, L);
out:
    fr_free(pos); fr_free(cnt); fr_free(evict);
    return st;
}

frugal_status fr_kv_commit(fr_kv_cache *c, int next, int slack) {
    for (int l = 0; l < c->n_layer; l++) {
        fr_kv_layer *L = &c->layers[l];
        if (L->window) free_out_of_window(c, L, next, slack);
        frugal_status st = enforce_budget(c, L);
        if (!st) st = pack_old_pages(c, L);
        if (st) return st;
    }
    return FRUGAL_OK;
}

/* ---- truncation ---- */

/* A private fp16 copy of the first n slots of p. */
static fr_kv_page *unpack_page(fr_kv_cache *c, const fr_kv_page *p, int n) {
    fr_kv_page *q = page_new(c, FR_KV_F16);
    size_t page = (size_t)FR_KV_PAGE * c->kv_dim;
    float *rows = fr_malloc(2 * page * sizeof(float)); /* keys, then values */
    if (!q || !rows) { page_unref(c, q); fr_free(rows); return NULL; }
    unpack_rows(c, p, true, rows);
    unpack_rows(c, p, false, rows + page);
    for (int s = 0; s < n; s++) put_slot(c, q, s, rows + (size_t)s * c->kv_dim, rows + page + (size_t)s * c->kv_dim);
    fr_free(rows);
    q->n = n;
    q->dense = p->dense;
    q->merged = p->merged;
    q->live = p->live & (n == 32 ? ~0u : (1u << n) - 1);
    memcpy(q->pos, p->pos, sizeof p->pos);
    memcpy(q->unimportant, p->unimportant, sizeof p->unimportant);
    return q;
}

frugal_status fr_kv_truncate(fr_kv_cache *c, int pos) {
    for (int l = 0; l < c->n_layer; l++) {
        fr_kv_layer *L = &c->layers[l];
        while (L->n_pages && L->pages[L->n_pages - 1]->pos[0] >= pos) {
            fr_kv_page *p = L->pages[--L->n_pages];
            L->live -= __builtin_popcount(p->live);
            page_unref(c, p);
        }
        if (!L->n_pages) continue;
        fr_kv_page *p = L->pages[L->n_pages - 1];
        int keep = 0;
        while (keep < p->n && p->pos[keep] < pos) keep++;
        if (keep == p->n) continue;
        /* the last page must become writable: private and fp16 */
        fr_kv_page *q = unpack_page(c, p, keep);
        if (!q) return fr_error(FRUGAL_ERR_NOMEM, "out of memory rewinding the KV cache");
        L->live -= __builtin_popcount(p->live) - __builtin_popcount(q->live);
        page_unref(c, p);
        L->pages[L->n_pages - 1] = q;
    }
    return FRUGAL_OK;
}

bool fr_kv_can_rewind(const fr_kv_cache *c, int pos) {
    for (int l = 0; l < c->n_layer; l++) {
        const fr_kv_layer *L = &c->layers[l];
        if (L->window && L->n_pages && L->pages[0]->pos[0] > FR_MAX(0, pos - L->window + 1)) return false;
    }
    return true;
}

/* ---- reading ---- */

void fr_kv_load_head(const fr_kv_cache *c, const fr_kv_page *p, int h, int hd, float *kt, float *vt, int stride,
                     const fr_kv_page *ahead) {
    if (p->packed) {
        const fr_kv_codec *codec = fr_kv_codec_get();
        if (kt) codec->load(p->format, true, p->k, c->kv_dim, h * hd, hd, kt, stride);
        codec->load(p->format, false, p->v, c->kv_dim, h * hd, hd, vt, stride);
        return;
    }
    const fr_attn_kernels *K = attn_kernels();
    if (kt) keys_of_slots(fr_kv_f16_keys(p, h, hd), p->n, hd, kt, stride);
    const uint16_t *v = fr_kv_f16_values(p, h, hd);
    const uint8_t *next = ahead && !ahead->packed ? (const uint8_t *)fr_kv_f16_values(ahead, h, hd) : NULL;
    for (int s = 0; s < p->n; s++) {
        if (next)
            for (size_t o = 0; o < (size_t)hd * 2; o += 64) __builtin_prefetch(next + (size_t)s * hd * 2 + o);
        K->f16_to_f32(v + (size_t)s * hd, vt + (size_t)s * stride, hd);
    }
}

bool fr_kv_scores_fused(const fr_kv_page *p) {
    return p->packed && (p->format == FR_KV_KIVI4 || p->format == FR_KV_KIVI2);
}

void fr_kv_key_scores(const fr_kv_cache *c, const fr_kv_page *p, int h, int hd, const float *const *q, int nq,
                      float scale, float *s) {
    fr_kv_codec_get()->kivi_scores(p->format == FR_KV_KIVI4 ? 4 : 2, p->k, c->kv_dim, h * hd, hd, q, nq, scale, s);
}

/* Asks for KV head h of a page ahead of its load: in fp16, the head's
 * keys and values; packed pages are small and prefetched whole. */
void fr_kv_prefetch_head(const fr_kv_cache *c, const fr_kv_page *p, int h, int hd) {
    if (p->packed) {
        size_t bytes = fr_kv_page_bytes(p->format, c->kv_dim);
        for (size_t o = 0; o < bytes; o += 64) {
            __builtin_prefetch(p->k + o);
            __builtin_prefetch(p->v + o);
        }
        return;
    }
    const uint8_t *k = (const uint8_t *)fr_kv_f16_keys(p, h, hd), *v = (const uint8_t *)fr_kv_f16_values(p, h, hd);
    for (size_t o = 0; o < (size_t)hd * FR_KV_PAGE * 2; o += 64) __builtin_prefetch(k + o);
    for (size_t o = 0; o < (size_t)hd * p->n * 2; o += 64) __builtin_prefetch(v + o);
}

/* ---- scissorhands bookkeeping ---- */

frugal_status fr_kv_prepare_scores(fr_kv_cache *c, int l, int n_head) {
    int slots = c->layers[l].n_pages * FR_KV_PAGE;
    if (slots > c->cap_slots) {
        int cap = FR_MAX(slots, c->cap_slots * 2);
        /* n_head rows of scores and one of averages (fr_kv_track) */
        float *s = fr_realloc(c->scores, (size_t)cap * (n_head + 1) * sizeof *s);
        if (!s) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for attention scores");
        c->scores = s;
        c->cap_slots = cap;
    }
    for (size_t i = 0; i < (size_t)c->cap_slots * n_head; i++) c->scores[i] = -INFINITY;
    return FRUGAL_OK;
}

void fr_kv_track(fr_kv_cache *c, int l, int n_head) {
    fr_kv_layer *L = &c->layers[l];
    int slots = L->n_pages * FR_KV_PAGE, visible = 0;
    float *avg = c->scores + (size_t)c->cap_slots * n_head;
    memset(avg, 0, (size_t)slots * sizeof *avg);
    for (int h = 0; h < n_head; h++) {
        const float *s = c->scores + (size_t)h * c->cap_slots;
        float m = -INFINITY, sum = 0;
        for (int i = 0; i < slots; i++) m = FR_MAX(m, s[i]);
        if (m == -INFINITY) continue;
        for (int i = 0; i < slots; i++) sum += expf(s[i] - m);
        for (int i = 0; i < slots; i++) avg[i] += expf(s[i] - m) / (sum * n_head);
    }
    for (int i = 0; i < slots; i++) visible += c->scores[i] != -INFINITY;
    for (int i = 0; i < L->n_pages; i++) {
        fr_kv_page *p = L->pages[i];
        for (int s = 0; s < p->n; s++) {
            int k = i * FR_KV_PAGE + s;
            if (!(p->live >> s & 1) || c->scores[k] == -INFINITY) continue;
            p->unimportant[s] = p->unimportant[s] << 1 | (avg[k] * visible < 1.0f);
        }
    }
}
