"""int4 group-wise weight-only matmul: y (M, N) = x (M, K) @ W.T.

Layout (impl/schemes/int4.py), group size G in {32, 64, 128}, K_pad = K rounded up to G:
qweight (N, K_pad // 2) uint8, byte j of row n holds k = 2j in its low nibble and k = 2j + 1
in its high nibble, u in [0, 15]; scale and zero (N, K_pad // G) float32, zero holding
integers in [0, 15]. W[n, k] = (u[n, k] - zero[n, k // G]) * scale[n, k // G] for k < K.

The kernel never interleaves nibbles: the low nibbles of a (BLOCK_K // 2, BLOCK_N) byte tile
meet x's even columns and the high nibbles its odd columns, two dots per K step.
With scale_after_dot each step's nibble product is scaled once per (row, column) in
float32, (x . u - (zero + bias) * sum(x)) * scale, which keeps the weights exact; that
needs one group per row and step, so BLOCK_K divides G. Without it, each nibble is scaled
to a float16/bfloat16 weight before the dot (cheaper for tall M), and BLOCK_K may span
several groups: each row then reads BLOCK_K // 2 contiguous bytes a step instead of at most
G // 2, and HBM serves wide row segments faster than narrow ones (benchmarks/woq_h200.md, "Weight rows read in narrow segments").

Tutorial order: kernel, launcher, reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch._guards import detect_fake_mode

from . import interpreter_active
from .common import (
    KernelConfig,
    _add,
    add_to_column,
    biased_nibbles,
    biased_nibbles_prmt,
    cdiv,
    gemv_row,
    gemv_tile,
    group_columns,
    group_dots,
    half_nibbles_f32,
    half_nibbles_f32_prmt,
    load_packed_tile,
    lookup_nibble_pairs,
    mma,
    nibble_bias,
    nibble_pair_table,
    nibble_pair_table_of,
    row_sums,
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

INT4_LEVELS = tuple(float(u) for u in range(16))


# ------------------------------------------------------------------------------ kernel


@triton.jit
def woq_mm_int4_kernel(
    # pointers
    x_ptr, qweight_ptr, scale_ptr, zero_ptr, pair_table_ptr, out_ptr, partial_ptr, tile_counter_ptr,
    # sizes
    M, N, K,
    # strides (scale and zero share theirs)
    stride_xm, stride_xk, stride_qn, stride_qk, stride_sn, stride_sg, stride_om, stride_on,
    # meta-parameters
    GROUP_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr, SCALE_AFTER_DOT: tl.constexpr, SWAP_AB: tl.constexpr,
    DECODE: tl.constexpr, UPCAST_DOT: tl.constexpr, EVEN_STEPS: tl.constexpr,
):
    """x (M, K) fp16/bf16, qweight (N, K_pad // 2) uint8, scale/zero (N, K_pad // G) fp32
    -> out (M, N) in x's dtype. BLOCK_K divides GROUP_SIZE, or is a multiple of it without
    SCALE_AFTER_DOT. SWAP_AB: see woq_mm_int8_kernel."""
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
    # Byte tile (BLOCK_N, BLOCK_K // 2), bytes contiguous along K. No K mask while BLOCK_K
    # divides G: K_pad is a whole number of steps and the padding bytes meet zeroed activations.
    q_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + (k_begin // 2 + offs_j)[None, :] * stride_qk
    s_ptrs = scale_ptr + offs_n * stride_sn
    z_ptrs = zero_ptr + offs_n * stride_sn
    if DECODE == "table":
        bias = 0.0
    else:
        bias = nibble_bias(DTYPE)

    if BLOCK_K > GROUP_SIZE:  # several groups a step (scale before the dot only)
        GROUPS: tl.constexpr = BLOCK_K // GROUP_SIZE
        offs_g = tl.arange(0, GROUPS)
        groups_per_row = cdiv(K, GROUP_SIZE)

    if SWAP_AB:
        acc = zeros_f32(BLOCK_N, BLOCK_M)
    else:
        acc = zeros_f32(BLOCK_M, BLOCK_N)
    for k in range(k_begin, k_end, BLOCK_K):
        x = tl.load(x_ptrs, mask=mask_m[:, None] & ((k + offs_k) < K)[None, :], other=0.0)
        group = k // GROUP_SIZE
        if BLOCK_K > GROUP_SIZE:
            if EVEN_STEPS:  # K_pad a whole number of steps: no mask along K (masks cost ~2x registers)
                packed = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            else:  # bytes past K_pad masked to zero
                packed = tl.load(q_ptrs, mask=mask_n[:, None] & ((k + 2 * offs_j) < K)[None, :], other=0)
            g_ptrs = offs_n[:, None] * stride_sn + (group + offs_g)[None, :] * stride_sg
            if EVEN_STEPS:
                g_mask = mask_n[:, None]
            else:
                g_mask = mask_n[:, None] & ((group + offs_g) < groups_per_row)[None, :]
            scale = group_columns(tl.load(scale_ptr + g_ptrs, mask=g_mask, other=0.0), BLOCK_N, GROUPS, GROUP_SIZE // 2)
            zero = group_columns(tl.load(zero_ptr + g_ptrs, mask=g_mask, other=0.0) + bias, BLOCK_N, GROUPS,
                                 GROUP_SIZE // 2)
        else:
            packed = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            scale = tl.load(s_ptrs + group * stride_sg, mask=mask_n, other=0.0)
            zero = tl.load(z_ptrs + group * stride_sg, mask=mask_n, other=0.0) + bias
        if DECODE == "table":
            low, high = lookup_nibble_pairs(packed, pair_table_ptr, DTYPE)
        elif DECODE == "prmt":
            low, high = biased_nibbles_prmt(packed, DTYPE)
        else:
            low, high = biased_nibbles(packed, DTYPE)
        x_even, x_odd = split_even_odd_columns(x, BLOCK_M, BLOCK_K)
        if SCALE_AFTER_DOT:
            x_sum = row_sums(x)
            if SWAP_AB:
                part = mma(low, tl.trans(x_even), zeros_f32(BLOCK_N, BLOCK_M), UPCAST_DOT)
                part = mma(high, tl.trans(x_odd), part, UPCAST_DOT)
                acc += (part - zero[:, None] * x_sum[None, :]) * scale[:, None]
            else:
                part = mma(x_even, tl.trans(low), zeros_f32(BLOCK_M, BLOCK_N), UPCAST_DOT)
                part = mma(x_odd, tl.trans(high), part, UPCAST_DOT)
                acc += (part - x_sum[:, None] * zero[None, :]) * scale[None, :]
        else:
            if BLOCK_K <= GROUP_SIZE:  # one group a step: (BLOCK_N,) -> (BLOCK_N, 1)
                scale = scale[:, None]
                zero = zero[:, None]
            if UPCAST_DOT:  # interpreter: its bfloat16 arithmetic is wrong, float32 is exact
                w_low = ((low.to(tl.float32) - zero) * scale).to(DTYPE)
                w_high = ((high.to(tl.float32) - zero) * scale).to(DTYPE)
            else:
                # (biased nibble - biased zero) is an integer in [-15, 15], exact in DTYPE; one
                # packed subtract and one packed multiply per pair of weights.
                zero_h = zero.to(DTYPE)
                scale_h = scale.to(DTYPE)
                w_low = (low - zero_h) * scale_h
                w_high = (high - zero_h) * scale_h
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
def woq_mm_int4_gemv_kernel(
    # pointers
    x_ptr, qweight_ptr, scale_ptr, zero_ptr, out_ptr, partial_ptr, tile_counter_ptr,
    # sizes
    M, N, K,
    # strides (scale and zero share theirs; x: stride_xm only, see gemv_activation)
    stride_xm, stride_qn, stride_qk, stride_sn, stride_sg, stride_om, stride_on,
    # meta-parameters
    GROUP_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, DECODE: tl.constexpr, EVEN_STEPS: tl.constexpr, EVEN_K: tl.constexpr,
):
    """A few x rows (BLOCK_M in GEMV_ROWS) on the CUDA cores: x (M, K) fp16/bf16 (see
    gemv_activation) -> out (M, N). Program (tile, split) reduces [k_begin, k_end) for
    BLOCK_M rows and BLOCK_N columns.

    No tensor cores: a 16-row tile would be mostly padding at decode sizes, and its operand
    layout costs a shuffle of every decoded weight through shared memory. A K step reads its
    (BLOCK_N, BLOCK_K // 2) bytes in one load, so each weight row comes in BLOCK_K // 2
    contiguous bytes (HBM serves wide row segments faster, benchmarks/woq_h200.md;
    loading one group at a time measured 63.7 against 47.4 µs on the H200), and sums per
    group come from a reshape of the step. Each nibble becomes v = 1/2 + u/256
    (half_nibbles_f32, exact), decoded once for all BLOCK_M rows, and
    sum (u - zero) x = 256 sum v x - (128 + zero) sum x: one FFMA a weight and row besides
    the decode, the zero point and scale applied once per row, column and group.
    EVEN_STEPS: K_pad a whole number of steps (no masks along K; K % BLOCK_K == 0 implies it);
    EVEN_K: K too (x's loads unmasked)."""
    SUB_K: tl.constexpr = BLOCK_K if BLOCK_K < GROUP_SIZE else GROUP_SIZE
    SUBS: tl.constexpr = BLOCK_K // SUB_K
    HALF_SUB: tl.constexpr = SUB_K // 2
    HALF_K: tl.constexpr = BLOCK_K // 2
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    tile_id, pid_k, first_row, offs_n, k_begin, k_end = gemv_tile(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K)
    offs_j = tl.arange(0, HALF_K)
    offs_g = tl.arange(0, SUBS)
    mask_n = offs_n < N
    q_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + (k_begin // 2 + offs_j)[None, :] * stride_qk
    g_ptrs = offs_n[:, None] * stride_sn + offs_g[None, :] * stride_sg
    x_pairs_ptr = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    stride_x_pairs = stride_xm // 2
    groups_per_row = cdiv(K, GROUP_SIZE)

    acc = zeros_f32(BLOCK_N, BLOCK_M)  # one column per x row
    for k in range(k_begin, k_end, BLOCK_K):
        group = k // GROUP_SIZE
        if EVEN_STEPS:
            packed = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            g_mask = mask_n[:, None]
        else:
            packed = tl.load(q_ptrs, mask=mask_n[:, None] & ((k + 2 * offs_j) < K)[None, :], other=0)
            g_mask = mask_n[:, None] & ((group + offs_g) < groups_per_row)[None, :]
        scale = tl.load(scale_ptr + g_ptrs + group * stride_sg, mask=g_mask, other=0.0)
        zero = tl.load(zero_ptr + g_ptrs + group * stride_sg, mask=g_mask, other=0.0)
        if DECODE == "prmt":
            low, high = half_nibbles_f32_prmt(packed)
        else:
            low, high = half_nibbles_f32(packed)
        for r in tl.static_range(BLOCK_M):
            row_pairs = x_pairs_ptr + gemv_row(first_row, r, M) * stride_x_pairs
            x_even, x_odd = x_pairs_f32(row_pairs, k, offs_j, K, EVEN_K, DTYPE)
            vx = group_dots(low, high, x_even, x_odd, BLOCK_N, SUBS, HALF_SUB)
            x_sum = tl.reduce(tl.reshape(x_even + x_odd, (SUBS, HALF_SUB)), 1, _add)
            acc = add_to_column(acc, tl.reduce((256.0 * vx - (128.0 + zero) * x_sum[None, :]) * scale, 1, _add), r)
        q_ptrs += HALF_K * stride_qk

    store_output_tile(tl.trans(acc), out_ptr, partial_ptr, tile_counter_ptr, first_row + tl.arange(0, BLOCK_M),
                      offs_n, M, N, stride_om, stride_on, tile_id, pid_k, SPLIT_K)


@triton.jit
def dequantize_int4_kernel(
    qweight_ptr, scale_ptr, zero_ptr, w_ptr, N, half_k_pad, groups_per_row, stride_qn, stride_sn, stride_wn,
    GROUP_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The dequantize_first route's decode: W (N, K_pad) in w's dtype = (u - zero) * scale,
    in float32, rounded once. Program (i, j) writes rows i * BLOCK_N.., columns j * BLOCK_K..
    (a whole number of groups, or part of one); qweight, scale and zero row-major."""
    offs_n, offs_j, mask_n, packed = load_packed_tile(qweight_ptr, N, half_k_pad, stride_qn, BLOCK_N, BLOCK_K)
    if BLOCK_K > GROUP_SIZE:  # (BLOCK_N, GROUPS) scales, each over its group's byte columns
        GROUPS: tl.constexpr = BLOCK_K // GROUP_SIZE
        group = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
        g_ptrs = offs_n[:, None] * stride_sn + group[None, :]
        g_mask = mask_n[:, None] & (group < groups_per_row)[None, :]
        scale = group_columns(tl.load(scale_ptr + g_ptrs, mask=g_mask, other=0.0), BLOCK_N, GROUPS, GROUP_SIZE // 2)
        zero = group_columns(tl.load(zero_ptr + g_ptrs, mask=g_mask, other=0.0), BLOCK_N, GROUPS, GROUP_SIZE // 2)
    else:  # one group: (BLOCK_N, 1)
        g_ptrs = offs_n * stride_sn + (tl.program_id(1) * BLOCK_K) // GROUP_SIZE
        scale = tl.load(scale_ptr + g_ptrs, mask=mask_n, other=0.0)[:, None]
        zero = tl.load(zero_ptr + g_ptrs, mask=mask_n, other=0.0)[:, None]
    low = ((packed & 0xF).to(tl.float32) - zero) * scale
    high = ((packed >> 4).to(tl.float32) - zero) * scale
    store_weight_pairs(w_ptr, low, high, offs_n, offs_j, N, half_k_pad, stride_wn)


# ---------------------------------------------------------------------------- launcher


class Int4Launcher(WeightOnlyLauncher):
    """The int4 kernels' launch (launch.WeightOnlyLauncher); ints = (group_size,), tables =
    (pair_table,): nibble_pair_table of INT4_LEVELS, what DECODE "table" reads."""

    short = "int4"
    main_kernel = woq_mm_int4_kernel
    gemv_kernel = woq_mm_int4_gemv_kernel
    dequantize_kernel = dequantize_int4_kernel
    fallback_tiles = (
        (16, KernelConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=4)),
        (32, KernelConfig(block_m=32, block_n=64, block_k=128, num_warps=4, num_stages=4)),
        (64, KernelConfig(block_m=64, block_n=128, block_k=64, num_warps=4, num_stages=4, scale_after_dot=False)),
        (None, KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3, scale_after_dot=False)),
    )
    padded_k = True

    def check_config(self, config):
        if config.gemv and config.decode == "table":
            raise ValueError(f"{self.op}: a GEMV config (block_m {config.block_m}) decodes with 'prmt' or 'bits', "
                             "not 'table'")

    @staticmethod
    def decode(config: KernelConfig) -> str:
        """The interpreter cannot run inline PTX; "bits" computes the same values elementwise."""
        return "bits" if config.decode == "prmt" and interpreter_active() else config.decode

    def main_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config):
        (M, K), (qweight, scale, zero), (pair_table,), (group_size,) = x.shape, operands, tables, ints
        return (x, qweight, scale, zero, pair_table, out, partial, tile_counter,
                M, qweight.shape[0], K,
                *x.stride(), *qweight.stride(), *scale.stride(), *out.stride()), dict(  # one call a tensor: host time
            GROUP_SIZE=group_size,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            SPLIT_K=config.split_k, GROUP_M=config.group_m, SCALE_AFTER_DOT=config.scale_after_dot,
            SWAP_AB=config.swap_ab, DECODE=self.decode(config), UPCAST_DOT=upcast_dot(x.dtype),
            EVEN_STEPS=(2 * qweight.shape[1]) % config.block_k == 0,  # K_pad a whole number of steps
        )

    def gemv_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config):
        (M, K), (qweight, scale, zero), (group_size,) = x.shape, operands, ints
        return (x, qweight, scale, zero, out, partial, tile_counter, M, qweight.shape[0], K,
                x.stride(0), *qweight.stride(), *scale.stride(), *out.stride()), dict(
            GROUP_SIZE=group_size, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            SPLIT_K=config.split_k, DECODE=self.decode(config), EVEN_STEPS=(2 * qweight.shape[1]) % config.block_k == 0,
            EVEN_K=K % config.block_k == 0,
        )

    def dequantize_arguments(self, operands, tables, weight, ints, config):
        (qweight, scale, zero), (group_size,) = operands, ints
        N, K_pad = weight.shape
        return (qweight, scale, zero, weight, N, K_pad // 2, scale.shape[1], qweight.stride(0), scale.stride(0),
                weight.stride(0)), dict(GROUP_SIZE=group_size, BLOCK_N=config.block_n, BLOCK_K=config.block_k)

    def eager_tables(self, x):
        return (nibble_pair_table(INT4_LEVELS, x.dtype, x.device),)

    def traced_tables(self, x, operands, config, pair_table=None):
        """The decode table: the given one (the CUDA lowering's graph constant), else pair_table_of."""
        return (pair_table_of(x) if pair_table is None else pair_table,)

    def fixed_tables(self, dtype, device):
        """The decode table by traced_body's keyword, as the lowering makes it a graph constant."""
        return {"pair_table": nibble_pair_table(INT4_LEVELS, dtype, device)}


LAUNCHER = Int4Launcher()
choose_config = LAUNCHER.choose_config  # (M, N, K, group_size, device) -> KernelConfig


def woq_mm_int4(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                group_size: int, config: KernelConfig | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T in x's dtype, W decoded from the int4 layout above.

    ``config`` overrides the tile choice (tests and tuning). A call with the metadata of an
    earlier one replays that call's launch (launch.LaunchPlans)."""
    return LAUNCHER.eager(x, (qweight, scale, zero), (group_size,), config)


# --------------------------------------------------------------------------- reference


def unpack_nibbles_reference(qweight: torch.Tensor) -> torch.Tensor:
    """(N, K_pad // 2) uint8 -> (N, K_pad) int64 nibbles, k = 2j low, k = 2j + 1 high."""
    packed = qweight.cpu().to(torch.int64)
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4_reference(qweight, scale, zero, group_size: int, K: int) -> torch.Tensor:
    """W (N, K) float64 = (u - zero[:, k // G]) * scale[:, k // G], padding sliced off."""
    u = unpack_nibbles_reference(qweight).to(torch.float64)
    expand = lambda t: t.cpu().to(torch.float64).repeat_interleave(group_size, dim=1)  # noqa: E731
    return ((u - expand(zero)) * expand(scale))[:, :K]


def woq_mm_int4_reference(x, qweight, scale, zero, group_size: int) -> torch.Tensor:
    """y (M, N) float64 on the CPU."""
    W = dequantize_int4_reference(qweight, scale, zero, group_size, x.shape[-1])
    return x.cpu().to(torch.float64) @ W.T


# --------------------------------------------------------------------------- as a triton_op (impl.kernels.ops)


def pair_table_of(x: torch.Tensor) -> torch.Tensor:
    """The int4 kernel's decode table (nibble_pair_table of the levels 0..15 in x's dtype).
    Run eagerly: the device's cached copy. Traced: built on the device from arange, one small
    kernel a call (a torch.tensor of Python ints would be a host-to-device copy a call, which
    a CUDA graph cannot capture); the CUDA lowering hands the body a graph constant instead."""
    if detect_fake_mode((x,)) is None:
        return nibble_pair_table(INT4_LEVELS, x.dtype, x.device)
    levels = torch.arange(len(INT4_LEVELS), dtype=torch.float32, device=x.device)
    return nibble_pair_table_of(levels, x.dtype)


def op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
            group_size: int) -> torch.Tensor:
    """``torch.ops.impl.woq_mm_int4_triton``: the schema leaves out what only the lowering hands in
    (LAUNCHER.traced_body's keywords: ``pair_table``, made by pair_table_of when not given)."""
    return LAUNCHER.traced_body(x, qweight, scale, zero, group_size)
