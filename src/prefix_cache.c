/*
 * prefix_cache.c - KV pages shared between contexts that start with the
 * same tokens (a system prompt, a chat history).
 *
 * The cache is a tree of blocks: a block is FR_KV_PAGE tokens at
 * positions [32b, 32b + 32) together with the KV page of every layer for
 * them, and is identified by a hash of all tokens from position 0 to its
 * end (chained through its parent, so equal hashes with different
 * histories are told apart by the parent pointer and the block's own
 * tokens). Pages are reference-counted and never written once full, so a
 * context that loads a prefix just takes references: no copy, no
 * recomputation. Sliding-window layers may have freed old pages; such a
 * block keeps NULL for them, which is fine as long as no query of the
 * loading context can see those positions.
 *
 * When the cache grows past its byte limit, least recently used leaves go
 * first (a block with children stays until they are gone, so a parent
 * pointer never dangles). The blocks are kept in a list by last use; a
 * use touches a chain from its end back to the root, so a parent is
 * always newer than its children and the oldest block is a leaf: each
 * eviction takes it in constant time (it was a scan of every block, a
 * cost that grew with the cache's size, on the server's scheduling
 * thread).
 */
#include <pthread.h>
#include <string.h>
#include "model.h"

typedef struct block {
    uint64_t hash;              /* of tokens [0, 32b + 32) */
    struct block *parent;       /* block b - 1, NULL for b = 0 */
    struct block *next;         /* hash bucket chain */
    int index;                  /* b */
    int children;
    struct block *older, *newer; /* the use list */
    size_t bytes;
    int32_t tokens[FR_KV_PAGE];
    fr_kv_page *pages[];        /* [n_layer]; NULL: freed by a window layer */
} block;

struct frugal_prefix_cache {
    pthread_mutex_t lock;
    const frugal_model *model;
    fr_kv_config cfg;           /* page format of the blocks (from the first context) */
    bool have_cfg;
    block **buckets;
    int n_buckets, n_blocks;
    size_t bytes, max_bytes;
    block *oldest, *newest;     /* the use list's ends */
    long long hits, tokens_reused;
};

static uint64_t block_hash(uint64_t prev, const int32_t *t) {
    uint64_t h = prev ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < FR_KV_PAGE; i++) {
        h ^= (uint32_t)t[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

frugal_status frugal_prefix_cache_new(const frugal_model *m, size_t max_bytes, frugal_prefix_cache **out) {
    if (!m || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "model and output are required");
    frugal_prefix_cache *pc = fr_calloc(1, sizeof *pc);
    if (!pc) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the prefix cache");
    pc->n_buckets = 1024;
    pc->buckets = fr_calloc((size_t)pc->n_buckets, sizeof *pc->buckets);
    if (!pc->buckets) { fr_free(pc); return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the prefix cache"); }
    pthread_mutex_init(&pc->lock, NULL);
    pc->model = m;
    pc->max_bytes = max_bytes;
    *out = pc;
    return FRUGAL_OK;
}

static void block_free(const frugal_prefix_cache *pc, block *b) {
    for (int l = 0; l < pc->model->hp.n_layer; l++) fr_kv_page_unref(b->pages[l]);
    fr_free(b);
}

void frugal_prefix_cache_free(frugal_prefix_cache *pc) {
    if (!pc) return;
    for (int i = 0; i < pc->n_buckets; i++)
        for (block *b = pc->buckets[i], *next; b; b = next) {
            next = b->next;
            block_free(pc, b);
        }
    fr_free(pc->buckets);
    pthread_mutex_destroy(&pc->lock);
    fr_free(pc);
}

static block *find(const frugal_prefix_cache *pc, uint64_t hash, const block *parent, const int32_t *tokens) {
    for (block *b = pc->buckets[hash % pc->n_buckets]; b; b = b->next)
        if (b->hash == hash && b->parent == parent && !memcmp(b->tokens, tokens, sizeof b->tokens)) return b;
    return NULL;
}

static void unlink_use(frugal_prefix_cache *pc, block *b) {
    if (b->older) b->older->newer = b->newer;
    else pc->oldest = b->newer;
    if (b->newer) b->newer->older = b->older;
    else pc->newest = b->older;
    b->older = b->newer = NULL;
}

static void push_newest(frugal_prefix_cache *pc, block *b) {
    b->older = pc->newest;
    b->newer = NULL;
    if (pc->newest) pc->newest->newer = b;
    else pc->oldest = b;
    pc->newest = b;
}

/* A use of the chain ending at b: b, then its parent, ... the root become
 * the newest, in that order. */
static void touch_chain(frugal_prefix_cache *pc, block *b) {
    for (; b; b = b->parent) {
        unlink_use(pc, b);
        push_newest(pc, b);
    }
}

/* Twice the buckets, when there are more than two blocks a bucket (a
 * failed allocation keeps the table as it is: longer chains, no error). */
static void grow(frugal_prefix_cache *pc) {
    int n = pc->n_buckets * 2;
    block **buckets = fr_calloc((size_t)n, sizeof *buckets);
    if (!buckets) return;
    for (int i = 0; i < pc->n_buckets; i++)
        for (block *b = pc->buckets[i], *next; b; b = next) {
            next = b->next;
            b->next = buckets[b->hash % n];
            buckets[b->hash % n] = b;
        }
    fr_free(pc->buckets);
    pc->buckets = buckets;
    pc->n_buckets = n;
}

/* Drops least recently used leaves until the cache fits its limit. */
static void shrink(frugal_prefix_cache *pc) {
    while (pc->bytes > pc->max_bytes && pc->oldest && !pc->oldest->children) {
        block *b = pc->oldest, **pb = &pc->buckets[b->hash % pc->n_buckets];
        while (*pb != b) pb = &(*pb)->next;
        *pb = b->next;
        unlink_use(pc, b);
        if (b->parent) b->parent->children--;
        pc->bytes -= b->bytes;
        pc->n_blocks--;
        block_free(pc, b);
    }
}

/* The page of layer l holding exactly block b (full, in order, nothing
 * evicted), or NULL. */
static fr_kv_page *page_of_block(const fr_kv_layer *L, int b) {
    if (!L->n_pages) return NULL;
    int i = b - L->pages[0]->pos[0] / FR_KV_PAGE;
    if (i < 0 || i >= L->n_pages) return NULL;
    fr_kv_page *p = L->pages[i];
    return p->n == FR_KV_PAGE && p->dense && p->live == ~0u && p->pos[0] == b * FR_KV_PAGE ? p : NULL;
}

static bool same_format(const fr_kv_config *a, const fr_kv_config *b) {
    return a->type == b->type && a->residual == b->residual;
}

/* Contexts with a budget evict tokens: their pages are not a function of
 * the prefix alone. */
static bool shareable(const frugal_prefix_cache *pc, const frugal_ctx *ctx) {
    return ctx->model == pc->model && !ctx->kv.cfg.budget && (!pc->have_cfg || same_format(&pc->cfg, &ctx->kv.cfg));
}

frugal_status frugal_prefix_cache_put(frugal_prefix_cache *pc, const frugal_ctx *ctx, const int32_t *tokens, int n) {
    if (!pc || !ctx || (!tokens && n) || n < 0 || n > ctx->pos)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_prefix_cache_put");
    pthread_mutex_lock(&pc->lock);
    frugal_status st = FRUGAL_OK;
    if (!shareable(pc, ctx)) goto out;
    pc->cfg = ctx->kv.cfg;
    pc->have_cfg = true;
    int n_layer = pc->model->hp.n_layer;
    uint64_t hash = 0;
    block *parent = NULL;
    for (int b = 0; b < n / FR_KV_PAGE; b++) {
        const int32_t *t = tokens + (size_t)b * FR_KV_PAGE;
        hash = block_hash(hash, t);
        block *e = find(pc, hash, parent, t);
        if (!e) {
            if (!(e = fr_calloc(1, sizeof *e + (size_t)n_layer * sizeof(fr_kv_page *)))) {
                st = fr_error(FRUGAL_ERR_NOMEM, "out of memory for the prefix cache");
                break;
            }
            bool complete = true;
            for (int l = 0; l < n_layer && complete; l++) {
                const fr_kv_layer *L = &ctx->kv.layers[l];
                e->pages[l] = page_of_block(L, b);
                complete = e->pages[l] || L->window; /* a window layer may have let it go */
            }
            if (!complete) { fr_free(e); break; }
            for (int l = 0; l < n_layer; l++)
                if (e->pages[l]) { fr_kv_page_ref(e->pages[l]); e->bytes += e->pages[l]->bytes; }
            e->hash = hash;
            e->parent = parent;
            e->index = b;
            memcpy(e->tokens, t, sizeof e->tokens);
            e->next = pc->buckets[hash % pc->n_buckets];
            pc->buckets[hash % pc->n_buckets] = e;
            if (parent) parent->children++;
            pc->bytes += e->bytes;
            pc->n_blocks++;
            push_newest(pc, e);
            if (pc->n_blocks > 2 * pc->n_buckets) grow(pc);
        }
        parent = e;
    }
    touch_chain(pc, parent);
    shrink(pc); /* the new chain was used last: it goes last */
out:
    pthread_mutex_unlock(&pc->lock);
    return st;
}

/* Whether a context holding blocks chain[0..k) could attend at 32k: every
 * window layer has the blocks its window reaches back to. */
static bool usable(const frugal_prefix_cache *pc, block *const *chain, int k) {
    const frugal_model *m = pc->model;
    for (int l = 0; l < m->hp.n_layer; l++) {
        int w = m->layers[l].window;
        if (!w) continue;
        for (int b = k - 1; b >= 0 && (b + 1) * FR_KV_PAGE > k * FR_KV_PAGE - w; b--)
            if (!chain[b]->pages[l]) return false;
    }
    return true;
}

/* Longest cached prefix of tokens that leaves at least one token to
 * evaluate (the caller needs its logits); fills chain. */
static int match(frugal_prefix_cache *pc, const int32_t *tokens, int n, block **chain) {
    uint64_t hash = 0;
    block *parent = NULL;
    int k = 0;
    while ((k + 1) * FR_KV_PAGE < n) {
        const int32_t *t = tokens + (size_t)k * FR_KV_PAGE;
        hash = block_hash(hash, t);
        block *e = find(pc, hash, parent, t);
        if (!e) break;
        chain[k++] = parent = e;
    }
    while (k > 0 && !usable(pc, chain, k)) k--;
    return k;
}

int frugal_prefix_cache_match(frugal_prefix_cache *pc, const int32_t *tokens, int n) {
    if (!pc || !tokens || n <= 0) return 0;
    block **chain = fr_malloc((size_t)(n / FR_KV_PAGE + 1) * sizeof *chain);
    if (!chain) return 0;
    pthread_mutex_lock(&pc->lock);
    int k = match(pc, tokens, n, chain);
    pthread_mutex_unlock(&pc->lock);
    fr_free(chain);
    return k * FR_KV_PAGE;
}

int frugal_prefix_cache_load(frugal_prefix_cache *pc, frugal_ctx *ctx, const int32_t *tokens, int n) {
    if (!pc || !ctx || !tokens || n <= 0) return 0;
    block **chain = fr_malloc((size_t)(n / FR_KV_PAGE + 1) * sizeof *chain);
    if (!chain) return 0;
    pthread_mutex_lock(&pc->lock);
    int k = shareable(pc, ctx) && pc->have_cfg ? match(pc, tokens, n, chain) : 0;
    k = FR_MIN(k, ctx->n_ctx / FR_KV_PAGE);
    if (k > 0 && !frugal_ctx_rewind(ctx, 0)) {
        int n_layer = pc->model->hp.n_layer;
        for (int b = 0; b < k; b++) {
            for (int l = 0; l < n_layer; l++) {
                fr_kv_page *p = chain[b]->pages[l];
                if (!p) continue;
                if (fr_kv_adopt(&ctx->kv, l, p)) { k = -1; break; }
            }
            if (k < 0) break;
        }
        if (k > 0) {
            touch_chain(pc, chain[k - 1]);
            ctx->pos = k * FR_KV_PAGE;
            pc->hits++;
            pc->tokens_reused += ctx->pos;
        } else {
            frugal_ctx_rewind(ctx, 0);
            k = 0;
        }
    } else k = 0;
    pthread_mutex_unlock(&pc->lock);
    fr_free(chain);
    return k * FR_KV_PAGE;
}

void frugal_prefix_cache_stats(frugal_prefix_cache *pc, frugal_prefix_cache_info *info) {
    memset(info, 0, sizeof *info);
    if (!pc) return;
    pthread_mutex_lock(&pc->lock);
    info->blocks = pc->n_blocks;
    info->bytes = pc->bytes;
    info->hits = pc->hits;
    info->tokens_reused = pc->tokens_reused;
    pthread_mutex_unlock(&pc->lock);
}
