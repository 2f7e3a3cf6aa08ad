/*
 * json_constraint.c - the byte-level JSON recogniser (json_constraint.h).
 * json_mode.c drives it for JSON values and walks a schema around it.
 */
#include <string.h>
#include "common.h"
#include "json_constraint.h"

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

void fr_json_init(fr_json_state *st, bool object_only, bool integer) {
    *st = (fr_json_state){ .mode = M_VALUE, .object_only = object_only, .integer = integer };
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
    if (is_space(c)) return fr_json_space(&st->run, c);
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
    if (st->integer && !digit) return false; /* no fraction, no exponent */
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
