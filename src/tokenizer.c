/*
 * tokenizer.c - the two tokenizers of GGUF files: byte-level BPE ("gpt2")
 * and SentencePiece BPE ("llama").
 *
 * The target is to produce exactly the ids llama.cpp produces, so the
 * stages below follow its order. For "gpt2":
 *
 *  1. Special tokens. Every control / user-defined / unknown token text is
 *     searched for in the raw bytes, longest token first, and the text is
 *     cut around each occurrence. Without parse_special only user-defined
 *     tokens are cut out (llama.cpp and HF tokenizers do the same); control
 *     tokens are then ordinary text.
 *  2. Clean-up of each remaining text fragment: invalid UTF-8 bytes become
 *     U+FFFD, as llama.cpp's decoder does.
 *  3. Pre-tokenization: a list of regexes chosen by tokenizer.ggml.pre,
 *     each splitting every piece of the previous one into matches and the
 *     gaps between them. "smollm" first isolates every \p{N} character, then
 *     applies the GPT-2 pattern. The regexes run on PCRE2; \s is spelled out
 *     as the Unicode White_Space set, which is what llama.cpp uses (PCRE2's
 *     own \s would leave out U+0085).
 *  4. BPE on each piece: start from one symbol per byte (the token of the
 *     byte's GPT-2 "visible" character), repeatedly merge the adjacent pair
 *     with the lowest merge rank (ties: leftmost), using a heap of
 *     candidate pairs so a long piece costs O(n log n).
 *
 * For "llama" (SentencePiece, e.g. Gemma), stage 1 is the same; then each
 * text fragment, as raw bytes (no clean-up, no pre-tokenizer):
 *
 *  2. has every space replaced by U+2581 "▁", with one more in front when
 *     tokenizer.ggml.add_space_prefix is set and the fragment starts the
 *     text or follows a special token;
 *  3. is cut into characters by their lead byte alone (as llama.cpp does,
 *     so a malformed sequence simply swallows the next bytes);
 *  4. is merged: repeatedly the adjacent pair whose concatenation is a
 *     token with the highest score (ties: leftmost), again with a heap.
 *     A symbol left that is not a token becomes one byte token "<0xAB>"
 *     per byte (byte fallback), or the unknown token without those.
 *
 * Merge ranks live in an open-addressing table keyed by the pair of token
 * ids, which gives the merged token's id directly; a merge whose halves or
 * result are not in the vocabulary can never apply and is dropped at load.
 * Token text -> id is a second open-addressing table.
 *
 * Decoding maps a normal token's characters back through the byte table
 * ("gpt2") or turns "▁" back into spaces ("llama").
 * Control and user-defined tokens decode to their text (llama.cpp shows
 * control tokens only when asked; we always do and let the caller decide),
 * byte tokens "<0xAB>" to that byte, unused tokens to nothing.
 *
 * Nothing is cached globally: everything a call needs is in the tokenizer
 * (read-only after load, so it can be shared between threads) or is
 * allocated by that call. All memory, PCRE2's included, comes from
 * fr_malloc so fault-injection tests reach every failure path.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "tokenizer.h"

#define MAX_STAGES 4
#define ATTR_TYPE_MASK 0x07
#define ATTR_EOG 0x10

typedef struct {
    uint64_t key;   /* left id << 32 | right id; EMPTY_KEY when free */
    int32_t rank;
    int32_t result;
} merge_slot;

typedef struct {
    uint64_t key;   /* parent node << 8 | byte; EMPTY_KEY when free */
    int32_t child;
} trie_edge;

#define EMPTY_KEY UINT64_MAX

struct fr_tokenizer {
    int32_t n_vocab;
    char *text;          /* all token texts, each NUL-terminated */
    size_t *text_off;    /* token i's text starts at text + text_off[i] */
    uint32_t *text_len;
    uint8_t *attr;       /* GGUF token type | ATTR_EOG */

    int32_t *piece_slots;   /* text -> id table, -1 = free */
    size_t piece_mask;
    merge_slot *merge_slots;
    size_t merge_mask;

    int32_t byte_token[256];  /* gpt2: token of each byte's visible character, or -1 */
    int32_t *special;         /* texts to cut out, longest first */
    int n_special;
    trie_edge *trie_edges;    /* the special texts as a trie: node 0 is the root */
    size_t trie_mask;
    int32_t *trie_special;    /* node -> index in special[] of the text ending there, or -1 */

    bool spm;                 /* "llama" (SentencePiece) rather than "gpt2" */
    float *scores;            /* spm: a merge into token i has priority scores[i] */
    int32_t byte_fallback[256]; /* spm: token for a byte of a character with no token */
    bool add_space_prefix;    /* spm: "▁" before the text and after each special */

    int32_t bos, eos, unk;
    bool add_bos;
    bool ignore_merges;       /* llama3: a piece that is a whole token is kept */
    bool pre_known;
    char *pre;

    pcre2_general_context *pcre_ctx;
    pcre2_code *stages[MAX_STAGES];
    int n_stages;
};

static frugal_status nomem(void) { return fr_error(FRUGAL_ERR_NOMEM, "tokenizer: out of memory"); }

/* ---- GPT-2 byte <-> character mapping ---------------------------------- */

/*
 * Byte-level BPE vocabularies store bytes as printable characters so that
 * no token contains a space or a control character: bytes 33..126,
 * 161..172 and 174..255 stand for themselves, the other 68 bytes are
 * shifted to U+0100 upward in byte order (0..32 -> U+0100..U+0120,
 * 127..160 -> U+0121..U+0142, 173 -> U+0143). So ' ' is 'Ġ' (U+0120).
 */
static uint32_t byte_to_char(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256u + b;
    if (b <= 160) return 256u + 33 + (b - 127u);
    return 256u + 33 + 34; /* 173 */
}

/* The inverse; -1 for a character that stands for no byte. */
static int char_to_byte(uint32_t c) {
    if (c < 256) return byte_to_char((uint8_t)c) == c ? (int)c : -1;
    if (c <= 256 + 32) return (int)(c - 256);
    if (c <= 256 + 33 + 33) return (int)(c - 256 - 33 + 127);
    if (c == 256 + 33 + 34) return 173;
    return -1;
}

/* ---- UTF-8 helpers ----------------------------------------------------- */

static size_t utf8_encode(uint32_t c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/*
 * Decodes one character the way llama.cpp does: the lead byte gives the
 * length, the following bytes must be continuation bytes, and nothing else
 * is checked (so overlong forms and surrogates decode to their value). A
 * byte that does not start a well-formed sequence is consumed alone and
 * yields U+FFFD.
 */
static uint32_t utf8_decode_lenient(const uint8_t *s, size_t n, size_t *i) {
    uint8_t b = s[*i];
    int len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
            : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || *i + (size_t)len > n) {
        (*i)++;
        return len == 1 ? b : 0xFFFD;
    }
    uint32_t c = len == 1 ? b : (uint32_t)(b & (0x7F >> len));
    for (int k = 1; k < len; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) {
            (*i)++;
            return 0xFFFD;
        }
        c = (c << 6) | (s[*i + k] & 0x3F);
    }
    *i += (size_t)len;
    return c;
}

/* Strict RFC 3629 validity: what PCRE2 accepts in UTF mode. */
static bool utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t j = i;
        uint32_t c = utf8_decode_lenient(s, n, &j);
        size_t len = j - i;
        bool overlong = (len == 2 && c < 0x80) || (len == 3 && c < 0x800) ||
                        (len == 4 && c < 0x10000);
        if (len == 1 || overlong || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) return false;
        i = j;
    }
    return true;
}

/* ---- Hash tables ------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* Smallest power of two >= 2n, at least 16: the tables stay half empty. */
static size_t table_size(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

static const char *token_text(const fr_tokenizer *t, int32_t id) {
    return t->text + t->text_off[id];
}

static int32_t find_piece(const fr_tokenizer *t, const char *s, size_t n) {
    size_t i = (size_t)hash_bytes(s, n) & t->piece_mask;
    for (;; i = (i + 1) & t->piece_mask) {
        int32_t id = t->piece_slots[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(token_text(t, id), s, n) == 0) return id;
    }
}

/* Later duplicates win, as in llama.cpp's token_to_id map. */
static void insert_piece(fr_tokenizer *t, int32_t id) {
    const char *s = token_text(t, id);
    size_t n = t->text_len[id];
    size_t i = (size_t)hash_bytes(s, n) & t->piece_mask;
    for (;; i = (i + 1) & t->piece_mask) {
        int32_t other = t->piece_slots[i];
        if (other < 0 || (t->text_len[other] == n && memcmp(token_text(t, other), s, n) == 0)) {
            t->piece_slots[i] = id;
            return;
        }
    }
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static const merge_slot *find_merge(const fr_tokenizer *t, int32_t left, int32_t right) {
    uint64_t key = pair_key(left, right);
    size_t i = (size_t)hash_u64(key) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        const merge_slot *m = &t->merge_slots[i];
        if (m->key == EMPTY_KEY) return NULL;
        if (m->key == key) return m;
    }
}

/* The first occurrence of a pair keeps its rank (llama.cpp: emplace). */
static void insert_merge(fr_tokenizer *t, int32_t left, int32_t right, int32_t rank,
                         int32_t result) {
    uint64_t key = pair_key(left, right);
    size_t i = (size_t)hash_u64(key) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        merge_slot *m = &t->merge_slots[i];
        if (m->key == key) return;
        if (m->key == EMPTY_KEY) {
            m->key = key;
            m->rank = rank;
            m->result = result;
            return;
        }
    }
}

/* ---- Pre-tokenizers ---------------------------------------------------- */

/* Unicode White_Space, as a character-class body (\x{0B}: in a PCRE2 class
 * "\v" would mean all vertical space). */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
           "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define SPACE "[" WS "]"
#define NOT_SPACE "[^" WS "]"

/* GPT-2. llama.cpp's copy lacks the final |\s+, but its hand-written
 * matcher behaves as if it were there. */
static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|"
    SPACE "+(?!" NOT_SPACE ")|" SPACE "+";
static const char PAT_DIGIT[] = "\\p{N}";
static const char PAT_LLAMA3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" SPACE "*[\\r\\n]+|"
    SPACE "+(?!" NOT_SPACE ")|" SPACE "+";
static const char PAT_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" SPACE "*[\\r\\n]+|"
    SPACE "+(?!" NOT_SPACE ")|" SPACE "+";
/* llama.cpp's fallback when a file names no pre-tokenizer. */
static const char PAT_DEFAULT_PUNCT[] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
static const char PAT_DIGITS[] = "\\p{N}+";
static const char PAT_THREE_DIGITS[] = "[0-9][0-9][0-9]";

typedef struct {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *stages[MAX_STAGES];
    bool ignore_merges, add_bos;
} pre_kind;

/* The names are llama.cpp's for the same patterns. llama3 turns BOS on
 * unless the file's add_bos_token says otherwise, as in llama.cpp. */
static const pre_kind pre_kinds[] = {
    { "smollm|starcoder|refact|command-r|codeshell|exaone|minerva-7b",
      { PAT_DIGIT, PAT_GPT2 }, false, false },
    { "gpt2|gpt-2|phi-2|mpt|olmo|jais|exaone4", { PAT_GPT2 }, false, false },
    { "llama3|llama-v3|llama-bpe|falcon3|pixtral", { PAT_LLAMA3 }, true, true },
    { "qwen2|deepseek-r1-qwen|megrez|stablelm2", { PAT_QWEN2 }, false, false },
    { "default", { PAT_DEFAULT_PUNCT, PAT_GPT2, PAT_DIGITS, PAT_THREE_DIGITS }, false, false },
};
#define PRE_GPT2 (&pre_kinds[1])
#define PRE_DEFAULT (&pre_kinds[4])

static bool name_in_list(const char *name, const char *list) {
    size_t n = strlen(name);
    const char *p = list;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0) return true;
        if (!bar) return false;
        p = bar + 1;
    }
}

/* Unknown names get the GPT-2 pattern, a missing one llama.cpp's default;
 * both make fr_tokenizer_pre_known false so the caller can warn. */
static const pre_kind *find_pre_kind(const char *name, bool *known) {
    *known = false;
    if (!*name) return PRE_DEFAULT;
    for (size_t i = 0; i < sizeof pre_kinds / sizeof pre_kinds[0]; i++) {
        if (name_in_list(name, pre_kinds[i].names)) {
            *known = true;
            return &pre_kinds[i];
        }
    }
    return PRE_GPT2;
}

static void *pcre_alloc(PCRE2_SIZE n, void *data) { return fr_malloc(n); }
static void pcre_release(void *p, void *data) { fr_free(p); }

static frugal_status compile_stages(fr_tokenizer *t, const pre_kind *kind) {
    t->pcre_ctx = pcre2_general_context_create(pcre_alloc, pcre_release, NULL);
    if (!t->pcre_ctx) return nomem();
    pcre2_compile_context *cc = pcre2_compile_context_create(t->pcre_ctx);
    if (!cc) return nomem();
    frugal_status st = FRUGAL_OK;
    for (int i = 0; i < MAX_STAGES && kind->stages[i] && !st; i++) {
        int err;
        PCRE2_SIZE at;
        t->stages[i] = pcre2_compile((PCRE2_SPTR)kind->stages[i], PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_NO_UTF_CHECK, &err, &at, cc);
        if (!t->stages[i]) {
            st = err == PCRE2_ERROR_HEAP_FAILED
                     ? nomem()
                     : fr_error(FRUGAL_ERR_UNSUPPORTED,
                                "tokenizer: pre-tokenizer regex %d does not compile (PCRE2 "
                                "error %d at %zu)", i, err, (size_t)at);
        } else {
            t->n_stages = i + 1;
        }
    }
    pcre2_compile_context_free(cc);
    return st;
}

/* ---- Construction ------------------------------------------------------ */

void fr_tokenizer_free(fr_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_stages; i++) pcre2_code_free(t->stages[i]);
    pcre2_general_context_free(t->pcre_ctx);
    fr_free(t->text);
    fr_free(t->text_off);
    fr_free(t->text_len);
    fr_free(t->attr);
    fr_free(t->piece_slots);
    fr_free(t->merge_slots);
    fr_free(t->special);
    fr_free(t->trie_edges);
    fr_free(t->trie_special);
    fr_free(t->pre);
    fr_free(t->scores);
    fr_free(t);
}

/* Copies the token texts into one block and fills in the types. types_le
 * is n little-endian int32 values, possibly unaligned (it may point into
 * the GGUF map), or NULL for "all normal". */
static frugal_status copy_vocab(fr_tokenizer *t, const gguf_str *tokens,
                                const unsigned char *types_le) {
    size_t n = (size_t)t->n_vocab, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i].len > UINT32_MAX - 1 || (!tokens[i].ptr && tokens[i].len))
            return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: token %zu has a bad text", i);
        total += (size_t)tokens[i].len + 1;
    }
    t->text = fr_malloc(total);
    t->text_off = fr_malloc(n * sizeof *t->text_off);
    t->text_len = fr_malloc(n * sizeof *t->text_len);
    t->attr = fr_malloc(n);
    if (!t->text || !t->text_off || !t->text_len || !t->attr) return nomem();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t type = FR_TOK_NORMAL;
        if (types_le) memcpy(&type, types_le + 4 * i, 4);
        if (type < 0 || type > FR_TOK_BYTE)
            return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: token %zu has unknown type %d", i,
                            (int)type);
        t->attr[i] = (uint8_t)type;
        if (tokens[i].len) memcpy(t->text + off, tokens[i].ptr, tokens[i].len);
        t->text[off + tokens[i].len] = 0;
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)tokens[i].len;
        off += (size_t)tokens[i].len + 1;
    }
    return FRUGAL_OK;
}

static frugal_status index_pieces(fr_tokenizer *t) {
    size_t cap = table_size((size_t)t->n_vocab);
    t->piece_slots = fr_malloc(cap * sizeof *t->piece_slots);
    if (!t->piece_slots) return nomem();
    memset(t->piece_slots, 0xFF, cap * sizeof *t->piece_slots); /* all -1 */
    t->piece_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) insert_piece(t, id);
    for (int b = 0; b < 256; b++) {
        char c[4];
        size_t n = utf8_encode(byte_to_char((uint8_t)b), c);
        t->byte_token[b] = find_piece(t, c, n);
    }
    return FRUGAL_OK;
}

/* Parses "left right" merges into the pair table. */
static frugal_status index_merges(fr_tokenizer *t, const gguf_str *merges, size_t n_merges) {
    size_t cap = table_size(n_merges), longest = 0;
    t->merge_slots = fr_malloc(cap * sizeof *t->merge_slots);
    if (!t->merge_slots) return nomem();
    for (size_t i = 0; i < cap; i++) t->merge_slots[i].key = EMPTY_KEY;
    t->merge_mask = cap - 1;
    for (size_t i = 0; i < n_merges; i++) longest = FR_MAX(longest, (size_t)merges[i].len);
    char *joined = fr_malloc(longest + 1);
    if (!joined) return nomem();
    for (size_t i = 0; i < n_merges; i++) {
        const char *s = merges[i].ptr;
        size_t n = (size_t)merges[i].len;
        /* The separator is the first space after the first byte, as in
         * llama.cpp (a left half never starts with a space anyway). */
        const char *sp = n > 1 && s ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp || sp + 1 == s + n) {
            fr_free(joined);
            return fr_error(FRUGAL_ERR_FORMAT,
                            "tokenizer: merge %zu (\"%.*s\") is not two tokens separated by a "
                            "space", i, (int)FR_MIN(n, 64), s ? s : "");
        }
        size_t nl = (size_t)(sp - s), nr = n - nl - 1;
        memcpy(joined, s, nl);
        memcpy(joined + nl, sp + 1, nr);
        int32_t left = find_piece(t, s, nl), right = find_piece(t, sp + 1, nr);
        int32_t result = find_piece(t, joined, nl + nr);
        if (left >= 0 && right >= 0 && result >= 0)
            insert_merge(t, left, right, (int32_t)i, result);
    }
    fr_free(joined);
    return FRUGAL_OK;
}

typedef struct {
    uint32_t len;
    int32_t id;
} special_entry;

static int longer_first(const void *a, const void *b) {
    const special_entry *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* End-of-generation tokens besides EOS, by text: llama.cpp's end-of-turn
 * list plus its fill-in-the-middle pad / repo / file-separator tokens
 * (which it also treats as EOG, so SmolLM2's <reponame> ends a reply). They
 * are made control tokens if the file says otherwise, as llama.cpp does
 * (so Gemma's user-defined "</s>" is only cut out with parse_special). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_utterance>", "</s>", "[EOT]", "[EOS]", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>",
};

/* llama.cpp keeps "</s>" an ordinary token where the vocabulary has
 * Gemma 4's <|tool_response>. */
static void keep_s_end_normal(fr_tokenizer *t) {
    int32_t s_end = find_piece(t, "</s>", 4);
    if (s_end >= 0 && find_piece(t, "<|tool_response>", 16) >= 0) t->attr[s_end] = FR_TOK_NORMAL;
}

/* Whether the token's text is cut out of the input before BPE. */
static bool is_special(const fr_tokenizer *t, int32_t id) {
    int type = t->attr[id] & ATTR_TYPE_MASK;
    return t->text_len[id] > 0 &&
           (type == FR_TOK_CONTROL || type == FR_TOK_USER_DEFINED || type == FR_TOK_UNKNOWN);
}

/* The child of a trie node for one more byte, or -1. */
static int32_t trie_child(const fr_tokenizer *t, int32_t node, uint8_t byte) {
    uint64_t key = (uint64_t)node << 8 | byte;
    for (size_t i = (size_t)hash_u64(key) & t->trie_mask;; i = (i + 1) & t->trie_mask) {
        const trie_edge *e = &t->trie_edges[i];
        if (e->key == key) return e->child;
        if (e->key == EMPTY_KEY) return -1;
    }
}

static int32_t trie_add(fr_tokenizer *t, int32_t node, uint8_t byte, int32_t *n_nodes) {
    uint64_t key = (uint64_t)node << 8 | byte;
    for (size_t i = (size_t)hash_u64(key) & t->trie_mask;; i = (i + 1) & t->trie_mask) {
        trie_edge *e = &t->trie_edges[i];
        if (e->key == key) return e->child;
        if (e->key == EMPTY_KEY) {
            *e = (trie_edge){ key, (*n_nodes)++ };
            return e->child;
        }
    }
}

/* The special texts in a trie, so that one walk from each byte of the
 * input finds every special token starting there (see partition()). */
static frugal_status index_special_trie(fr_tokenizer *t) {
    size_t bytes = 0;
    for (int i = 0; i < t->n_special; i++) bytes += t->text_len[t->special[i]];
    if (bytes > INT32_MAX / 4)
        return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: special tokens of %zu bytes in all", bytes);
    size_t cap = table_size(bytes);
    t->trie_edges = fr_malloc(cap * sizeof *t->trie_edges);
    t->trie_special = fr_malloc((bytes + 1) * sizeof *t->trie_special);
    if (!t->trie_edges || !t->trie_special) return nomem();
    for (size_t i = 0; i < cap; i++) t->trie_edges[i].key = EMPTY_KEY;
    memset(t->trie_special, 0xFF, (bytes + 1) * sizeof *t->trie_special); /* all -1 */
    t->trie_mask = cap - 1;
    int32_t n_nodes = 1;
    for (int i = 0; i < t->n_special; i++) {
        const char *text = token_text(t, t->special[i]);
        int32_t node = 0;
        for (uint32_t k = 0; k < t->text_len[t->special[i]]; k++)
            node = trie_add(t, node, (uint8_t)text[k], &n_nodes);
        /* Of two tokens with the same text the first in order cuts it. */
        if (t->trie_special[node] < 0) t->trie_special[node] = i;
    }
    return FRUGAL_OK;
}

static frugal_status index_specials(fr_tokenizer *t) {
    if (t->eos >= 0) t->attr[t->eos] |= ATTR_EOG;
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++) {
        int32_t id = find_piece(t, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0) t->attr[id] = FR_TOK_CONTROL | ATTR_EOG;
    }
    keep_s_end_normal(t);
    int n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) n += is_special(t, id);
    special_entry *list = fr_malloc((size_t)n * sizeof *list);
    t->special = fr_malloc((size_t)n * sizeof *t->special);
    if (!list || !t->special) {
        fr_free(list);
        return nomem();
    }
    n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_special(t, id)) list[n++] = (special_entry){ t->text_len[id], id };
    /* llama.cpp's order: longest text first (ties: lower id, our choice). */
    qsort(list, (size_t)n, sizeof *list, longer_first);
    for (int i = 0; i < n; i++) t->special[i] = list[i].id;
    t->n_special = n;
    fr_free(list);
    return index_special_trie(t);
}

/* SentencePiece scores, read as llama.cpp reads them (all 0 without the
 * array). A NaN would leave the merge order undefined: it sorts last. */
static frugal_status copy_scores(fr_tokenizer *t, const unsigned char *scores_le) {
    t->scores = fr_calloc((size_t)t->n_vocab, sizeof *t->scores);
    if (!t->scores) return nomem();
    for (int32_t i = 0; scores_le && i < t->n_vocab; i++) {
        float s;
        memcpy(&s, scores_le + 4 * (size_t)i, 4);
        t->scores[i] = isnan(s) ? -INFINITY : s;
    }
    return FRUGAL_OK;
}

/* The token for each byte of a character that is not in the vocabulary:
 * "<0xAB>" (upper-case hex), else the byte itself as a one-byte token
 * (llama.cpp's order), else the unknown token (llama.cpp fails instead). */
static void index_byte_fallback(fr_tokenizer *t) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        const char name[6] = { '<', '0', 'x', hex[b >> 4], hex[b & 15], '>' };
        const char byte = (char)b;
        int32_t id = find_piece(t, name, sizeof name);
        if (id < 0) id = find_piece(t, &byte, 1);
        t->byte_fallback[b] = id >= 0 ? id : t->unk;
    }
}

static frugal_status check_id(int32_t id, int32_t n_vocab, const char *what) {
    if (id >= n_vocab || id < -1)
        return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: %s token id %d is outside the vocabulary "
                        "(%d tokens)", what, (int)id, (int)n_vocab);
    return FRUGAL_OK;
}

/* A vocabulary as build() takes it, whichever way it arrives. Arrays of
 * numbers are little-endian and possibly unaligned (they may point into
 * the GGUF map). */
typedef struct {
    bool spm;                        /* "llama" rather than "gpt2" */
    const gguf_str *tokens;
    size_t n_vocab;
    const unsigned char *types_le;   /* int32 each; NULL: all normal */
    const unsigned char *scores_le;  /* spm: float32 each; NULL: all 0 */
    const gguf_str *merges;          /* gpt2 */
    size_t n_merges;
    const char *pre;                 /* NULL: absent */
    int32_t bos, eos, unk;           /* -1: none */
    int add_bos;                     /* < 0: the tokenizer's default */
    bool add_space_prefix;           /* spm */
} vocab_spec;

static frugal_status check_spec(const vocab_spec *v) {
    if (v->n_vocab == 0 || v->n_vocab > INT32_MAX / 2)
        return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: vocabulary of %zu tokens", v->n_vocab);
    if (v->n_merges > INT32_MAX)
        return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: %zu merges", v->n_merges);
    frugal_status st;
    int32_t n = (int32_t)v->n_vocab;
    if ((st = check_id(v->bos, n, "BOS")) || (st = check_id(v->eos, n, "EOS")) ||
        (st = check_id(v->unk, n, "unknown")))
        return st;
    return FRUGAL_OK;
}

/* The token-model specific half of build(). */
static frugal_status build_gpt2(fr_tokenizer *t, const vocab_spec *v) {
    bool known;
    const pre_kind *kind = find_pre_kind(v->pre ? v->pre : "", &known);
    t->pre_known = known;
    t->ignore_merges = kind->ignore_merges;
    t->add_bos = v->add_bos < 0 ? kind->add_bos : v->add_bos != 0;
    frugal_status st = index_merges(t, v->merges, v->n_merges);
    if (!st) st = index_specials(t);
    if (!st) st = compile_stages(t, kind);
    return st;
}

/* SentencePiece has no pre-tokenizer, so tokenizer.ggml.pre (converters
 * write "default") does not matter and is never "unknown". */
static frugal_status build_spm(fr_tokenizer *t, const vocab_spec *v) {
    t->pre_known = true;
    t->add_bos = v->add_bos < 0 ? true : v->add_bos != 0; /* llama.cpp's default */
    t->add_space_prefix = v->add_space_prefix;
    index_byte_fallback(t);
    frugal_status st = copy_scores(t, v->scores_le);
    if (!st) st = index_specials(t);
    return st;
}

static frugal_status build(const vocab_spec *v, fr_tokenizer **out) {
    *out = NULL;
    frugal_status st = check_spec(v);
    if (st) return st;
    fr_tokenizer *t = fr_calloc(1, sizeof *t);
    if (!t) return nomem();
    t->spm = v->spm;
    t->n_vocab = (int32_t)v->n_vocab;
    t->bos = v->bos;
    t->eos = v->eos;
    t->unk = v->unk;
    const char *pre = v->pre ? v->pre : "";
    t->pre = fr_strndup(pre, strlen(pre));
    if (!t->pre) st = nomem();
    if (!st) st = copy_vocab(t, v->tokens, v->types_le);
    if (!st) st = index_pieces(t);
    if (!st) st = t->spm ? build_spm(t, v) : build_gpt2(t, v);
    if (st) {
        fr_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FRUGAL_OK;
}

static gguf_str *views_of(const char *const *strs, size_t n) {
    gguf_str *v = fr_malloc((n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) {
        v[i].ptr = strs[i] ? strs[i] : "";
        v[i].len = strlen(v[i].ptr);
    }
    return v;
}

frugal_status fr_tokenizer_new_bpe(const char *const *tokens, const int32_t *types, int n_vocab,
                                   const char *const *merges, int n_merges, const char *pre,
                                   int32_t bos, int32_t eos, bool add_bos, fr_tokenizer **out) {
    if (!out || !tokens || n_vocab <= 0 || n_merges < 0 || (n_merges > 0 && !merges))
        return fr_error(FRUGAL_ERR_INVALID_ARG, "fr_tokenizer_new_bpe: bad arguments");
    *out = NULL;
    gguf_str *tv = views_of(tokens, (size_t)n_vocab);
    gguf_str *mv = views_of(merges, (size_t)n_merges);
    vocab_spec v = { .tokens = tv, .n_vocab = (size_t)n_vocab,
                     .types_le = (const unsigned char *)types, .merges = mv,
                     .n_merges = (size_t)n_merges, .pre = pre, .bos = bos, .eos = eos,
                     .unk = -1, .add_bos = add_bos };
    frugal_status st = tv && mv ? build(&v, out) : nomem();
    fr_free(tv);
    fr_free(mv);
    return st;
}

/* An optional token id key: `fallback` when absent. */
static frugal_status optional_id(const gguf_file *g, const char *key, int32_t fallback,
                                 int32_t *id) {
    *id = fallback;
    if (!gguf_find(g, key)) return FRUGAL_OK;
    return gguf_get_i32(g, key, id);
}

static frugal_status optional_bool(const gguf_file *g, const char *key, bool *b) {
    if (!gguf_find(g, key)) return FRUGAL_OK;
    return gguf_get_bool(g, key, b);
}

/* An optional array with one number per token: NULL when absent. */
static frugal_status optional_per_token(const gguf_file *g, const char *key, uint32_t elem_type,
                                        uint64_t n_vocab, const char *what, const void **data) {
    *data = NULL;
    if (!gguf_find(g, key)) return FRUGAL_OK;
    uint64_t n;
    frugal_status st = gguf_get_arr(g, key, elem_type, data, &n);
    if (st) return st;
    if (n != n_vocab)
        return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: %llu %s for %llu tokens",
                        (unsigned long long)n, what, (unsigned long long)n_vocab);
    return FRUGAL_OK;
}

/* The arrays: tokens and types for both, merges for gpt2, scores for spm. */
static frugal_status read_arrays(const gguf_file *g, vocab_spec *v) {
    const void *tokens, *merges = NULL, *types, *scores = NULL;
    uint64_t n_vocab, n_merges = 0;
    frugal_status st;
    if ((st = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &tokens, &n_vocab)))
        return st;
    if (!v->spm &&
        (st = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_STRING, &merges, &n_merges)))
        return st;
    if ((st = optional_per_token(g, "tokenizer.ggml.token_type", GGUF_I32, n_vocab,
                                 "token types", &types)))
        return st;
    if (v->spm && (st = optional_per_token(g, "tokenizer.ggml.scores", GGUF_F32, n_vocab,
                                           "scores", &scores)))
        return st;
    if (n_vocab == 0 || n_vocab > INT32_MAX / 2)
        return fr_error(FRUGAL_ERR_FORMAT, "tokenizer: vocabulary of %llu tokens",
                        (unsigned long long)n_vocab);
    v->tokens = tokens;
    v->n_vocab = (size_t)n_vocab;
    v->merges = merges;
    v->n_merges = (size_t)n_merges;
    v->types_le = types;
    v->scores_le = scores;
    return FRUGAL_OK;
}

/* Special ids and flags. Where a key is missing, llama.cpp's defaults:
 * none for gpt2; for spm BOS 1, EOS 2, unknown 0 (if the vocabulary is that
 * large), BOS and space prefix on. */
static frugal_status read_flags(const gguf_file *g, vocab_spec *v) {
    int32_t n = (int32_t)v->n_vocab;
    frugal_status st;
    if ((st = optional_id(g, "tokenizer.ggml.bos_token_id", v->spm && n > 1 ? 1 : -1, &v->bos)) ||
        (st = optional_id(g, "tokenizer.ggml.eos_token_id", v->spm && n > 2 ? 2 : -1, &v->eos)))
        return st;
    v->unk = -1;
    if (v->spm && (st = optional_id(g, "tokenizer.ggml.unknown_token_id", 0, &v->unk))) return st;
    v->add_bos = -1;
    if (gguf_find(g, "tokenizer.ggml.add_bos_token")) {
        bool add_bos;
        if ((st = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos))) return st;
        v->add_bos = add_bos;
    }
    bool prefix = true;
    if (v->spm && (st = optional_bool(g, "tokenizer.ggml.add_space_prefix", &prefix))) return st;
    v->add_space_prefix = v->spm && prefix;
    return FRUGAL_OK;
}

frugal_status fr_tokenizer_load(const gguf_file *g, fr_tokenizer **out) {
    if (!g || !out) return fr_error(FRUGAL_ERR_INVALID_ARG, "fr_tokenizer_load: bad arguments");
    *out = NULL;
    frugal_status st;
    gguf_str model;
    if ((st = gguf_get_str(g, "tokenizer.ggml.model", &model))) return st;
    vocab_spec v = { .spm = gguf_str_eq(model, "llama") };
    if (!v.spm && !gguf_str_eq(model, "gpt2"))
        return fr_error(FRUGAL_ERR_UNSUPPORTED,
                        "tokenizer model '%.*s' is not supported (supported: gpt2, llama)",
                        (int)FR_MIN(model.len, 64), model.ptr);
    if ((st = read_arrays(g, &v)) || (st = read_flags(g, &v))) return st;
    char *pre = NULL;
    if (gguf_find(g, "tokenizer.ggml.pre")) {
        gguf_str s;
        if ((st = gguf_get_str(g, "tokenizer.ggml.pre", &s))) return st;
        if (!(pre = fr_strndup(s.ptr, s.len))) return nomem();
    }
    v.pre = pre;
    st = build(&v, out);
    fr_free(pre);
    return st;
}

/* ---- Tokenizing: growable arrays --------------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} id_vec;

typedef struct {
    size_t off, len;
    int32_t token;     /* a special token, or -1 for text still to tokenize */
} span;

typedef struct {
    span *v;
    size_t n, cap;
} span_vec;

typedef struct {
    int32_t special;   /* index in fr_tokenizer.special */
    int32_t pos;       /* byte offset in the text */
} occurrence;

typedef struct {
    int32_t id;          /* -1: a byte with no token */
    int32_t prev, next;  /* neighbours in the word, -1 at the ends */
    uint32_t len;        /* bytes; 0 once merged into its left neighbour */
} bpe_sym;

typedef struct {
    int32_t rank, left, right;
    int32_t left_id, right_id;  /* to recognise pairs made stale by other merges */
    int32_t result;             /* the merged token */
} bpe_pair;

typedef struct {
    uint32_t off, len;   /* bytes of the escaped fragment; len 0 once merged into its left */
    int32_t prev, next;  /* neighbours in the fragment, -1 at the ends */
    int32_t id;          /* the token of its text, -1 if none */
} spm_sym;

typedef struct {
    float score;         /* of the merged token: highest first */
    int32_t left, right;
    uint32_t len;        /* bytes of both: the pair is stale once either has grown */
    int32_t result;
} spm_pair;

/* Everything one fr_tokenize call allocates. */
typedef struct {
    const fr_tokenizer *t;
    id_vec out;
    span_vec frags;               /* special-token partition */
    occurrence *occ, *occ_sorted; /* special tokens found in the text */
    size_t occ_n, occ_cap;
    span_vec pieces, next_pieces; /* pre-tokenizer split */
    char *clean, *match;          /* fragment after UTF-8 clean-up */
    size_t clean_cap, match_cap;
    bpe_sym *syms;
    size_t syms_cap;
    bpe_pair *heap;
    size_t heap_n, heap_cap;
    char *word;                   /* a piece as token text (ignore_merges), an
                                     escaped fragment (spm) */
    size_t word_cap;
    pcre2_match_data *md;
    spm_sym *spm_syms;
    size_t spm_syms_cap;
    spm_pair *spm_heap;
    size_t spm_heap_n, spm_heap_cap;
} work;

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = fr_realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static frugal_status push_id(work *w, int32_t id) {
    if (!grow((void **)&w->out.v, &w->out.cap, w->out.n + 1, sizeof *w->out.v)) return nomem();
    w->out.v[w->out.n++] = id;
    return FRUGAL_OK;
}

static frugal_status push_span(span_vec *s, size_t off, size_t len, int32_t token) {
    if (!grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) return nomem();
    s->v[s->n++] = (span){ off, len, token };
    return FRUGAL_OK;
}

static void swap_spans(span_vec *a, span_vec *b) {
    span_vec tmp = *a;
    *a = *b;
    *b = tmp;
    b->n = 0;
}

static void work_free(work *w) {
    fr_free(w->out.v);
    fr_free(w->frags.v);
    fr_free(w->occ);
    fr_free(w->occ_sorted);
    fr_free(w->pieces.v);
    fr_free(w->next_pieces.v);
    fr_free(w->clean);
    fr_free(w->match);
    fr_free(w->syms);
    fr_free(w->heap);
    fr_free(w->word);
    pcre2_match_data_free(w->md);
    fr_free(w->spm_syms);
    fr_free(w->spm_heap);
}

/* ---- Stage 1: special tokens ------------------------------------------- */

/*
 * llama.cpp takes the special tokens one by one, longest first, and cuts
 * each one's leftmost non-overlapping occurrences out of the text still
 * left raw. Searching the text once per token would cost the number of
 * special tokens (6k for Gemma) times the text length, so instead:
 *
 *  1. one walk of the trie from every byte lists all occurrences of all
 *     special tokens that may be cut (parse_special or user-defined);
 *  2. a counting sort groups them by token, in that token's order, keeping
 *     each token's occurrences in text order;
 *  3. taking them in that order, an occurrence is cut when all its bytes
 *     are still raw (not covered by an earlier cut), which is exactly what
 *     the one-token-at-a-time search finds.
 */

static bool may_cut(const fr_tokenizer *t, int32_t special, bool parse_special) {
    return parse_special ||
           (t->attr[t->special[special]] & ATTR_TYPE_MASK) == FR_TOK_USER_DEFINED;
}

static frugal_status push_occurrence(work *w, int32_t special, size_t pos) {
    if (!grow((void **)&w->occ, &w->occ_cap, w->occ_n + 1, sizeof *w->occ)) return nomem();
    w->occ[w->occ_n++] = (occurrence){ special, (int32_t)pos };
    return FRUGAL_OK;
}

static frugal_status find_occurrences(work *w, const char *text, size_t len,
                                      bool parse_special) {
    const fr_tokenizer *t = w->t;
    frugal_status st = FRUGAL_OK;
    for (size_t p = 0; p < len && !st; p++) {
        int32_t node = 0;
        for (size_t q = p; q < len && !st; q++) {
            node = trie_child(t, node, (uint8_t)text[q]);
            if (node < 0) break;
            int32_t special = t->trie_special[node];
            if (special >= 0 && may_cut(t, special, parse_special))
                st = push_occurrence(w, special, p);
        }
    }
    return st;
}

/* Occurrences grouped by special token (stable, so each group stays in
 * text order) into w->occ_sorted. */
static frugal_status sort_occurrences(work *w) {
    int n = w->t->n_special;
    size_t *start = fr_calloc((size_t)n + 1, sizeof *start);
    w->occ_sorted = fr_malloc(w->occ_n * sizeof *w->occ_sorted);
    if (!start || !w->occ_sorted) {
        fr_free(start);
        return nomem();
    }
    for (size_t i = 0; i < w->occ_n; i++) start[w->occ[i].special + 1]++;
    for (int s = 0; s < n; s++) start[s + 1] += start[s];
    for (size_t i = 0; i < w->occ_n; i++) w->occ_sorted[start[w->occ[i].special]++] = w->occ[i];
    fr_free(start);
    return FRUGAL_OK;
}

#define OWNER_RAW (-1)
#define OWNER_INSIDE (-2)

/* owner[i]: the special token starting at byte i, OWNER_INSIDE for its
 * other bytes, OWNER_RAW for text. */
static void cut_occurrences(work *w, int32_t *owner) {
    const fr_tokenizer *t = w->t;
    for (size_t i = 0; i < w->occ_n; i++) {
        int32_t id = t->special[w->occ_sorted[i].special];
        size_t pos = (size_t)w->occ_sorted[i].pos, m = t->text_len[id], k = 0;
        while (k < m && owner[pos + k] == OWNER_RAW) k++;
        if (k < m) continue;
        owner[pos] = id;
        for (k = 1; k < m; k++) owner[pos + k] = OWNER_INSIDE;
    }
}

static frugal_status spans_from_owners(work *w, const int32_t *owner, size_t len) {
    frugal_status st = FRUGAL_OK;
    for (size_t i = 0; i < len && !st;) {
        if (owner[i] >= 0) {
            size_t m = w->t->text_len[owner[i]];
            st = push_span(&w->frags, i, m, owner[i]);
            i += m;
            continue;
        }
        size_t end = i;
        while (end < len && owner[end] == OWNER_RAW) end++;
        st = push_span(&w->frags, i, end - i, -1);
        i = end;
    }
    return st;
}

static frugal_status partition(work *w, const char *text, size_t len, bool parse_special) {
    frugal_status st = find_occurrences(w, text, len, parse_special);
    if (st) return st;
    if (w->occ_n == 0) return push_span(&w->frags, 0, len, -1);
    int32_t *owner = fr_malloc(len * sizeof *owner);
    if (!owner) return nomem();
    for (size_t i = 0; i < len; i++) owner[i] = OWNER_RAW;
    st = sort_occurrences(w);
    if (!st) {
        cut_occurrences(w, owner);
        st = spans_from_owners(w, owner, len);
    }
    fr_free(owner);
    return st;
}

/* ---- Stage 2: UTF-8 clean-up ------------------------------------------- */

/*
 * Valid text is used as is. Otherwise it is decoded as llama.cpp decodes it
 * and re-encoded: `clean` holds the bytes BPE will see; `match` is the same
 * with surrogates (which PCRE2 refuses) replaced by U+FFFD, a character of
 * the same regex class and the same 3-byte length, so offsets agree.
 */
static frugal_status clean_utf8(work *w, const char *text, size_t len, const char **clean,
                                const char **match, size_t *out_len) {
    if (utf8_valid((const uint8_t *)text, len)) {
        *clean = *match = text;
        *out_len = len;
        return FRUGAL_OK;
    }
    size_t need = 3 * len + 4; /* each bad byte can become 3 */
    if (!grow((void **)&w->clean, &w->clean_cap, need, 1) ||
        !grow((void **)&w->match, &w->match_cap, need, 1))
        return nomem();
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t c = utf8_decode_lenient((const uint8_t *)text, len, &i);
        if (c > 0x10FFFF) c = 0xFFFD; /* llama.cpp throws here */
        bool surrogate = c >= 0xD800 && c <= 0xDFFF;
        utf8_encode(surrogate ? 0xFFFD : c, w->match + n);
        n += utf8_encode(c, w->clean + n);
    }
    *clean = w->clean;
    *match = w->match;
    *out_len = n;
    return FRUGAL_OK;
}

/* ---- Stage 3: pre-tokenizer -------------------------------------------- */

/* Splits one piece into the matches of a regex and the gaps between them. */
static frugal_status split_piece(work *w, const pcre2_code *re, const char *text, span p) {
    const PCRE2_SPTR subject = (PCRE2_SPTR)(text + p.off);
    size_t pos = 0, last = 0;
    frugal_status st = FRUGAL_OK;
    while (pos < p.len && !st) {
        int rc = pcre2_match(re, subject, p.len, pos, PCRE2_NO_UTF_CHECK, w->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc == PCRE2_ERROR_NOMEMORY) return nomem();
        if (rc < 0) return fr_error(FRUGAL_ERR_INVALID_ARG, "tokenizer: PCRE2 match error %d", rc);
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match: step over one character */
            pos = ms + 1;
            while (pos < p.len && (subject[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        if (ms > last) st = push_span(&w->next_pieces, p.off + last, ms - last, -1);
        if (!st) st = push_span(&w->next_pieces, p.off + ms, me - ms, -1);
        last = pos = me;
    }
    if (!st && last < p.len) st = push_span(&w->next_pieces, p.off + last, p.len - last, -1);
    return st;
}

static frugal_status pre_tokenize(work *w, const char *match, size_t len) {
    w->pieces.n = 0;
    frugal_status st = push_span(&w->pieces, 0, len, -1);
    for (int s = 0; s < w->t->n_stages && !st; s++) {
        for (size_t i = 0; i < w->pieces.n && !st; i++)
            st = split_piece(w, w->t->stages[s], match, w->pieces.v[i]);
        swap_spans(&w->pieces, &w->next_pieces);
    }
    return st;
}

/* ---- Stage 4: BPE ------------------------------------------------------ */

static bool pair_before(const bpe_pair *a, const bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static frugal_status heap_push(work *w, bpe_pair p) {
    if (!grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap)) return nomem();
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = p;
    return FRUGAL_OK;
}

static bpe_pair heap_pop(work *w) {
    bpe_pair top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* Queues the pair (left, right) if the vocabulary has a merge for it. */
static frugal_status consider_pair(work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return FRUGAL_OK;
    int32_t a = w->syms[left].id, b = w->syms[right].id;
    if (a < 0 || b < 0) return FRUGAL_OK;
    const merge_slot *m = find_merge(w->t, a, b);
    if (!m) return FRUGAL_OK;
    return heap_push(w, (bpe_pair){ m->rank, left, right, a, b, m->result });
}

/* A symbol whose byte has no token: llama.cpp then looks up each byte of
 * the byte's visible character as a one-byte token (normally none exist,
 * so the byte is dropped). */
static frugal_status push_unknown_byte(work *w, uint8_t byte) {
    char c[4];
    size_t n = utf8_encode(byte_to_char(byte), c);
    for (size_t k = 0; k < n; k++) {
        int32_t id = find_piece(w->t, c + k, 1);
        if (id >= 0) {
            frugal_status st = push_id(w, id);
            if (st) return st;
        }
    }
    return FRUGAL_OK;
}

/* llama3 (ignore_merges): a piece that is a token as a whole is used as is. */
static frugal_status whole_piece_token(work *w, const uint8_t *s, size_t n, int32_t *id) {
    *id = -1;
    if (!grow((void **)&w->word, &w->word_cap, 2 * n + 1, 1)) return nomem();
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += utf8_encode(byte_to_char(s[i]), w->word + len);
    *id = find_piece(w->t, w->word, len);
    return FRUGAL_OK;
}

static frugal_status merge_symbols(work *w) {
    frugal_status st = FRUGAL_OK;
    while (w->heap_n > 0 && !st) {
        bpe_pair p = heap_pop(w);
        bpe_sym *l = &w->syms[p.left], *r = &w->syms[p.right];
        if (l->len == 0 || r->len == 0 || l->id != p.left_id || r->id != p.right_id) continue;
        l->id = p.result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = p.left;
        st = consider_pair(w, l->prev, p.left);
        if (!st) st = consider_pair(w, p.left, l->next);
    }
    return st;
}

static frugal_status bpe_word(work *w, const uint8_t *s, size_t n) {
    frugal_status st;
    if (n == 0) return FRUGAL_OK;
    if (w->t->ignore_merges) {
        int32_t id;
        if ((st = whole_piece_token(w, s, n, &id))) return st;
        if (id >= 0) return push_id(w, id);
    }
    if (!grow((void **)&w->syms, &w->syms_cap, n, sizeof *w->syms)) return nomem();
    for (size_t i = 0; i < n; i++) {
        w->syms[i] = (bpe_sym){ w->t->byte_token[s[i]], (int32_t)i - 1,
                                i + 1 < n ? (int32_t)i + 1 : -1, 1 };
    }
    w->heap_n = 0;
    st = FRUGAL_OK;
    for (size_t i = 1; i < n && !st; i++) st = consider_pair(w, (int32_t)i - 1, (int32_t)i);
    if (!st) st = merge_symbols(w);
    /* Symbol i starts at byte i: merging keeps the left symbol. */
    for (int32_t i = 0; i >= 0 && !st; i = w->syms[i].next)
        st = w->syms[i].id >= 0 ? push_id(w, w->syms[i].id) : push_unknown_byte(w, s[i]);
    return st;
}

static frugal_status tokenize_text(work *w, const char *text, size_t len) {
    const char *clean = text, *match = text;
    size_t n = 0;
    frugal_status st = clean_utf8(w, text, len, &clean, &match, &n);
    if (!st) st = pre_tokenize(w, match, n);
    for (size_t i = 0; i < w->pieces.n && !st; i++)
        st = bpe_word(w, (const uint8_t *)clean + w->pieces.v[i].off, w->pieces.v[i].len);
    return st;
}

static frugal_status bpe_fragments(work *w, const char *text) {
    w->md = pcre2_match_data_create(1, w->t->pcre_ctx);
    if (!w->md) return nomem();
    frugal_status st = FRUGAL_OK;
    for (size_t i = 0; i < w->frags.n && !st; i++) {
        span f = w->frags.v[i];
        st = f.token >= 0 ? push_id(w, f.token) : tokenize_text(w, text + f.off, f.len);
    }
    return st;
}

/* ---- SentencePiece ------------------------------------------------------ */

#define SPM_SPACE "\xE2\x96\x81" /* U+2581, which SentencePiece writes for a space */

/* Spaces become U+2581, in front of the text too when asked. Symbol
 * offsets are 32-bit, which bounds the escaped length. */
static frugal_status spm_escape(work *w, const char *text, size_t len, bool space_prefix,
                                size_t *out_len) {
    size_t n = len + (space_prefix ? 3 : 0);
    for (size_t i = 0; i < len; i++) n += text[i] == ' ' ? 2 : 0;
    if (n > INT32_MAX)
        return fr_error(FRUGAL_ERR_INVALID_ARG, "tokenizer: text fragment of %zu bytes is over "
                        "2 GiB with its spaces escaped", len);
    if (!grow((void **)&w->word, &w->word_cap, n, 1)) return nomem();
    n = 0;
    if (space_prefix) {
        memcpy(w->word, SPM_SPACE, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(w->word + n, SPM_SPACE, 3);
            n += 3;
        } else {
            w->word[n++] = text[i];
        }
    }
    *out_len = n;
    return FRUGAL_OK;
}

/* A character's length from its lead byte alone, as llama.cpp splits SPM
 * text: continuation bytes count as one, nothing else is checked. */
static uint32_t spm_char_len(uint8_t lead) {
    return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

static bool spm_pair_before(const spm_pair *a, const spm_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static frugal_status spm_heap_push(work *w, spm_pair p) {
    if (!grow((void **)&w->spm_heap, &w->spm_heap_cap, w->spm_heap_n + 1, sizeof *w->spm_heap))
        return nomem();
    size_t i = w->spm_heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!spm_pair_before(&p, &w->spm_heap[parent])) break;
        w->spm_heap[i] = w->spm_heap[parent];
        i = parent;
    }
    w->spm_heap[i] = p;
    return FRUGAL_OK;
}

static spm_pair spm_heap_pop(work *w) {
    spm_pair *h = w->spm_heap;
    spm_pair top = h[0], last = h[--w->spm_heap_n];
    size_t i = 0, n = w->spm_heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && spm_pair_before(&h[c + 1], &h[c])) c++;
        if (!spm_pair_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0) h[i] = last;
    return top;
}

/* Queues the pair (left, right) if their text together is a token. The
 * halves need not be tokens themselves. */
static frugal_status spm_consider(work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return FRUGAL_OK;
    const spm_sym *l = &w->spm_syms[left], *r = &w->spm_syms[right];
    uint32_t len = l->len + r->len;
    int32_t id = find_piece(w->t, w->word + l->off, len);
    if (id < 0) return FRUGAL_OK;
    return spm_heap_push(w, (spm_pair){ w->t->scores[id], left, right, len, id });
}

static frugal_status spm_merge(work *w) {
    frugal_status st = FRUGAL_OK;
    while (w->spm_heap_n > 0 && !st) {
        spm_pair p = spm_heap_pop(w);
        spm_sym *l = &w->spm_syms[p.left], *r = &w->spm_syms[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.len) continue;
        l->len = p.len;
        l->id = p.result;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w->spm_syms[r->next].prev = p.left;
        st = spm_consider(w, l->prev, p.left);
        if (!st) st = spm_consider(w, p.left, l->next);
    }
    return st;
}

/* Symbols that are tokens as they are; the others byte by byte. */
static frugal_status spm_emit(work *w) {
    frugal_status st = FRUGAL_OK;
    for (int32_t i = 0; i >= 0 && !st; i = w->spm_syms[i].next) {
        const spm_sym *s = &w->spm_syms[i];
        if (s->id >= 0) {
            st = push_id(w, s->id);
            continue;
        }
        for (uint32_t k = 0; k < s->len && !st; k++) {
            int32_t id = w->t->byte_fallback[(uint8_t)w->word[s->off + k]];
            if (id >= 0) st = push_id(w, id);
        }
    }
    return st;
}

static frugal_status spm_fragment(work *w, const char *text, size_t len, bool space_prefix) {
    size_t n = 0;
    frugal_status st = spm_escape(w, text, len, space_prefix, &n);
    if (st || n == 0) return st;
    if (!grow((void **)&w->spm_syms, &w->spm_syms_cap, n, sizeof *w->spm_syms)) return nomem();
    int32_t count = 0;
    for (size_t off = 0; off < n; count++) {
        uint32_t clen = (uint32_t)FR_MIN((size_t)spm_char_len((uint8_t)w->word[off]), n - off);
        int32_t id = find_piece(w->t, w->word + off, clen);
        off += clen;
        w->spm_syms[count] = (spm_sym){ (uint32_t)(off - clen), clen, count - 1,
                                        off < n ? count + 1 : -1, id };
    }
    w->spm_heap_n = 0;
    for (int32_t i = 1; i < count && !st; i++) st = spm_consider(w, i - 1, i);
    if (!st) st = spm_merge(w);
    if (!st) st = spm_emit(w);
    return st;
}

/* The space prefix goes where llama.cpp puts it: before the first text
 * fragment and before any that follows a special token. */
static frugal_status spm_fragments(work *w, const char *text) {
    bool after_special = true;
    frugal_status st = FRUGAL_OK;
    for (size_t i = 0; i < w->frags.n && !st; i++) {
        span f = w->frags.v[i];
        if (f.token >= 0) {
            st = push_id(w, f.token);
        } else {
            st = spm_fragment(w, text + f.off, f.len, w->t->add_space_prefix && after_special);
        }
        after_special = f.token >= 0;
    }
    return st;
}

static frugal_status tokenize_all(work *w, const char *text, size_t len, bool add_bos,
                                  bool parse_special) {
    const fr_tokenizer *t = w->t;
    frugal_status st = FRUGAL_OK;
    if (add_bos && t->bos >= 0) st = push_id(w, t->bos);
    if (!st && len > 0) st = partition(w, text, len, parse_special);
    if (st) return st;
    return t->spm ? spm_fragments(w, text) : bpe_fragments(w, text);
}

int64_t fr_tokenize(const fr_tokenizer *t, const char *text, size_t len, bool add_bos,
                    bool parse_special, int32_t *out, int64_t cap) {
    if (!t || (!text && len) || cap < 0 || (!out && cap > 0)) {
        fr_error(FRUGAL_ERR_INVALID_ARG, "fr_tokenize: bad arguments");
        return -1;
    }
    if (len > INT32_MAX) {
        fr_error(FRUGAL_ERR_INVALID_ARG, "fr_tokenize: text of %zu bytes is over 2 GiB", len);
        return -1;
    }
    work w = { .t = t };
    frugal_status st = tokenize_all(&w, text, len, add_bos, parse_special);
    int64_t n = st ? -1 : (int64_t)w.out.n;
    if (n > 0 && cap > 0) memcpy(out, w.out.v, (size_t)FR_MIN(n, cap) * sizeof *out);
    work_free(&w);
    return n;
}

/* ---- Decoding and accessors -------------------------------------------- */

/* "<0xAB>" -> 0xAB, or -1. */
static int byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static void put(char *buf, int cap, int *n, const char *s, size_t len) {
    for (size_t i = 0; i < len; i++, (*n)++) {
        if (*n < cap) buf[*n] = s[i];
    }
}

/* gpt2 normal tokens: each character back to its byte. A character outside the
 * byte table (a malformed vocabulary) is passed through as UTF-8. */
static int decode_gpt2(const char *s, size_t len, char *buf, int cap) {
    int n = 0;
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        uint32_t c = utf8_decode_lenient((const uint8_t *)s, len, &i);
        int b = char_to_byte(c);
        if (b >= 0) {
            char byte = (char)b;
            put(buf, cap, &n, &byte, 1);
        } else {
            put(buf, cap, &n, s + start, i - start);
        }
    }
    return n;
}

/* SentencePiece tokens: U+2581 back to a space, the rest as it is. */
static int decode_spm(const char *s, size_t len, char *buf, int cap) {
    int n = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(s + i, SPM_SPACE, 3) == 0) {
            put(buf, cap, &n, " ", 1);
            i += 3;
        } else {
            put(buf, cap, &n, s + i, 1);
            i++;
        }
    }
    return n;
}

int fr_token_to_bytes(const fr_tokenizer *t, int32_t tok, char *buf, int cap) {
    if (!t || tok < 0 || tok >= t->n_vocab) return -1;
    if (!buf) cap = 0;
    const char *s = token_text(t, tok);
    size_t len = t->text_len[tok];
    int n = 0;
    switch (t->attr[tok] & ATTR_TYPE_MASK) {
    case FR_TOK_NORMAL:
    case 0: /* undefined: treat as normal */
        return t->spm ? decode_spm(s, len, buf, cap) : decode_gpt2(s, len, buf, cap);
    case FR_TOK_BYTE: {
        int v = byte_token_value(s, len);
        if (v >= 0) {
            char byte = (char)v;
            put(buf, cap, &n, &byte, 1);
            return n;
        }
        break;
    }
    case FR_TOK_UNUSED:
        return 0;
    default: /* control, user-defined, unknown: their text */
        break;
    }
    put(buf, cap, &n, s, len);
    return n;
}

int fr_tokenizer_n_vocab(const fr_tokenizer *t) { return t->n_vocab; }
int32_t fr_tokenizer_bos(const fr_tokenizer *t) { return t->bos; }
int32_t fr_tokenizer_eos(const fr_tokenizer *t) { return t->eos; }
bool fr_tokenizer_add_bos(const fr_tokenizer *t) { return t->add_bos; }
const char *fr_tokenizer_model(const fr_tokenizer *t) { return t->spm ? "llama" : "gpt2"; }
const char *fr_tokenizer_pre(const fr_tokenizer *t) { return t->pre; }
bool fr_tokenizer_pre_known(const fr_tokenizer *t) { return t->pre_known; }

bool fr_tokenizer_is_eog(const fr_tokenizer *t, int32_t tok) {
    return t && tok >= 0 && tok < t->n_vocab && (t->attr[tok] & ATTR_EOG);
}

int32_t fr_tokenizer_find(const fr_tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    return find_piece(t, piece, strlen(piece));
}

int fr_tokenizer_token_type(const fr_tokenizer *t, int32_t tok) {
    if (!t || tok < 0 || tok >= t->n_vocab) return -1;
    return t->attr[tok] & ATTR_TYPE_MASK;
}
