/* The paged KV cache: the eviction rules on hand-made inputs, scissorhands
 * keeping the tokens a hand-built attention pattern looks at, memory per
 * token against the formula, bounded memory under a budget and a window,
 * truncation for rewinds. */
#include <stdlib.h>
#include <string.h>
#include "kv.h"
#include "model.h"
#include "ops.h"
#include "quant.h"
#include "unit.h"

TEST(kv_window_policy_keeps_sinks_and_recent) {
    fr_kv_config cfg = { .budget = 6, .policy = FR_KV_EVICT_WINDOW, .n_sink = 2 };
    int32_t pos[10];
    int cnt[10] = { 0 };
    bool ev[10];
    for (int i = 0; i < 10; i++) pos[i] = i * 3;
    fr_kv_choose_evictions(&cfg, 10, pos, cnt, ev);
    for (int i = 0; i < 10; i++) CHECK_MSG(ev[i] == (i >= 2 && i < 6), "slot %d", i);
    fr_kv_choose_evictions(&cfg, 6, pos, cnt, ev); /* at the budget: nothing goes */
    for (int i = 0; i < 6; i++) CHECK(!ev[i]);
}

TEST(kv_scissorhands_policy_drops_most_often_unimportant) {
    fr_kv_config cfg = { .budget = 5, .policy = FR_KV_EVICT_SCISSORHANDS, .n_recent = 2 };
    int32_t pos[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    /* slots 6 and 7 are recent and protected though most unimportant;
     * of the rest, 1 (count 9) and then 3 and 4 (count 5, 3 older) go */
    int cnt[8] = { 0, 9, 2, 5, 5, 1, 20, 20 };
    bool ev[8];
    fr_kv_choose_evictions(&cfg, 8, pos, cnt, ev);
    bool want[8] = { 0, 1, 0, 1, 1, 0, 0, 0 };
    for (int i = 0; i < 8; i++) CHECK_MSG(ev[i] == want[i], "slot %d", i);
}

/* A one-layer context for driving the cache through real attention. */
typedef struct {
    frugal_model model;
    fr_layer layer;
    frugal_ctx ctx;
} kv_fixture;

static bool fixture(kv_fixture *f, int hd, int window, const fr_kv_config *cfg) {
    memset(f, 0, sizeof *f);
    f->model.hp = (fr_hparams){ .n_head = 1, .n_head_kv = 1, .head_dim = hd, .n_layer = 1,
                                .attn_scale = 1.0f / sqrtf((float)hd) };
    f->layer.window = window;
    f->model.layers = &f->layer;
    f->ctx.model = &f->model;
    f->ctx.n_batch = 1;
    f->ctx.n_threads = 1;
    f->ctx.attn_partial = calloc(4 * (hd + 2), sizeof(float));
    return fr_kv_init(&f->ctx.kv, cfg, 1, 1, hd, &window) == FRUGAL_OK && fr_pool_new(1, &f->ctx.pool) == FRUGAL_OK;
}

static void fixture_done(kv_fixture *f) {
    fr_pool_free(f->ctx.pool);
    fr_kv_free(&f->ctx.kv);
    free(f->ctx.attn_partial);
}

static bool holds(const fr_kv_layer *L, int pos) {
    for (int i = 0; i < L->n_pages; i++)
        for (int s = 0; s < L->pages[i]->n; s++)
            if (L->pages[i]->live >> s & 1 && L->pages[i]->pos[s] == pos) return true;
    return false;
}

/* Every 10th token has a key the (constant) query attends to strongly;
 * the others are noise orthogonal to it. Under a budget of 64, decoding
 * 400 tokens, scissorhands keeps all 40 "heavy hitters"; the window
 * policy keeps only the sinks and recent ones. */
static int heavy_kept(int policy, int *max_live, int *max_pages) {
    enum { HD = 32, T = 400 };
    fr_kv_config cfg = { .type = FR_KV_F16, .residual = 32, .budget = 64, .policy = policy, .n_sink = 4,
                         .n_recent = 16, .history = 32 };
    kv_fixture f;
    if (!fixture(&f, HD, 0, &cfg)) return -1;
    float q[HD] = { 0 }, k[HD], v[HD], out[HD];
    q[0] = 4;
    unsigned seed = 1;
    *max_live = *max_pages = 0;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < HD; i++) {
            seed = seed * 1103515245u + 12345u;
            k[i] = i == 0 ? (t % 10 == 0 ? 3.0f : 0.0f) : ((seed >> 8) & 255) / 256.0f - 0.5f;
            v[i] = (float)t;
        }
        if (fr_kv_append(&f.ctx.kv, 0, k, v, 1, t) || fr_attention(&f.ctx, f.ctx.pool, 0, q, 1, t, out) ||
            fr_kv_commit(&f.ctx.kv, t + 1, 1)) return -1;
        *max_live = FR_MAX(*max_live, f.ctx.kv.layers[0].live);
        *max_pages = FR_MAX(*max_pages, f.ctx.kv.layers[0].n_pages);
    }
    int kept = 0;
    for (int t = 0; t < T - 16; t += 10) kept += holds(&f.ctx.kv.layers[0], t);
    fixture_done(&f);
    return kept;
}

TEST(kv_scissorhands_keeps_heavy_hitters_window_does_not) {
    int live, pages;
    int s = heavy_kept(FR_KV_EVICT_SCISSORHANDS, &live, &pages);
    CHECK_MSG(s == 39, "scissorhands kept %d of 39 heavy tokens", s);
    CHECK(live <= 64);
    CHECK_MSG(pages <= 2 * 64 / 32 + 2, "%d pages", pages);
    int w = heavy_kept(FR_KV_EVICT_WINDOW, &live, &pages);
    CHECK_MSG(w <= 6, "window kept %d heavy tokens", w); /* the sink at 0 and the recent ones */
    CHECK(live <= 64);
}

/* Memory per token is the formula: packed pages cost 2 * page_bytes for
 * 32 tokens, plus a fixed page header. */
TEST(kv_memory_per_token_matches_formula) {
    int kv_dim = 192;
    for (int type = 0; type < FR_KV_TYPES; type++) {
        fr_kv_cache c;
        fr_kv_config cfg = { .type = type, .residual = 32 };
        CHECK(fr_kv_init(&c, &cfg, 2, 3, kv_dim / 3, NULL) == FRUGAL_OK);
        float *x = calloc((size_t)320 * kv_dim, sizeof(float));
        for (int i = 0; i < 320 * kv_dim; i++) x[i] = (float)(i % 17) - 8;
        for (int l = 0; l < 2; l++) CHECK(fr_kv_append(&c, l, x, x, 320, 0) == FRUGAL_OK);
        CHECK(fr_kv_commit(&c, 320, 0) == FRUGAL_OK);
        size_t page = sizeof(fr_kv_page) + 2 * fr_kv_page_bytes(type, kv_dim);
        CHECK_MSG(fr_kv_bytes(&c) == 2 * 10 * page, "%s: %zu bytes", fr_kv_type_name(type), fr_kv_bytes(&c));
        CHECK_NEAR(fr_kv_token_bytes(type, kv_dim), 2.0 * fr_kv_page_bytes(type, kv_dim) / 32, 1e-9);
        for (int i = 0; i < 10; i++) CHECK(c.layers[0].pages[i]->packed == (type != FR_KV_F16));
        free(x);
        fr_kv_free(&c);
    }
    /* bytes per token: f16 4, q8 2.125, kivi4 1.25, kivi2 0.75 per channel */
    CHECK_NEAR(fr_kv_token_bytes(FR_KV_F16, 64), 256, 1e-9);
    CHECK_NEAR(fr_kv_token_bytes(FR_KV_Q8, 64), 136, 1e-9);
    CHECK_NEAR(fr_kv_token_bytes(FR_KV_KIVI4, 64), 80, 1e-9);
    CHECK_NEAR(fr_kv_token_bytes(FR_KV_KIVI2, 64), 48, 1e-9);
}

/* The page pool: pages come in address order from 2 MiB slabs, aligned
 * and disjoint, more slabs as needed; a freed page is the next one handed
 * out; a cache drawing on the pool gives every page back, compressed
 * pages (fr_malloc'd) never touch it; an allocation failure is a NULL,
 * not a crash. */
TEST(kv_pool_hands_out_and_recycles_pages) {
    int kv_dim = 192;
    size_t bytes = fr_kv_f16_page_bytes(kv_dim);
    fr_kv_pool *pool = NULL;
    CHECK(fr_kv_pool_new(bytes, &pool) == FRUGAL_OK && pool);
    if (!pool) return;
    enum { N = 200 }; /* more than two slabs' worth */
    static fr_kv_page *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = fr_kv_pool_get(pool);
        CHECK(p[i] && (uintptr_t)p[i] % 64 == 0);
        if (p[i]) memset(p[i], i & 0xff, bytes); /* all of it is ours */
    }
    CHECK(fr_kv_pool_in_use(pool) == N);
    for (int i = 1; i < N; i++) /* distinct, and at least a page apart */
        for (int k = 0; k < i; k++)
            CHECK((uint8_t *)p[i] >= (uint8_t *)p[k] + bytes || (uint8_t *)p[k] >= (uint8_t *)p[i] + bytes);
    fr_kv_page *back = p[77];
    fr_kv_pool_put(pool, back);
    CHECK(fr_kv_pool_get(pool) == back);
    for (int i = 0; i < N; i++) fr_kv_pool_put(pool, p[i]);
    CHECK(fr_kv_pool_in_use(pool) == 0);
    fr_alloc_fail_after(1);
    CHECK(fr_kv_pool_get(pool) == NULL);
    fr_alloc_fail_after(0);
    for (int type = 0; type < FR_KV_TYPES; type++) {
        fr_kv_cache c;
        fr_kv_config cfg = { .type = type, .residual = 32 };
        CHECK(fr_kv_init(&c, &cfg, 2, 3, kv_dim / 3, NULL) == FRUGAL_OK);
        c.pool = pool;
        float *x = calloc((size_t)100 * kv_dim, sizeof(float));
        for (int l = 0; l < 2; l++) CHECK(x && fr_kv_append(&c, l, x, x, 100, 0) == FRUGAL_OK);
        CHECK(fr_kv_commit(&c, 100, 0) == FRUGAL_OK);
        /* f16: 4 pages a layer; a packed cache keeps its fp16 residual */
        CHECK_MSG(fr_kv_pool_in_use(pool) == (type == FR_KV_F16 ? 8u : 2u), "%s: %zu pages",
                  fr_kv_type_name(type), fr_kv_pool_in_use(pool));
        fr_kv_free(&c);
        CHECK(fr_kv_pool_in_use(pool) == 0);
        free(x);
    }
    fr_kv_pool_free(pool);
}

/* The residual: the newest pages stay fp16 until R tokens follow them. */
TEST(kv_residual_keeps_recent_pages_fp16) {
    fr_kv_cache c;
    fr_kv_config cfg = { .type = FR_KV_KIVI2, .residual = 96 };
    float x[64] = { 1, 2, 3 };
    CHECK(fr_kv_init(&c, &cfg, 1, 1, 64, NULL) == FRUGAL_OK);
    for (int t = 0; t < 200; t++) {
        CHECK(fr_kv_append(&c, 0, x, x, 1, t) == FRUGAL_OK);
        CHECK(fr_kv_commit(&c, t + 1, 0) == FRUGAL_OK);
        const fr_kv_layer *L = &c.layers[0];
        for (int i = 0; i < L->n_pages; i++) {
            int after = t + 1 - (i + 1) * 32; /* tokens written after page i */
            bool want = L->pages[i]->n == 32 && after >= 64;
            CHECK_MSG(L->pages[i]->packed == want, "t %d page %d", t, i);
        }
    }
    fr_kv_free(&c);
}

/* A window layer frees what no query can see again: memory stays flat. */
TEST(kv_window_layer_memory_is_bounded) {
    fr_kv_cache c;
    fr_kv_config cfg = { .type = FR_KV_KIVI4, .residual = 32 };
    int window = 64;
    float x[64] = { 0 };
    CHECK(fr_kv_init(&c, &cfg, 1, 1, 64, &window) == FRUGAL_OK);
    for (int t = 0; t < 3000; t++) {
        CHECK(fr_kv_append(&c, 0, x, x, 1, t) == FRUGAL_OK);
        CHECK(fr_kv_commit(&c, t + 1, 8) == FRUGAL_OK);
        CHECK(c.layers[0].n_pages <= (window + 8) / 32 + 2);
    }
    /* rewinding inside the kept range works, before it is refused */
    CHECK(fr_kv_can_rewind(&c, 2990));
    CHECK(!fr_kv_can_rewind(&c, 2000));
    fr_kv_free(&c);
}

/* Truncation drops every token from pos on, and the last page becomes
 * writable again (fp16, private) even when it was packed or shared. */
TEST(kv_truncate_drops_tail_and_unpacks) {
    fr_kv_cache c;
    fr_kv_config cfg = { .type = FR_KV_Q8, .residual = 32 };
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = i * 0.25f;
    CHECK(fr_kv_init(&c, &cfg, 1, 1, 64, NULL) == FRUGAL_OK);
    for (int t = 0; t < 100; t++) CHECK(fr_kv_append(&c, 0, x, x, 1, t) == FRUGAL_OK);
    CHECK(fr_kv_commit(&c, 100, 0) == FRUGAL_OK);
    CHECK(c.layers[0].pages[1]->packed);
    c.layers[0].pages[1]->refs++; /* pretend another context shares it */
    fr_kv_page *shared = c.layers[0].pages[1];
    CHECK(fr_kv_truncate(&c, 40) == FRUGAL_OK);
    const fr_kv_layer *L = &c.layers[0];
    CHECK(L->n_pages == 2 && L->live == 40);
    CHECK(L->pages[1] != shared && !L->pages[1]->packed && L->pages[1]->n == 8 && L->pages[1]->refs == 1);
    CHECK(shared->refs == 1); /* the other holder's */
    CHECK(fr_kv_append(&c, 0, x, x, 1, 40) == FRUGAL_OK && L->pages[1]->n == 9);
    CHECK(fr_kv_truncate(&c, 0) == FRUGAL_OK && L->n_pages == 0 && L->live == 0);
    fr_kv_free(&c);
    fr_free(shared);
}

/* Every token an fp16 cache holds reads back as its keys and values
 * rounded to fp16: through the page loads, and in the stored layout the
 * kernels read in place (kv.h: keys channel-major, a head's values one
 * block); after
 * appends that fill pages part-way, a truncation (which rewrites the last
 * page), and a budget's evictions (compaction rewrites pages). */
static bool kv_holds(const fr_kv_cache *c, int n_kv, int hd, const float *k, const float *v) {
    static float kt[FR_KV_PAGE * 64], vt[FR_KV_PAGE * 64];
    const fr_kv_layer *L = &c->layers[0];
    int kv_dim = n_kv * hd, seen = 0;
    for (int i = 0; i < L->n_pages; i++) {
        const fr_kv_page *p = L->pages[i];
        for (int h = 0; h < n_kv; h++) {
            fr_kv_load_head(c, p, h, hd, kt, vt, hd, NULL);
            const uint16_t *stored = fr_kv_f16_keys(p, h, hd), *values = fr_kv_f16_values(p, h, hd);
            for (int s = 0; s < p->n; s++) {
                if (!(p->live >> s & 1)) continue;
                const float *want_k = k + (size_t)p->pos[s] * kv_dim + h * hd, *want_v = v + (size_t)p->pos[s] * kv_dim + h * hd;
                for (int d = 0; d < hd; d++) {
                    float wk = fr_fp16_to_fp32(fr_fp32_to_fp16(want_k[d])), wv = fr_fp16_to_fp32(fr_fp32_to_fp16(want_v[d]));
                    if (kt[s * hd + d] != wk || vt[s * hd + d] != wv ||
                        fr_fp16_to_fp32(stored[d * FR_KV_PAGE + s]) != wk || fr_fp16_to_fp32(values[s * hd + d]) != wv)
                        return false;
                }
            }
            for (int s = p->n; s < FR_KV_PAGE; s++) /* unwritten slots: keys of 0 */
                for (int d = 0; d < hd; d++)
                    if (stored[d * FR_KV_PAGE + s] != 0 && i == L->n_pages - 1) return false;
        }
        seen += __builtin_popcount(p->live);
    }
    return seen == L->live;
}

TEST(kv_fp16_pages_give_back_what_was_written) {
    const int n_kv = 3, hd = 40, kv_dim = n_kv * hd, total = 150;
    float *k = malloc((size_t)total * kv_dim * sizeof(float)), *v = malloc((size_t)total * kv_dim * sizeof(float));
    for (int i = 0; i < total * kv_dim; i++) { k[i] = (float)(i % 1013) / 7.0f - 70; v[i] = (float)(i % 977) / 3.0f; }
    fr_kv_cache c;
    fr_kv_config cfg = { .type = FR_KV_F16, .residual = 32 };
    CHECK(fr_kv_init(&c, &cfg, 1, n_kv, hd, NULL) == FRUGAL_OK);
    CHECK(fr_kv_append(&c, 0, k, v, 45, 0) == FRUGAL_OK);            /* a page and a part */
    for (int t = 45; t < 100; t++) CHECK(fr_kv_append(&c, 0, k + t * kv_dim, v + t * kv_dim, 1, t) == FRUGAL_OK);
    CHECK(fr_kv_commit(&c, 100, 0) == FRUGAL_OK);
    CHECK(kv_holds(&c, n_kv, hd, k, v) && c.layers[0].live == 100);
    CHECK(fr_kv_truncate(&c, 70) == FRUGAL_OK);                        /* the last page rewritten */
    CHECK(kv_holds(&c, n_kv, hd, k, v) && c.layers[0].live == 70);
    CHECK(fr_kv_append(&c, 0, k + 70 * kv_dim, v + 70 * kv_dim, 80, 70) == FRUGAL_OK);
    CHECK(kv_holds(&c, n_kv, hd, k, v) && c.layers[0].live == total);
    fr_kv_free(&c);
    /* a budget: tokens evicted from the middle, pages compacted */
    cfg = (fr_kv_config){ .type = FR_KV_F16, .residual = 32, .budget = 50, .policy = FR_KV_EVICT_WINDOW, .n_sink = 4 };
    CHECK(fr_kv_init(&c, &cfg, 1, n_kv, hd, NULL) == FRUGAL_OK);
    for (int t = 0; t < total; t += 10) {
        CHECK(fr_kv_append(&c, 0, k + t * kv_dim, v + t * kv_dim, 10, t) == FRUGAL_OK);
        CHECK(fr_kv_commit(&c, t + 10, 0) == FRUGAL_OK);
        CHECK_MSG(kv_holds(&c, n_kv, hd, k, v), "after %d tokens", t + 10);
    }
    bool merged = false;
    for (int i = 0; i < c.layers[0].n_pages; i++) merged |= c.layers[0].pages[i]->merged;
    CHECK(merged && c.layers[0].live == 50);
    fr_kv_free(&c);
    free(k);
    free(v);
}
