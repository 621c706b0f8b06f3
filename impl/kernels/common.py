"""Pieces shared by the weight-only quantized matmul kernels.

Every kernel computes y (M, N) = x (M, K) @ W.T, W (N, K) decoded from its packed layout
tile by tile inside the K loop, with float32 accumulation on the tensor cores (``tl.dot``).
The program grid is (tiles of (BLOCK_M, BLOCK_N) in grouped order, SPLIT_K). With
SPLIT_K > 1 each program reduces one slice of K, writes its float32 partial tile to a
scratch buffer, and the last program to arrive at a tile (counted with an atomic) adds the
partials in split order and writes the output: one launch, and the same sum order on
every run, so results are deterministic.

The float64 references of the scheme modules, not anything here, define correctness.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import struct
from pathlib import Path
from typing import Optional

import torch
import triton
import triton.language as tl

from . import interpreter_active

SUPPORTED_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)
DECODES = ("bits", "prmt", "table")

# Programs per SM worth aiming for before split-K stops paying (measured on the H100:
# see benchmarks/woq_h100.md); the SM count itself is read off the device.
_DEFAULT_SM_COUNT = 132


# ----------------------------------------------------------------------------- kernels
# The kernels call no jit function of triton.language's standard library (tl.cdiv,
# tl.zeros, tl.sum, ...): those are compiled-or-interpreted when triton is first imported,
# so they would not follow ``impl.kernels.use_interpreter()`` when something imported
# triton earlier. Builtins (tl.full, tl.reduce, ...) work either way.


@triton.jit
def cdiv(a, b):
    """ceil(a / b) for non-negative integers."""
    return (a + b - 1) // b


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def row_sums(x):
    """x (R, C) -> (R,) float32 sums of each row."""
    return tl.reduce(x.to(tl.float32), 1, _add)


@triton.jit
def zeros_f32(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """A (BLOCK_M, BLOCK_N) float32 accumulator."""
    return tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)


@triton.jit
def tile_coordinates(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid``, visiting GROUP_M row tiles per column of tiles so
    that programs running together share weight tiles in L2 (Triton tutorial 03 order)."""
    num_pid_m = cdiv(M, BLOCK_M)
    num_pid_n = cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def split_k_bounds(pid_k, K, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """[k_begin, k_end) of split ``pid_k``: whole BLOCK_K steps, the last split ends at K.
    A split may be empty (k_begin >= K); it still takes part in the split-K epilogue."""
    k_steps = cdiv(K, BLOCK_K)
    steps_per_split = cdiv(k_steps, SPLIT_K)
    k_begin = pid_k * steps_per_split * BLOCK_K
    k_end = tl.minimum(k_begin + steps_per_split * BLOCK_K, K)
    return k_begin, k_end


@triton.jit
def group_columns(values, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, GROUP_BYTES: tl.constexpr):
    """values (BLOCK_N, GROUPS) -> (BLOCK_N, GROUPS * GROUP_BYTES): each group's value over
    the packed byte columns of its group (a step of a 4-bit kernel spanning GROUPS groups)."""
    wide = tl.broadcast_to(tl.reshape(values, (BLOCK_N, GROUPS, 1)), (BLOCK_N, GROUPS, GROUP_BYTES))
    return tl.reshape(wide, (BLOCK_N, GROUPS * GROUP_BYTES))


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b on the tensor cores. UPCAST runs the product in float32 (see upcast_dot)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def int8_to_dot_operand(q, DTYPE: tl.constexpr, UPCAST: tl.constexpr):
    """int8 values (exact in DTYPE) as a tensor-core operand of DTYPE.

    bfloat16: Triton's own conversion is already a few bit operations per pair. float16: its
    conversion is one I2F per element, a quarter-rate unit that would cost about as much as
    streaming the weights, so write q + 128 into the mantissa of 1024 (exact) and subtract
    1152 in float16. UPCAST (interpreter only): float32, since the interpreter's
    integer-to-bfloat16 cast reinterprets instead of converting."""
    if UPCAST:
        return q.to(tl.float32)
    elif DTYPE == tl.float16:
        return (q.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0
    else:
        return q.to(DTYPE)


@triton.jit
def split_even_odd_columns(x, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """x (BLOCK_M, BLOCK_K) -> (x[:, 0::2], x[:, 1::2]), each (BLOCK_M, BLOCK_K // 2): the
    activations that meet the low and the high nibbles of the packed weight bytes."""
    return tl.split(tl.reshape(x, (BLOCK_M, BLOCK_K // 2, 2)))


@triton.jit
def nibble_bias(DTYPE: tl.constexpr):
    """The constant that ``biased_nibbles`` adds: the smallest power of two whose ulp in DTYPE
    is 1 (bfloat16 128, float16 1024), so bias + u is exact for u in [0, 15]."""
    if DTYPE == tl.bfloat16:
        return 128.0
    else:
        return 1024.0


@triton.jit
def biased_nibbles(packed, DTYPE: tl.constexpr):
    """packed (R, C) uint8 -> (low, high) nibbles as DTYPE values bias + u, u in [0, 15].

    Writing u into the mantissa of bias (one OR, no int-to-float conversion) is exact;
    callers fold the bias into the zero point in float32."""
    low = (packed & 0xF).to(tl.int16)
    high = (packed >> 4).to(tl.int16)
    if DTYPE == tl.bfloat16:
        return (low | 0x4300).to(tl.bfloat16, bitcast=True), (high | 0x4300).to(tl.bfloat16, bitcast=True)
    else:
        return (low | 0x6400).to(tl.float16, bitcast=True), (high | 0x6400).to(tl.float16, bitcast=True)


@triton.jit
def biased_nibbles_prmt(packed, DTYPE: tl.constexpr):
    """``biased_nibbles`` in PTX, four bytes per call: each byte pair is spread into the two
    16-bit halves of a register with one PRMT, and one LOP3 keeps the nibble and ORs in the
    bias exponent. 9 instructions per 8 nibbles where the elementwise form takes about 28.
    Compiled kernels only (the interpreter cannot run PTX)."""
    if DTYPE == tl.bfloat16:
        return tl.inline_asm_elementwise(
            """
            {
            .reg .b32 t, s, z;
            mov.b32 z, 0;
            shr.b32 s, $4, 4;
            prmt.b32 t, $4, z, 0x4140;
            lop3.b32 $0, t, 0x000F000F, 0x43004300, 0xEA;
            prmt.b32 t, $4, z, 0x4342;
            lop3.b32 $1, t, 0x000F000F, 0x43004300, 0xEA;
            prmt.b32 t, s, z, 0x4140;
            lop3.b32 $2, t, 0x000F000F, 0x43004300, 0xEA;
            prmt.b32 t, s, z, 0x4342;
            lop3.b32 $3, t, 0x000F000F, 0x43004300, 0xEA;
            }
            """,
            "=r,=r,=r,=r,r", [packed], dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
    else:
        return tl.inline_asm_elementwise(
            """
            {
            .reg .b32 t, s, z;
            mov.b32 z, 0;
            shr.b32 s, $4, 4;
            prmt.b32 t, $4, z, 0x4140;
            lop3.b32 $0, t, 0x000F000F, 0x64006400, 0xEA;
            prmt.b32 t, $4, z, 0x4342;
            lop3.b32 $1, t, 0x000F000F, 0x64006400, 0xEA;
            prmt.b32 t, s, z, 0x4140;
            lop3.b32 $2, t, 0x000F000F, 0x64006400, 0xEA;
            prmt.b32 t, s, z, 0x4342;
            lop3.b32 $3, t, 0x000F000F, 0x64006400, 0xEA;
            }
            """,
            "=r,=r,=r,=r,r", [packed], dtype=(tl.float16, tl.float16), is_pure=True, pack=4)


# float32 2**23: its ulp is 1, so OR-ing an integer u < 2**23 into its mantissa gives 2**23 + u.
MAGIC_F32 = tl.constexpr(8388608.0)


@triton.jit
def half_nibbles_f32(packed):
    """packed (R, C) uint8 -> (low, high) nibbles as float32 v = 1/2 + u / 256, u in [0, 15]:
    u written into the mantissa of 1/2 at bit 16 (one OR each, no int-to-float conversion),
    exact, and small enough that v * x keeps x's bits (u - zero = 256 v - 128 - zero).
    Elementwise Triton."""
    low = (((packed & 0xF).to(tl.int32) << 16) | 0x3F000000).to(tl.float32, bitcast=True)
    high = (((packed >> 4).to(tl.int32) << 16) | 0x3F000000).to(tl.float32, bitcast=True)
    return low, high


@triton.jit
def half_nibbles_f32_prmt(packed):
    """``half_nibbles_f32`` in PTX, four bytes per call: two LOP3 and a shift split the
    register's nibbles into two registers of four bytes, and one PRMT per nibble moves its
    byte into byte 2 under the exponent byte of 1/2: 11 instructions per 8 nibbles.
    Compiled kernels only."""
    return tl.inline_asm_elementwise(
        "{ .reg .b32 l, h, m; mov.b32 m, 0x3F000000; and.b32 l, $8, 0x0F0F0F0F; shr.b32 h, $8, 4; "
        "and.b32 h, h, 0x0F0F0F0F; prmt.b32 $0, l, m, 0x7044; prmt.b32 $1, l, m, 0x7144; "
        "prmt.b32 $2, l, m, 0x7244; prmt.b32 $3, l, m, 0x7344; prmt.b32 $4, h, m, 0x7044; "
        "prmt.b32 $5, h, m, 0x7144; prmt.b32 $6, h, m, 0x7244; prmt.b32 $7, h, m, 0x7344; }",
        "=r,=r,=r,=r,=r,=r,=r,=r,r", [packed], dtype=(tl.float32, tl.float32), is_pure=True, pack=4)


@triton.jit
def magic_int8_f32(q, PRMT: tl.constexpr):
    """q (R, C) int8 -> float32 2**23 + 128 + q: the byte q + 128 (q with its top bit flipped)
    written under the exponent of 2**23, exact, no int-to-float conversion (a quarter-rate
    unit on the H100 and H200). PRMT: in PTX, one XOR per four bytes and one PRMT per byte
    (compiled kernels only); else elementwise Triton."""
    if PRMT:
        return tl.inline_asm_elementwise(
            "{ .reg .b32 t, m; mov.b32 m, 0x4B000000; xor.b32 t, $4, 0x80808080; prmt.b32 $0, t, m, 0x7440; "
            "prmt.b32 $1, t, m, 0x7441; prmt.b32 $2, t, m, 0x7442; prmt.b32 $3, t, m, 0x7443; }",
            "=r,=r,=r,=r,r", [q], dtype=tl.float32, is_pure=True, pack=4)
    return ((q.to(tl.int32) + 128) | 0x4B000000).to(tl.float32, bitcast=True)


@triton.jit
def unpack_half_pairs(pairs, DTYPE: tl.constexpr):
    """pairs (C,) int32, each two 16-bit floats of DTYPE (element 2j in the low half) ->
    (even, odd) float32, (C,) each. Lets a GEMV read x as 32-bit words in its weights' layout."""
    if DTYPE == tl.bfloat16:
        even = (pairs << 16).to(tl.float32, bitcast=True)
        odd = (pairs & -65536).to(tl.float32, bitcast=True)
    else:
        even = (pairs & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        odd = (pairs >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return even, odd


@triton.jit
def x_pairs_f32(x_pairs_ptr, k, offs_j, K, EVEN_K: tl.constexpr, DTYPE: tl.constexpr):
    """x columns k + 2j and k + 2j + 1, j in offs_j, as float32 (zero from K on), read as one
    32-bit word each from x_pairs_ptr (one x row as int32 pairs). EVEN_K: all < K."""
    if EVEN_K:
        return unpack_half_pairs(tl.load(x_pairs_ptr + k // 2 + offs_j), DTYPE)
    cols = k + 2 * offs_j
    even, odd = unpack_half_pairs(tl.load(x_pairs_ptr + k // 2 + offs_j, mask=cols < K, other=0), DTYPE)
    return even, tl.where(cols + 1 < K, odd, 0.0)


@triton.jit
def gemv_tile(M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              SPLIT_K: tl.constexpr):
    """(tile_id, pid_k, first_row, offs_n, k_begin, k_end) of a GEMV program: BLOCK_M x rows
    (from first_row) by BLOCK_N output columns over K range [k_begin, k_end). Row tiles vary
    fastest, so the programs reading one weight tile run together (M > BLOCK_M)."""
    tile_id = tl.program_id(0)
    pid_k = tl.program_id(1)
    row_tiles = cdiv(M, BLOCK_M)
    first_row = (tile_id % row_tiles) * BLOCK_M
    offs_n = (tile_id // row_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_begin, k_end = split_k_bounds(pid_k, K, BLOCK_K, SPLIT_K)
    return tile_id, pid_k, first_row, offs_n, k_begin, k_end


@triton.jit
def gemv_row(first_row, r: tl.constexpr, M):
    """Row r of a GEMV tile, clamped to the last row of x: rows past M read real data (no
    mask on the loads) and their sums are dropped by the store's row mask."""
    return tl.minimum(first_row + r, M - 1)


@triton.jit
def add_to_column(acc, values, column: tl.constexpr):
    """acc (R, C) with values (R,) added to its column ``column``: a GEMV tile keeps one
    accumulator column per x row (Triton tensors cannot be indexed by assignment)."""
    cols = tl.arange(0, acc.shape[1])
    return acc + tl.where(cols[None, :] == column, values[:, None], 0.0)


@triton.jit
def group_dots(low, high, x_even, x_odd, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, HALF_GROUP: tl.constexpr):
    """Decoded nibbles low, high (BLOCK_N, GROUPS * HALF_GROUP) float32 against one x row's
    even and odd columns (GROUPS * HALF_GROUP,) -> (BLOCK_N, GROUPS) sums, one per weight row
    and group of the step (each group is scaled apart afterwards)."""
    return (tl.reduce(tl.reshape(low * x_even[None, :], (BLOCK_N, GROUPS, HALF_GROUP)), 2, _add)
            + tl.reduce(tl.reshape(high * x_odd[None, :], (BLOCK_N, GROUPS, HALF_GROUP)), 2, _add))


GEMV_ROWS = (1, 2, 4, 8)


def gemv_activation(x: torch.Tensor) -> torch.Tensor:
    """x (M, K), unit stride along K (check_activation), as the GEMV kernels read it: 32-bit
    words of column pairs, so every row from an even element offset. A view that starts at
    an odd one, or (M > 1) whose rows are an odd number of elements apart, is copied into
    rows of K rounded up to even (the kernels mask the column past K)."""
    M, K = x.shape
    if x.storage_offset() % 2 == 0 and (M == 1 or x.stride(0) % 2 == 0):
        return x
    rows = x.new_empty((M, K + K % 2))
    rows[:, :K].copy_(x)
    return rows[:, :K]


# PTX for lookup_nibbles_prmt, eight packed bytes per call (pack=8): bytes in $8 and $9 ->
# the levels of their low nibbles in $0..$3 and of their high nibbles in $4..$7, each
# register two 16-bit floats (bytes 2r and 2r + 1 of the eight). The levels' low bytes come
# in l0..l3 and their high bytes in h0..h3 (see nibble_lut_values), loop-invariant values that
# Triton passes eight times each: l_i is $(10 + 8 i), h_i is $(42 + 8 i). PRMT looks four
# bytes up at once in an 8-byte table (3-bit index per byte), so both table halves are looked
# up with the nibbles' low 3 bits, bit 3 picks the half (a byte mask made by one more PRMT,
# applied by LOP3), and a last PRMT pairs low and high bytes: 12 instructions per 4 nibbles.
_LUT_QUARTER = """
and.b32 sel, {src}, 0x7777;
shr.b32 m, {src}, 3;
and.b32 m, m, 0x1111;
prmt.b32 m, k, k, m;
prmt.b32 a, $10, $18, sel;
prmt.b32 b, $26, $34, sel;
lop3.b32 lb, a, b, m, 0xD8;
prmt.b32 a, $42, $50, sel;
prmt.b32 b, $58, $66, sel;
lop3.b32 hb, a, b, m, 0xD8;
prmt.b32 {out_low}, lb, hb, 0x6240;
prmt.b32 {out_high}, lb, hb, 0x7351;
"""
def _one_line(ptx: str) -> str:
    """PTX on one line. Inductor copies a kernel's globals into its output code as string
    literals inside a '''...''' block, which torch 2.11 does not escape: a newline
    (or a backslash) in a PTX string would end up unescaped there and break the module."""
    return " ".join(line.strip() for line in ptx.splitlines() if line.strip())


LUT_ASM = tl.constexpr(_one_line(
    "{ .reg .b32 k, half, sel, m, a, b, lb, hb; mov.b32 k, 0x0000FF00;"
    + _LUT_QUARTER.format(src="$8", out_low="$0", out_high="$4")
    + "shr.b32 half, $8, 16;"
    + _LUT_QUARTER.format(src="half", out_low="$1", out_high="$5")
    + _LUT_QUARTER.format(src="$9", out_low="$2", out_high="$6")
    + "shr.b32 half, $9, 16;"
    + _LUT_QUARTER.format(src="half", out_low="$3", out_high="$7") + "}"))
LUT_CONSTRAINTS = tl.constexpr("=r," * 8 + "r,r" + ",r,r,r,r,r,r,r,r" * 8)


@triton.jit
def _per_lane_copy(word):
    """word + (laneid >> 31), i.e. word, in a form ptxas cannot prove warp-uniform: uniform
    values live in uniform registers, which PRMT cannot read, and ptxas would copy each table
    word into an ordinary register at every PRMT that uses it."""
    return tl.inline_asm_elementwise(
        "{ .reg .b32 t; mov.u32 t, %laneid; shr.b32 t, t, 31; add.u32 $0, $1, t; }",
        "=r,r", [word], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def level_bits(levels_ptr, i: tl.constexpr, DTYPE: tl.constexpr):
    """levels[i] (float32 in memory) rounded to DTYPE (to nearest even), its 16-bit pattern in
    a (1, 1) int32, as half_bits computes it."""
    level = tl.load(levels_ptr + tl.full((1, 1), i, tl.int32))
    if DTYPE == tl.bfloat16:  # rounded by hand: the interpreter's cast to bfloat16 truncates
        bits = level.to(tl.int32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF
    else:
        bits = level.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return bits


@triton.jit
def _byte_word(b0, b1, b2, b3, SHIFT: tl.constexpr):
    """Byte SHIFT // 8 of each of four 16-bit patterns, packed into one word (b0 lowest)."""
    return (((b0 >> SHIFT) & 0xFF) | (((b1 >> SHIFT) & 0xFF) << 8) | (((b2 >> SHIFT) & 0xFF) << 16)
            | (((b3 >> SHIFT) & 0xFF) << 24))


@triton.jit
def nibble_lut_of_levels(levels_ptr, DTYPE: tl.constexpr):
    """The 8 words of ``nibble_lut_values`` as (1, 1) int32 tensors, built from the 16
    float32 levels in memory: the caller passes the levels operand itself, so compiled code
    runs no kernel a call to turn levels into a table (16 loads a program, from L2)."""
    b0 = level_bits(levels_ptr, 0, DTYPE)
    b1 = level_bits(levels_ptr, 1, DTYPE)
    b2 = level_bits(levels_ptr, 2, DTYPE)
    b3 = level_bits(levels_ptr, 3, DTYPE)
    b4 = level_bits(levels_ptr, 4, DTYPE)
    b5 = level_bits(levels_ptr, 5, DTYPE)
    b6 = level_bits(levels_ptr, 6, DTYPE)
    b7 = level_bits(levels_ptr, 7, DTYPE)
    b8 = level_bits(levels_ptr, 8, DTYPE)
    b9 = level_bits(levels_ptr, 9, DTYPE)
    b10 = level_bits(levels_ptr, 10, DTYPE)
    b11 = level_bits(levels_ptr, 11, DTYPE)
    b12 = level_bits(levels_ptr, 12, DTYPE)
    b13 = level_bits(levels_ptr, 13, DTYPE)
    b14 = level_bits(levels_ptr, 14, DTYPE)
    b15 = level_bits(levels_ptr, 15, DTYPE)
    return (_byte_word(b0, b1, b2, b3, 0), _byte_word(b4, b5, b6, b7, 0),
            _byte_word(b8, b9, b10, b11, 0), _byte_word(b12, b13, b14, b15, 0),
            _byte_word(b0, b1, b2, b3, 8), _byte_word(b4, b5, b6, b7, 8),
            _byte_word(b8, b9, b10, b11, 8), _byte_word(b12, b13, b14, b15, 8))


@triton.jit
def load_nibble_lut(levels_ptr, DTYPE: tl.constexpr):
    """The PRMT table of the 16 float32 levels at ``levels_ptr`` (nibble_lut_of_levels) in
    ordinary registers; call once, before the K loop, and pass to lookup_nibbles_prmt."""
    w0, w1, w2, w3, w4, w5, w6, w7 = nibble_lut_of_levels(levels_ptr, DTYPE)
    return (_per_lane_copy(w0), _per_lane_copy(w1), _per_lane_copy(w2), _per_lane_copy(w3),
            _per_lane_copy(w4), _per_lane_copy(w5), _per_lane_copy(w6), _per_lane_copy(w7))


@triton.jit
def lookup_nibbles_prmt(packed, lut, DTYPE: tl.constexpr):
    """packed (R, C) uint8 -> (LEVELS[low nibble], LEVELS[high nibble]) as DTYPE, looked up
    in registers by PTX (about 3 instructions a nibble, no memory access); lut: the tuple
    from load_nibble_lut. Compiled kernels only."""
    l0, l1, l2, l3, h0, h1, h2, h3 = lut
    if DTYPE == tl.bfloat16:
        return tl.inline_asm_elementwise(LUT_ASM, LUT_CONSTRAINTS, [packed, l0, l1, l2, l3, h0, h1, h2, h3],
                                         dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=8)
    else:
        return tl.inline_asm_elementwise(LUT_ASM, LUT_CONSTRAINTS, [packed, l0, l1, l2, l3, h0, h1, h2, h3],
                                         dtype=(tl.float16, tl.float16), is_pure=True, pack=8)


@triton.jit
def lookup_nibble_pairs(packed, pair_table_ptr, DTYPE: tl.constexpr):
    """packed (R, C) uint8 -> (LEVELS[low nibble], LEVELS[high nibble]) as DTYPE, from a
    256-entry int32 table holding both decoded 16-bit values of each byte (one gather per
    byte instead of one per nibble; see ``nibble_pair_table``)."""
    pair = tl.load(pair_table_ptr + packed.to(tl.int32))
    low = pair.to(tl.int16).to(DTYPE, bitcast=True)
    high = (pair >> 16).to(tl.int16).to(DTYPE, bitcast=True)
    return low, high


@triton.jit
def store_output_tile(acc, out_ptr, partial_ptr, tile_counter_ptr, offs_m, offs_n, M, N,
                      stride_om, stride_on, tile_id, pid_k, SPLIT_K: tl.constexpr):
    """Write the float32 tile acc (BLOCK_M, BLOCK_N) to out (M, N) in out's dtype.

    SPLIT_K > 1: partial (SPLIT_K, M, N) float32 scratch, tile_counter (tiles,) int32 zeros.
    The last of the SPLIT_K programs of a tile sums the partials in split order, writes the
    output and resets the counter to zero for the next launch."""
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        mn = offs_m[:, None] * N + offs_n[None, :]
        tl.store(partial_ptr + pid_k * M * N + mn, acc, mask=mask)
        # Every thread's partial store must be done before the release of the counter.
        tl.debug_barrier()
        arrived = tl.atomic_add(tile_counter_ptr + tile_id, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            tl.debug_barrier()
            total = tl.full(acc.shape, 0.0, tl.float32)
            for split in tl.static_range(SPLIT_K):
                # .cg: read from L2, where the other SMs' partials are; never a stale L1 line.
                total += tl.load(partial_ptr + split * M * N + mn, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(tile_counter_ptr + tile_id, 0)


@triton.jit
def load_packed_tile(qweight_ptr, N, half_k_pad, stride_qn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """A dequantize kernel's packed 4-bit tile: program (i, j) reads rows i * BLOCK_N..,
    byte columns j * BLOCK_K // 2.. of qweight (N, K_pad // 2), bytes contiguous along K.
    Returns (offs_n, offs_j, mask_n, packed (BLOCK_N, BLOCK_K // 2) uint8, zero past the edges)."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_j = tl.program_id(1) * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)  # k = 2 j (low), 2 j + 1 (high)
    mask_n = offs_n < N
    packed = tl.load(qweight_ptr + offs_n[:, None] * stride_qn + offs_j[None, :],
                     mask=mask_n[:, None] & (offs_j < half_k_pad)[None, :], other=0)
    return offs_n, offs_j, mask_n, packed


@triton.jit
def store_weight_pairs(w_ptr, low, high, offs_n, offs_j, N, half_k_pad, stride_wn):
    """Store decoded nibble pairs, low and high (BLOCK_N, C) float32 for byte columns offs_j
    (W's columns 2 j and 2 j + 1), into W (N, K_pad) rounded once to w's 16-bit dtype: each
    pair one 32-bit word (its byte's two weights side by side), so nothing is interleaved in
    registers. W has unit stride along K and an even row stride (K_pad is)."""
    DTYPE: tl.constexpr = w_ptr.dtype.element_ty
    low_bits = low.to(DTYPE).to(tl.uint16, bitcast=True).to(tl.uint32)
    high_bits = high.to(DTYPE).to(tl.uint16, bitcast=True).to(tl.uint32)
    words = (low_bits | (high_bits << 16)).to(tl.int32, bitcast=True)
    w_words = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    mask = (offs_n < N)[:, None] & (offs_j < half_k_pad)[None, :]
    tl.store(w_words + offs_n[:, None] * (stride_wn // 2) + offs_j[None, :], words, mask=mask)


# ---------------------------------------------------------------------------- launchers


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile shape and launch options of one kernel launch.

    block_m, block_n, block_k: tile of x rows, output columns and reduction (unpacked K);
    block_m 1, 2, 4 or 8 (GEMV_ROWS, decode sizes) selects the GEMV kernel: CUDA-core float32
    multiply-adds, each decoded weight used by block_m x rows, any block_n (int4, nf4: any
    block_k, scale_after_dot ignored); larger block_m are tensor-core tiles (16 and up);
    split_k: programs sharing one output tile along K; group_m: row tiles per L2 group;
    scale_after_dot (int4, nf4): multiply the per-group scale into the (BLOCK_M, BLOCK_N)
    partial product instead of into each weight element (cheaper when BLOCK_M is small);
    decode (int4, nf4): how nibbles become 16-bit floats. "prmt": inline PTX, four bytes at
    a time (compiled kernels only; under the interpreter int4 runs "bits" and nf4 "table");
    "bits" (int4): the nibble written into a float mantissa, elementwise Triton; "table":
    a gather from a 256-entry table of decoded byte pairs;
    swap_ab: compute the transposed tile W @ x.T, so the decoded weights are the tensor
    cores' A operand (on Hopper read from registers instead of shared memory);
    dequantize_first: the prefill route. Decode the whole weight once into x's dtype (a
    (block_n, block_k) tile a program, any block_k), then one dense GEMM (torch.mm, cuBLAS):
    at hundreds of rows the tiles above decode every weight once per row tile and run on
    far fewer, less efficient programs than a dense GEMM. block_m, num_stages and
    scale_after_dot do not apply; split_k is 1.
    """

    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    scale_after_dot: bool = True
    decode: str = "prmt"
    swap_ab: bool = False
    dequantize_first: bool = False

    @property
    def gemv(self) -> bool:
        """CUDA-core GEMV kernel (block_m in GEMV_ROWS) rather than tensor-core tiles."""
        return self.block_m < 16

    def __post_init__(self):
        if self.gemv and self.block_m not in GEMV_ROWS:
            raise ValueError(f"KernelConfig.block_m: {self.block_m} is neither a GEMV row count "
                             f"({', '.join(map(str, GEMV_ROWS))}) nor a power of two >= 16")
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if self.gemv and name == "block_n":
                if value & (value - 1):
                    raise ValueError(f"KernelConfig.{name}: {value} is not a power of two")
            elif self.gemv and name == "block_m":
                continue
            elif value < 16 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name}: {value} is not a power of two >= 16 (tl.dot needs that; "
                                 "block_m 1, 2, 4 or 8 selects the GEMV kernel)")
        if self.split_k < 1:
            raise ValueError(f"KernelConfig.split_k: {self.split_k} is not >= 1")
        if self.decode not in DECODES:
            raise ValueError(f"KernelConfig.decode: {self.decode!r} is not one of {', '.join(map(repr, DECODES))}")
        if self.dequantize_first and (self.gemv or self.split_k != 1 or self.swap_ab):
            raise ValueError("KernelConfig.dequantize_first: needs block_m >= 16, split_k 1 and no swap_ab "
                             f"(got block_m {self.block_m}, split_k {self.split_k}, swap_ab {self.swap_ab})")

    def short(self) -> str:
        """A compact label such as 'm16n64k256s2w4p4' for tables."""
        if self.dequantize_first:  # the dequantize kernel's tile, then the dense GEMM
            return f"dq-n{self.block_n}k{self.block_k}w{self.num_warps}"
        label = (f"m{self.block_m}n{self.block_n}k{self.block_k}s{self.split_k}"
                 f"w{self.num_warps}p{self.num_stages}")
        if not self.scale_after_dot and not self.gemv:  # the GEMV kernels ignore it
            label += "-sbd"
        if self.decode != "prmt":
            label += f"-{self.decode}"
        if self.swap_ab:
            label += "-swap"
        return label


def check_activation(x: torch.Tensor, K: Optional[int], op: str) -> None:
    """x must be (M, K) float16/bfloat16 with unit stride along K (K None: any)."""
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be 2-D (M, K); got shape {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_ACTIVATION_DTYPES:
        raise TypeError(f"{op}: x dtype {x.dtype} is not one of torch.float16, torch.bfloat16")
    if K is not None and x.shape[1] != K:
        raise ValueError(f"{op}: x has K = {x.shape[1]} columns but the weight has K = {K}")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: x has no rows (M = 0)")
    if x.stride(1) != 1:
        raise ValueError(f"{op}: x must have unit stride along K; got strides {x.stride()} (call .contiguous())")


def check_placement(t: torch.Tensor, name: str, device: torch.device, op: str) -> None:
    """What a kernel asks of a weight operand beyond the scheme's layout check
    (``impl.schemes``: dtype and shape): x's device, and row-major (the kernels take one
    stride a dimension but assume the packing's order)."""
    if t.device != device:
        raise ValueError(f"{op}: {name} is on {t.device} but x is on {device}")
    if not t.is_contiguous():
        raise ValueError(f"{op}: {name} must be contiguous (row-major); got strides {t.stride()}")


def check_device(x: torch.Tensor, op: str) -> None:
    """Compiled kernels need a CUDA tensor; the interpreter needs a CPU one."""
    if interpreter_active():
        if x.device.type != "cpu":
            raise ValueError(f"{op}: TRITON_INTERPRET=1 runs kernels on the CPU; x is on {x.device}")
    elif x.device.type != "cuda":
        raise ValueError(f"{op}: the Triton kernel needs x on a CUDA device (got {x.device}); "
                         "set TRITON_INTERPRET=1 (impl.kernels.use_interpreter()) to run it on the CPU")


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    """Multiprocessors on ``device`` (132 on the H100 SXM; a fixed stand-in on the CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return _DEFAULT_SM_COUNT


def choose_split_k(tiles: int, k_steps: int, sms: int, max_split: int = 8, min_steps_per_split: int = 4) -> int:
    """Split K until the grid covers the SMs once, keeping each split several K steps long
    (a short split spends its time on the epilogue, not on streaming weights)."""
    split = 1
    while tiles * split < sms and split < max_split and k_steps // (split * 2) >= min_steps_per_split:
        split *= 2
    return split


# Configs measured fastest per (scheme, M bucket, N, K) on one GPU kind, written by
# ``python -m tools.bench_woq_gpu --tune``; IMPL_WOQ_TUNED_CONFIGS points at another file.
# A Hopper GPU with no table of its own (an H800, say) takes the H100's.
TUNED_CONFIGS_FILES = {"H200": Path(__file__).with_name("tuned_configs_h200.json"),
                       "H100": Path(__file__).with_name("tuned_configs_h100.json")}
TUNED_CONFIGS_ENV = "IMPL_WOQ_TUNED_CONFIGS"


@functools.lru_cache(maxsize=None)
def tuned_configs_file(device_name: str) -> Path:
    """The table for a GPU named ``device_name`` (torch.cuda.get_device_name)."""
    return next((path for kind, path in TUNED_CONFIGS_FILES.items() if kind in device_name), TUNED_CONFIGS_FILES["H100"])


M_BUCKETS = (1, 2, 4, 8, 16, 64, 256, 1024)


# Past this many rows an untuned launch takes the prefill route (KernelConfig.dequantize_first):
# on the H200 it beat every tile at M = 1024 for each scheme and shape measured
# (benchmarks/woq_h200.md), and the dense GEMM's lead only grows with M.
PREFILL_ROWS = 256
PREFILL_CONFIG = KernelConfig(16, 16, 512, num_warps=4, dequantize_first=True)


def m_bucket(M: int) -> int:
    """The smallest tuned M that covers a launch with M rows: 1, 2, 4, 8 (the GEMV kernels'
    row counts), 16 (one 16-row tile), 64, 256 or 1024 (prefill; more rows: 1024)."""
    return next((b for b in M_BUCKETS if M <= b), M_BUCKETS[-1])


def table_bucket(table: dict, scheme: str, M: int) -> int | None:
    """The M bucket of ``table`` a launch with M rows takes: m_bucket(M), or where the table
    has no entry of ``scheme`` there, the next larger bucket it has; None when it has none
    that large (a table tuned up to 256 rows says nothing about prefill sizes: the
    launchers' fallback decides) or none for the scheme."""
    buckets = sorted({int(key.split("/")[1]) for key in table if key.startswith(f"{scheme}/")})
    return next((b for b in buckets if b >= m_bucket(M)), None)


@functools.lru_cache(maxsize=4)
def _load_tuned_configs(path: str) -> dict:
    try:
        with open(path) as f:
            table = json.load(f)
    except FileNotFoundError:
        return {}
    return {key: KernelConfig(**fields) for key, fields in table.get("configs", {}).items()}


def tuned_config(scheme: str, M: int, N: int, K: int, device: torch.device, block_k_limit: int | None = None):
    """The tuned config for this launch, or None (CPU, a GPU other than Hopper, or no entry
    for the M bucket). A shape that was not tuned takes the config of the tuned shape with
    the closest N * K in its bucket, split-K recomputed for its own tile count."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        return None
    default_table = tuned_configs_file(torch.cuda.get_device_name(device))
    table = _load_tuned_configs(os.environ.get(TUNED_CONFIGS_ENV, str(default_table)))
    bucket = table_bucket(table, scheme, M)
    if bucket is None:
        return None
    config = table.get(f"{scheme}/{bucket}/{N}/{K}")
    if config is None:
        candidates = []
        for key, value in table.items():
            key_scheme, key_bucket, key_n, key_k = key.split("/")
            if key_scheme == scheme and int(key_bucket) == bucket:
                candidates.append((abs(math.log(int(key_n) * int(key_k) / (N * K))), key, value))
        if not candidates:
            return None
        base = min(candidates)[2]
        if base.dequantize_first:  # no split to recompute
            return base
        tiles = ceil_div(M, base.block_m) * ceil_div(N, base.block_n)
        config = dataclasses.replace(base, split_k=choose_split_k(tiles, ceil_div(K, base.block_k), sm_count(device)))
    # A step may span several groups only with the scale before the dot (woq_mm_int4's docstring);
    # the GEMV kernels scale each group's row sums, whatever the step.
    if (block_k_limit is not None and config.block_k > block_k_limit and config.scale_after_dot
            and not config.gemv and not config.dequantize_first):
        config = dataclasses.replace(config, block_k=block_k_limit)
    return config


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) on the host (ints or SymInts). triton.cdiv is a constexpr function whose
    call costs microseconds, and the launchers call this several times per launch."""
    return -(-a // b)


def grid_for(M: int, N: int, config: KernelConfig) -> tuple[int, int]:
    """(output tiles, SPLIT_K)."""
    return ceil_div(M, config.block_m) * ceil_div(N, config.block_n), config.split_k


def dequantize_grid(N: int, K: int, config: KernelConfig) -> tuple[int, int]:
    """(weight row tiles, weight column tiles) of a dequantize kernel: one program a tile."""
    return ceil_div(N, config.block_n), ceil_div(K, config.block_k)


def dense_gemm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y (M, N) = x (M, K) @ weight (N, K).T in x's dtype: the dequantize_first route's GEMM
    (cuBLAS in eager code; Inductor's mm lowering in compiled code)."""
    return torch.mm(x, weight.t())


class SplitKScratch:
    """Scratch for the split-K epilogue: float32 partials (split_k, M, N), and an int32
    counter per tile that the kernel leaves at zero after every launch (so it is zeroed
    once, not per call); both per device and stream, grown when a launch needs more.
    Launches sharing them must be stream-ordered, which launches on one stream are."""

    _counters: dict = {}
    _partials: dict = {}
    _unused: dict = {}

    @classmethod
    def buffers(cls, M: int, N: int, config: KernelConfig, device: torch.device,
                fresh_counters: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(partial, tile_counter). ``fresh_counters`` allocates zeros each call (for traced
        code such as a triton_op, which cannot hold on to a buffer between calls)."""
        tiles, split_k = grid_for(M, N, config)
        if split_k == 1:  # the kernel touches neither; any pointers will do
            if fresh_counters:
                unused = torch.empty(1, device=device, dtype=torch.float32)
                return unused, unused.view(torch.int32)
            if device not in cls._unused:
                unused = torch.empty(1, device=device, dtype=torch.float32)
                cls._unused[device] = (unused, unused.view(torch.int32))
            return cls._unused[device]
        if fresh_counters:
            partial = torch.empty((split_k, M, N), device=device, dtype=torch.float32)
            return partial, torch.zeros(tiles, device=device, dtype=torch.int32)
        stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
        key = (device, stream)
        counter = cls._counters.get(key)
        if counter is None or counter.numel() < tiles:
            counter = torch.zeros(max(tiles, 1024), device=device, dtype=torch.int32)
            cls._counters[key] = counter
        # The partials are read back within the launch that wrote them, so launches ordered
        # on one stream can share one buffer: no allocation a call (host time).
        elements = split_k * M * N
        partials = cls._partials.get(key)
        if partials is None or partials.numel() < elements:
            partials = torch.empty(max(elements, 1 << 20), device=device, dtype=torch.float32)
            cls._partials[key] = partials
        return partials[:elements].view(split_k, M, N), counter


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether kernels must run tl.dot in float32: only under the interpreter with bfloat16
    activations (triton 3.6's interpreter multiplies bfloat16 bit patterns as integers and
    casts integers to bfloat16 by reinterpretation). float16 takes the compiled path's
    arithmetic there too, so CI checks it."""
    return interpreter_active() and dtype == torch.bfloat16


# ------------------------------------------------------------------ 4-bit decode tables


def half_bits(value: float, dtype: torch.dtype) -> int:
    """The 16-bit pattern of ``value`` rounded to float16 or bfloat16 (to nearest even), in
    plain Python: safe under fake-tensor tracing, where tensor arithmetic would be fake."""
    value = struct.unpack("<f", struct.pack("<f", value))[0]  # through float32, as torch does
    if dtype == torch.float16:
        return struct.unpack("<H", struct.pack("<e", value))[0]
    if dtype != torch.bfloat16:
        raise TypeError(f"half_bits: {dtype} is not torch.float16 or torch.bfloat16")
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _as_int32(word: int) -> int:
    """An unsigned 32-bit word as the int32 with the same bits (tensors hold int32)."""
    return word - (1 << 32) if word >= 1 << 31 else word


@functools.lru_cache(maxsize=None)
def nibble_pair_values(levels: tuple, dtype: torch.dtype) -> tuple:
    """The 256 int32 entries of ``nibble_pair_table`` as Python ints."""
    bits = [half_bits(v, dtype) for v in levels]
    return tuple(_as_int32(bits[b & 0xF] | (bits[b >> 4] << 16)) for b in range(256))


@functools.lru_cache(maxsize=None)
def nibble_lut_values(levels: tuple, dtype: torch.dtype) -> tuple:
    """The 8 int32 words of the PRMT table (what nibble_lut_of_levels builds in a kernel):
    words 0..3 hold the low bytes of LEVELS[0..15] as ``dtype`` bit patterns (entry 4 i + j
    in byte j of word i), words 4..7 their high bytes."""
    bits = [half_bits(v, dtype) for v in levels]
    low_bytes = [b & 0xFF for b in bits]
    high_bytes = [b >> 8 for b in bits]
    return tuple(_as_int32(sum(table[4 * i + j] << (8 * j) for j in range(4)))
                 for table in (low_bytes, high_bytes) for i in range(4))


@functools.lru_cache(maxsize=None)
def _int32_table_cached(values: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32, device=device)


@functools.lru_cache(maxsize=None)
def _table_of(values_of, levels: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _int32_table_cached(values_of(tuple(float(v) for v in levels), dtype), torch.device(device))


def nibble_pair_table(levels, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(256,) int32: entry b holds LEVELS[b & 15] in bits 0..15 and LEVELS[b >> 4] in bits
    16..31, each as a ``dtype`` (float16 or bfloat16) bit pattern. Cached per device (one
    dictionary lookup when ``levels`` is a tuple: the eager launchers call this every launch)."""
    return _table_of(nibble_pair_values, levels if type(levels) is tuple else tuple(map(float, levels)), dtype, device)


@functools.lru_cache(maxsize=None)
def _levels_cached(levels: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.float32, device=device)


def levels_tensor(levels, device: torch.device) -> torch.Tensor:
    """(16,) float32 ``levels`` on ``device``, what nibble_lut_of_levels reads; cached per
    device, as nibble_pair_table."""
    return _levels_cached(tuple(map(float, levels)), torch.device(device))


def _wrap_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 tensor of unsigned 32-bit words -> int32 tensor with the same bits."""
    return (words - ((words >> 31) & 1) * (1 << 32)).to(torch.int32)


def _level_bits(levels: torch.Tensor, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """levels[index] as ``dtype`` bit patterns (int64 in 0..0xFFFF). A gather, not levels[index]:
    indexing fails on fake CUDA tensors in a CPU build of torch (the CPU trace tests)."""
    return torch.gather(levels, 0, index).to(dtype).view(torch.int16).to(torch.int64) & 0xFFFF


def nibble_pair_table_of(levels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``nibble_pair_table`` of a (16,) float32 levels tensor, computed on its device with one
    gather (compiled: one small kernel): traceable and capturable in a CUDA graph, where the
    Python-int tables above would need the levels on the host (a device sync)."""
    entry = torch.arange(256, device=levels.device)  # entry b: levels[b & 15] low, levels[b >> 4] high
    return _wrap_int32(_level_bits(levels, entry & 0xF, dtype) | (_level_bits(levels, entry >> 4, dtype) << 16))
