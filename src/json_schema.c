/*
 * json_schema.c - compiling a JSON Schema (as JSON text, parsed with
 * cJSON) into the node table of json_schema.h.
 *
 * What a schema asks for must be what JSON mode writes: a keyword that
 * constrains values in a way the machine cannot follow (pattern,
 * minimum, minLength, not, ...) is refused with a message rather than
 * ignored, so a reply never fails the schema it was asked to satisfy.
 * Annotations (title, description, default, examples, format, which
 * JSON Schema 2020-12 leaves as an annotation) are ignored.
 *
 * The machine picks a union's alternative from the first byte of the
 * value, so the alternatives must begin with different bytes: ["string",
 * "null"], an object or null, a number or a string all do; two objects
 * do not and are refused. $ref points into $defs or definitions (or at
 * "#"); each target is compiled once, which is what makes recursion work.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"
#include "json_schema.h"

#define MAX_NESTING 64       /* schema objects inside schema objects */
#define MAX_TEXT (1u << 20)  /* bytes of keys and enum values */
#define MAX_REFS 256         /* distinct $ref targets */
#define MAX_SIZE (1u << 30)  /* minItems, maxItems */

typedef struct {
    fr_schema *s;
    const cJSON *root;
    const cJSON *ref_target[MAX_REFS];
    uint32_t ref_node[MAX_REFS];
    int n_refs;
    char err[256];
} compiler;

static const cJSON *get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static int fail(compiler *c, const char *fmt, const char *arg) {
    if (!c->err[0]) snprintf(c->err, sizeof c->err, fmt, arg);
    return -1;
}

static bool grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return true;
    int cap2 = *cap ? *cap * 2 : 16;
    while (cap2 < need) cap2 *= 2;
    void *q = fr_realloc(*p, (size_t)cap2 * size);
    if (!q) return false;
    *p = q, *cap = cap2;
    return true;
}

static int new_node(compiler *c, int kind) {
    fr_schema *s = c->s;
    if (s->n_nodes >= FR_SCHEMA_MAX_NODES) return fail(c, "the schema has more than %s nodes", "4096");
    if (!grow((void **)&s->nodes, &s->cap_nodes, s->n_nodes + 1, sizeof *s->nodes))
        return fail(c, "%s", "out of memory");
    s->nodes[s->n_nodes] = (fr_schema_node){ .kind = (uint8_t)kind, .max_items = MAX_SIZE };
    return s->n_nodes++;
}

/* Appends text; its offset, or -1. */
static int64_t add_text(compiler *c, const char *t, size_t n) {
    fr_schema *s = c->s;
    if (s->text_len + n > MAX_TEXT) return fail(c, "the schema's keys and values exceed %s", "1 MiB");
    if (s->text_len + n > s->text_cap) {
        size_t cap = (s->text_len + n) * 2;
        char *q = fr_realloc(s->text, cap);
        if (!q) return fail(c, "%s", "out of memory");
        s->text = q, s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, t, n);
    s->text_len += n;
    return (int64_t)(s->text_len - n);
}

/* The node's entries: n of them, texts and nodes given (text NULL: none). */
static bool add_entries(compiler *c, int node, char *const *text, const uint32_t *child, int n) {
    fr_schema *s = c->s;
    if (!grow((void **)&s->entries, &s->cap_entries, s->n_entries + n, sizeof *s->entries)) {
        fail(c, "%s", "out of memory");
        return false;
    }
    s->nodes[node].first = (uint32_t)s->n_entries;
    s->nodes[node].n = (uint16_t)n;
    for (int i = 0; i < n; i++) {
        fr_schema_entry *e = &s->entries[s->n_entries + i];
        *e = (fr_schema_entry){ .node = child ? child[i] : 0 };
        if (text) {
            int64_t at = add_text(c, text[i], strlen(text[i]));
            if (at < 0) return false;
            e->text = (uint32_t)at, e->len = (uint32_t)strlen(text[i]);
        }
    }
    s->n_entries += n;
    return true;
}

static const char *const REFUSED[] = {
    "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "not", "if", "then", "else", "patternProperties", "propertyNames", "dependentRequired",
    "dependentSchemas", "dependencies", "minProperties", "maxProperties", "uniqueItems", "contains",
    "minContains", "maxContains", "prefixItems", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
};

static int compile(compiler *c, const cJSON *sch, int depth);

/* A $ref's target, compiled once: recursion finds the node it is filling. */
static int compile_ref(compiler *c, const cJSON *ref, int depth) {
    if (!cJSON_IsString(ref)) return fail(c, "%s must be a string", "'$ref'");
    const char *r = ref->valuestring;
    const cJSON *target = NULL;
    if (!strcmp(r, "#")) target = c->root;
    else if (!strncmp(r, "#/$defs/", 8)) target = get(get(c->root, "$defs"), r + 8);
    else if (!strncmp(r, "#/definitions/", 14))
        target = get(get(c->root, "definitions"), r + 14);
    else return fail(c, "'$ref': \"%.100s\" is not \"#\" or \"#/$defs/NAME\"", r);
    if (!target) return fail(c, "'$ref': \"%.100s\" names no definition", r);
    for (int i = 0; i < c->n_refs; i++)
        if (c->ref_target[i] == target) return (int)c->ref_node[i];
    if (c->n_refs == MAX_REFS) return fail(c, "the schema has more than %s $ref targets", "256");
    int node = new_node(c, S_ANY);
    if (node < 0) return -1;
    c->ref_target[c->n_refs] = target;
    c->ref_node[c->n_refs++] = (uint32_t)node;
    int body = compile(c, target, depth + 1);
    if (body < 0) return -1;
    c->s->nodes[node] = c->s->nodes[body];
    return node;
}

/* A JSON string's text, quotes included (fr_free it). */
static char *quoted(compiler *c, const char *s) {
    cJSON *str = cJSON_CreateString(s);
    char *printed = str ? cJSON_PrintUnformatted(str) : NULL;
    cJSON_Delete(str);
    char *out = printed ? fr_strndup(printed, strlen(printed)) : NULL;
    free(printed);
    if (!out) fail(c, "%s", "out of memory");
    return out;
}

static int compile_object(compiler *c, const cJSON *sch, int depth) {
    const cJSON *props = get(sch, "properties");
    const cJSON *req = get(sch, "required");
    const cJSON *extra = get(sch, "additionalProperties");
    if (props && !cJSON_IsObject(props)) return fail(c, "%s must be an object", "'properties'");
    if (req && !cJSON_IsArray(req)) return fail(c, "%s must be an array of property names", "'required'");
    int n = cJSON_GetArraySize(props);
    if (!n && extra && !cJSON_IsBool(extra))
        return fail(c, "%s", "'additionalProperties' as a schema (a map of any keys) is not supported");
    if (!n && !cJSON_GetArraySize(req) && !cJSON_IsFalse(extra)) { /* any object */
        int node = new_node(c, S_ANY);
        if (node >= 0) c->s->nodes[node].object_only = true;
        return node;
    }
    if (n > FR_SCHEMA_MAX_CHOICES) return fail(c, "an object has more than %s properties", "64");
    char *keys[FR_SCHEMA_MAX_CHOICES] = { 0 };
    uint32_t child[FR_SCHEMA_MAX_CHOICES];
    int node = new_node(c, S_OBJECT), i = 0, ok = node >= 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, props) {
        int v = ok ? compile(c, p, depth + 1) : -1;
        if (v < 0 || !(keys[i] = quoted(c, p->string))) { ok = 0; break; }
        child[i++] = (uint32_t)v;
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, req) {
        if (!ok) break;
        int k = 0;
        for (const cJSON *q = props ? props->child : NULL; q; q = q->next, k++)
            if (cJSON_IsString(r) && !strcmp(q->string, r->valuestring)) break;
        if (k == n) {
            fail(c, "'required' names \"%.100s\", which is not in 'properties'",
                 cJSON_IsString(r) ? r->valuestring : "(not a string)");
            ok = 0;
            break;
        }
        c->s->nodes[node].required |= 1ull << k;
    }
    ok = ok && add_entries(c, node, keys, child, n);
    for (int k = 0; k < n; k++) fr_free(keys[k]);
    return ok ? node : -1;
}

static int read_size(compiler *c, const cJSON *sch, const char *name, uint32_t *out) {
    const cJSON *v = get(sch, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > MAX_SIZE || v->valuedouble != (int)v->valuedouble)
        return fail(c, "'%s' must be a non-negative integer", name);
    *out = (uint32_t)v->valuedouble;
    return 0;
}

static int compile_array(compiler *c, const cJSON *sch, int depth) {
    const cJSON *items = get(sch, "items");
    int node = new_node(c, S_ARRAY);
    if (node < 0) return -1;
    uint32_t lo = 0, hi = MAX_SIZE;
    if (read_size(c, sch, "minItems", &lo) || read_size(c, sch, "maxItems", &hi)) return -1;
    if (cJSON_IsFalse(items)) hi = 0, items = NULL; /* only [] */
    if (lo > hi) return fail(c, "%s", "'minItems' is above 'maxItems' (or 'items' is false)");
    int it = items ? compile(c, items, depth + 1) : new_node(c, S_ANY);
    if (it < 0) return -1;
    fr_schema_node *n = &c->s->nodes[node];
    n->items = (uint32_t)it, n->min_items = lo, n->max_items = hi;
    return node;
}

static int compile_typed(compiler *c, const cJSON *sch, const char *type, int depth) {
    static const struct { const char *name; int kind; } simple[] = {
        { "string", S_STRING }, { "number", S_NUMBER }, { "integer", S_INTEGER }, { "boolean", S_BOOLEAN },
        { "null", S_NULL },
    };
    if (!strcmp(type, "object")) return compile_object(c, sch, depth);
    if (!strcmp(type, "array")) return compile_array(c, sch, depth);
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++)
        if (!strcmp(type, simple[i].name)) return new_node(c, simple[i].kind);
    return fail(c, "'type': \"%.100s\" is not a JSON Schema type", type);
}

/* enum or const: the values as JSON text. */
static int compile_literals(compiler *c, const cJSON *values, bool one) {
    int n = one ? 1 : cJSON_GetArraySize(values);
    if (!one && (!cJSON_IsArray(values) || n == 0)) return fail(c, "%s must be a non-empty array", "'enum'");
    if (n > FR_SCHEMA_MAX_CHOICES) return fail(c, "'enum' has more than %s values", "64");
    char *text[FR_SCHEMA_MAX_CHOICES] = { 0 };
    int node = new_node(c, S_LITERALS), i = 0;
    bool ok = node >= 0;
    for (const cJSON *v = one ? values : values->child; ok && v && i < n; v = v->next, i++) {
        char *printed = cJSON_PrintUnformatted(v);
        text[i] = printed ? fr_strndup(printed, strlen(printed)) : NULL;
        free(printed);
        if (!text[i]) {
            fail(c, "%s", "out of memory");
            ok = false;
        }
    }
    ok = ok && add_entries(c, node, text, NULL, n);
    for (int k = 0; k < n; k++) fr_free(text[k]);
    return ok ? node : -1;
}

/* A union of the alternatives (schemas, or type names with the rest of sch). */
static int compile_union(compiler *c, const cJSON *alts, const cJSON *sch, int depth) {
    int n = cJSON_GetArraySize(alts);
    if (n == 0) return fail(c, "%s", "'anyOf', 'oneOf' and a 'type' list must not be empty");
    if (n > FR_SCHEMA_MAX_CHOICES) return fail(c, "a union has more than %s alternatives", "64");
    uint32_t child[FR_SCHEMA_MAX_CHOICES];
    int node = new_node(c, S_UNION), i = 0;
    if (node < 0) return -1;
    const cJSON *a;
    cJSON_ArrayForEach(a, alts) {
        if (sch && !cJSON_IsString(a)) return fail(c, "%s", "'type' must be a string or a list of strings");
        int v = sch ? compile_typed(c, sch, a->valuestring, depth) : compile(c, a, depth + 1);
        if (v < 0) return -1;
        child[i++] = (uint32_t)v;
    }
    return add_entries(c, node, NULL, child, n) ? node : -1;
}

static int compile(compiler *c, const cJSON *sch, int depth) {
    if (depth > MAX_NESTING) return fail(c, "the schema nests deeper than %s levels", "64");
    if (cJSON_IsTrue(sch)) return new_node(c, S_ANY);
    if (cJSON_IsFalse(sch)) return fail(c, "%s", "the schema 'false' allows no value");
    if (!cJSON_IsObject(sch)) return fail(c, "%s", "a schema must be an object or a boolean");
    for (size_t i = 0; i < sizeof REFUSED / sizeof *REFUSED; i++)
        if (get(sch, REFUSED[i]))
            return fail(c, "the schema keyword '%s' is not supported in JSON mode", REFUSED[i]);
    const cJSON *ref = get(sch, "$ref");
    const cJSON *all = get(sch, "allOf");
    const cJSON *any = get(sch, "anyOf");
    const cJSON *type = get(sch, "type");
    if (!any) any = get(sch, "oneOf");
    if (ref) return compile_ref(c, ref, depth);
    if (get(sch, "const")) return compile_literals(c, get(sch, "const"), true);
    if (get(sch, "enum")) return compile_literals(c, get(sch, "enum"), false);
    if (all) {
        if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1)
            return fail(c, "%s", "'allOf' is supported with one schema only");
        return compile(c, all->child, depth + 1);
    }
    if (any) {
        if (!cJSON_IsArray(any)) return fail(c, "%s", "'anyOf' and 'oneOf' must be arrays");
        if (type || get(sch, "properties") || get(sch, "items"))
            return fail(c, "%s", "'anyOf' beside 'type', 'properties' or 'items' is not supported");
        return compile_union(c, any, NULL, depth);
    }
    if (cJSON_IsArray(type)) {
        if (cJSON_GetArraySize(type) == 1 && cJSON_IsString(type->child))
            return compile_typed(c, sch, type->child->valuestring, depth);
        return compile_union(c, type, sch, depth);
    }
    if (type && !cJSON_IsString(type)) return fail(c, "%s", "'type' must be a string or a list of strings");
    if (type) return compile_typed(c, sch, type->valuestring, depth);
    if (get(sch, "properties") || get(sch, "required"))
        return compile_object(c, sch, depth);
    if (get(sch, "items")) return compile_array(c, sch, depth);
    return new_node(c, S_ANY);
}

/* Whether entries a and b hold the same text. */
static bool same_text(const fr_schema *s, const fr_schema_entry *a, const fr_schema_entry *b) {
    return a->len == b->len && !memcmp(s->text + a->text, s->text + b->text, a->len);
}

/* One text a prefix of the other (or equal): the machine could not tell them apart. */
static bool prefix_clash(const fr_schema *s, const fr_schema_entry *a, const fr_schema_entry *b) {
    return !memcmp(s->text + a->text, s->text + b->text, FR_MIN(a->len, b->len));
}

/* A union's object alternatives, which all begin with '{', become one
 * dispatch node when each one's first property is required, has the same
 * key, and a constant (enum or const) value no other alternative's values
 * clash with: {"kind": "circle", ...} or {"kind": "rect", ...}. The
 * dispatch node is an object of that one property, whose value, once
 * written, names the alternative the object goes on as (json_mode.c).
 * Unions that do not qualify are left as they are (and refused below). */
static int dispatch_objects(compiler *c, int u) {
    fr_schema *s = c->s;
    uint32_t objects[FR_SCHEMA_MAX_CHOICES], others[FR_SCHEMA_MAX_CHOICES];
    int n_obj = 0, n_other = 0, n_lit = 0;
    for (int k = 0; k < s->nodes[u].n; k++) {
        uint32_t a = s->entries[s->nodes[u].first + k].node;
        if (s->nodes[a].kind == S_OBJECT && !s->nodes[a].dispatch) objects[n_obj++] = a;
        else others[n_other++] = a;
    }
    if (n_obj < 2) return 0;
    const fr_schema_entry *key0 = NULL;
    fr_schema_entry lits[FR_SCHEMA_MAX_CHOICES];
    for (int i = 0; i < n_obj; i++) {
        const fr_schema_node *a = &s->nodes[objects[i]];
        const fr_schema_entry *key = &s->entries[a->first];
        const fr_schema_node *v = &s->nodes[key->node];
        if (!(a->required & 1) || v->kind != S_LITERALS || (key0 && !same_text(s, key0, key))) return 0;
        key0 = key0 ? key0 : key;
        for (int k = 0; k < v->n; k++) {
            if (n_lit == FR_SCHEMA_MAX_CHOICES) return 0;
            lits[n_lit] = s->entries[v->first + k];
            lits[n_lit].node = objects[i];
            for (int j = 0; j < n_lit; j++)
                if (lits[j].node != objects[i] && prefix_clash(s, &lits[j], &lits[n_lit])) return 0;
            n_lit++;
        }
    }
    fr_schema_entry key = *key0;
    int lit = new_node(c, S_LITERALS), d = lit < 0 ? -1 : new_node(c, S_OBJECT);
    if (d < 0) return -1;
    others[n_other++] = (uint32_t)d;
    if (!add_entries(c, lit, NULL, NULL, n_lit) || !add_entries(c, d, NULL, NULL, 1) ||
        !add_entries(c, u, NULL, others, n_other))
        return -1;
    memcpy(&s->entries[s->nodes[lit].first], lits, (size_t)n_lit * sizeof *lits);
    key.node = (uint32_t)lit;
    s->entries[s->nodes[d].first] = key;
    s->nodes[d].required = 1, s->nodes[d].dispatch = true;
    return 0;
}

static void set_bytes(uint64_t *set, const char *bytes) {
    for (const char *b = bytes; *b; b++) set[(uint8_t)*b >> 6] |= 1ull << ((uint8_t)*b & 63);
}

/* The first bytes of every node; a union's are its alternatives' (to a
 * fixed point: alternatives may be unions, through $refs even), which
 * must not overlap. */
static int compute_starts(compiler *c) {
    fr_schema *s = c->s;
    for (int i = 0, n = s->n_nodes; i < n; i++)
        if (s->nodes[i].kind == S_UNION && dispatch_objects(c, i)) return -1;
    for (int i = 0; i < s->n_nodes; i++) {
        fr_schema_node *n = &s->nodes[i];
        memset(n->starts, 0, sizeof n->starts);
        switch (n->kind) {
        case S_ANY: set_bytes(n->starts, n->object_only ? "{" : "{[\"-0123456789tfn"); break;
        case S_OBJECT: set_bytes(n->starts, "{"); break;
        case S_ARRAY: set_bytes(n->starts, "["); break;
        case S_STRING: set_bytes(n->starts, "\""); break;
        case S_NUMBER: case S_INTEGER: set_bytes(n->starts, "-0123456789"); break;
        case S_BOOLEAN: set_bytes(n->starts, "tf"); break;
        case S_NULL: set_bytes(n->starts, "n"); break;
        case S_LITERALS:
            for (int k = 0; k < n->n; k++) {
                uint8_t b = (uint8_t)s->text[s->entries[n->first + k].text];
                n->starts[b >> 6] |= 1ull << (b & 63);
            }
            break;
        default: break;
        }
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = 0; i < s->n_nodes; i++) {
            fr_schema_node *n = &s->nodes[i];
            if (n->kind != S_UNION) continue;
            for (int k = 0; k < n->n; k++)
                for (int w = 0; w < 4; w++) {
                    uint64_t add = s->nodes[s->entries[n->first + k].node].starts[w] & ~n->starts[w];
                    if (add) n->starts[w] |= add, changed = true;
                }
        }
    }
    for (int i = 0; i < s->n_nodes; i++) {
        const fr_schema_node *n = &s->nodes[i];
        if (!(n->starts[0] | n->starts[1] | n->starts[2] | n->starts[3])) /* ("anyOf": [{"$ref": "#"}]) */
            return fail(c, "%s", "a union of the schema allows no value (it refers only to itself)");
        uint64_t seen[4] = { 0 };
        for (int k = 0; n->kind == S_UNION && k < n->n; k++) {
            const uint64_t *st = s->nodes[s->entries[n->first + k].node].starts;
            for (int w = 0; w < 4; w++) {
                if (seen[w] & st[w]) {
                    char b[2] = { (char)(w * 64 + __builtin_ctzll(seen[w] & st[w])), 0 };
                    return fail(c, "two alternatives of a union ('anyOf', 'oneOf' or a 'type' list) could both "
                                   "begin with '%s': JSON mode picks one by its first byte (objects: by a first "
                                   "property that all have, required, with constant values that differ)", b);
                }
                seen[w] |= st[w];
            }
        }
    }
    return 0;
}

void fr_schema_free(fr_schema *s) {
    if (!s) return;
    fr_free(s->nodes);
    fr_free(s->entries);
    fr_free(s->text);
    fr_free(s);
}

frugal_status fr_schema_any(bool object_only, fr_schema **out) {
    compiler c = { .s = fr_calloc(1, sizeof(fr_schema)) };
    *out = NULL;
    if (!c.s || new_node(&c, S_ANY) < 0) {
        fr_schema_free(c.s);
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the JSON constraint");
    }
    c.s->nodes[0].object_only = object_only;
    compute_starts(&c);
    *out = c.s;
    return FRUGAL_OK;
}

frugal_status fr_schema_compile(const char *json, size_t len, fr_schema **out) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return fr_error(FRUGAL_ERR_INVALID_ARG, "the JSON schema is not valid JSON");
    compiler *c = fr_calloc(1, sizeof *c);
    fr_schema *s = fr_calloc(1, sizeof *s);
    frugal_status st = FRUGAL_OK;
    if (!c || !s) {
        st = fr_error(FRUGAL_ERR_NOMEM, "out of memory for the JSON schema");
    } else {
        c->s = s, c->root = root;
        /* node 0 is the root: its value is compiled into it */
        int node = new_node(c, S_ANY), body = node < 0 ? -1 : compile(c, root, 0);
        if (body >= 0) s->nodes[0] = s->nodes[body];
        if (body < 0 || compute_starts(c))
            st = fr_error(strstr(c->err, "out of memory") ? FRUGAL_ERR_NOMEM : FRUGAL_ERR_INVALID_ARG, "%s",
                          c->err[0] ? c->err : "the JSON schema could not be compiled");
    }
    cJSON_Delete(root);
    fr_free(c);
    if (st) fr_schema_free(s);
    else *out = s;
    return st;
}
