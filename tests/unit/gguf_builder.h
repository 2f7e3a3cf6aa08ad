/*
 * gguf_builder.h - writes GGUF files in memory for tests, including
 * deliberately broken ones.
 *
 * A builder collects three sections (key/value pairs, tensor infos, tensor
 * data) and the header fields, then gb_build() lays them out:
 *
 *   header | kv | tensor infos | padding to the alignment | data
 *
 * The high-level calls (gb_u32, gb_str, gb_tensor, ...) write well-formed
 * entries. The knobs (gb_set_*, gb_kv_raw, gb_kv_bytes, gb_tensor_info,
 * gb_tensor_bytes) write whatever they are given, so a test can break one
 * thing at a time. Counts in the header are the real ones unless
 * overridden.
 *
 * The builder uses plain malloc, not fr_malloc, so allocation-failure
 * injection only hits the code under test; it aborts if memory runs out.
 */
#ifndef GGUF_BUILDER_H
#define GGUF_BUILDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gb gb;

gb *gb_new(void);   /* version 3, alignment 32, nothing else */
void gb_free(gb *b);

/* ---- Header knobs ---- */
void gb_set_magic(gb *b, const char magic[4]);
void gb_set_version(gb *b, uint32_t version);
void gb_set_n_kv(gb *b, uint64_t n);        /* written instead of the real count */
void gb_set_n_tensors(gb *b, uint64_t n);   /* written instead of the real count */
/* Alignment used to lay out the data section. It does not write
 * general.alignment (add that key yourself). Call before adding data. */
void gb_set_alignment(gb *b, uint32_t alignment);

/* ---- Key/value pairs ---- */
void gb_u8(gb *b, const char *key, uint8_t v);
void gb_i8(gb *b, const char *key, int8_t v);
void gb_u16(gb *b, const char *key, uint16_t v);
void gb_i16(gb *b, const char *key, int16_t v);
void gb_u32(gb *b, const char *key, uint32_t v);
void gb_i32(gb *b, const char *key, int32_t v);
void gb_f32(gb *b, const char *key, float v);
void gb_bool(gb *b, const char *key, bool v);
void gb_str(gb *b, const char *key, const char *s);
void gb_u64(gb *b, const char *key, uint64_t v);
void gb_i64(gb *b, const char *key, int64_t v);
void gb_f64(gb *b, const char *key, double v);
/* An array of n fixed-size elements of elem_type (elem_size bytes each),
 * copied verbatim from elems. */
void gb_arr(gb *b, const char *key, uint32_t elem_type, size_t elem_size,
            const void *elems, uint64_t n);
void gb_arr_str(gb *b, const char *key, const char *const *strs, uint64_t n);
/* key, then any type id, then value_len bytes verbatim. */
void gb_kv_raw(gb *b, const char *key, uint32_t type, const void *value, size_t value_len);
/* n arbitrary bytes counted as one more key/value pair (broken keys). */
void gb_kv_bytes(gb *b, const void *p, size_t n);

/* ---- Raw little-endian encoders, for building byte strings to pass to
 * gb_kv_raw / gb_kv_bytes / gb_tensor_bytes. Each appends to buf at *len
 * (the caller's buffer must be large enough) and returns the new length. */
size_t gb_enc_u32(uint8_t *buf, size_t len, uint32_t v);
size_t gb_enc_u64(uint8_t *buf, size_t len, uint64_t v);
size_t gb_enc_str(uint8_t *buf, size_t len, const char *s);

/* ---- Tensors ---- */
/* A well-formed tensor: nbytes of data (zeros if data is NULL) placed at the
 * next aligned offset of the data section. Returns that offset. */
uint64_t gb_tensor(gb *b, const char *name, uint32_t type, uint32_t n_dims,
                   const int64_t *ne, const void *data, size_t nbytes);
/* A tensor info written verbatim, no data: name of name_len bytes, n_dims
 * entries of ne (as given, even if n_dims > 4: ne must have that many),
 * type id and offset relative to the data section. */
void gb_tensor_info(gb *b, const char *name, uint64_t name_len, uint32_t n_dims,
                    const int64_t *ne, uint32_t type, uint64_t offset);
/* n arbitrary bytes counted as one more tensor info. */
void gb_tensor_bytes(gb *b, const void *p, size_t n);
/* Pads the data section to the alignment and appends n bytes (zeros if p
 * is NULL); returns their offset in the data section. */
uint64_t gb_data(gb *b, const void *p, size_t n);

/* ---- Output ---- */
/* The file as a malloc'd buffer (free() it); *size gets its length. */
uint8_t *gb_build(const gb *b, size_t *size);
/* Where the data section starts in the built file. */
uint64_t gb_data_start(const gb *b);

#endif
