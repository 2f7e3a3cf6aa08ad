/*
 * test_faults.c - fault injection over whole call chains on a tiny but
 * complete model (written with gguf_builder to a temporary file):
 *
 *  - every allocation of frugal_model_load + frugal_ctx_new + frugal_eval
 *    (prefill with all logits, then a decode step) is made to fail in
 *    turn: the chain must fail with FRUGAL_ERR_NOMEM and an "out of
 *    memory" message, and succeed once N is past the last allocation;
 *  - the same for tokenize / chat template / sampler / stream on a loaded
 *    model, and for a two-thread context (thread pool set-up);
 *  - the file cut at every section boundary (header fields, each key and
 *    value, each tensor info, the padding, each tensor's data) must be
 *    refused with FRUGAL_ERR_FORMAT and a "truncated" / "past the end"
 *    message; a missing file or a directory is FRUGAL_ERR_IO.
 *
 * That nothing leaks on these paths is checked by running the unit tests
 * under ASan/LeakSanitizer (make test-sanitize).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "unit.h"
#include "gguf.h"
#include "gguf_builder.h"
#include "json_mode.h"
#include "model.h"
#include "quant.h"

/* ---- the tiny model ---------------------------------------------------- */

enum { N_LAYER = 2, N_EMBD = 64, N_HEAD = 4, N_HEAD_KV = 2, N_FF = 64, N_CTX_TRAIN = 128 };

static const char *const merges[] = { "Ġ t", "h e", "Ġt he", "i n", "in g", "l l", "Ġ a" };
#define N_MERGES ((int)(sizeof merges / sizeof merges[0]))
#define N_VOCAB (3 + 256 + N_MERGES)

static uint32_t rng_state = 12345;

static float rnd(void) {   /* uniform in [-0.5, 0.5), deterministic */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 16777216.0f - 0.5f;
}

static unsigned byte_char(unsigned b) {
    unsigned n = 0;
    for (unsigned x = 0; x < 256; x++) {
        bool self = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174;
        if (x == b) return self ? x : 256 + n;
        if (!self) n++;
    }
    return 0;
}

/* A weight of type `type` and shape [cols, rows] with random values (norm
 * vectors: around 1). */
static void add_weight(gb *b, const char *name, uint32_t type, int64_t cols, int64_t rows) {
    size_t n = (size_t)(cols * rows);
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = rows == 1 ? 1.0f + 0.1f * rnd() : 0.2f * rnd();
    const fr_type_traits *tt = fr_traits(type);
    size_t bytes = fr_row_bytes(type, cols) * (size_t)rows;
    void *q = malloc(bytes);
    if (type == FR_F32) memcpy(q, x, bytes);
    else tt->quant(x, q, (int64_t)n);
    int64_t ne[2] = { cols, rows };
    gb_tensor(b, name, type, rows == 1 ? 1 : 2, ne, q, bytes);
    free(q);
    free(x);
}

/* The model file's bytes (free() them). */
static uint8_t *tiny_model(size_t *size) {
    static char bytes[256][4], merged[N_MERGES][16];
    const char *tokens[N_VOCAB];
    int32_t types[N_VOCAB];
    int k = 0;
    tokens[k] = "<|endoftext|>", types[k++] = 3;
    tokens[k] = "<|im_start|>", types[k++] = 3;
    tokens[k] = "<|im_end|>", types[k++] = 3;
    for (unsigned c = 0; c < 256; c++) {
        unsigned ch = byte_char(c);
        if (ch < 0x80) {
            bytes[c][0] = (char)ch;
            bytes[c][1] = 0;
        } else {
            bytes[c][0] = (char)(0xC0 | (ch >> 6));
            bytes[c][1] = (char)(0x80 | (ch & 0x3F));
            bytes[c][2] = 0;
        }
        tokens[k] = bytes[c], types[k++] = 1;
    }
    for (int m = 0; m < N_MERGES; m++) {
        size_t w = 0;
        for (const char *p = merges[m]; *p; p++)
            if (*p != ' ') merged[m][w++] = *p;
        merged[m][w] = 0;
        tokens[k] = merged[m], types[k++] = 1;
    }
    rng_state = 12345;
    gb *b = gb_new();
    gb_str(b, "general.architecture", "llama");
    gb_str(b, "general.name", "fault-test");
    gb_u32(b, "llama.block_count", N_LAYER);
    gb_u32(b, "llama.context_length", N_CTX_TRAIN);
    gb_u32(b, "llama.embedding_length", N_EMBD);
    gb_u32(b, "llama.feed_forward_length", N_FF);
    gb_u32(b, "llama.attention.head_count", N_HEAD);
    gb_u32(b, "llama.attention.head_count_kv", N_HEAD_KV);
    gb_f32(b, "llama.rope.freq_base", 10000.0f);
    gb_f32(b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gb_str(b, "tokenizer.ggml.model", "gpt2");
    gb_str(b, "tokenizer.ggml.pre", "smollm");
    gb_arr_str(b, "tokenizer.ggml.tokens", tokens, N_VOCAB);
    gb_arr(b, "tokenizer.ggml.token_type", GGUF_I32, 4, types, N_VOCAB);
    gb_arr_str(b, "tokenizer.ggml.merges", merges, N_MERGES);
    gb_u32(b, "tokenizer.ggml.bos_token_id", 1);
    gb_u32(b, "tokenizer.ggml.eos_token_id", 2);
    gb_bool(b, "tokenizer.ggml.add_bos_token", false);
    gb_str(b, "tokenizer.chat_template",
           "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}");
    int64_t kv = (int64_t)N_EMBD / N_HEAD * N_HEAD_KV;
    add_weight(b, "token_embd.weight", FR_Q8_0, N_EMBD, N_VOCAB);
    add_weight(b, "output_norm.weight", FR_F32, N_EMBD, 1);
    add_weight(b, "output.weight", FR_Q4_1, N_EMBD, N_VOCAB);
    for (int l = 0; l < N_LAYER; l++) {
        char name[64];
#define W(suffix, type, cols, rows)                                   \
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, suffix); \
        add_weight(b, name, type, cols, rows)
        W("attn_norm", FR_F32, N_EMBD, 1);
        W("attn_q", FR_Q4_1, N_EMBD, N_EMBD);
        W("attn_k", FR_Q4_1, N_EMBD, kv);
        W("attn_v", FR_Q8_0, N_EMBD, kv);
        W("attn_output", FR_Q8_0, N_EMBD, N_EMBD);
        W("ffn_norm", FR_F32, N_EMBD, 1);
        W("ffn_gate", FR_Q8_0, N_EMBD, N_FF);
        W("ffn_up", FR_Q4_1, N_EMBD, N_FF);
        W("ffn_down", FR_Q8_0, N_FF, N_EMBD);
#undef W
    }
    uint8_t *buf = gb_build(b, size);
    gb_free(b);
    return buf;
}

/* Writes bytes to a new temporary file; the path is static. */
static const char *write_tmp(const uint8_t *buf, size_t size) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/frugal-faults-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    bool ok = write(fd, buf, size) == (ssize_t)size;
    close(fd);
    if (!ok) {
        unlink(path);
        return NULL;
    }
    return path;
}

/* The model file, written once per test. */
static const char *model_file(void) {
    size_t size;
    uint8_t *buf = tiny_model(&size);
    const char *path = write_tmp(buf, size);
    free(buf);
    return path;
}

/* The model file, loaded (and the file removed). */
static frugal_status load_tiny_model(frugal_model **m) {
    const char *path = model_file();
    if (!path) return FRUGAL_ERR_IO;
    frugal_status st = frugal_model_load(path, m);
    unlink(path);
    return st;
}

static bool out_of_memory(void) { return strstr(frugal_last_error(), "out of memory") != NULL; }

/* ---- chains -------------------------------------------------------------- */

/* load + context (n_threads threads) + a 3-token prefill with all logits +
 * one decode step. Frees everything whatever happens. */
static frugal_status load_and_eval(const char *path, int n_threads) {
    frugal_model *m = (frugal_model *)&m;
    frugal_ctx *c = NULL;
    frugal_status st = frugal_model_load(path, &m);
    if (st) return m == NULL ? st : FRUGAL_ERR_INVALID_ARG;   /* *out must be NULL */
    frugal_ctx_params p = frugal_ctx_default_params();
    p.n_ctx = 16;
    p.n_threads = n_threads;
    st = frugal_ctx_new(m, &p, &c);
    const int32_t toks[3] = { 1, 100, 262 };
    if (!st) st = frugal_eval(c, toks, 3, true);
    if (!st) st = frugal_eval(c, toks + 1, 1, false);
    if (!st && !frugal_logits(c, -1)) st = FRUGAL_ERR_INVALID_ARG;
    frugal_ctx_free(c);
    frugal_model_free(m);
    return st;
}

/* What a client does with a loaded model besides evaluating. */
static frugal_status use_model(frugal_model *m) {
    static const char text[] = "<|im_start|>user\nthe thing is 123 h\xc3\xa9llo<|im_end|>";
    int32_t ids[128];
    int64_t n = frugal_tokenize(m, text, sizeof text - 1, ids, 128,
                                FRUGAL_TOKENIZE_PARSE_SPECIAL | FRUGAL_TOKENIZE_ADD_BOS);
    if (n < 0) return out_of_memory() ? FRUGAL_ERR_NOMEM : FRUGAL_ERR_INVALID_ARG;
    frugal_chat_msg msgs[2] = { { "system", "Be brief." }, { "user", "Hi" } };
    char *chat = NULL;
    frugal_status st = frugal_chat_apply(m, msgs, 2, true, &chat);
    if (st) return st;
    frugal_free(chat);
    frugal_sampler_params sp = frugal_sampler_default_params();
    frugal_sampler *s = NULL;
    if ((st = frugal_sampler_new(&sp, frugal_n_vocab(m), &s))) return st;
    frugal_json *j = NULL;
    if (!(st = frugal_json_new(m, true, &j))) st = frugal_sampler_set_json(s, j);
    frugal_json_free(j);
    frugal_sampler_free(s);
    if (st) return st;
    static const char schema[] = "{\"$defs\":{\"p\":{\"type\":\"object\",\"properties\":{\"k\":{\"enum\":[\"a\",1]},"
                                 "\"n\":{\"type\":[\"integer\",\"null\"]}},\"required\":[\"k\"]}},\"type\":\"array\","
                                 "\"items\":{\"$ref\":\"#/$defs/p\"}}";
    j = NULL;
    st = frugal_json_new_schema(m, schema, sizeof schema - 1, &j);
    frugal_json_free(j);
    if (st) return st;
    frugal_stream *stream = NULL;
    if ((st = frugal_stream_new(m, &stream))) return st;
    char out[256];
    for (int64_t i = 0; i < n && i < 128; i++) frugal_stream_push(stream, ids[i], out, sizeof out);
    frugal_stream_free(stream);
    return FRUGAL_OK;
}

/* Makes allocation 1, 2, ... fail in turn (all later ones failing too)
 * until the chain gets through; every failing run must be NOMEM with an
 * "out of memory" message. Sets n_allocs to the allocation count; a wrong
 * outcome fails the test. FAULTS_VERBOSE=1 prints the counts. */
#define FAULT_SWEEP(n_allocs, call)                                                      \
    do {                                                                                 \
        fr_alloc_fail_after(0);                                                          \
        frugal_status st0_ = (call);                                                     \
        long total_ = fr_alloc_count();                                                  \
        CHECK_MSG(st0_ == FRUGAL_OK, "without faults: status %d: %s", st0_,              \
                  frugal_last_error());                                                  \
        for (long i_ = 1; i_ <= total_ + 1; i_++) {                                      \
            fr_alloc_fail_after(i_);                                                     \
            frugal_status st_ = (call);                                                  \
            fr_alloc_fail_after(0);                                                      \
            if (i_ <= total_)                                                            \
                CHECK_MSG(st_ == FRUGAL_ERR_NOMEM && out_of_memory(),                    \
                          "allocation %ld of %ld failing: status %d (%s): %s", i_,       \
                          total_, st_, frugal_status_str(st_), frugal_last_error());     \
            else                                                                         \
                CHECK_MSG(st_ == FRUGAL_OK, "no allocation failing: status %d: %s", st_, \
                          frugal_last_error());                                          \
        }                                                                                \
        if (getenv("FAULTS_VERBOSE"))                                                    \
            fprintf(stderr, "  %ld allocations, each made to fail\n", total_);          \
        (n_allocs) = total_;                                                             \
    } while (0)

/* The tiny model written to a file for chains that load it (model_file's
 * buffer is reused, hence the copy); false when it cannot be written. */
static bool tiny_model_path(char p[64]) {
    const char *path = model_file();
    if (path) snprintf(p, 64, "%s", path);
    return path != NULL;
}

TEST(faults_every_allocation_of_load_ctx_eval) {
    char p[64];
    CHECK(tiny_model_path(p));
    long n = 0;
    FAULT_SWEEP(n, load_and_eval(p, 1));
    unlink(p);
    CHECK_MSG(n >= 30, "only %ld allocations: is fault injection wired up?", n);
}

TEST(faults_every_allocation_of_a_two_thread_context) {
    frugal_model *m = NULL;
    frugal_status st = load_tiny_model(&m);
    CHECK(st == FRUGAL_OK);
    frugal_ctx_params cp = frugal_ctx_default_params();
    cp.n_ctx = 8;
    cp.n_threads = 2;
    long n = 0;
    frugal_ctx *c = NULL;
#define CTX_CHAIN (c = NULL, st = frugal_ctx_new(m, &cp, &c), frugal_ctx_free(c), st)
    FAULT_SWEEP(n, CTX_CHAIN);
#undef CTX_CHAIN
    frugal_model_free(m);
    CHECK(n >= 10);
}

/* A model loaded for each run: its first JSON constraint builds the table
 * of the vocabulary that later ones share, and that build is swept too. */
static frugal_status load_and_use(const char *path) {
    frugal_model *m = NULL;
    frugal_status st = frugal_model_load(path, &m);
    if (!st) st = use_model(m);
    frugal_model_free(m);
    return st;
}

TEST(faults_every_allocation_of_tokenize_chat_sampler_stream) {
    char p[64];
    CHECK(tiny_model_path(p));
    long n = 0;
    FAULT_SWEEP(n, load_and_use(p));
    unlink(p);
    CHECK(n >= 35);
}

/* JSON mode over a model's vocabulary: tokens by the bytes they decode
 * to; control tokens never; the end of generation once the object is
 * complete. */
TEST(json_constraint_over_a_model_vocabulary) {
    frugal_model *m = NULL;
    frugal_status st = load_tiny_model(&m);
    CHECK(st == FRUGAL_OK);
    frugal_json *j = NULL;
    CHECK(frugal_json_new(m, true, &j) == FRUGAL_OK);
    int32_t open, close, space, start, end, x;
    CHECK(frugal_tokenize(m, "{", 1, &open, 1, 0) == 1 && frugal_tokenize(m, "}", 1, &close, 1, 0) == 1);
    CHECK(frugal_tokenize(m, " ", 1, &space, 1, 0) == 1 && frugal_tokenize(m, "x", 1, &x, 1, 0) == 1);
    CHECK(frugal_tokenize(m, "<|im_start|>", 12, &start, 1, FRUGAL_TOKENIZE_PARSE_SPECIAL) == 1);
    CHECK(frugal_tokenize(m, "<|im_end|>", 10, &end, 1, FRUGAL_TOKENIZE_PARSE_SPECIAL) == 1);
    CHECK(frugal_token_is_eog(m, end) && !frugal_token_is_eog(m, start));
    CHECK(frugal_json_allows(j, open) && frugal_json_allows(j, space) && !frugal_json_allows(j, x));
    CHECK(!frugal_json_allows(j, start) && !frugal_json_allows(j, end) && !frugal_json_allows(j, close));
    CHECK(!frugal_json_allows(j, frugal_n_vocab(m)) && !frugal_json_allows(j, -1));
    CHECK(frugal_json_accept(j, open) && !frugal_json_done(j) && frugal_json_accept(j, close));
    CHECK(frugal_json_done(j) && frugal_json_allows(j, end) && !frugal_json_allows(j, start));
    frugal_json_free(j);
    frugal_model_free(m);
}

typedef struct { frugal_model *m; frugal_json *j; frugal_status st; } json_new_job;

static void *new_json_on_a_thread(void *arg) {
    json_new_job *job = arg;
    job->st = frugal_json_new(job->m, true, &job->j);
    return NULL;
}

/* The vocabulary's table is built once per model, by the first constraint
 * (two threads at once: one table kept, the other freed, no leak), shared
 * by later ones, and freed with the model. */
TEST(json_constraints_of_a_model_share_one_table) {
    frugal_model *m = NULL;
    CHECK(load_tiny_model(&m) == FRUGAL_OK);
    CHECK(atomic_load(&m->json_vocab) == NULL);
    json_new_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (json_new_job){ m, NULL, FRUGAL_ERR_NOMEM };
        CHECK(pthread_create(&th[i], NULL, new_json_on_a_thread, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    const fr_json_vocab *table = atomic_load(&m->json_vocab);
    CHECK(table != NULL);
    for (int i = 0; i < 4; i++) CHECK(jobs[i].st == FRUGAL_OK && jobs[i].j);
    frugal_json *later = NULL;
    static const char integer[] = "{\"type\": \"integer\"}";
    CHECK(frugal_json_new_schema(m, integer, strlen(integer), &later) == FRUGAL_OK);
    CHECK(atomic_load(&m->json_vocab) == table);
    int32_t one;
    CHECK(frugal_tokenize(m, "1", 1, &one, 1, 0) == 1 && frugal_json_accept(later, one));
    for (int i = 0; i < 4; i++) frugal_json_free(jobs[i].j);
    frugal_json_free(later);
    frugal_model_free(m);
}

/* A budgeted context (scissorhands: score tracking, eviction, compaction)
 * fed one token at a time past its budget. */
static frugal_status budget_chain(frugal_model *m, int n_tokens, int *max_kv_tokens, size_t *kv_bytes) {
    frugal_ctx_params p = frugal_ctx_default_params();
    p.n_ctx = 4096; /* positions: far past the model's 128 */
    p.n_threads = 1;
    p.kv_budget = 64;
    p.kv_policy = FRUGAL_KV_POLICY_SCISSORHANDS;
    frugal_ctx *c = NULL;
    frugal_status st = frugal_ctx_new(m, &p, &c);
    for (int t = 0; t < n_tokens && !st; t++) {
        int32_t tok = 3 + (t * 7) % 200;
        st = frugal_eval(c, &tok, 1, false);
        if (!st && max_kv_tokens && frugal_ctx_kv_tokens(c) > *max_kv_tokens) *max_kv_tokens = frugal_ctx_kv_tokens(c);
        if (!st && kv_bytes && t == n_tokens / 4) kv_bytes[0] = frugal_ctx_kv_bytes(c);
        if (!st && kv_bytes && t > n_tokens / 4 && frugal_ctx_kv_bytes(c) > kv_bytes[1]) kv_bytes[1] = frugal_ctx_kv_bytes(c);
    }
    frugal_ctx_free(c);
    return st;
}

TEST(faults_budgeted_cache_runs_past_training_context_in_bounded_memory) {
    frugal_model *m = NULL;
    frugal_status st = load_tiny_model(&m);
    CHECK(st == FRUGAL_OK);
    int most = 0;
    size_t bytes[2] = { 0, 0 };
    CHECK(budget_chain(m, 1200, &most, bytes) == FRUGAL_OK); /* 1200 positions; trained on 128 */
    CHECK_MSG(most <= 64, "%d tokens held", most);
    /* pages with holes: at most twice the budget's pages, plus the open one */
    CHECK_MSG(bytes[1] <= bytes[0] * 3 / 2, "KV memory grew from %zu to %zu bytes", bytes[0], bytes[1]);
    long n = 0;
    FAULT_SWEEP(n, budget_chain(m, 90, NULL, NULL));
    CHECK(n >= 10);
    frugal_model_free(m);
}

/* ---- truncated files and I/O errors -------------------------------------- */

static int add_cut(size_t *cuts, int n, int cap, uint64_t at, size_t size) {
    if (n < cap && at < size) cuts[n++] = (size_t)at;
    return n;
}

TEST(faults_file_cut_at_every_section_boundary) {
    size_t size;
    uint8_t *buf = tiny_model(&size);
    gguf_file *g = NULL;
    CHECK(gguf_parse(buf, size, &g) == FRUGAL_OK);
    enum { CAP = 1024 };
    size_t *cuts = malloc(CAP * sizeof *cuts);
    int n = 0;
    const size_t header[] = { 0, 1, 4, 8, 16, 23, 24 };
    for (size_t i = 0; i < sizeof header / sizeof header[0]; i++)
        n = add_cut(cuts, n, CAP, header[i], size);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        uint64_t key = (uint64_t)((const uint8_t *)kv->key.ptr - buf);
        uint64_t value = (uint64_t)((const uint8_t *)kv->data - buf);
        n = add_cut(cuts, n, CAP, key - 8, size);              /* before the key */
        n = add_cut(cuts, n, CAP, key + 1, size);              /* inside the key */
        n = add_cut(cuts, n, CAP, key + kv->key.len, size);    /* before the type */
        n = add_cut(cuts, n, CAP, key + kv->key.len + 2, size);
        n = add_cut(cuts, n, CAP, value, size);                /* before the value */
        n = add_cut(cuts, n, CAP, value + 1, size);
        if (kv->type == GGUF_ARRAY) {
            n = add_cut(cuts, n, CAP, value - 12, size);       /* before the count */
            n = add_cut(cuts, n, CAP, value - 4, size);
        }
        if (kv->strs && kv->type == GGUF_ARRAY && kv->arr_n > 0) {
            const gguf_str *last = &kv->strs[kv->arr_n - 1];
            n = add_cut(cuts, n, CAP, (uint64_t)((const uint8_t *)last->ptr - buf), size);
            n = add_cut(cuts, n, CAP, (uint64_t)((const uint8_t *)last->ptr - buf) + last->len - 1, size);
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        uint64_t name = (uint64_t)((const uint8_t *)t->name.ptr - buf);
        uint64_t data = g->data_offset + t->offset;
        n = add_cut(cuts, n, CAP, name - 8, size);
        n = add_cut(cuts, n, CAP, name + t->name.len, size);          /* before n_dims */
        n = add_cut(cuts, n, CAP, name + t->name.len + 4 + 8 * t->n_dims, size); /* type */
        n = add_cut(cuts, n, CAP, name + t->name.len + 8 + 8 * t->n_dims, size); /* offset */
        n = add_cut(cuts, n, CAP, data, size);
        n = add_cut(cuts, n, CAP, data + 1, size);
        n = add_cut(cuts, n, CAP, data + t->nbytes - 1, size);
    }
    n = add_cut(cuts, n, CAP, g->data_offset - 1, size);   /* in the padding */
    n = add_cut(cuts, n, CAP, size - 1, size);
    gguf_close(g);
    CHECK(n > 100);
    if (getenv("FAULTS_VERBOSE")) fprintf(stderr, "  %d cuts of a %zu-byte file\n", n, size);

    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        const char *path = write_tmp(buf, cuts[i]);
        CHECK(path != NULL);
        frugal_model *m = (frugal_model *)&m;
        frugal_status st = frugal_model_load(path, &m);
        unlink(path);
        const char *msg = frugal_last_error();
        ok = st == FRUGAL_ERR_FORMAT && m == NULL &&
             (strstr(msg, "truncated") || strstr(msg, "past the end"));
        if (!ok) fprintf(stderr, "  cut at %zu of %zu: status %d: %s\n", cuts[i], size, st, msg);
        if (st == FRUGAL_OK) frugal_model_free(m);
    }
    free(cuts);
    const char *path = write_tmp(buf, size);   /* and uncut it loads */
    free(buf);
    CHECK(ok);
    CHECK(path != NULL);
    char p[64];
    snprintf(p, sizeof p, "%s", path);
    frugal_status st = load_and_eval(p, 1);
    unlink(p);
    CHECK_MSG(st == FRUGAL_OK, "the uncut file: %s", frugal_last_error());
}

TEST(faults_unreadable_paths_are_io_errors) {
    frugal_model *m = (frugal_model *)&m;
    CHECK(frugal_model_load("/nonexistent/frugal/model.gguf", &m) == FRUGAL_ERR_IO && m == NULL);
    CHECK(strstr(frugal_last_error(), "/nonexistent/frugal/model.gguf"));
    m = (frugal_model *)&m;
    CHECK(frugal_model_load("/tmp", &m) == FRUGAL_ERR_IO && m == NULL);
    CHECK(strstr(frugal_last_error(), "not a regular file"));
    const char *path = write_tmp((const uint8_t *)"", 0);
    CHECK(path != NULL);
    m = (frugal_model *)&m;
    frugal_status st = frugal_model_load(path, &m);
    unlink(path);
    CHECK(st == FRUGAL_ERR_FORMAT && m == NULL && strstr(frugal_last_error(), "truncated"));
    CHECK(frugal_model_load(NULL, &m) == FRUGAL_ERR_INVALID_ARG);
}

/* ---- hostile numbers ------------------------------------------------------ */

/* A model with NaN weights yields NaN logits: top-k's quickselect once ran
 * off the end of the candidate array (its comparison was not an order with
 * NaN). Found by fuzz_gguf; fuzz/regress/fuzz_gguf/sampler-nan-logits-*. */
TEST(faults_nan_and_inf_logits_sample_inside_the_vocabulary) {
    enum { N = 300 };
    float *logits = malloc(N * sizeof *logits);   /* exact size: ASan sees overreads */
    frugal_sampler_params sp = frugal_sampler_default_params();
    sp.seed = 3;
    sp.repeat_penalty = 1.3f;
    for (int pattern = 0; pattern < 4; pattern++) {
        for (int i = 0; i < N; i++) {
            float v = (float)((i * 37) % 101) / 10.0f;
            logits[i] = pattern == 0 ? NAN
                      : pattern == 1 ? (i % 3 ? NAN : v)
                      : pattern == 2 ? (i % 2 ? INFINITY : -INFINITY)
                      : (i % 5 ? v : NAN);
        }
        for (int k = 0; k <= N; k += 40) {
            sp.top_k = k;
            frugal_sampler *s = NULL;
            CHECK(frugal_sampler_new(&sp, N, &s) == FRUGAL_OK);
            frugal_sampler_accept(s, 5);
            for (int r = 0; r < 4; r++) {
                int32_t tok = frugal_sampler_sample(s, logits);
                CHECK_MSG(tok >= 0 && tok < N, "pattern %d, top-k %d: token %d", pattern, k, tok);
            }
            frugal_sampler_free(s);
        }
    }
    free(logits);
}
