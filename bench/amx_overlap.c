/*
 * amx_overlap.c - does the tile unit work while the vector units do?
 * (not a test)
 *
 * The packed Q4_1 prefill kernel (src/kernels_amx_packed.c) does, per
 * 16 tokens x 16 weight rows x one 32-code block: tile loads of A and B,
 * one TDPBSUD, a tile store of the 16 x 16 int32 sums, then per token row
 * a conversion to float and three vector operations for the block's
 * scales (d_w d_a and m_w s_a). Its ideal time would be the larger of the
 * tile part and the vector part, if the two overlapped. This times each
 * part alone and together, on one thread, in ns per block:
 *
 *   tiles         loads, product and store, as the kernel issues them
 *   tiles, no store
 *   scaling       the vector part alone, on sums already in memory
 *   both          one block after the other, as the kernel does
 *   both, ring    the sums stored two blocks ahead of their scaling
 *
 * On the machine of BENCHMARKS.md "both" is the sum of "tiles" and
 * "scaling", whatever the order: they do not overlap, so the kernel's
 * floor is their sum.
 *
 * Build and run (needs AMX):
 *   gcc -std=c11 -O2 -march=sapphirerapids bench/amx_overlap.c -o /tmp/amx_overlap && /tmp/amx_overlap
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NB 18   /* blocks of a 576-wide row */
#define CH 144  /* tokens of a chunk */
#define REPS 200000

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tile_config;

static const tile_config cfg = { .palette = 1,
                                 .colsb = { 64, 64, 64, 64, 32, 32, 64, 64 },
                                 .rows = { 16, 16, 16, 16, 16, 16, 8, 8 } };

static int8_t A[NB * CH * 32] __attribute__((aligned(64)));
static int8_t B[NB * 512] __attribute__((aligned(64)));
static int32_t C[4 * 256] __attribute__((aligned(64)));
static float dw[NB * 16] __attribute__((aligned(64))), mw[NB * 16] __attribute__((aligned(64)));
static float da[NB * CH], sa[NB * CH];
static volatile float sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Tile c = A(block b) . B(block b); c a literal tile number. */
#define PRODUCT(c, b)                                 \
    do {                                              \
        _tile_zero(c);                                \
        _tile_loadd(4, A + (b) * CH * 32, 32);        \
        _tile_loadd(6, B + (b) * 512, 64);            \
        _tile_dpbsud(c, 4, 6);                        \
    } while (0)

/* acc[t] += d_w d_a isum + m_w s_a for the sums at c, block b. */
#define SCALE(c, b)                                                                         \
    do {                                                                                    \
        const __m512 w_ = _mm512_load_ps(dw + (b) * 16), m_ = _mm512_load_ps(mw + (b) * 16); \
        _Pragma("GCC unroll 16") for (int t = 0; t < 16; t++) {                            \
            __m512 dd = _mm512_mul_ps(w_, _mm512_set1_ps(da[(b) * CH + t]));                \
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_load_si512((c) + t * 16)), acc[t]); \
            acc[t] = _mm512_fmadd_ps(m_, _mm512_set1_ps(sa[(b) * CH + t]), acc[t]);         \
        }                                                                                   \
    } while (0)

static void keep(__m512 *acc) {
    float s = 0;
    for (int t = 0; t < 16; t++) s += _mm512_reduce_add_ps(acc[t]);
    sink = s;
}

static __attribute__((noinline)) void tiles(int reps) {
    for (int r = 0; r < reps; r++)
        for (int b = 0; b < NB; b += 2) {
            PRODUCT(0, b);
            PRODUCT(1, b + 1);
            _tile_stored(0, C, 64);
            _tile_stored(1, C + 256, 64);
        }
}

static __attribute__((noinline)) void tiles_no_store(int reps) {
    for (int r = 0; r < reps; r++)
        for (int b = 0; b < NB; b += 2) {
            _tile_loadd(4, A + b * CH * 32, 32);
            _tile_loadd(6, B + b * 512, 64);
            _tile_dpbsud(0, 4, 6);
            _tile_loadd(5, A + (b + 1) * CH * 32, 32);
            _tile_loadd(7, B + (b + 1) * 512, 64);
            _tile_dpbsud(1, 5, 7);
        }
    _tile_stored(0, C, 64);
}

static __attribute__((noinline)) void scaling(int reps) {
    __m512 acc[16];
    for (int t = 0; t < 16; t++) acc[t] = _mm512_setzero_ps();
    for (int r = 0; r < reps; r++)
        for (int b = 0; b < NB; b++) SCALE(C + (b & 1) * 256, b);
    keep(acc);
}

static __attribute__((noinline)) void both(int reps) {
    __m512 acc[16];
    for (int t = 0; t < 16; t++) acc[t] = _mm512_setzero_ps();
    for (int r = 0; r < reps; r++)
        for (int b = 0; b < NB; b += 2) {
            PRODUCT(0, b);
            PRODUCT(1, b + 1);
            _tile_stored(0, C, 64);
            SCALE(C, b);
            _tile_stored(1, C + 256, 64);
            SCALE(C + 256, b + 1);
        }
    keep(acc);
}

static __attribute__((noinline)) void both_ring(int reps) {
    __m512 acc[16];
    for (int t = 0; t < 16; t++) acc[t] = _mm512_setzero_ps();
    for (int r = 0; r < reps; r++) {
        PRODUCT(0, 0);
        PRODUCT(1, 1);
        _tile_stored(0, C, 64);
        _tile_stored(1, C + 256, 64);
        for (int b = 2; b < NB; b += 2) { /* store blocks b, b + 1 while scaling b - 2, b - 1 */
            int32_t *now_c = C + (b & 2 ? 512 : 0), *prev_c = C + (b & 2 ? 0 : 512);
            PRODUCT(0, b);
            PRODUCT(1, b + 1);
            _tile_stored(0, now_c, 64);
            _tile_stored(1, now_c + 256, 64);
            SCALE(prev_c, b - 2);
            SCALE(prev_c + 256, b - 1);
        }
        SCALE(C + ((NB - 2) & 2 ? 512 : 0), NB - 2);
        SCALE(C + ((NB - 2) & 2 ? 512 : 0) + 256, NB - 1);
    }
    keep(acc);
}

static void run(const char *name, void (*fn)(int)) {
    fn(1000);
    double t0 = now();
    fn(REPS);
    printf("%-18s %6.2f ns per block\n", name, (now() - t0) / ((double)REPS * NB) * 1e9);
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
        puts("no AMX on this machine");
        return 1;
    }
    _tile_loadconfig(&cfg);
    memset(A, 1, sizeof A);
    memset(B, 1, sizeof B);
    for (int i = 0; i < NB * 16; i++) dw[i] = mw[i] = 1e-3f;
    for (int i = 0; i < NB * CH; i++) da[i] = sa[i] = 1e-3f;
    run("tiles", tiles);
    run("tiles, no store", tiles_no_store);
    run("scaling", scaling);
    run("both", both);
    run("both, ring", both_ring);
    _tile_release();
    return 0;
}
