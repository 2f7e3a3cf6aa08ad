/*
 * fuzz_gguf.c - libFuzzer target: a model file from untrusted bytes.
 *
 *  1. gguf_parse on the input (an exact-size buffer, so ASan sees any read
 *     past its end); when it parses, every typed getter on every key, and a
 *     touch of the first and last byte of every string and tensor.
 *  2. The same bytes as a file (a memfd, reached by /proc/self/fd/N):
 *     frugal_model_load, which also runs the tokenizer and architecture
 *     loaders on the untrusted metadata. When it loads: info, metadata and
 *     tensor listings, tokenizing and decoding a text with special tokens,
 *     the chat template, a context of 8 tokens on one thread, a two-token
 *     prefill and a one-token decode, and sampling from the logits (which
 *     a hostile file can make NaN or infinite).
 *
 * Invariants checked (a failure aborts, which libFuzzer reports): a failed
 * parse or load leaves a non-empty error message and no object; token ids
 * are inside the vocabulary; evaluation of valid ids in an 8-token context
 * succeeds; sampled ids are inside the vocabulary.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "fuzz.h"
#include "gguf.h"
#include "model.h"

/* ---- 1. the parser ---- */

static volatile unsigned sink;

static void touch(const void *p, uint64_t n) {
    if (n == 0) return;
    sink += ((const uint8_t *)p)[0];
    sink += ((const uint8_t *)p)[n - 1];
}

static void poke_getters(const gguf_file *g) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)FR_MIN(kv->key.len, 127), kv->key.ptr);
        FUZZ_CHECK(gguf_find(g, key) != NULL || strlen(key) != kv->key.len);
        uint32_t u;
        int32_t s;
        float f;
        bool b;
        gguf_str str;
        const void *d;
        uint64_t n;
        gguf_get_u32(g, key, &u);
        gguf_get_i32(g, key, &s);
        gguf_get_f32(g, key, &f);
        gguf_get_bool(g, key, &b);
        if (gguf_get_str(g, key, &str) == FRUGAL_OK) touch(str.ptr, str.len);
        if (kv->type == GGUF_ARRAY && gguf_get_arr(g, key, kv->arr_type, &d, &n) == FRUGAL_OK) {
            FUZZ_CHECK(n == kv->arr_n);
            if (kv->arr_type == GGUF_STRING) {
                const gguf_str *strs = d;
                for (uint64_t k = 0; k < n; k++) touch(strs[k].ptr, strs[k].len);
            }
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        touch(t->name.ptr, t->name.len);
        touch(t->data, t->nbytes);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        FUZZ_CHECK(g->data_offset + t->offset + t->nbytes <= g->size);
    }
}

/* ---- 2. the model ---- */

static int memfd = -1;
static char memfd_path[64];

static bool write_file(const uint8_t *data, size_t size) {
    if (memfd < 0) {
        memfd = memfd_create("fuzz_gguf", MFD_CLOEXEC);
        if (memfd < 0) {
            perror("fuzz_gguf: memfd_create");
            abort();
        }
        snprintf(memfd_path, sizeof memfd_path, "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) != 0) return false;
    for (size_t done = 0; done < size;) {
        ssize_t w = pwrite(memfd, data + done, size - done, (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        done += (size_t)w;
    }
    return true;
}

static const char sample_text[] =
    "Hello world, <|im_start|>user\nhello 12345 h\xc3\xa9llo \xf0\x9f\x99\x82<|im_end|>"
    "<start_of_turn>model\n \xff\xfe <tool>  the\tend</s>";

static void check_tokens(const frugal_model *m, const int32_t *ids, int64_t n) {
    int n_vocab = frugal_n_vocab(m);
    frugal_stream *stream = NULL;
    FUZZ_CHECK(frugal_stream_new(m, &stream) == FRUGAL_OK);
    char out[1024], piece[8];
    for (int64_t i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab);
        FUZZ_CHECK(frugal_token_bytes(m, ids[i], piece, sizeof piece) >= 0);
        int w = frugal_stream_push(stream, ids[i], out, sizeof out);
        FUZZ_CHECK(w >= 0 && fuzz_utf8_valid((const uint8_t *)out, (size_t)w));
        (void)frugal_token_is_eog(m, ids[i]);
    }
    int w = frugal_stream_flush(stream, out, sizeof out);
    FUZZ_CHECK(w >= 0 && fuzz_utf8_valid((const uint8_t *)out, (size_t)w));
    frugal_stream_free(stream);
}

static int64_t tokenize(const frugal_model *m, const char *text, size_t len, unsigned flags,
                        int32_t *ids, int64_t cap) {
    int64_t n = frugal_tokenize(m, text, len, NULL, 0, flags);
    FUZZ_CHECK(n >= 0);
    int64_t k = frugal_tokenize(m, text, len, ids, cap, flags);
    FUZZ_CHECK(k == n);
    check_tokens(m, ids, FR_MIN(n, cap));
    return FR_MIN(n, cap);
}

static void sample(frugal_ctx *ctx, int n_vocab, float temperature) {
    frugal_sampler_params sp = frugal_sampler_default_params();
    sp.temperature = temperature;
    sp.seed = 7;
    sp.repeat_penalty = 1.1f;
    frugal_sampler *s = NULL;
    FUZZ_CHECK(frugal_sampler_new(&sp, n_vocab, &s) == FRUGAL_OK);
    frugal_sampler_accept(s, 0);
    const float *logits = frugal_logits(ctx, -1);
    FUZZ_CHECK(logits != NULL);
    int32_t tok = frugal_sampler_sample(s, logits);
    FUZZ_CHECK(tok >= 0 && tok < n_vocab);
    frugal_sampler_free(s);
}

static void run_model(frugal_model *m) {
    frugal_model_info info;
    frugal_model_get_info(m, &info);
    FUZZ_CHECK(info.n_vocab > 0 && info.n_vocab == frugal_n_vocab(m));
    FUZZ_CHECK(info.arch && info.name && info.tokenizer_model && info.chat_template);

    char value[48];
    const char *key;
    for (int i = 0; frugal_model_meta(m, i, &key, value, sizeof value); i++)
        FUZZ_CHECK(strlen(value) < sizeof value);
    frugal_tensor_info t;
    for (int i = 0; frugal_model_tensor(m, i, &t); i++) FUZZ_CHECK(t.name && t.type);

    int32_t ids[256];
    tokenize(m, sample_text, sizeof sample_text - 1,
             FRUGAL_TOKENIZE_ADD_BOS | FRUGAL_TOKENIZE_PARSE_SPECIAL, ids, 256);
    int64_t n = tokenize(m, sample_text, sizeof sample_text - 1, 0, ids, 256);

    frugal_chat_msg msgs[3] = { { "system", "Be brief." }, { "user", " Hi! " },
                                { "assistant", "Hello." } };
    char *chat = NULL;
    frugal_status st = frugal_chat_apply(m, msgs + 1, 1, true, &chat);
    FUZZ_CHECK((st == FRUGAL_OK) == (chat != NULL));
    if (chat) tokenize(m, chat, strlen(chat), FRUGAL_TOKENIZE_PARSE_SPECIAL, ids + 128, 128);
    frugal_free(chat);
    st = frugal_chat_apply(m, msgs, 3, false, &chat);
    FUZZ_CHECK((st == FRUGAL_OK) == (chat != NULL));
    frugal_free(chat);

    frugal_ctx_params cp = frugal_ctx_default_params();
    cp.n_ctx = 8;
    cp.n_threads = 1;
    frugal_ctx *ctx = NULL;
    st = frugal_ctx_new(m, &cp, &ctx);
    FUZZ_CHECK((st == FRUGAL_OK) == (ctx != NULL));
    if (!ctx) return;   /* out of memory: allowed */
    int n_vocab = frugal_n_vocab(m);
    int32_t toks[3] = { n > 0 ? ids[0] : 0, n_vocab - 1, n > 1 ? ids[1] : 0 };
    FUZZ_CHECK(frugal_eval(ctx, toks, 2, true) == FRUGAL_OK);
    FUZZ_CHECK(frugal_logits(ctx, 0) != NULL && frugal_logits(ctx, 1) != NULL);
    sample(ctx, n_vocab, 0.0f);
    FUZZ_CHECK(frugal_eval(ctx, toks + 2, 1, false) == FRUGAL_OK);
    sample(ctx, n_vocab, 0.8f);
    FUZZ_CHECK(frugal_ctx_pos(ctx) == 3);
    frugal_ctx_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g = NULL;
    frugal_status st = gguf_parse(data, size, &g);
    if (st != FRUGAL_OK) {
        FUZZ_CHECK(g == NULL && frugal_last_error()[0] != 0);
        return 0;
    }
    poke_getters(g);
    gguf_close(g);

    if (!write_file(data, size)) return 0;
    frugal_model *m = NULL;
    st = frugal_model_load(memfd_path, &m);
    if (st != FRUGAL_OK) {
        FUZZ_CHECK(m == NULL && frugal_last_error()[0] != 0);
        return 0;
    }
    run_model(m);
    frugal_model_free(m);
    return 0;
}
