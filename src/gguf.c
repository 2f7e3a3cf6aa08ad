/*
 * gguf.c - GGUF v2/v3 reader.
 *
 * Layout of a GGUF file (little-endian, no padding inside the metadata):
 *
 *   "GGUF"  u32 version  u64 n_tensors  u64 n_kv
 *   n_kv      x { string key, u32 value type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding up to general.alignment (default 32)
 *   tensor data: each tensor at data_offset + offset
 *
 * A string is a u64 byte count and the bytes (no NUL). An array value is a
 * u32 element type, a u64 count and the elements back to back. Version 2 has
 * the same layout as 3; version 1 (32-bit counts) is not read.
 *
 * The file may be damaged or hostile, so nothing in it is trusted: every
 * read goes through take(), which refuses to step past the end, and every
 * count or size is checked before it is used to allocate, multiply or
 * index. The first problem found ends the parse with FRUGAL_ERR_FORMAT (or
 * FRUGAL_ERR_UNSUPPORTED for well-formed things we do not read) and one
 * message saying what is wrong and where ("GGUF key general.name: ...",
 * "GGUF tensor blk.0.attn_q.weight: ...").
 *
 * The checks, in the order they happen:
 *   header   file shorter than any field; magic not "GGUF"; version 1
 *            (unsupported), a byte-swapped version (big-endian file,
 *            unsupported), any version other than 2 or 3;
 *            n_tensors > GGUF_MAX_TENSORS; n_kv > GGUF_MAX_KV
 *   keys     truncation anywhere; string length > GGUF_MAX_STRING or past
 *            the end of the file; empty key; value type unknown;
 *            bool not 0 or 1 (also in arrays); array element type unknown,
 *            nested arrays (unsupported); array count > GGUF_MAX_ARRAY or
 *            its elements past the end of the file (checked by division,
 *            so count * size cannot overflow); duplicate keys
 *   general.alignment   not a u32; 0 or not a power of two
 *   tensors  truncation anywhere; name empty, >= GGUF_MAX_NAME bytes or
 *            past the end of the file; n_dims 0 or > GGUF_MAX_DIMS;
 *            ne[i] <= 0; element count overflowing int64; type id unknown
 *            to quant.c (known but unsupported types pass: the model
 *            loader decides); ne[0] not a multiple of the block size; byte
 *            size overflowing 64 bits; offset not a multiple of the
 *            alignment; duplicate names; offset past the end of the file;
 *            data running past the end of the file; two tensors' data
 *            overlapping
 *
 * Nothing is copied: keys, strings, array elements and tensor data point
 * into the caller's buffer or the map. The only allocations are the file
 * struct, the key and tensor tables, one gguf_str table per string or
 * string array (so tokens can be indexed), and a scratch table for the
 * duplicate and overlap checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "gguf.h"
#include "quant.h"

/* Values are read with memcpy in host order and array/tensor pointers are
 * handed out raw, which is only right on a little-endian host. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define TRY(expr)                                 \
    do {                                          \
        frugal_status st_ = (expr);               \
        if (st_ != FRUGAL_OK) return st_;         \
    } while (0)

#define NO_ELEM UINT64_MAX

/* Bytes of one value of each fixed-size type; 0 for string and array. */
static const uint8_t scalar_size[GGUF_VTYPE_COUNT] = {
    [GGUF_U8] = 1, [GGUF_I8] = 1, [GGUF_U16] = 2, [GGUF_I16] = 2,
    [GGUF_U32] = 4, [GGUF_I32] = 4, [GGUF_F32] = 4, [GGUF_BOOL] = 1,
    [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

/* A cursor over the file bytes plus what is being read, for messages. */
typedef struct {
    const uint8_t *p;
    size_t size, pos;
    char where[96];    /* "header", "key general.name", "tensor output.weight" */
    uint64_t elem;     /* index of the array element being read, or NO_ELEM */
} reader;

/* ---- Errors ----------------------------------------------------------- */

static frugal_status vfail(const reader *r, frugal_status st, const char *fmt, va_list ap) {
    char msg[384], elem[40] = "";
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (r->elem != NO_ELEM) snprintf(elem, sizeof elem, " element %" PRIu64, r->elem);
    return fr_error(st, "GGUF %s%s: %s", r->where, elem, msg);
}

static frugal_status bad(const reader *r, const char *fmt, ...) FR_PRINTF(2, 3);
static frugal_status bad(const reader *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    frugal_status st = vfail(r, FRUGAL_ERR_FORMAT, fmt, ap);
    va_end(ap);
    return st;
}

static frugal_status unsupported(const reader *r, const char *fmt, ...) FR_PRINTF(2, 3);
static frugal_status unsupported(const reader *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    frugal_status st = vfail(r, FRUGAL_ERR_UNSUPPORTED, fmt, ap);
    va_end(ap);
    return st;
}

static frugal_status truncated(const reader *r, const char *what, size_t need) {
    return bad(r, "file truncated: %s needs %zu bytes at offset %zu, the file has %zu",
               what, need, r->pos, r->size);
}

static frugal_status nomem(const reader *r) {
    return fr_error(FRUGAL_ERR_NOMEM, "GGUF %s: out of memory", r->where);
}

/* Names the thing being read in later messages; long names are cut. */
static void set_where(reader *r, const char *what, gguf_str name) {
    int n = name.len > 64 ? 64 : (int)name.len;
    snprintf(r->where, sizeof r->where, "%s %.*s%s", what, n, name.ptr,
             name.len > 64 ? "..." : "");
}

/* ---- Reading primitives ----------------------------------------------- */

static size_t left(const reader *r) { return r->size - r->pos; }

/* The only place the cursor moves: refuses to go past the end. */
static bool take(reader *r, size_t n, const uint8_t **at) {
    if (n > left(r)) return false;
    *at = r->p + r->pos;
    r->pos += n;
    return true;
}

static frugal_status rd_u32(reader *r, uint32_t *v, const char *what) {
    const uint8_t *at;
    if (!take(r, 4, &at)) return truncated(r, what, 4);
    memcpy(v, at, 4);
    return FRUGAL_OK;
}

static frugal_status rd_u64(reader *r, uint64_t *v, const char *what) {
    const uint8_t *at;
    if (!take(r, 8, &at)) return truncated(r, what, 8);
    memcpy(v, at, 8);
    return FRUGAL_OK;
}

static frugal_status rd_i64(reader *r, int64_t *v, const char *what) {
    const uint8_t *at;
    if (!take(r, 8, &at)) return truncated(r, what, 8);
    memcpy(v, at, 8);
    return FRUGAL_OK;
}

static frugal_status rd_str(reader *r, gguf_str *s, const char *what) {
    uint64_t len;
    const uint8_t *at;
    if (!take(r, 8, &at)) {
        char field[48];
        snprintf(field, sizeof field, "%s length", what);
        return truncated(r, field, 8);
    }
    memcpy(&len, at, 8);
    if (len > GGUF_MAX_STRING)
        return bad(r, "%s length %" PRIu64 " is over the limit of %u bytes",
                   what, len, GGUF_MAX_STRING);
    if (!take(r, (size_t)len, &at))
        return bad(r, "%s length %" PRIu64 " runs past the end of the file (%zu bytes left)",
                   what, len, left(r));
    s->ptr = (const char *)at;
    s->len = len;
    return FRUGAL_OK;
}

/* ---- Header ----------------------------------------------------------- */

static uint32_t bswap32(uint32_t v) {
    return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
}

static frugal_status read_header(reader *r, gguf_file *g) {
    const uint8_t *m;
    snprintf(r->where, sizeof r->where, "header");
    if (!take(r, 4, &m)) return truncated(r, "magic", 4);
    if (memcmp(m, "GGUF", 4) != 0)
        return bad(r, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                   m[0], m[1], m[2], m[3]);
    TRY(rd_u32(r, &g->version, "version"));
    if (g->version == 1)
        return unsupported(r, "version 1 unsupported (re-convert the model to GGUF v3)");
    if (bswap32(g->version) == 2 || bswap32(g->version) == 3)
        return unsupported(r, "big-endian GGUF files are unsupported");
    if (g->version != 2 && g->version != 3)
        return bad(r, "unknown version %" PRIu32 " (expected 2 or 3)", g->version);
    TRY(rd_u64(r, &g->n_tensors, "tensor count"));
    TRY(rd_u64(r, &g->n_kv, "key/value count"));
    if (g->n_tensors > GGUF_MAX_TENSORS)
        return bad(r, "tensor count %" PRIu64 " is over the limit of %d",
                   g->n_tensors, GGUF_MAX_TENSORS);
    if (g->n_kv > GGUF_MAX_KV)
        return bad(r, "key/value count %" PRIu64 " is over the limit of %d", g->n_kv, GGUF_MAX_KV);
    return FRUGAL_OK;
}

/* ---- Key/value pairs -------------------------------------------------- */

static frugal_status read_scalar(reader *r, uint32_t type, const void **data) {
    const uint8_t *at;
    if (!take(r, scalar_size[type], &at)) return truncated(r, "value", scalar_size[type]);
    if (type == GGUF_BOOL && *at > 1) return bad(r, "bool value %u is not 0 or 1", *at);
    *data = at;
    return FRUGAL_OK;
}

static frugal_status read_string_value(reader *r, gguf_kv *kv) {
    kv->data = r->p + r->pos;
    kv->strs = fr_malloc(sizeof *kv->strs);
    if (!kv->strs) return nomem(r);
    return rd_str(r, kv->strs, "string");
}

static frugal_status read_string_array(reader *r, gguf_kv *kv) {
    /* Every string takes at least its 8-byte length: refuse counts the file
     * cannot hold before allocating a table for them. */
    if (kv->arr_n > left(r) / 8)
        return bad(r, "array of %" PRIu64 " strings runs past the end of the file (%zu bytes left)",
                   kv->arr_n, left(r));
    kv->strs = fr_malloc((size_t)kv->arr_n * sizeof *kv->strs);
    if (!kv->strs) return nomem(r);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        r->elem = i;
        TRY(rd_str(r, &kv->strs[i], "string"));
    }
    r->elem = NO_ELEM;
    return FRUGAL_OK;
}

static frugal_status read_array(reader *r, gguf_kv *kv) {
    const uint8_t *at;
    TRY(rd_u32(r, &kv->arr_type, "array element type"));
    TRY(rd_u64(r, &kv->arr_n, "array count"));
    if (kv->arr_type == GGUF_ARRAY) return unsupported(r, "nested arrays are unsupported");
    if (kv->arr_type >= GGUF_VTYPE_COUNT)
        return bad(r, "unknown array element type %" PRIu32, kv->arr_type);
    if (kv->arr_n > GGUF_MAX_ARRAY)
        return bad(r, "array count %" PRIu64 " is over the limit of %u", kv->arr_n, GGUF_MAX_ARRAY);
    kv->data = r->p + r->pos;
    if (kv->arr_type == GGUF_STRING) return read_string_array(r, kv);

    size_t esize = scalar_size[kv->arr_type];
    /* Divide first, so that count * esize cannot overflow. */
    if (kv->arr_n > left(r) / esize || !take(r, (size_t)kv->arr_n * esize, &at))
        return bad(r, "array of %" PRIu64 " %s runs past the end of the file (%zu bytes left)",
                   kv->arr_n, gguf_vtype_name(kv->arr_type), left(r));
    if (kv->arr_type == GGUF_BOOL) {
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            if (at[i] > 1) return bad(r, "bool array element %" PRIu64 " is %u, not 0 or 1", i, at[i]);
        }
    }
    return FRUGAL_OK;
}

static frugal_status read_kv(reader *r, gguf_kv *kv, uint64_t index) {
    snprintf(r->where, sizeof r->where, "key #%" PRIu64, index);
    TRY(rd_str(r, &kv->key, "key"));
    if (kv->key.len == 0) return bad(r, "empty key");
    set_where(r, "key", kv->key);
    TRY(rd_u32(r, &kv->type, "value type"));
    if (kv->type >= GGUF_VTYPE_COUNT) return bad(r, "unknown value type %" PRIu32, kv->type);
    if (kv->type == GGUF_ARRAY) return read_array(r, kv);
    if (kv->type == GGUF_STRING) return read_string_value(r, kv);
    return read_scalar(r, kv->type, &kv->data);
}

static frugal_status read_kvs(reader *r, gguf_file *g) {
    g->kv = fr_calloc((size_t)g->n_kv, sizeof *g->kv);
    if (!g->kv) return nomem(r);
    for (uint64_t i = 0; i < g->n_kv; i++) TRY(read_kv(r, &g->kv[i], i));
    return FRUGAL_OK;
}

/* ---- Duplicate and overlap checks (sort a table of pointers) ---------- */

static int cmp_str(gguf_str a, gguf_str b) {
    if (a.len != b.len) return a.len < b.len ? -1 : 1;
    return memcmp(a.ptr, b.ptr, (size_t)a.len);
}

static int cmp_key(const void *a, const void *b) {
    return cmp_str((*(gguf_kv *const *)a)->key, (*(gguf_kv *const *)b)->key);
}

static int cmp_name(const void *a, const void *b) {
    return cmp_str((*(gguf_tensor *const *)a)->name, (*(gguf_tensor *const *)b)->name);
}

static int cmp_offset(const void *a, const void *b) {
    uint64_t x = (*(gguf_tensor *const *)a)->offset, y = (*(gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Sorting makes the checks O(n log n): a hostile file with 65536 keys
 * would take seconds with a pairwise scan. */
static frugal_status check_unique_keys(reader *r, gguf_file *g) {
    if (g->n_kv < 2) return FRUGAL_OK;
    gguf_kv **t = fr_malloc((size_t)g->n_kv * sizeof *t);
    if (!t) return nomem(r);
    for (uint64_t i = 0; i < g->n_kv; i++) t[i] = &g->kv[i];
    qsort(t, (size_t)g->n_kv, sizeof *t, cmp_key);
    frugal_status st = FRUGAL_OK;
    for (uint64_t i = 1; i < g->n_kv && !st; i++) {
        if (cmp_str(t[i - 1]->key, t[i]->key) == 0) {
            set_where(r, "key", t[i]->key);
            st = bad(r, "duplicate key");
        }
    }
    fr_free(t);
    return st;
}

static frugal_status check_tensor_layout(reader *r, gguf_file *g) {
    if (g->n_tensors < 2) return FRUGAL_OK;
    gguf_tensor **t = fr_malloc((size_t)g->n_tensors * sizeof *t);
    if (!t) return nomem(r);
    size_t n = (size_t)g->n_tensors;
    for (size_t i = 0; i < n; i++) t[i] = &g->tensors[i];
    frugal_status st = FRUGAL_OK;
    qsort(t, n, sizeof *t, cmp_name);
    for (size_t i = 1; i < n && !st; i++) {
        if (cmp_str(t[i - 1]->name, t[i]->name) == 0) {
            set_where(r, "tensor", t[i]->name);
            st = bad(r, "duplicate tensor name");
        }
    }
    /* Both ends are within the file (place_tensors), so no overflow here. */
    qsort(t, n, sizeof *t, cmp_offset);
    for (size_t i = 1; i < n && !st; i++) {
        const gguf_tensor *a = t[i - 1], *b = t[i];
        if (a->offset + a->nbytes > b->offset) {
            set_where(r, "tensor", b->name);
            st = bad(r, "data [%" PRIu64 ", %" PRIu64 ") overlaps tensor %.*s [%" PRIu64 ", %" PRIu64 ")",
                     b->offset, b->offset + b->nbytes, (int)a->name.len, a->name.ptr,
                     a->offset, a->offset + a->nbytes);
        }
    }
    fr_free(t);
    return st;
}

/* ---- Alignment -------------------------------------------------------- */

static frugal_status read_alignment(reader *r, gguf_file *g) {
    const gguf_kv *kv = gguf_find(g, "general.alignment");
    uint32_t a;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!kv) return FRUGAL_OK;
    snprintf(r->where, sizeof r->where, "key general.alignment");
    if (kv->type != GGUF_U32)
        return bad(r, "alignment must be a u32, found %s", gguf_vtype_name(kv->type));
    memcpy(&a, kv->data, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return bad(r, "alignment %" PRIu32 " is not a power of two", a);
    g->alignment = a;
    return FRUGAL_OK;
}

/* ---- Tensor infos ----------------------------------------------------- */

/* Reads n_dims and ne[]; unused dims are 1. Fails if the element count
 * does not fit in int64. */
static frugal_status read_dims(reader *r, gguf_tensor *t) {
    int64_t count = 1;
    TRY(rd_u32(r, &t->n_dims, "dimension count"));
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return bad(r, "%" PRIu32 " dimensions (must be 1 to %d)", t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        TRY(rd_i64(r, &t->ne[d], "dimension"));
        if (t->ne[d] <= 0)
            return bad(r, "ne[%" PRIu32 "] = %" PRId64 " (must be positive)", d, t->ne[d]);
        if (t->ne[d] > INT64_MAX / count)
            return bad(r, "element count overflows (ne[%" PRIu32 "] = %" PRId64 ")", d, t->ne[d]);
        count *= t->ne[d];
    }
    return FRUGAL_OK;
}

/* Checks the type and computes nbytes = rows * bytes per row. */
static frugal_status size_tensor(reader *r, gguf_tensor *t) {
    const fr_type_traits *tt = fr_traits(t->type);
    if (!tt || tt->blck <= 0 || tt->bytes == 0)
        return bad(r, "unknown tensor type %" PRIu32, t->type);
    if (t->ne[0] % tt->blck != 0)
        return bad(r, "row length %" PRId64 " is not a multiple of the %s block size %" PRId64,
                   t->ne[0], tt->name, tt->blck);
    uint64_t blocks = (uint64_t)(t->ne[0] / tt->blck);
    uint64_t rows = (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);  /* fits: read_dims */
    if (blocks > UINT64_MAX / tt->bytes)
        return bad(r, "row size overflows 64 bits");
    uint64_t row_bytes = fr_row_bytes(t->type, t->ne[0]);
    if (row_bytes > UINT64_MAX / rows)
        return bad(r, "byte size overflows 64 bits");
    t->nbytes = row_bytes * rows;
    return FRUGAL_OK;
}

static frugal_status read_tensor_info(reader *r, gguf_file *g, uint64_t index) {
    gguf_tensor *t = &g->tensors[index];
    snprintf(r->where, sizeof r->where, "tensor #%" PRIu64, index);
    TRY(rd_str(r, &t->name, "tensor name"));
    if (t->name.len == 0) return bad(r, "empty tensor name");
    if (t->name.len >= GGUF_MAX_NAME)
        return bad(r, "tensor name is %" PRIu64 " bytes, the limit is %d",
                   t->name.len, GGUF_MAX_NAME - 1);
    set_where(r, "tensor", t->name);
    TRY(read_dims(r, t));
    TRY(rd_u32(r, &t->type, "tensor type"));
    TRY(size_tensor(r, t));
    TRY(rd_u64(r, &t->offset, "data offset"));
    if (t->offset % g->alignment != 0)
        return bad(r, "data offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                   t->offset, g->alignment);
    return FRUGAL_OK;
}

static frugal_status read_tensor_infos(reader *r, gguf_file *g) {
    g->tensors = fr_calloc((size_t)g->n_tensors, sizeof *g->tensors);
    if (!g->tensors) return nomem(r);
    for (uint64_t i = 0; i < g->n_tensors; i++) TRY(read_tensor_info(r, g, i));
    return FRUGAL_OK;
}

/* The data section starts after the infos, rounded up to the alignment;
 * every tensor must lie inside the file. */
static frugal_status place_tensors(reader *r, gguf_file *g) {
    g->data_offset = (r->pos + g->alignment - 1) / g->alignment * g->alignment;
    uint64_t avail = g->data_offset <= r->size ? r->size - g->data_offset : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        set_where(r, "tensor", t->name);
        if (t->offset > avail)
            return bad(r, "data offset %" PRIu64 " is past the end of the file "
                       "(data section has %" PRIu64 " bytes)", t->offset, avail);
        if (t->nbytes > avail - t->offset)
            return bad(r, "data (%" PRIu64 " bytes at offset %" PRIu64 ") runs past the end "
                       "of the file (data section has %" PRIu64 " bytes)",
                       t->nbytes, t->offset, avail);
        t->data = g->base + g->data_offset + t->offset;
    }
    return FRUGAL_OK;
}

/* ---- Parse, open, close ----------------------------------------------- */

static frugal_status parse(gguf_file *g) {
    reader r = { .p = g->base, .size = g->size, .pos = 0, .elem = NO_ELEM };
    TRY(read_header(&r, g));
    TRY(read_kvs(&r, g));
    TRY(check_unique_keys(&r, g));
    TRY(read_alignment(&r, g));
    TRY(read_tensor_infos(&r, g));
    TRY(place_tensors(&r, g));
    return check_tensor_layout(&r, g);
}

frugal_status gguf_parse(const void *buf, size_t size, gguf_file **out) {
    if (!out || (!buf && size)) return fr_error(FRUGAL_ERR_INVALID_ARG, "gguf_parse: NULL argument");
    *out = NULL;
    gguf_file *g = fr_calloc(1, sizeof *g);
    if (!g) return fr_error(FRUGAL_ERR_NOMEM, "GGUF: out of memory");
    g->base = buf;
    g->size = size;
    frugal_status st = parse(g);
    if (st != FRUGAL_OK) {
        gguf_close(g);
        return st;
    }
    *out = g;
    return FRUGAL_OK;
}

frugal_status gguf_open(const char *path, gguf_file **out) {
    if (!path || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fr_error(FRUGAL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fr_error(FRUGAL_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return fr_error(FRUGAL_ERR_IO, "cannot map %s: not a regular file of a mappable size", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {   /* mmap refuses length 0; the parser names the problem */
        close(fd);
        return gguf_parse(NULL, 0, out);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);   /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return fr_error(FRUGAL_ERR_IO, "cannot map %s: %s", path, strerror(e));
    frugal_status st = gguf_parse(map, size, out);
    if (st != FRUGAL_OK) {
        munmap(map, size);
        return st;
    }
    (*out)->mapped = true;
    return FRUGAL_OK;
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) fr_free(g->kv[i].strs);
    }
    fr_free(g->kv);
    fr_free(g->tensors);
    if (g->mapped) munmap((void *)g->base, g->size);
    fr_free(g);
}

/* ---- Lookups and typed getters ---------------------------------------- */

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

const char *gguf_vtype_name(uint32_t t) {
    static const char *const names[GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
        "u64", "i64", "f64",
    };
    return t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    if (!g || !g->kv || !key) return NULL;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    if (!g || !g->tensors || !name) return NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (gguf_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    }
    return NULL;
}

/* gguf_find that reports a missing key (the caller returns FORMAT). */
static const gguf_kv *need(const gguf_file *g, const char *key) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) fr_error(FRUGAL_ERR_FORMAT, "key %s: not found", key);
    return kv;
}

static frugal_status wrong_type(const char *key, const char *want, const gguf_kv *kv) {
    return fr_error(FRUGAL_ERR_FORMAT, "key %s: expected %s, found %s", key, want,
                    gguf_vtype_name(kv->type));
}

/* Any integer value as int64; *huge is set for a u64 above INT64_MAX.
 * Returns false for a value that is not an integer. */
static bool int_value(const gguf_kv *kv, int64_t *v, bool *huge) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32;
            int32_t i32; uint64_t u64; int64_t i64; } x;
    *huge = false;
    if (kv->type >= GGUF_VTYPE_COUNT || !scalar_size[kv->type]) return false;
    memcpy(&x, kv->data, scalar_size[kv->type]);
    switch (kv->type) {
    case GGUF_U8: *v = x.u8; return true;
    case GGUF_I8: *v = x.i8; return true;
    case GGUF_U16: *v = x.u16; return true;
    case GGUF_I16: *v = x.i16; return true;
    case GGUF_U32: *v = x.u32; return true;
    case GGUF_I32: *v = x.i32; return true;
    case GGUF_I64: *v = x.i64; return true;
    case GGUF_U64:
        *huge = x.u64 > INT64_MAX;
        *v = *huge ? INT64_MAX : (int64_t)x.u64;
        return true;
    default: return false;   /* f32, bool, f64 */
    }
}

static frugal_status get_int(const gguf_file *g, const char *key, int64_t lo, int64_t hi,
                             const char *tname, int64_t *out) {
    const gguf_kv *kv = need(g, key);
    int64_t v;
    bool huge;
    if (!kv) return FRUGAL_ERR_FORMAT;
    if (!int_value(kv, &v, &huge)) return wrong_type(key, "an integer", kv);
    if (huge || v < lo || v > hi) {
        char val[32];
        if (huge) snprintf(val, sizeof val, "above %" PRId64, INT64_MAX);
        else snprintf(val, sizeof val, "%" PRId64, v);
        return fr_error(FRUGAL_ERR_FORMAT, "key %s: value %s does not fit in %s", key, val, tname);
    }
    *out = v;
    return FRUGAL_OK;
}

frugal_status gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out) {
    int64_t v;
    TRY(get_int(g, key, 0, UINT32_MAX, "u32", &v));
    *out = (uint32_t)v;
    return FRUGAL_OK;
}

frugal_status gguf_get_i32(const gguf_file *g, const char *key, int32_t *out) {
    int64_t v;
    TRY(get_int(g, key, INT32_MIN, INT32_MAX, "i32", &v));
    *out = (int32_t)v;
    return FRUGAL_OK;
}

frugal_status gguf_get_f32(const gguf_file *g, const char *key, float *out) {
    const gguf_kv *kv = need(g, key);
    if (!kv) return FRUGAL_ERR_FORMAT;
    if (kv->type == GGUF_F32) {
        memcpy(out, kv->data, 4);
    } else if (kv->type == GGUF_F64) {
        double d;
        memcpy(&d, kv->data, 8);
        *out = (float)d;
    } else {
        return wrong_type(key, "a float", kv);
    }
    return FRUGAL_OK;
}

frugal_status gguf_get_bool(const gguf_file *g, const char *key, bool *out) {
    const gguf_kv *kv = need(g, key);
    if (!kv) return FRUGAL_ERR_FORMAT;
    if (kv->type != GGUF_BOOL) return wrong_type(key, "a bool", kv);
    *out = *(const uint8_t *)kv->data != 0;
    return FRUGAL_OK;
}

frugal_status gguf_get_str(const gguf_file *g, const char *key, gguf_str *out) {
    const gguf_kv *kv = need(g, key);
    if (!kv) return FRUGAL_ERR_FORMAT;
    if (kv->type != GGUF_STRING) return wrong_type(key, "a string", kv);
    *out = kv->strs[0];
    return FRUGAL_OK;
}

frugal_status gguf_get_arr(const gguf_file *g, const char *key, uint32_t elem_type,
                           const void **data, uint64_t *n) {
    const gguf_kv *kv = need(g, key);
    if (!kv) return FRUGAL_ERR_FORMAT;
    if (kv->type != GGUF_ARRAY || kv->arr_type != elem_type) {
        return fr_error(FRUGAL_ERR_FORMAT, "key %s: expected an array of %s, found %s%s", key,
                        gguf_vtype_name(elem_type), kv->type == GGUF_ARRAY ? "an array of " : "",
                        gguf_vtype_name(kv->type == GGUF_ARRAY ? kv->arr_type : kv->type));
    }
    *data = elem_type == GGUF_STRING ? (const void *)kv->strs : kv->data;
    *n = kv->arr_n;
    return FRUGAL_OK;
}
