/*
 * test_utf8.c - the streaming UTF-8 validator: valid text comes through
 * unchanged however it is split, invalid bytes become U+FFFD and the
 * stream resynchronises on the next possible character.
 */
#include <stdbool.h>
#include "unit.h"
#include "utf8.h"

#define FFFD "\xEF\xBF\xBD"

/* Pushes s in pieces cut at the given positions (ascending, < n), then
 * flushes; returns the total output length written into out. */
static size_t stream_in_pieces(const char *s, size_t n, const size_t *cuts, int n_cuts,
                               char *out) {
    fr_utf8_stream st = { { 0 }, 0 };
    size_t w = 0, from = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : n;
        w += fr_utf8_push(&st, s + from, to - from, out + w);
        from = to;
    }
    return w + fr_utf8_flush(&st, out + w);
}

static bool streams_to(const char *in, size_t n, const char *want) {
    char out[256];
    size_t w = stream_in_pieces(in, n, NULL, 0, out);
    bool ok = w == strlen(want) && memcmp(out, want, w) == 0;
    if (!ok) {
        fprintf(stderr, "  got");
        for (size_t i = 0; i < w; i++) fprintf(stderr, " %02X", (unsigned char)out[i]);
        fputc('\n', stderr);
    }
    return ok;
}

static const char *const valid_texts[] = {
    "plain ASCII",
    "caf\xC3\xA9",                                   /* 2-byte */
    "\xE4\xB8\xAD\xE6\x96\x87",                      /* CJK, 3-byte */
    "\xF0\x9F\x98\x80",                              /* emoji, 4-byte */
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7", /* ZWJ family */
    "\xF0\x9F\x87\xBA\xF0\x9F\x87\xB8",              /* flag */
    "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD ok",           /* skin tone */
    /* the edges: U+0080 U+07FF U+0800 U+D7FF U+E000 U+FFFF U+10000 U+10FFFF */
    "\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF"
    "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF",
};

TEST(utf8_valid_text_split_anywhere) {
    char out[256];
    for (size_t k = 0; k < sizeof valid_texts / sizeof valid_texts[0]; k++) {
        const char *s = valid_texts[k];
        size_t n = strlen(s);
        /* One cut at every position. */
        for (size_t c = 0; c <= n; c++) {
            size_t cuts[1] = { c };
            size_t w = stream_in_pieces(s, n, cuts, 1, out);
            CHECK_MSG(w == n && memcmp(out, s, n) == 0, "text %zu cut at %zu", k, c);
        }
        /* Byte by byte. */
        size_t every[64];
        for (size_t i = 1; i < n; i++) every[i - 1] = i;
        size_t w = stream_in_pieces(s, n, every, (int)n - 1, out);
        CHECK_MSG(w == n && memcmp(out, s, n) == 0, "text %zu byte by byte", k);
    }
}

TEST(utf8_holds_back_incomplete) {
    fr_utf8_stream st = { { 0 }, 0 };
    char out[32];
    CHECK(fr_utf8_push(&st, "a\xF0\x9F", 3, out) == 1 && out[0] == 'a');
    CHECK(fr_utf8_push(&st, "\x98", 1, out) == 0);
    CHECK(fr_utf8_push(&st, "\x80", 1, out) == 4 && !memcmp(out, "\xF0\x9F\x98\x80", 4));
    CHECK(fr_utf8_flush(&st, out) == 0);
    /* A sequence cut short by the end of the stream. */
    CHECK(fr_utf8_push(&st, "\xE2\x82", 2, out) == 0);
    CHECK(fr_utf8_flush(&st, out) == 3 && !memcmp(out, FFFD, 3));
    CHECK(st.n_pend == 0);
}

TEST(utf8_invalid_sequences) {
    CHECK(streams_to("a\xFF" "b", 3, "a" FFFD "b"));
    CHECK(streams_to("\x80\xBF", 2, FFFD FFFD));                  /* lone continuations */
    CHECK(streams_to("\xC0\x80", 2, FFFD FFFD));                  /* overlong NUL */
    CHECK(streams_to("\xC1\xBF", 2, FFFD FFFD));
    CHECK(streams_to("\xE0\x80\x80", 3, FFFD FFFD FFFD));         /* overlong 3-byte */
    CHECK(streams_to("\xF0\x80\x80\x80", 4, FFFD FFFD FFFD FFFD)); /* overlong 4-byte */
    CHECK(streams_to("\xED\xA0\x80", 3, FFFD FFFD FFFD));         /* surrogate D800 */
    CHECK(streams_to("\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD)); /* U+110000 */
    CHECK(streams_to("\xF5\x80", 2, FFFD FFFD));
    /* A broken sequence is one U+FFFD and the byte that broke it starts over. */
    CHECK(streams_to("\xE2\x82" "A", 3, FFFD "A"));
    CHECK(streams_to("\xF0\x9F\x98" "\xC3\xA9", 5, FFFD "\xC3\xA9"));
    CHECK(streams_to("\xE4\xB8\xF0\x9F\x98\x80", 6, FFFD "\xF0\x9F\x98\x80"));
    CHECK(streams_to("", 0, ""));
}

TEST(utf8_output_bound) {
    /* Worst case for the documented bound: pending bytes then garbage. */
    fr_utf8_stream st = { { 0 }, 0 };
    char out[3 * 8 + 8];
    CHECK(fr_utf8_push(&st, "\xF0\x9F\x98", 3, out) == 0);
    size_t w = fr_utf8_push(&st, "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 8, out);
    CHECK(w == 9 * 3 && w <= 3 * 8 + 8);
}
