/*
 * json_constraint.h - JSON mode: a byte-level recogniser of JSON text
 * (RFC 8259) that says, byte by byte, whether what it has seen can still
 * be the beginning of one JSON value. json_mode.c runs it for the values
 * a schema leaves open (or the whole reply, without a schema), and the
 * sampler asks json_mode.c, token by token, which tokens may come next
 * (frugal_json_* in frugal.h).
 *
 * It is a pushdown automaton: a state, a count, and a stack of one bit
 * per open container (object or array), at most FR_JSON_MAX_DEPTH deep.
 * A state is a small plain struct, so trying a token is copying it and
 * feeding the token's bytes to the copy.
 *
 * Beyond the grammar, three limits keep a model from running on forever
 * inside a value the grammar allows without end: whitespace runs of at
 * most FR_JSON_MAX_SPACE bytes and one line break (fr_json_space),
 * numbers of at most FR_JSON_MAX_NUMBER bytes, and nesting at most
 * FR_JSON_MAX_DEPTH. Strings must be valid
 * UTF-8 (no overlongs, no surrogates) without control characters.
 */
#ifndef FR_JSON_CONSTRAINT_H
#define FR_JSON_CONSTRAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FR_JSON_MAX_DEPTH 64
#define FR_JSON_MAX_SPACE 64
#define FR_JSON_MAX_NUMBER 64

typedef struct {
    uint8_t mode;        /* what the next byte may be (json_constraint.c) */
    uint8_t sub;         /* within mode: literal and position, hex digits left, ... */
    uint8_t cont_lo, cont_hi; /* a multi-byte character: the next byte's range */
    uint8_t cont_left;   /* continuation bytes still to come */
    bool key;            /* the string being read is an object's key */
    bool object_only;    /* the value must be an object */
    bool integer;        /* a number must be an integer: no fraction, no exponent */
    uint16_t run;        /* bytes of the current whitespace run or number */
    uint16_t depth;      /* open containers */
    uint64_t objects;    /* bit d: container d is an object (else an array) */
} fr_json_state;

_Static_assert(FR_JSON_MAX_DEPTH <= 64, "one bit per open container in a uint64_t");

/* One whitespace byte between tokens, *run counting the run so far (0 at
 * its start): at most FR_JSON_MAX_SPACE bytes and one line break, which
 * sets FR_JSON_RUN_BREAK in *run. Why one: without it a small model can
 * fill a reply with blank lines ("]\n\n,\n", "\n   \n  \n"), all valid
 * JSON; with it, a run is spaces (and tabs) with at most one line
 * break among them, such as a line break and its indentation. */
#define FR_JSON_RUN_BREAK 0x8000u
static inline bool fr_json_space(uint16_t *run, uint8_t c) {
    if (c == '\n') {
        if (*run & FR_JSON_RUN_BREAK) return false;
        *run |= FR_JSON_RUN_BREAK;
    }
    *run = (uint16_t)(*run + 1);
    return (*run & ~FR_JSON_RUN_BREAK) <= FR_JSON_MAX_SPACE;
}

/* A value (an object with object_only; a number without fraction or
 * exponent with integer). */
void fr_json_init(fr_json_state *st, bool object_only, bool integer);
/* Feeds bytes; false (st then undefined) when they cannot continue a
 * JSON value. */
bool fr_json_feed(fr_json_state *st, const uint8_t *bytes, size_t n);
/* The text so far is a whole JSON value (a number may still go on). */
bool fr_json_complete(const fr_json_state *st);
/* The value is closed: nothing but whitespace may follow. */
bool fr_json_closed(const fr_json_state *st);

#endif
