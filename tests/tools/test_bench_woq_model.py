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


@pytest.mark.parametrize("mode", list(bench.MODES))
def test_each_mode_compiles_once_and_fills_its_rows_at_every_batch(tmp_path, monkeypatch, mode):
    """reduce-overhead is timed by plain calls only (its own CUDA graphs); the other modes
    also as a replay of their plain call captured in a graph."""
    compiles, calls = [], []
    monkeypatch.setattr(bench.torch, "compile", lambda fn, **options: compiles.append(options) or fn)
    monkeypatch.setattr(bench, "plain_and_replayed",
                        lambda fn, ids, replay=True: calls.append((ids, replay)) or (10.0, 5.0 if replay else None))
    cells = bench.Cells(tmp_path / "m.json", {"variants": ["int4"]})
    bench.run_sequence(lambda ids: ids, lambda batch: batch, "int4", mode, cells, deadline=float("inf"))
    options, plain_row, replay_row = bench.MODES[mode]
    assert compiles == [options]
    assert [ids for ids, _ in calls] == [batch for _, batch in bench.SEQUENCE]
    rows = cells.result["cells"]
    for label, _ in bench.SEQUENCE:
        assert rows[f"{plain_row}, batch {label}"] == {"int4": 10.0}
        if replay_row is None:
            assert all(not replay for _, replay in calls)
        else:
            assert rows[f"{replay_row}, batch {label}"] == {"int4": 5.0}
    assert len(rows) == len(bench.SEQUENCE) * (1 if replay_row is None else 2)


def test_a_mode_that_fails_leaves_its_cells_empty_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.torch, "compile", lambda fn, **options: fn)

    def fails(fn, ids, replay=True):
        raise RuntimeError("LoweringException")

    monkeypatch.setattr(bench, "plain_and_replayed", fails)
    cells = bench.Cells(tmp_path / "m.json", {"variants": ["nf4"]})
    bench.run_sequence(lambda ids: ids, lambda batch: batch, "nf4", "max-autotune", cells, deadline=float("inf"))
    assert cells.result["cells"] == {"max-autotune-no-cudagraphs, plain calls, batch 1": {"nf4": None},
                                     "max-autotune-no-cudagraphs, CUDA graph, batch 1": {"nf4": None}}
