/*
 * test_tokenizer.c - the byte-level BPE tokenizer on a tiny hand-built
 * vocabulary, where every expected id can be worked out by hand:
 *
 *   0 <|endoftext|>  1 <|im_start|>  2 <|im_end|>   (control)
 *   3 <tool>                                         (user-defined)
 *   4 + b            the visible character of byte b (GPT-2 mapping), so
 *                    'a' = 101, ' ' (Ġ) = 36, '\n' (Ċ) = 14, '1' = 53
 *   260..270         one token per merge below, in rank order
 *   271 <0x41>       (byte token)     272 <unused0>  (unused)
 *
 * Agreement with llama.cpp on the real SmolLM2 vocabulary is checked by
 * the conformance tests (tests/conformance/tokenizer_corpus.json).
 */
#include <stdlib.h>
#include "unit.h"
#include "gguf.h"
#include "gguf_builder.h"
#include "tokenizer.h"

#define N_BYTES 256
#define FIRST_MERGED 260
#define N_VOCAB 273

static const char *const merges[] = {
    "Ġ t", "h e", "Ġt he", "i n", "in g", "Ġ Ġ", "1 2", "l l", "' s", "Ċ Ċ", "ĠĠ ĠĠ",
};
#define N_MERGES ((int)(sizeof merges / sizeof merges[0]))

enum {
    T_ENDOFTEXT = 0, T_IM_START = 1, T_IM_END = 2, T_TOOL = 3,
    T_Gt = 260, T_he, T_Gthe, T_in, T_ing, T_GG, T_12, T_ll, T_s, T_NN, T_GGGG,
    T_BYTE_41 = 271, T_UNUSED = 272,
};

/* Token id of a single byte. */
#define B(c) (4 + (unsigned char)(c))

typedef struct {
    char bytes[N_BYTES][4];
    char merged[N_MERGES][16];
    const char *text[N_VOCAB];
    int32_t type[N_VOCAB];
} tiny_vocab;

/* The GPT-2 byte -> character mapping, written out independently of the
 * tokenizer's own. */
static unsigned byte_char(unsigned b) {
    unsigned n = 0;
    for (unsigned x = 0; x < 256; x++) {
        bool self = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174;
        if (x == b) return self ? x : 256 + n;
        if (!self) n++;
    }
    return 0;
}

static void encode_char(unsigned c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        out[2] = 0;
    }
}

static void make_vocab(tiny_vocab *v) {
    static const char *const specials[] = {
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>",
    };
    for (int i = 0; i < 4; i++) {
        v->text[i] = specials[i];
        v->type[i] = i < 3 ? FR_TOK_CONTROL : FR_TOK_USER_DEFINED;
    }
    for (int b = 0; b < N_BYTES; b++) {
        encode_char(byte_char((unsigned)b), v->bytes[b]);
        v->text[4 + b] = v->bytes[b];
        v->type[4 + b] = FR_TOK_NORMAL;
    }
    for (int m = 0; m < N_MERGES; m++) {
        size_t w = 0;
        for (const char *p = merges[m]; *p; p++)
            if (*p != ' ') v->merged[m][w++] = *p;
        v->merged[m][w] = 0;
        v->text[FIRST_MERGED + m] = v->merged[m];
        v->type[FIRST_MERGED + m] = FR_TOK_NORMAL;
    }
    v->text[T_BYTE_41] = "<0x41>";
    v->type[T_BYTE_41] = FR_TOK_BYTE;
    v->text[T_UNUSED] = "<unused0>";
    v->type[T_UNUSED] = FR_TOK_UNUSED;
}

static fr_tokenizer *tiny(const char *pre) {
    tiny_vocab v;
    fr_tokenizer *t = NULL;
    make_vocab(&v);
    if (fr_tokenizer_new_bpe(v.text, v.type, N_VOCAB, merges, N_MERGES, pre, T_IM_START, T_IM_END,
                             false, &t) != FRUGAL_OK)
        fprintf(stderr, "  tiny vocabulary: %s\n", frugal_last_error());
    return t;
}

/* Tokenizes s and compares with the expected ids (terminated by -1). */
static bool tokens_are(const fr_tokenizer *t, const char *s, bool special, const int32_t *want) {
    int32_t got[256];
    int64_t n = fr_tokenize(t, s, strlen(s), false, special, got, 256);
    int64_t k = 0;
    while (want[k] >= 0) k++;
    bool same = n == k;
    for (int64_t i = 0; same && i < n; i++) same = got[i] == want[i];
    if (!same) {
        fprintf(stderr, "  \"%s\": got", s);
        for (int64_t i = 0; i < n && i < 256; i++) fprintf(stderr, " %d", got[i]);
        fprintf(stderr, " (n=%lld), want", (long long)n);
        for (int64_t i = 0; i < k; i++) fprintf(stderr, " %d", want[i]);
        fputc('\n', stderr);
    }
    return same;
}

#define IDS(...) ((const int32_t[]){ __VA_ARGS__, -1 })
#define NO_IDS ((const int32_t[]){ -1 })

/* Decodes all tokens of s and checks the bytes come back unchanged. */
static bool round_trips(const fr_tokenizer *t, const char *s, bool special) {
    int32_t ids[512];
    char back[2048];
    int64_t n = fr_tokenize(t, s, strlen(s), false, special, ids, 512);
    size_t w = 0;
    if (n < 0 || n > 512) return false;
    for (int64_t i = 0; i < n; i++) {
        int k = fr_token_to_bytes(t, ids[i], back + w, (int)(sizeof back - w));
        if (k < 0 || w + (size_t)k > sizeof back) return false;
        w += (size_t)k;
    }
    return w == strlen(s) && memcmp(back, s, w) == 0;
}

TEST(tokenizer_merges_by_rank) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    CHECK(tokens_are(t, "the", false, IDS(B('t'), T_he)));
    CHECK(tokens_are(t, " the", false, IDS(T_Gthe)));      /* Ġt first, then he, then Ġthe */
    CHECK(tokens_are(t, "sing", false, IDS(B('s'), T_ing)));
    CHECK(tokens_are(t, "lll", false, IDS(T_ll, B('l'))));  /* equal ranks: leftmost wins */
    CHECK(tokens_are(t, "it's", false, IDS(B('i'), B('t'), T_s)));
    CHECK(tokens_are(t, "hello the thing", false,
                     IDS(T_he, T_ll, B('o'), T_Gthe, T_Gt, B('h'), T_ing)));
    CHECK(tokens_are(t, "", false, NO_IDS));
    fr_tokenizer_free(t);
}

TEST(tokenizer_smollm_splits_digits) {
    fr_tokenizer *smol = tiny("smollm"), *gpt2 = tiny("gpt2");
    CHECK(smol && gpt2);
    /* smollm isolates every digit, so the "1 2" merge never applies ... */
    CHECK(tokens_are(smol, "123", false, IDS(B('1'), B('2'), B('3'))));
    CHECK(tokens_are(smol, "a12", false, IDS(B('a'), B('1'), B('2'))));
    CHECK(tokens_are(smol, " 12", false, IDS(B(' '), B('1'), B('2'))));
    /* ... while plain GPT-2 keeps the run (with its leading space) together. */
    CHECK(tokens_are(gpt2, "123", false, IDS(T_12, B('3'))));
    CHECK(tokens_are(gpt2, " 12", false, IDS(B(' '), T_12)));
    CHECK(fr_tokenizer_pre_known(smol) && fr_tokenizer_pre_known(gpt2));
    fr_tokenizer_free(smol);
    fr_tokenizer_free(gpt2);
}

TEST(tokenizer_other_pre_tokenizers) {
    fr_tokenizer *qwen = tiny("qwen2"), *llama3 = tiny("llama-bpe"), *dflt = tiny("");
    CHECK(qwen && llama3 && dflt);
    /* qwen2: single digits; llama3: runs of up to three. */
    CHECK(tokens_are(qwen, "123", false, IDS(B('1'), B('2'), B('3'))));
    CHECK(tokens_are(llama3, "12345", false, IDS(T_12, B('3'), B('4'), B('5'))));
    /* llama3 keeps a piece that is a whole token (ignore_merges): "ll" is. */
    CHECK(tokens_are(llama3, "ll", false, IDS(T_ll)));
    /* Both glue one leading non-letter to a word: "(the" is one piece. */
    CHECK(tokens_are(qwen, "(the", false, IDS(B('('), B('t'), T_he)));
    CHECK(fr_tokenizer_add_bos(llama3) == false); /* the caller's add_bos wins */
    /* A missing name: llama.cpp's default patterns, reported as unknown. */
    CHECK(!fr_tokenizer_pre_known(dflt));
    CHECK(tokens_are(dflt, "a123456", false, IDS(B('a'), T_12, B('3'), B('4'), B('5'), B('6'))));
    fr_tokenizer_free(qwen);
    fr_tokenizer_free(llama3);
    fr_tokenizer_free(dflt);
}

TEST(tokenizer_whitespace_runs) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    /* \s+(?!\S) leaves the last space of a run to the next word. */
    CHECK(tokens_are(t, "a    b", false, IDS(B('a'), T_GG, B(' '), B(' '), B('b'))));
    CHECK(tokens_are(t, "        ", false, IDS(T_GGGG, T_GGGG)));
    CHECK(tokens_are(t, "x\n\n", false, IDS(B('x'), T_NN)));
    CHECK(tokens_are(t, "\n\nx", false, IDS(B('\n'), B('\n'), B('x'))));
    CHECK(tokens_are(t, "a\tb", false, IDS(B('a'), B('\t'), B('b'))));
    fr_tokenizer_free(t);
}

TEST(tokenizer_special_tokens) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    CHECK(tokens_are(t, "<|im_start|>hi<|im_end|>", true,
                     IDS(T_IM_START, B('h'), B('i'), T_IM_END)));
    CHECK(tokens_are(t, "<|endoftext|><|endoftext|>", true, IDS(T_ENDOFTEXT, T_ENDOFTEXT)));
    /* A partial special token is text. */
    CHECK(tokens_are(t, "<|im_sta", true, IDS(B('<'), B('|'), B('i'), B('m'), B('_'), B('s'),
                                             B('t'), B('a'))));
    /* Without parse_special control tokens are text ... */
    int32_t ids[64];
    int64_t n = fr_tokenize(t, "<|im_start|>hi", 14, false, false, ids, 64);
    CHECK(n > 4);
    for (int64_t i = 0; i < n; i++) CHECK(ids[i] >= 4);
    CHECK(round_trips(t, "<|im_start|>hi<|im_end|>", false));
    /* ... but user-defined tokens are still recognised. */
    CHECK(tokens_are(t, "a<tool>b", false, IDS(B('a'), T_TOOL, B('b'))));
    CHECK(tokens_are(t, "a<tool>b", true, IDS(B('a'), T_TOOL, B('b'))));
    fr_tokenizer_free(t);
}

/* Overlapping special tokens are cut as llama.cpp cuts them: one token at a
 * time, longest first (equal lengths: lower id first), each taking its
 * leftmost occurrences in the text still raw. */
TEST(tokenizer_special_overlaps) {
    char bytes[256][4];
    const char *text[261];
    int32_t type[261];
    for (int b = 0; b < 256; b++) {
        encode_char(byte_char((unsigned)b), bytes[b]);
        text[b] = bytes[b];
        type[b] = FR_TOK_NORMAL;
    }
    static const char *const specials[] = { "bc>", "<ab", "<a", "c>", "xx" };
    for (int i = 0; i < 5; i++) {
        text[256 + i] = specials[i];
        type[256 + i] = FR_TOK_USER_DEFINED;
    }
    fr_tokenizer *t = NULL;
    CHECK(fr_tokenizer_new_bpe(text, type, 261, NULL, 0, "gpt2", -1, -1, false, &t) == FRUGAL_OK);
    /* "bc>" goes first although "<ab" starts further left. */
    CHECK(tokens_are(t, "<abc>", false, IDS(258, 256)));
    CHECK(tokens_are(t, "<ab>", false, IDS(257, '>')));
    CHECK(tokens_are(t, "xxx", false, IDS(260, 'x')));
    CHECK(tokens_are(t, "c>c>xxxx<a", false, IDS(259, 259, 260, 260, 258)));
    fr_tokenizer_free(t);
}

TEST(tokenizer_bos_and_capacity) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    int32_t ids[8] = { 0 };
    CHECK(fr_tokenize(t, "the", 3, true, false, ids, 8) == 3);
    CHECK(ids[0] == T_IM_START && ids[1] == B('t') && ids[2] == T_he);
    CHECK(fr_tokenize(t, "", 0, true, false, ids, 8) == 1 && ids[0] == T_IM_START);
    /* Too small a buffer: the full count comes back, only cap ids are written. */
    ids[1] = 12345;
    CHECK(fr_tokenize(t, "the", 3, true, false, ids, 1) == 3);
    CHECK(ids[0] == T_IM_START && ids[1] == 12345);
    CHECK(fr_tokenize(t, "the", 3, false, false, NULL, 0) == 2);
    CHECK(fr_tokenize(t, NULL, 3, false, false, ids, 8) == -1);
    CHECK(fr_tokenize(t, "x", 1, false, false, NULL, 4) == -1);
    fr_tokenizer_free(t);
}

TEST(tokenizer_decode) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    char buf[32];
    CHECK(fr_token_to_bytes(t, T_Gthe, buf, sizeof buf) == 4 && !memcmp(buf, " the", 4));
    CHECK(fr_token_to_bytes(t, B('\n'), buf, sizeof buf) == 1 && buf[0] == '\n');
    CHECK(fr_token_to_bytes(t, B(0xE9), buf, sizeof buf) == 1 && (unsigned char)buf[0] == 0xE9);
    CHECK(fr_token_to_bytes(t, T_IM_END, buf, sizeof buf) == 10 && !memcmp(buf, "<|im_end|>", 10));
    CHECK(fr_token_to_bytes(t, T_BYTE_41, buf, sizeof buf) == 1 && buf[0] == 'A');
    CHECK(fr_token_to_bytes(t, T_UNUSED, buf, sizeof buf) == 0);
    CHECK(fr_token_to_bytes(t, T_IM_END, buf, 3) == 10);   /* needs more room */
    CHECK(fr_token_to_bytes(t, -1, buf, sizeof buf) == -1);
    CHECK(fr_token_to_bytes(t, N_VOCAB, buf, sizeof buf) == -1);
    fr_tokenizer_free(t);
}

TEST(tokenizer_round_trip) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    static const char *const texts[] = {
        "Hello, world!", "  leading and trailing  ", "tabs\tand\nnewlines\r\n",
        "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 "
        "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9",
        "it's 2024-01-15, 12:30", "<|im_start|>user\nhi<|im_end|>\n", "<|im_sta<tool>",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        CHECK_MSG(round_trips(t, texts[i], true), "special round trip of \"%s\"", texts[i]);
        CHECK_MSG(round_trips(t, texts[i], false), "plain round trip of \"%s\"", texts[i]);
    }
    fr_tokenizer_free(t);
}

TEST(tokenizer_invalid_utf8_becomes_replacement) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    /* As in llama.cpp: each byte that starts no well-formed sequence is U+FFFD. */
    CHECK(tokens_are(t, "a\xFF", false, IDS(B('a'), B(0xEF), B(0xBF), B(0xBD))));
    CHECK(tokens_are(t, "\xC3", false, IDS(B(0xEF), B(0xBF), B(0xBD))));
    fr_tokenizer_free(t);
}

TEST(tokenizer_lookups) {
    fr_tokenizer *t = tiny("smollm");
    CHECK(t);
    CHECK(fr_tokenizer_n_vocab(t) == N_VOCAB);
    CHECK(fr_tokenizer_find(t, "<|im_end|>") == T_IM_END);
    CHECK(fr_tokenizer_find(t, "Ġthe") == T_Gthe);
    CHECK(fr_tokenizer_find(t, "nope") == -1);
    CHECK(fr_tokenizer_bos(t) == T_IM_START && fr_tokenizer_eos(t) == T_IM_END);
    CHECK(!fr_tokenizer_add_bos(t));
    CHECK(fr_tokenizer_is_eog(t, T_IM_END) && fr_tokenizer_is_eog(t, T_ENDOFTEXT));
    CHECK(!fr_tokenizer_is_eog(t, T_IM_START) && !fr_tokenizer_is_eog(t, B('a')));
    CHECK(!fr_tokenizer_is_eog(t, -1) && !fr_tokenizer_is_eog(t, N_VOCAB));
    CHECK(fr_tokenizer_token_type(t, T_TOOL) == FR_TOK_USER_DEFINED);
    CHECK(!strcmp(fr_tokenizer_model(t), "gpt2") && !strcmp(fr_tokenizer_pre(t), "smollm"));
    fr_tokenizer_free(t);
}

TEST(tokenizer_unknown_pre_uses_gpt2) {
    fr_tokenizer *t = tiny("no-such-pre");
    CHECK(t);
    CHECK(!fr_tokenizer_pre_known(t));
    CHECK(!strcmp(fr_tokenizer_pre(t), "no-such-pre"));
    CHECK(tokens_are(t, "123", false, IDS(T_12, B('3'))));
    fr_tokenizer_free(t);
}

TEST(tokenizer_rejects_bad_vocab) {
    tiny_vocab v;
    fr_tokenizer *t = NULL;
    make_vocab(&v);
    const char *bad_merges[] = { "Ġ t", "he" };
    CHECK(fr_tokenizer_new_bpe(v.text, v.type, N_VOCAB, bad_merges, 2, "smollm", 1, 2, false, &t) ==
          FRUGAL_ERR_FORMAT);
    CHECK(t == NULL && strstr(frugal_last_error(), "merge 1"));
    CHECK(fr_tokenizer_new_bpe(v.text, v.type, N_VOCAB, merges, N_MERGES, "smollm", N_VOCAB, 2,
                               false, &t) == FRUGAL_ERR_FORMAT);
    CHECK(strstr(frugal_last_error(), "BOS"));
    v.type[7] = 9;
    CHECK(fr_tokenizer_new_bpe(v.text, v.type, N_VOCAB, merges, N_MERGES, "smollm", 1, 2, false,
                               &t) == FRUGAL_ERR_FORMAT);
    CHECK(t == NULL);
}

TEST(tokenizer_out_of_memory) {
    tiny_vocab v;
    make_vocab(&v);
    /* Fail the 1st, 2nd, ... allocation until construction succeeds; every
     * failure must report NOMEM and leak nothing (ASan checks). */
    fr_tokenizer *t = NULL;
    long n;
    for (n = 1; n < 1000; n++) {
        fr_alloc_fail_after(n);
        frugal_status st = fr_tokenizer_new_bpe(v.text, v.type, N_VOCAB, merges, N_MERGES,
                                                "smollm", 1, 2, false, &t);
        fr_alloc_fail_after(0);
        if (st == FRUGAL_OK) break;
        CHECK(st == FRUGAL_ERR_NOMEM && t == NULL);
    }
    CHECK(t && n > 5);
    const char *text = "<|im_start|>hello the  thing\xFF 123";
    int32_t ids[64];
    for (n = 1; n < 1000; n++) {
        fr_alloc_fail_after(n);
        int64_t k = fr_tokenize(t, text, strlen(text), true, true, ids, 64);
        fr_alloc_fail_after(0);
        if (k >= 0) break;
    }
    CHECK(n > 3 && n < 1000);
    fr_tokenizer_free(t);
}

/* ---- Loading from GGUF ------------------------------------------------------ */

/* A GGUF with the tiny vocabulary; `broken` picks one defect (0: none). */
static frugal_status load_tiny_gguf(int broken, fr_tokenizer **t) {
    tiny_vocab v;
    make_vocab(&v);
    gb *b = gb_new();
    gb_str(b, "tokenizer.ggml.model", broken == 1 ? "bert" : "gpt2");
    gb_str(b, "tokenizer.ggml.pre", "smollm");
    if (broken == 5)
        gb_arr(b, "tokenizer.ggml.tokens", GGUF_I32, 4, v.type, N_VOCAB);
    else
        gb_arr_str(b, "tokenizer.ggml.tokens", v.text, N_VOCAB);
    gb_arr(b, "tokenizer.ggml.token_type", GGUF_I32, 4, v.type,
           broken == 2 ? N_VOCAB - 1 : N_VOCAB);
    gb_arr_str(b, "tokenizer.ggml.merges", merges, broken == 3 ? 1 : N_MERGES);
    gb_u32(b, "tokenizer.ggml.bos_token_id", 1);
    gb_u32(b, "tokenizer.ggml.eos_token_id", broken == 4 ? 100000 : 2);
    if (broken == 6) gb_str(b, "tokenizer.ggml.add_bos_token", "yes");
    size_t size;
    uint8_t *file = gb_build(b, &size);
    gb_free(b);
    gguf_file *g = NULL;
    frugal_status st = gguf_parse(file, size, &g);
    if (st == FRUGAL_OK) st = fr_tokenizer_load(g, t);
    gguf_close(g);
    free(file);
    return st;
}

TEST(tokenizer_load_gguf) {
    fr_tokenizer *t = NULL;
    CHECK(load_tiny_gguf(0, &t) == FRUGAL_OK);
    CHECK(tokens_are(t, "<|im_start|> the 12", true,
                     IDS(T_IM_START, T_Gthe, B(' '), B('1'), B('2'))));
    CHECK(fr_tokenizer_bos(t) == 1 && fr_tokenizer_eos(t) == 2 && !fr_tokenizer_add_bos(t));
    fr_tokenizer_free(t);

    CHECK(load_tiny_gguf(1, &t) == FRUGAL_ERR_UNSUPPORTED && t == NULL);
    CHECK(load_tiny_gguf(2, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "token types"));
    CHECK(load_tiny_gguf(4, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "EOS"));
    CHECK(load_tiny_gguf(5, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "tokenizer.ggml.tokens"));
    CHECK(load_tiny_gguf(6, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "add_bos_token"));
    /* Fewer merges is not an error, just a different tokenizer. */
    CHECK(load_tiny_gguf(3, &t) == FRUGAL_OK);
    CHECK(tokens_are(t, " the", false, IDS(T_Gt, B('h'), B('e'))));
    fr_tokenizer_free(t);
}

TEST(tokenizer_load_out_of_memory) {
    tiny_vocab v;
    make_vocab(&v);
    gb *b = gb_new();
    gb_str(b, "tokenizer.ggml.model", "gpt2");
    gb_str(b, "tokenizer.ggml.pre", "smollm");
    gb_arr_str(b, "tokenizer.ggml.tokens", v.text, N_VOCAB);
    gb_arr_str(b, "tokenizer.ggml.merges", merges, N_MERGES);
    size_t size;
    uint8_t *file = gb_build(b, &size);
    gb_free(b);
    gguf_file *g = NULL;
    CHECK(gguf_parse(file, size, &g) == FRUGAL_OK);
    fr_tokenizer *t = NULL;
    long n;
    for (n = 1; n < 1000; n++) {
        fr_alloc_fail_after(n);
        frugal_status st = fr_tokenizer_load(g, &t);
        fr_alloc_fail_after(0);
        if (st == FRUGAL_OK) break;
        CHECK(st == FRUGAL_ERR_NOMEM && t == NULL);
    }
    /* No token_type key: every token is normal, so nothing is special. */
    CHECK(t && fr_tokenizer_token_type(t, T_IM_START) == FR_TOK_NORMAL);
    CHECK(fr_tokenizer_bos(t) == -1 && fr_tokenizer_eos(t) == -1);
    fr_tokenizer_free(t);
    gguf_close(g);
    free(file);
}

/* ---- SentencePiece ("llama") ------------------------------------------------ */

/*
 * A tiny SentencePiece vocabulary, loaded through GGUF as Gemma's is:
 *
 *   0 <pad>  1 <eos>  2 <bos>  4 <start_of_turn>  5 <end_of_turn>  (control)
 *   3 <unk> (unknown)   6 "\n\n" (user-defined)   7 <unused0> (unused)
 *   8 + b    <0xBB>, the byte token of byte b
 *   264..    normal tokens with the scores below ("▁" is U+2581, a space)
 */
enum {
    S_PAD, S_EOS, S_BOS, S_UNK, S_SOT, S_EOT, S_NN, S_UNUSED, S_BYTE0,
    S_SPACE = S_BYTE0 + 256, S_a, S_b, S_c, S_h, S_e, S_l, S_o, S_t,
    S_ab, S_bc, S_aa, S_Sh, S_he, S_She, S_ll, S_llo, S_et,
    S_N_VOCAB
};
#define SB(c) (S_BYTE0 + (unsigned char)(c))

static const struct { const char *text; float score; } spm_normal[] = {
    { "\xE2\x96\x81", -1 }, { "a", -1 }, { "b", -1 }, { "c", -1 }, { "h", -1 }, { "e", -1 },
    { "l", -1 }, { "o", -1 }, { "t", -1 },
    { "ab", -5 }, { "bc", -3 }, { "aa", -4 }, { "\xE2\x96\x81h", -2 }, { "he", -6 },
    { "\xE2\x96\x81he", -1 }, { "ll", -3 }, { "llo", -2 },
    { "\xC3\xA9t", -2 }, /* "ét": its first character alone is not a token */
};

/* Defects and variants of the SPM file, one at a time. */
enum {
    SPM_OK, SPM_NO_BYTE_TOKENS, SPM_SPACE_PREFIX, SPM_NO_IDS, SPM_SCORES_SHORT,
    SPM_SCORES_I32, SPM_TYPES_F32, SPM_PREFIX_STRING, SPM_UNK_OUT_OF_RANGE,
};

typedef struct {
    char bytes[256][8];
    const char *text[S_N_VOCAB];
    int32_t type[S_N_VOCAB];
    float score[S_N_VOCAB];
} spm_vocab;

static void make_spm_vocab(spm_vocab *v, bool byte_tokens) {
    static const char *const first[S_BYTE0] = {
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n\n", "<unused0>",
    };
    static const int32_t first_type[S_BYTE0] = {
        FR_TOK_CONTROL, FR_TOK_CONTROL, FR_TOK_CONTROL, FR_TOK_UNKNOWN, FR_TOK_CONTROL,
        FR_TOK_CONTROL, FR_TOK_USER_DEFINED, FR_TOK_UNUSED,
    };
    for (int i = 0; i < S_BYTE0; i++) {
        v->text[i] = first[i];
        v->type[i] = first_type[i];
        v->score[i] = -1000;
    }
    /* Without byte tokens the slots hold normal tokens no test text forms. */
    for (int b = 0; b < 256; b++) {
        snprintf(v->bytes[b], sizeof v->bytes[b], byte_tokens ? "<0x%02X>" : "<b%02X>", b);
        v->text[S_BYTE0 + b] = v->bytes[b];
        v->type[S_BYTE0 + b] = byte_tokens ? FR_TOK_BYTE : FR_TOK_NORMAL;
        v->score[S_BYTE0 + b] = 0;
    }
    for (int i = S_SPACE; i < S_N_VOCAB; i++) {
        v->text[i] = spm_normal[i - S_SPACE].text;
        v->type[i] = FR_TOK_NORMAL;
        v->score[i] = spm_normal[i - S_SPACE].score;
    }
}

static frugal_status load_spm_gguf(int variant, fr_tokenizer **t) {
    spm_vocab v;
    make_spm_vocab(&v, variant != SPM_NO_BYTE_TOKENS);
    gb *b = gb_new();
    gb_str(b, "tokenizer.ggml.model", "llama");
    gb_str(b, "tokenizer.ggml.pre", "default");
    gb_arr_str(b, "tokenizer.ggml.tokens", v.text, S_N_VOCAB);
    if (variant == SPM_SCORES_I32)
        gb_arr(b, "tokenizer.ggml.scores", GGUF_I32, 4, v.type, S_N_VOCAB);
    else
        gb_arr(b, "tokenizer.ggml.scores", GGUF_F32, 4, v.score,
               variant == SPM_SCORES_SHORT ? S_N_VOCAB - 1 : S_N_VOCAB);
    if (variant == SPM_TYPES_F32)
        gb_arr(b, "tokenizer.ggml.token_type", GGUF_F32, 4, v.score, S_N_VOCAB);
    else
        gb_arr(b, "tokenizer.ggml.token_type", GGUF_I32, 4, v.type, S_N_VOCAB);
    if (variant != SPM_NO_IDS) {
        gb_u32(b, "tokenizer.ggml.bos_token_id", S_BOS);
        gb_u32(b, "tokenizer.ggml.eos_token_id", S_EOS);
        gb_u32(b, "tokenizer.ggml.unknown_token_id",
               variant == SPM_UNK_OUT_OF_RANGE ? S_N_VOCAB : S_UNK);
        gb_bool(b, "tokenizer.ggml.add_bos_token", true);
        if (variant == SPM_PREFIX_STRING)
            gb_str(b, "tokenizer.ggml.add_space_prefix", "no");
        else
            gb_bool(b, "tokenizer.ggml.add_space_prefix", variant == SPM_SPACE_PREFIX);
    }
    size_t size;
    uint8_t *file = gb_build(b, &size);
    gb_free(b);
    gguf_file *g = NULL;
    frugal_status st = gguf_parse(file, size, &g);
    if (st == FRUGAL_OK) st = fr_tokenizer_load(g, t);
    if (st != FRUGAL_OK && st != FRUGAL_ERR_NOMEM && variant <= SPM_NO_IDS)
        fprintf(stderr, "  SPM vocabulary %d: %s\n", variant, frugal_last_error());
    gguf_close(g);
    free(file);
    return st;
}

static fr_tokenizer *spm(int variant) {
    fr_tokenizer *t = NULL;
    load_spm_gguf(variant, &t);
    return t;
}

TEST(tokenizer_spm_merges_by_score) {
    fr_tokenizer *t = spm(SPM_OK);
    CHECK(t);
    CHECK(!strcmp(fr_tokenizer_model(t), "llama") && fr_tokenizer_pre_known(t));
    /* "bc" (-3) beats "ab" (-5) although "ab" is further left. */
    CHECK(tokens_are(t, "abc", false, IDS(S_a, S_bc)));
    CHECK(tokens_are(t, "ab", false, IDS(S_ab)));
    /* Equal scores: the leftmost pair first. */
    CHECK(tokens_are(t, "aaa", false, IDS(S_aa, S_a)));
    CHECK(tokens_are(t, "aaaa", false, IDS(S_aa, S_aa)));
    /* ▁h (-2) first, then ▁he (-1) out of it, ll (-3), llo (-2). */
    CHECK(tokens_are(t, " hello", false, IDS(S_She, S_llo)));
    /* Without the space: ll, then llo, then he (-6) last. */
    CHECK(tokens_are(t, "hello", false, IDS(S_he, S_llo)));
    /* The halves of a merge need not be tokens: "é" is not, "ét" is. */
    CHECK(tokens_are(t, "\xC3\xA9t", false, IDS(S_et)));
    CHECK(tokens_are(t, "", false, NO_IDS));
    fr_tokenizer_free(t);
}

TEST(tokenizer_spm_byte_fallback) {
    fr_tokenizer *t = spm(SPM_OK), *no_bytes = spm(SPM_NO_BYTE_TOKENS);
    CHECK(t && no_bytes);
    /* A character with no token: one byte token per UTF-8 byte. */
    CHECK(tokens_are(t, "a\xC3\xBC", false, IDS(S_a, SB(0xC3), SB(0xBC))));
    CHECK(tokens_are(t, "\xC3\xA9", false, IDS(SB(0xC3), SB(0xA9))));
    CHECK(tokens_are(t, "!", false, IDS(SB('!'))));
    /* Characters are cut by their lead byte alone: 0xE4 takes the next two
     * bytes, here the first two of the escaped space. */
    CHECK(tokens_are(t, "\xE4 a", false, IDS(SB(0xE4), SB(0xE2), SB(0x96), SB(0x81), S_a)));
    /* No byte tokens: the unknown token, once per byte. */
    CHECK(tokens_are(no_bytes, "a\xC3\xBC", false, IDS(S_a, S_UNK, S_UNK)));
    fr_tokenizer_free(t);
    fr_tokenizer_free(no_bytes);
}

TEST(tokenizer_spm_spaces) {
    fr_tokenizer *t = spm(SPM_OK), *prefixed = spm(SPM_SPACE_PREFIX);
    CHECK(t && prefixed);
    /* Every space is "▁"; nothing is added in front (add_space_prefix false). */
    CHECK(tokens_are(t, "a b", false, IDS(S_a, S_SPACE, S_b)));
    CHECK(tokens_are(t, "  a ", false, IDS(S_SPACE, S_SPACE, S_a, S_SPACE)));
    CHECK(tokens_are(t, "a\tb", false, IDS(S_a, SB('\t'), S_b)));
    CHECK(tokens_are(t, "hello", false, IDS(S_he, S_llo)));
    /* With the prefix: before the text and after each special token. */
    CHECK(tokens_are(prefixed, "hello", false, IDS(S_She, S_llo)));
    CHECK(tokens_are(prefixed, "a<start_of_turn>he", true, IDS(S_SPACE, S_a, S_SOT, S_She)));
    CHECK(tokens_are(prefixed, "<start_of_turn>", true, IDS(S_SOT)));
    CHECK(tokens_are(prefixed, "", false, NO_IDS));
    fr_tokenizer_free(t);
    fr_tokenizer_free(prefixed);
}

TEST(tokenizer_spm_special_tokens) {
    fr_tokenizer *t = spm(SPM_OK);
    CHECK(t);
    CHECK(tokens_are(t, "<start_of_turn>ab<end_of_turn>", true, IDS(S_SOT, S_ab, S_EOT)));
    CHECK(tokens_are(t, "<bos><bos>", true, IDS(S_BOS, S_BOS)));
    /* Without parse_special a control token is text (bytes here) ... */
    CHECK(tokens_are(t, "<eos>", false, IDS(SB('<'), S_e, S_o, SB('s'), SB('>'))));
    CHECK(round_trips(t, "<start_of_turn>ab<end_of_turn>", false));
    /* ... but a user-defined token is always cut out. */
    CHECK(tokens_are(t, "a\n\nb", false, IDS(S_a, S_NN, S_b)));
    CHECK(tokens_are(t, "a\n\n\nb", true, IDS(S_a, S_NN, SB('\n'), S_b)));
    int32_t ids[4];
    CHECK(fr_tokenize(t, "ab", 2, true, false, ids, 4) == 2 && ids[0] == S_BOS && ids[1] == S_ab);
    CHECK(fr_tokenizer_is_eog(t, S_EOS) && fr_tokenizer_is_eog(t, S_EOT));
    CHECK(!fr_tokenizer_is_eog(t, S_BOS) && !fr_tokenizer_is_eog(t, S_SOT));
    fr_tokenizer_free(t);
}

TEST(tokenizer_spm_decode) {
    fr_tokenizer *t = spm(SPM_OK);
    CHECK(t);
    char buf[32];
    CHECK(fr_token_to_bytes(t, S_She, buf, sizeof buf) == 3 && !memcmp(buf, " he", 3));
    CHECK(fr_token_to_bytes(t, S_SPACE, buf, sizeof buf) == 1 && buf[0] == ' ');
    CHECK(fr_token_to_bytes(t, SB(0xC3), buf, sizeof buf) == 1 && (unsigned char)buf[0] == 0xC3);
    CHECK(fr_token_to_bytes(t, S_EOT, buf, sizeof buf) == 13 && !memcmp(buf, "<end_of_turn>", 13));
    CHECK(fr_token_to_bytes(t, S_NN, buf, sizeof buf) == 2 && !memcmp(buf, "\n\n", 2));
    CHECK(fr_token_to_bytes(t, S_UNUSED, buf, sizeof buf) == 0);
    static const char *const texts[] = {
        " hello  world ", "abc\tb\n\n\nc", "caf\xC3\xA9 \xC3\xBC \xE4\xB8\xAD \xF0\x9F\x98\x80",
        "<start_of_turn>user\nhi<end_of_turn>\n", "\xC3(b\xFF", "   ",
    };
    /* (Not "\xE4 a": the bad lead byte swallows part of the escaped space,
     * which then comes back as bytes, as it does in llama.cpp.) */
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        CHECK_MSG(round_trips(t, texts[i], true), "special round trip of \"%s\"", texts[i]);
        CHECK_MSG(round_trips(t, texts[i], false), "plain round trip of \"%s\"", texts[i]);
    }
    fr_tokenizer_free(t);
}

TEST(tokenizer_spm_defaults) {
    /* Without the id keys: llama.cpp's SPM defaults (BOS 1, EOS 2, unknown
     * 0), BOS added, a space in front. */
    fr_tokenizer *t = spm(SPM_NO_IDS);
    CHECK(t);
    CHECK(fr_tokenizer_bos(t) == 1 && fr_tokenizer_eos(t) == 2 && fr_tokenizer_add_bos(t));
    CHECK(tokens_are(t, "hello", false, IDS(S_She, S_llo)));
    fr_tokenizer_free(t);
}

TEST(tokenizer_spm_rejects_bad_metadata) {
    fr_tokenizer *t = NULL;
    CHECK(load_spm_gguf(SPM_SCORES_SHORT, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "scores for"));
    CHECK(load_spm_gguf(SPM_SCORES_I32, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "tokenizer.ggml.scores"));
    CHECK(load_spm_gguf(SPM_TYPES_F32, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "tokenizer.ggml.token_type"));
    CHECK(load_spm_gguf(SPM_PREFIX_STRING, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "add_space_prefix"));
    CHECK(load_spm_gguf(SPM_UNK_OUT_OF_RANGE, &t) == FRUGAL_ERR_FORMAT && t == NULL);
    CHECK(strstr(frugal_last_error(), "unknown token id"));
}

TEST(tokenizer_spm_out_of_memory) {
    fr_tokenizer *t = NULL;
    long n;
    for (n = 1; n < 1000; n++) {
        fr_alloc_fail_after(n);
        frugal_status st = load_spm_gguf(SPM_OK, &t);
        fr_alloc_fail_after(0);
        if (st == FRUGAL_OK) break;
        CHECK(st == FRUGAL_ERR_NOMEM && t == NULL);
    }
    CHECK(t && n > 5);
    const char *text = "<start_of_turn>hello abc\n\n\xC3\xBC<end_of_turn>";
    int32_t ids[64];
    for (n = 1; n < 1000; n++) {
        fr_alloc_fail_after(n);
        int64_t k = fr_tokenize(t, text, strlen(text), true, true, ids, 64);
        fr_alloc_fail_after(0);
        if (k >= 0) break;
    }
    CHECK(n > 3 && n < 1000);
    fr_tokenizer_free(t);
}
