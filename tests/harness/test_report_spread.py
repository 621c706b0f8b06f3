"""harness/report.py device_spread: how cells spread over GPUs and xdist workers; the summary JSON keeps both."""

from __future__ import annotations

import json

import torch

from harness.report import SummaryRow, device_spread

pytest_plugins = ["pytester"]


def row(device: str, index, worker: str, outcome: str = "passed") -> SummaryRow:
    return SummaryRow(suite="suites/s.yaml", case="c", backend="eager", device=device, dtype="float32", line=2,
                      outcome=outcome, device_index=index, worker=worker)


def test_device_spread_counts_cells_per_gpu_and_worker():
    rows = [row("cuda", 0, "gw0"), row("cuda", 1, "gw1"), row("cuda", 0, "gw2"), row("cuda", 0, "gw0"),
            row("cuda", 1, "gw11"), row("cuda", 1, "gw3"), row("cpu", None, "gw0"), row("cuda", None, "gw1", "skipped")]
    assert device_spread(rows) == ["cuda:0: 3 cells (gw0 2, gw2 1)", "cuda:1: 3 cells (gw1 1, gw3 1, gw11 1)"]
    assert device_spread([row("cuda", 0, "")]) == ["cuda:0: 1 cells (main 1)"]
    assert device_spread([row("cpu", None, "")]) == []


def test_rows_round_trip_with_device_index_and_worker():
    original = row("cuda", 1, "gw3")
    assert SummaryRow.from_json(original.to_json()) == original


def test_summary_json_records_device_index_and_worker(project, tmp_path):
    project.suite("""
    cases:
      scaled:
        program: progs:scaled
        inputs:
          x: {shape: [4, 3]}
        matrix: {backends: [eager], devices: [cpu, cuda]}
        checks: {golden: false}
    """)
    summary = tmp_path / "summary.json"
    assert project.run(f"--summary={summary}").ret == 0
    rows = {r["device"]: r for r in json.loads(summary.read_text())}
    assert (rows["cpu"]["device_index"], rows["cpu"]["worker"]) == (None, "")
    if torch.cuda.is_available():
        assert rows["cuda"]["device_index"] == torch.cuda.current_device()
    else:
        assert rows["cuda"]["outcome"] == "skipped" and rows["cuda"]["device_index"] is None
