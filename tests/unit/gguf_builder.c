/* gguf_builder.c - in-memory GGUF writer for tests; see gguf_builder.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf_builder.h"

enum { VT_U8 = 0, VT_I8, VT_U16, VT_I16, VT_U32, VT_I32, VT_F32, VT_BOOL,
       VT_STRING, VT_ARRAY, VT_U64, VT_I64, VT_F64 };

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

struct gb {
    char magic[4];
    uint32_t version, alignment;
    uint64_t n_kv, n_tensors;            /* real counts */
    bool n_kv_set, n_tensors_set;
    uint64_t n_kv_forced, n_tensors_forced;
    buf kv, ti, data;
};

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "gguf_builder: out of memory\n");
        abort();
    }
    return q;
}

static void put(buf *b, const void *p, size_t n) {
    if (n == 0) return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    if (p) memcpy(b->p + b->n, p, n);
    else memset(b->p + b->n, 0, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }

static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

gb *gb_new(void) {
    gb *b = xrealloc(NULL, sizeof *b);
    memset(b, 0, sizeof *b);
    memcpy(b->magic, "GGUF", 4);
    b->version = 3;
    b->alignment = 32;
    return b;
}

void gb_free(gb *b) {
    if (!b) return;
    free(b->kv.p);
    free(b->ti.p);
    free(b->data.p);
    free(b);
}

void gb_set_magic(gb *b, const char magic[4]) { memcpy(b->magic, magic, 4); }
void gb_set_version(gb *b, uint32_t v) { b->version = v; }
void gb_set_n_kv(gb *b, uint64_t n) { b->n_kv_set = true; b->n_kv_forced = n; }
void gb_set_n_tensors(gb *b, uint64_t n) { b->n_tensors_set = true; b->n_tensors_forced = n; }
void gb_set_alignment(gb *b, uint32_t a) { b->alignment = a; }

/* ---- Key/value pairs ---- */

void gb_kv_raw(gb *b, const char *key, uint32_t type, const void *value, size_t len) {
    put_str(&b->kv, key);
    put_u32(&b->kv, type);
    put(&b->kv, value, len);
    b->n_kv++;
}

void gb_kv_bytes(gb *b, const void *p, size_t n) {
    put(&b->kv, p, n);
    b->n_kv++;
}

void gb_u8(gb *b, const char *k, uint8_t v) { gb_kv_raw(b, k, VT_U8, &v, 1); }
void gb_i8(gb *b, const char *k, int8_t v) { gb_kv_raw(b, k, VT_I8, &v, 1); }
void gb_u16(gb *b, const char *k, uint16_t v) { gb_kv_raw(b, k, VT_U16, &v, 2); }
void gb_i16(gb *b, const char *k, int16_t v) { gb_kv_raw(b, k, VT_I16, &v, 2); }
void gb_u32(gb *b, const char *k, uint32_t v) { gb_kv_raw(b, k, VT_U32, &v, 4); }
void gb_i32(gb *b, const char *k, int32_t v) { gb_kv_raw(b, k, VT_I32, &v, 4); }
void gb_f32(gb *b, const char *k, float v) { gb_kv_raw(b, k, VT_F32, &v, 4); }
void gb_u64(gb *b, const char *k, uint64_t v) { gb_kv_raw(b, k, VT_U64, &v, 8); }
void gb_i64(gb *b, const char *k, int64_t v) { gb_kv_raw(b, k, VT_I64, &v, 8); }
void gb_f64(gb *b, const char *k, double v) { gb_kv_raw(b, k, VT_F64, &v, 8); }

void gb_bool(gb *b, const char *k, bool v) {
    uint8_t x = v ? 1 : 0;
    gb_kv_raw(b, k, VT_BOOL, &x, 1);
}

void gb_str(gb *b, const char *k, const char *s) {
    put_str(&b->kv, k);
    put_u32(&b->kv, VT_STRING);
    put_str(&b->kv, s);
    b->n_kv++;
}

void gb_arr(gb *b, const char *k, uint32_t elem_type, size_t elem_size,
            const void *elems, uint64_t n) {
    put_str(&b->kv, k);
    put_u32(&b->kv, VT_ARRAY);
    put_u32(&b->kv, elem_type);
    put_u64(&b->kv, n);
    put(&b->kv, elems, (size_t)n * elem_size);
    b->n_kv++;
}

void gb_arr_str(gb *b, const char *k, const char *const *strs, uint64_t n) {
    put_str(&b->kv, k);
    put_u32(&b->kv, VT_ARRAY);
    put_u32(&b->kv, VT_STRING);
    put_u64(&b->kv, n);
    for (uint64_t i = 0; i < n; i++) put_str(&b->kv, strs[i]);
    b->n_kv++;
}

/* ---- Raw encoders ---- */

size_t gb_enc_u32(uint8_t *p, size_t len, uint32_t v) {
    memcpy(p + len, &v, 4);
    return len + 4;
}

size_t gb_enc_u64(uint8_t *p, size_t len, uint64_t v) {
    memcpy(p + len, &v, 8);
    return len + 8;
}

size_t gb_enc_str(uint8_t *p, size_t len, const char *s) {
    len = gb_enc_u64(p, len, strlen(s));
    memcpy(p + len, s, strlen(s));
    return len + strlen(s);
}

/* ---- Tensors ---- */

uint64_t gb_data(gb *b, const void *p, size_t n) {
    size_t a = b->alignment ? b->alignment : 1;
    put(&b->data, NULL, (a - b->data.n % a) % a);
    uint64_t off = b->data.n;
    put(&b->data, p, n);
    return off;
}

void gb_tensor_info(gb *b, const char *name, uint64_t name_len, uint32_t n_dims,
                    const int64_t *ne, uint32_t type, uint64_t offset) {
    put_u64(&b->ti, name_len);
    put(&b->ti, name, (size_t)name_len);
    put_u32(&b->ti, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put(&b->ti, &ne[d], 8);
    put_u32(&b->ti, type);
    put_u64(&b->ti, offset);
    b->n_tensors++;
}

uint64_t gb_tensor(gb *b, const char *name, uint32_t type, uint32_t n_dims,
                   const int64_t *ne, const void *data, size_t nbytes) {
    uint64_t off = gb_data(b, data, nbytes);
    gb_tensor_info(b, name, strlen(name), n_dims, ne, type, off);
    return off;
}

void gb_tensor_bytes(gb *b, const void *p, size_t n) {
    put(&b->ti, p, n);
    b->n_tensors++;
}

/* ---- Output ---- */

static uint64_t meta_end(const gb *b) { return 24 + b->kv.n + b->ti.n; }

uint64_t gb_data_start(const gb *b) {
    uint64_t a = b->alignment ? b->alignment : 1, end = meta_end(b);
    return (end + a - 1) / a * a;
}

uint8_t *gb_build(const gb *b, size_t *size) {
    buf out = { 0 };
    put(&out, b->magic, 4);
    put_u32(&out, b->version);
    put_u64(&out, b->n_tensors_set ? b->n_tensors_forced : b->n_tensors);
    put_u64(&out, b->n_kv_set ? b->n_kv_forced : b->n_kv);
    put(&out, b->kv.p, b->kv.n);
    put(&out, b->ti.p, b->ti.n);
    if (b->data.n) {   /* without data the file ends right after the infos */
        put(&out, NULL, (size_t)(gb_data_start(b) - meta_end(b)));
        put(&out, b->data.p, b->data.n);
    }
    *size = out.n;
    return out.p ? out.p : xrealloc(NULL, 1);
}
