"""NF4 weight-only matmul: y (M, N) = x (M, K) @ W.T.

Layout (impl/schemes/nf4.py), block size B along K (default 64), K_pad = K rounded up to B:
qweight (N, K_pad // 2) uint8 with int4's nibble order (k = 2j low, 2j + 1 high), each
nibble u indexing NF4_LEVELS; absmax (N, K_pad // B) float32;
W[n, k] = NF4_LEVELS[u[n, k]] * absmax[n, k // B] for k < K.
Double-quantized absmax: absmax_q (N, K_pad // B) uint8 codes decoded as
absmax = absmax_q * absmax_scale[flat_block // 256] + absmax_offset, with
flat_block = n * (K_pad // B) + k // B, absmax_scale (ceil(N * K_pad / B / 256),) float32
and absmax_offset () float32.

Decoding looks the levels up in registers with PRMT (inline PTX, ``lookup_nibbles_prmt``; the
kernel builds its table from the 16 float32 levels themselves), or under the interpreter and
on the prefill route gathers them from a 256-entry table of level pairs (both nibbles' NF4
values as 16-bit floats of x's dtype); absmax, one per (row, block), scales either the
(BLOCK_M, BLOCK_N) partial product (scale_after_dot) or each weight before the dot.

Tutorial order: kernel, launcher, reference.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch._guards import detect_fake_mode

from . import interpreter_active
from .common import (
    KernelConfig,
    _add,
    add_to_column,
    gemv_row,
    gemv_tile,
    group_columns,
    group_dots,
    levels_tensor,
    load_nibble_lut,
    load_packed_tile,
    lookup_nibble_pairs,
    lookup_nibbles_prmt,
    mma,
    nibble_pair_table,
    nibble_pair_table_of,
    nibble_pair_values,
    split_even_odd_columns,
    split_k_bounds,
    store_output_tile,
    store_weight_pairs,
    tile_coordinates,
    upcast_dot,
    x_pairs_f32,
    zeros_f32,
)
from .launch import WeightOnlyLauncher
from ..schemes.nf4 import DOUBLE_QUANT_BLOCK, NF4_LEVELS  # the scheme's table and sizes: one definition

ABSMAX_CODES_PER_SCALE = tl.constexpr(DOUBLE_QUANT_BLOCK)  # as the kernels read it


# ------------------------------------------------------------------------------ kernel


@triton.jit
def load_absmax(absmax_ptr, absmax_scale_ptr, absmax_offset, flat_block, mask, DOUBLE_QUANT: tl.constexpr):
    """The float32 absmax of NF4 blocks ``flat_block`` (row-major block index, any shape):
    loaded, or DOUBLE_QUANT decoded from its uint8 code, code * absmax_scale[flat // 256] +
    absmax_offset (impl/schemes/nf4.py's double quantization)."""
    if DOUBLE_QUANT:
        code = tl.load(absmax_ptr + flat_block, mask=mask, other=0)
        code_scale = tl.load(absmax_scale_ptr + flat_block // ABSMAX_CODES_PER_SCALE, mask=mask, other=0.0)
        absmax = code.to(tl.float32) * code_scale + absmax_offset
    else:  # one return: Triton type-checks every return of a function, constexpr branches too
        absmax = tl.load(absmax_ptr + flat_block, mask=mask, other=0.0)
    return absmax


@triton.jit
def woq_mm_nf4_kernel(
    # pointers (absmax_ptr: float32 absmax, or uint8 codes when DOUBLE_QUANT; DECODE "prmt"
    # reads levels_ptr, the 16 float32 levels, "table" pair_table_ptr)
    x_ptr, qweight_ptr, absmax_ptr, absmax_scale_ptr, absmax_offset_ptr, pair_table_ptr, levels_ptr,
    out_ptr, partial_ptr, tile_counter_ptr,
    # sizes (blocks_per_row = K_pad // BLOCK_SIZE)
    M, N, K, blocks_per_row,
    # strides
    stride_xm, stride_xk, stride_qn, stride_qk, stride_om, stride_on,
    # meta-parameters
    BLOCK_SIZE: tl.constexpr, DOUBLE_QUANT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr, SCALE_AFTER_DOT: tl.constexpr, SWAP_AB: tl.constexpr,
    DECODE: tl.constexpr, UPCAST_DOT: tl.constexpr, EVEN_STEPS: tl.constexpr,
):
    """x (M, K) fp16/bf16, qweight (N, K_pad // 2) uint8, absmax (N, K_pad // B) -> out (M, N)
    in x's dtype. BLOCK_K divides BLOCK_SIZE, or is a multiple of it without SCALE_AFTER_DOT
    (see woq_mm_int4's docstring). SWAP_AB: see woq_mm_int8_kernel."""
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    HALF_K: tl.constexpr = BLOCK_K // 2
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m, pid_n = tile_coordinates(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    k_begin, k_end = split_k_bounds(pid_k, K, BLOCK_K, SPLIT_K)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_j = tl.arange(0, HALF_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_begin + offs_k)[None, :] * stride_xk
    q_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + (k_begin // 2 + offs_j)[None, :] * stride_qk
    if DOUBLE_QUANT:
        absmax_offset = tl.load(absmax_offset_ptr)
    else:
        absmax_offset = 0.0
    if DECODE == "prmt":
        lut = load_nibble_lut(levels_ptr, DTYPE)

    if BLOCK_K > BLOCK_SIZE:  # several blocks a step (scale before the dot only)
        BLOCKS: tl.constexpr = BLOCK_K // BLOCK_SIZE
        offs_b = tl.arange(0, BLOCKS)

    if SWAP_AB:
        acc = zeros_f32(BLOCK_N, BLOCK_M)
    else:
        acc = zeros_f32(BLOCK_M, BLOCK_N)
    for k in range(k_begin, k_end, BLOCK_K):
        x = tl.load(x_ptrs, mask=mask_m[:, None] & ((k + offs_k) < K)[None, :], other=0.0)
        if BLOCK_K > BLOCK_SIZE:
            if EVEN_STEPS:  # K_pad a whole number of steps: no mask along K (masks cost ~2x registers)
                packed = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            else:  # bytes past K_pad masked to zero
                packed = tl.load(q_ptrs, mask=mask_n[:, None] & ((k + 2 * offs_j) < K)[None, :], other=0)
            block = k // BLOCK_SIZE + offs_b
            flat_block = offs_n[:, None] * blocks_per_row + block[None, :]
            if EVEN_STEPS:
                block_mask = mask_n[:, None]
            else:
                block_mask = mask_n[:, None] & (block < blocks_per_row)[None, :]
        else:
            packed = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            flat_block = offs_n * blocks_per_row + k // BLOCK_SIZE
            block_mask = mask_n
        absmax = load_absmax(absmax_ptr, absmax_scale_ptr, absmax_offset, flat_block, block_mask, DOUBLE_QUANT)
        if DECODE == "prmt":
            low, high = lookup_nibbles_prmt(packed, lut, DTYPE)
        else:
            low, high = lookup_nibble_pairs(packed, pair_table_ptr, DTYPE)
        x_even, x_odd = split_even_odd_columns(x, BLOCK_M, BLOCK_K)
        if SCALE_AFTER_DOT:
            if SWAP_AB:
                part = mma(low, tl.trans(x_even), zeros_f32(BLOCK_N, BLOCK_M), UPCAST_DOT)
                part = mma(high, tl.trans(x_odd), part, UPCAST_DOT)
                acc += part * absmax[:, None]
            else:
                part = mma(x_even, tl.trans(low), zeros_f32(BLOCK_M, BLOCK_N), UPCAST_DOT)
                part = mma(x_odd, tl.trans(high), part, UPCAST_DOT)
                acc += part * absmax[None, :]
        else:
            if BLOCK_K > BLOCK_SIZE:  # (BLOCK_N, BLOCKS) -> (BLOCK_N, BLOCK_K // 2)
                absmax = group_columns(absmax, BLOCK_N, BLOCKS, BLOCK_SIZE // 2)
            else:  # (BLOCK_N,) -> (BLOCK_N, 1)
                absmax = absmax[:, None]
            if UPCAST_DOT:  # interpreter: its bfloat16 arithmetic is wrong, float32 is exact
                w_low = (low.to(tl.float32) * absmax).to(DTYPE)
                w_high = (high.to(tl.float32) * absmax).to(DTYPE)
            else:  # one packed multiply per pair of weights
                absmax_h = absmax.to(DTYPE)
                w_low = low * absmax_h
                w_high = high * absmax_h
            if SWAP_AB:
                acc = mma(w_low, tl.trans(x_even), acc, UPCAST_DOT)
                acc = mma(w_high, tl.trans(x_odd), acc, UPCAST_DOT)
            else:
                acc = mma(x_even, tl.trans(w_low), acc, UPCAST_DOT)
                acc = mma(x_odd, tl.trans(w_high), acc, UPCAST_DOT)
        x_ptrs += BLOCK_K * stride_xk
        q_ptrs += HALF_K * stride_qk

    if SWAP_AB:
        acc = tl.trans(acc)
    store_output_tile(acc, out_ptr, partial_ptr, tile_counter_ptr, offs_m, offs_n, M, N,
                      stride_om, stride_on, pid, pid_k, SPLIT_K)


@triton.jit
def woq_mm_nf4_gemv_kernel(
    # pointers (absmax_ptr: float32 absmax, or uint8 codes when DOUBLE_QUANT; DECODE "prmt"
    # reads levels_ptr, the 16 float32 levels, "table" pair_table_ptr)
    x_ptr, qweight_ptr, absmax_ptr, absmax_scale_ptr, absmax_offset_ptr, pair_table_ptr, levels_ptr,
    out_ptr, partial_ptr, tile_counter_ptr,
    # sizes (blocks_per_row = K_pad // BLOCK_SIZE)
    M, N, K, blocks_per_row,
    # strides (x: stride_xm only, see gemv_activation)
    stride_xm, stride_qn, stride_qk, stride_om, stride_on,
    # meta-parameters
    BLOCK_SIZE: tl.constexpr, DOUBLE_QUANT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    DECODE: tl.constexpr, EVEN_STEPS: tl.constexpr, EVEN_K: tl.constexpr,
):
    """A few x rows (BLOCK_M in GEMV_ROWS) on the CUDA cores: x (M, K) fp16/bf16 (see
    gemv_activation) -> out (M, N), as woq_mm_int4_gemv_kernel (a step's bytes in one load,
    decoded once for all BLOCK_M rows, sums per block from a reshape): each thread's levels,
    looked up as 16-bit floats of x's dtype, become float32 and multiply-add with each x row
    along its own bytes; each row sum takes its block's absmax once."""
    SUB_K: tl.constexpr = BLOCK_K if BLOCK_K < BLOCK_SIZE else BLOCK_SIZE
    SUBS: tl.constexpr = BLOCK_K // SUB_K
    HALF_SUB: tl.constexpr = SUB_K // 2
    HALF_K: tl.constexpr = BLOCK_K // 2
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    tile_id, pid_k, first_row, offs_n, k_begin, k_end = gemv_tile(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K)
    offs_j = tl.arange(0, HALF_K)
    offs_b = tl.arange(0, SUBS)
    mask_n = offs_n < N
    q_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + (k_begin // 2 + offs_j)[None, :] * stride_qk
    x_pairs_ptr = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    stride_x_pairs = stride_xm // 2
    if DOUBLE_QUANT:
        absmax_offset = tl.load(absmax_offset_ptr)
    else:
        absmax_offset = 0.0
    if DECODE == "prmt":
        lut = load_nibble_lut(levels_ptr, DTYPE)

    acc = zeros_f32(BLOCK_N, BLOCK_M)  # one column per x row
    for k in range(k_begin, k_end, BLOCK_K):
        block = k // BLOCK_SIZE + offs_b
        if EVEN_STEPS:
            packed = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            block_mask = mask_n[:, None]
        else:
            packed = tl.load(q_ptrs, mask=mask_n[:, None] & ((k + 2 * offs_j) < K)[None, :], other=0)
            block_mask = mask_n[:, None] & (block < blocks_per_row)[None, :]
        absmax = load_absmax(absmax_ptr, absmax_scale_ptr, absmax_offset, offs_n[:, None] * blocks_per_row + block[None, :],
                             block_mask, DOUBLE_QUANT)
        if DECODE == "prmt":
            low, high = lookup_nibbles_prmt(packed, lut, DTYPE)
        else:
            low, high = lookup_nibble_pairs(packed, pair_table_ptr, DTYPE)
        low = low.to(tl.float32)
        high = high.to(tl.float32)
        for r in tl.static_range(BLOCK_M):
            row_pairs = x_pairs_ptr + gemv_row(first_row, r, M) * stride_x_pairs
            x_even, x_odd = x_pairs_f32(row_pairs, k, offs_j, K, EVEN_K, DTYPE)
            sums = group_dots(low, high, x_even, x_odd, BLOCK_N, SUBS, HALF_SUB)
            acc = add_to_column(acc, tl.reduce(sums * absmax, 1, _add), r)
        q_ptrs += HALF_K * stride_qk

    store_output_tile(tl.trans(acc), out_ptr, partial_ptr, tile_counter_ptr, first_row + tl.arange(0, BLOCK_M),
                      offs_n, M, N, stride_om, stride_on, tile_id, pid_k, SPLIT_K)


@triton.jit
def dequantize_nf4_kernel(
    # absmax_ptr: float32 absmax, or uint8 codes when DOUBLE_QUANT
    qweight_ptr, absmax_ptr, absmax_scale_ptr, absmax_offset_ptr, pair_table_ptr, w_ptr,
    N, half_k_pad, blocks_per_row, stride_qn, stride_wn,
    BLOCK_SIZE: tl.constexpr, DOUBLE_QUANT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The dequantize_first route's decode: W (N, K_pad) in w's dtype = level * absmax, the
    level from the 16-bit pair table (as the fused kernels see it), the product in float32,
    rounded once. Program (i, j) writes rows i * BLOCK_N.., columns j * BLOCK_K.. (a whole
    number of blocks, or part of one); qweight and absmax row-major."""
    DTYPE: tl.constexpr = w_ptr.dtype.element_ty
    offs_n, offs_j, mask_n, packed = load_packed_tile(qweight_ptr, N, half_k_pad, stride_qn, BLOCK_N, BLOCK_K)
    if DOUBLE_QUANT:
        absmax_offset = tl.load(absmax_offset_ptr)
    else:
        absmax_offset = 0.0
    if BLOCK_K > BLOCK_SIZE:  # (BLOCK_N, BLOCKS) absmax, each over its block's byte columns
        BLOCKS: tl.constexpr = BLOCK_K // BLOCK_SIZE
        block = tl.program_id(1) * BLOCKS + tl.arange(0, BLOCKS)
        flat_block = offs_n[:, None] * blocks_per_row + block[None, :]
        block_mask = mask_n[:, None] & (block < blocks_per_row)[None, :]
        absmax = load_absmax(absmax_ptr, absmax_scale_ptr, absmax_offset, flat_block, block_mask, DOUBLE_QUANT)
        absmax = group_columns(absmax, BLOCK_N, BLOCKS, BLOCK_SIZE // 2)
    else:  # one block: (BLOCK_N, 1)
        flat_block = offs_n * blocks_per_row + (tl.program_id(1) * BLOCK_K) // BLOCK_SIZE
        absmax = load_absmax(absmax_ptr, absmax_scale_ptr, absmax_offset, flat_block, mask_n, DOUBLE_QUANT)[:, None]
    low, high = lookup_nibble_pairs(packed, pair_table_ptr, DTYPE)
    store_weight_pairs(w_ptr, low.to(tl.float32) * absmax, high.to(tl.float32) * absmax, offs_n, offs_j, N,
                       half_k_pad, stride_wn)


# ---------------------------------------------------------------------------- launcher


def decode_of(config: KernelConfig) -> str:
    """Which table a launch with ``config`` reads: "prmt" reads the levels only, "table"
    pair_table only (the dequantize kernel gathers; the interpreter cannot run inline PTX)."""
    return "table" if config.dequantize_first or interpreter_active() else config.decode


def absmax_pointers(operands: tuple) -> tuple:
    """(absmax, absmax_scale, absmax_offset, DOUBLE_QUANT) of the operands; without double
    quantization the kernel reads neither of the last two, and any float32 pointer will do."""
    _, absmax, _, absmax_scale, absmax_offset = operands
    if absmax_scale is None:
        return absmax, absmax, absmax, False
    return absmax, absmax_scale, absmax_offset, True


class NF4Launcher(WeightOnlyLauncher):
    """The NF4 kernels' launch (launch.WeightOnlyLauncher); ints = (block_size,), operands =
    (qweight, absmax, levels, absmax_scale, absmax_offset): absmax_scale and absmax_offset None
    unless absmax holds double-quantized codes. tables = (pair_table, levels): pair_table
    (nibble_pair_table) or levels ((16,) float32, the kernel's PRMT table is built from them)
    decode nibbles, by decode_of(config); the other one goes unread."""

    short = "nf4"
    main_kernel = woq_mm_nf4_kernel
    gemv_kernel = woq_mm_nf4_gemv_kernel
    dequantize_kernel = dequantize_nf4_kernel
    fallback_tiles = (
        (16, KernelConfig(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=5)),
        (32, KernelConfig(block_m=32, block_n=64, block_k=64, num_warps=4, num_stages=5)),
        (64, KernelConfig(block_m=64, block_n=128, block_k=64, num_warps=4, num_stages=4, scale_after_dot=False)),
        (None, KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3, scale_after_dot=False)),
    )
    padded_k = True
    block_name, scale_name = "blocks", "absmax"

    def check_config(self, config):
        if config.decode not in ("prmt", "table"):
            raise ValueError(f"{self.op}: config.decode {config.decode!r} is not one of 'prmt', 'table'")

    def main_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config):
        (M, K), qweight, (pair_table, levels), (block_size,) = x.shape, operands[0], tables, ints
        absmax, absmax_scale, absmax_offset, double_quant = absmax_pointers(operands)
        return (x, qweight, absmax, absmax_scale, absmax_offset, pair_table, levels, out, partial, tile_counter,
                M, qweight.shape[0], K, absmax.shape[1],
                *x.stride(), *qweight.stride(), *out.stride()), dict(  # one call a tensor: host time
            BLOCK_SIZE=block_size, DOUBLE_QUANT=double_quant,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            SPLIT_K=config.split_k, GROUP_M=config.group_m, SCALE_AFTER_DOT=config.scale_after_dot,
            SWAP_AB=config.swap_ab, DECODE=decode_of(config), UPCAST_DOT=upcast_dot(x.dtype),
            EVEN_STEPS=(2 * qweight.shape[1]) % config.block_k == 0,  # K_pad a whole number of steps
        )

    def gemv_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config):
        (M, K), qweight, (pair_table, levels), (block_size,) = x.shape, operands[0], tables, ints
        absmax, absmax_scale, absmax_offset, double_quant = absmax_pointers(operands)
        return (x, qweight, absmax, absmax_scale, absmax_offset, pair_table, levels, out, partial, tile_counter,
                M, qweight.shape[0], K, absmax.shape[1], x.stride(0), *qweight.stride(), *out.stride()), dict(
            BLOCK_SIZE=block_size, DOUBLE_QUANT=double_quant,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, SPLIT_K=config.split_k,
            DECODE=decode_of(config), EVEN_STEPS=(2 * qweight.shape[1]) % config.block_k == 0,
            EVEN_K=K % config.block_k == 0,
        )

    def dequantize_arguments(self, operands, tables, weight, ints, config):
        qweight, (pair_table, _), (block_size,) = operands[0], tables, ints
        absmax, absmax_scale, absmax_offset, double_quant = absmax_pointers(operands)
        N, K_pad = weight.shape
        return (qweight, absmax, absmax_scale, absmax_offset, pair_table, weight, N, K_pad // 2, absmax.shape[1],
                qweight.stride(0), weight.stride(0)), dict(
            BLOCK_SIZE=block_size, DOUBLE_QUANT=double_quant, BLOCK_N=config.block_n, BLOCK_K=config.block_k)

    def eager_tables(self, x):
        """The standard levels' tables: the eager launcher decodes NF4_LEVELS, whatever levels
        operand it is handed (the max-autotune contest times it; its cost does not depend on
        which 16 levels it decodes)."""
        return nibble_pair_table(NF4_LEVELS, x.dtype, x.device), levels_tensor(NF4_LEVELS, x.device)

    def traced_tables(self, x, operands, config):
        """``levels`` (16,) float32: the levels operand, None for the standard NF4 table; the
        kernel reads the tensor itself (no host sync, CUDA-graph safe, no table kernel a call).
        The PRMT route builds its table from the levels inside the kernel: nothing runs before
        the launch. Only the "table" route needs a table built, and only that one is built."""
        levels = operands[2]
        standard = levels is None
        if standard:
            levels = _standard_nf4_levels(x)
        return levels if decode_of(config) == "prmt" else _nf4_pair_table(levels, standard, x), levels

    def split_arguments(self, arguments):
        """op_body's (qweight, absmax, block_size[, levels, absmax_scale, absmax_offset])."""
        qweight, absmax, block_size, *rest = arguments
        levels, absmax_scale, absmax_offset = (*rest, None, None, None)[:3]
        return (qweight, absmax, levels, absmax_scale, absmax_offset), (block_size,)

    def op_arguments(self, operands, ints):
        """The fused op's (qweight, absmax, levels, absmax_scale, absmax_offset) and (block_size,) as
        op_body takes them after x. A double-quantized absmax goes as codes: decoding it first would
        be a kernel of its own and four bytes a block read back instead of one."""
        qweight, absmax, levels, absmax_scale, absmax_offset = operands
        return (qweight, absmax, *ints, levels, absmax_scale, absmax_offset)


LAUNCHER = NF4Launcher()
choose_config = LAUNCHER.choose_config  # (M, N, K, block_size, device) -> KernelConfig


def woq_mm_nf4(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, block_size: int = 64,
               absmax_scale: torch.Tensor | None = None, absmax_offset: torch.Tensor | None = None,
               config: KernelConfig | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T in x's dtype, W decoded from the NF4 layout above (the
    standard NF4_LEVELS).

    ``config`` overrides the tile choice (tests and tuning). A call with the metadata of an
    earlier one replays that call's launch (launch.LaunchPlans)."""
    return LAUNCHER.eager(x, (qweight, absmax, None, absmax_scale, absmax_offset), (block_size,), config)


# --------------------------------------------------------------------------- reference


def decode_absmax_reference(absmax, absmax_scale=None, absmax_offset=None) -> torch.Tensor:
    """(N, K_pad // B) float64 absmax, decoding double-quantized codes when given."""
    if absmax_scale is None:
        return absmax.cpu().to(torch.float64)
    codes = absmax.cpu().to(torch.float64)
    flat = torch.arange(codes.numel()).reshape(codes.shape)
    code_scale = absmax_scale.cpu().to(torch.float64)[flat // DOUBLE_QUANT_BLOCK]
    return codes * code_scale + absmax_offset.cpu().to(torch.float64)


def dequantize_nf4_reference(qweight, absmax, block_size: int, K: int, absmax_scale=None,
                             absmax_offset=None) -> torch.Tensor:
    """W (N, K) float64 = NF4_LEVELS[u] * absmax[:, k // B], padding sliced off."""
    packed = qweight.cpu().to(torch.int64)
    u = torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float64)[u]
    scale = decode_absmax_reference(absmax, absmax_scale, absmax_offset).repeat_interleave(block_size, dim=1)
    return (levels * scale)[:, :K]


def woq_mm_nf4_reference(x, qweight, absmax, block_size: int = 64, absmax_scale=None,
                         absmax_offset=None) -> torch.Tensor:
    """y (M, N) float64 on the CPU."""
    W = dequantize_nf4_reference(qweight, absmax, block_size, x.shape[-1], absmax_scale, absmax_offset)
    return x.cpu().to(torch.float64) @ W.T


# --------------------------------------------------------------------------- as a triton_op (impl.kernels.ops)


def _standard_nf4_levels(x: torch.Tensor) -> torch.Tensor:
    """The standard NF4 levels, (16,) float32 on x's device: the device's cached copy when run
    eagerly (no host-to-device copy a call); traced, an in-graph constant."""
    if detect_fake_mode((x,)) is None:
        return levels_tensor(NF4_LEVELS, x.device)
    return torch.tensor(NF4_LEVELS, dtype=torch.float32, device=x.device)


def _nf4_pair_table(levels: torch.Tensor, standard: bool, x: torch.Tensor) -> torch.Tensor:
    """The pair table the "table" route gathers from (the interpreter, the prefill route's
    dequantize kernel) for the standard levels: the device's cached copy run eagerly, traced
    an in-graph constant; for a levels operand, built on the device (one small kernel a call
    once compiled)."""
    if not standard:
        return nibble_pair_table_of(levels, x.dtype)
    if detect_fake_mode((x,)) is None:
        return nibble_pair_table(NF4_LEVELS, x.dtype, x.device)
    return torch.tensor(nibble_pair_values(NF4_LEVELS, x.dtype), dtype=torch.int32, device=x.device)


def op_body(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, block_size: int,
            levels: Optional[torch.Tensor] = None, absmax_scale: Optional[torch.Tensor] = None,
            absmax_offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``torch.ops.impl.woq_mm_nf4_triton``: y (M, N) = x (M, K) @ W.T, W from the NF4 layout
    (woq_mm_nf4): absmax float32, or its uint8 codes with absmax_scale and absmax_offset (double
    quantization, decoded in the kernel); ``levels`` (16,) float32 the code table, None the
    standard one. The schema leaves out what only the lowering hands in (LAUNCHER.traced_body's
    keywords)."""
    return LAUNCHER.traced_body(x, qweight, absmax, block_size, levels, absmax_scale, absmax_offset)
