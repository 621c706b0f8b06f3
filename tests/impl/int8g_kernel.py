"""The Triton kernel of tests/impl/int8g_scheme.py's scheme: the kernel, its launcher (what
impl.kernels.launch.WeightOnlyLauncher leaves to a scheme) and what impl.kernels.ops asks of a
kernel module (op_body, LAUNCHER).

    y (M, N) = x (M, K) @ W.T,  W[n, k] = qweight[n, k] * scale[n, k // G]

A plain tile loop, one group a step (BLOCK_K = G): the point is the plumbing, not the speed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from impl.kernels.common import KernelConfig, split_k_bounds, store_output_tile, tile_coordinates
from impl.kernels.launch import WeightOnlyLauncher


@triton.jit
def woq_mm_int8g_kernel(x_ptr, q_ptr, s_ptr, out_ptr, partial_ptr, tile_counter_ptr, M, N, K,
                        stride_xm, stride_qn, stride_sn, stride_om, stride_on, GROUP: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    pid_m, pid_n = tile_coordinates(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    k_begin, k_end = split_k_bounds(pid_k, K, GROUP, SPLIT_K)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, GROUP)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)  # builtins only (see impl/kernels/common.py)
    for k0 in range(k_begin, k_end, GROUP):
        k = k0 + rk
        x = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=rm[:, None] < M, other=0.0)
        q = tl.load(q_ptr + rn[None, :] * stride_qn + k[:, None], mask=rn[None, :] < N, other=0)
        s = tl.load(s_ptr + rn * stride_sn + k0 // GROUP, mask=rn < N, other=0.0)
        acc += tl.dot(x.to(tl.float32), q.to(tl.float32)) * s[None, :]
    store_output_tile(acc, out_ptr, partial_ptr, tile_counter_ptr, rm, rn, M, N, stride_om, stride_on, pid, pid_k,
                      SPLIT_K)


class Int8gLauncher(WeightOnlyLauncher):
    short = "int8g_test"
    main_kernel = woq_mm_int8g_kernel
    fallback_tiles = ((None, KernelConfig(block_m=16, block_n=32, block_k=32, num_warps=4, num_stages=1)),)

    def main_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config):
        (M, K), (qweight, scale) = x.shape, operands
        return ((x, qweight, scale, out, partial, tile_counter, M, qweight.shape[0], K, x.stride(0), qweight.stride(0),
                 scale.stride(0), *out.stride()),
                dict(GROUP=ints[0], BLOCK_M=config.block_m, BLOCK_N=config.block_n, SPLIT_K=config.split_k,
                     GROUP_M=config.group_m))


LAUNCHER = Int8gLauncher()


def op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    return LAUNCHER.traced_body(x, qweight, scale, group_size)
