/*
 * context.c - the inference state: KV cache, activation buffers, thread
 * pool, and frugal_eval which feeds tokens through the forward pass in
 * batches of at most n_batch.
 */
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "quant.h"

#define DEFAULT_BATCH 512
#define MAX_CTX (1 << 24)
#define MIN_BUDGET 64

frugal_ctx_params frugal_ctx_default_params(void) {
    frugal_ctx_params p = { 0 };
    return p;
}

const char *frugal_kv_type_name(int type) { return fr_kv_type_name(type); }
int frugal_kv_type_parse(const char *name) { return name ? fr_kv_type_parse(name) : -1; }

static const char *const policy_names[] = { "window", "scissorhands" };

const char *frugal_kv_policy_name(int policy) {
    return policy >= 0 && policy < 2 ? policy_names[policy] : "unknown";
}

int frugal_kv_policy_parse(const char *name) {
    for (int i = 0; name && i < 2; i++)
        if (!strcmp(name, policy_names[i])) return i;
    return -1;
}

/* MemAvailable from /proc/meminfo in bytes, or 0 when unknown. */
static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* The most KV cache memory a context can come to hold: every layer full
 * (a window layer holds its window plus a batch of slack and a batch of
 * new tokens; a budgeted one its budget, up to twice over in pages with
 * holes, plus a batch), pages packed except the residual. */
static uint64_t kv_bytes(const frugal_ctx *c) {
    const frugal_model *m = c->model;
    const fr_kv_config *cfg = &c->kv.cfg;
    int kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    uint64_t total = 0;
    for (int l = 0; l < m->hp.n_layer; l++) {
        int window = m->layers[l].window;
        uint64_t cap = c->n_ctx;
        if (window) cap = FR_MIN(cap, (uint64_t)window + 2 * c->n_batch + FR_KV_PAGE);
        if (cfg->budget) cap = FR_MIN(cap, 2 * (uint64_t)cfg->budget + c->n_batch + 2 * FR_KV_PAGE);
        uint64_t fp16 = FR_MIN(cap, (uint64_t)cfg->residual + FR_KV_PAGE);
        total += (uint64_t)((cap - fp16) * fr_kv_token_bytes(cfg->type, kv_dim)) + fp16 * 4 * kv_dim;
    }
    return total;
}

/* The KV cache is allocated lazily by the OS: an oversized one would
 * "succeed" and then get the process killed when it fills. Refuse it up
 * front with a message that says what to change. */
static frugal_status check_memory(const frugal_ctx *c) {
    uint64_t need = kv_bytes(c), avail = mem_available();
    if (avail && need > avail)
        return fr_error(FRUGAL_ERR_NOMEM,
                        "a context of %d tokens needs %.0f MiB of KV cache, but only %.0f MiB of memory "
                        "are available; use a smaller context", c->n_ctx, need / 1048576.0, avail / 1048576.0);
    return FRUGAL_OK;
}

static frugal_status alloc_kv(frugal_ctx *c) {
    const frugal_model *m = c->model;
    int *windows = fr_malloc((size_t)m->hp.n_layer * sizeof *windows);
    if (!windows) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the KV cache table");
    for (int l = 0; l < m->hp.n_layer; l++) windows[l] = m->layers[l].window;
    frugal_status st = fr_kv_init(&c->kv, &c->kv.cfg, m->hp.n_layer, m->hp.n_head_kv, m->hp.head_dim, windows);
    fr_free(windows);
    c->kv.pool = m->kv_pool;
    return st;
}

static frugal_status alloc_buffers(frugal_ctx *c) {
    const fr_hparams *hp = &c->model->hp;
    size_t nb = (size_t)c->n_batch;
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim, q_dim = (size_t)hp->n_head * hp->head_dim;
    size_t widest = FR_MAX(FR_MAX((size_t)hp->n_embd, q_dim), (size_t)hp->n_ff);
    /* a quantized activation row is at most 4 bytes per element plus block
     * headers, and a matmul may add a bf16 copy of a prompt's rows */
    c->qbuf_bytes = nb * (widest * 6 + 64);
    c->x = fr_malloc(nb * hp->n_embd * sizeof(float));
    c->xb = fr_malloc(nb * FR_MAX((size_t)hp->n_embd, q_dim) * sizeof(float));
    c->q = fr_malloc(nb * q_dim * sizeof(float));
    c->k = fr_malloc(nb * kv_dim * sizeof(float));
    c->v = fr_malloc(nb * kv_dim * sizeof(float));
    c->att = fr_malloc(nb * q_dim * sizeof(float));
    c->hb = fr_malloc(nb * hp->n_ff * sizeof(float));
    c->hb2 = fr_malloc(nb * hp->n_ff * sizeof(float));
    c->qbuf = fr_malloc(c->qbuf_bytes);
    c->is_prompt = fr_malloc(nb);
    for (int k = 0; k < c->model->n_rope_bases; k++)
        if (!(c->rope_cs[k] = fr_malloc(nb * hp->rope_dim * sizeof(float))))
            return fr_error(FRUGAL_ERR_NOMEM, "out of memory for RoPE tables");
    c->attn_partial = fr_malloc((size_t)c->n_threads * 2 * hp->n_head * (hp->head_dim + 2) * sizeof(float));
    c->n_logits_cap = 1;
    c->logits = fr_malloc((size_t)hp->n_vocab * sizeof(float));
    if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->att || !c->hb || !c->hb2 || !c->qbuf || !c->is_prompt || !c->attn_partial ||
        !c->logits)
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for activation buffers of %d tokens", c->n_batch);
    return alloc_kv(c);
}

/* Checks the KV cache options and fills in their defaults. */
static frugal_status kv_config(const frugal_model *m, const frugal_ctx_params *p, fr_kv_config *kc) {
    if (p->kv_type < 0 || p->kv_type >= FR_KV_TYPES)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "unknown KV cache type %d", p->kv_type);
    if (p->kv_type != FR_KV_F16 && m->hp.head_dim % 32)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "a %s KV cache needs a head size divisible by 32, not %d",
                        fr_kv_type_name(p->kv_type), m->hp.head_dim);
    if (p->kv_residual < 0 || p->kv_residual % FR_KV_PAGE || p->kv_residual > MAX_CTX)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "KV residual %d must be a multiple of %d (0 = %d)",
                        p->kv_residual, FR_KV_PAGE, FR_KV_PAGE);
    if (p->kv_budget && (p->kv_budget < MIN_BUDGET || p->kv_budget > MAX_CTX))
        return fr_error(FRUGAL_ERR_INVALID_ARG, "KV budget %d out of range %d..%d (0 = no budget)",
                        p->kv_budget, MIN_BUDGET, MAX_CTX);
    if (p->kv_policy < 0 || p->kv_policy > FR_KV_EVICT_SCISSORHANDS)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "unknown KV eviction policy %d", p->kv_policy);
    *kc = (fr_kv_config){ .type = p->kv_type, .residual = p->kv_residual ? p->kv_residual : FR_KV_PAGE,
                          .budget = p->kv_budget, .policy = p->kv_policy, .n_sink = 4,
                          .n_recent = p->kv_budget / 4, .history = FR_MIN(64, FR_MAX(1, p->kv_budget / 2)) };
    return FRUGAL_OK;
}

frugal_status frugal_ctx_new(frugal_model *model, const frugal_ctx_params *params, frugal_ctx **out) {
    if (!model || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "model and output are required");
    *out = NULL;
    frugal_ctx_params p = params ? *params : frugal_ctx_default_params();
    if (p.n_ctx < 0 || p.n_ctx > MAX_CTX)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "context size %d out of range 1..%d", p.n_ctx, MAX_CTX);
    if (p.n_threads < 0 || p.n_threads > 1024)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "thread count %d out of range 1..1024", p.n_threads);
    if (p.n_batch < 0 || p.n_batch > 65536)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "batch size %d out of range 1..65536", p.n_batch);
    if (p.share_threads && p.share_threads->model != model)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "share_threads names a context of another model");
    fr_kv_config kc;
    frugal_status st = kv_config(model, &p, &kc);
    if (st) return st;
    frugal_ctx *c = fr_calloc(1, sizeof *c);
    if (!c) return fr_error(FRUGAL_ERR_NOMEM, "out of memory creating context");
    c->model = model;
    c->n_ctx = p.n_ctx ? p.n_ctx : model->hp.n_ctx_train;
    c->n_batch = FR_MIN(p.n_batch ? p.n_batch : DEFAULT_BATCH, c->n_ctx);
    c->n_threads = p.share_threads ? p.share_threads->n_threads : p.n_threads ? p.n_threads : fr_physical_cores();
    c->kv.cfg = kc;
    st = check_memory(c);
    if (!st) st = alloc_buffers(c);
    if (!st && p.share_threads) c->pool = p.share_threads->pool;
    else if (!st) st = fr_pool_new(c->n_threads, &c->pool), c->owns_pool = !st;
    if (st) { frugal_ctx_free(c); return st; }
    *out = c;
    return FRUGAL_OK;
}

void frugal_ctx_free(frugal_ctx *c) {
    if (!c) return;
    if (c->owns_pool) fr_pool_free(c->pool);
    fr_kv_free(&c->kv);
    for (int k = 0; k < FR_MAX_ROPE_BASES; k++) fr_free(c->rope_cs[k]);
    fr_free(c->x); fr_free(c->xb); fr_free(c->q); fr_free(c->k); fr_free(c->v);
    fr_free(c->att); fr_free(c->hb); fr_free(c->hb2); fr_free(c->qbuf); fr_free(c->is_prompt); fr_free(c->attn_partial); fr_free(c->logits);
    fr_free(c->prof);
    fr_free(c);
}

/* Grows the logits buffer to hold `rows` rows. */
static frugal_status reserve_logits(frugal_ctx *c, int rows) {
    if (rows <= c->n_logits_cap) return FRUGAL_OK;
    float *l = fr_realloc(c->logits, (size_t)rows * c->model->hp.n_vocab * sizeof(float));
    if (!l) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for logits of %d tokens", rows);
    c->logits = l;
    c->n_logits_cap = rows;
    return FRUGAL_OK;
}

/* After a failed step: drop what it half-wrote (truncating only frees
 * whole pages at worst; if even that fails, start over). */
static frugal_status fail_eval(frugal_ctx *c, frugal_status st) {
    if (fr_kv_truncate(&c->kv, c->pos)) {
        fr_kv_truncate(&c->kv, 0);
        c->pos = 0;
    }
    return st;
}

frugal_status frugal_eval(frugal_ctx *c, const int32_t *tokens, int n, bool all_logits) {
    if (!c || (!tokens && n > 0) || n < 0) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_eval");
    if (n == 0) return FRUGAL_OK;
    if (n > c->n_ctx - c->pos)
        return fr_error(FRUGAL_ERR_CONTEXT_FULL, "%d tokens do not fit: context holds %d, %d in use",
                        n, c->n_ctx, c->pos);
    int n_vocab = c->model->hp.n_vocab;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "token id %d out of range 0..%d", tokens[i], n_vocab - 1);
    frugal_status st = reserve_logits(c, all_logits ? n : 1);
    if (st) return st;
    float *all = c->logits;
    for (int done = 0; done < n; done += c->n_batch) {
        int nb = FR_MIN(c->n_batch, n - done);
        bool last_batch = done + nb == n;
        int n_out = all_logits ? nb : (last_batch ? 1 : 0);
        c->logits = all_logits ? all + (size_t)done * n_vocab : all;
        fr_batch b = { &c, &nb, 1, n > 1 }; /* a prompt's pieces, even a last one of one token */
        st = fr_forward(c, &b, tokens + done, nb, n_out);
        if (!st) {
            c->pos += nb;
            st = fr_kv_commit(&c->kv, c->pos, c->n_batch);
        }
        if (st) {
            c->logits = all;
            c->logits_count = 0;
            return fail_eval(c, st);
        }
    }
    c->logits = all;
    c->logits_first = all_logits ? 0 : n - 1;
    c->logits_count = all_logits ? n : 1;
    return FRUGAL_OK;
}

frugal_status frugal_eval_runs(frugal_ctx *const *ctxs, const int32_t *tokens, const int *n_tokens, int n) {
    if (!ctxs || !tokens || !n_tokens || n < 1 || n > FR_MAX_BATCH_SEQS)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "frugal_eval_runs needs 1..%d contexts", FR_MAX_BATCH_SEQS);
    frugal_ctx *ws = ctxs[0];
    if (!ws) return fr_error(FRUGAL_ERR_INVALID_ARG, "context 0 is missing");
    int n_vocab = ws->model->hp.n_vocab, total = 0;
    for (int i = 0; i < n; i++) {
        const frugal_ctx *c = ctxs[i];
        if (!c || c->model != ws->model)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "context %d is missing or over another model", i);
        for (int k = 0; k < i; k++)
            if (ctxs[k] == c) return fr_error(FRUGAL_ERR_INVALID_ARG, "context %d appears twice", i);
        if (n_tokens[i] < 1 || n_tokens[i] > ws->n_batch)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "run %d has %d tokens (1..%d)", i, n_tokens[i], ws->n_batch);
        if (n_tokens[i] > c->n_ctx - c->pos)
            return fr_error(FRUGAL_ERR_CONTEXT_FULL, "%d tokens do not fit context %d: it holds %d, %d in use",
                            n_tokens[i], i, c->n_ctx, c->pos);
        total += n_tokens[i];
        if (total > ws->n_batch)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "the runs' tokens exceed the batch size %d", ws->n_batch);
    }
    for (int t = 0; t < total; t++)
        if (tokens[t] < 0 || tokens[t] >= n_vocab)
            return fr_error(FRUGAL_ERR_INVALID_ARG, "token id %d out of range 0..%d", tokens[t], n_vocab - 1);
    frugal_status st = reserve_logits(ws, n);
    if (st) return st;
    fr_batch b = { ctxs, n_tokens, n, false };
    st = fr_forward(ws, &b, tokens, total, FR_OUT_RUN_LAST);
    for (int i = 0; i < n && !st; i++)
        st = fr_kv_commit(&ctxs[i]->kv, ctxs[i]->pos + n_tokens[i], ctxs[i]->n_batch);
    if (st) {
        for (int i = 0; i < n; i++) {
            ctxs[i]->logits_count = 0;
            fail_eval(ctxs[i], st);
        }
        return st;
    }
    /* each sequence gets its own row; ws's row 0 is already in place */
    for (int i = n - 1; i >= 0; i--) {
        frugal_ctx *c = ctxs[i];
        if (i > 0) memcpy(c->logits, ws->logits + (size_t)i * n_vocab, (size_t)n_vocab * sizeof(float));
        c->logits_first = n_tokens[i] - 1;
        c->logits_count = 1;
        c->pos += n_tokens[i];
    }
    return FRUGAL_OK;
}

frugal_status frugal_eval_batch(frugal_ctx *const *ctxs, const int32_t *tokens, int n) {
    int ones[FR_MAX_BATCH_SEQS];
    if (n < 1 || n > FR_MAX_BATCH_SEQS)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "frugal_eval_batch needs 1..%d contexts", FR_MAX_BATCH_SEQS);
    for (int i = 0; i < n; i++) ones[i] = 1;
    return frugal_eval_runs(ctxs, tokens, ones, n);
}

int frugal_ctx_batch(const frugal_ctx *c) { return c->n_batch; }

const float *frugal_logits(const frugal_ctx *c, int i) {
    if (!c || c->logits_count == 0) return NULL;
    if (i < 0) i = c->logits_first + c->logits_count - 1;
    if (i < c->logits_first || i >= c->logits_first + c->logits_count) return NULL;
    return c->logits + (size_t)(i - c->logits_first) * c->model->hp.n_vocab;
}

int frugal_ctx_pos(const frugal_ctx *c) { return c->pos; }
int frugal_ctx_size(const frugal_ctx *c) { return c->n_ctx; }
int frugal_ctx_threads(const frugal_ctx *c) { return fr_pool_size(c->pool); }

size_t frugal_ctx_kv_bytes(const frugal_ctx *c) { return fr_kv_bytes(&c->kv); }

frugal_status frugal_ctx_profile(frugal_ctx *c, bool on) {
    if (!on) {
        fr_free(c->prof);
        c->prof = NULL;
        return FRUGAL_OK;
    }
    if (!c->prof && !(c->prof = fr_malloc(sizeof *c->prof)))
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for a profile");
    memset(c->prof, 0, sizeof *c->prof);
    return FRUGAL_OK;
}

void frugal_ctx_profile_get(const frugal_ctx *c, frugal_part_stats parts[FRUGAL_PARTS]) {
    for (int i = 0; i < FRUGAL_PARTS; i++)
        parts[i] = c->prof ? c->prof->part[i] : (frugal_part_stats){ 0 };
}

const char *frugal_part_name(int part) {
    static const char *names[FRUGAL_PARTS] = { "qkv", "attention", "attn_out", "ffn_up", "ffn_down", "output", "other" };
    return part >= 0 && part < FRUGAL_PARTS ? names[part] : "unknown";
}

int frugal_ctx_kv_tokens(const frugal_ctx *c) {
    int most = 0;
    for (int l = 0; l < c->kv.n_layer; l++) most = FR_MAX(most, c->kv.layers[l].live);
    return most;
}

/* A sliding-window layer frees pages that fell out of its window (keeping
 * a batch of slack): rewinding to pos needs the positions a query at pos
 * sees still there. When they are gone the cache restarts from empty
 * (frugal_ctx_pos tells the caller what was kept). */
frugal_status frugal_ctx_rewind(frugal_ctx *c, int pos) {
    if (pos < 0 || pos > c->pos)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "cannot rewind to %d: %d tokens cached", pos, c->pos);
    if (!fr_kv_can_rewind(&c->kv, pos)) pos = 0;
    c->logits_count = 0;
    frugal_status st = fr_kv_truncate(&c->kv, pos);
    if (st) pos = 0, fr_kv_truncate(&c->kv, 0);
    c->pos = pos;
    return st;
}
