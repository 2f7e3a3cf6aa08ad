/*
 * model.c - loading a model (map the GGUF file, build the tokenizer, let
 * the architecture bind its weights) and describing it (frugal info).
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "chat.h"
#include "json_mode.h"
#include "model.h"
#include "quant.h"

typedef frugal_status (*arch_load_fn)(frugal_model *m);

static const struct { const char *name; arch_load_fn load; } architectures[] = {
    { "llama", fr_arch_llama_load },
    { "gemma3", fr_arch_gemma3_load },
};

#define HP_MAX (1 << 24)

/* "<arch>.<suffix>" into buf. */
static const char *hp_key(const frugal_model *m, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", m->arch, suffix);
    return buf;
}

frugal_status fr_hp_u32(const frugal_model *m, const char *suffix, bool required, int *out) {
    char key[128];
    uint32_t v;
    hp_key(m, suffix, key, sizeof key);
    if (!gguf_find(m->gguf, key))
        return required ? fr_error(FRUGAL_ERR_FORMAT, "missing key %s", key) : FRUGAL_OK;
    frugal_status st = gguf_get_u32(m->gguf, key, &v);
    if (st) return st;
    if (v == 0 || v > HP_MAX) return fr_error(FRUGAL_ERR_FORMAT, "key %s: value %u out of range 1..%d", key, v, HP_MAX);
    *out = (int)v;
    return FRUGAL_OK;
}

frugal_status fr_hp_f32(const frugal_model *m, const char *suffix, bool required, float *out) {
    char key[128];
    float v;
    hp_key(m, suffix, key, sizeof key);
    if (!gguf_find(m->gguf, key))
        return required ? fr_error(FRUGAL_ERR_FORMAT, "missing key %s", key) : FRUGAL_OK;
    frugal_status st = gguf_get_f32(m->gguf, key, &v);
    if (st) return st;
    if (!(v > 0) || !isfinite(v)) return fr_error(FRUGAL_ERR_FORMAT, "key %s: value %g must be positive", key, v);
    *out = v;
    return FRUGAL_OK;
}

frugal_status fr_read_common_hparams(frugal_model *m) {
    fr_hparams *hp = &m->hp;
    frugal_status st;
    if ((st = fr_hp_u32(m, "block_count", true, &hp->n_layer)) ||
        (st = fr_hp_u32(m, "embedding_length", true, &hp->n_embd)) ||
        (st = fr_hp_u32(m, "feed_forward_length", true, &hp->n_ff)) ||
        (st = fr_hp_u32(m, "attention.head_count", true, &hp->n_head)) ||
        (st = fr_hp_u32(m, "context_length", true, &hp->n_ctx_train)))
        return st;
    hp->n_head_kv = hp->n_head;
    if ((st = fr_hp_u32(m, "attention.head_count_kv", false, &hp->n_head_kv))) return st;
    hp->head_dim = hp->n_embd / hp->n_head;
    hp->n_vocab = fr_tokenizer_n_vocab(m->tok);
    return FRUGAL_OK;
}

/* Collects the layers' distinct RoPE bases (forward.c computes one cos/sin
 * table per base per batch). */
static frugal_status index_rope_bases(frugal_model *m) {
    for (int l = 0; l < m->hp.n_layer; l++) {
        fr_layer *L = &m->layers[l];
        int k = 0;
        while (k < m->n_rope_bases && m->rope_bases[k] != L->rope_theta) k++;
        if (k == m->n_rope_bases) {
            if (k == FR_MAX_ROPE_BASES) return fr_error(FRUGAL_ERR_UNSUPPORTED, "more than %d RoPE bases", k);
            m->rope_bases[m->n_rope_bases++] = L->rope_theta;
        }
        L->rope_table = k;
    }
    return FRUGAL_OK;
}

frugal_status fr_check_hparams(frugal_model *m) {
    const fr_hparams *hp = &m->hp;
    if (hp->n_head % hp->n_head_kv != 0)
        return fr_error(FRUGAL_ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                        hp->n_head, hp->n_head_kv);
    if (hp->head_dim < 2 || hp->head_dim > 512 || hp->head_dim % 2)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "head size %d (supported: even, up to 512)", hp->head_dim);
    if (hp->rope_dim < 2 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return fr_error(FRUGAL_ERR_FORMAT, "rope dimension %d invalid for head size %d", hp->rope_dim, hp->head_dim);
    return index_rope_bases(m);
}

frugal_status fr_bind_common(frugal_model *m) {
    const fr_hparams *hp = &m->hp;
    frugal_status st;
    if ((st = fr_bind(m, &m->tok_embd, hp->n_embd, hp->n_vocab, true, "token_embd.weight")) ||
        (st = fr_bind(m, &m->output_norm, hp->n_embd, 1, true, "output_norm.weight")) ||
        (st = fr_bind(m, &m->output, hp->n_embd, hp->n_vocab, false, "output.weight")))
        return st;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    m->layers = fr_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the layer table");
    return FRUGAL_OK;
}

frugal_status fr_bind_block(frugal_model *m, int i) {
    const fr_hparams *hp = &m->hp;
    fr_layer *L = &m->layers[i];
    int64_t d = hp->n_embd, kv = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim;
    frugal_status st;
    if ((st = fr_bind(m, &L->attn_norm, d, 1, true, "blk.%d.attn_norm.weight", i)) ||
        (st = fr_bind(m, &L->wq, d, qd, true, "blk.%d.attn_q.weight", i)) ||
        (st = fr_bind(m, &L->wk, d, kv, true, "blk.%d.attn_k.weight", i)) ||
        (st = fr_bind(m, &L->wv, d, kv, true, "blk.%d.attn_v.weight", i)) ||
        (st = fr_bind(m, &L->wo, qd, d, true, "blk.%d.attn_output.weight", i)) ||
        (st = fr_bind(m, &L->ffn_norm, d, 1, true, "blk.%d.ffn_norm.weight", i)) ||
        (st = fr_bind(m, &L->w_gate, d, ff, true, "blk.%d.ffn_gate.weight", i)) ||
        (st = fr_bind(m, &L->w_up, d, ff, true, "blk.%d.ffn_up.weight", i)) ||
        (st = fr_bind(m, &L->w_down, ff, d, true, "blk.%d.ffn_down.weight", i)))
        return st;
    return FRUGAL_OK;
}

frugal_status fr_bind(const frugal_model *m, fr_weight *w, int64_t cols, int64_t rows,
                      bool required, const char *fmt, ...) {
    char name[GGUF_MAX_NAME + 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    memset(w, 0, sizeof *w);
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) return required ? fr_error(FRUGAL_ERR_FORMAT, "missing tensor %s", name) : FRUGAL_OK;
    int64_t want_rows = rows, got_rows = t->n_dims >= 2 ? t->ne[1] : 1;
    if (t->ne[0] != cols || got_rows != want_rows || t->ne[2] != 1 || t->ne[3] != 1)
        return fr_error(FRUGAL_ERR_FORMAT,
                        "tensor %s has shape [%" PRId64 ", %" PRId64 "], expected [%" PRId64 ", %" PRId64 "]",
                        name, t->ne[0], got_rows, cols, rows);
    const fr_type_traits *tt = fr_traits(t->type);
    if (!tt || !tt->dequant)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "tensor %s has type %s, which frugal does not support yet",
                        name, tt ? tt->name : "unknown");
    /* float elements are loaded as such, and general.alignment may be 1 */
    if (tt->blck == 1 && (uintptr_t)t->data % tt->bytes != 0)
        return fr_error(FRUGAL_ERR_FORMAT, "tensor %s: %s data at file offset %zu is not aligned to %zu bytes",
                        name, tt->name, (size_t)((const uint8_t *)t->data - m->gguf->base), tt->bytes);
    if (rows == 1 && t->type != 0)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "tensor %s: vectors must be F32, found %s", name, tt->name);
    if (rows > 1 && !tt->dot)
        return fr_error(FRUGAL_ERR_UNSUPPORTED, "tensor %s: no matmul kernel for type %s", name, tt->name);
    w->data = t->data;
    w->type = t->type;
    w->cols = cols;
    w->rows = rows;
    w->row_bytes = fr_row_bytes(t->type, cols);
    return FRUGAL_OK;
}

static char *dup_str_key(const gguf_file *g, const char *key, const char *fallback) {
    gguf_str s;
    if (gguf_find(g, key) && gguf_get_str(g, key, &s) == FRUGAL_OK) return fr_strndup(s.ptr, s.len);
    return fr_strndup(fallback, strlen(fallback));
}

static frugal_status load_chat_template(frugal_model *m) {
    gguf_str s = { "", 0 };
    if (gguf_find(m->gguf, "tokenizer.chat_template")) {
        frugal_status st = gguf_get_str(m->gguf, "tokenizer.chat_template", &s);
        if (st) return st;
    }
    m->chat_kind = fr_chat_detect(s.ptr, s.len);
    /* some Gemma conversions carry no template; the architecture implies it */
    if (m->chat_kind == FR_CHAT_NONE && !strcmp(m->arch, "gemma3")) m->chat_kind = FR_CHAT_GEMMA;
    m->chat_default_system = fr_chat_default_system(s.ptr, s.len);
    return FRUGAL_OK;
}

static frugal_status load_arch(frugal_model *m) {
    for (size_t i = 0; i < sizeof architectures / sizeof architectures[0]; i++)
        if (!strcmp(m->arch, architectures[i].name)) return architectures[i].load(m);
    return fr_error(FRUGAL_ERR_UNSUPPORTED, "architecture '%s' is not supported (supported: llama, gemma3)",
                    m->arch);
}

/* How a matrix goes into the weight arena: rearranged for the selected
 * level's kernels (quant.h, fr_pack_q4_1), its whole groups of 16 rows
 * (the last rows % 16 are read where they were, a handful per token);
 * copied as it is (a mapped file's matrix with no packed layout); or not
 * at all (a file read into memory keeps its unpacked matrices where they
 * are). A tied output matrix is packed like any other: the embedding
 * table goes on reading its rows where they were, a row a token (from a
 * mapped file, its pages come back from the page cache as they are
 * read). */
enum { PLACE_NONE, PLACE_PACK, PLACE_COPY };
static int placement(const frugal_model *m, const fr_weight *w) {
    const fr_type_traits *tt = fr_traits(w->type);
    if (!w->data || w->rows < 16) return PLACE_NONE;
    if (tt && tt->pack) return PLACE_PACK;
    return m->gguf->mapped ? PLACE_COPY : PLACE_NONE;
}

/* Rows of w that go into the arena. */
static int64_t placed_rows(const frugal_model *m, const fr_weight *w) {
    int place = placement(m, w);
    return place == PLACE_PACK ? w->rows / 16 * 16 : place == PLACE_COPY ? w->rows : 0;
}

/* Bytes matrix w takes in the arena, 64-aligned. */
static size_t placed_size(const frugal_model *m, const fr_weight *w) {
    return ((size_t)placed_rows(m, w) * w->row_bytes + 63) & ~(size_t)63;
}

static void count_placed(frugal_model *m, fr_weight *w) { m->placed_total += placed_size(m, w); }

/* Lets the kernel drop the pages of the mapped file wholly inside
 * [p, p + n), which are no longer read (they come back from the file if
 * anything does). */
static void drop_mapped(const frugal_model *m, const void *p, size_t n) {
    if (!m->gguf->mapped) return;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096, lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(page - 1);
    if (lo < hi) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Puts a matrix in its place in the arena and drops its mapped pages. It
 * goes a few MiB at a time (whole groups of 16 rows when packed: a group
 * starts where it did in the original), so that a large matrix is never
 * resident twice (a tied output matrix is most of a small model). */
#define PIECE ((size_t)4 << 20)
static void place_weight(frugal_model *m, fr_weight *w) {
    size_t size = (size_t)placed_rows(m, w) * w->row_bytes, bytes = placed_size(m, w);
    const uint8_t *orig = w->data;
    if (!bytes || !m->placed_next) return;
    bool pack = placement(m, w) == PLACE_PACK;
    size_t piece = pack ? FR_MAX(PIECE / (16 * w->row_bytes), 1) * 16 * w->row_bytes : PIECE;
    for (size_t o = 0; o < size; o += piece) {
        size_t n = FR_MIN(piece, size - o);
        if (pack)
            fr_traits(w->type)->pack(w->cols, orig + o, w->row_bytes, (int64_t)(n / w->row_bytes), m->placed_next + o);
        else
            memcpy(m->placed_next + o, orig + o, n);
        drop_mapped(m, orig + o, n);
    }
    drop_mapped(m, orig, size); /* the pages that straddled two pieces */
    if (pack)
        w->packed = m->placed_next;
    else
        w->data = m->placed_next;
    m->placed_next += bytes;
}

/* fn on the matrices a token reads: every layer's, and the output matrix
 * (tied and copied: the embedding table, which then moves with it). */
static void each_matrix(frugal_model *m, void (*fn)(frugal_model *, fr_weight *)) {
    for (int l = 0; m->layers && l < m->hp.n_layer; l++) {
        fr_layer *L = &m->layers[l];
        fr_weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) fn(m, ws[i]);
    }
    bool tied = m->output.data == m->tok_embd.data;
    fn(m, &m->output);
    if (tied) m->tok_embd.data = m->output.data;
}

/* The matrices share one arena on 2 MiB pages (transparent huge pages,
 * where the kernel grants them): decode streams every matrix once a
 * token, and on 4 KiB pages each page was a TLB miss and a new start for
 * the hardware prefetcher; on huge pages the products of a decode read
 * ~9 % faster. Out of memory leaves every matrix where it was: the
 * kernels on the original rows give the same bits. */
#define HUGE_PAGE ((size_t)2 << 20)
static void place_weights(frugal_model *m) {
    each_matrix(m, count_placed);
    if (!m->placed_total) return;
    size_t span = (m->placed_total + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    m->placed_mem = fr_malloc(span + HUGE_PAGE);
    if (!m->placed_mem) return;
    m->placed_next = (uint8_t *)(((uintptr_t)m->placed_mem + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
#ifdef MADV_HUGEPAGE
    (void)madvise(m->placed_next, span, MADV_HUGEPAGE);
#endif
    each_matrix(m, place_weight);
}

frugal_status frugal_model_load(const char *path, frugal_model **out) {
    if (!path || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "model path and output are required");
    *out = NULL;
    fr_clear_error();
    frugal_model *m = fr_calloc(1, sizeof *m);
    if (!m) return fr_error(FRUGAL_ERR_NOMEM, "out of memory loading model");
    atomic_init(&m->json_vocab, NULL);
    frugal_status st = gguf_open(path, &m->gguf);
    if (st) goto fail;
    gguf_str arch_s; /* a wrong-typed architecture is reported as such, not as missing */
    if (gguf_find(m->gguf, "general.architecture") &&
        (st = gguf_get_str(m->gguf, "general.architecture", &arch_s)))
        goto fail;
    m->arch = dup_str_key(m->gguf, "general.architecture", "");
    m->name = dup_str_key(m->gguf, "general.name", "");
    if (!m->arch || !m->name) { st = fr_error(FRUGAL_ERR_NOMEM, "out of memory loading model"); goto fail; }
    if (!m->arch[0]) { st = fr_error(FRUGAL_ERR_FORMAT, "missing key general.architecture"); goto fail; }
    if ((st = fr_tokenizer_load(m->gguf, &m->tok))) goto fail;
    if ((st = load_arch(m))) goto fail;
    if ((st = load_chat_template(m))) goto fail;
    m->isa = fr_kernels_init_from_env();
    place_weights(m);
    if ((st = fr_kv_pool_new(fr_kv_f16_page_bytes(m->hp.n_head_kv * m->hp.head_dim), &m->kv_pool))) {
        if (st != FRUGAL_ERR_INVALID_ARG) goto fail;
        fr_clear_error(); /* pages too large for a slab: they come from fr_malloc */
    }
    *out = m;
    return FRUGAL_OK;
fail:
    frugal_model_free(m);
    return st;
}

void frugal_model_free(frugal_model *m) {
    if (!m) return;
    fr_kv_pool_free(m->kv_pool);
    fr_json_vocab_free(atomic_load(&m->json_vocab));
    fr_tokenizer_free(m->tok);
    fr_free(m->placed_mem);
    gguf_close(m->gguf);
    fr_free(m->layers);
    fr_free(m->arch);
    fr_free(m->name);
    fr_free(m->chat_default_system);
    fr_free(m);
}

void frugal_model_get_info(const frugal_model *m, frugal_model_info *info) {
    const fr_hparams *hp = &m->hp;
    memset(info, 0, sizeof *info);
    info->arch = m->arch;
    info->name = m->name;
    info->n_layer = hp->n_layer;
    info->n_embd = hp->n_embd;
    info->n_ff = hp->n_ff;
    info->n_head = hp->n_head;
    info->n_head_kv = hp->n_head_kv;
    info->head_dim = hp->head_dim;
    info->n_vocab = hp->n_vocab;
    info->n_ctx_train = hp->n_ctx_train;
    info->rope_theta = hp->rope_theta;
    info->norm_eps = hp->norm_eps;
    info->tokenizer_model = fr_tokenizer_model(m->tok);
    info->tokenizer_pre = fr_tokenizer_pre(m->tok);
    info->chat_template = fr_chat_name(m->chat_kind);
    info->bos_id = fr_tokenizer_bos(m->tok);
    info->eos_id = fr_tokenizer_eos(m->tok);
    info->add_bos = fr_tokenizer_add_bos(m->tok);
    info->file_bytes = m->gguf->size;
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const gguf_tensor *t = &m->gguf->tensors[i];
        info->weight_bytes += t->nbytes;
        info->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
}

int frugal_model_meta_count(const frugal_model *m) { return (int)m->gguf->n_kv; }

/* Appends printf output to buf at *len, never past cap. */
static void appendf(char *buf, size_t cap, size_t *len, const char *fmt, ...) FR_PRINTF(4, 5);
static void appendf(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0) *len = FR_MIN(cap - 1, *len + (size_t)n);
}

static void format_scalar(uint32_t type, const void *p, char *buf, size_t cap, size_t *len) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } v;
    static const size_t sizes[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
    if (type >= GGUF_VTYPE_COUNT || !sizes[type]) return;
    memcpy(&v, p, sizes[type]);
    switch (type) {
    case GGUF_U8: appendf(buf, cap, len, "%u", v.u8); break;
    case GGUF_I8: appendf(buf, cap, len, "%d", v.i8); break;
    case GGUF_U16: appendf(buf, cap, len, "%u", v.u16); break;
    case GGUF_I16: appendf(buf, cap, len, "%d", v.i16); break;
    case GGUF_U32: appendf(buf, cap, len, "%u", v.u32); break;
    case GGUF_I32: appendf(buf, cap, len, "%d", v.i32); break;
    case GGUF_F32: appendf(buf, cap, len, "%g", v.f32); break;
    case GGUF_BOOL: appendf(buf, cap, len, "%s", v.u8 ? "true" : "false"); break;
    case GGUF_U64: appendf(buf, cap, len, "%" PRIu64, v.u64); break;
    case GGUF_I64: appendf(buf, cap, len, "%" PRId64, v.i64); break;
    case GGUF_F64: appendf(buf, cap, len, "%g", v.f64); break;
    }
}

static void format_str(gguf_str s, char *buf, size_t cap, size_t *len, size_t max) {
    appendf(buf, cap, len, "\"");
    for (uint64_t i = 0; i < s.len && i < max; i++) {
        char c = s.ptr[i];
        if (c == '\n') appendf(buf, cap, len, "\\n");
        else if ((unsigned char)c < 0x20) appendf(buf, cap, len, "\\x%02x", (unsigned char)c);
        else appendf(buf, cap, len, "%c", c);
    }
    appendf(buf, cap, len, s.len > max ? "\"..." : "\"");
}

bool frugal_model_meta(const frugal_model *m, int i, const char **key, char *value, size_t cap) {
    if (i < 0 || (uint64_t)i >= m->gguf->n_kv || cap == 0) return false;
    const gguf_kv *kv = &m->gguf->kv[i];
    static _Thread_local char keybuf[256];
    snprintf(keybuf, sizeof keybuf, "%.*s", (int)FR_MIN(kv->key.len, 255), kv->key.ptr);
    *key = keybuf;
    size_t len = 0;
    value[0] = 0;
    if (kv->type == GGUF_STRING) {
        format_str(kv->strs[0], value, cap, &len, 200);
    } else if (kv->type == GGUF_ARRAY) {
        appendf(value, cap, &len, "[%s x %" PRIu64 "]", gguf_vtype_name(kv->arr_type), kv->arr_n);
        static const size_t sizes[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
        for (uint64_t j = 0; j < kv->arr_n && j < 5; j++) {
            appendf(value, cap, &len, j ? ", " : " ");
            if (kv->arr_type == GGUF_STRING) format_str(kv->strs[j], value, cap, &len, 40);
            else if (kv->arr_type < GGUF_VTYPE_COUNT && sizes[kv->arr_type])
                format_scalar(kv->arr_type, (const uint8_t *)kv->data + j * sizes[kv->arr_type], value, cap, &len);
        }
        if (kv->arr_n > 5) appendf(value, cap, &len, ", ...");
    } else {
        format_scalar(kv->type, kv->data, value, cap, &len);
    }
    return true;
}

int frugal_model_tensor_count(const frugal_model *m) { return (int)m->gguf->n_tensors; }

bool frugal_model_tensor(const frugal_model *m, int i, frugal_tensor_info *out) {
    if (i < 0 || (uint64_t)i >= m->gguf->n_tensors) return false;
    const gguf_tensor *t = &m->gguf->tensors[i];
    static _Thread_local char namebuf[GGUF_MAX_NAME + 1];
    snprintf(namebuf, sizeof namebuf, "%.*s", (int)t->name.len, t->name.ptr);
    const fr_type_traits *tt = fr_traits(t->type);
    out->name = namebuf;
    out->type = tt ? tt->name : "?";
    out->n_dims = (int)t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = t->ne[d];
    out->bytes = t->nbytes;
    out->offset = m->gguf->data_offset + t->offset;
    return true;
}
