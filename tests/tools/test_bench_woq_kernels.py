"""tools/bench_woq_kernels.py: the parts that need no GPU (shapes, rotation sizes, tables)."""

from __future__ import annotations

import json

import pytest
import torch

from tools import bench_woq_kernels as bench


def test_the_shapes_are_every_llama3_8b_and_70b_linear():
    """(K, N) of q/o, k/v (8 KV heads of 128), gate/up and down, as issue 28 item 3 lists them."""
    for hidden, intermediate, shapes in ((4096, 14336, bench.LLAMA3_8B_KN), (8192, 28672, bench.LLAMA3_70B_KN)):
        kv = 8 * 128
        assert set(shapes) == {(hidden, hidden), (hidden, kv), (hidden, intermediate), (intermediate, hidden)}
    assert bench.M_VALUES == (1, 2, 4, 8, 16)


def test_weight_bytes_count_codes_and_scales():
    K, N = 4096, 1024
    assert bench.weight_bytes("dense", K, N, torch.bfloat16) == 2 * N * K
    assert bench.weight_bytes("int8", K, N, torch.bfloat16) == N * K + 4 * N
    assert bench.weight_bytes("int4", K, N, torch.bfloat16) == N * K // 2 + N * (K // 128) * 8  # scale and zero
    # uint8 absmax codes, and a row's share of the double-quant scales (one a 256 blocks) and offset
    assert bench.weight_bytes("nf4", K, N, torch.float16) == N * K // 2 + N * (K // 64) + N * (4 + 4)
    assert bench.weight_bytes("tinygemm_int4", K, N, torch.bfloat16) == N * K // 2 + N * (K // 128) * 4


@pytest.mark.parametrize("bytes_per_copy, expected", [(2 * 2**20, 50), (117 * 2**20, 1), (1, bench.MAX_COPIES)])
def test_copies_past_l2(bytes_per_copy, expected):
    copies = bench.copies_past_l2(bytes_per_copy, l2_bytes=50 * 2**20)
    assert copies == expected
    assert copies * bytes_per_copy >= 2 * 50 * 2**20 or copies == bench.MAX_COPIES


def test_parse_kn_names_the_bad_part():
    assert bench.parse_kn("4096x1024, 8192x28672") == ((4096, 1024), (8192, 28672))
    with pytest.raises(SystemExit, match="bench_woq_kernels: --kn: '4096-1024' is not KxN"):
        bench.parse_kn("4096-1024")


def test_cells_are_written_after_each_and_tabled_with_ratios(tmp_path):
    table = bench.Table(tmp_path / "k.json", {"gpu": "GPU", "torch": "2.x", "triton": "3.x",
                                              "variants": ["dense", "int4", "nf4", "tinygemm_int4", "bnb_nf4"]})
    for variant, us in (("dense", 16.0), ("int4", 10.0), ("nf4", 12.0), ("tinygemm_int4", 8.0)):
        table.put("bf16", 4096, 4096, 1, variant, us)
    table.put("bf16", 4096, 4096, 1, "bnb_nf4", None, "ImportError: no bitsandbytes")
    written = json.loads((tmp_path / "k.json").read_text())
    assert written["rows"]["bf16 4096x4096 M=1"]["int4"] == 10.0
    assert written["errors"] == {"bf16 4096x4096 M=1 bnb_nf4": "ImportError: no bitsandbytes"}
    text = bench.markdown(written)
    # dense 16 over our best 10; the best int4 peer 8 over our int4 10; bnb missing
    assert "| bf16 | 4096 × 4096 | 1 | 16.0 | 10.0 | 12.0 | 8.0 | — | 1.60× | 0.80× | — |" in text
