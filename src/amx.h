/*
 * amx.h - what the AMX level's kernel files (kernels_amx.c,
 * kernels_amx_packed.c) share: the layout LDTILECFG reads, the tile
 * register numbers, and per-thread scratch memory. Include only from
 * files built with the AMX flags.
 */
#ifndef FR_AMX_H
#define FR_AMX_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) fr_tile_config;
/* Configurations must be constants in memory: LDTILECFG's intrinsic
 * tells the compiler it reads only a pointer's worth of bytes, so one
 * built on the stack could lose its stores. */

/* Tile registers: C 0-3 (two pairs, so that the tile unit computes the
 * next blocks while the vector units scale these), A 4-5, B 6-7. Literal
 * numbers: the intrinsics paste them into the instruction. */
#define TC0 0
#define TC1 1
#define TC2 2
#define TC3 3
#define TA0 4
#define TA1 5
#define TB0 6
#define TB1 7

/* The configuration of two panels of m0 (1..16) and m1 (0..16) rows
 * against 16 x 64-byte B tiles: C 0-1 and A 0 have m0 rows, C 2-3 and
 * A 1 m1 rows (none when m1 = 0), B 0-1 16 rows; 64 bytes a row. */
const fr_tile_config *fr_amx_pair_config(int m0, int m1);

enum { FR_AMX_SCRATCH_TILES, FR_AMX_SCRATCH_PACKED, FR_AMX_SCRATCH_PROMPT, FR_AMX_SCRATCH_COUNT };

/* This thread's scratch memory of one kernel file: at least `bytes`,
 * 64-byte aligned, kept between calls (contents not preserved when it
 * grows) and freed with the thread. Plain malloc, not the library's
 * counted allocator: NULL is not an error, the kernels then fall back to
 * their rows kernels, which give the same bits. */
void *fr_amx_scratch(int owner, size_t bytes);

#endif
