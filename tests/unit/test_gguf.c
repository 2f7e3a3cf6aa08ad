/*
 * test_gguf.c - the GGUF reader: well-formed files round-trip through the
 * getters and put tensor data where it belongs; each kind of malformed file
 * is refused with FRUGAL_ERR_FORMAT (or UNSUPPORTED) and a message naming
 * the problem; every prefix of a valid file and every allocation failure
 * fails cleanly (run under ASan/valgrind to see that nothing leaks).
 */
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "gguf.h"
#include "quant.h"
#include "gguf_builder.h"

/* ---- Helpers ---------------------------------------------------------- */

/* A parsed file and the buffer it points into. */
typedef struct {
    uint8_t *buf;
    size_t size;
    gguf_file *g;
} parsed;

/* Builds b (and frees it), then parses the result. */
static frugal_status parse_gb(gb *b, parsed *p) {
    p->buf = gb_build(b, &p->size);
    gb_free(b);
    p->g = NULL;
    return gguf_parse(p->buf, p->size, &p->g);
}

static void done(parsed *p) {
    gguf_close(p->g);
    free(p->buf);
}

/* True if b parses to status want, no file, and a message containing
 * needle. Prints what happened otherwise. Frees b. */
static bool fails_with(gb *b, frugal_status want, const char *needle) {
    parsed p;
    frugal_status st = parse_gb(b, &p);
    bool ok = st == want && p.g == NULL && strstr(frugal_last_error(), needle) != NULL;
    if (!ok)
        fprintf(stderr, "  got status %d (want %d), message \"%s\" (want \"%s\")\n",
                st, want, frugal_last_error(), needle);
    done(&p);
    return ok;
}

#define CHECK_FORMAT(b, needle) CHECK(fails_with((b), FRUGAL_ERR_FORMAT, (needle)))
#define CHECK_UNSUPPORTED(b, needle) CHECK(fails_with((b), FRUGAL_ERR_UNSUPPORTED, (needle)))

/* A small valid file: two keys and one F32 tensor. Malformed tests add one
 * broken thing to it. */
static gb *base(void) {
    static const float w[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    static const int64_t ne[2] = { 4, 2 };
    gb *b = gb_new();
    gb_str(b, "general.architecture", "llama");
    gb_u32(b, "llama.block_count", 2);
    gb_tensor(b, "w", FR_F32, 2, ne, w, sizeof w);
    return b;
}

/* A valid file with a value of every type, arrays and three tensors. */
static gb *rich(void) {
    static const int32_t ints[3] = { -1, 0, 7 };
    static const uint8_t bools[3] = { 1, 0, 1 };
    static const char *const toks[4] = { "<s>", "hello", "", "w\xc3\xb6rld" };
    static const float f[16] = { 0.5f, -1.0f, 2.0f };
    static uint8_t q8[2 * 34];
    static const int64_t ne_f[2] = { 8, 2 }, ne_q[1] = { 64 }, ne_h[3] = { 2, 3, 2 };
    for (int i = 0; i < (int)sizeof q8; i++) q8[i] = (uint8_t)(i * 7 + 1);
    gb *b = gb_new();
    gb_u8(b, "t.u8", 200);
    gb_i8(b, "t.i8", -100);
    gb_u16(b, "t.u16", 60000);
    gb_i16(b, "t.i16", -30000);
    gb_u32(b, "t.u32", 4000000000u);
    gb_i32(b, "t.i32", -2000000000);
    gb_f32(b, "t.f32", 1.5f);
    gb_bool(b, "t.bool", true);
    gb_str(b, "t.str", "hello, world");
    gb_u64(b, "t.u64", 1ull << 40);
    gb_i64(b, "t.i64", -5);
    gb_f64(b, "t.f64", 0.25);
    gb_arr(b, "t.arr_i32", GGUF_I32, 4, ints, 3);
    gb_arr(b, "t.arr_bool", GGUF_BOOL, 1, bools, 3);
    gb_arr_str(b, "t.tokens", toks, 4);
    gb_tensor(b, "a.f32", FR_F32, 2, ne_f, f, sizeof f);
    gb_tensor(b, "b.q8", FR_Q8_0, 1, ne_q, q8, sizeof q8);
    gb_tensor(b, "c.f16", FR_F16, 3, ne_h, NULL, 2 * 12);
    return b;
}

/* ---- Well-formed files ------------------------------------------------ */

TEST(gguf_every_value_type_round_trips) {
    parsed p;
    CHECK(parse_gb(rich(), &p) == FRUGAL_OK);
    gguf_file *g = p.g;
    uint32_t u;
    int32_t i;
    float f;
    bool bo;
    gguf_str s;
    CHECK(g->version == 3 && g->n_kv == 15 && g->n_tensors == 3);
    CHECK(gguf_get_u32(g, "t.u8", &u) == FRUGAL_OK && u == 200);
    CHECK(gguf_get_i32(g, "t.i8", &i) == FRUGAL_OK && i == -100);
    CHECK(gguf_get_u32(g, "t.u16", &u) == FRUGAL_OK && u == 60000);
    CHECK(gguf_get_i32(g, "t.i16", &i) == FRUGAL_OK && i == -30000);
    CHECK(gguf_get_u32(g, "t.u32", &u) == FRUGAL_OK && u == 4000000000u);
    CHECK(gguf_get_i32(g, "t.i32", &i) == FRUGAL_OK && i == -2000000000);
    CHECK(gguf_get_f32(g, "t.f32", &f) == FRUGAL_OK && f == 1.5f);
    CHECK(gguf_get_bool(g, "t.bool", &bo) == FRUGAL_OK && bo);
    CHECK(gguf_get_str(g, "t.str", &s) == FRUGAL_OK && gguf_str_eq(s, "hello, world"));
    CHECK(gguf_get_i32(g, "t.i64", &i) == FRUGAL_OK && i == -5);
    CHECK(gguf_get_f32(g, "t.f64", &f) == FRUGAL_OK && f == 0.25f);
    const gguf_kv *kv = gguf_find(g, "t.u64");
    uint64_t u64;
    CHECK(kv && kv->type == GGUF_U64);
    memcpy(&u64, kv->data, 8);
    CHECK(u64 == 1ull << 40);
    CHECK(gguf_find(g, "t.nope") == NULL && gguf_find(g, "t.u6") == NULL);
    done(&p);
}

TEST(gguf_arrays_round_trip) {
    parsed p;
    CHECK(parse_gb(rich(), &p) == FRUGAL_OK);
    const void *data;
    uint64_t n;
    int32_t v[3];
    CHECK(gguf_get_arr(p.g, "t.arr_i32", GGUF_I32, &data, &n) == FRUGAL_OK && n == 3);
    memcpy(v, data, sizeof v);   /* array data in the file may be unaligned */
    CHECK(v[0] == -1 && v[1] == 0 && v[2] == 7);
    CHECK(gguf_get_arr(p.g, "t.arr_bool", GGUF_BOOL, &data, &n) == FRUGAL_OK && n == 3);
    CHECK(memcmp(data, "\1\0\1", 3) == 0);
    CHECK(gguf_get_arr(p.g, "t.tokens", GGUF_STRING, &data, &n) == FRUGAL_OK && n == 4);
    const gguf_str *toks = data;
    CHECK(gguf_str_eq(toks[0], "<s>") && gguf_str_eq(toks[1], "hello"));
    CHECK(toks[2].len == 0 && gguf_str_eq(toks[3], "w\xc3\xb6rld"));
    const gguf_kv *kv = gguf_find(p.g, "t.tokens");
    CHECK(kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING && kv->strs == toks);
    done(&p);
}

TEST(gguf_integer_getters_convert_when_the_value_fits) {
    gb *b = gb_new();
    gb_u64(b, "small_u64", 12);
    gb_i64(b, "neg_i64", -1);
    gb_u64(b, "huge_u64", UINT64_MAX);
    gb_i64(b, "big_i64", 1ll << 33);
    gb_u32(b, "big_u32", 3000000000u);
    gb_i8(b, "neg_i8", -3);
    parsed p;
    CHECK(parse_gb(b, &p) == FRUGAL_OK);
    uint32_t u;
    int32_t i;
    CHECK(gguf_get_u32(p.g, "small_u64", &u) == FRUGAL_OK && u == 12);
    CHECK(gguf_get_i32(p.g, "small_u64", &i) == FRUGAL_OK && i == 12);
    CHECK(gguf_get_i32(p.g, "neg_i64", &i) == FRUGAL_OK && i == -1);
    CHECK(gguf_get_u32(p.g, "neg_i64", &u) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "neg_i64") && strstr(frugal_last_error(), "u32"));
    CHECK(gguf_get_u32(p.g, "huge_u64", &u) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "huge_u64: value above"));
    CHECK(gguf_get_u32(p.g, "big_i64", &u) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "8589934592"));
    CHECK(gguf_get_i32(p.g, "big_u32", &i) == FRUGAL_ERR_FORMAT);
    CHECK(gguf_get_u32(p.g, "big_u32", &u) == FRUGAL_OK && u == 3000000000u);
    CHECK(gguf_get_u32(p.g, "neg_i8", &u) == FRUGAL_ERR_FORMAT);
    CHECK(gguf_get_i32(p.g, "neg_i8", &i) == FRUGAL_OK && i == -3);
    done(&p);
}

TEST(gguf_getter_type_mismatch_names_the_key) {
    gb *b = gb_new();
    gb_str(b, "llama.block_count", "thirty");
    gb_f32(b, "f", 1.0f);
    gb_u32(b, "u", 1);
    gb_arr(b, "arr", GGUF_U32, 4, "\1\0\0\0", 1);
    parsed p;
    CHECK(parse_gb(b, &p) == FRUGAL_OK);
    uint32_t u;
    float f;
    bool bo;
    gguf_str s;
    const void *d;
    uint64_t n;
    CHECK(gguf_get_u32(p.g, "llama.block_count", &u) == FRUGAL_ERR_FORMAT);
    CHECK(strcmp(frugal_last_error(), "key llama.block_count: expected an integer, found string") == 0);
    CHECK(gguf_get_u32(p.g, "f", &u) == FRUGAL_ERR_FORMAT);
    CHECK(gguf_get_f32(p.g, "u", &f) == FRUGAL_ERR_FORMAT && strstr(frugal_last_error(), "key u: expected a float, found u32"));
    CHECK(gguf_get_bool(p.g, "u", &bo) == FRUGAL_ERR_FORMAT && strstr(frugal_last_error(), "expected a bool"));
    CHECK(gguf_get_str(p.g, "u", &s) == FRUGAL_ERR_FORMAT && strstr(frugal_last_error(), "expected a string"));
    CHECK(gguf_get_arr(p.g, "arr", GGUF_STRING, &d, &n) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "key arr: expected an array of string, found an array of u32"));
    CHECK(gguf_get_arr(p.g, "u", GGUF_U32, &d, &n) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "found u32"));
    CHECK(gguf_get_arr(p.g, "arr", GGUF_U32, &d, &n) == FRUGAL_OK && n == 1);
    done(&p);
}

TEST(gguf_missing_key_names_the_key) {
    parsed p;
    CHECK(parse_gb(base(), &p) == FRUGAL_OK);
    uint32_t u;
    CHECK(gguf_get_u32(p.g, "llama.context_length", &u) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "llama.context_length") && strstr(frugal_last_error(), "not found"));
    CHECK(gguf_find_tensor(p.g, "nope") == NULL && gguf_find_tensor(p.g, "w") != NULL);
    done(&p);
}

TEST(gguf_tensor_data_at_default_alignment) {
    gb *b = rich();
    uint64_t start = gb_data_start(b);
    parsed p;
    CHECK(parse_gb(b, &p) == FRUGAL_OK);
    gguf_file *g = p.g;
    CHECK(g->alignment == 32 && g->data_offset == start && g->data_offset % 32 == 0);
    const gguf_tensor *a = gguf_find_tensor(g, "a.f32"), *q = gguf_find_tensor(g, "b.q8");
    const gguf_tensor *h = gguf_find_tensor(g, "c.f16");
    CHECK(a && q && h);
    CHECK(a->offset == 0 && a->nbytes == 64 && a->n_dims == 2);
    CHECK(a->ne[0] == 8 && a->ne[1] == 2 && a->ne[2] == 1 && a->ne[3] == 1);
    CHECK(q->offset == 64 && q->nbytes == 68 && q->type == FR_Q8_0);
    CHECK(h->offset == 160 && h->nbytes == 24 && h->n_dims == 3 && h->ne[2] == 2);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        CHECK(t->data == p.buf + g->data_offset + t->offset);
        CHECK((g->data_offset + t->offset) % 32 == 0);
    }
    float f0;
    memcpy(&f0, a->data, 4);
    CHECK(f0 == 0.5f);
    CHECK(((const uint8_t *)q->data)[0] == 1 && ((const uint8_t *)q->data)[67] == (uint8_t)(67 * 7 + 1));
    done(&p);
}

static bool check_alignment(uint32_t align) {
    static const int64_t ne[1] = { 3 };
    static const float d[3] = { 9, 8, 7 };
    gb *b = gb_new();
    gb_set_alignment(b, align);
    gb_u32(b, "general.alignment", align);
    gb_str(b, "x", "odd-length");
    gb_tensor(b, "t0", FR_F32, 1, ne, d, sizeof d);
    gb_tensor(b, "t1", FR_F32, 1, ne, d, sizeof d);
    uint64_t start = gb_data_start(b);
    parsed p;
    bool ok = parse_gb(b, &p) == FRUGAL_OK;
    if (ok) {
        const gguf_tensor *t1 = gguf_find_tensor(p.g, "t1");
        ok = p.g->alignment == align && p.g->data_offset == start &&
             p.g->data_offset % align == 0 && t1->offset == (12 + align - 1) / align * align &&
             t1->data == p.buf + start + t1->offset && memcmp(t1->data, d, 12) == 0;
    }
    done(&p);
    return ok;
}

TEST(gguf_tensor_data_at_custom_alignment) {
    CHECK(check_alignment(64));
    CHECK(check_alignment(1));
    CHECK(check_alignment(8));
    CHECK(check_alignment(4096));
}

TEST(gguf_version_2_accepted) {
    gb *b = base();
    gb_set_version(b, 2);
    parsed p;
    CHECK(parse_gb(b, &p) == FRUGAL_OK && p.g->version == 2);
    done(&p);
}

TEST(gguf_empty_file_without_keys_or_tensors) {
    parsed p;
    CHECK(parse_gb(gb_new(), &p) == FRUGAL_OK);
    CHECK(p.size == 24 && p.g->n_kv == 0 && p.g->n_tensors == 0);
    CHECK(gguf_find(p.g, "x") == NULL && gguf_find_tensor(p.g, "x") == NULL);
    done(&p);
}

TEST(gguf_empty_string_and_empty_array) {
    gb *b = gb_new();
    gb_str(b, "s", "");
    gb_arr(b, "a", GGUF_F32, 4, NULL, 0);
    gb_arr_str(b, "as", NULL, 0);
    parsed p;
    CHECK(parse_gb(b, &p) == FRUGAL_OK);
    gguf_str s;
    const void *d;
    uint64_t n = 9;
    CHECK(gguf_get_str(p.g, "s", &s) == FRUGAL_OK && s.len == 0);
    CHECK(gguf_get_arr(p.g, "a", GGUF_F32, &d, &n) == FRUGAL_OK && n == 0);
    CHECK(gguf_get_arr(p.g, "as", GGUF_STRING, &d, &n) == FRUGAL_OK && n == 0);
    done(&p);
}

TEST(gguf_name_of_63_bytes_accepted) {
    char name[64];
    memset(name, 'n', 63);
    name[63] = 0;
    static const int64_t ne[1] = { 1 };
    gb *b = gb_new();
    gb_tensor(b, name, FR_F32, 1, ne, NULL, 4);
    parsed p;
    CHECK(parse_gb(b, &p) == FRUGAL_OK && gguf_find_tensor(p.g, name));
    done(&p);
}

/* Every type id: known to quant.c (even if unsupported) parses, the rest
 * are refused. */
TEST(gguf_every_type_id_known_or_refused) {
    for (uint32_t type = 0; type < FR_TYPE_COUNT + 8; type++) {
        const fr_type_traits *tt = fr_traits(type);
        int64_t ne[1] = { tt ? tt->blck : 32 };
        gb *b = gb_new();
        gb_tensor(b, "t", type, 1, ne, NULL, tt ? tt->bytes : 32);
        parsed p;
        frugal_status st = parse_gb(b, &p);
        if (tt) CHECK_MSG(st == FRUGAL_OK, "type %u: %s", type, frugal_last_error());
        else CHECK_MSG(st == FRUGAL_ERR_FORMAT && strstr(frugal_last_error(), "unknown tensor type"),
                       "type %u: %s", type, frugal_last_error());
        done(&p);
    }
}

TEST(gguf_open_maps_a_file) {
    char path[] = "/tmp/frugal_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    size_t size;
    gb *b = base();
    uint8_t *buf = gb_build(b, &size);
    gb_free(b);
    bool wrote = write(fd, buf, size) == (ssize_t)size;
    close(fd);
    gguf_file *g = NULL;
    frugal_status st = gguf_open(path, &g);
    bool ok = st == FRUGAL_OK && g->mapped && g->size == size && g->n_tensors == 1 &&
              memcmp(gguf_find_tensor(g, "w")->data, buf + size - 32, 32) == 0;
    gguf_close(g);
    unlink(path);
    free(buf);
    CHECK(wrote && ok);
}

TEST(gguf_open_errors) {
    gguf_file *g = (gguf_file *)&g;
    CHECK(gguf_open("/nonexistent/model.gguf", &g) == FRUGAL_ERR_IO && g == NULL);
    CHECK(strstr(frugal_last_error(), "/nonexistent/model.gguf"));
    CHECK(gguf_open("/tmp", &g) == FRUGAL_ERR_IO && g == NULL);
    char path[] = "/tmp/frugal_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    frugal_status st = gguf_open(path, &g);   /* empty file */
    unlink(path);
    CHECK(st == FRUGAL_ERR_FORMAT && g == NULL && strstr(frugal_last_error(), "truncated"));
}

TEST(gguf_vtype_names_and_str_eq) {
    CHECK(strcmp(gguf_vtype_name(GGUF_STRING), "string") == 0);
    CHECK(strcmp(gguf_vtype_name(GGUF_F64), "f64") == 0);
    CHECK(strcmp(gguf_vtype_name(99), "unknown") == 0);
    gguf_str s = { "abc", 3 };
    CHECK(gguf_str_eq(s, "abc") && !gguf_str_eq(s, "ab") && !gguf_str_eq(s, "abcd"));
}

/* ---- Truncation and allocation failure -------------------------------- */

/* Each prefix is copied into a buffer of exactly its length so that ASan
 * catches any read past the end. */
TEST(gguf_every_truncation_fails_cleanly) {
    size_t size;
    gb *b = rich();
    uint8_t *full = gb_build(b, &size);
    gb_free(b);
    for (size_t len = 0; len < size; len++) {
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, full, len);
        gguf_file *g = (gguf_file *)&g;
        frugal_status st = gguf_parse(cut, len, &g);
        const char *msg = frugal_last_error();
        bool ok = st == FRUGAL_ERR_FORMAT && g == NULL &&
                  (strstr(msg, "truncated") || strstr(msg, "past the end"));
        free(cut);
        if (!ok) free(full);
        CHECK_MSG(ok, "prefix %zu of %zu: status %d, %s", len, size, st, msg);
    }
    gguf_file *g;
    CHECK(gguf_parse(full, size, &g) == FRUGAL_OK);
    gguf_close(g);
    free(full);
}

TEST(gguf_allocation_failures_clean_up) {
    size_t size;
    gb *b = rich();
    uint8_t *buf = gb_build(b, &size);
    gb_free(b);
    gguf_file *g;
    fr_alloc_fail_after(0);
    frugal_status st = gguf_parse(buf, size, &g);
    long n = fr_alloc_count();
    gguf_close(g);
    bool ok = st == FRUGAL_OK && n >= 5;   /* file, kv, strs x2, tensors, scratch x2 */
    for (long i = 1; ok && i <= n; i++) {
        fr_alloc_fail_after(i);
        g = (gguf_file *)&g;
        st = gguf_parse(buf, size, &g);
        fr_alloc_fail_after(0);
        ok = st == FRUGAL_ERR_NOMEM && g == NULL;
        if (!ok) fprintf(stderr, "  allocation %ld of %ld: status %d\n", i, n, st);
    }
    fr_alloc_fail_after(n + 1);
    st = gguf_parse(buf, size, &g);
    fr_alloc_fail_after(0);
    if (st == FRUGAL_OK) gguf_close(g);
    free(buf);
    CHECK(ok && st == FRUGAL_OK);
}

/* Random byte flips: any outcome but a crash, and when the parse succeeds
 * every tensor lies inside the buffer. */
TEST(gguf_random_corruption_never_crashes) {
    size_t size;
    gb *b = rich();
    uint8_t *orig = gb_build(b, &size);
    gb_free(b);
    uint8_t *buf = malloc(size);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    bool ok = true;
    for (int iter = 0; iter < 3000 && ok; iter++) {
        memcpy(buf, orig, size);
        for (int k = 0; k < 1 + iter % 4; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            buf[(rng >> 33) % size] = (uint8_t)(rng >> 17);
        }
        gguf_file *g;
        if (gguf_parse(buf, size, &g) != FRUGAL_OK) continue;
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const gguf_tensor *t = &g->tensors[i];
            ok = ok && (const uint8_t *)t->data >= buf &&
                 (const uint8_t *)t->data + t->nbytes <= buf + size;
        }
        gguf_close(g);
    }
    free(buf);
    free(orig);
    CHECK(ok);
}

/* ---- Malformed header ------------------------------------------------- */

TEST(gguf_bad_magic) {
    gb *b = base();
    gb_set_magic(b, "GGUX");
    CHECK_FORMAT(b, "not a GGUF file");
}

TEST(gguf_file_shorter_than_header) {
    gguf_file *g;
    CHECK(gguf_parse("GGUF\3\0\0\0\0\0", 10, &g) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "truncated") && strstr(frugal_last_error(), "tensor count"));
    CHECK(gguf_parse("GG", 2, &g) == FRUGAL_ERR_FORMAT && strstr(frugal_last_error(), "magic"));
    CHECK(gguf_parse(NULL, 0, &g) == FRUGAL_ERR_FORMAT && g == NULL);
}

TEST(gguf_bad_version) {
    gb *b = base();
    gb_set_version(b, 0);
    CHECK_FORMAT(b, "unknown version 0");
    b = base();
    gb_set_version(b, 4);
    CHECK_FORMAT(b, "unknown version 4");
}

TEST(gguf_version_1_unsupported) {
    gb *b = base();
    gb_set_version(b, 1);
    CHECK_UNSUPPORTED(b, "version 1 unsupported");
}

TEST(gguf_big_endian_unsupported) {
    gb *b = base();
    gb_set_version(b, 0x03000000u);
    CHECK_UNSUPPORTED(b, "big-endian");
}

TEST(gguf_huge_n_kv) {
    gb *b = base();
    gb_set_n_kv(b, GGUF_MAX_KV + 1ull);
    CHECK_FORMAT(b, "key/value count 65537 is over the limit");
    b = base();
    gb_set_n_kv(b, UINT64_MAX);
    CHECK_FORMAT(b, "key/value count");
}

TEST(gguf_huge_n_tensors) {
    gb *b = base();
    gb_set_n_tensors(b, 1ull << 40);
    CHECK_FORMAT(b, "tensor count 1099511627776 is over the limit");
}

TEST(gguf_n_kv_more_than_present) {
    gb *b = base();
    gb_set_n_kv(b, 1000);
    CHECK_FORMAT(b, "GGUF key ");
}

/* ---- Malformed keys and values ---------------------------------------- */

TEST(gguf_key_length_past_eof) {
    uint8_t raw[8];
    gb *b = base();
    gb_kv_bytes(b, raw, gb_enc_u64(raw, 0, 1u << 20));
    CHECK_FORMAT(b, "key length 1048576 runs past the end of the file");
}

TEST(gguf_key_length_huge) {
    uint8_t raw[8];
    gb *b = base();
    gb_kv_bytes(b, raw, gb_enc_u64(raw, 0, 1ull << 62));
    CHECK_FORMAT(b, "over the limit");
}

TEST(gguf_empty_key) {
    gb *b = base();
    gb_u32(b, "", 1);
    CHECK_FORMAT(b, "empty key");
}

TEST(gguf_string_length_past_eof) {
    uint8_t raw[8];
    gb *b = base();
    gb_kv_raw(b, "general.name", GGUF_STRING, raw, gb_enc_u64(raw, 0, 5000));
    CHECK_FORMAT(b, "key general.name: string length 5000 runs past the end");
}

TEST(gguf_string_length_huge) {
    uint8_t raw[8];
    gb *b = base();
    gb_kv_raw(b, "general.name", GGUF_STRING, raw, gb_enc_u64(raw, 0, UINT64_MAX));
    CHECK_FORMAT(b, "key general.name: string length 18446744073709551615 is over the limit");
}

TEST(gguf_unknown_value_type) {
    gb *b = base();
    gb_kv_raw(b, "weird", 13, "\0\0\0\0", 4);
    CHECK_FORMAT(b, "key weird: unknown value type 13");
    b = base();
    gb_kv_raw(b, "weird", 0xffffffffu, NULL, 0);
    CHECK_FORMAT(b, "unknown value type 4294967295");
}

TEST(gguf_bad_bool) {
    gb *b = base();
    gb_kv_raw(b, "flag", GGUF_BOOL, "\2", 1);
    CHECK_FORMAT(b, "key flag: bool value 2 is not 0 or 1");
}

TEST(gguf_bad_bool_in_array) {
    gb *b = base();
    gb_arr(b, "flags", GGUF_BOOL, 1, "\1\0\7", 3);
    CHECK_FORMAT(b, "key flags: bool array element 2 is 7");
}

TEST(gguf_duplicate_key) {
    gb *b = base();
    gb_u32(b, "llama.block_count", 3);
    CHECK_FORMAT(b, "key llama.block_count: duplicate key");
}

TEST(gguf_unknown_array_element_type) {
    uint8_t raw[12];
    gb *b = base();
    gb_kv_raw(b, "arr", GGUF_ARRAY, raw, gb_enc_u64(raw, gb_enc_u32(raw, 0, 13), 0));
    CHECK_FORMAT(b, "key arr: unknown array element type 13");
}

TEST(gguf_nested_array_unsupported) {
    uint8_t raw[12];
    gb *b = base();
    gb_kv_raw(b, "arr", GGUF_ARRAY, raw, gb_enc_u64(raw, gb_enc_u32(raw, 0, GGUF_ARRAY), 1));
    CHECK_UNSUPPORTED(b, "nested arrays");
}

/* count * 8 wraps around to 8: must be refused, not read as 8 bytes. */
TEST(gguf_array_count_overflow) {
    uint8_t raw[20];
    size_t n = gb_enc_u64(raw, gb_enc_u32(raw, 0, GGUF_U64), (1ull << 61) + 1);
    n = gb_enc_u64(raw, n, 42);
    gb *b = base();
    gb_kv_raw(b, "arr", GGUF_ARRAY, raw, n);
    CHECK_FORMAT(b, "key arr: array count 2305843009213693953 is over the limit");
}

TEST(gguf_array_elements_past_eof) {
    uint8_t raw[20];
    size_t n = gb_enc_u64(raw, gb_enc_u32(raw, 0, GGUF_F32), 1000);
    n = gb_enc_u64(raw, n, 0);
    gb *b = gb_new();
    gb_kv_raw(b, "scores", GGUF_ARRAY, raw, n);
    CHECK_FORMAT(b, "key scores: array of 1000 f32 runs past the end");
}

TEST(gguf_string_array_past_eof) {
    uint8_t raw[12];
    gb *b = gb_new();
    gb_kv_raw(b, "tokens", GGUF_ARRAY, raw, gb_enc_u64(raw, gb_enc_u32(raw, 0, GGUF_STRING), 49152));
    CHECK_FORMAT(b, "key tokens: array of 49152 strings runs past the end");
}

TEST(gguf_string_array_element_past_eof) {
    static const char *const toks[2] = { "a", "b" };
    uint8_t raw[8];
    gb *b = gb_new();
    gb_arr_str(b, "tokens", toks, 2);
    /* A third element whose length points far past the end. */
    gb_kv_bytes(b, raw, gb_enc_u64(raw, 0, 1u << 20));
    gb_set_n_kv(b, 1);
    size_t size;
    uint8_t *buf = gb_build(b, &size);
    gb_free(b);
    uint64_t three = 3;   /* patch the count: after key(8+6) type(4) elem type(4) */
    memcpy(buf + 24 + 14 + 4 + 4, &three, 8);
    gguf_file *g;
    frugal_status st = gguf_parse(buf, size, &g);
    free(buf);
    CHECK(st == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "key tokens element 2: string length 1048576 runs past"));
}

/* ---- general.alignment ------------------------------------------------ */

TEST(gguf_alignment_zero) {
    gb *b = base();
    gb_u32(b, "general.alignment", 0);
    CHECK_FORMAT(b, "key general.alignment: alignment 0 is not a power of two");
}

TEST(gguf_alignment_not_power_of_two) {
    gb *b = base();
    gb_u32(b, "general.alignment", 48);
    CHECK_FORMAT(b, "alignment 48 is not a power of two");
}

TEST(gguf_alignment_wrong_type) {
    gb *b = base();
    gb_u64(b, "general.alignment", 32);
    CHECK_FORMAT(b, "key general.alignment: alignment must be a u32, found u64");
    b = base();
    gb_str(b, "general.alignment", "32");
    CHECK_FORMAT(b, "found string");
}

/* ---- Malformed tensor infos ------------------------------------------- */

static gb *with_info(const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                     uint64_t offset) {
    gb *b = base();
    gb_tensor_info(b, name, strlen(name), n_dims, ne, type, offset);
    return b;
}

TEST(gguf_n_dims_zero) {
    CHECK_FORMAT(with_info("t", 0, NULL, FR_F32, 0), "tensor t: 0 dimensions");
}

TEST(gguf_n_dims_five) {
    static const int64_t ne[5] = { 1, 1, 1, 1, 1 };
    CHECK_FORMAT(with_info("t", 5, ne, FR_F32, 0), "tensor t: 5 dimensions");
}

TEST(gguf_ne_zero) {
    static const int64_t ne[2] = { 4, 0 };
    CHECK_FORMAT(with_info("t", 2, ne, FR_F32, 0), "tensor t: ne[1] = 0 (must be positive)");
}

TEST(gguf_ne_negative) {
    static const int64_t ne[2] = { -4, 2 };
    CHECK_FORMAT(with_info("t", 2, ne, FR_F32, 0), "ne[0] = -4");
}

TEST(gguf_dims_product_overflows) {
    static const int64_t ne[3] = { 1ll << 32, 1ll << 16, 1ll << 16 };
    CHECK_FORMAT(with_info("t", 3, ne, FR_F32, 0), "tensor t: element count overflows (ne[2]");
}

TEST(gguf_byte_size_overflows) {
    static const int64_t ne1[1] = { 1ll << 62 };
    CHECK_FORMAT(with_info("t", 1, ne1, FR_F32, 0), "tensor t: row size overflows");
    static const int64_t ne2[2] = { 1ll << 32, 1ll << 30 };
    CHECK_FORMAT(with_info("t", 2, ne2, FR_F32, 0), "tensor t: byte size overflows");
}

TEST(gguf_unknown_tensor_type) {
    static const int64_t ne[1] = { 32 };
    CHECK_FORMAT(with_info("t", 1, ne, 99, 0), "tensor t: unknown tensor type 99");
    CHECK_FORMAT(with_info("t", 1, ne, 0xffffffffu, 0), "unknown tensor type 4294967295");
}

TEST(gguf_row_not_multiple_of_block) {
    static const int64_t ne[2] = { 33, 2 };
    CHECK_FORMAT(with_info("t", 2, ne, FR_Q4_0, 0),
                 "tensor t: row length 33 is not a multiple of the Q4_0 block size 32");
}

TEST(gguf_offset_misaligned) {
    static const int64_t ne[1] = { 4 };
    CHECK_FORMAT(with_info("t", 1, ne, FR_F32, 4),
                 "tensor t: data offset 4 is not a multiple of the alignment 32");
}

TEST(gguf_offset_out_of_range) {
    static const int64_t ne[1] = { 4 };
    CHECK_FORMAT(with_info("t", 1, ne, FR_F32, 1ull << 40),
                 "tensor t: data offset 1099511627776 is past the end of the file");
}

TEST(gguf_data_past_eof) {
    static const int64_t ne[1] = { 100 };
    CHECK_FORMAT(with_info("t", 1, ne, FR_F32, 0), "tensor t: data (400 bytes at offset 0) runs past the end");
}

TEST(gguf_data_section_past_eof) {
    /* Infos present but the file ends before the data section starts. */
    static const int64_t ne[1] = { 1 };
    gb *b = gb_new();
    gb_tensor_info(b, "t", 1, 1, ne, FR_F32, 0);
    CHECK_FORMAT(b, "tensor t: data (4 bytes at offset 0) runs past the end");
}

TEST(gguf_overlapping_tensors) {
    static const int64_t ne16[1] = { 16 }, ne8[1] = { 8 };
    gb *b = base();   /* "w": 32 bytes at 0 */
    gb_data(b, NULL, 64);
    gb_tensor_info(b, "big", 3, 1, ne16, FR_F32, 32);
    gb_tensor_info(b, "small", 5, 1, ne8, FR_F32, 64);
    CHECK_FORMAT(b, "tensor small: data [64, 96) overlaps tensor big [32, 96)");
}

TEST(gguf_same_offset_tensors) {
    static const int64_t ne[1] = { 8 };
    CHECK_FORMAT(with_info("w2", 1, ne, FR_F32, 0), "overlaps tensor w");
}

TEST(gguf_duplicate_tensor_names) {
    static const int64_t ne[1] = { 8 };
    gb *b = base();
    gb_tensor(b, "w", FR_F32, 1, ne, NULL, 32);
    CHECK_FORMAT(b, "tensor w: duplicate tensor name");
}

TEST(gguf_empty_tensor_name) {
    static const int64_t ne[1] = { 8 };
    CHECK_FORMAT(with_info("", 1, ne, FR_F32, 0), "tensor #1: empty tensor name");
}

TEST(gguf_overlong_tensor_name) {
    char name[65];
    memset(name, 'x', 64);
    name[64] = 0;
    static const int64_t ne[1] = { 8 };
    CHECK_FORMAT(with_info(name, 1, ne, FR_F32, 0), "tensor #1: tensor name is 64 bytes, the limit is 63");
}

TEST(gguf_tensor_name_past_eof) {
    uint8_t raw[8];
    gb *b = base();
    gb_tensor_bytes(b, raw, gb_enc_u64(raw, 0, 1000000));
    CHECK_FORMAT(b, "tensor #1: tensor name length 1000000 runs past the end");
}

TEST(gguf_n_tensors_more_than_present) {
    gb *b = base();
    gb_set_n_tensors(b, 2);
    CHECK_FORMAT(b, "GGUF tensor #1");
}
