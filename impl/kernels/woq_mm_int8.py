"""int8 per-channel weight-only matmul: y (M, N) = x (M, K) @ (qweight * scale[:, None]).T.

Layout (impl/schemes/int8.py): qweight (N, K) int8 in [-127, 127], scale (N,) float32,
W[n, k] = qweight[n, k] * scale[n]. The integers are exact in float16 and bfloat16, so the
kernel feeds them to the tensor cores unscaled and applies scale[n] once per output column
in float32: the weight is never rounded.

Tutorial order: kernel, launcher, reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter_active
from .common import (
    KernelConfig,
    MAGIC_F32,
    _add,
    add_to_column,
    gemv_row,
    int8_to_dot_operand,
    magic_int8_f32,
    mma,
    split_k_bounds,
    store_output_tile,
    tile_coordinates,
    upcast_dot,
    zeros_f32,
)
from .launch import WeightOnlyLauncher


# ------------------------------------------------------------------------------ kernel


@triton.jit
def woq_mm_int8_kernel(
    # pointers
    x_ptr, qweight_ptr, scale_ptr, out_ptr, partial_ptr, tile_counter_ptr,
    # sizes
    M, N, K,
    # strides
    stride_xm, stride_xk, stride_qn, stride_qk, stride_om, stride_on,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr, SWAP_AB: tl.constexpr, EVEN_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr, GEMV: tl.constexpr, DECODE: tl.constexpr,
):
    """x (M, K) fp16/bf16, qweight (N, K) int8, scale (N,) fp32 -> out (M, N) in x's dtype.

    Program (tile, split) reduces K range [k_begin, k_end) of a (BLOCK_M, BLOCK_N) tile.
    SWAP_AB computes the transposed tile, W (BLOCK_N, BLOCK_K) @ x.T: the decoded weights are
    then the tensor cores' A operand, which Hopper's wgmma reads from registers (B must sit
    in shared memory, so the unswapped form stores each decoded tile there first).
    GEMV (BLOCK_M in GEMV_ROWS, decode sizes): multiply-adds on the CUDA cores instead of
    tensor cores, whose 16-row tile would be mostly padding; each int8 becomes float32 by the
    magic-number write of magic_int8_f32 (DECODE "prmt" in PTX, "bits" elementwise), once
    for all BLOCK_M rows."""
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m, pid_n = tile_coordinates(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    k_begin, k_end = split_k_bounds(pid_k, K, BLOCK_K, SPLIT_K)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # x tile (BLOCK_M, BLOCK_K) and weight tile (BLOCK_N, BLOCK_K), both K-contiguous.
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_begin + offs_k)[None, :] * stride_xk
    q_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + (k_begin + offs_k)[None, :] * stride_qk

    if GEMV:
        # A few x rows (BLOCK_M in GEMV_ROWS): no tensor cores. Each thread decodes its weights
        # once and multiply-adds them with every x row (a vector broadcast over the weight rows)
        # along K; the row sums are reduced across threads every step, one accumulator
        # column per x row.
        acc_t = zeros_f32(BLOCK_N, BLOCK_M)
        first_row = pid_m * BLOCK_M
        for k in range(k_begin, k_end, BLOCK_K):
            if EVEN_K:
                q = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            else:
                mask_k = (k + offs_k) < K
                q = tl.load(q_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0)
            w = magic_int8_f32(q, DECODE == "prmt") - (MAGIC_F32 + 128.0)  # exact q in float32
            for r in tl.static_range(BLOCK_M):
                x_row_ptrs = x_ptr + gemv_row(first_row, r, M) * stride_xm + (k + offs_k) * stride_xk
                if EVEN_K:
                    x = tl.load(x_row_ptrs)
                else:
                    x = tl.load(x_row_ptrs, mask=mask_k, other=0.0)
                acc_t = add_to_column(acc_t, tl.reduce(w * x.to(tl.float32)[None, :], 1, _add), r)
            q_ptrs += BLOCK_K * stride_qk
        acc = tl.trans(acc_t)
    else:
        if SWAP_AB:
            acc = zeros_f32(BLOCK_N, BLOCK_M)
        else:
            acc = zeros_f32(BLOCK_M, BLOCK_N)
        for k in range(k_begin, k_end, BLOCK_K):
            if EVEN_K:
                x = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
                q = tl.load(q_ptrs, mask=mask_n[:, None], other=0)
            else:
                mask_k = (k + offs_k) < K
                x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
                q = tl.load(q_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0)
            w = int8_to_dot_operand(q, DTYPE, UPCAST_DOT)
            if SWAP_AB:
                acc = mma(w, tl.trans(x), acc, UPCAST_DOT)
            else:
                acc = mma(x, tl.trans(w), acc, UPCAST_DOT)
            x_ptrs += BLOCK_K * stride_xk
            q_ptrs += BLOCK_K * stride_qk

    scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    if SWAP_AB and not GEMV:
        acc = tl.trans(acc * scale[:, None])
    else:
        acc = acc * scale[None, :]
    store_output_tile(acc, out_ptr, partial_ptr, tile_counter_ptr, offs_m, offs_n, M, N,
                      stride_om, stride_on, pid, pid_k, SPLIT_K)


@triton.jit
def dequantize_int8_kernel(
    qweight_ptr, scale_ptr, w_ptr, N, K, stride_qn, stride_qk, stride_wn, stride_wk,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The dequantize_first route's decode: W (N, K) in w's dtype = qweight * scale[:, None],
    computed in float32 and rounded once; program (i, j) writes one (BLOCK_N, BLOCK_K) tile."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    mask = mask_n[:, None] & (offs_k < K)[None, :]
    q = tl.load(qweight_ptr + offs_n[:, None] * stride_qn + offs_k[None, :] * stride_qk, mask=mask, other=0)
    scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    w = (q.to(tl.float32) * scale[:, None]).to(w_ptr.dtype.element_ty)
    tl.store(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, w, mask=mask)


# ---------------------------------------------------------------------------- launcher


class Int8Launcher(WeightOnlyLauncher):
    """The int8 kernel's launch (launch.WeightOnlyLauncher): GEMV configs run in the tile kernel."""

    short = "int8"
    main_kernel = woq_mm_int8_kernel
    dequantize_kernel = dequantize_int8_kernel
    fallback_tiles = (
        (16, KernelConfig(block_m=16, block_n=64, block_k=256, num_warps=4, num_stages=4)),
        (32, KernelConfig(block_m=32, block_n=64, block_k=256, num_warps=4, num_stages=4)),
        (64, KernelConfig(block_m=64, block_n=128, block_k=128, num_warps=4, num_stages=4)),
        (None, KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=4)),
    )

    def main_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config):
        (M, K), (qweight, scale) = x.shape, operands
        return (x, qweight, scale, out, partial, tile_counter, M, qweight.shape[0], K,
                *x.stride(), *qweight.stride(), *out.stride()), dict(  # one call a tensor: host time
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            SPLIT_K=config.split_k, GROUP_M=config.group_m, SWAP_AB=config.swap_ab, EVEN_K=K % config.block_k == 0,
            UPCAST_DOT=upcast_dot(x.dtype), GEMV=config.gemv,
            # the GEMV's int8 decode; the interpreter cannot run inline PTX
            DECODE="bits" if interpreter_active() else "prmt",
        )

    def dequantize_arguments(self, operands, tables, weight, ints, config):
        qweight, scale = operands
        N, K = weight.shape
        return (qweight, scale, weight, N, K, *qweight.stride(), *weight.stride()), dict(
            BLOCK_N=config.block_n, BLOCK_K=config.block_k)


LAUNCHER = Int8Launcher()
choose_config = LAUNCHER.choose_config  # (M, N, K, device) -> KernelConfig


def woq_mm_int8(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                config: KernelConfig | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ (qweight (N, K) int8 * scale (N,) fp32 [:, None]).T in x's dtype.

    ``config`` overrides the tile choice (tests and tuning). A call with the metadata of an
    earlier one replays that call's launch (launch.LaunchPlans)."""
    return LAUNCHER.eager(x, (qweight, scale), (), config)


# --------------------------------------------------------------------------- reference


def dequantize_int8_reference(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """W (N, K) float64 = qweight * scale[:, None], on the CPU."""
    return qweight.cpu().to(torch.float64) * scale.cpu().to(torch.float64)[:, None]


def woq_mm_int8_reference(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """y (M, N) float64 on the CPU: the exact product the kernel approximates."""
    return x.cpu().to(torch.float64) @ dequantize_int8_reference(qweight, scale).T


# --------------------------------------------------------------------------- as a triton_op (impl.kernels.ops)


def op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``torch.ops.impl.woq_mm_int8_triton``: the schema leaves out what only the lowering hands in
    (LAUNCHER.traced_body's keywords)."""
    return LAUNCHER.traced_body(x, qweight, scale)
