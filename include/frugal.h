/*
 * frugal.h - the whole public API of libfrugal.
 *
 * frugal runs quantized GGUF language models on the CPU. The API has four
 * kinds of object, all opaque:
 *
 *   frugal_model    the weights (memory-mapped, read-only), tokenizer and
 *                   hyperparameters of one GGUF file. Shareable between
 *                   contexts.
 *   frugal_ctx      one inference state over a model: KV cache, scratch
 *                   buffers, thread pool.
 *   frugal_sampler  turns logits into a token (greedy, temperature, top-k,
 *                   top-p, min-p, logit bias, repetition, frequency and
 *                   presence penalties, seeded RNG).
 *   frugal_stream   turns a stream of tokens into valid UTF-8 text.
 *
 * Every call that can fail returns a frugal_status. The detailed message of
 * the last failure on the calling thread is frugal_last_error(). The library
 * never prints and never exits.
 */
#ifndef FRUGAL_H
#define FRUGAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FRUGAL_VERSION "0.1.0"

typedef enum {
    FRUGAL_OK = 0,
    FRUGAL_ERR_INVALID_ARG,  /* a parameter out of range, NULL where not allowed */
    FRUGAL_ERR_IO,           /* file cannot be opened, read or mapped */
    FRUGAL_ERR_FORMAT,       /* the model file is malformed */
    FRUGAL_ERR_UNSUPPORTED,  /* well-formed, but uses something we do not implement */
    FRUGAL_ERR_NOMEM,        /* an allocation failed */
    FRUGAL_ERR_CONTEXT_FULL, /* more tokens than the context holds */
    FRUGAL_ERR_TEMPLATE,     /* unknown chat template or bad messages */
} frugal_status;

/* A short constant string naming the status, e.g. "malformed model file". */
const char *frugal_status_str(frugal_status st);

/* The detailed message of the last failed call on this thread ("" if none). */
const char *frugal_last_error(void);

typedef struct frugal_model frugal_model;
typedef struct frugal_ctx frugal_ctx;
typedef struct frugal_sampler frugal_sampler;
typedef struct frugal_stream frugal_stream;

/* ---- Model ------------------------------------------------------------ */

frugal_status frugal_model_load(const char *path, frugal_model **out);
/* Free a model after every context and prefix cache made over it: they
 * use its weights and give their KV memory back to it. */
void frugal_model_free(frugal_model *model);

typedef struct {
    const char *arch;            /* general.architecture, e.g. "llama" */
    const char *name;            /* general.name, or "" */
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim;
    int n_vocab, n_ctx_train;
    float rope_theta, norm_eps;
    const char *tokenizer_model; /* "gpt2" (byte-level BPE) or "llama" (SentencePiece) */
    const char *tokenizer_pre;   /* pre-tokenizer name, or "" */
    const char *chat_template;   /* name of the recognised template, or "unknown"/"none" */
    int32_t bos_id, eos_id;
    bool add_bos;
    uint64_t n_params;           /* elements in all tensors */
    uint64_t weight_bytes;       /* bytes of tensor data */
    uint64_t file_bytes;
} frugal_model_info;

void frugal_model_get_info(const frugal_model *model, frugal_model_info *info);

/* Metadata as text, for `frugal info`. Arrays longer than a few elements
 * are summarised. Returns false when i is out of range. */
int frugal_model_meta_count(const frugal_model *model);
bool frugal_model_meta(const frugal_model *model, int i, const char **key,
                       char *value, size_t value_cap);

typedef struct {
    const char *name;
    const char *type;  /* "Q4_1", "F32", ... */
    int n_dims;
    int64_t ne[4];     /* ne[0] is the contiguous (row) length */
    uint64_t bytes;
    uint64_t offset;   /* from the start of the file */
} frugal_tensor_info;

int frugal_model_tensor_count(const frugal_model *model);
bool frugal_model_tensor(const frugal_model *model, int i, frugal_tensor_info *t);

/* ---- Tokens ----------------------------------------------------------- */

enum {
    FRUGAL_TOKENIZE_ADD_BOS = 1,       /* prepend BOS (only if the model adds one) */
    FRUGAL_TOKENIZE_PARSE_SPECIAL = 2, /* "<|im_start|>" in the text becomes its token */
};

/* Tokenizes text[0..len). Writes at most cap ids and returns how many the
 * full result has (call again with a bigger buffer when that exceeds cap),
 * or -1 on error (see frugal_last_error). */
int64_t frugal_tokenize(const frugal_model *model, const char *text, size_t len,
                        int32_t *tokens, int64_t cap, unsigned flags);

/* The bytes a token stands for (not necessarily valid UTF-8 alone). Returns
 * the byte count (may exceed cap: then nothing useful was written), -1 for a
 * bad id. */
int frugal_token_bytes(const frugal_model *model, int32_t token, char *buf, int cap);

int frugal_n_vocab(const frugal_model *model);
/* True for tokens that end a generation (EOS, end-of-turn). */
bool frugal_token_is_eog(const frugal_model *model, int32_t token);

/* Streaming detokenizer: push tokens, get back only complete UTF-8 (an
 * invalid sequence becomes U+FFFD). */
frugal_status frugal_stream_new(const frugal_model *model, frugal_stream **out);
/* Appends the text that became complete to out (NUL-terminated, cap >= 32
 * is always enough for one token's worth plus pending bytes... use 256).
 * Returns the number of bytes written (excluding NUL), or -1 if cap too small. */
int frugal_stream_push(frugal_stream *s, int32_t token, char *out, size_t cap);
/* Flushes pending bytes (an incomplete sequence becomes U+FFFD). */
int frugal_stream_flush(frugal_stream *s, char *out, size_t cap);
void frugal_stream_free(frugal_stream *s);

/* ---- Chat templates --------------------------------------------------- */

typedef struct {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} frugal_chat_msg;

/* Renders messages with the model's chat template. *out is allocated with
 * malloc; free it with frugal_free. FRUGAL_ERR_TEMPLATE if the model's
 * template is not one we know. */
frugal_status frugal_chat_apply(const frugal_model *model, const frugal_chat_msg *msgs,
                                size_t n_msgs, bool add_generation_prompt, char **out);

void frugal_free(void *p);

/* ---- Context (inference state) ---------------------------------------- */

/* How the KV cache stores keys and values (docs/kv-cache.md). Pages of 32
 * tokens are written in fp16 and packed once full and older than the
 * full-precision residual. q8: per token, blocks of 32 channels, int8
 * with a scale. kivi4/kivi2 (KIVI): asymmetric 4/2-bit, keys per channel
 * over the page's 32 tokens (after RoPE), values per token in groups of
 * 32 channels. */
typedef enum { FRUGAL_KV_F16 = 0, FRUGAL_KV_Q8 = 1, FRUGAL_KV_KIVI4 = 2, FRUGAL_KV_KIVI2 = 3 } frugal_kv_type;

/* Which tokens a budgeted cache keeps. window: the first 4 ("sinks") and
 * the most recent. scissorhands: the most recent quarter of the budget,
 * and of the rest those least often under the average attention weight
 * over the last decoding steps. */
typedef enum { FRUGAL_KV_POLICY_WINDOW = 0, FRUGAL_KV_POLICY_SCISSORHANDS = 1 } frugal_kv_policy;

typedef struct {
    int n_ctx;       /* positions a sequence may reach; 0 = the model's training context */
    int n_threads;   /* 0 = number of physical cores */
    int n_batch;     /* tokens per forward pass in prefill; 0 = default */
    int kv_type;     /* frugal_kv_type */
    int kv_residual; /* recent tokens kept in fp16 by a compressed cache (multiple of 32); 0 = 32 */
    int kv_budget;   /* at most this many cached tokens per layer (>= 64), older ones evicted; 0 = all */
    int kv_policy;   /* frugal_kv_policy, with kv_budget */
    /* Run on this context's threads instead of starting new ones (n_threads
     * is then ignored); it must be freed after this one. For servers with
     * many contexts, only one of which computes at a time: idle threads
     * of other pools would otherwise spin for a while after each switch
     * and take cores from the ones working. NULL: own threads. */
    const frugal_ctx *share_threads;
} frugal_ctx_params;

/* "f16", "q8", "kivi4", "kivi2" / "window", "scissorhands"; parsing an
 * unknown name gives -1. */
const char *frugal_kv_type_name(int type);
int frugal_kv_type_parse(const char *name);
const char *frugal_kv_policy_name(int policy);
int frugal_kv_policy_parse(const char *name);

frugal_ctx_params frugal_ctx_default_params(void);
frugal_status frugal_ctx_new(frugal_model *model, const frugal_ctx_params *params,
                             frugal_ctx **out);
void frugal_ctx_free(frugal_ctx *ctx);

/* Runs tokens through the model at the current position and appends them
 * to the KV cache. With all_logits the logits of every token are kept,
 * otherwise only those of the last one. FRUGAL_ERR_CONTEXT_FULL (and no
 * change) if they do not fit.
 *
 * Two or more tokens are a prompt, one token is a decoding step, and the
 * two may be computed differently: on CPUs with AMX a prompt's matrix
 * products (Q4_1 weights) and attention use bf16 products on the tile
 * unit (faster prefill), a decoding step exact integer block sums and
 * fp32 attention. A token's results never depend on how a prompt is
 * split into calls of two or more tokens, nor on what else shares a
 * batch; evaluating a prompt one token at a time gives results that
 * differ by bf16's rounding (perplexity alike: BENCHMARKS.md). */
frugal_status frugal_eval(frugal_ctx *ctx, const int32_t *tokens, int n, bool all_logits);

/* Batched decoding for servers: one token for each of n contexts (all
 * over the same model, each with room for one more token) evaluated in
 * one forward pass, so every weight is read from memory once for all of
 * them. Afterwards frugal_logits(ctxs[i], -1) holds context i's logits.
 * The contexts' own thread pools are not used; ctxs[0]'s is. */
frugal_status frugal_eval_batch(frugal_ctx *const *ctxs, const int32_t *tokens, int n);

/* The general form, for servers that prefill and decode in one step: run
 * i is n_tokens[i] >= 1 tokens for context i (a chunk of a prompt, or one
 * decoded token), the runs' tokens one after the other in tokens, at
 * most frugal_ctx_batch(ctxs[0]) in all. One forward pass reads every
 * weight once for all of them; each context's logits are those of its
 * run's last token (frugal_logits(ctxs[i], -1)). The results are the bits
 * that evaluating each run on its own gives (a run of one token is a
 * decoding step, longer runs are a prompt's: see frugal_eval). On failure
 * no context advances. */
frugal_status frugal_eval_runs(frugal_ctx *const *ctxs, const int32_t *tokens, const int *n_tokens, int n);

/* Logits of the i-th token of the last frugal_eval (i = -1: the last).
 * NULL if that row was not kept. n_vocab floats. */
const float *frugal_logits(const frugal_ctx *ctx, int i);

int frugal_ctx_pos(const frugal_ctx *ctx);   /* position of the next token */
int frugal_ctx_size(const frugal_ctx *ctx);  /* capacity */
int frugal_ctx_batch(const frugal_ctx *ctx); /* most tokens one evaluation step takes */
int frugal_ctx_threads(const frugal_ctx *ctx);
/* Memory the KV cache's pages use now, and the most tokens any layer holds. */
size_t frugal_ctx_kv_bytes(const frugal_ctx *ctx);
int frugal_ctx_kv_tokens(const frugal_ctx *ctx);
/* Forgets cached tokens from pos on (pos <= frugal_ctx_pos). A model with
 * sliding-window layers keeps only recent positions of those layers, so
 * it may have to forget more (down to 0): check frugal_ctx_pos after. */
frugal_status frugal_ctx_rewind(frugal_ctx *ctx, int pos);

/* ---- Profile: where a forward pass spends its time ------------------ */

/* The parts of the forward pass a profile times: the matrix products by
 * role, attention (RoPE, QK-norm, caching keys and values, and attention
 * itself), and everything else (embedding, norms, residual adds). */
typedef enum {
    FRUGAL_PART_QKV, FRUGAL_PART_ATTENTION, FRUGAL_PART_ATTN_OUT, FRUGAL_PART_FFN_UP,
    FRUGAL_PART_FFN_DOWN, FRUGAL_PART_OUTPUT, FRUGAL_PART_OTHER, FRUGAL_PARTS
} frugal_part;

/* One part, summed over the evaluations since profiling began: wall
 * time, the bytes it must read from memory at least (the weights of its
 * matrices; for attention the KV cache pages it reads) and its arithmetic
 * (2 per multiply-add), from which a roofline follows: bytes / seconds
 * against the machine's read bandwidth, flops / seconds against its peak.
 * The bytes and flops are counted from the shapes, not measured. */
typedef struct {
    double seconds, bytes, flops;
    int64_t calls;   /* times it ran: per layer and pass for a layer's parts */
} frugal_part_stats;

/* Starts profiling ctx's forward passes from zero (on) or stops it. A
 * batch (frugal_eval_batch, frugal_eval_runs) is profiled in ctxs[0].
 * Costs a clock read per part and layer. */
frugal_status frugal_ctx_profile(frugal_ctx *ctx, bool on);
/* The sums so far; all zero if profiling never ran. */
void frugal_ctx_profile_get(const frugal_ctx *ctx, frugal_part_stats parts[FRUGAL_PARTS]);
/* "qkv", "attention", "attn_out", "ffn_up", "ffn_down", "output", "other". */
const char *frugal_part_name(int part);

/* ---- Prefix cache: KV pages shared between contexts ------------------ */

/* Contexts over the same model whose token sequences start alike (a
 * system prompt, a chat history) can share the KV cache of the common
 * part: complete blocks of 32 tokens are kept by reference, not copied,
 * and a context that loads them skips their prefill. Thread-safe.
 * Contexts with a KV budget never share; all contexts using one cache
 * must have the same KV type and residual (others are ignored). */
typedef struct frugal_prefix_cache frugal_prefix_cache;
typedef struct {
    int blocks;              /* 32-token blocks held */
    size_t bytes;            /* KV memory they hold (shared with contexts) */
    long long hits;          /* loads that found a prefix */
    long long tokens_reused; /* tokens those loads did not have to compute */
} frugal_prefix_cache_info;

/* max_bytes: least recently used blocks go when the cache holds more. */
frugal_status frugal_prefix_cache_new(const frugal_model *model, size_t max_bytes, frugal_prefix_cache **out);
void frugal_prefix_cache_free(frugal_prefix_cache *pc);
/* Offers the complete blocks of tokens[0..n), which ctx holds at
 * positions 0..n-1 (n <= frugal_ctx_pos(ctx)). */
frugal_status frugal_prefix_cache_put(frugal_prefix_cache *pc, const frugal_ctx *ctx, const int32_t *tokens, int n);
/* Tokens of tokens[0..n) that a load would provide (a multiple of 32,
 * always < n so that the last token is left to evaluate). */
int frugal_prefix_cache_match(frugal_prefix_cache *pc, const int32_t *tokens, int n);
/* Rewinds ctx to 0 and fills it with the longest cached prefix of
 * tokens[0..n); returns the tokens loaded (frugal_ctx_pos afterwards). */
int frugal_prefix_cache_load(frugal_prefix_cache *pc, frugal_ctx *ctx, const int32_t *tokens, int n);
void frugal_prefix_cache_stats(frugal_prefix_cache *pc, frugal_prefix_cache_info *info);

/* ---- Sampling --------------------------------------------------------- */

typedef struct {
    float temperature;    /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* tokens of history the penalties look at */
    uint64_t seed;
    /* OpenAI's penalties, in -2..2 (0: off): a token seen c times among
     * the last repeat_last_n loses c * frequency_penalty + presence_penalty
     * from its logit, after the repetition penalty. */
    float frequency_penalty;
    float presence_penalty;
} frugal_sampler_params;

#define FRUGAL_MAX_LOGIT_BIAS 1024 /* tokens a sampler's logit bias can name */

frugal_sampler_params frugal_sampler_default_params(void);
frugal_status frugal_sampler_new(const frugal_sampler_params *p, int n_vocab,
                                 frugal_sampler **out);
void frugal_sampler_free(frugal_sampler *s);
/* Picks a token from logits (n_vocab floats, not modified). */
int32_t frugal_sampler_sample(frugal_sampler *s, const float *logits);
/* Adds bias[i] (finite, -100..100) to the logit of tokens[i] before
 * every sample, ahead of the penalties (OpenAI's logit_bias: -100 all but
 * bans a token, 100 all but forces it). Each token at most once, at most
 * FRUGAL_MAX_LOGIT_BIAS of them; replaces the previous bias, n = 0 clears
 * it. On an error the previous bias stays. */
frugal_status frugal_sampler_set_logit_bias(frugal_sampler *s, const int32_t *tokens, const float *bias, int n);
/* Records a token in the penalty history (prompt and generated tokens). */
void frugal_sampler_accept(frugal_sampler *s, int32_t token);
void frugal_sampler_reset(frugal_sampler *s);

/* ---- JSON mode ---------------------------------------------------------- */

/* A JSON constraint: attached to a sampler, it lets the sampler draw only
 * tokens that keep the text generated since the last reset the beginning
 * of one JSON value (RFC 8259; with object_only, of an object, as
 * OpenAI's response_format json_object asks), and an end-of-generation
 * token only once that value is complete. Whitespace runs are limited to
 * 64 bytes, numbers to 64 bytes, nesting to 64 levels; strings are valid
 * UTF-8. Control tokens are never drawn. */
typedef struct frugal_json frugal_json;
/* The model's vocabulary, as the constraint reads it, is built by its
 * first constraint (~6 ms and 0.8 MB for SmolLM2's 49,152 tokens, ~23 ms
 * and 4.3 MB for Gemma 3's 262,144) and shared by all: the model must
 * outlive its constraints. */
frugal_status frugal_json_new(const frugal_model *model, bool object_only, frugal_json **out);
/* The same for one value valid against a JSON Schema given as JSON text
 * (docs/server.md lists the keywords JSON mode follows; objects are
 * written with their properties in the schema's order). A schema that is
 * not valid JSON, or asks for what JSON mode cannot follow (pattern,
 * minimum, ...), is FRUGAL_ERR_INVALID_ARG with a message saying which. */
frugal_status frugal_json_new_schema(const frugal_model *model, const char *schema, size_t len, frugal_json **out);
void frugal_json_free(frugal_json *j);
void frugal_json_reset(frugal_json *j);
/* From now on s draws only tokens j allows; NULL detaches. j is not
 * copied and must outlive its use by s. The sampler does not advance j:
 * the caller accepts each generated token with frugal_json_accept. */
frugal_status frugal_sampler_set_json(frugal_sampler *s, const frugal_json *j);
bool frugal_json_allows(const frugal_json *j, int32_t token);
/* Advances j past a generated token. False, j unchanged, when j does not
 * allow it: a sampler with j attached draws such a token only when the
 * vocabulary has no allowed one, and generation should then end. */
bool frugal_json_accept(frugal_json *j, int32_t token);
/* The value is complete and closed (only whitespace or the end may
 * follow): generation should end. */
bool frugal_json_done(const frugal_json *j);
/* Optional JSON (what a reply that may call tools needs): the reply is
 * either plain text, with no constraint at all, or, when its first byte
 * other than whitespace is '{', one value as j requires. Restarts j. */
frugal_status frugal_json_set_optional(frugal_json *j, bool optional);

#ifdef __cplusplus
}
#endif
#endif /* FRUGAL_H */
