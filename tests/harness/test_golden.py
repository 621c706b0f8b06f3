"""harness/golden.py: storage, verification, no-op rewrites, sampling, stale files."""

from __future__ import annotations

import json

import pytest
import torch

from harness.golden import (
    GoldenError,
    GoldenMissing,
    find_stale_goldens,
    golden_paths,
    load_golden,
    sample_for_golden,
    sample_indices,
    sidecar_for,
    write_golden,
)


def store(tmp_path, tensors, case="c"):
    paths = golden_paths(tmp_path / "golden", "suite", case, "cpu", "float32")
    sidecar = sidecar_for(tensors, {}, suite="suites/suite.yaml", case=case, device="cpu", dtype="float32", backend="eager")
    return paths, write_golden(paths, tensors, sidecar)


def test_round_trip_is_lossless_for_every_dtype(tmp_path):
    tensors = {
        "output[0]": torch.randn(3, 4).bfloat16(),
        "output[1]": torch.tensor([True, False]),
        "output[2]": torch.arange(5, dtype=torch.int64),
        "output[3]": torch.tensor(1.5, dtype=torch.float16),
    }
    paths, update = store(tmp_path, tensors)
    assert update.status == "created"
    loaded = load_golden(paths)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    assert json.loads(paths.sidecar.read_text())["tensors"]["output[0]"]["dtype"] == "bfloat16"


def test_unchanged_values_are_not_rewritten(tmp_path):
    x = torch.randn(4)
    paths, _ = store(tmp_path, {"output": x})
    before = (paths.data.stat().st_mtime_ns, paths.sidecar.stat().st_mtime_ns)
    _, update = store(tmp_path, {"output": x.clone()})
    assert update.status == "unchanged"
    assert (paths.data.stat().st_mtime_ns, paths.sidecar.stat().st_mtime_ns) == before


def test_changed_values_report_the_change(tmp_path):
    x = torch.zeros(4)
    store(tmp_path, {"output": x})
    _, update = store(tmp_path, {"output": x + torch.tensor([0, 0, 0.5, 0])})
    assert update.status == "changed"
    assert update.changes == (("output", 0.5, float("inf")),)


def test_missing_and_corrupt_goldens(tmp_path):
    paths = golden_paths(tmp_path, "suite", "c", "cpu", "float32")
    with pytest.raises(GoldenMissing):
        load_golden(paths)
    paths, _ = store(tmp_path, {"output": torch.ones(3)})
    paths.sidecar.write_text("{not json")
    with pytest.raises(GoldenError, match="sidecar is not valid JSON"):
        load_golden(paths)


def test_written_files_are_readable_by_others(tmp_path):
    paths, _ = store(tmp_path, {"output": torch.ones(1)})
    assert paths.data.stat().st_mode & 0o044 == 0o044


def test_sampling_is_spread_and_deterministic():
    idx = sample_indices(100 * 37, 50)
    assert len(idx) == 50 and torch.equal(idx, sample_indices(100 * 37, 50))
    assert len(set((idx % 37).tolist())) > 25
    big, small = torch.randn(100, 37), torch.randn(3)
    sampled = sample_for_golden({"big": big, "small": small}, 50)
    assert sampled["big"].shape == (50,) and sampled["small"] is small
    assert torch.equal(sampled["big"], big.reshape(-1)[idx])


def test_stale_goldens(tmp_path):
    root = tmp_path / "golden"
    store(tmp_path, {"output": torch.ones(1)}, case="kept")
    store(tmp_path, {"output": torch.ones(1)}, case="gone")
    stale = find_stale_goldens(root, {"suite": {("kept", "cpu", "float32")}}, tmp_path)
    assert sorted(p.name for p in stale) == ["cpu-float32.json", "cpu-float32.safetensors"]
    assert all(p.parent.name == "gone" for p in stale)
    # A suite this session did not load: stale only when its YAML file is gone.
    assert len(find_stale_goldens(root, {}, tmp_path)) == 4
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "suite.yaml").write_text("cases: {}\n")
    assert find_stale_goldens(root, {}, tmp_path) == []


pytest_plugins = ["pytester"]  # for the project fixture below

RESHAPED = """
cases:
  reshaped:
    program: progs_reshape:reshaped
    params: {rows: %d, cols: %d}
    inputs: {x: {shape: [16]}}
    matrix: {backends: [eager], devices: [cpu]}
    checks: {golden_sample: 8}
"""


def test_golden_sample_checks_the_full_shape_it_was_drawn_from(project):
    (project.root / "progs_reshape.py").write_text("def reshaped(x, rows, cols):\n    return x.reshape(rows, cols)\n", encoding="utf-8")
    project.suite(RESHAPED % (4, 4))
    project.run("--update-golden").assert_outcomes(passed=1)
    assert json.loads((project.root / "golden/s/reshaped/cpu-float32.json").read_text())["tensors"]["output"]["sampled_from"] == [4, 4]
    project.suite(RESHAPED % (2, 8))  # the same 16 values: the 8-element sample is unchanged
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "eager vs golden golden/s/reshaped/cpu-float32.safetensors (8 fixed elements of outputs larger than that):",
        "  output: shape differs: expected (4, 4) (the golden's sample was drawn from that), got (2, 8)",
    ])
