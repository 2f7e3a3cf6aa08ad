/*
 * json_constraint.c - JSON mode (json_constraint.h): the byte-level
 * recogniser, and the constraint the sampler consults (frugal.h).
 *
 * The sampler draws a token as usual and asks the constraint whether it
 * may come next; only when it may not are all the vocabulary's tokens
 * tried and the disallowed ones masked before drawing again (sampler.c).
 * Drawing first and masking only on a miss gives the same distribution
 * as masking first (P(t) = p(t) + (1 - p(allowed)) p(t) / p(allowed) =
 * p(t) / p(allowed)), and in most steps a model that was asked for JSON
 * proposes an allowed token, so the ~1 ms scan of the vocabulary is rare.
 *
 * Tokens never allowed: control tokens (they decode to their markup, such
 * as "<|im_start|>", which is no part of the JSON text) and tokens that
 * decode to nothing. End-of-generation tokens are allowed once the text
 * is a complete value, and only then.
 */
#include <math.h>
#include <string.h>
#include "common.h"
#include "json_constraint.h"
#include "model.h"
#include "tokenizer.h"

enum {
    M_VALUE,        /* a value */
    M_ARRAY_FIRST,  /* after '[': a value or ']' */
    M_OBJECT_FIRST, /* after '{': a key or '}' */
    M_KEY,          /* after ',' in an object: a key */
    M_COLON,        /* after a key */
    M_AFTER,        /* after a value in a container: ',' or its closer */
    M_CLOSED,       /* the whole value is done */
    M_STRING, M_ESCAPE, M_HEX, M_UTF8,
    M_LITERAL,      /* true, false, null: sub = which, run = bytes matched */
    /* a number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
    M_NUM_MINUS, M_NUM_ZERO, M_NUM_INT, M_NUM_DOT, M_NUM_FRAC, M_NUM_E, M_NUM_ESIGN, M_NUM_EXP,
};

static const char *const LITERALS[] = { "true", "false", "null" };

void fr_json_init(fr_json_state *st, bool object_only) {
    *st = (fr_json_state){ .mode = M_VALUE, .object_only = object_only };
}

static bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static bool is_hex(uint8_t c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static bool in_object(const fr_json_state *st) { return st->depth && st->objects >> (st->depth - 1) & 1; }
static bool number_may_end(uint8_t m) {
    return m == M_NUM_ZERO || m == M_NUM_INT || m == M_NUM_FRAC || m == M_NUM_EXP;
}

static void end_value(fr_json_state *st) {
    st->mode = st->depth ? M_AFTER : M_CLOSED;
    st->run = 0;
}

static bool open_container(fr_json_state *st, bool object) {
    if (st->depth == FR_JSON_MAX_DEPTH) return false;
    st->objects = (st->objects & ~(1ull << st->depth)) | (uint64_t)object << st->depth;
    st->depth++;
    st->mode = object ? M_OBJECT_FIRST : M_ARRAY_FIRST;
    st->run = 0;
    return true;
}

static bool close_container(fr_json_state *st, bool object) {
    if (!st->depth || in_object(st) != object) return false;
    st->depth--;
    end_value(st);
    return true;
}

/* The first byte of a value. */
static bool start_value(fr_json_state *st, uint8_t c) {
    if (st->object_only && st->depth == 0) return c == '{' && open_container(st, true);
    st->run = 1;
    switch (c) {
    case '{': return open_container(st, true);
    case '[': return open_container(st, false);
    case '"': st->mode = M_STRING, st->key = false; return true;
    case '-': st->mode = M_NUM_MINUS; return true;
    case '0': st->mode = M_NUM_ZERO; return true;
    case 't': st->mode = M_LITERAL, st->sub = 0; return true;
    case 'f': st->mode = M_LITERAL, st->sub = 1; return true;
    case 'n': st->mode = M_LITERAL, st->sub = 2; return true;
    default:
        if (c >= '1' && c <= '9') { st->mode = M_NUM_INT; return true; }
        return false;
    }
}

/* A byte of a string after '"'. UTF-8 is checked as in RFC 3629: the
 * second byte's range depends on the first (no overlongs, no surrogates,
 * nothing above U+10FFFF). */
static bool string_byte(fr_json_state *st, uint8_t c) {
    if (c == '"') {
        if (st->key) st->mode = M_COLON, st->run = 0;
        else end_value(st);
        return true;
    }
    if (c == '\\') { st->mode = M_ESCAPE; return true; }
    if (c < 0x20) return false;
    if (c < 0x80) return true;
    st->cont_lo = 0x80, st->cont_hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) st->cont_left = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        st->cont_left = 2;
        if (c == 0xE0) st->cont_lo = 0xA0;
        if (c == 0xED) st->cont_hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        st->cont_left = 3;
        if (c == 0xF0) st->cont_lo = 0x90;
        if (c == 0xF4) st->cont_hi = 0x8F;
    } else {
        return false;
    }
    st->mode = M_UTF8;
    return true;
}

/* A byte in a number; one that ends it is handed on to what follows. */
static bool number_byte(fr_json_state *st, uint8_t c);

/* One byte in a structural position (between tokens of the grammar). */
static bool structural_byte(fr_json_state *st, uint8_t c) {
    if (is_space(c)) return ++st->run <= FR_JSON_MAX_SPACE;
    st->run = 0;
    switch (st->mode) {
    case M_VALUE: return start_value(st, c);
    case M_ARRAY_FIRST: return c == ']' ? close_container(st, false) : start_value(st, c);
    case M_OBJECT_FIRST:
    case M_KEY:
        if (c == '}' && st->mode == M_OBJECT_FIRST) return close_container(st, true);
        if (c != '"') return false;
        st->mode = M_STRING, st->key = true;
        return true;
    case M_COLON:
        if (c != ':') return false;
        st->mode = M_VALUE;
        return true;
    case M_AFTER:
        if (c == ',') { st->mode = in_object(st) ? M_KEY : M_VALUE; return true; }
        if (c == '}' || c == ']') return close_container(st, c == '}');
        return false;
    default: /* M_CLOSED */
        return false;
    }
}

static bool number_byte(fr_json_state *st, uint8_t c) {
    uint8_t m = st->mode;
    bool digit = is_digit(c);
    if (number_may_end(m) && !digit && c != '.' && c != 'e' && c != 'E') {
        end_value(st);
        return structural_byte(st, c);
    }
    if (m == M_NUM_EXP && !digit) return false; /* ('.' or 'e' after the exponent) */
    if (++st->run > FR_JSON_MAX_NUMBER) return false;
    switch (m) {
    case M_NUM_MINUS:
        if (!digit) return false;
        st->mode = c == '0' ? M_NUM_ZERO : M_NUM_INT;
        return true;
    case M_NUM_ZERO:
    case M_NUM_INT:
        if (digit) return m == M_NUM_INT;
        st->mode = c == '.' ? M_NUM_DOT : M_NUM_E;
        return true;
    case M_NUM_DOT: st->mode = M_NUM_FRAC; return digit;
    case M_NUM_FRAC:
        if (digit) return true;
        if (c == '.') return false;
        st->mode = M_NUM_E;
        return true;
    case M_NUM_E:
        st->mode = digit ? M_NUM_EXP : M_NUM_ESIGN;
        return digit || c == '+' || c == '-';
    case M_NUM_ESIGN: st->mode = M_NUM_EXP; return digit;
    default: return digit; /* M_NUM_EXP */
    }
}

static bool step(fr_json_state *st, uint8_t c) {
    switch (st->mode) {
    case M_STRING: return string_byte(st, c);
    case M_ESCAPE:
        if (c == 'u') { st->mode = M_HEX, st->sub = 4; return true; }
        st->mode = M_STRING;
        return c && strchr("\"\\/bfnrt", c);
    case M_HEX:
        if (!is_hex(c)) return false;
        if (--st->sub == 0) st->mode = M_STRING;
        return true;
    case M_UTF8:
        if (c < st->cont_lo || c > st->cont_hi) return false;
        st->cont_lo = 0x80, st->cont_hi = 0xBF;
        if (--st->cont_left == 0) st->mode = M_STRING;
        return true;
    case M_LITERAL: {
        const char *lit = LITERALS[st->sub];
        if (c != (uint8_t)lit[st->run]) return false;
        if (lit[++st->run] == 0) end_value(st);
        return true;
    }
    default:
        if (st->mode >= M_NUM_MINUS) return number_byte(st, c);
        return structural_byte(st, c);
    }
}

bool fr_json_feed(fr_json_state *st, const uint8_t *bytes, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!step(st, bytes[i])) return false;
    return true;
}

bool fr_json_complete(const fr_json_state *st) {
    return st->mode == M_CLOSED || (st->depth == 0 && number_may_end(st->mode));
}

bool fr_json_closed(const fr_json_state *st) { return st->mode == M_CLOSED; }

/* ---- The constraint over a model's vocabulary ---------------------------- */

enum { TOK_TEXT, TOK_EOG, TOK_NEVER };

struct frugal_json {
    fr_json_state st;
    bool object_only;
    int n_vocab;
    uint8_t *kind;      /* [n_vocab] TOK_* */
    uint32_t *off;      /* [n_vocab + 1] token t's bytes: bytes[off[t] .. off[t + 1]) */
    uint8_t *bytes;
};

frugal_status fr_json_new_vocab(int n, const char *const *piece, const int *len, const bool *eog, bool object_only,
                                frugal_json **out) {
    *out = NULL;
    size_t total = 0;
    for (int t = 0; t < n; t++) total += piece[t] && !eog[t] && len[t] > 0 ? (size_t)len[t] : 0;
    frugal_json *j = fr_calloc(1, sizeof *j);
    if (j) {
        j->kind = fr_malloc((size_t)n + 1);
        j->off = fr_malloc(((size_t)n + 1) * sizeof *j->off);
        j->bytes = fr_malloc(total + 1);
    }
    if (!j || !j->kind || !j->off || !j->bytes || total > UINT32_MAX) {
        frugal_json_free(j);
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the JSON constraint");
    }
    size_t used = 0;
    for (int t = 0; t < n; t++) {
        j->off[t] = (uint32_t)used;
        j->kind[t] = eog[t] ? TOK_EOG : piece[t] && len[t] > 0 ? TOK_TEXT : TOK_NEVER;
        if (j->kind[t] != TOK_TEXT) continue;
        memcpy(j->bytes + used, piece[t], (size_t)len[t]);
        used += (size_t)len[t];
    }
    j->off[n] = (uint32_t)used;
    j->n_vocab = n;
    j->object_only = object_only;
    fr_json_init(&j->st, object_only);
    *out = j;
    return FRUGAL_OK;
}

/* Token t's bytes appended to *buf (grown as needed); -1: out of memory. */
static int append_token(const fr_tokenizer *tok, int32_t t, char **buf, size_t *used, size_t *cap) {
    for (;;) {
        int len = fr_token_to_bytes(tok, t, *buf + *used, (int)FR_MIN(*cap - *used, (size_t)INT32_MAX));
        if (len <= 0 || *used + (size_t)len <= *cap) {
            if (len > 0) *used += (size_t)len;
            return FR_MAX(len, 0);
        }
        char *b = fr_realloc(*buf, *cap * 2 + (size_t)len);
        if (!b) return -1;
        *buf = b, *cap = *cap * 2 + (size_t)len;
    }
}

/* The model's tokens as the bytes they decode to; control, unknown and
 * unused tokens, and ids past the tokenizer's vocabulary (padded output
 * rows), are never allowed. */
frugal_status frugal_json_new(const frugal_model *m, bool object_only, frugal_json **out) {
    if (!m || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_json_new");
    *out = NULL;
    int n = m->hp.n_vocab, n_tok = fr_tokenizer_n_vocab(m->tok);
    size_t cap = (size_t)n * 8 + 256, used = 0;
    char *text = fr_malloc(cap);
    const char **piece = fr_calloc((size_t)n + 1, sizeof *piece);
    int *len = fr_calloc((size_t)n + 1, sizeof *len);
    size_t *at = fr_calloc((size_t)n + 1, sizeof *at);
    bool *eog = fr_calloc((size_t)n + 1, sizeof *eog);
    frugal_status st = FRUGAL_ERR_NOMEM;
    bool ok = text && piece && len && at && eog;
    for (int t = 0; ok && t < n && t < n_tok; t++) {
        int type = fr_tokenizer_token_type(m->tok, t);
        eog[t] = fr_tokenizer_is_eog(m->tok, t);
        if (eog[t] || type == FR_TOK_CONTROL || type == FR_TOK_UNUSED || type == FR_TOK_UNKNOWN) continue;
        at[t] = used;
        ok = (len[t] = append_token(m->tok, t, &text, &used, &cap)) >= 0;
    }
    for (int t = 0; ok && t < n; t++) piece[t] = len[t] > 0 ? text + at[t] : NULL;
    if (ok) st = fr_json_new_vocab(n, piece, len, eog, object_only, out);
    else fr_error(st, "out of memory for the JSON constraint");
    fr_free(text), fr_free(piece), fr_free(len), fr_free(at), fr_free(eog);
    return st;
}

void frugal_json_free(frugal_json *j) {
    if (!j) return;
    fr_free(j->kind);
    fr_free(j->off);
    fr_free(j->bytes);
    fr_free(j);
}

void frugal_json_reset(frugal_json *j) { fr_json_init(&j->st, j->object_only); }

/* Whether token t may follow, and the state after it in *next. */
static bool try_token(const frugal_json *j, int32_t t, fr_json_state *next) {
    if (t < 0 || t >= j->n_vocab || j->kind[t] == TOK_NEVER) return false;
    *next = j->st;
    if (j->kind[t] == TOK_EOG) return fr_json_complete(&j->st);
    return fr_json_feed(next, j->bytes + j->off[t], j->off[t + 1] - j->off[t]);
}

bool frugal_json_allows(const frugal_json *j, int32_t token) {
    fr_json_state next;
    return try_token(j, token, &next);
}

bool frugal_json_accept(frugal_json *j, int32_t token) {
    fr_json_state next;
    if (!try_token(j, token, &next)) return false;
    j->st = next;
    return true;
}

bool frugal_json_done(const frugal_json *j) { return fr_json_closed(&j->st); }

int fr_json_mask(const frugal_json *j, const float *logits, float *out, int n) {
    int allowed = 0;
    for (int t = 0; t < n; t++) {
        bool ok = frugal_json_allows(j, t);
        out[t] = ok ? logits[t] : -INFINITY;
        allowed += ok;
    }
    return allowed;
}
