"""tools/bench_woq_model.py: the parts that need no GPU (model building, linear swapping, tables)."""

from __future__ import annotations

import json

import pytest
import torch

from tools import bench_woq_model as bench


def test_swap_linears_leaves_lm_head_dense():
    pytest.importorskip("transformers")
    model = bench.llama(1, "cpu", hidden=64, intermediate=128, vocab=100)
    bench.swap_linears(model, lambda linear: torch.nn.Identity())
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears == ["lm_head"]
    assert sum(isinstance(m, torch.nn.Identity) for m in model.modules()) == 7  # q, k, v, o, gate, up, down


def test_cells_are_written_after_each_and_tabled_by_variant(tmp_path):
    cells = bench.Cells(tmp_path / "m.json", {"gpu": "GPU", "torch": "2.x", "layers": 6, "variants": ["dense", "int4"]})
    cells.put("default, plain calls, batch 1", "dense", 1757.04)
    cells.put("default, plain calls, batch 1", "int4", None)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["cells"] == {"default, plain calls, batch 1": {"dense": 1757.0, "int4": None}}
    table = bench.markdown(written)
    assert "| how it runs | dense | int4 |" in table
    assert "| default, plain calls, batch 1 | 1757 | — |" in table
