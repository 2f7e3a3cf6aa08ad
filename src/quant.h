/*
 * quant.h - tensor element types and the one table of per-type traits.
 *
 * Type ids are GGUF's (= ggml's) so a tensor's type field indexes the table
 * directly. Each type knows its block size and bytes per block, how to
 * dequantize a row, and how to take a dot product of one of its rows with
 * an activation row that was quantized once to its `act_type` (Q8_0 for
 * Q4_0/Q8_0, Q8_1 for Q4_1, ...). Adding a type touches only this table
 * and its kernels.
 *
 * `dot` is the dispatched kernel (AVX-512, AVX2 or scalar, picked at start
 * from the CPU's features, overridable with FRUGAL_ISA=scalar|avx2|avx512);
 * `dot_ref` is the scalar reference that tests compare every kernel against.
 * BF16 weights pair with F32 activations, F16 with F16. Q8_1 and Q8_K
 * are activation formats only (dot NULL). Q5_0 pairs with Q8_0, the
 * K-quants (Q4_K, Q6_K) with Q8_K.
 *
 * Alignment: quantized rows may start at any byte address; float rows must
 * be aligned to their element size. Quantizers expect finite inputs.
 * Before fr_kernels_select is called, dot/dot_rows/quant_fast are the
 * scalar references.
 */
#ifndef FR_QUANT_H
#define FR_QUANT_H

#include "common.h"

enum fr_type {
    FR_F32 = 0, FR_F16 = 1, FR_Q4_0 = 2, FR_Q4_1 = 3, FR_Q5_0 = 6, FR_Q5_1 = 7,
    FR_Q8_0 = 8, FR_Q8_1 = 9, FR_Q2_K = 10, FR_Q3_K = 11, FR_Q4_K = 12,
    FR_Q5_K = 13, FR_Q6_K = 14, FR_Q8_K = 15,
    /* known to GGUF, sizes only (no kernels) */
    FR_IQ2_XXS = 16, FR_IQ2_XS = 17, FR_IQ3_XXS = 18, FR_IQ1_S = 19, FR_IQ4_NL = 20,
    FR_IQ3_S = 21, FR_IQ2_S = 22, FR_IQ4_XS = 23, FR_I8 = 24, FR_I16 = 25, FR_I32 = 26,
    FR_I64 = 27, FR_F64 = 28, FR_IQ1_M = 29,
    FR_BF16 = 30, FR_TQ1_0 = 34, FR_TQ2_0 = 35, FR_MXFP4 = 39,
    FR_TYPE_COUNT = 40
};

/* Block layouts (bit-exact with GGUF). fp16 stored as uint16_t. */
#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK8_1 32

typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[QK8_1]; } block_q8_1; /* s = d * sum(qs) */

/* Q5_0: x = d * (q - 16), q 5 bits: the low nibble as in Q4_0 (element j
 * in the low nibble of qs[j], element j + 16 in its high nibble), the 5th
 * bit of element j is bit j of qh read as a little-endian uint32. */
#define QK5_0 32
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;

/* K-quants: super-blocks of QK_K elements. */
#define QK_K 256
/* Q4_K: 8 sub-blocks of 32, x = d * sc_j * q - dmin * m_j, q 0..15, with
 * 6-bit sc_j and m_j packed in scales[12]: for j < 4, sc_j and m_j are
 * the low 6 bits of scales[j] and scales[j + 4]; for j >= 4, the low 4
 * bits of sc_j (m_j) are the low (high) nibble of scales[j + 4], the top 2
 * bits of sc_j (m_j) the top 2 bits of scales[j - 4] (scales[j]). Each
 * 64-element chunk c uses qs[32c .. 32c + 31]: low nibbles are elements
 * 64c + l, high nibbles 64c + 32 + l. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; } block_q4_K;
/* Q6_K: x = d * scales[e / 16] * (q - 32), q 0..63. In each half h of 128
 * elements (ql + 64h, qh + 32h), for l < 32: element 128h + 32i + l takes
 * its low 4 bits from ql[64h + l + 32 (i & 1)] (low nibble for i < 2, high
 * nibble for i >= 2) and its top 2 bits from bits 2i, 2i+1 of qh[32h + l]. */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_K;
/* Q8_K (activations only): fp32 d, x = d * q, bsums[k] = sum of qs[16k ..
 * 16k + 15] (kernels use them for the Q4_K min and Q6_K offset terms). */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

typedef void (*fr_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void (*fr_quant_fn)(const float *src, void *dst, int64_t n);
/* A quantizer that also checks its input: false when src holds a NaN or
 * an infinity (dst is then not valid). */
typedef bool (*fr_quant_checked_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n elements (a multiple of the block size): w is a row of
 * this type, a a row of act_type. */
typedef float (*fr_dot_fn)(int64_t n, const void *w, const void *a);
/* Several weight rows against one activation row (matrix-vector): out[r] =
 * dot(n, w + r * w_stride bytes, a) for r < nr. Sharing the activation
 * loads and scales across rows is what makes it faster than nr dots. */
typedef void (*fr_dot_rows_fn)(int64_t n, const void *w, size_t w_stride, const void *a,
                               float *out, int nr);
/* A tile of dots (matrix-matrix, for prefill): out[c * ldo + r] =
 * dot(n, w + r * w_stride, a + c * a_stride) for r < nr, c < nc; with
 * ldo = the matrix's row count, out row c is token c's output. Each
 * weight row is expanded once and used against several activation rows.
 * Column c is bit for bit what dot_rows(n, w, w_stride, a + c * a_stride,
 * out, nr) gives, at every level: batched and chunked evaluation must
 * equal token-by-token evaluation. */
typedef void (*fr_dot_tile_fn)(int64_t n, const void *w, size_t w_stride, int nr, const void *a,
                               size_t a_stride, int nc, float *out, size_t ldo);

/* Weights rearranged once at load for one level's kernels (Q4_1 at the
 * AVX2 and AMX levels, Q4_0 and Q5_0 at the AVX2 level: fr_pack_q4_1
 * and the others below): pack writes nr rows (a multiple of 16) of n
 * elements, read at w_stride, as the same number of bytes, each group of 16
 * rows starting where it did in a contiguous copy. dot_packed is dot_tile
 * on such rows (nr a multiple of 16, w at a group's start), nc >= 1: the
 * same bits as dot_rows and dot_tile on the original rows. */
typedef void (*fr_pack_fn)(int64_t n, const void *w, size_t w_stride, int64_t nr, void *dst);
typedef void (*fr_dot_packed_fn)(int64_t n, const void *w, int nr, const void *a, size_t a_stride, int nc,
                                 float *out, size_t ldo);
/* The prompt arithmetic (kernels_amx_packed.c): dot_packed's rows against
 * activations rounded to bf16 (rows x_stride bytes apart), each weight
 * fma(d, q, m) rounded to bf16, their products summed in fp32 over the
 * whole row by the tile unit. Column c's bits depend only on token c's
 * activations (not on nc, the chunking or the threads), but they are not
 * dot_packed's: callers use it for prompts only (matmul.c). Its scalar
 * twin, to rounding: fr_dot_prompt_ref. */
typedef void (*fr_dot_prompt_fn)(int64_t n, const void *w, int nr, const void *x, size_t x_stride, int nc,
                                 float *out, size_t ldo);

typedef struct {
    const char *name;      /* "Q4_1" */
    int64_t blck;          /* elements per block */
    size_t bytes;          /* bytes per block */
    fr_dequant_fn dequant; /* NULL: type not supported */
    fr_quant_fn quant;     /* reference quantizer, NULL if none */
    int act_type;          /* type activations are converted to for dot */
    fr_dot_fn dot;         /* dispatched */
    fr_dot_fn dot_ref;     /* scalar reference */
    fr_quant_fn quant_fast;       /* dispatched quantizer, same bits as quant */
    fr_quant_checked_fn quant_checked; /* the same with the finiteness check, or NULL */
    fr_dot_rows_fn dot_rows;      /* dispatched; NULL where dot is NULL */
    fr_dot_rows_fn dot_rows_ref;  /* scalar reference (rows of dot_ref) */
    fr_dot_tile_fn dot_tile;      /* dispatched; NULL where dot is NULL */
    fr_dot_tile_fn dot_tile_ref;  /* scalar reference (tile of dot_ref) */
    fr_pack_fn pack;              /* NULL: this level has no packed layout for the type */
    fr_dot_packed_fn dot_packed;  /* set with pack */
    fr_dot_prompt_fn dot_prompt;  /* set with pack, or NULL: prompts use dot_packed */
} fr_type_traits;

/* NULL for an id that is not a known type. Known but unsupported types
 * have a name and sizes but dequant == NULL. */
const fr_type_traits *fr_traits(uint32_t type);
/* Bytes of a row of n elements (n a multiple of the block size). */
size_t fr_row_bytes(uint32_t type, int64_t n);

/* AMX = AVX-512 plus the AMX tile unit, whose 32-element block dots use the
 * block-exact arithmetic of fr_dot_exact_ref (decode included). */
enum fr_isa { FR_ISA_SCALAR = 0, FR_ISA_AVX2 = 1, FR_ISA_AVX512 = 2, FR_ISA_AMX = 3 };
/* Highest level this CPU runs. */
int fr_isa_detect(void);
/* Points every dot at the kernels of the given level (capped at what the
 * CPU runs); returns the level in use. Called once at model load with the
 * level from FRUGAL_ISA or fr_isa_detect(). */
int fr_kernels_select(int isa);
int fr_kernels_isa(void);
const char *fr_isa_name(int isa);
/* Selects the level named by env FRUGAL_ISA (scalar|avx2|avx512|amx), else the
 * detected one; returns the level in use. */
int fr_kernels_init_from_env(void);
/* The scalar twin of the AMX level's Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K
 * dots, and of the AVX2 level's Q4_0, Q4_1, Q5_0 and Q4_K ones (block sums
 * exact, FMAs per block in order); NULL for other types. */
fr_dot_fn fr_dot_exact_ref(uint32_t type);
/* The scalar twin of dot_prompt on one original row w and n bf16
 * activations (NAN for a type without one): weights fma(d, q, m) rounded
 * to bf16, the products summed in order. The tile unit sums in its own
 * order, so the two agree to rounding, not bit for bit. */
float fr_dot_prompt_ref(uint32_t type, int64_t n, const void *w, const uint16_t *x);

/* Q4_0, Q4_1 and Q5_0 rows packed for the kernels that read 16 rows at
 * once (the AVX2 level's dot_packed, and the AMX level's for Q4_1): the
 * same bytes as the original rows, permuted within each group of 16 rows,
 * so a group starts where it did in a contiguous copy. Block b of a group
 * is 16 original blocks' bytes at b * FR_*_GROUP_BLOCK from the group's
 * start, the codes last:
 *   d[16]       fp16, row r's scale (bytes 0..31)
 *   Q4_1 m[16]  fp16, row r's min (32..63)
 *   Q5_0 hb[16][4]  1 byte each (32 + 4 r + c): the 5th bits of row
 *               r's elements 4h + c (bit 2h) and 16 + 4h + c (bit
 *               2h + 1), h < 4: the byte beside code byte c of each q[h][r]
 *   q[4][16]    4 bytes each (the last 256 bytes, + 64 h + 4 r): row r's
 *               code bytes 4h .. 4h + 3, i.e. elements 4h .. 4h + 3 in
 *               their low nibbles and 16 + 4h .. 16 + 4h + 3 in their
 *               high ones.
 * So a vector of q[h] holds 4 consecutive codes of each row, which meet a
 * token's 4 activation bytes broadcast: lane r works on row r alone.
 * fr_pack_q4_0 / q4_1 / q5_0 pack nr rows (a multiple of 16) read at
 * stride ws; fr_pack_group packs one group of `rows` <= 16 rows of one of
 * these types, the others zero. */
#define FR_Q4_0_GROUP_BLOCK (16 * 18)
#define FR_Q4_1_GROUP_BLOCK (16 * 20)
#define FR_Q5_0_GROUP_BLOCK (16 * 22)
void fr_pack_q4_0(int64_t n, const void *src, size_t ws, int64_t nr, void *dst);
void fr_pack_q4_1(int64_t n, const void *src, size_t ws, int64_t nr, void *dst);
void fr_pack_q5_0(int64_t n, const void *src, size_t ws, int64_t nr, void *dst);
void fr_pack_group(uint32_t type, int64_t n, const void *src, size_t ws, int rows, void *dst);

/* Q4_K rows packed the same way for the AVX2 level's dot_packed
 * (kernels_avx2_packed_k.c): super-block b of a group is 16 original
 * super-blocks' bytes at b * FR_Q4_K_GROUP_BLOCK:
 *   d[16], dmin[16]  fp16 (bytes 0..31, 32..63)
 *   sc[12][16]       the 12 packed scale bytes, byte k of row r at
 *                    64 + 16 k + r (unpacked by the kernel, 16 rows at once)
 *   q[8][4][16]      4 bytes each (256 + 256 j + 64 s + 4 r): sub-block j's
 *                    elements 4s .. 4s + 3 of row r in the low nibbles and
 *                    16 + 4s .. 16 + 4s + 3 in the high ones, as in q above.
 * fr_pack_group packs Q4_K groups as well. */
#define FR_Q4_K_GROUP_BLOCK (16 * 144)
void fr_pack_q4_k(int64_t n, const void *src, size_t ws, int64_t nr, void *dst);

/* Q8_0 rows packed for the AVX2 level's dot_packed (kernels_avx2_packed.c):
 * block b of a group is 16 original blocks' bytes at b *
 * FR_Q8_0_GROUP_BLOCK:
 *   d[16]          fp16, row r's scale (bytes 0..31)
 *   q[2][4][2][8]  4 bytes each (32 + 256 h + 64 s + 32 k + 4 (r - 8 h),
 *                  h = r / 8): row r's codes 4s .. 4s + 3 (k = 0) or
 *                  16 + 4s .. 16 + 4s + 3 (k = 1),
 * the order in which the kernel unpacks the 4-bit formats' codes, so it
 * loads these as they are. fr_pack_group packs Q8_0 groups as well. */
#define FR_Q8_0_GROUP_BLOCK (16 * 34)
void fr_pack_q8_0(int64_t n, const void *src, size_t ws, int64_t nr, void *dst);

/* Quantizes an activation row of n floats to act_type (F32, F16, BF16,
 * Q8_0, Q8_1, Q8_K) with the dispatched quantizer. Inputs must be finite. */
void fr_quantize_act(uint32_t act_type, const float *x, void *y, int64_t n);

/* Internal: one ISA's kernels, indexed by type id; NULL = none at this
 * level (the level below stays in place). quant[] is indexed by the
 * activation type it produces. Filled by kernels_avx2.c (with
 * kernels_avx2_packed.c), kernels_avx512.c and kernels_amx*.c, installed
 * into the traits by fr_kernels_select. */
typedef struct {
    fr_dot_fn dot[FR_TYPE_COUNT];
    fr_dot_rows_fn dot_rows[FR_TYPE_COUNT];
    fr_dot_tile_fn dot_tile[FR_TYPE_COUNT];
    fr_quant_fn quant[FR_TYPE_COUNT];
    fr_quant_checked_fn quant_checked[FR_TYPE_COUNT];
    fr_pack_fn pack[FR_TYPE_COUNT];
    fr_dot_packed_fn dot_packed[FR_TYPE_COUNT];
    fr_dot_prompt_fn dot_prompt[FR_TYPE_COUNT];
} fr_kernel_table;
void fr_kernels_fill_avx2(fr_kernel_table *t);
void fr_kernels_fill_avx2_packed(fr_kernel_table *t);
void fr_kernels_fill_avx2_packed_k(fr_kernel_table *t);
void fr_kernels_fill_avx512(fr_kernel_table *t);
void fr_kernels_fill_amx(fr_kernel_table *t);
void fr_kernels_fill_amx_packed(fr_kernel_table *t);
/* Internal: installs a type's dispatched kernels (quant.c owns the table). */
void fr_traits_set_kernels(uint32_t type, fr_dot_fn dot, fr_dot_rows_fn dot_rows,
                           fr_dot_tile_fn dot_tile, fr_quant_fn quant_fast, fr_quant_checked_fn quant_checked);
void fr_traits_set_packed(uint32_t type, fr_pack_fn pack, fr_dot_packed_fn dot_packed, fr_dot_prompt_fn dot_prompt);

/* fp16 / bf16 conversion (exact, round-to-nearest-even). */
float fr_fp16_to_fp32(uint16_t h);
uint16_t fr_fp32_to_fp16(float f);
float fr_bf16_to_fp32(uint16_t h);
uint16_t fr_fp32_to_bf16(float f);

#endif
