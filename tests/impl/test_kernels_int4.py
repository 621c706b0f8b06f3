"""impl/kernels/woq_mm_int4.py against its float64 reference: interpreter on CPU, compiled on CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.impl.test_kernels_common import (  # also switches to the interpreter without a GPU
    DEVICE,
    DTYPES,
    INTERPRETER_WARNINGS,
    assert_matches_reference,
    gpu_only,
    random_activation,
)

from impl.kernels.common import KernelConfig  # noqa: E402
from impl.kernels.woq_mm_int4 import (  # noqa: E402
    dequantize_int4_reference,
    unpack_nibbles_reference,
    woq_mm_int4,
    woq_mm_int4_reference,
)

pytestmark = INTERPRETER_WARNINGS


def random_int4_weight(N: int, K: int, group_size: int, seed: int, symmetric: bool = False):
    """qweight (N, K_pad // 2) uint8, scale and zero (N, K_pad // G) float32, on DEVICE."""
    g = torch.Generator().manual_seed(seed)
    K_pad = -(-K // group_size) * group_size
    qweight = torch.randint(0, 256, (N, K_pad // 2), generator=g, dtype=torch.uint8)
    scale = torch.rand((N, K_pad // group_size), generator=g) * 0.1 + 1e-3
    if symmetric:
        zero = torch.full_like(scale, 8.0)
    else:
        zero = torch.randint(0, 16, scale.shape, generator=g).to(torch.float32)
    return qweight.to(DEVICE), scale.to(DEVICE), zero.to(DEVICE)


def check(M, N, K, group_size, dtype, config=None, seed=0, symmetric=False):
    x = random_activation(M, K, dtype, seed)
    qweight, scale, zero = random_int4_weight(N, K, group_size, seed + 1, symmetric)
    y = woq_mm_int4(x, qweight, scale, zero, group_size, config=config)
    label = f"int4 M={M} N={N} K={K} G={group_size} {dtype} {config.short() if config else 'default'}"
    weight = dequantize_int4_reference(qweight, scale, zero, group_size, K)
    assert_matches_reference(y, woq_mm_int4_reference(x, qweight, scale, zero, group_size), x, weight, label)
    return y


def test_reference_unpacks_low_nibble_first():
    qweight = torch.tensor([[0x21, 0xF0]], dtype=torch.uint8)
    assert unpack_nibbles_reference(qweight).tolist() == [[1, 2, 0, 15]]


# Ragged edges: M odd, N odd, K neither a multiple of the group nor of BLOCK_K.
SHAPES = [(1, 33, 96), (5, 17, 200)]
CONFIGS = [
    None,
    KernelConfig(16, 16, 32, split_k=3, group_m=2),                    # uneven split-K
    KernelConfig(32, 32, 32, scale_after_dot=False, decode="table"),   # scale before dot, table decode
    KernelConfig(16, 32, 32, decode="bits"),                           # elementwise twin of "prmt"
    KernelConfig(16, 32, 32, split_k=2, swap_ab=True),                 # weights as the A operand
    KernelConfig(32, 16, 32, swap_ab=True, scale_after_dot=False),
    # A step spanning groups (G 32 and 64: 4 and 2 a step; G 128: one), K_pad not a whole
    # number of steps: the byte and scale masks along K.
    KernelConfig(16, 32, 128, split_k=2, scale_after_dot=False),
    KernelConfig(32, 16, 128, swap_ab=True, scale_after_dot=False, decode="table"),
    # Prefill route: the weight decoded into x's dtype (a tile spanning groups, ragged N and
    # K), then a dense GEMM.
    KernelConfig(16, 16, 128, dequantize_first=True),
    KernelConfig(16, 32, 32, dequantize_first=True, num_warps=8),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.short() if c else "default")
def test_matches_float64_reference(M, N, K, group_size, dtype, config):
    check(M, N, K, group_size, dtype, config)


# The GEMV kernel (block_m 1): a step within one group, steps spanning groups with ragged
# K (K_pad not a whole number of steps: a sub-step past K_pad), uneven split-K, both decodes.
GEMV_CONFIGS = [
    KernelConfig(1, 16, 32, split_k=3),
    KernelConfig(1, 32, 128, split_k=2),
    KernelConfig(1, 8, 256, decode="bits"),
    KernelConfig(1, 64, 64, decode="bits", num_warps=8),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("config", GEMV_CONFIGS, ids=lambda c: c.short())
def test_gemv_path_matches_float64_reference(group_size, dtype, config):
    check(1, 33, 200, group_size, dtype, config)
    check(1, 40, 256, group_size, dtype, config, symmetric=True)  # K a whole number of steps


def test_gemv_reads_activations_at_an_odd_offset():
    """x is read as 32-bit words of column pairs: a view starting at an odd element is
    copied first (gemv_activation); K odd masks the last pair's upper half."""
    config = KernelConfig(1, 16, 64, split_k=2)
    qweight, scale, zero = random_int4_weight(24, 129, 64, seed=3)
    wide = random_activation(1, 130, torch.bfloat16, seed=4)
    for x in (wide[:, 1:], wide[:, :129]):  # storage offsets 1 and 0
        y = woq_mm_int4(x, qweight, scale, zero, 64, config=config)
        expected = woq_mm_int4_reference(x, qweight, scale, zero, 64)
        weight = dequantize_int4_reference(qweight, scale, zero, 64, 129)
        assert_matches_reference(y, expected, x, weight, "int4 gemv strided x")


def test_gemv_config_rejects_table_decode():
    x = random_activation(1, 64, torch.float16, seed=0)
    qweight, scale, zero = random_int4_weight(8, 64, 32, seed=0)
    with pytest.raises(ValueError, match="a GEMV config .block_m 1. decodes with 'prmt' or 'bits', not 'table'"):
        woq_mm_int4(x, qweight, scale, zero, 32, config=KernelConfig(1, 8, 64, decode="table"))


# GEMV tiles of several x rows: M below, at and above block_m (rows past M clamped to the
# last row, then dropped by the store), ragged N and K, split-K.
MULTI_ROW_GEMV_CONFIGS = [
    KernelConfig(2, 16, 64, split_k=2),
    KernelConfig(4, 8, 256, decode="bits"),
    KernelConfig(8, 32, 128, split_k=3, num_warps=8),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("M", [1, 3, 5])
@pytest.mark.parametrize("config", MULTI_ROW_GEMV_CONFIGS, ids=lambda c: c.short())
def test_multi_row_gemv_matches_float64_reference(M, dtype, config):
    check(M, 33, 200, 64, dtype, config)


def test_multi_row_gemv_reads_rows_an_odd_number_of_elements_apart():
    """Rows of x K = 129 elements apart (and a view at an odd offset) cannot be read as
    32-bit pairs: gemv_activation copies them into even rows first."""
    config = KernelConfig(4, 16, 64)
    qweight, scale, zero = random_int4_weight(24, 129, 64, seed=5)
    wide = random_activation(3, 130, torch.float16, seed=6)
    for x in (random_activation(3, 129, torch.float16, seed=7), wide[:, 1:], wide[:, :129]):
        y = woq_mm_int4(x, qweight, scale, zero, 64, config=config)
        expected = woq_mm_int4_reference(x, qweight, scale, zero, 64)
        weight = dequantize_int4_reference(qweight, scale, zero, 64, 129)
        assert_matches_reference(y, expected, x, weight, f"int4 gemv x strides {x.stride()}")


@pytest.mark.parametrize("config", [KernelConfig(16, 16, 64), KernelConfig(16, 16, 64, scale_after_dot=False)],
                         ids=lambda c: c.short())
def test_symmetric_zero_point(config):
    check(3, 20, 128, 64, torch.bfloat16, config, symmetric=True)


def test_contract_errors():
    x = random_activation(2, 100, torch.float16, seed=0)
    qweight, scale, zero = random_int4_weight(8, 100, 64, seed=0)
    with pytest.raises(ValueError, match="group_size 48 is not one of 32, 64, 128"):
        woq_mm_int4(x, qweight, scale, zero, 48)
    with pytest.raises(ValueError, match=r"qweight must have shape \(8, 64\); got \(8, 50\)"):
        woq_mm_int4(x, qweight[:, :50].contiguous(), scale, zero, 64)
    with pytest.raises(ValueError, match=r"zero must have shape \(8, 2\); got \(8, 4\)"):
        woq_mm_int4(x, qweight, scale, torch.zeros(8, 4, device=DEVICE), 64)
    with pytest.raises(TypeError, match="scale must be torch.float32; got torch.bfloat16"):
        woq_mm_int4(x, qweight, scale.bfloat16(), zero, 64)
    with pytest.raises(ValueError, match="config.block_k 128 spans several groups of 64, which needs scale_after_dot=False"):
        woq_mm_int4(x, qweight, scale, zero, 64, config=KernelConfig(16, 16, 128))


@gpu_only
@pytest.mark.parametrize("M", [1, 4, 16, 64, 256, 1024])
@pytest.mark.parametrize("N, K, group_size", [(4096 + 7, 4096, 128), (1000, 4096 + 40, 32)])
def test_full_size_default_configs(M, N, K, group_size):
    check(M, N, K, group_size, torch.bfloat16, seed=M)
