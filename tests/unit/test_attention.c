/* Attention over the KV cache against a naive double-precision softmax:
 * prefill batches, decode with split-KV, grouped-query heads, sliding
 * windows, compressed pages (against the dequantized cache), budgeted
 * caches with holes, and the AVX2 primitives against the scalar. */
#include <stdlib.h>
#include "ops.h"
#include "quant.h"
#include "kv.h"
#include "model.h"
#include "attn_block.h"
#include "unit.h"

typedef struct {
    frugal_model model;
    fr_layer layer;
    frugal_ctx ctx;
} attn_fixture;

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static bool fixture_init(attn_fixture *f, int n_head, int n_kv, int hd, int window, int n_batch, int threads,
                         const fr_kv_config *cfg) {
    memset(f, 0, sizeof *f);
    f->model.hp.n_head = n_head;
    f->model.hp.n_head_kv = n_kv;
    f->model.hp.head_dim = hd;
    f->model.hp.n_layer = 1;
    f->model.hp.attn_scale = 1.0f / sqrtf((float)hd);
    f->layer.window = window;
    f->model.layers = &f->layer;
    f->ctx.model = &f->model;
    f->ctx.n_batch = n_batch;
    f->ctx.n_threads = threads;
    f->ctx.attn_partial = calloc((size_t)threads * 2 * n_head * (hd + 2), sizeof(float));
    return fr_kv_init(&f->ctx.kv, cfg, 1, n_kv, hd, &window) == FRUGAL_OK &&
           fr_pool_new(threads, &f->ctx.pool) == FRUGAL_OK;
}

static void fixture_free(attn_fixture *f) {
    fr_pool_free(f->ctx.pool);
    fr_kv_free(&f->ctx.kv);
    free(f->ctx.attn_partial);
}

/* What the cache holds now, as floats by position (Kc/Vc [pos][kv_dim]),
 * read back through the same page loads attention uses. */
static void cache_contents(const fr_kv_cache *c, int n_kv, int hd, float *Kc, float *Vc, bool *present, int total) {
    static float kt[FR_KV_PAGE * 512], vt[FR_KV_PAGE * 512];
    const fr_kv_layer *L = &c->layers[0];
    memset(present, 0, (size_t)total);
    for (int i = 0; i < L->n_pages; i++) {
        const fr_kv_page *p = L->pages[i];
        for (int h = 0; h < n_kv; h++) {
            fr_kv_load_head(c, p, h, hd, kt, vt, hd, NULL);
            for (int s = 0; s < p->n; s++) {
                if (!(p->live >> s & 1)) continue;
                memcpy(Kc + ((size_t)p->pos[s] * n_kv + h) * hd, kt + (size_t)s * hd, hd * sizeof(float));
                memcpy(Vc + ((size_t)p->pos[s] * n_kv + h) * hd, vt + (size_t)s * hd, hd * sizeof(float));
                present[p->pos[s]] = true;
            }
        }
    }
}

/* Reference: softmax(q.k * scale) v over the visible cached positions, in
 * double, from the values the cache holds. */
static void reference(const float *q, const float *K, const float *V, const bool *present, int qpos, int window,
                      int n_kv, int hd, int kvh, float scale, float *out) {
    int lo = window && qpos - window + 1 > 0 ? qpos - window + 1 : 0;
    double m = -1e300, l = 0, acc[512] = { 0 };
    for (int pass = 0; pass < 2; pass++)
        for (int p = lo; p <= qpos; p++) {
            if (!present[p]) continue;
            double s = 0;
            for (int i = 0; i < hd; i++) s += q[i] * K[((size_t)p * n_kv + kvh) * hd + i];
            if (pass == 0) { m = s * scale > m ? s * scale : m; continue; }
            double e = exp(s * scale - m);
            l += e;
            for (int i = 0; i < hd; i++) acc[i] += e * V[((size_t)p * n_kv + kvh) * hd + i];
        }
    for (int i = 0; i < hd; i++) out[i] = (float)(acc[i] / l);
}

typedef struct { int n_head, n_kv, hd, total, batch, window, threads; fr_kv_config kv; } attn_case;

/* Feeds `total` positions in batches of `batch` through the cache and
 * attention, checking every output against the reference on what the
 * cache holds at that moment; returns the worst absolute difference. */
static double run_cfg(const attn_case *tc) {
    attn_fixture f;
    int n_head = tc->n_head, n_kv = tc->n_kv, hd = tc->hd, total = tc->total, batch = tc->batch;
    if (!fixture_init(&f, n_head, n_kv, hd, tc->window, batch, tc->threads, &tc->kv)) return 1e9;
    size_t kvd = (size_t)n_kv * hd, qd = (size_t)n_head * hd;
    float *K = malloc(total * kvd * 4), *V = malloc(total * kvd * 4), *Q = malloc(total * qd * 4);
    float *Kc = malloc(total * kvd * 4), *Vc = malloc(total * kvd * 4);
    bool *present = malloc(total);
    float *out = malloc(batch * qd * 4), ref[512];
    unsigned seed = 7;
    for (size_t i = 0; i < total * kvd; i++) { K[i] = frand(&seed) * 2; V[i] = frand(&seed); }
    for (size_t i = 0; i < total * qd; i++) Q[i] = frand(&seed) * 2;
    double worst = 0;
    for (int pos = 0; pos < total && worst < 1e9; pos += batch) {
        int n = FR_MIN(batch, total - pos);
        if (fr_kv_append(&f.ctx.kv, 0, K + pos * kvd, V + pos * kvd, n, pos) ||
            fr_attention(&f.ctx, f.ctx.pool, 0, Q + pos * qd, n, pos, out)) { worst = 1e9; break; }
        cache_contents(&f.ctx.kv, n_kv, hd, Kc, Vc, present, total);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < n_head; h++) {
                reference(Q + (pos + t) * qd + h * hd, Kc, Vc, present, pos + t, tc->window, n_kv, hd,
                          h / (n_head / n_kv), f.model.hp.attn_scale, ref);
                for (int i = 0; i < hd; i++) {
                    double d = fabs(out[(size_t)t * qd + h * hd + i] - ref[i]);
                    if (d > worst) worst = d;
                }
            }
        if (fr_kv_commit(&f.ctx.kv, pos + n, batch)) worst = 1e9;
    }
    free(K); free(V); free(Q); free(Kc); free(Vc); free(present); free(out);
    fixture_free(&f);
    return worst;
}

static double run_case(int n_head, int n_kv, int hd, int total, int batch, int window, int threads) {
    attn_case tc = { n_head, n_kv, hd, total, batch, window, threads, { .residual = FR_KV_PAGE } };
    return run_cfg(&tc);
}

TEST(attention_prefill_matches_reference) {
    CHECK(run_case(9, 3, 64, 100, 100, 0, 2) < 2e-5);
    CHECK(run_case(4, 1, 256, 70, 70, 0, 1) < 2e-5);
}

TEST(attention_batches_and_decode_match_reference) {
    CHECK(run_case(9, 3, 64, 90, 7, 0, 2) < 2e-5);
    CHECK(run_case(4, 2, 32, 40, 1, 0, 2) < 2e-5);
}

TEST(attention_split_kv_decode_matches_reference) {
    /* 1-token steps past 2 * SPLIT_MIN positions take the split path */
    CHECK(run_case(4, 1, 64, 1400, 1, 0, 2) < 2e-5);
    CHECK(run_case(3, 3, 16, 1100, 1, 0, 3) < 2e-5);
}

TEST(attention_sliding_window_matches_reference) {
    CHECK(run_case(4, 1, 64, 300, 16, 24, 2) < 2e-5);
    CHECK(run_case(4, 1, 64, 200, 1, 24, 2) < 2e-5);
    CHECK(run_case(2, 1, 32, 1500, 1, 600, 2) < 2e-5); /* split + window */
}

TEST(attention_primitives_avx2_match_scalar) {
    if (fr_isa_detect() < FR_ISA_AVX2) return;
    unsigned seed = 3;
    float a[301], b[301], acc1[301], acc2[301], f1[301], f2[301];
    uint16_t h1[301], h2[301];
    for (int i = 0; i < 301; i++) { a[i] = frand(&seed) * 100; b[i] = frand(&seed); acc1[i] = acc2[i] = frand(&seed); }
    for (int n = 0; n <= 301; n += 7) {
        float d1 = fr_attn_scalar.dot(a, b, n), d2 = fr_attn_avx2.dot(a, b, n);
        CHECK_NEAR(d1, d2, 1e-3);
        fr_attn_scalar.f32_to_f16(a, h1, n);
        fr_attn_avx2.f32_to_f16(a, h2, n);
        CHECK(memcmp(h1, h2, (size_t)n * 2) == 0);
        fr_attn_scalar.f16_to_f32(h1, f1, n);
        fr_attn_avx2.f16_to_f32(h1, f2, n);
        CHECK(memcmp(f1, f2, (size_t)n * 4) == 0);
        fr_attn_scalar.scale_add(acc1, 0.5f, 2.0f, b, n);
        fr_attn_avx2.scale_add(acc2, 0.5f, 2.0f, b, n);
        for (int i = 0; i < n; i++) CHECK_NEAR(acc1[i], acc2[i], 1e-5);
        float pv1[301], pv2[301], *p1 = pv1, *p2 = pv2, c7 = 0.7f;
        const float *eb = b;
        for (int i = 0; i < n; i++) pv1[i] = pv2[i] = acc1[i];
        fr_attn_scalar.pv(&p1, &c7, &eb, 1, a, 3, n / 3, n / 3 > 0 ? 3 : 0);
        fr_attn_avx2.pv(&p2, &c7, &eb, 1, a, 3, n / 3, n / 3 > 0 ? 3 : 0);
        int w = n > 40 ? 40 : n;
        fr_attn_scalar.pv(&p1, &c7, &eb, 1, a, 41, 7 * (n > 300), w);
        fr_attn_avx2.pv(&p2, &c7, &eb, 1, a, 41, 7 * (n > 300), w);
        for (int i = 0; i < n; i++) CHECK_NEAR(pv1[i], pv2[i], 1e-3);
        /* scores of up to 40 keys of up to 64 channels */
        static float keys[40 * 64];
        for (int i = 0; i < 40 * 64; i++) keys[i] = frand(&seed);
        float s1v[40], s2v[40];
        int np = n / 8 < 40 ? n / 8 : 40, kn = 8 * (n / 8 < 8 ? n / 8 : 8);
        float m1 = fr_attn_scalar.dots(a, keys, kn, np, kn, 0.125f, s1v);
        float m2 = fr_attn_avx2.dots(a, keys, kn, np, kn, 0.125f, s2v);
        for (int i = 0; i < np; i++) CHECK_NEAR(s1v[i], s2v[i], 1e-4 * (1 + fabsf(s1v[i])));
        if (np) CHECK_NEAR(m1, m2, 1e-4 * (1 + fabsf(m1)));
        fr_attn_scalar.dots(a, keys, 5, np, 5, 1.0f, s1v); /* widths not a multiple of 8 */
        fr_attn_avx2.dots(a, keys, 5, np, 5, 1.0f, s2v);
        for (int i = 0; i < np; i++) CHECK_NEAR(s1v[i], s2v[i], 1e-4 * (1 + fabsf(s1v[i])));
        /* scores of 1-5 rows from fp16 keys channel-major, converted as
         * they are read: near a plain float reference at both levels, and
         * a row's the same bits alone as beside others */
        static float kc[64 * FR_KV_PAGE], kcf[64 * FR_KV_PAGE], vf[130 * 7];
        static uint16_t kc16[64 * FR_KV_PAGE], v16[130 * 7];
        for (int i = 0; i < 64 * FR_KV_PAGE; i++) kc[i] = frand(&seed);
        fr_attn_scalar.f32_to_f16(kc, kc16, 64 * FR_KV_PAGE);
        fr_attn_scalar.f16_to_f32(kc16, kcf, 64 * FR_KV_PAGE);
        int cn = n % 65, nq = 1 + n % 5;
        const float *qs[5] = { a, b, a + 1, b + 1, a + 2 };
        float t1[5 * FR_KV_PAGE], t2[5 * FR_KV_PAGE], alone[FR_KV_PAGE];
        fr_attn_scalar.dots_t_h(qs, nq, kc16, cn, 0.125f, t1, NULL);
        fr_attn_avx2.dots_t_h(qs, nq, kc16, cn, 0.125f, t2, kc16 + 32);
        for (int r = 0; r < nq; r++) {
            fr_attn_avx2.dots_t_h(qs + r, 1, kc16, cn, 0.125f, alone, NULL);
            for (int p = 0; p < FR_KV_PAGE; p++) {
                float ref = 0, x = t1[r * FR_KV_PAGE + p], y = t2[r * FR_KV_PAGE + p];
                for (int i = 0; i < cn; i++) ref += qs[r][i] * kcf[i * FR_KV_PAGE + p];
                ref *= 0.125f;
                CHECK_NEAR(x, ref, 1e-4 * (1 + fabsf(ref)));
                CHECK_NEAR(y, ref, 1e-4 * (1 + fabsf(ref)));
                CHECK_MSG(y == alone[p], "row %d of %d, slot %d", r, nq, p);
            }
        }
        /* values as stored, converted as they are read: the bits of
         * converting them first */
        for (int level = 0; level < 2; level++) {
            const fr_attn_kernels *K = level ? &fr_attn_avx2 : &fr_attn_scalar;
            int vn = n % 130, vp = n % 8; /* widths past 64 and 16 lanes, and their tails */
            for (int i = 0; i < 130 * 7; i++) vf[i] = b[i % 301];
            fr_attn_scalar.f32_to_f16(vf, v16, 130 * 7);
            fr_attn_scalar.f16_to_f32(v16, vf, 130 * 7);
            /* 1-5 rows at once, each its own weights and rescale, from fp16
             * or float values: a row's bits are those of pv on the
             * converted values, alone */
            static float rows_h[5][130], rows_f[5][130];
            float *accs[5], *accf[5], cs[5];
            const float *es[5];
            for (int r = 0; r < nq; r++) {
                accs[r] = rows_h[r], accf[r] = rows_f[r], cs[r] = 0.7f - 0.1f * r, es[r] = b + 7 * r;
                for (int i = 0; i < vn; i++) rows_h[r][i] = rows_f[r][i] = a[i + r];
            }
            K->pv_h(accs, cs, es, nq, v16, 130, vp > 7 ? 7 : vp, vn, level ? v16 : NULL);
            K->pv(accf, cs, es, nq, vf, 130, vp > 7 ? 7 : vp, vn);
            for (int r = 0; r < nq; r++) {
                for (int i = 0; i < vn; i++) pv1[i] = a[i + r];
                K->pv(&p1, cs + r, es + r, 1, vf, 130, vp > 7 ? 7 : vp, vn);
                CHECK_MSG(memcmp(pv1, rows_h[r], sizeof(float) * vn) == 0, "pv_h, level %d, n %d, row %d of %d",
                          level, n, r, nq);
                CHECK_MSG(memcmp(pv1, rows_f[r], sizeof(float) * vn) == 0, "pv, level %d, n %d, row %d of %d",
                          level, n, r, nq);
            }
        }
        /* exp(s - m): relative error well under 1e-6, down to underflow */
        float e1[301], e2[301];
        for (int i = 0; i < n; i++) e1[i] = e2[i] = -fabsf(a[i]) * (i % 3 ? 1.0f : 0.01f);
        float s1 = fr_attn_scalar.exp_sub(e1, 0.5f, n), s2 = fr_attn_avx2.exp_sub(e2, 0.5f, n);
        CHECK_NEAR(s1, s2, 1e-6 * (s1 + 1));
        for (int i = 0; i < n; i++) CHECK_NEAR(e1[i], e2[i], 1e-6 * e1[i] + 1e-37);
    }
}

/* Compressed pages: attention must equal attention over the cache's own
 * dequantized contents (the reference reads them back), at every type,
 * in prefill and in split-KV decode, with residuals of 32 and 96. */
TEST(attention_on_compressed_pages_matches_dequantized_cache) {
    for (int type = FR_KV_Q8; type < FR_KV_TYPES; type++) {
        attn_case a = { 9, 3, 64, 200, 64, 0, 2, { .type = type, .residual = 32 } };
        CHECK_MSG(run_cfg(&a) < 2e-5, "%s prefill", fr_kv_type_name(type));
        attn_case b = { 4, 1, 64, 700, 1, 0, 2, { .type = type, .residual = 96 } };
        CHECK_MSG(run_cfg(&b) < 2e-5, "%s decode", fr_kv_type_name(type));
        attn_case c = { 4, 2, 32, 300, 7, 40, 2, { .type = type, .residual = 32 } };
        CHECK_MSG(run_cfg(&c) < 2e-5, "%s window", fr_kv_type_name(type));
    }
}

/* Budgeted caches evict single tokens, leaving pages with holes and
 * merged pages of scattered positions: attention must see exactly the
 * tokens that are left. */
TEST(attention_on_budgeted_cache_matches_reference) {
    for (int policy = 0; policy < 2; policy++)
        for (int type = FR_KV_F16; type < FR_KV_TYPES; type += 2) {
            fr_kv_config kv = { .type = type, .residual = 32, .budget = 100, .policy = policy, .n_sink = 4,
                                .n_recent = 25, .history = 50 };
            attn_case a = { 4, 2, 64, 600, 1, 0, 2, kv };
            CHECK_MSG(run_cfg(&a) < 2e-5, "policy %d type %d decode", policy, type);
            attn_case b = { 4, 2, 64, 400, 16, 0, 1, kv };
            CHECK_MSG(run_cfg(&b) < 2e-5, "policy %d type %d batches", policy, type);
        }
}

/* Block b of query rows r0 .. r0 + nr - 1 of Q (hd floats each): row r at
 * position total - 1 - 4 r (some rows end inside the last, partial page,
 * some before it), sliding window win (0: none), fresh state, outputs
 * out[i] zeroed. */
static void fill_block(fr_attn_block *b, int r0, int nr, int hd, bool prompt, const float *Q, int total, int win,
                       float (*out)[64]) {
    *b = (fr_attn_block){ .nr = nr, .hd = hd, .scale = 0.125f, .prompt = prompt };
    for (int i = 0; i < nr; i++) {
        int r = r0 + i;
        b->q[i] = Q + r * hd;
        b->qpos[i] = total - 1 - 4 * r;
        b->lo[i] = win && b->qpos[i] - win + 1 > 0 ? b->qpos[i] - win + 1 : 0;
        b->out[i] = out[i];
        b->m[i] = -INFINITY;
        b->l[i] = 0;
        memset(out[i], 0, (size_t)hd * sizeof(float));
    }
}

/* The AVX-512 block kernel's two shapes (query rows in the lanes for a
 * prefill block, keys in the lanes for the few rows of a decode) give
 * each row the same bits, whatever its block: a row alone, the same row
 * among 6, 22 or 31 others (one or two vectors of rows), over dense pages, a partial last page, a sliding
 * window and a page with evicted slots. */
TEST(attention_block_shapes_are_bit_identical) {
    if (fr_isa_detect() < FR_ISA_AVX512) return;
    int saved = fr_kernels_isa();
    fr_kernels_select(FR_ISA_AVX512);
    enum { HD = 64, NKV = 2, TOTAL = 150 };
    fr_kv_config cfg = { .residual = FR_KV_PAGE };
    fr_kv_cache c;
    int window = 0;
    CHECK(fr_kv_init(&c, &cfg, 1, NKV, HD, &window) == FRUGAL_OK);
    static float K[TOTAL * NKV * HD], V[TOTAL * NKV * HD], Q[32 * HD];
    unsigned seed = 11;
    for (int i = 0; i < TOTAL * NKV * HD; i++) { K[i] = frand(&seed) * 2; V[i] = frand(&seed); }
    for (int i = 0; i < 32 * HD; i++) Q[i] = frand(&seed) * 2;
    CHECK(fr_kv_append(&c, 0, K, V, TOTAL, 0) == FRUGAL_OK);
    fr_kv_page *holey = c.layers[0].pages[1]; /* two evicted slots */
    holey->live &= ~(1u << 3 | 1u << 17);
    holey->dense = false;
    for (int win = 0; win <= 40; win += 40)
      for (int ni = 0; ni < 3; ni++) {
        const int nr = (int[]){ 7, 23, 32 }[ni]; /* one vector of rows, two, two whole */
        fr_attn_block all, one;
        static float out_all[32][HD], out_one[1][HD];
        fill_block(&all, 0, nr, HD, false, Q, TOTAL, win, out_all);
        fr_attn_block_pages(&all, &c, c.layers[0].pages, 0, c.layers[0].n_pages, 1);
        int bad = 0;
        for (int r = 0; r < nr; r++) {
            fill_block(&one, r, 1, HD, false, Q, TOTAL, win, out_one);
            fr_attn_block_pages(&one, &c, c.layers[0].pages, 0, c.layers[0].n_pages, 1);
            bad += memcmp(out_one[0], out_all[r], sizeof out_one[0]) != 0 || memcmp(&one.m[0], &all.m[r], 4) != 0 ||
                   memcmp(&one.l[0], &all.l[r], 4) != 0;
            /* and the answer is attention: against the double reference */
            float ref[HD];
            double m = -1e300, l = 0, acc[HD] = { 0 };
            for (int pass = 0; pass < 2; pass++)
                for (int p = all.lo[r]; p <= all.qpos[r]; p++) {
                    if (p >= FR_KV_PAGE && p < 2 * FR_KV_PAGE && !(holey->live >> (p - FR_KV_PAGE) & 1)) continue;
                    double s = 0;
                    for (int i = 0; i < HD; i++) s += Q[r * HD + i] * fr_fp16_to_fp32(fr_fp32_to_fp16(K[(p * NKV + 1) * HD + i]));
                    s *= 0.125;
                    if (pass == 0) { m = s > m ? s : m; continue; }
                    double e = exp(s - m);
                    l += e;
                    for (int i = 0; i < HD; i++) acc[i] += e * fr_fp16_to_fp32(fr_fp32_to_fp16(V[(p * NKV + 1) * HD + i]));
                }
            for (int i = 0; i < HD; i++) {
                ref[i] = (float)(acc[i] / l);
                bad += fabs(out_all[r][i] / all.l[r] - ref[i]) > 2e-5;
            }
        }
        CHECK_MSG(!bad, "window %d, %d rows: %d differ between the shapes or from the reference", win, nr, bad);
      }
    fr_kv_free(&c);
    fr_kernels_select(saved);
}

/* Prompt rows at the AMX level (attn_amx.c): bf16 products on the tiles.
 * Against the double reference to the precision of bf16 probabilities
 * and values (seen: up to 2.7e-3; 4.5e-3 when the scores too were one
 * bf16 product; a key, value or probability in the wrong place is off by
 * ~0.1 or more), with prefill batches, batches of 7, 256-wide heads, a
 * sliding window, compressed pages and budgeted caches with holes; decode
 * steps at that level keep the AVX-512 kernel and its precision. */
TEST(attention_prompts_on_tiles_match_reference) {
    if (fr_isa_detect() < FR_ISA_AMX) return;
    int saved = fr_kernels_isa();
    fr_kernels_select(FR_ISA_AMX);
    const double tol = 4e-3;
    double e;
    CHECK_MSG((e = run_case(9, 3, 64, 100, 100, 0, 2)) < tol, "%g", e);
    CHECK_MSG((e = run_case(4, 1, 256, 70, 70, 0, 1)) < tol, "%g", e);
    CHECK_MSG((e = run_case(9, 3, 64, 90, 7, 0, 2)) < tol, "%g", e);
    CHECK_MSG((e = run_case(4, 1, 64, 300, 16, 24, 2)) < tol, "%g", e);
    CHECK_MSG((e = run_case(4, 2, 32, 40, 1, 0, 2)) < 2e-5, "%g", e);
    for (int type = FR_KV_Q8; type < FR_KV_TYPES; type++) {
        attn_case a = { 9, 3, 64, 200, 64, 0, 2, { .type = type, .residual = 32 } };
        CHECK_MSG((e = run_cfg(&a)) < tol, "%s prefill %g", fr_kv_type_name(type), e);
    }
    for (int policy = 0; policy < 2; policy++) {
        fr_kv_config kv = { .type = FR_KV_F16, .residual = 32, .budget = 100, .policy = policy, .n_sink = 4,
                            .n_recent = 25, .history = 50 };
        attn_case b = { 4, 2, 64, 400, 16, 0, 1, kv };
        CHECK_MSG((e = run_cfg(&b)) < tol, "policy %d %g", policy, e);
    }
    fr_kernels_select(saved);
}

/* The tile kernel gives a row the same bits whatever its block: alone,
 * or among 2, 15, 22 or 31 others (one panel or two, the second short),
 * over dense pages, a partial last page, a sliding window, a page with
 * evicted slots, and a compressed (q8) cache. */
TEST(attention_prompt_rows_on_tiles_are_block_invariant) {
    if (fr_isa_detect() < FR_ISA_AMX) return;
    enum { HD = 64, NKV = 2, TOTAL = 150 };
    static float K[TOTAL * NKV * HD], V[TOTAL * NKV * HD], Q[32 * HD];
    unsigned seed = 13;
    for (int i = 0; i < TOTAL * NKV * HD; i++) { K[i] = frand(&seed) * 2; V[i] = frand(&seed); }
    for (int i = 0; i < 32 * HD; i++) Q[i] = frand(&seed) * 2;
    for (int type = FR_KV_F16; type <= FR_KV_Q8; type++) {
        fr_kv_config cfg = { .type = type, .residual = FR_KV_PAGE };
        fr_kv_cache c;
        int window = 0;
        CHECK(fr_kv_init(&c, &cfg, 1, NKV, HD, &window) == FRUGAL_OK);
        CHECK(fr_kv_append(&c, 0, K, V, TOTAL, 0) == FRUGAL_OK);
        CHECK(fr_kv_commit(&c, TOTAL, 64) == FRUGAL_OK);
        CHECK(c.layers[0].pages[0]->packed == (type == FR_KV_Q8));
        fr_kv_page *holey = c.layers[0].pages[1];
        holey->live &= ~(1u << 3 | 1u << 17);
        holey->dense = false;
        for (int win = 0; win <= 40; win += 40)
            for (int ni = 0; ni < 5; ni++) {
                const int nr = (int[]){ 1, 3, 16, 23, 32 }[ni];
                fr_attn_block all, one;
                static float out_all[32][HD], out_one[1][HD];
                fill_block(&all, 0, nr, HD, true, Q, TOTAL, win, out_all);
                fr_attn_block_pages_amx(&all, &c, c.layers[0].pages, 0, c.layers[0].n_pages, 1);
                int bad = 0;
                for (int r = 0; r < nr; r++) {
                    fill_block(&one, r, 1, HD, true, Q, TOTAL, win, out_one);
                    fr_attn_block_pages_amx(&one, &c, c.layers[0].pages, 0, c.layers[0].n_pages, 1);
                    bad += memcmp(out_one[0], out_all[r], sizeof out_one[0]) != 0 || memcmp(&one.m[0], &all.m[r], 4) != 0 ||
                           memcmp(&one.l[0], &all.l[r], 4) != 0 || !(all.l[r] > 0);
                }
                CHECK_MSG(!bad, "%s, window %d, %d rows: %d rows differ from alone", fr_kv_type_name(type), win, nr,
                          bad);
            }
        fr_kv_free(&c);
    }
}
