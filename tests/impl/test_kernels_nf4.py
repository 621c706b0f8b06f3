"""impl/kernels/woq_mm_nf4.py against its float64 reference: interpreter on CPU, compiled on CUDA."""

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
from impl.kernels.woq_mm_nf4 import (  # noqa: E402
    NF4_LEVELS,
    dequantize_nf4_reference,
    woq_mm_nf4,
    woq_mm_nf4_reference,
)

pytestmark = INTERPRETER_WARNINGS


def random_nf4_weight(N: int, K: int, block_size: int, seed: int, double_quant: bool = False) -> dict:
    """Keyword arguments of woq_mm_nf4 after x: qweight, absmax (float32 or uint8 codes)
    and, when double-quantized, absmax_scale and absmax_offset; on DEVICE."""
    g = torch.Generator().manual_seed(seed)
    K_pad = -(-K // block_size) * block_size
    blocks = (N, K_pad // block_size)
    weight = {"qweight": torch.randint(0, 256, (N, K_pad // 2), generator=g, dtype=torch.uint8),
              "block_size": block_size}
    if double_quant:
        weight["absmax"] = torch.randint(0, 256, blocks, generator=g, dtype=torch.uint8)
        weight["absmax_scale"] = torch.rand(-(-N * blocks[1] // 256), generator=g) * 0.01 + 1e-4
        weight["absmax_offset"] = torch.tensor(0.05)
    else:
        weight["absmax"] = torch.rand(blocks, generator=g) + 0.01
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in weight.items()}


def check(M, N, K, block_size, dtype, config=None, seed=0, double_quant=False):
    x = random_activation(M, K, dtype, seed)
    weight = random_nf4_weight(N, K, block_size, seed + 1, double_quant)
    y = woq_mm_nf4(x, **weight, config=config)
    label = (f"nf4 M={M} N={N} K={K} B={block_size} dq={double_quant} {dtype} "
             f"{config.short() if config else 'default'}")
    reference = woq_mm_nf4_reference(x, **weight)
    dense = dequantize_nf4_reference(K=K, **weight)
    assert_matches_reference(y, reference, x, dense, label)
    return y


def test_levels_are_the_qlora_table():
    assert len(NF4_LEVELS) == 16 and NF4_LEVELS[0] == -1.0 and NF4_LEVELS[7] == 0.0 and NF4_LEVELS[15] == 1.0
    assert list(NF4_LEVELS) == sorted(NF4_LEVELS)


def test_levels_match_the_scheme():
    schemes_nf4 = pytest.importorskip("impl.schemes.nf4", reason="impl/schemes/nf4.py not present yet")
    table = next((getattr(schemes_nf4, name) for name in ("NF4_LEVELS", "NF4_TABLE", "NF4") if
                  hasattr(schemes_nf4, name)), None)
    if table is None:
        pytest.skip("impl.schemes.nf4 exposes no NF4_LEVELS / NF4_TABLE / NF4")
    assert torch.equal(torch.as_tensor(table, dtype=torch.float32).flatten(),
                       torch.tensor(NF4_LEVELS, dtype=torch.float32))


SHAPES = [(1, 33, 96), (5, 17, 200)]
CONFIGS = [
    None,
    KernelConfig(16, 16, 32, split_k=3, group_m=2),
    KernelConfig(32, 32, 32, scale_after_dot=False),
    KernelConfig(16, 32, 64, decode="table"),   # the gather decode (what the interpreter always runs)
    KernelConfig(16, 32, 32, split_k=2, swap_ab=True),
    KernelConfig(32, 16, 32, swap_ab=True, scale_after_dot=False),
    # A step spanning 2 and 4 blocks of 64, K_pad not a whole number of steps.
    KernelConfig(16, 32, 128, split_k=2, scale_after_dot=False),
    KernelConfig(32, 16, 256, swap_ab=True, scale_after_dot=False),
    # Prefill route: the weight decoded into x's dtype, then a dense GEMM.
    KernelConfig(16, 16, 128, dequantize_first=True),
    KernelConfig(16, 32, 32, dequantize_first=True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.short() if c else "default")
def test_matches_float64_reference(M, N, K, double_quant, dtype, config):
    check(M, N, K, 64, dtype, config, double_quant=double_quant)


# The GEMV kernel (block_m 1): within one block, spanning blocks with ragged K, split-K.
GEMV_CONFIGS = [KernelConfig(1, 16, 32, split_k=3), KernelConfig(1, 32, 256, split_k=2),
                KernelConfig(1, 64, 64, decode="table", num_warps=8)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
@pytest.mark.parametrize("config", GEMV_CONFIGS, ids=lambda c: c.short())
def test_gemv_path_matches_float64_reference(double_quant, dtype, config):
    check(1, 33, 200, 64, dtype, config, double_quant=double_quant)
    check(1, 40, 512, 64, dtype, config, double_quant=double_quant)  # K a whole number of steps


# GEMV tiles of several x rows: M below, at and above block_m, ragged N and K, split-K.
MULTI_ROW_GEMV_CONFIGS = [KernelConfig(2, 16, 128, split_k=2), KernelConfig(4, 8, 64, decode="table"),
                          KernelConfig(8, 32, 256, split_k=3, num_warps=8)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
@pytest.mark.parametrize("M", [3, 5])
@pytest.mark.parametrize("config", MULTI_ROW_GEMV_CONFIGS, ids=lambda c: c.short())
def test_multi_row_gemv_matches_float64_reference(M, double_quant, dtype, config):
    check(M, 33, 200, 64, dtype, config, double_quant=double_quant)


@pytest.mark.parametrize("block_size", [32, 128, 256])
def test_other_block_sizes(block_size):
    check(3, 24, 300, block_size, torch.float16, KernelConfig(16, 16, 32, split_k=2))
    check(3, 24, 300, block_size, torch.float16, KernelConfig(16, 16, 512, scale_after_dot=False))


def test_contract_errors():
    x = random_activation(2, 100, torch.float16, seed=0)
    weight = random_nf4_weight(8, 100, 64, seed=0)
    with pytest.raises(ValueError, match="block_size 48 is not one of 32, 64, 128, 256"):
        woq_mm_nf4(x, weight["qweight"], weight["absmax"], 48)
    with pytest.raises(ValueError, match="needs both absmax_scale and absmax_offset"):
        woq_mm_nf4(x, weight["qweight"], weight["absmax"], 64, absmax_scale=torch.ones(1, device=DEVICE))
    with pytest.raises(TypeError, match=r"absmax \(double-quantized codes\) must be torch.uint8; got torch.float32"):
        woq_mm_nf4(x, weight["qweight"], weight["absmax"], 64, absmax_scale=torch.ones(1, device=DEVICE),
                   absmax_offset=torch.tensor(0.0, device=DEVICE))
    with pytest.raises(ValueError, match=r"absmax must have shape \(8, 2\); got \(2, 8\)"):
        woq_mm_nf4(x, weight["qweight"], weight["absmax"].T.contiguous(), 64)
    with pytest.raises(ValueError, match="config.block_k 128 spans several blocks of 64, which needs scale_after_dot=False"):
        woq_mm_nf4(x, weight["qweight"], weight["absmax"], 64, config=KernelConfig(16, 16, 128))


@gpu_only
@pytest.mark.parametrize("M", [1, 4, 16, 64, 256, 1024])
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
def test_full_size_default_configs(M, double_quant):
    check(M, 4096 + 7, 4096 + 40, 64, torch.bfloat16, seed=M, double_quant=double_quant)
