"""int8 per-channel weight-only matmul: y (M, N) = x (M, K) @ (qweight * scale[:, None]).T.

Layout (impl/schemes/int8.py): qweight (N, K) int8 in [-127, 127], scale (N,) float32,
W[n, k] = qweight[n, k] * scale[n]. The integers are exact in float16 and bfloat16, so the
kernel feeds them to the tensor cores unscaled and applies scale[n] once per output column
in float32: the weight is never rounded.

Tutorial order: kernel, launcher, reference.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import interpreter_active
from .common import (
    PREFILL_CONFIG,
    PREFILL_ROWS,
    KernelConfig,
    MAGIC_F32,
    SplitKScratch,
    _add,
    add_to_column,
    ceil_div,
    check_activation,
    check_device,
    check_tensor,
    choose_split_k,
    dense_gemm,
    dequantize_grid,
    gemv_row,
    grid_for,
    int8_to_dot_operand,
    magic_int8_f32,
    mma,
    sm_count,
    split_k_bounds,
    store_output_tile,
    tile_coordinates,
    tuned_config,
    upcast_dot,
    zeros_f32,
)
from .launch import CachedLauncher, LaunchPlans
from .common import traced_rows, traced_scratch  # op_body's (the triton_op's) launch

OP = "woq_mm_int8"


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

# The eager launcher's path to the kernel: Triton's binding once per specialization.
_CACHED_LAUNCHER = CachedLauncher(woq_mm_int8_kernel)
_CACHED_DEQUANTIZE_LAUNCHER = CachedLauncher(dequantize_int8_kernel)
_PLANS = LaunchPlans()


@functools.lru_cache(maxsize=1024)
def choose_config(M: int, N: int, K: int, device: torch.device) -> KernelConfig:
    """Tile shape by M (decode GEMV-like sizes up to prefill), split-K to fill the SMs.

    The GPU's tuned table (common.tuned_config) comes first; this is the fallback, which
    past PREFILL_ROWS rows takes the prefill route (KernelConfig.dequantize_first)."""
    tuned = tuned_config("int8", M, N, K, device)
    if tuned is not None:
        return tuned
    if M > PREFILL_ROWS:
        return PREFILL_CONFIG
    if M <= 16:
        base = KernelConfig(block_m=16, block_n=64, block_k=256, num_warps=4, num_stages=4)
    elif M <= 32:
        base = KernelConfig(block_m=32, block_n=64, block_k=256, num_warps=4, num_stages=4)
    elif M <= 64:
        base = KernelConfig(block_m=64, block_n=128, block_k=128, num_warps=4, num_stages=4)
    else:
        base = KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=4)
    tiles = ceil_div(M, base.block_m) * ceil_div(N, base.block_n)
    split_k = choose_split_k(tiles, ceil_div(K, base.block_k), sm_count(device))
    return KernelConfig(**{**base.__dict__, "split_k": split_k})


def launch_woq_mm_int8(x, qweight, scale, out, partial, tile_counter, config: KernelConfig, wrap=None):
    """Launch with buffers already checked and allocated (shared by the eager launcher and
    the torch.library.triton_op, which passes ``wrap=wrap_triton``: what launches the kernel)."""
    M, K = x.shape
    N = qweight.shape[0]
    if config.dequantize_first:  # ``out`` stays unwritten: the dense GEMM returns y
        weight = x.new_empty((N, K))
        kernel = _CACHED_DEQUANTIZE_LAUNCHER if wrap is None else wrap(dequantize_int8_kernel)
        kernel[dequantize_grid(N, K, config)](
            qweight, scale, weight, N, K, *qweight.stride(), *weight.stride(),
            BLOCK_N=config.block_n, BLOCK_K=config.block_k, num_warps=config.num_warps,
        )
        return dense_gemm(x, weight)
    kernel = _CACHED_LAUNCHER if wrap is None else wrap(woq_mm_int8_kernel)
    kernel[grid_for(M, N, config)](
        x, qweight, scale, out, partial, tile_counter,
        M, N, K,
        *x.stride(), *qweight.stride(), *out.stride(),  # one call a tensor: host time
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        SPLIT_K=config.split_k, GROUP_M=config.group_m, SWAP_AB=config.swap_ab, EVEN_K=K % config.block_k == 0,
        UPCAST_DOT=upcast_dot(x.dtype), GEMV=config.gemv,
        # the GEMV's int8 decode; the interpreter cannot run inline PTX
        DECODE="bits" if interpreter_active() else "prmt",
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def woq_mm_int8(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                config: KernelConfig | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ (qweight (N, K) int8 * scale (N,) fp32 [:, None]).T in x's dtype.

    ``config`` overrides the tile choice (tests and tuning). A call with the metadata of an
    earlier one replays that call's launch (launch.LaunchPlans)."""
    inputs = (x, qweight, scale)
    key = _PLANS.key(inputs, config)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan.run(inputs)
    check_device(x, OP)
    if qweight.dim() != 2:
        raise ValueError(f"{OP}: qweight must be 2-D (N, K); got shape {tuple(qweight.shape)}")
    N, K = qweight.shape
    check_activation(x, K, OP)
    check_tensor(qweight, "qweight", (N, K), torch.int8, x.device, OP)
    check_tensor(scale, "scale", (N,), torch.float32, x.device, OP)
    M = x.shape[0]
    config = config or choose_config(M, N, K, x.device)
    out = torch.empty((M, N), device=x.device, dtype=x.dtype)
    partial, tile_counter = SplitKScratch.buffers(M, N, config, x.device)
    with _PLANS.record(key, inputs, out, stable=(partial, tile_counter)) as call:
        call.result = launch_woq_mm_int8(x, qweight, scale, out, partial, tile_counter, config)
    return call.result


# --------------------------------------------------------------------------- reference


def dequantize_int8_reference(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """W (N, K) float64 = qweight * scale[:, None], on the CPU."""
    return qweight.cpu().to(torch.float64) * scale.cpu().to(torch.float64)[:, None]


def woq_mm_int8_reference(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """y (M, N) float64 on the CPU: the exact product the kernel approximates."""
    return x.cpu().to(torch.float64) @ dequantize_int8_reference(qweight, scale).T


# --------------------------------------------------------------------------- as a triton_op (impl.kernels.ops)


def traced_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, *, config=None,
                     tile_counter: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ (qweight (N, K) int8 * scale (N,) fp32 [:, None]).T.
    ``config``: the tile config (None: chosen from M); ``tile_counter``: see common.traced_scratch."""
    N, K = qweight.shape
    check_activation(x, K, OP)
    check_tensor(qweight, "qweight", (N, K), torch.int8, x.device, OP)
    check_tensor(scale, "scale", (N,), torch.float32, x.device, OP)
    M = traced_rows(x, config)
    config = config or choose_config(M, N, K, x.device)
    out = x.new_empty((M, N))
    partial, counter = traced_scratch(M, N, config, x, tile_counter)
    return launch_woq_mm_int8(x, qweight, scale, out, partial, counter, config, wrap=wrap_triton)


def op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``torch.ops.impl.woq_mm_int8_triton``: the schema leaves out what only the lowering hands in."""
    return traced_body(x, qweight, scale)


def op_arguments(operands: tuple, ints: tuple) -> tuple:
    """The fused op's weight operands (qweight, scale) as op_body takes them after x."""
    return operands


def config_for(M: int, N: int, K: int, ints: tuple, device: torch.device) -> KernelConfig:
    return choose_config(M, N, K, device)


def fixed_tables(dtype: torch.dtype, device: torch.device) -> dict:
    """Decode tables the lowering makes graph constants: none."""
    return {}


eager_launch = woq_mm_int8  # op_body's signature, eager: what the max-autotune contest times
