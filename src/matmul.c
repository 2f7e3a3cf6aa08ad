/*
 * matmul.c - matrix products of quantized weights with a batch of
 * activation rows, on the thread pool.
 *
 * The input rows are quantized once per product to the weight type's
 * activation format (Q8_0 / Q8_1 ...) - by the calling thread when there
 * are few rows (decode: no extra synchronisation), in parallel otherwise.
 * When the product's input is a normalised x (every block's first
 * matmuls), the RMSNorm is done in the same pass, row by row, just
 * before the row is quantized.
 * The output rows of one or several matrices are then split into
 * contiguous ranges, a few per thread, which the threads claim in turn;
 * each range goes to one kernel call, which reads its weights from memory
 * once for all tokens.
 *
 * Two arithmetics. Decoded tokens take the block-exact integer dots
 * (quant.h), whose bits are the same alone or in any batch. Where a weight
 * type has a prompt kernel (dot_prompt, the AMX level's Q4_1), a prompt's
 * tokens take it instead: bf16 products summed over the whole row by the
 * tile unit, with no per-block scaling (a prefill-shaped product ~1.5x
 * faster, bench/kernels.c). Its
 * bits too depend only on the token itself, so a prompt gives the same
 * results in one piece or in chunks, alone or beside other sequences;
 * which rows are a prompt's, ctx->prompt_rows says (forward.c). The
 * quantizing pass rounds a prompt's rows to bf16 instead, for such
 * matrices.
 */
#include <stdatomic.h>
#include <string.h>
#include "ops.h"
#include "quant.h"

#define ROW_BLOCK 16         /* threads' ranges start at multiples of this (the AMX level's row group) */
#define SERIAL_QUANT_ROWS 4  /* up to this many tokens are quantized serially */
#define MAX_MATS 4
#define CHUNKS_PER_THREAD 4  /* row ranges are claimed in this many pieces per thread */

typedef struct {
    const fr_weight *w[MAX_MATS];
    float *y[MAX_MATS];
    int nw, n;
    int64_t total_rows;      /* sum of rows of all matrices */
    const float *x;
    const float *norm;        /* RMSNorm weights applied to x first, or NULL */
    float eps;
    float *xn;                /* where normalised rows go (the ctx's xb) */
    const void *xq[MAX_MATS]; /* quantized input for each matrix */
    size_t xq_row[MAX_MATS];  /* bytes per quantized row */
    const void *xh[MAX_MATS]; /* the prompt rows as bf16, for matrices with a prompt kernel */
    size_t xh_row[MAX_MATS];
    const uint8_t *prompt;    /* per token: 1 = prompt arithmetic where the matrix has it; NULL: none */
    bool quant_prompt[MAX_MATS]; /* matrix i quantizes the prompt rows too (no prompt kernel) */
    /* GLU fusion */
    float *glu_up;
    int act;
    atomic_llong next;        /* the next row range to claim (claim_rows) */
} mm_job;

/* Rows [lo, hi) of matrix i, packed at load (lo a multiple of 16), for
 * every token: runs of tokens of one arithmetic (decodes come first in a
 * server's step). */
static void packed_rows(const mm_job *j, int i, int64_t lo, int64_t hi) {
    const fr_weight *w = j->w[i];
    const fr_type_traits *tt = fr_traits(w->type);
    const uint8_t *wp = (const uint8_t *)w->packed + lo * w->row_bytes;
    for (int t0 = 0, t1; t0 < j->n; t0 = t1) {
        const bool prompt = !j->quant_prompt[i] && j->prompt[t0];
        for (t1 = t0 + 1; t1 < j->n && (!j->quant_prompt[i] && j->prompt[t1]) == prompt; t1++) {}
        float *y = j->y[i] + (size_t)t0 * w->rows + lo;
        if (prompt)
            tt->dot_prompt(w->cols, wp, (int)(hi - lo), (const uint8_t *)j->xh[i] + (size_t)t0 * j->xh_row[i],
                           j->xh_row[i], t1 - t0, y, (size_t)w->rows);
        else
            tt->dot_packed(w->cols, wp, (int)(hi - lo), (const uint8_t *)j->xq[i] + (size_t)t0 * j->xq_row[i],
                           j->xq_row[i], t1 - t0, y, (size_t)w->rows);
    }
}

/* Rows [lo, hi) of matrix i for every token. The rows packed at load
 * (whole groups of 16: all but the last rows % 16) take the packed
 * kernels; the others, where they were: several tokens the tile kernel,
 * which expands each weight row once for a group of tokens (prefill,
 * batched decode), one token the rows kernel (decode). */
static void mm_rows(const mm_job *j, int i, int64_t lo, int64_t hi) {
    const fr_weight *w = j->w[i];
    const fr_type_traits *tt = fr_traits(w->type);
    const int64_t packed = w->packed && tt->dot_packed ? w->rows / 16 * 16 : 0;
    if (lo < packed) {
        packed_rows(j, i, lo, FR_MIN(hi, packed));
        lo = FR_MIN(hi, packed);
    }
    if (lo == hi) return;
    const uint8_t *row = (const uint8_t *)w->data + lo * w->row_bytes;
    if (j->n > 1)
        tt->dot_tile(w->cols, row, w->row_bytes, (int)(hi - lo), j->xq[i], j->xq_row[i], j->n,
                     j->y[i] + lo, (size_t)w->rows);
    else
        tt->dot_rows(w->cols, row, w->row_bytes, j->xq[i], j->y[i] + lo, (int)(hi - lo));
}

/* Claims the next range [lo, hi) of `rows`, cut at multiples of
 * ROW_BLOCK. With several tokens (prefill, batched decode: bound by
 * arithmetic) the rows are cut in a few pieces per thread, which each
 * thread takes until none are left, so a thread that runs slower (a core
 * shared with another program) leaves the rest to the others instead of
 * making them wait at the end of the step. One token streams the weights
 * at the memory's pace, where one long run per thread keeps the hardware
 * prefetchers ahead (in pieces, decode was ~6 % slower). Which thread
 * computes a row changes none of its bits. */
static bool claim_rows(mm_job *j, int64_t rows, int nth, int64_t *lo, int64_t *hi) {
    int64_t blocks = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
    int64_t pieces = FR_MIN(blocks, (int64_t)nth * (j->n > 1 ? CHUNKS_PER_THREAD : 1));
    int64_t k = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (k >= pieces) return false;
    fr_split(blocks, (int)k, (int)pieces, lo, hi);
    *lo = FR_MIN(*lo * ROW_BLOCK, rows);
    *hi = FR_MIN(*hi * ROW_BLOCK, rows);
    return true;
}

/* Ranges of the concatenated rows of all matrices. */
static void mm_worker(void *arg, int ith, int nth) {
    (void)ith;
    mm_job *j = arg;
    int64_t lo, hi;
    while (claim_rows(j, j->total_rows, nth, &lo, &hi)) {
        int64_t base = 0;
        for (int i = 0; i < j->nw; i++) {
            int64_t rows = j->w[i]->rows;
            int64_t a = FR_MAX(lo, base), b = FR_MIN(hi, base + rows);
            if (a < b) mm_rows(j, i, a - base, b - base);
            base += rows;
        }
    }
}

/* GLU: matrices 0 (gate) and 1 (up) have the same rows; a thread takes
 * the same range of both, then applies the activation to it. */
static void glu_worker(void *arg, int ith, int nth) {
    (void)ith;
    mm_job *j = arg;
    int64_t rows = j->w[0]->rows, lo, hi;
    while (claim_rows(j, rows, nth, &lo, &hi)) {
        if (lo >= hi) continue;
        mm_rows(j, 0, lo, hi);
        mm_rows(j, 1, lo, hi);
        for (int t = 0; t < j->n; t++)
            fr_glu(j->y[0] + (size_t)t * rows + lo, j->y[1] + (size_t)t * rows + lo, hi - lo, j->act);
    }
}

typedef struct { const mm_job *j; int i; } quant_job;

static void quant_rows(const mm_job *j, int i, int64_t lo, int64_t hi) {
    int64_t cols = j->w[i]->cols;
    uint32_t act = fr_traits(j->w[i]->type)->act_type;
    for (int64_t t = lo; t < hi; t++) {
        const float *row = j->x + t * cols;
        if (j->norm) {
            fr_rmsnorm(j->xn + t * cols, row, j->norm, 1, (int)cols, j->eps);
            row = j->xn + t * cols;
        }
        if (j->quant_prompt[i] || !j->prompt[t])
            fr_quantize_act(act, row, (uint8_t *)j->xq[i] + t * j->xq_row[i], cols);
        else
            fr_quantize_act(FR_BF16, row, (uint8_t *)j->xh[i] + t * j->xh_row[i], cols);
    }
}

static void quant_worker(void *arg, int ith, int nth) {
    quant_job *q = arg;
    int64_t lo, hi;
    fr_split(q->j->n, ith, nth, &lo, &hi);
    quant_rows(q->j, q->i, lo, hi);
}

/* Quantizes the input once per distinct activation type (and whether the
 * prompt rows go to bf16 instead); matrices alike share it. Space comes
 * from ctx->qbuf. */
static void quantize_inputs(frugal_ctx *ctx, mm_job *j) {
    uint8_t *next = ctx->qbuf;
    int n_prompt = 0;
    j->prompt = ctx->prompt_rows;
    for (int t = 0; j->prompt && t < j->n; t++) n_prompt += j->prompt[t];
    if (!n_prompt) j->prompt = NULL;
    for (int i = 0; i < j->nw; i++) {
        const fr_type_traits *tt = fr_traits(j->w[i]->type);
        uint32_t act = tt->act_type;
        j->xq_row[i] = fr_row_bytes(act, j->w[i]->cols);
        /* (a matrix with rows past its packed groups quantizes them for those) */
        j->quant_prompt[i] = !(j->prompt && j->w[i]->packed && tt->dot_packed && tt->dot_prompt &&
                               j->w[i]->rows % 16 == 0);
        int same = -1;
        for (int k = 0; k < i && same < 0; k++)
            if ((uint32_t)fr_traits(j->w[k]->type)->act_type == act && j->quant_prompt[k] == j->quant_prompt[i])
                same = k;
        j->xh_row[i] = (size_t)j->w[i]->cols * sizeof(uint16_t);
        if (same >= 0) { j->xq[i] = j->xq[same], j->xh[i] = j->xh[same]; continue; }
        if (i > 0 && j->norm) j->x = j->xn, j->norm = NULL; /* normalised once already */
        j->xq[i] = next;
        next += j->xq_row[i] * j->n;
        if (!j->quant_prompt[i]) j->xh[i] = next, next += j->xh_row[i] * j->n;
        if (j->n <= SERIAL_QUANT_ROWS) {
            quant_rows(j, i, 0, j->n);
        } else {
            quant_job q = { j, i };
            fr_pool_run(ctx->pool, quant_worker, &q);
        }
    }
}

void fr_matmul_multi(frugal_ctx *ctx, const fr_weight *const *ws, float *const *ys, int nw,
                     const float *x, const float *norm, int n) {
    mm_job j = { .nw = nw, .n = n, .x = x, .norm = norm, .eps = ctx->model->hp.norm_eps, .xn = ctx->xb };
    for (int i = 0; i < nw; i++) {
        j.w[i] = ws[i];
        j.y[i] = ys[i];
        j.total_rows += ws[i]->rows;
    }
    quantize_inputs(ctx, &j);
    atomic_init(&j.next, 0);
    fr_pool_run(ctx->pool, mm_worker, &j);
}

void fr_matmul(frugal_ctx *ctx, const fr_weight *w, const float *x, int n, float *y) {
    fr_matmul_multi(ctx, &w, &y, 1, x, NULL, n);
}

void fr_matmul_glu(frugal_ctx *ctx, const fr_weight *w_gate, const fr_weight *w_up, const float *x,
                   const float *norm, int n, float *a, float *tmp, int act) {
    mm_job j = { .nw = 2, .n = n, .x = x, .act = act, .norm = norm, .eps = ctx->model->hp.norm_eps,
                 .xn = ctx->xb };
    j.w[0] = w_gate;
    j.w[1] = w_up;
    j.y[0] = a;
    j.y[1] = tmp;
    quantize_inputs(ctx, &j);
    atomic_init(&j.next, 0);
    fr_pool_run(ctx->pool, glu_worker, &j);
}
