"""impl/kernels/woq_mm_int8.py against its float64 reference: interpreter on CPU, compiled on CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.impl.test_kernels_common import (  # also switches to the interpreter without a GPU
    DEVICE,
    DTYPES,
    INTERPRETER_WARNINGS,
    ON_GPU,
    assert_matches_reference,
    gpu_only,
    random_activation,
)

from impl.kernels.common import KernelConfig  # noqa: E402
from impl.kernels.woq_mm_int8 import (  # noqa: E402
    dequantize_int8_reference,
    woq_mm_int8,
    woq_mm_int8_reference,
)

pytestmark = INTERPRETER_WARNINGS


def random_int8_weight(N: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """qweight (N, K) int8 in [-127, 127], scale (N,) float32, on DEVICE."""
    g = torch.Generator().manual_seed(seed)
    qweight = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8)
    scale = torch.rand(N, generator=g) * 0.02 + 1e-3
    return qweight.to(DEVICE), scale.to(DEVICE)


def check(M, N, K, dtype, config=None, seed=0):
    x = random_activation(M, K, dtype, seed)
    qweight, scale = random_int8_weight(N, K, seed + 1)
    y = woq_mm_int8(x, qweight, scale, config=config)
    label = f"int8 M={M} N={N} K={K} {dtype} {config.short() if config else 'default'}"
    assert_matches_reference(y, woq_mm_int8_reference(x, qweight, scale), x, dequantize_int8_reference(qweight, scale),
                             label)
    return y


# Small shapes with ragged edges: M below and above a block, N odd, K not a multiple of BLOCK_K.
SHAPES = [(1, 33, 96), (5, 40, 200), (19, 31, 131)]
CONFIGS = [
    None,                                              # the launcher's own choice
    KernelConfig(16, 16, 32, split_k=3, group_m=2),    # uneven split-K, one split may be empty
    KernelConfig(32, 32, 64, split_k=1),
    KernelConfig(16, 32, 64, split_k=2, swap_ab=True),   # weights as the A operand
    KernelConfig(16, 16, 64, dequantize_first=True),     # prefill: dequantize, then a dense GEMM
    KernelConfig(16, 64, 32, dequantize_first=True, num_warps=8),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.short() if c else "default")
def test_matches_float64_reference(M, N, K, dtype, config):
    check(M, N, K, dtype, config)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", [KernelConfig(1, 8, 64, split_k=2), KernelConfig(1, 32, 32, split_k=3)],
                         ids=lambda c: c.short())
def test_gemv_path_matches_float64_reference(dtype, config):
    check(1, 33, 200, dtype, config)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("M", [3, 5])
@pytest.mark.parametrize("config", [KernelConfig(2, 8, 64, split_k=2), KernelConfig(4, 32, 32, split_k=3),
                                    KernelConfig(8, 16, 128, num_warps=8)], ids=lambda c: c.short())
def test_multi_row_gemv_matches_float64_reference(M, dtype, config):
    """GEMV tiles of several x rows: M below, at and above block_m, ragged N and K, split-K."""
    check(M, 33, 200, dtype, config)


def test_split_k_is_deterministic_and_leaves_counters_at_zero():
    config = KernelConfig(16, 16, 32, split_k=4)
    first = check(3, 24, 256, torch.bfloat16, config, seed=7)
    second = check(3, 24, 256, torch.bfloat16, config, seed=7)
    assert torch.equal(first, second)


def test_strided_activation_rows():
    x_wide = random_activation(4, 160, torch.float16, seed=3)
    x = x_wide[:, :96]  # row stride 160, unit column stride
    qweight, scale = random_int8_weight(20, 96, seed=4)
    y = woq_mm_int8(x, qweight, scale)
    assert_matches_reference(y, woq_mm_int8_reference(x, qweight, scale), x, dequantize_int8_reference(qweight, scale))


def test_contract_errors():
    x = random_activation(2, 64, torch.float16, seed=0)
    qweight, scale = random_int8_weight(8, 64, seed=0)
    with pytest.raises(TypeError, match="qweight must be torch.int8; got torch.uint8"):
        woq_mm_int8(x, qweight.view(torch.uint8), scale)
    with pytest.raises(ValueError, match=r"scale must have shape \(8,\); got \(8, 1\)"):
        woq_mm_int8(x, qweight, scale[:, None])
    with pytest.raises(TypeError, match="scale must be torch.float32; got torch.float16"):
        woq_mm_int8(x, qweight, scale.half())
    with pytest.raises(ValueError, match="qweight must be contiguous"):
        woq_mm_int8(x, qweight.T.contiguous().T, scale)
    with pytest.raises(TypeError, match="x dtype torch.float32"):
        woq_mm_int8(x.float(), qweight, scale)
    wrong_device = "cpu" if ON_GPU else "meta"
    with pytest.raises(ValueError, match="on a CUDA device|runs kernels on the CPU"):
        woq_mm_int8(x.to(wrong_device), qweight, scale)


@gpu_only
@pytest.mark.parametrize("M", [1, 4, 16, 64, 256, 1024])
@pytest.mark.parametrize("N, K", [(4096 + 7, 4096), (1000, 4096 + 40)])
def test_full_size_default_configs(M, N, K):
    check(M, N, K, torch.bfloat16, seed=M)
