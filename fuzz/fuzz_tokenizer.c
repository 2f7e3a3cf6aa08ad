/*
 * fuzz_tokenizer.c - libFuzzer target: tokenizing arbitrary bytes and
 * decoding the ids back.
 *
 * Input: byte 0 picks the vocabulary (bits 0-2) and the flags (bit 3
 * parse_special, bit 4 add_bos); the rest is the text. The vocabularies,
 * built once:
 *   0-4  byte-level BPE ("gpt2"): three control tokens, the 256 byte
 *        characters, merged tokens, a byte token, an unused token and a
 *        user-defined one, with the pre-tokenizers smollm, llama3
 *        (ignore_merges), qwen2, none (llama.cpp's default patterns) and an
 *        unknown name (GPT-2 pattern);
 *   5    SentencePiece ("llama", loaded from an in-memory GGUF): byte
 *        fallback tokens <0x00>..<0xFF>, scored pieces, control tokens;
 *   6-7  the model in $FRUGAL_FUZZ_MODEL if set (e.g. SmolLM2), else 0-1.
 *
 * Checks: the count call (cap 0) and the filling call agree, a short
 * buffer gets a prefix of the same ids; every id is in the vocabulary;
 * fr_token_to_bytes agrees with itself across buffer sizes; the UTF-8
 * streamer only ever emits valid UTF-8 into an output of exactly the
 * documented size (3n + 8); and the text round-trips: for the byte-level
 * vocabularies every valid UTF-8 input decodes back to itself, for the
 * SentencePiece one (no space prefix, byte fallback) every valid UTF-8
 * input without a literal U+2581 does.
 */
#include <string.h>
#include "fuzz.h"
#include "gguf.h"
#include "gguf_builder.h"
#include "model.h"
#include "tokenizer.h"
#include "utf8.h"

#define N_BPE 5
#define SPM 5

static fr_tokenizer *vocabs[8];
static bool roundtrip[8];

static const char *const merges[] = {
    "Ġ t", "h e", "Ġt he", "i n", "in g", "Ġ a", "e r", "o n", "Ġ Ġ", "l l", "r e", "Ġ s",
    "Ġ w", "o r", "e n", "Ġ h", "Ġh e", "l o", "ll o", "he llo", "Ċ Ċ", "ĠĠ ĠĠ", "1 2",
    "' s", "Ġ 1", "Ã ©", "ð Ł", "ðŁ Ļ", "ðŁĻ Ĥ",
};
#define N_MERGES ((int)(sizeof merges / sizeof merges[0]))

static void encode(unsigned c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        out[2] = 0;
    }
}

static unsigned byte_char(unsigned b) {
    unsigned n = 0;
    for (unsigned x = 0; x < 256; x++) {
        bool self = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174;
        if (x == b) return self ? x : 256 + n;
        if (!self) n++;
    }
    return 0;
}

static fr_tokenizer *bpe(const char *pre) {
    enum { N = 3 + 256 + N_MERGES + 3 };
    static char bytes[256][4], merged[N_MERGES][32];
    const char *text[N];
    int32_t type[N];
    int k = 0;
    text[k] = "<|endoftext|>", type[k++] = FR_TOK_CONTROL;
    text[k] = "<|im_start|>", type[k++] = FR_TOK_CONTROL;
    text[k] = "<|im_end|>", type[k++] = FR_TOK_CONTROL;
    for (int b = 0; b < 256; b++) {
        encode(byte_char((unsigned)b), bytes[b]);
        text[k] = bytes[b], type[k++] = FR_TOK_NORMAL;
    }
    for (int m = 0; m < N_MERGES; m++) {
        size_t w = 0;
        for (const char *p = merges[m]; *p; p++)
            if (*p != ' ') merged[m][w++] = *p;
        merged[m][w] = 0;
        text[k] = merged[m], type[k++] = FR_TOK_NORMAL;
    }
    text[k] = "<0x41>", type[k++] = FR_TOK_BYTE;
    text[k] = "<unused0>", type[k++] = FR_TOK_UNUSED;
    text[k] = "<tool>", type[k++] = FR_TOK_USER_DEFINED;
    fr_tokenizer *t = NULL;
    if (fr_tokenizer_new_bpe(text, type, N, merges, N_MERGES, pre, 1, 2, true, &t) != FRUGAL_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", frugal_last_error());
        abort();
    }
    return t;
}

static fr_tokenizer *spm(void) {
    static const char *const pieces[] = {
        "\xe2\x96\x81", "\xe2\x96\x81t", "he", "\xe2\x96\x81the", "in", "er", "ll", "llo",
        "\xe2\x96\x81hello", "o", "e", "h", "l", "t", "\xe2\x96\x81w", "or", "ld", "\xc3\xa9",
    };
    enum { NP = sizeof pieces / sizeof pieces[0], N = 6 + 256 + NP };
    static char names[256][8];
    const char *text[N];
    int32_t type[N];
    float score[N];
    int k = 0;
    const char *specials[6] = { "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>",
                                "<end_of_turn>" };
    for (int i = 0; i < 6; i++) {
        score[k] = 0;
        text[k] = specials[i], type[k++] = i == 3 ? FR_TOK_UNKNOWN : FR_TOK_CONTROL;
    }
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        score[k] = 0;
        text[k] = names[b], type[k++] = FR_TOK_BYTE;
    }
    for (int i = 0; i < (int)NP; i++) {
        score[k] = -(float)i;
        text[k] = pieces[i], type[k++] = FR_TOK_NORMAL;
    }
    gb *b = gb_new();
    gb_str(b, "tokenizer.ggml.model", "llama");
    gb_arr_str(b, "tokenizer.ggml.tokens", text, N);
    gb_arr(b, "tokenizer.ggml.token_type", GGUF_I32, 4, type, N);
    gb_arr(b, "tokenizer.ggml.scores", GGUF_F32, 4, score, N);
    gb_u32(b, "tokenizer.ggml.bos_token_id", 2);
    gb_u32(b, "tokenizer.ggml.eos_token_id", 1);
    gb_u32(b, "tokenizer.ggml.unknown_token_id", 3);
    gb_bool(b, "tokenizer.ggml.add_space_prefix", false);
    size_t size;
    uint8_t *buf = gb_build(b, &size);
    gb_free(b);
    gguf_file *g = NULL;
    fr_tokenizer *t = NULL;
    if (gguf_parse(buf, size, &g) != FRUGAL_OK || fr_tokenizer_load(g, &t) != FRUGAL_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", frugal_last_error());
        abort();
    }
    gguf_close(g);
    free(buf);   /* the tokenizer keeps copies of what it needs */
    return t;
}

static frugal_model *model;

static void init(void) {
    static const char *const pres[N_BPE] = { "smollm", "llama3", "qwen2", NULL, "no-such-pre" };
    for (int i = 0; i < N_BPE; i++) {
        vocabs[i] = bpe(pres[i]);
        roundtrip[i] = true;
    }
    vocabs[SPM] = spm();
    roundtrip[SPM] = true;
    const char *path = getenv("FRUGAL_FUZZ_MODEL");
    if (path && *path) {
        if (frugal_model_load(path, &model) != FRUGAL_OK) {
            fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, frugal_last_error());
            abort();
        }
        vocabs[6] = vocabs[7] = model->tok;
    } else {
        vocabs[6] = vocabs[0];
        vocabs[7] = vocabs[1];
        roundtrip[6] = roundtrip[7] = true;
    }
}

/* Decodes ids to bytes (appended to *dec) and streams them. */
static size_t decode(const fr_tokenizer *t, const int32_t *ids, int64_t n, char *dec) {
    fr_utf8_stream stream = { { 0 }, 0 };
    size_t len = 0;
    for (int64_t i = 0; i < n; i++) {
        char small[3];
        int k = fr_token_to_bytes(t, ids[i], small, sizeof small);
        FUZZ_CHECK(k >= 0);
        char *piece = malloc((size_t)k + 1);
        FUZZ_CHECK(piece != NULL);
        FUZZ_CHECK(fr_token_to_bytes(t, ids[i], piece, k) == k);
        FUZZ_CHECK(memcmp(piece, small, (size_t)FR_MIN(k, 3)) == 0);
        FUZZ_CHECK(fr_token_to_bytes(t, ids[i], NULL, 0) == k);
        memcpy(dec + len, piece, (size_t)k);
        len += (size_t)k;
        char *out = malloc(3 * (size_t)k + 8);   /* exactly what utf8.h asks for */
        FUZZ_CHECK(out != NULL);
        size_t w = fr_utf8_push(&stream, piece, (size_t)k, out);
        FUZZ_CHECK(w <= 3 * (size_t)k + 8 && fuzz_utf8_valid((const uint8_t *)out, w));
        free(out);
        free(piece);
        (void)fr_tokenizer_is_eog(t, ids[i]);
        FUZZ_CHECK(fr_tokenizer_token_type(t, ids[i]) >= 0);
    }
    char tail[8];
    size_t w = fr_utf8_flush(&stream, tail);
    FUZZ_CHECK(w <= 3 && fuzz_utf8_valid((const uint8_t *)tail, w));
    return len;
}

static bool has_spm_space(const uint8_t *s, size_t n) {
    for (size_t i = 0; i + 2 < n; i++)
        if (s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!vocabs[0]) init();
    if (size < 1) return 0;
    int which = data[0] & 7;
    bool special = data[0] & 8, add_bos = data[0] & 16;
    const fr_tokenizer *t = vocabs[which];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    int64_t n = fr_tokenize(t, text, len, add_bos, special, NULL, 0);
    FUZZ_CHECK(n >= 0);
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    FUZZ_CHECK(ids != NULL);
    FUZZ_CHECK(fr_tokenize(t, text, len, add_bos, special, ids, n) == n);
    int n_vocab = fr_tokenizer_n_vocab(t);
    for (int64_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab);
    if (n > 1) {
        int32_t *half = malloc((size_t)(n / 2) * sizeof *half);
        FUZZ_CHECK(half != NULL);
        FUZZ_CHECK(fr_tokenize(t, text, len, add_bos, special, half, n / 2) == n);
        FUZZ_CHECK(memcmp(half, ids, (size_t)(n / 2) * sizeof *ids) == 0);
        free(half);
    }

    /* A token decodes to at most 4 * its text length (a byte-level
     * character is 1-2 bytes of text per byte): bound the buffer by the
     * sum over the ids instead of guessing. */
    size_t cap = 1;
    for (int64_t i = 0; i < n; i++) cap += (size_t)fr_token_to_bytes(t, ids[i], NULL, 0);
    char *dec = malloc(cap);
    FUZZ_CHECK(dec != NULL);
    bool skip_bos = add_bos && fr_tokenizer_bos(t) >= 0;   /* always prepended then */
    FUZZ_CHECK(!skip_bos || (n > 0 && ids[0] == fr_tokenizer_bos(t)));
    size_t dlen = decode(t, ids + skip_bos, n - skip_bos, dec);

    if (roundtrip[which]) {
        /* SentencePiece splits characters by their lead byte alone (as
         * llama.cpp does), so in invalid UTF-8 a bad lead byte can swallow
         * the escaped space after it, which then decodes as U+2581. */
        bool want = fuzz_utf8_valid(data + 1, len) && !(which == SPM && has_spm_space(data + 1, len));
        if (want && (dlen != len || memcmp(dec, text, len) != 0)) {
            fprintf(stderr, "round trip failed (vocabulary %d, special %d): %zu bytes in, %zu out\n",
                    which, special, len, dlen);
            abort();
        }
    }
    free(dec);
    free(ids);

    /* an exact-piece lookup of the text (NUL-terminated copy) */
    char *z = malloc(len + 1);
    FUZZ_CHECK(z != NULL);
    memcpy(z, text, len);
    z[len] = 0;
    int32_t id = fr_tokenizer_find(t, z);
    FUZZ_CHECK(id >= -1 && id < n_vocab);
    free(z);
    return 0;
}
