/*
 * json_schema.h - a JSON Schema compiled for JSON mode: a table of nodes
 * that the constraint's machine (json_constraint.c) walks as the value is
 * written, one frame per open object, array or value.
 *
 * The subset (json_schema.c says what is refused, and why): objects with
 * properties (written in the schema's order; those not required may be
 * left out; no others), arrays with items, minItems and maxItems,
 * strings, numbers, integers, booleans, null, enum and const, type lists
 * and anyOf whose alternatives begin with different bytes (objects may
 * share '{' when their first property is a required constant that tells
 * them apart: a discriminated union), $ref to the schema's $defs
 * (recursion included). A node of kind S_ANY is any JSON
 * value (any object with object_only), checked by the byte-level
 * recogniser of json_constraint.h.
 */
#ifndef FR_JSON_SCHEMA_H
#define FR_JSON_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "frugal.h"

#define FR_SCHEMA_MAX_NODES 4096
#define FR_SCHEMA_MAX_CHOICES 64 /* properties of an object, values of an enum, alternatives of a union */

enum fr_schema_kind { S_ANY, S_OBJECT, S_ARRAY, S_STRING, S_NUMBER, S_INTEGER, S_BOOLEAN, S_NULL, S_LITERALS, S_UNION };

typedef struct {
    uint8_t kind;         /* enum fr_schema_kind */
    bool object_only;     /* S_ANY: only an object */
    bool dispatch;        /* S_OBJECT standing for a union of objects: its one property's value, an
                           * S_LITERALS whose entries name the alternative (entry.node), picks which */
    uint16_t n;           /* S_OBJECT: properties; S_LITERALS: values; S_UNION: alternatives */
    uint32_t first;       /* ... from entries[first] on */
    uint64_t required;    /* S_OBJECT: bit i = property i is required */
    uint32_t items;       /* S_ARRAY: the node of its elements */
    uint32_t min_items, max_items;
    uint64_t starts[4];   /* the bytes a value of this node can begin with */
} fr_schema_node;

/* An object's property (its key as a JSON string, quotes included, and
 * the node of its value), an enum's value as JSON text (in a dispatch
 * node's literals, with the alternative it picks as node), or a union's
 * alternative (node). */
typedef struct {
    uint32_t text, len;   /* in fr_schema.text */
    uint32_t node;
} fr_schema_entry;

typedef struct fr_schema {
    fr_schema_node *nodes;
    int n_nodes, cap_nodes;
    fr_schema_entry *entries;
    int n_entries, cap_entries;
    char *text;
    size_t text_len, text_cap;
} fr_schema;

/* One node, any value (any object with object_only): plain JSON mode. */
frugal_status fr_schema_any(bool object_only, fr_schema **out);
/* Compiles a schema given as JSON text; FRUGAL_ERR_INVALID_ARG with a
 * message saying what is wrong or not supported. */
frugal_status fr_schema_compile(const char *json, size_t len, fr_schema **out);
void fr_schema_free(fr_schema *s);

static inline bool fr_schema_starts(const fr_schema_node *n, uint8_t c) { return n->starts[c >> 6] >> (c & 63) & 1; }

#endif
