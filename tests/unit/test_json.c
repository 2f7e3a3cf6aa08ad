/* JSON mode: the byte-level recogniser against valid and invalid texts and
 * its limits; the sampler with a constraint over a small vocabulary. */
#include <stdlib.h>
#include "unit.h"
#include "frugal.h"
#include "json_constraint.h"
#include "json_mode.h"

/* fed whole: whether every byte is taken and the text is a whole value */
static bool whole_value(const char *text, bool object_only) {
    fr_json_state st;
    fr_json_init(&st, object_only, false);
    return fr_json_feed(&st, (const uint8_t *)text, strlen(text)) && fr_json_complete(&st);
}

static const char *const VALID[] = {
    "{}", "{\"a\":1}", " { \"a\" : [ 1 , 2.5 , -3e10 , 0 , -0.0E+2 , 1E-7 ] } ",
    "{\"k\":{\"n\":null,\"t\":true,\"f\":false,\"s\":\"\"}}", "{\"x\":[[[]],[{}],\"x\"]}",
    "{\"esc\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\"}",
    "{\"utf8\":\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
    "\xed\x9f\xbf \xf4\x8f\xbf\xbf\"}",
    "{\n\t\"a\": [\r\n 1\n ]\n}\n", "{\"\":\"\x7f\"}",
};
/* values that are not objects: valid only without object_only */
static const char *const VALID_VALUES[] = {
    "[]", "[[[]],[{}],\"x\"]", "1", "-0", "0.5e3", "\"s\"", "true", "null", "[1]", " 12 ",
};
static const char *const INVALID[] = {
    "{", "{\"a\":1,}", "[1,]", "{,}", "[,1]", "{\"a\" 1}", "{\"a\":}", "{'a':1}", "{a:1}", "{\"a\":01}",
    "{\"a\":1.}", "{\"a\":.5}", "{\"a\":-}", "{\"a\":+1}", "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":1.5.2}",
    "{\"a\":1e5e}", "{\"a\":1e5.0}", "{\"a\":tru}", "{\"a\":nul}", "{\"a\":True}", "{\"a\":NaN}",
    "{\"a\":\"x\ty\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\xc0\x80\"}",
    "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf5\x80\x80\x80\"}", "{\"a\":\"\xe0\x80\xaf\"}", "{\"a\":\"\x80\"}",
    "{\"a\":\"\xc3\"}", "{} {}", "{}}", "}", "]", "[}", "{]", "{\"a\":1]", "[1}", "{\"a\"}", "{\"a\",1}",
    "{\"a\":1 \"b\":2}", "[1 2]", "\"unterminated", "",
};

TEST(json_accepts_valid_texts) {
    for (size_t i = 0; i < sizeof VALID / sizeof *VALID; i++) {
        CHECK_MSG(whole_value(VALID[i], true), "object mode refused %s", VALID[i]);
        CHECK_MSG(whole_value(VALID[i], false), "value mode refused %s", VALID[i]);
    }
    for (size_t i = 0; i < sizeof VALID_VALUES / sizeof *VALID_VALUES; i++) {
        CHECK_MSG(whole_value(VALID_VALUES[i], false), "refused %s", VALID_VALUES[i]);
        CHECK_MSG(!whole_value(VALID_VALUES[i], true), "object mode took %s", VALID_VALUES[i]);
    }
}

TEST(json_refuses_invalid_texts) {
    for (size_t i = 0; i < sizeof INVALID / sizeof *INVALID; i++)
        CHECK_MSG(!whole_value(INVALID[i], false), "took %s", INVALID[i]);
}

/* Every prefix of a valid text is taken, and none but the whole is a
 * closed value; a closed object takes whitespace and nothing else. */
TEST(json_prefixes_are_taken_and_closed_only_at_the_end) {
    for (size_t i = 0; i < sizeof VALID / sizeof *VALID; i++) {
        const char *t = VALID[i];
        size_t n = strlen(t), end = n;
        while (end > 0 && strchr(" \t\r\n", t[end - 1])) end--;
        fr_json_state st;
        fr_json_init(&st, true, false);
        for (size_t k = 0; k < n; k++) {
            CHECK_MSG(fr_json_feed(&st, (const uint8_t *)t + k, 1), "%s: byte %zu", t, k);
            CHECK_MSG(fr_json_closed(&st) == (k + 1 >= end), "%s: closed after byte %zu", t, k);
        }
        fr_json_state after = st;
        CHECK(fr_json_feed(&after, (const uint8_t *)"  ", 2)); /* (a line break only if t ends without one) */
        for (const char *c = "{}[],:\"1atn"; *c; c++) {
            after = st;
            CHECK_MSG(!fr_json_feed(&after, (const uint8_t *)c, 1), "%s took '%c' after the end", t, *c);
        }
    }
}

static bool repeated(const char *open, int n, const char *mid, const char *close, bool object_only) {
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *s = malloc((size_t)n * (lo + lc) + lm + 1), *p = s;
    for (int i = 0; i < n; i++) memcpy(p, open, lo), p += lo;
    memcpy(p, mid, lm), p += lm;
    for (int i = 0; i < n; i++) memcpy(p, close, lc), p += lc;
    *p = 0;
    bool ok = whole_value(s, object_only);
    free(s);
    return ok;
}

TEST(json_limits_depth_whitespace_and_numbers) {
    CHECK(repeated("[", FR_JSON_MAX_DEPTH, "1", "]", false));
    CHECK(!repeated("[", FR_JSON_MAX_DEPTH + 1, "1", "]", false));
    CHECK(repeated("{\"a\":", FR_JSON_MAX_DEPTH, "{}", "}", true) == false); /* 65 objects */
    CHECK(repeated("{\"a\":", FR_JSON_MAX_DEPTH - 1, "{}", "}", true));
    char text[512];
    for (int n = FR_JSON_MAX_SPACE; n <= FR_JSON_MAX_SPACE + 1; n++) {
        snprintf(text, sizeof text, "{%*s}", n, "");
        CHECK(whole_value(text, true) == (n <= FR_JSON_MAX_SPACE));
        memset(text, 0, sizeof text);
        memcpy(text, "[1", 2);
        memset(text + 2, '0', (size_t)n - 1); /* a number of n bytes */
        text[n + 1] = ']';
        CHECK_MSG(whole_value(text, false) == (n <= FR_JSON_MAX_NUMBER), "%s", text);
    }
    /* a run holds one line break at most: no blank lines */
    CHECK(whole_value("{\n  \"a\": [1,\n    2\n  ]\n}\n", true));
    CHECK(whole_value("{ \r\n\t}", true));
    CHECK(!whole_value("{\n\n}", true));
    CHECK(!whole_value("{\"a\": 1\n  \n}", true));
    CHECK(!whole_value("[1,\n \n2]", false));
    CHECK(!whole_value("{}\n\n", true));
    /* whitespace runs are counted separately */
    snprintf(text, sizeof text, "{%*s\"a\"%*s:%*s1%*s}", 60, "", 60, "", 60, "", 60, "");
    CHECK(whole_value(text, true));
}

/* ---- the constraint over a vocabulary and the sampler -------------------- */

static const char *const PIECES[] = {
    "{", "}", "[", "]", "\"", ":", ",", " ", "a", "1", "true", "{\"", "\":", "\"}", "}}", "x\"", "\n", "é",
    "\xc3", "\xa9", "0", ".", "e", "-", "null", "\"a\":", "\\n", "<|im_end|>", "<|never|>",
};
enum { N_PIECES = sizeof PIECES / sizeof *PIECES, EOG = N_PIECES - 2, NEVER = N_PIECES - 1 };

/* A constraint over PIECES (taking schema), NULL on failure. */
static frugal_json *small_vocab_schema(fr_schema *schema) {
    int len[N_PIECES];
    bool eog[N_PIECES] = { 0 };
    const char *piece[N_PIECES];
    for (int t = 0; t < N_PIECES; t++) piece[t] = PIECES[t], len[t] = (int)strlen(PIECES[t]);
    eog[EOG] = true;
    piece[NEVER] = NULL;
    frugal_json *j = NULL;
    return fr_json_new_vocab(N_PIECES, piece, len, eog, schema, &j) ? NULL : j;
}

static frugal_json *small_vocab(bool object_only) {
    fr_schema *any = NULL;
    return fr_schema_any(object_only, &any) ? NULL : small_vocab_schema(any);
}

static int index_of(const char *piece) {
    for (int t = 0; t < N_PIECES; t++)
        if (!strcmp(PIECES[t], piece)) return t;
    return -1;
}

TEST(json_constraint_allows_by_token_bytes) {
    frugal_json *j = small_vocab(true);
    CHECK(j);
    CHECK(frugal_json_allows(j, index_of("{")) && frugal_json_allows(j, index_of("{\"")));
    CHECK(frugal_json_allows(j, index_of(" ")) && frugal_json_allows(j, index_of("\n")));
    CHECK(!frugal_json_allows(j, index_of("[")) && !frugal_json_allows(j, index_of("1")));
    CHECK(!frugal_json_allows(j, EOG) && !frugal_json_allows(j, NEVER) && !frugal_json_allows(j, -1));
    CHECK(!frugal_json_allows(j, N_PIECES));
    const char *seq[] = { "{\"", "a", "\":", "[", "1", "," };
    for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) CHECK(frugal_json_accept(j, index_of(seq[i])));
    CHECK(!frugal_json_allows(j, index_of("\xc3")) && !frugal_json_allows(j, index_of("\xa9")));
    CHECK(!frugal_json_accept(j, index_of("]"))); /* refused, and j unchanged: */
    CHECK(frugal_json_accept(j, index_of("true")) && frugal_json_accept(j, index_of("]")));
    frugal_json_reset(j);
    const char *seq2[] = { "{", "\"a\":", "\"", "\xc3" }; /* in the middle of é: only its second byte */
    for (size_t i = 0; i < sizeof seq2 / sizeof *seq2; i++) CHECK(frugal_json_accept(j, index_of(seq2[i])));
    CHECK(!frugal_json_allows(j, index_of("a")) && !frugal_json_allows(j, index_of("\"")));
    CHECK(frugal_json_accept(j, index_of("\xa9")));
    CHECK(frugal_json_accept(j, index_of("\"}")));
    CHECK(frugal_json_done(j) && frugal_json_allows(j, EOG) && frugal_json_allows(j, index_of(" ")));
    CHECK(!frugal_json_allows(j, index_of("}")) && !frugal_json_allows(j, index_of(",")));
    frugal_json_free(j);
}

/* Optional JSON: plain text unless the first byte other than whitespace
 * is '{', and then the value the schema asks for. */
TEST(json_optional_is_plain_text_or_the_value) {
    frugal_json *j = small_vocab(true);
    CHECK(j && frugal_json_set_optional(j, true) == FRUGAL_OK);
    int a = index_of("a"), open = index_of("{"), close = index_of("}");
    CHECK(frugal_json_allows(j, a) && frugal_json_allows(j, index_of("[")) && frugal_json_allows(j, NEVER));
    CHECK(frugal_json_allows(j, EOG) && frugal_json_allows(j, open) && frugal_json_allows(j, close));
    CHECK(frugal_json_accept(j, index_of(" ")) && frugal_json_accept(j, index_of("\n"))); /* still undecided */
    CHECK(frugal_json_allows(j, EOG) && frugal_json_allows(j, a));
    CHECK(frugal_json_accept(j, open)); /* now the object */
    CHECK(!frugal_json_allows(j, a) && !frugal_json_allows(j, NEVER) && !frugal_json_allows(j, EOG));
    CHECK(!frugal_json_allows(j, open) && frugal_json_accept(j, close) && frugal_json_done(j));
    CHECK(frugal_json_allows(j, EOG) && !frugal_json_allows(j, a));
    frugal_json_reset(j); /* (keeps it optional) */
    CHECK(frugal_json_accept(j, index_of("1"))); /* plain text: anything goes, and never "done" */
    CHECK(frugal_json_accept(j, open) && frugal_json_accept(j, close) && frugal_json_accept(j, close));
    CHECK(frugal_json_accept(j, NEVER) && frugal_json_allows(j, EOG) && !frugal_json_done(j));
    frugal_json_reset(j);
    CHECK(frugal_json_accept(j, NEVER) && frugal_json_allows(j, index_of("]"))); /* a control token first: text */
    frugal_json_reset(j);
    CHECK(frugal_json_accept(j, index_of("{\"")) && !frugal_json_allows(j, NEVER)); /* a key begun */
    CHECK(frugal_json_set_optional(j, false) == FRUGAL_OK);
    CHECK(!frugal_json_allows(j, a) && !frugal_json_allows(j, EOG) && frugal_json_allows(j, open));
    CHECK(frugal_json_set_optional(NULL, true) == FRUGAL_ERR_INVALID_ARG);
    frugal_json_free(j);
}

/* Drawn with the constraint, every token is allowed and the text ends as
 * one object, for each kind of sampler; EOG comes only at the end. */
TEST(json_sampler_draws_only_allowed_tokens) {
    frugal_json *j = small_vocab(true);
    CHECK(j);
    float logits[N_PIECES];
    const float temps[] = { 0, 0.7f, 1.0f, 1.5f };
    for (int ti = 0; ti < 4; ti++)
        for (uint64_t seed = 1; seed <= 50; seed++) {
            frugal_sampler_params p = frugal_sampler_default_params();
            p.temperature = temps[ti], p.seed = seed, p.top_k = (int)(seed % 3) * 5, p.min_p = 0;
            frugal_sampler *s;
            CHECK(frugal_sampler_new(&p, N_PIECES, &s) == FRUGAL_OK);
            CHECK(frugal_sampler_set_json(s, j) == FRUGAL_OK);
            frugal_json_reset(j);
            unsigned r = (unsigned)seed * 2654435761u;
            int steps = 0;
            for (; steps < 400 && !frugal_json_done(j); steps++) {
                for (int t = 0; t < N_PIECES; t++) {
                    r = r * 1103515245u + 12345u;
                    logits[t] = (float)((r >> 8) % 1000) / 100.0f;
                }
                logits[NEVER] = 50, logits[EOG] += 3; /* the tokens a model must not get */
                int32_t tok = frugal_sampler_sample(s, logits);
                CHECK_MSG(tok != NEVER && tok != EOG, "seed %llu step %d drew %d", (unsigned long long)seed,
                          steps, tok);
                CHECK_MSG(frugal_json_accept(j, tok), "seed %llu step %d drew %s", (unsigned long long)seed,
                          steps, PIECES[tok]);
            }
            /* (done, or still inside a long value: both allowed) */
            if (frugal_json_done(j)) {
                for (int t = 0; t < N_PIECES; t++) logits[t] = 0;
                logits[EOG] = -5, logits[index_of("}")] = 9;
                int32_t tok = frugal_sampler_sample(s, logits);
                CHECK(tok == EOG || tok == index_of(" ") || tok == index_of("\n"));
            }
            frugal_sampler_free(s);
        }
    frugal_json_free(j);
}

/* Drawing, then masking only on a miss, gives the distribution of the
 * masked softmax. */
TEST(json_sampler_distribution_is_the_masked_softmax) {
    frugal_json *j = small_vocab(true);
    CHECK(j);
    CHECK(frugal_json_accept(j, index_of("{")));
    float logits[N_PIECES];
    for (int t = 0; t < N_PIECES; t++) logits[t] = (float)(t % 5) * 0.5f;
    logits[index_of("\"")] = 0.3f, logits[index_of("}")] = 0.8f, logits[index_of(" ")] = -0.5f;
    logits[index_of("\"a\":")] = 1.1f, logits[index_of("\n")] = 0.0f, logits[index_of("{\"")] = 2.0f;
    logits[index_of("\"}")] = 0.2f;
    double z = 0, want[N_PIECES] = { 0 };
    for (int t = 0; t < N_PIECES; t++) z += frugal_json_allows(j, t) ? exp(logits[t]) : 0;
    for (int t = 0; t < N_PIECES; t++) want[t] = frugal_json_allows(j, t) ? exp(logits[t]) / z : 0;
    frugal_sampler_params p = frugal_sampler_default_params();
    p.temperature = 1, p.top_k = 0, p.top_p = 1, p.min_p = 0, p.seed = 7;
    frugal_sampler *s;
    CHECK(frugal_sampler_new(&p, N_PIECES, &s) == FRUGAL_OK);
    CHECK(frugal_sampler_set_json(s, j) == FRUGAL_OK);
    enum { DRAWS = 40000 };
    int count[N_PIECES] = { 0 };
    for (int i = 0; i < DRAWS; i++) count[frugal_sampler_sample(s, logits)]++;
    for (int t = 0; t < N_PIECES; t++) {
        double sd = sqrt(want[t] * (1 - want[t]) / DRAWS);
        CHECK_MSG(fabs((double)count[t] / DRAWS - want[t]) <= 5 * sd + 1e-9, "token %d (%s): %g against %g", t,
                  PIECES[t], (double)count[t] / DRAWS, want[t]);
    }
    /* greedy: the best allowed token, not the best one ({" is not allowed after {) */
    frugal_sampler_free(s);
    p.temperature = 0;
    CHECK(frugal_sampler_new(&p, N_PIECES, &s) == FRUGAL_OK);
    CHECK(frugal_sampler_set_json(s, j) == FRUGAL_OK);
    CHECK(frugal_sampler_sample(s, logits) == index_of("\"a\":"));
    frugal_sampler_free(s);
    frugal_json_free(j);
}

/* ---- against a recursive-descent parser ----------------------------------- */

/* An independent reading of RFC 8259 with the same limits, for the
 * differential test below: *p advances past what it parsed. */
typedef struct { const unsigned char *p, *end; int depth; bool two_breaks; } ref_parser;

/* (A run with a second line break is refused: fr_json_space.) */
static void ref_space(ref_parser *r) {
    int breaks = 0;
    while (r->p < r->end && strchr(" \t\r\n", *r->p) && *r->p) breaks += *r->p++ == '\n';
    r->two_breaks |= breaks > 1;
}
static bool ref_value(ref_parser *r);
static bool ref_char(ref_parser *r, char c) {
    ref_space(r);
    if (r->p < r->end && *r->p == (unsigned char)c) { r->p++; return true; }
    return false;
}
static bool ref_string(ref_parser *r) {
    if (!ref_char(r, '"')) return false;
    while (r->p < r->end) {
        unsigned c = *r->p++;
        if (c == '"') return true;
        if (c < 0x20) return false;
        if (c == '\\') {
            if (r->p == r->end) return false;
            c = *r->p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++)
                    if (r->p == r->end || !strchr("0123456789abcdefABCDEF", *r->p++) || !r->p[-1]) return false;
            } else if (!c || !strchr("\"\\/bfnrt", (int)c)) {
                return false;
            }
        } else if (c >= 0x80) { /* decode, then judge the code point */
            int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
            if (n < 0 || c > 0xF4) return false;
            unsigned cp = c & (0x3F >> n);
            for (int i = 0; i < n; i++) {
                if (r->p == r->end || (*r->p & 0xC0) != 0x80) return false;
                cp = cp << 6 | (*r->p++ & 0x3F);
            }
            unsigned min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
            if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        }
    }
    return false;
}
static bool ref_number(ref_parser *r) {
    const unsigned char *s = r->p;
    int digits = 0;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p < r->end && *r->p == '0') r->p++, digits = 1;
    else while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++, digits++;
    if (!digits) return false;
    if (r->p < r->end && *r->p == '.') {
        r->p++, digits = 0;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++, digits++;
        if (!digits) return false;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++, digits = 0;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++, digits++;
        if (!digits) return false;
    }
    return r->p - s <= FR_JSON_MAX_NUMBER;
}
static bool ref_list(ref_parser *r, char close, bool object) {
    if (++r->depth > FR_JSON_MAX_DEPTH) return false;
    if (ref_char(r, close)) return r->depth--, true;
    do {
        if (object && (!ref_string(r) || !ref_char(r, ':'))) return false;
        if (!ref_value(r)) return false;
    } while (ref_char(r, ','));
    r->depth--;
    return ref_char(r, close);
}
static bool ref_value(ref_parser *r) {
    ref_space(r);
    if (r->p == r->end) return false;
    switch (*r->p) {
    case '{': r->p++; return ref_list(r, '}', true);
    case '[': r->p++; return ref_list(r, ']', false);
    case '"': return ref_string(r);
    default:
        for (int i = 0; i < 3; i++) {
            const char *lit = i == 0 ? "true" : i == 1 ? "false" : "null";
            size_t n = strlen(lit);
            if ((size_t)(r->end - r->p) >= n && !memcmp(r->p, lit, n)) { r->p += n; return true; }
        }
        return ref_number(r);
    }
}
static bool ref_whole(const unsigned char *s, size_t n) {
    ref_parser r = { s, s + n, 0, false };
    if (!ref_value(&r)) return false;
    ref_space(&r);
    return r.p == r.end && !r.two_breaks;
}

/* Valid texts with random bytes replaced, inserted or deleted: the
 * recogniser and the parser above agree on every one. (Whitespace runs
 * stay short here, the one limit the parser does not apply.) */
TEST(json_agrees_with_a_recursive_descent_parser) {
    static const char alphabet[] = "{}[]\":,.-+eE0123456789 \ntrufalsn\\/u\x80\xc3\xa9\xed\xa0\xf0\x9f\x98";
    unsigned rng = 99;
    int valid = 0, total = 0;
    for (int round = 0; round < 40000; round++) {
        const char *base = round % 2 ? VALID[round / 2 % (sizeof VALID / sizeof *VALID)]
                                     : VALID_VALUES[round / 2 % (sizeof VALID_VALUES / sizeof *VALID_VALUES)];
        unsigned char buf[256];
        size_t n = strlen(base);
        memcpy(buf, base, n);
        int edits = 1 + (int)((rng = rng * 1103515245u + 12345u) >> 16) % 3;
        for (int e = 0; e < edits && n + 1 < sizeof buf; e++) {
            rng = rng * 1103515245u + 12345u;
            size_t at = n ? (rng >> 8) % n : 0;
            unsigned char c = (unsigned char)alphabet[(rng >> 20) % (sizeof alphabet - 1)];
            int op = (int)(rng >> 4) % 3;
            if (op == 0 && n) buf[at] = c;
            else if (op == 1) memmove(buf + at + 1, buf + at, n - at), buf[at] = c, n++;
            else if (n) memmove(buf + at, buf + at + 1, n - at - 1), n--;
        }
        fr_json_state st;
        fr_json_init(&st, false, false);
        bool mine = fr_json_feed(&st, buf, n) && fr_json_complete(&st), ref = ref_whole(buf, n);
        CHECK_MSG(mine == ref, "round %d: recogniser %d, parser %d on '%.*s'", round, mine, ref, (int)n, buf);
        valid += ref, total++;
    }
    CHECK(valid > total / 20 && valid < total - total / 20); /* both kinds were tried */
}

/* ---- schemas ---------------------------------------------------------------- */

/* A vocabulary of the 256 single bytes and an end token (256). */
static frugal_json *byte_vocab(const char *schema_json, frugal_status *st) {
    static char bytes[256];
    const char *piece[257];
    int len[257];
    bool eog[257] = { 0 };
    for (int b = 0; b < 256; b++) bytes[b] = (char)b, piece[b] = &bytes[b], len[b] = 1;
    piece[256] = NULL, len[256] = 0, eog[256] = true;
    fr_schema *schema = NULL;
    frugal_json *j = NULL;
    *st = fr_schema_compile(schema_json, strlen(schema_json), &schema);
    if (!*st) *st = fr_json_new_vocab(257, piece, len, eog, schema, &j);
    return j;
}

/* 1: the schema takes text whole (every byte, then the end); 0: it does
 * not; -1: the schema did not compile. */
static int schema_takes(const char *schema_json, const char *text) {
    frugal_status st;
    frugal_json *j = byte_vocab(schema_json, &st);
    if (!j) return -1;
    bool ok = true;
    for (const char *c = text; *c && ok; c++) ok = frugal_json_accept(j, (uint8_t)*c);
    ok = ok && frugal_json_allows(j, 256);
    frugal_json_free(j);
    return ok;
}

typedef struct { const char *schema; const char *const yes[6]; const char *const no[8]; } schema_case;

static const schema_case CASES[] = {
    { "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},"
      "\"required\":[\"name\",\"age\"],\"additionalProperties\":false,\"title\":\"P\"}",
      { "{\"name\":\"Ann\",\"age\":3}", " { \"name\" : \"x\\\"\" ,\n \"age\" : -0 } " },
      { "{\"age\":3,\"name\":\"Ann\"}", "{\"name\":\"Ann\"}", "{\"name\":\"Ann\",\"age\":3.5}",
        "{\"name\":1,\"age\":3}",
        "{\"name\":\"A\",\"age\":3,\"x\":1}", "{}", "{\"name\":\"A\",\"age\":1e2}", "[]" } },
    { "{\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{},\"c\":{\"type\":\"boolean\"}},\"required\":[\"a\"]}",
      { "{\"a\":1}", "{\"a\":1.5e3,\"c\":true}", "{\"a\":1,\"b\":{\"x\":[null]},\"c\":false}" },
      { "{\"a\":1,\"c\":true,\"b\":2}", "{\"b\":1}", "{\"a\":\"1\"}", "{\"a\":1,}", "{\"a\":1,\"c\":1}",
        "{\"a\":1\n\n}", "{\"a\":1,\"b\":{\"x\":\n \n1}}" } },
    { "{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"null\"},\"c\":{\"type\":\"string\"}}}",
      { "{}", "{\"c\":\"\"}", "{\"b\":null,\"c\":\"x\"}" }, { "{\"c\":\"x\",\"b\":null}", "{\"b\":1}" } },
    { "{\"enum\":[\"red\",\"green\",1,12,null,true]}",
      { "\"red\"", "12", "1", "null", "true", "\"green\"" }, { "\"blue\"", "2", "123", "\"re\"", "false", "1 2" } },
    { "{\"const\":{\"a\":[1,2]}}", { "{\"a\":[1,2]}" }, { "{\"a\":[1]}", "{\"a\": [1,2]}" } },
    { "{\"const\":null}", { "null" }, { "1", "nul" } },
    /* keywords are case-sensitive: these are unknown, so any value (they once crashed the compiler) */
    { "{\"conSt\":\"a\",\"ENUM\":[1],\"Items\":{}}", { "1", "\"b\"", "[{}]" }, { "[1," } },
    { "{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"minItems\":1,\"maxItems\":2}",
      { "[true]", "[ true , false ]" }, { "[]", "[true,true,true]", "[1]", "[true,]" } },
    { "{\"type\":[\"string\",\"null\"]}", { "\"x\"", "null" }, { "1", "nul", "{}" } },
    { "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"next\":{\"anyOf\":"
      "[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},\"required\":[\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}",
      { "{\"v\":1,\"next\":null}", "{\"v\":1,\"next\":{\"v\":2,\"next\":{\"v\":3,\"next\":null}}}" },
      { "{\"v\":1}", "{\"v\":1,\"next\":{\"v\":2}}", "{\"v\":1,\"next\":[]}" } },
    { "{\"type\":\"object\"}", { "{}", "{\"any\":[1,{\"x\":null}]}" }, { "[]", "1" } },
    { "{\"type\":\"array\",\"items\":false}", { "[]" }, { "[1]" } },
    { "{\"allOf\":[{\"type\":\"integer\"}],\"description\":\"n\",\"format\":\"int32\"}", { "7", "-12" },
      { "7.0", "\"7\"" } },
    { "true", { "1", "{\"a\":[]}", "\"s\"" }, { "", "1 2" } },
    /* a union of objects told apart by their first property (and null) */
    { "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"circle\"},\"r\":{\"type\":\"number\"}},"
      "\"required\":[\"kind\",\"r\"]},{\"$ref\":\"#/$defs/rect\"},{\"type\":\"null\"}],\"$defs\":{\"rect\":"
      "{\"properties\":{\"kind\":{\"enum\":[\"rect\",\"square\"]},\"w\":{\"type\":\"number\"},\"h\":{}},"
      "\"required\":[\"kind\",\"w\"]}}}",
      { "{\"kind\":\"circle\",\"r\":1}", "{\"kind\":\"rect\",\"w\":1,\"h\":[2]}", "{\"kind\":\"square\",\"w\":1}",
        "null" },
      { "{\"kind\":\"circle\",\"w\":1}", "{\"kind\":\"rect\",\"r\":1}", "{\"kind\":\"tri\"}",
        "{\"r\":1,\"kind\":\"circle\"}", "{\"kind\":\"circle\"}", "{}", "{\"kind\":\"rect\",\"w\":1,\"r\":1}" } },
};

TEST(json_schema_takes_valid_values_only) {
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        const schema_case *c = &CASES[i];
        for (int k = 0; k < 6 && c->yes[k]; k++)
            CHECK_MSG(schema_takes(c->schema, c->yes[k]) == 1, "schema %zu refused %s (%s)", i, c->yes[k],
                      frugal_last_error());
        for (int k = 0; k < 8 && c->no[k]; k++)
            CHECK_MSG(schema_takes(c->schema, c->no[k]) == 0, "schema %zu took %s", i, c->no[k]);
    }
}

TEST(json_schema_refuses_what_it_cannot_follow) {
    static const char *const bad[][2] = {
        { "{\"type\":\"string\",\"pattern\":\"^a\"}", "pattern" },
        { "{\"type\":\"integer\",\"minimum\":0}", "minimum" },
        { "{\"type\":\"string\",\"maxLength\":3}", "maxLength" },
        { "{\"not\":{}}", "not" },
        { "{\"type\":\"object\",", "not valid JSON" },
        { "{\"type\":\"strin\"}", "strin" },
        { "{\"type\":5}", "'type'" },
        { "{\"$ref\":\"#/$defs/missing\"}", "missing" },
        { "{\"$ref\":\"http://x/schema\"}", "$ref" },
        { "{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{\"a\":{}}}]}", "'{'" },
        { "{\"anyOf\":[{\"properties\":{\"k\":{\"const\":\"a\"}},\"required\":[\"k\"]},"
          "{\"properties\":{\"k\":{\"const\":\"a\"}},\"required\":[\"k\"]}]}", "constant values" },
        { "{\"anyOf\":[{\"properties\":{\"k\":{\"const\":1}},\"required\":[\"k\"]},"
          "{\"properties\":{\"k\":{\"const\":12}},\"required\":[\"k\"]}]}", "'{'" },
        { "{\"anyOf\":[{\"properties\":{\"k\":{\"const\":\"a\"}}},"
          "{\"properties\":{\"k\":{\"const\":\"b\"}},\"required\":[\"k\"]}]}", "'{'" },
        { "{\"anyOf\":[{\"properties\":{\"k\":{\"const\":\"a\"}},\"required\":[\"k\"]},"
          "{\"properties\":{\"j\":{\"const\":\"b\"}},\"required\":[\"j\"]}]}", "'{'" },
        { "{\"type\":[\"integer\",\"number\"]}", "begin with" },
        { "{\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "\"b\"" },
        { "{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "minItems" },
        { "{\"type\":\"array\",\"minItems\":-1}", "minItems" },
        { "false", "false" },
        { "{\"anyOf\":[{\"$ref\":\"#\"}]}", "allows no value" },
        { "{\"$defs\":{\"u\":{\"anyOf\":[{\"$ref\":\"#/$defs/u\"},{\"type\":\"null\"}]}},\"$ref\":\"#/$defs/u\"}",
          "begin with 'n'" },
        { "[]", "object or a boolean" },
        { "{\"enum\":[]}", "enum" },
        { "{\"allOf\":[{},{}]}", "allOf" },
        { "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}", "additionalProperties" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fr_schema *s = NULL;
        frugal_status st = fr_schema_compile(bad[i][0], strlen(bad[i][0]), &s);
        CHECK_MSG(st == FRUGAL_ERR_INVALID_ARG && !s, "%s: status %d", bad[i][0], st);
        CHECK_MSG(strstr(frugal_last_error(), bad[i][1]), "%s: message '%s'", bad[i][0], frugal_last_error());
    }
    /* nesting and size limits */
    char deep[2048] = "";
    for (int i = 0; i < 70; i++) strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 70; i++) strcat(deep, "}");
    fr_schema *s = NULL;
    CHECK(fr_schema_compile(deep, strlen(deep), &s) == FRUGAL_ERR_INVALID_ARG && strstr(frugal_last_error(), "deeper"));
}

/* Random walks through each schema, one allowed byte at a time: there is
 * always a way on (a byte other than whitespace, or the end), so a model
 * can never be led where no token is allowed. */
TEST(json_schema_never_leaves_a_dead_end) {
    unsigned rng = 7;
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        frugal_status st;
        frugal_json *j = byte_vocab(CASES[i].schema, &st);
        CHECK(j);
        for (int walk = 0; walk < 200; walk++) {
            frugal_json_reset(j);
            char text[256];
            int n = 0;
            while (n < 200 && !frugal_json_done(j)) {
                int allowed[256], k = 0;
                for (int b = 0; b < 256; b++)
                    if (!strchr(" \t\r\n", b) && frugal_json_allows(j, b)) allowed[k++] = b;
                CHECK_MSG(k > 0 || frugal_json_allows(j, 256), "schema %zu: nothing after '%.*s'", i, n, text);
                if (k == 0) break;
                rng = rng * 1103515245u + 12345u;
                text[n++] = (char)allowed[(rng >> 8) % (unsigned)k];
                CHECK(frugal_json_accept(j, (uint8_t)text[n - 1]));
            }
        }
        frugal_json_free(j);
    }
}

/* The sampler's mask (which tries only the tokens whose first byte may
 * come next) allows exactly the tokens frugal_json_allows does, all along
 * random walks through a schema over the small vocabulary, with the
 * constraint required and then optional. */
TEST(json_mask_matches_token_by_token_checks) {
    static const char *const schemas[] = {
        "true", "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}},"
                "\"\\n\":{\"enum\":[\"é\",1,null]}}}",
    };
    unsigned rng = 3;
    float logits[N_PIECES + 2], out[N_PIECES + 2];
    for (int t = 0; t < N_PIECES + 2; t++) logits[t] = (float)t;
    for (size_t i = 0; i < sizeof schemas / sizeof *schemas; i++) {
        fr_schema *s = NULL;
        CHECK(fr_schema_compile(schemas[i], strlen(schemas[i]), &s) == FRUGAL_OK);
        frugal_json *j = small_vocab_schema(s);
        CHECK(j);
        for (int walk = 0; walk < 200; walk++) {
            if (walk % 100 == 0) CHECK(frugal_json_set_optional(j, walk >= 100) == FRUGAL_OK); /* then optional */
            frugal_json_reset(j);
            for (int step = 0; step < 60 && !frugal_json_done(j); step++) {
                int n = fr_json_mask(j, logits, out, N_PIECES + 2), count = 0, ok[N_PIECES];
                for (int t = 0; t < N_PIECES + 2; t++) {
                    bool allows = frugal_json_allows(j, t);
                    CHECK_MSG((out[t] == logits[t]) == allows && (allows || out[t] == -INFINITY),
                              "schema %zu walk %d step %d token %d", i, walk, step, t);
                    if (allows && t != EOG) ok[count++] = t;
                }
                CHECK(n == count + frugal_json_allows(j, EOG));
                if (!count) break;
                rng = rng * 1103515245u + 12345u;
                CHECK(frugal_json_accept(j, ok[(rng >> 8) % (unsigned)count]));
            }
        }
        frugal_json_free(j);
    }
}
