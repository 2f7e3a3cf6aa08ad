/*
 * kernels.c - picks the dot-product kernels at run time.
 *
 * The generic library is built for baseline x86-64; kernels_avx2.c and
 * kernels_avx512.c are built with their ISA flags and must only run on a CPU
 * (and OS) that supports them. cpuid tells what the CPU has; xgetbv tells
 * whether the OS saves the wider register state on context switches (a CPU
 * with AVX-512 under an OS that does not enable it must not use it).
 *
 * Selection overlays the levels: start from the scalar references, then
 * let AVX2, AVX-512 and AMX replace what they implement. A type missing at
 * a level keeps the kernel of the level below.
 */
#include <cpuid.h>
#include <emmintrin.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "quant.h"

/* Linux hands out the 8 KiB of AMX tile state per process, on request;
 * without it the first tile instruction raises SIGILL. Asked once. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_permitted(void) {
    static int state = -1;
    if (state < 0) state = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return state;
}

static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

int fr_isa_detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return FR_ISA_SCALAR;
    const unsigned osxsave = 1u << 27, avx = 1u << 28, fma = 1u << 12, f16c = 1u << 29;
    if ((c & (osxsave | avx | fma | f16c)) != (osxsave | avx | fma | f16c)) return FR_ISA_SCALAR;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return FR_ISA_SCALAR; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return FR_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 5))) return FR_ISA_SCALAR; /* AVX2 */
    /* AVX-512 F, DQ, BW, VL and VNNI, plus opmask/ZMM state enabled by the OS. */
    const unsigned f = 1u << 16, dq = 1u << 17, bw = 1u << 30, vl = 1u << 31;
    const unsigned vnni = 1u << 11;
    if ((b & (f | dq | bw | vl)) != (f | dq | bw | vl) || !(c & vnni) || (xcr0 & 0xe0) != 0xe0)
        return FR_ISA_AVX2;
    /* AMX-TILE, AMX-INT8 and AMX-BF16 (with AVX512-BF16's conversions),
     * tile state enabled by the OS, and permission. Every CPU with AMX so
     * far has all of them. */
    const unsigned amx_tile = 1u << 24, amx_int8 = 1u << 25, amx_bf16 = 1u << 22, amx = amx_tile | amx_int8 | amx_bf16;
    unsigned a1 = 0, b1, c1, d1;
    if (__get_cpuid_max(0, NULL) >= 7) __cpuid_count(7, 1, a1, b1, c1, d1);
    const unsigned avx512_bf16 = 1u << 5;
    if ((d & amx) == amx && (a1 & avx512_bf16) && (xcr0 & 0x60000) == 0x60000 && amx_permitted())
        return FR_ISA_AMX;
    return FR_ISA_AVX512;
}

const char *fr_isa_name(int isa) {
    switch (isa) {
    case FR_ISA_SCALAR: return "scalar";
    case FR_ISA_AVX2: return "avx2";
    case FR_ISA_AVX512: return "avx512";
    case FR_ISA_AMX: return "amx";
    }
    return "unknown";
}

static int current_isa = FR_ISA_SCALAR;

int fr_kernels_isa(void) { return current_isa; }

/* Copies the non-NULL entries of one level over the table being built. */
static void overlay(fr_kernel_table *dst, const fr_kernel_table *src) {
    for (int t = 0; t < FR_TYPE_COUNT; t++) {
        if (src->dot[t]) dst->dot[t] = src->dot[t];
        if (src->dot_rows[t]) dst->dot_rows[t] = src->dot_rows[t];
        if (src->dot_tile[t]) dst->dot_tile[t] = src->dot_tile[t];
        if (src->quant[t]) dst->quant[t] = src->quant[t], dst->quant_checked[t] = src->quant_checked[t];
        /* a level's dots for a type come with its packed layout, or with none:
         * the packed kernels of the level below have the other level's bits */
        if (src->pack[t] || src->dot_rows[t])
            dst->pack[t] = src->pack[t], dst->dot_packed[t] = src->dot_packed[t], dst->dot_prompt[t] = src->dot_prompt[t];
    }
}

int fr_kernels_select(int isa) {
    int best = fr_isa_detect();
    if (isa > best) isa = best;
    if (isa < FR_ISA_SCALAR) isa = FR_ISA_SCALAR;

    fr_kernel_table tab;
    memset(&tab, 0, sizeof tab);
    for (uint32_t t = 0; t < FR_TYPE_COUNT; t++) {
        const fr_type_traits *tt = fr_traits(t);
        if (!tt) continue;
        tab.dot[t] = tt->dot_ref;
        tab.dot_rows[t] = tt->dot_rows_ref;
        tab.dot_tile[t] = tt->dot_tile_ref;
        tab.quant[t] = tt->quant;
    }
    fr_kernel_table level;
    if (isa >= FR_ISA_AVX2) {
        memset(&level, 0, sizeof level);
        fr_kernels_fill_avx2(&level);
        overlay(&tab, &level);
    }
    if (isa >= FR_ISA_AVX512) {
        memset(&level, 0, sizeof level);
        fr_kernels_fill_avx512(&level);
        overlay(&tab, &level);
    }
    if (isa >= FR_ISA_AMX) {
        memset(&level, 0, sizeof level);
        fr_kernels_fill_amx(&level);
        fr_kernels_fill_amx_packed(&level);
        overlay(&tab, &level);
    }
    for (uint32_t t = 0; t < FR_TYPE_COUNT; t++) {
        fr_traits_set_kernels(t, tab.dot[t], tab.dot_rows[t], tab.dot_tile[t], tab.quant[t], tab.quant_checked[t]);
        fr_traits_set_packed(t, tab.pack[t], tab.dot_packed[t], tab.dot_prompt[t]);
    }
    current_isa = isa;
    return isa;
}

int fr_kernels_init_from_env(void) {
    const char *env = getenv("FRUGAL_ISA");
    int isa = fr_isa_detect();
    if (env) {
        if (!strcmp(env, "scalar")) isa = FR_ISA_SCALAR;
        else if (!strcmp(env, "avx2")) isa = FR_ISA_AVX2;
        else if (!strcmp(env, "avx512")) isa = FR_ISA_AVX512;
        else if (!strcmp(env, "amx")) isa = FR_ISA_AMX;
    }
    return fr_kernels_select(isa);
}

/* Non-finite activations come only from a broken model (NaN or Inf
 * weights), but converting them to integers is undefined behaviour, so a
 * row holding any is quantized block by block with those values as 0. */
static void quantize_nonfinite(const fr_type_traits *t, const float *x, void *y, int64_t n) {
    float block[256];
    int64_t bl = t->blck <= 256 ? t->blck : 1;
    for (int64_t b = 0; b + bl <= n; b += bl) {
        for (int64_t i = 0; i < bl; i++) block[i] = isfinite(x[b + i]) ? x[b + i] : 0.0f;
        t->quant_fast(block, (uint8_t *)y + b / t->blck * t->bytes, bl);
    }
}

/* True when no element has the all-ones exponent of Inf and NaN: SSE2
 * (every x86-64 has it), 16 floats per step in four independent
 * accumulators; it runs over every activation row before it is quantized,
 * so a scalar loop here cost about as much as the quantizer itself. */
static bool all_finite(const float *x, int64_t n) {
    const __m128i e = _mm_set1_epi32(0x7f800000);
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
#define INF_LANES(acc, k) \
    acc = _mm_or_si128(acc, _mm_cmpeq_epi32(_mm_and_si128(_mm_loadu_si128((const __m128i *)(x + i + (k))), e), e))
    for (; i + 16 <= n; i += 16) {
        INF_LANES(a0, 0);
        INF_LANES(a1, 4);
        INF_LANES(a2, 8);
        INF_LANES(a3, 12);
    }
#undef INF_LANES
    bool bad = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a0, a1), _mm_or_si128(a2, a3))) != 0;
    for (; i < n; i++) bad |= !isfinite(x[i]);
    return !bad;
}

/* x += y (the residual adds), SSE2: the generic code's -O2 leaves the
 * plain loop scalar, and a prompt's residual is n_embd floats a token. */
void fr_add(float *x, const float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_ps(x + i, _mm_add_ps(_mm_loadu_ps(x + i), _mm_loadu_ps(y + i)));
        _mm_storeu_ps(x + i + 4, _mm_add_ps(_mm_loadu_ps(x + i + 4), _mm_loadu_ps(y + i + 4)));
    }
    for (; i < n; i++) x[i] += y[i];
}

/* y = x c, SSE2 for the same reason (attention's final 1 / l). */
void fr_scale(float *y, const float *x, float c, int64_t n) {
    const __m128 vc = _mm_set1_ps(c);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, _mm_mul_ps(_mm_loadu_ps(x + i), vc));
    for (; i < n; i++) y[i] = x[i] * c;
}

void fr_quantize_act(uint32_t act_type, const float *x, void *y, int64_t n) {
    const fr_type_traits *t = fr_traits(act_type);
    if (!t || !t->quant_fast) return;
    bool finite;
    if (t->quant_checked) finite = t->quant_checked(x, y, n); /* the check in the quantizer's own pass */
    else if ((finite = all_finite(x, n))) t->quant_fast(x, y, n);
    if (!finite) quantize_nonfinite(t, x, y, n);
}
