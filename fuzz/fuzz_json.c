/*
 * fuzz_json.c - libFuzzer target: JSON mode, schema compiler and machine.
 *
 * Input: a JSON Schema, a NUL byte, then the text to write. Without a NUL,
 * no schema: plain JSON mode (any object when byte 0 is odd, else any
 * value) over the rest of the input. The constraint is optional (plain
 * text unless the text begins with '{') when bit 2 of byte 0 is set
 * without a schema, or when the text after the NUL begins with byte 1. The constraint works over a vocabulary of
 * the 256 bytes and one end-of-generation token (256), and the text is
 * accepted byte by byte until one is refused.
 *
 * Checks: a schema compiles, or fails with a message; a refused byte
 * leaves the state as it was; the sampler's mask allows exactly the
 * tokens frugal_json_allows does, where the text stopped; a text taken
 * whole with the end allowed is JSON (cJSON parses all of it), an object
 * in object mode; optional, a text that does not begin with '{' (after
 * whitespace) is taken whole.
 */
#include <cjson/cJSON.h>
#include <string.h>
#include "fuzz.h"
#include "json_mode.h"

enum { N_TOK = 257, END = 256 };

static frugal_json *byte_constraint(fr_schema *schema) {
    static char bytes[256];
    static const char *piece[N_TOK];
    static int len[N_TOK];
    static bool eog[N_TOK];
    for (int b = 0; b < 256; b++) bytes[b] = (char)b, piece[b] = &bytes[b], len[b] = 1;
    eog[END] = true;
    frugal_json *j = NULL;
    return fr_json_new_vocab(N_TOK, piece, len, eog, schema, &j) ? NULL : j;
}

/* Whether text[0..n) is one JSON value and nothing else (whitespace aside). */
static bool is_json(const uint8_t *text, size_t n, bool *object) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts((const char *)text, n, &end, false);
    if (!v) return false;
    *object = cJSON_IsObject(v);
    cJSON_Delete(v);
    for (const char *p = end; p < (const char *)text + n; p++)
        if (!strchr(" \t\r\n", *p) || !*p) return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul && size == 0) return 0;
    const uint8_t *text = nul ? nul + 1 : data + 1;
    size_t n = size - (size_t)(text - data);
    bool object_only = !nul && data[0] & 1;
    bool optional = nul ? n && text[0] == 1 : (data[0] & 4) != 0;
    if (nul && optional) text++, n--;
    fr_schema *schema = NULL;
    frugal_status st = nul ? fr_schema_compile((const char *)data, (size_t)(nul - data), &schema)
                           : fr_schema_any(object_only, &schema);
    if (st) {
        FUZZ_CHECK(!schema && frugal_last_error()[0]);
        return 0;
    }
    frugal_json *j = byte_constraint(schema);
    FUZZ_CHECK(j != NULL && frugal_json_set_optional(j, optional) == FRUGAL_OK);
    size_t first = 0; /* the first byte other than whitespace */
    while (first < n && strchr(" \t\r\n", text[first]) && text[first]) first++;
    bool held = !optional || (first < n && text[first] == '{');
    size_t taken = 0;
    while (taken < n && frugal_json_accept(j, text[taken])) taken++;
    if (taken < n) FUZZ_CHECK(!frugal_json_allows(j, text[taken])); /* refused, and still refused */
    static float logits[N_TOK], out[N_TOK];
    int allowed = fr_json_mask(j, logits, out, N_TOK), count = 0;
    for (int t = 0; t < N_TOK; t++) {
        bool a = frugal_json_allows(j, t);
        FUZZ_CHECK(a == (out[t] == 0.0f));
        count += a;
    }
    FUZZ_CHECK(allowed == count);
    bool object = false;
    if (!held && first < n) FUZZ_CHECK(taken == n && frugal_json_allows(j, END));
    if (held && taken == n && frugal_json_allows(j, END) && (!optional || first < n)) {
        FUZZ_CHECK(is_json(text, n, &object));
        FUZZ_CHECK(!(object_only || optional) || object);
    }
    frugal_json_free(j);
    return 0;
}
