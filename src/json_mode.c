/*
 * json_mode.c - JSON mode (frugal_json in frugal.h): which tokens may
 * come next so that the reply stays the beginning of one JSON value, of a
 * schema's when one is given.
 *
 * The machine walks the schema's nodes (json_schema.h) with a stack of
 * frames, one per object, array or value being written. A frame of kind
 * F_VALUE waits for its value's first byte, which picks what it becomes
 * (and a union's alternative); F_OBJECT writes the properties in the
 * schema's order, any not required may be left out (a union of objects
 * starts as one whose first property's value names the alternative);
 * F_ARRAY counts its elements; F_LITERAL matches an enum's values byte by
 * byte; F_PRIM hands
 * a string, number, boolean, null or unconstrained value to the
 * byte-level recogniser (json_constraint.h). A number has no closing
 * byte: it ends when a byte cannot continue it, and that byte goes on to
 * the frame below. Trying a token copies the live frames and feeds its
 * bytes to the copy.
 *
 * The sampler draws a token as usual and asks whether it may come next;
 * only when it may not are all the vocabulary's tokens tried and the
 * disallowed ones masked before drawing again (sampler.c). With greedy
 * or temperature alone, drawing first and masking only on a miss gives
 * the distribution of masking first (P(t) = p(t) + (1 - p(allowed)) p(t)
 * / p(allowed) = p(t) / p(allowed)); with top-k, top-p or min-p, a draw
 * that is allowed was cut from the unmasked candidates (as llama.cpp's
 * grammars do). A model asked for JSON mostly proposes an allowed token,
 * so the ~1 ms scan of the vocabulary is rare.
 *
 * Tokens never allowed: control tokens (they decode to their markup, such
 * as "<|im_start|>", which is no part of the JSON text) and tokens that
 * decode to nothing. End-of-generation tokens are allowed once the text
 * is a complete value, and only then.
 */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include "common.h"
#include "json_constraint.h"
#include "json_mode.h"
#include "model.h"
#include "tokenizer.h"

enum { F_VALUE, F_PRIM, F_LITERAL, F_OBJECT, F_ARRAY };
enum { O_OPEN, O_KEY, O_COLON, O_AFTER_VALUE, O_COMMA }; /* an object's phases */
enum { A_OPEN, A_AFTER_VALUE, A_COMMA };                   /* an array's */
enum { REJECT, ACCEPT, ENDED };                             /* a literal's answer to a byte */

typedef struct {
    uint32_t node;
    uint8_t kind, phase;
    uint16_t pos;        /* F_LITERAL, an object's key: bytes matched */
    uint32_t count;      /* F_OBJECT: properties passed; F_ARRAY: elements begun */
    uint64_t cands;      /* F_LITERAL, an object's key: the entries still matching */
} frame;

/* A constraint made optional (frugal_json_set_optional) holds only for a
 * reply whose first byte other than whitespace is '{'. */
enum { M_JSON, M_UNDECIDED, M_FREE };

typedef struct {
    fr_json_state prim;  /* the top frame's value when it is F_PRIM */
    uint16_t depth, run; /* run: bytes of the current whitespace run */
    uint8_t mode;        /* M_*: M_JSON unless the constraint is optional */
    frame f[FR_JSON_MAX_DEPTH];
} machine;

static bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static const fr_schema_entry *entry(const fr_schema *s, const fr_schema_node *n, int k) {
    return &s->entries[n->first + k];
}

static bool push(machine *m, uint32_t node) {
    if (m->depth == FR_JSON_MAX_DEPTH) return false;
    m->f[m->depth++] = (frame){ .node = node, .kind = F_VALUE };
    return true;
}

static void pop(machine *m) {
    m->depth--;
    m->run = 0;
}

/* A whitespace byte between tokens of the grammar. */
static bool space(machine *m, uint8_t c) { return fr_json_space(&m->run, c); }

/* An enum value's next byte: entries still matching go on, or the value
 * ended before c (one matched whole and none continues with c). */
static int literal_byte(const fr_schema *s, frame *f, uint8_t c) {
    const fr_schema_node *n = &s->nodes[f->node];
    uint64_t next = 0;
    bool whole = false;
    for (int k = 0; k < n->n; k++) {
        if (!(f->cands >> k & 1)) continue;
        const fr_schema_entry *e = entry(s, n, k);
        if (e->len == f->pos) whole = true;
        else if ((uint8_t)s->text[e->text + f->pos] == c) next |= 1ull << k;
    }
    if (!next) return whole ? ENDED : REJECT;
    f->cands = next;
    f->pos++;
    return ACCEPT;
}

/* Whether an entry still matching is matched whole; with *longer, whether one goes on. */
static bool literal_whole(const fr_schema *s, const frame *f, bool *longer) {
    const fr_schema_node *n = &s->nodes[f->node];
    bool whole = false;
    *longer = false;
    for (int k = 0; k < n->n; k++)
        if (f->cands >> k & 1) {
            if (entry(s, n, k)->len == f->pos) whole = true;
            else *longer = true;
        }
    return whole;
}

/* The top frame's literal is written: it leaves, and when it was the
 * value of a dispatch node's property (a union of objects told apart by
 * it), the object below goes on as the alternative it names, its first
 * property passed. */
static void literal_done(const fr_schema *s, machine *m) {
    const frame *f = &m->f[m->depth - 1];
    const fr_schema_node *n = &s->nodes[f->node];
    uint32_t picked = 0;
    for (int k = 0; k < n->n; k++)
        if (f->cands >> k & 1 && entry(s, n, k)->len == f->pos) picked = entry(s, n, k)->node;
    pop(m);
    frame *up = m->depth ? &m->f[m->depth - 1] : NULL;
    if (up && up->kind == F_OBJECT && s->nodes[up->node].dispatch) up->node = picked, up->count = 1;
}

/* The keys that may come after `next` properties: the following ones up
 * to the first required one. */
static uint64_t key_candidates(const fr_schema_node *n, uint32_t next) {
    uint64_t c = 0;
    for (uint32_t i = next; i < n->n; i++) {
        c |= 1ull << i;
        if (n->required >> i & 1) break;
    }
    return c;
}

static bool may_close(const fr_schema_node *n, uint32_t next) { return next >= 64 || !(n->required >> next); }

/* The first byte of the top frame's value. */
static bool begin(const fr_schema *s, machine *m, uint8_t c) {
    frame *f = &m->f[m->depth - 1];
    const fr_schema_node *n = &s->nodes[f->node];
    for (int guard = 0; n->kind == S_UNION && guard < FR_SCHEMA_MAX_NODES; guard++) {
        int k = 0;
        while (k < n->n && !fr_schema_starts(&s->nodes[entry(s, n, k)->node], c)) k++;
        if (k == n->n) return false;
        f->node = entry(s, n, k)->node;
        n = &s->nodes[f->node];
    }
    if (!fr_schema_starts(n, c)) return false;
    switch (n->kind) {
    case S_OBJECT: f->kind = F_OBJECT, f->phase = O_OPEN, f->count = 0; return true;
    case S_ARRAY: f->kind = F_ARRAY, f->phase = A_OPEN, f->count = 0; return true;
    case S_LITERALS: {
        f->kind = F_LITERAL, f->pos = 0, f->cands = n->n == 64 ? ~0ull : (1ull << n->n) - 1;
        if (literal_byte(s, f, c) != ACCEPT) return false;
        bool longer, whole = literal_whole(s, f, &longer);
        if (whole && !longer) literal_done(s, m);
        return true;
    }
    default:
        f->kind = F_PRIM;
        fr_json_init(&m->prim, n->object_only, n->kind == S_INTEGER);
        if (!fr_json_feed(&m->prim, &c, 1)) return false;
        if (fr_json_closed(&m->prim)) pop(m);
        return true;
    }
}

static bool object_byte(const fr_schema *s, machine *m, frame *f, uint8_t c) {
    const fr_schema_node *n = &s->nodes[f->node];
    if (f->phase != O_KEY && is_space(c)) return space(m, c);
    if (f->phase != O_KEY) m->run = 0;
    switch (f->phase) {
    case O_OPEN:
    case O_COMMA:
        if (c == '}' && f->phase == O_OPEN && may_close(n, f->count)) { pop(m); return true; }
        if (c != '"' || !(f->cands = key_candidates(n, f->count))) return false;
        f->pos = 1, f->phase = O_KEY;
        return true;
    case O_KEY: {
        uint64_t next = 0;
        for (int k = 0; k < n->n; k++)
            if (f->cands >> k & 1 && entry(s, n, k)->len > f->pos &&
                (uint8_t)s->text[entry(s, n, k)->text + f->pos] == c)
                next |= 1ull << k;
        if (!next) return false;
        f->cands = next;
        f->pos++;
        for (int k = 0; k < n->n; k++) /* keys are quoted: one matched whole is the only one left */
            if (next >> k & 1 && entry(s, n, k)->len == f->pos) f->count = (uint32_t)k + 1, f->phase = O_COLON;
        return true;
    }
    case O_COLON:
        if (c != ':') return false;
        f->phase = O_AFTER_VALUE;
        return push(m, entry(s, n, (int)f->count - 1)->node);
    default: /* O_AFTER_VALUE */
        if (c == ',' && f->count < n->n) { f->phase = O_COMMA; return true; }
        if (c == '}' && may_close(n, f->count)) { pop(m); return true; }
        return false;
    }
}

/* An array's byte; *again: the byte begins an element, to be fed to it. */
static bool array_byte(const fr_schema *s, machine *m, frame *f, uint8_t c, bool *again) {
    const fr_schema_node *n = &s->nodes[f->node];
    if (is_space(c)) return space(m, c);
    m->run = 0;
    if (f->phase == A_AFTER_VALUE) {
        if (c == ',' && f->count < n->max_items) { f->phase = A_COMMA; return true; }
        if (c == ']' && f->count >= n->min_items) { pop(m); return true; }
        return false;
    }
    if (c == ']' && f->phase == A_OPEN && n->min_items == 0) { pop(m); return true; }
    if (f->count >= n->max_items) return false;
    f->count++;
    f->phase = A_AFTER_VALUE;
    *again = true;
    return push(m, n->items);
}

static bool step(const fr_schema *s, machine *m, uint8_t c) {
    if (m->mode == M_FREE) return true;
    if (m->mode == M_UNDECIDED) {
        if (is_space(c)) return true; /* (not counted: plain text may begin with any run of it) */
        m->mode = c == '{' ? M_JSON : M_FREE;
        if (m->mode == M_FREE) return true;
    }
    for (;;) {
        if (m->depth == 0) return is_space(c) && space(m, c);
        frame *f = &m->f[m->depth - 1];
        bool again = false, ok;
        switch (f->kind) {
        case F_VALUE:
            if (is_space(c)) return space(m, c);
            m->run = 0;
            return begin(s, m, c);
        case F_PRIM: {
            fr_json_state before = m->prim;
            if (fr_json_feed(&m->prim, &c, 1)) {
                if (fr_json_closed(&m->prim)) {
                    pop(m);
                    /* a number closed by whitespace: c begins the run
                     * the parent goes on counting */
                    if (is_space(c)) space(m, c);
                }
                return true;
            }
            if (!fr_json_complete(&before)) return false;
            pop(m); /* a number ended before c */
            continue;
        }
        case F_LITERAL: {
            int r = literal_byte(s, f, c);
            if (r == ENDED) { literal_done(s, m); continue; }
            bool longer;
            if (r == ACCEPT && literal_whole(s, f, &longer) && !longer) literal_done(s, m);
            return r == ACCEPT;
        }
        case F_OBJECT: return object_byte(s, m, f, c);
        default:
            ok = array_byte(s, m, f, c, &again);
            if (!ok || !again) return ok;
        }
    }
}

/* The text so far is a whole value (a number or enum value at the top may go on). */
static bool complete(const machine *m, const fr_schema *s) {
    if (m->depth == 0 || m->mode != M_JSON) return true;
    bool longer; /* (below a container's frame, f[0] is that container) */
    if (m->f[0].kind == F_PRIM) return fr_json_complete(&m->prim);
    return m->f[0].kind == F_LITERAL && literal_whole(s, &m->f[0], &longer);
}

static void copy_machine(machine *dst, const machine *src) {
    memcpy(dst, src, offsetof(machine, f) + (size_t)src->depth * sizeof(frame));
}

/* ---- The constraint over a vocabulary -------------------------------------- */

enum { TOK_TEXT, TOK_EOG, TOK_NEVER };

/* A vocabulary as the constraint reads it: what each token decodes to.
 * It depends on the model only, so a model builds it once and its
 * constraints share it (model_vocab, below). */
struct fr_json_vocab {
    int n_vocab;
    uint8_t *kind;      /* [n_vocab] TOK_* */
    uint32_t *off;      /* [n_vocab + 1] token t's bytes: bytes[off[t] .. off[t + 1]) */
    uint8_t *bytes;
    /* the text tokens by their first byte: by_first[first[b] .. first[b + 1]) begin with b */
    int32_t *by_first;
    uint32_t first[257];
};

struct frugal_json {
    fr_schema *schema;
    machine m;
    const fr_json_vocab *v;
    fr_json_vocab *owned; /* v when it is this constraint's own (fr_json_new_vocab) */
    bool optional;        /* frugal_json_set_optional */
};

void frugal_json_reset(frugal_json *j) {
    j->m.depth = 1, j->m.run = 0, j->m.mode = j->optional ? M_UNDECIDED : M_JSON;
    j->m.f[0] = (frame){ .node = 0, .kind = F_VALUE };
}

void fr_json_vocab_free(fr_json_vocab *v) {
    if (!v) return;
    fr_free(v->kind);
    fr_free(v->off);
    fr_free(v->bytes);
    fr_free(v->by_first);
    fr_free(v);
}

frugal_status fr_json_vocab_new(int n, const char *const *piece, const int *len, const bool *eog,
                                fr_json_vocab **out) {
    *out = NULL;
    size_t total = 0;
    for (int t = 0; t < n; t++) total += piece[t] && !eog[t] && len[t] > 0 ? (size_t)len[t] : 0;
    fr_json_vocab *v = fr_calloc(1, sizeof *v);
    if (v) {
        v->kind = fr_malloc((size_t)n + 1);
        v->off = fr_malloc(((size_t)n + 1) * sizeof *v->off);
        v->bytes = fr_malloc(total + 1);
        v->by_first = fr_malloc(((size_t)n + 1) * sizeof *v->by_first);
    }
    if (!v || !v->kind || !v->off || !v->bytes || !v->by_first || total > UINT32_MAX) {
        fr_json_vocab_free(v);
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the JSON constraint");
    }
    size_t used = 0;
    for (int t = 0; t < n; t++) {
        v->off[t] = (uint32_t)used;
        v->kind[t] = eog[t] ? TOK_EOG : piece[t] && len[t] > 0 ? TOK_TEXT : TOK_NEVER;
        if (v->kind[t] != TOK_TEXT) continue;
        memcpy(v->bytes + used, piece[t], (size_t)len[t]);
        used += (size_t)len[t];
    }
    v->off[n] = (uint32_t)used;
    v->n_vocab = n;
    for (int t = 0; t < n; t++) /* counting sort by first byte */
        if (v->kind[t] == TOK_TEXT) v->first[v->bytes[v->off[t]] + 1]++;
    for (int b = 0; b < 256; b++) v->first[b + 1] += v->first[b];
    uint32_t fill[256];
    memcpy(fill, v->first, sizeof fill);
    for (int t = 0; t < n; t++)
        if (v->kind[t] == TOK_TEXT) v->by_first[fill[v->bytes[v->off[t]]]++] = t;
    *out = v;
    return FRUGAL_OK;
}

/* A constraint over v (taking schema; owning v when own). */
static frugal_status new_constraint(const fr_json_vocab *v, bool own, fr_schema *schema, frugal_json **out) {
    frugal_json *j = fr_calloc(1, sizeof *j);
    if (!j) {
        fr_schema_free(schema);
        if (own) fr_json_vocab_free((fr_json_vocab *)v);
        return fr_error(FRUGAL_ERR_NOMEM, "out of memory for the JSON constraint");
    }
    j->schema = schema;
    j->v = v;
    j->owned = own ? (fr_json_vocab *)v : NULL;
    frugal_json_reset(j);
    *out = j;
    return FRUGAL_OK;
}

frugal_status fr_json_new_vocab(int n, const char *const *piece, const int *len, const bool *eog, fr_schema *schema,
                                frugal_json **out) {
    *out = NULL;
    fr_json_vocab *v = NULL;
    frugal_status st = fr_json_vocab_new(n, piece, len, eog, &v);
    if (st) {
        fr_schema_free(schema);
        return st;
    }
    return new_constraint(v, true, schema, out);
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
static frugal_status vocab_for_model(const frugal_model *m, fr_json_vocab **out) {
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
    if (ok) st = fr_json_vocab_new(n, piece, len, eog, out);
    else fr_error(st, "out of memory for the JSON constraint");
    fr_free(text), fr_free(piece), fr_free(len), fr_free(at), fr_free(eog);
    return st;
}

/* The model's table, built by the first constraint that needs it. Two
 * threads may both build one: the first to publish it wins and the other
 * frees its own. */
static frugal_status model_vocab(const frugal_model *cm, const fr_json_vocab **out) {
    frugal_model *m = (frugal_model *)cm; /* (a cache: the model does not change) */
    fr_json_vocab *v = atomic_load(&m->json_vocab), *none = NULL;
    if (!v) {
        frugal_status st = vocab_for_model(m, &v);
        if (st) return st;
        if (!atomic_compare_exchange_strong(&m->json_vocab, &none, v)) {
            fr_json_vocab_free(v);
            v = none;
        }
    }
    *out = v;
    return FRUGAL_OK;
}

/* Takes schema. */
static frugal_status new_for_model(const frugal_model *m, fr_schema *schema, frugal_json **out) {
    const fr_json_vocab *v = NULL;
    frugal_status st = model_vocab(m, &v);
    if (st) {
        fr_schema_free(schema);
        return st;
    }
    return new_constraint(v, false, schema, out);
}

frugal_status frugal_json_new(const frugal_model *m, bool object_only, frugal_json **out) {
    if (!m || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_json_new");
    *out = NULL;
    fr_schema *schema = NULL;
    frugal_status st = fr_schema_any(object_only, &schema);
    return st ? st : new_for_model(m, schema, out);
}

frugal_status frugal_json_new_schema(const frugal_model *m, const char *schema_json, size_t len, frugal_json **out) {
    if (!m || !schema_json || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_json_new_schema");
    *out = NULL;
    fr_schema *schema = NULL;
    frugal_status st = fr_schema_compile(schema_json, len, &schema);
    return st ? st : new_for_model(m, schema, out);
}

void frugal_json_free(frugal_json *j) {
    if (!j) return;
    fr_schema_free(j->schema);
    fr_json_vocab_free(j->owned);
    fr_free(j);
}

frugal_status frugal_json_set_optional(frugal_json *j, bool optional) {
    if (!j) return fr_error(FRUGAL_ERR_INVALID_ARG, "bad arguments to frugal_json_set_optional");
    j->optional = optional;
    frugal_json_reset(j);
    return FRUGAL_OK;
}

/* Whether token t may follow, and the machine after it in *next. Plain
 * text takes any token, control tokens included (as without a
 * constraint); one before the first byte decides makes the text plain. */
static bool try_token(const frugal_json *j, int32_t t, machine *next) {
    if (t < 0 || t >= j->v->n_vocab) return false;
    copy_machine(next, &j->m);
    if (j->v->kind[t] == TOK_NEVER && j->m.mode != M_JSON) return next->mode = M_FREE, true;
    if (j->v->kind[t] == TOK_NEVER) return false;
    if (j->v->kind[t] == TOK_EOG) return complete(&j->m, j->schema);
    for (uint32_t i = j->v->off[t]; i < j->v->off[t + 1]; i++)
        if (!step(j->schema, next, j->v->bytes[i])) return false;
    return true;
}

bool frugal_json_allows(const frugal_json *j, int32_t token) {
    machine next;
    return try_token(j, token, &next);
}

bool frugal_json_accept(frugal_json *j, int32_t token) {
    machine next;
    if (!try_token(j, token, &next)) return false;
    if (j->v->kind[token] != TOK_EOG) copy_machine(&j->m, &next);
    return true;
}

bool frugal_json_done(const frugal_json *j) { return j->m.depth == 0; }

/* Only the tokens whose first byte the machine takes are tried: after a
 * value, where a draw is most often refused, that is a few hundred of
 * the vocabulary. */
int fr_json_mask(const frugal_json *j, const float *logits, float *out, int n) {
    int allowed = 0;
    for (int t = 0; t < n; t++) out[t] = -INFINITY;
    for (int t = 0; t < n && t < j->v->n_vocab; t++)
        if ((j->v->kind[t] == TOK_EOG && complete(&j->m, j->schema)) ||
            (j->v->kind[t] == TOK_NEVER && j->m.mode != M_JSON))
            out[t] = logits[t], allowed++;
    for (int b = 0; b < 256; b++) {
        machine probe;
        copy_machine(&probe, &j->m);
        if (j->v->first[b] == j->v->first[b + 1] || !step(j->schema, &probe, (uint8_t)b)) continue;
        for (uint32_t i = j->v->first[b]; i < j->v->first[b + 1]; i++) {
            int32_t t = j->v->by_first[i];
            if (t < n && frugal_json_allows(j, t)) out[t] = logits[t], allowed++;
        }
    }
    return allowed;
}
