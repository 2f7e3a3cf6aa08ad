/*
 * attn_block.h - one query block's attention over KV pages at the
 * AVX-512 level (attn_avx512.c), for attention.c.
 *
 * The block's rows (query heads of tokens sharing one KV head) carry the
 * online-softmax state in and out: m (running maximum), l (normaliser)
 * and out (the unnormalised output, hd floats). Start with m = -inf,
 * l = 0, out = 0; after the last page, out / l is the attention output.
 */
#ifndef FR_ATTN_BLOCK_H
#define FR_ATTN_BLOCK_H

#include <stdbool.h>
#include "kv.h"

#define FR_ATTN_BLOCK_ROWS 32

typedef struct {
    int nr;                        /* rows, 1..FR_ATTN_BLOCK_ROWS */
    int hd;                        /* head dimension, a multiple of 16, <= 512 */
    float scale;                   /* applied to q.k */
    const float *q[FR_ATTN_BLOCK_ROWS];
    int qpos[FR_ATTN_BLOCK_ROWS];  /* the row's position: later keys are masked */
    int lo[FR_ATTN_BLOCK_ROWS];    /* first position the row sees (sliding window) */
    float *out[FR_ATTN_BLOCK_ROWS];
    float m[FR_ATTN_BLOCK_ROWS], l[FR_ATTN_BLOCK_ROWS];
    bool prompt;                   /* rows of a prompt (attn_amx.c may take them) */
} fr_attn_block;

/* Attends the block to KV head kvh of pages [p0, p1) of a layer. Each
 * row's result is the same bits whatever the other rows of its block are
 * (or how many), so that batched, chunked and token-by-token evaluation
 * agree. */
void fr_attn_block_pages(fr_attn_block *b, const fr_kv_cache *kvc, fr_kv_page *const *pages, int p0, int p1,
                         int kvh);

/* The same for a prompt's rows on the AMX tile unit, in bf16 products
 * (attn_amx.c): head_dim a multiple of 32, at most FR_ATTN_AMX_MAX_HD.
 * Each row's bits again depend on that row alone, but they are not
 * fr_attn_block_pages's. */
#define FR_ATTN_AMX_MAX_HD 256
void fr_attn_block_pages_amx(fr_attn_block *b, const fr_kv_cache *kvc, fr_kv_page *const *pages, int p0, int p1,
                             int kvh);

#endif
