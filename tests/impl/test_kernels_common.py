"""Tests of impl/kernels/common.py, and the helpers the per-scheme kernel tests share.

Kernel tests run the compiled kernels on CUDA when a GPU is present, and otherwise (CI)
through Triton's CPU interpreter at small shapes. They skip when triton is missing.
"""

from __future__ import annotations

import os

import numpy
import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernels need the optional triton package")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
if not ON_GPU:
    if tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 3):
        pytest.skip(f"Triton 3.6's interpreter needs numpy < 2.3 (found {numpy.__version__})", allow_module_level=True)
    from impl.kernels import use_interpreter

    use_interpreter()

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from impl.kernels import common  # noqa: E402  (after the interpreter switch)
from impl.kernels.common import KernelConfig, m_bucket, table_bucket  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DTYPES = (torch.float16, torch.bfloat16)
gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (compiled kernels at full size)")
# numpy deprecation noise from inside triton 3.6's interpreter (integer scalars as indices).
INTERPRETER_WARNINGS = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")

# Unit roundoff of the activation dtypes: the output is rounded once, and weights the kernel
# rounds to the activation dtype before the dot carry one such error each.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def assert_matches_reference(y: torch.Tensor, reference: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                             label: str = "") -> None:
    """y (M, N) from a kernel against the float64 reference (M, N) = x @ weight.T.

    Bound per element: 3 u |ref| (one rounding of the output; the interpreter truncates
    bfloat16, up to 2 u) + 8 u sqrt(sum_k x_k^2 W_nk^2) (independent roundings of the weights
    fed to the tensor cores, and float32 accumulation, far below that)."""
    __tracebackhide__ = True
    assert y.shape == reference.shape, f"{label}: shape {tuple(y.shape)} != {tuple(reference.shape)}"
    assert y.dtype == x.dtype, f"{label}: output dtype {y.dtype} != activation dtype {x.dtype}"
    u = UNIT_ROUNDOFF[x.dtype]
    got = y.detach().cpu().to(torch.float64)
    assert torch.isfinite(got).all(), f"{label}: non-finite outputs at {torch.nonzero(~torch.isfinite(got))[:5].tolist()}"
    x64 = x.detach().cpu().to(torch.float64)
    magnitude = ((x64**2) @ (weight.to(torch.float64) ** 2).T).sqrt()
    bound = 3 * u * reference.abs() + 8 * u * magnitude + 1e-30
    error = (got - reference).abs()
    bad = error > bound
    if bad.any():
        rows = [f"{label}: {int(bad.sum())} / {bad.numel()} elements outside the bound",
                f"{'index':>12} {'kernel':>14} {'reference':>14} {'|error|':>11} {'bound':>11}"]
        for m, n in torch.nonzero(bad)[:8].tolist():
            rows.append(f"{str((m, n)):>12} {got[m, n].item():14.6g} {reference[m, n].item():14.6g} "
                        f"{error[m, n].item():11.3g} {bound[m, n].item():11.3g}")
        pytest.fail("\n".join(rows), pytrace=False)
    relative = float((got - reference).norm() / reference.norm())
    assert relative < 24 * u, f"{label}: relative error {relative:.2e} over {24 * u:.1e}"


def random_activation(M: int, K: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((M, K), generator=g).to(dtype).to(DEVICE)


# --------------------------------------------------------------------- tests of common


def test_kernel_config_rejects_bad_blocks():
    with pytest.raises(ValueError, match="block_n: 24 is not a power of two"):
        KernelConfig(16, 24, 64)
    with pytest.raises(ValueError, match="block_m: 3 is neither a GEMV row count .1, 2, 4, 8. nor a power of two >= 16"):
        KernelConfig(3, 16, 64)
    with pytest.raises(ValueError, match="block_m: 24 is not a power of two >= 16"):
        KernelConfig(24, 16, 64)
    with pytest.raises(ValueError, match="block_n: 24 is not a power of two$"):
        KernelConfig(1, 24, 64)
    with pytest.raises(ValueError, match="block_k: 8 is not a power of two >= 16"):
        KernelConfig(4, 16, 8)
    for rows in (1, 2, 4, 8):  # the GEMV kernels: no tl.dot minimum on block_m and block_n
        assert KernelConfig(rows, 8, 64).gemv and KernelConfig(rows, 8, 64).block_n == 8
    assert not KernelConfig(16, 16, 64).gemv
    with pytest.raises(ValueError, match="split_k: 0"):
        KernelConfig(16, 16, 64, split_k=0)
    with pytest.raises(ValueError, match="decode: 'lut'"):
        KernelConfig(16, 16, 64, decode="lut")


def test_tuned_bucket_is_the_next_one_the_table_has():
    """M rows take the smallest tuned M that covers them, or the next larger one the table
    holds for the scheme (an M = 3 launch runs the M = 16 tile where no M = 4 entry exists);
    none past the table's largest (the launchers' fallback, the prefill route there)."""
    table = {"int4/1/8192/8192": None, "int4/4/8192/8192": None, "int4/16/8192/8192": None,
             "int4/256/8192/8192": None, "int8/16/8192/8192": None, "int8/1024/8192/8192": None}
    buckets = {M: table_bucket(table, "int4", M) for M in (1, 2, 3, 4, 5, 16, 17, 256, 257, 5000)}
    assert buckets == {1: 1, 2: 4, 3: 4, 4: 4, 5: 16, 16: 16, 17: 256, 256: 256, 257: None, 5000: None}
    assert [table_bucket(table, "int8", M) for M in (1, 8, 64, 300, 5000)] == [16, 16, 1024, 1024, 1024]
    assert table_bucket(table, "nf4", 1) is None
    assert [m_bucket(M) for M in (1, 2, 3, 5, 9, 17, 65, 1000, 5000)] == [1, 2, 4, 8, 16, 64, 256, 1024, 1024]


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_untuned_prefill_sizes_take_the_prefill_route(scheme):
    from impl.kernels import woq_mm_int4, woq_mm_int8, woq_mm_nf4

    cpu = torch.device("cpu")  # no tuned table: the fallback alone
    choose = {"int8": lambda M: woq_mm_int8.choose_config(M, 4096, 4096, cpu),
              "int4": lambda M: woq_mm_int4.choose_config(M, 4096, 4096, 128, cpu),
              "nf4": lambda M: woq_mm_nf4.choose_config(M, 4096, 4096, 64, cpu)}[scheme]
    assert choose(common.PREFILL_ROWS + 1) == common.PREFILL_CONFIG
    assert not choose(common.PREFILL_ROWS).dequantize_first


def test_kernel_config_label():
    assert KernelConfig(16, 64, 256, split_k=2, num_warps=4, num_stages=4).short() == "m16n64k256s2w4p4"
    assert KernelConfig(64, 128, 64, scale_after_dot=False, decode="table").short() == "m64n128k64s1w4p3-sbd-table"
    assert KernelConfig(16, 32, 256, num_warps=8, dequantize_first=True).short() == "dq-n32k256w8"


@pytest.mark.parametrize("fields", [dict(block_m=1), dict(split_k=2), dict(swap_ab=True)], ids=str)
def test_dequantize_first_rejects_what_it_cannot_run(fields):
    with pytest.raises(ValueError, match="KernelConfig.dequantize_first: needs block_m >= 16, split_k 1 and no swap_ab"):
        KernelConfig(**{"block_m": 16, "block_n": 32, "block_k": 64, "dequantize_first": True, **fields})


@pytest.mark.parametrize(
    "tiles, k_steps, sms, expected",
    [
        (128, 32, 132, 2),   # one tile short of a wave: split in two
        (256, 32, 132, 1),   # already two programs per SM
        (16, 64, 132, 8),    # few tiles, long K: split up to the cap
        (16, 8, 132, 2),     # short K: keep four steps per split
        (16, 4, 132, 1),
    ],
)
def test_choose_split_k(tiles, k_steps, sms, expected):
    assert common.choose_split_k(tiles, k_steps, sms) == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_nibble_pair_table_holds_both_levels(dtype):
    levels = [(-1.0) ** i * i / 7 for i in range(16)]
    table = common.nibble_pair_table(levels, dtype, torch.device("cpu"))
    assert table.shape == (256,) and table.dtype == torch.int32
    low = (table & 0xFFFF).to(torch.int16).view(dtype).float()
    high = ((table >> 16) & 0xFFFF).to(torch.int16).view(dtype).float()
    expected = torch.tensor(levels).to(dtype).float()
    byte = torch.arange(256)
    assert torch.equal(low, expected[byte & 0xF])
    assert torch.equal(high, expected[byte >> 4])


def test_nibble_tables_are_cached_per_levels_dtype_and_device():
    levels = tuple(float(i) for i in range(16))
    cpu = torch.device("cpu")
    table = common.nibble_pair_table(levels, torch.float16, cpu)
    assert common.nibble_pair_table(levels, torch.float16, cpu) is table      # launchers call it every launch
    assert torch.equal(common.nibble_pair_table(list(levels), torch.float16, cpu), table)
    assert not torch.equal(common.nibble_pair_table(levels, torch.bfloat16, cpu), table)
    assert common.levels_tensor(list(levels), cpu) is common.levels_tensor(levels, cpu)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nibble_pair_table_of_a_levels_tensor_equals_the_host_table(dtype):
    """The device-side table (any NF4 levels operand, no host sync) matches the Python one."""
    levels = [(-1.0) ** i * i / 7 for i in range(16)]
    pair_table = common.nibble_pair_table_of(torch.tensor(levels), dtype)
    assert pair_table.tolist() == list(common.nibble_pair_values(tuple(levels), dtype))


@triton.jit
def _store_nibble_lut(levels_ptr, x_ptr, out_ptr):
    words = common.nibble_lut_of_levels(levels_ptr, x_ptr.dtype.element_ty)  # as the kernels: x's dtype
    for i in tl.static_range(8):
        tl.store(out_ptr + tl.full((1, 1), i, tl.int32), words[i])


@INTERPRETER_WARNINGS
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_kernels_build_the_prmt_table_from_the_levels(dtype):
    """NF4's kernels read the 16 float32 levels and build the PRMT words themselves (no table
    kernel before each launch): the words equal the host's, levels that round (i / 7) and
    negative ones included."""
    levels = [(-1.0) ** i * i / 7 for i in range(16)]
    out = torch.zeros(8, dtype=torch.int32, device=DEVICE)
    _store_nibble_lut[(1,)](torch.tensor(levels, device=DEVICE), torch.zeros(1, dtype=dtype, device=DEVICE), out)
    assert out.tolist() == list(common.nibble_lut_values(tuple(levels), dtype))


def test_activation_checks_name_the_problem():
    weight_k = 64
    with pytest.raises(ValueError, match=r"x must be 2-D \(M, K\); got shape \(2, 3, 64\)"):
        common.check_activation(torch.zeros(2, 3, 64, dtype=torch.float16), weight_k, "op")
    with pytest.raises(TypeError, match="x dtype torch.float32 is not one of"):
        common.check_activation(torch.zeros(2, 64), weight_k, "op")
    with pytest.raises(ValueError, match="x has K = 63 columns but the weight has K = 64"):
        common.check_activation(torch.zeros(2, 63, dtype=torch.float16), weight_k, "op")
    with pytest.raises(ValueError, match=r"x has no rows \(M = 0\)"):
        common.check_activation(torch.zeros(0, 64, dtype=torch.float16), weight_k, "op")
    with pytest.raises(ValueError, match="unit stride along K"):
        common.check_activation(torch.zeros(64, 2, dtype=torch.float16).T, weight_k, "op")


@pytest.mark.parametrize("name, table", [("NVIDIA H200", "tuned_configs_h200.json"),
                                         ("NVIDIA H100 80GB HBM3", "tuned_configs_h100.json"),
                                         ("NVIDIA H800", "tuned_configs_h100.json")])
def test_each_gpu_kind_reads_its_own_tuned_table(name, table):
    path = common.tuned_configs_file(name)
    assert path.name == table
    configs = common._load_tuned_configs(str(path))
    assert configs and all(isinstance(c, common.KernelConfig) for c in configs.values())
    # every decode shape of issue 12 has an entry of its own on the H200, M = 1 included
    if "H200" in name:
        for scheme in ("int8", "int4", "nf4"):
            for key in (f"{scheme}/1/8192/8192", f"{scheme}/16/28672/8192"):
                assert key in configs
