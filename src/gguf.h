/*
 * gguf.h - GGUF v3 reader.
 *
 * The file is memory-mapped; tensor data and strings point into the map,
 * nothing is copied. Every count, length, offset and size is checked before
 * use, so a malformed or truncated file yields FRUGAL_ERR_FORMAT with a
 * message naming the problem (see gguf.c for the list of checks).
 *
 * Strings in GGUF are not NUL-terminated: they are (pointer, length) pairs.
 */
#ifndef FR_GGUF_H
#define FR_GGUF_H

#include "common.h"

enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4,
    GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8,
    GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
    GGUF_VTYPE_COUNT = 13
};

/* Limits beyond which a file is rejected as malformed/hostile. */
#define GGUF_MAX_KV        65536
#define GGUF_MAX_TENSORS   65536
#define GGUF_MAX_STRING    (1u << 30)   /* bytes */
#define GGUF_MAX_ARRAY     (1u << 30)   /* elements */
#define GGUF_MAX_DIMS      4
#define GGUF_MAX_NAME      64           /* tensor names are shorter (63 bytes + NUL) */
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const char *ptr;   /* into the map; not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct {
    gguf_str key;
    uint32_t type;       /* enum gguf_vtype */
    uint32_t arr_type;   /* element type when type == GGUF_ARRAY */
    uint64_t arr_n;      /* element count when type == GGUF_ARRAY */
    /* In the map, possibly unaligned (read with memcpy): the scalar value,
     * the first array element, or for strings the encoded length. */
    const void *data;
    gguf_str *strs;      /* string value (1) or string array elements (arr_n) */
} gguf_kv;

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint32_t type;             /* enum fr_type (quant.h) */
    uint64_t offset;           /* relative to the data section */
    uint64_t nbytes;
    const void *data;          /* into the map; aligned to the file's alignment
                                  when the map is (mmap: always) */
} gguf_tensor;

typedef struct gguf_file {
    const uint8_t *base;   /* start of the file bytes */
    size_t size;
    bool mapped;           /* base came from mmap (gguf_close unmaps) */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;  /* start of the tensor data section in the file */
} gguf_file;

/* Maps and parses a file. Versions 2 and 3 are read; version 1 is
 * FRUGAL_ERR_UNSUPPORTED. Errors from the parse do not name the path. */
frugal_status gguf_open(const char *path, gguf_file **out);
/* Parses bytes the caller keeps alive (tests, fuzzing). */
frugal_status gguf_parse(const void *buf, size_t size, gguf_file **out);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Typed getters. Integer getters accept any integer type whose value fits.
 * A missing key, a type mismatch or an out-of-range value is
 * FRUGAL_ERR_FORMAT naming the key; use gguf_find first for optional keys. */
frugal_status gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
frugal_status gguf_get_i32(const gguf_file *g, const char *key, int32_t *out);
frugal_status gguf_get_f32(const gguf_file *g, const char *key, float *out);
frugal_status gguf_get_bool(const gguf_file *g, const char *key, bool *out);
frugal_status gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
/* An array of the given element type; *n elements starting at *data (in
 * the map, possibly unaligned). For GGUF_STRING elements *data is the
 * gguf_str table (kv->strs), so tokens can be indexed directly. */
frugal_status gguf_get_arr(const gguf_file *g, const char *key, uint32_t elem_type,
                           const void **data, uint64_t *n);

bool gguf_str_eq(gguf_str s, const char *c);
const char *gguf_vtype_name(uint32_t t);

#endif
