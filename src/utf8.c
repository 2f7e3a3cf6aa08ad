/*
 * utf8.c - incremental UTF-8 validation for streaming output (see utf8.h).
 *
 * Tokens do not end on character boundaries: a 4-byte emoji is often two or
 * three byte-level tokens. The stream keeps the bytes of an unfinished
 * sequence in s->pend and releases them only once the sequence is complete
 * and valid, so what reaches the user is always well-formed UTF-8.
 *
 * Validity is RFC 3629: no overlong forms, no surrogates (U+D800..DFFF),
 * nothing above U+10FFFF. An invalid sequence is replaced the way the
 * Unicode standard recommends ("maximal subpart"): the longest prefix that
 * could still have become valid is one U+FFFD, and the byte that broke it is
 * looked at again as the possible start of a new sequence, so one stray byte
 * never swallows the valid text after it.
 */
#include "utf8.h"

static const unsigned char replacement[3] = { 0xEF, 0xBF, 0xBD }; /* U+FFFD */

static size_t put_replacement(char *out) {
    out[0] = (char)replacement[0];
    out[1] = (char)replacement[1];
    out[2] = (char)replacement[2];
    return 3;
}

/* Total length of a sequence starting with lead byte b, 0 if b cannot
 * start one (continuation bytes, C0/C1 which only make overlongs, F5..FF
 * which would exceed U+10FFFF). */
static int sequence_length(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* Whether b may follow the pending bytes. The second byte carries the
 * extra restrictions that rule out overlongs (E0, F0), surrogates (ED) and
 * values above U+10FFFF (F4); later bytes are plain continuations. */
static int continuation_ok(const unsigned char *pend, int n_pend, unsigned char b) {
    if (n_pend == 1) {
        switch (pend[0]) {
        case 0xE0: return b >= 0xA0 && b <= 0xBF;
        case 0xED: return b >= 0x80 && b <= 0x9F;
        case 0xF0: return b >= 0x90 && b <= 0xBF;
        case 0xF4: return b >= 0x80 && b <= 0x8F;
        default: break;
        }
    }
    return b >= 0x80 && b <= 0xBF;
}

/* Feeds one byte to a stream with nothing pending. */
static size_t start_sequence(fr_utf8_stream *s, unsigned char b, char *out) {
    int len = sequence_length(b);
    if (len == 1) {
        out[0] = (char)b;
        return 1;
    }
    if (len == 0) return put_replacement(out);
    s->pend[0] = b;
    s->n_pend = 1;
    return 0;
}

size_t fr_utf8_push(fr_utf8_stream *s, const char *in, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)in[i];
        if (s->n_pend == 0) {
            w += start_sequence(s, b, out + w);
            continue;
        }
        if (!continuation_ok(s->pend, s->n_pend, b)) {
            /* The pending prefix can never complete: one U+FFFD for it,
             * then b gets a fresh look as a lead byte. */
            w += put_replacement(out + w);
            s->n_pend = 0;
            w += start_sequence(s, b, out + w);
            continue;
        }
        s->pend[s->n_pend++] = b;
        if (s->n_pend == sequence_length(s->pend[0])) {
            for (int k = 0; k < s->n_pend; k++) out[w++] = (char)s->pend[k];
            s->n_pend = 0;
        }
    }
    return w;
}

size_t fr_utf8_flush(fr_utf8_stream *s, char *out) {
    if (s->n_pend == 0) return 0;
    s->n_pend = 0;
    return put_replacement(out);
}
