"""harness/golden.py: storage, verification, no-op rewrites, sampling, stale files."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time

import pytest
import torch

from harness import golden as golden_module
from harness.core.sample import sample_for_golden, sample_indices
from harness.golden import (
    GoldenError,
    GoldenMissing,
    GoldenWriteError,
    find_stale_goldens,
    golden_paths,
    load_golden,
    recover_leftovers,
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
    stale = find_stale_goldens(root, {"suite": {("kept", "cpu", "float32")}}, lambda key: True)
    assert sorted(s.path.name for s in stale) == ["cpu-float32.json", "cpu-float32.safetensors"]
    assert all(s.path.parent.name == "gone" and s.why == "no case declares it" for s in stale)
    # A suite this session did not load: stale only when no suite file has its key.
    assert [s.why for s in find_stale_goldens(root, {}, lambda key: False)] == ["its suite file is gone"] * 4
    assert find_stale_goldens(root, {}, lambda key: key == "suite") == []
    # A suite that failed to load: never stale, whatever it declared.
    assert find_stale_goldens(root, {}, lambda key: False, frozenset({"suite"})) == []


# --------------------------------------------------------------------------- bad entries in the golden tree


def run_briefly(fn, seconds: float = 10.0):
    """``fn()``'s result or exception, failing the test if it has not returned in ``seconds`` (a hang)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn} hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_sidecar_entry_that_is_not_a_mapping(tmp_path):
    paths, _ = store(tmp_path, {"output": torch.ones(2)})
    sidecar = json.loads(paths.sidecar.read_text())
    sidecar["tensors"]["output"] = "oops"
    paths.sidecar.write_text(json.dumps(sidecar))
    with pytest.raises(GoldenError, match=r"cpu-float32.json: key 'output': entry is a str, not a mapping of shape, dtype"):
        load_golden(paths)
    _, update = store(tmp_path, {"output": torch.ones(2)})  # --update-golden repairs it
    assert update.status == "replaced" and load_golden(paths)["output"].eq(1).all()


def test_directory_at_a_golden_path_is_refused_not_removed(tmp_path):
    paths = golden_paths(tmp_path / "golden", "suite", "c", "cpu", "float32")
    paths.data.mkdir(parents=True)
    (paths.data / "keep.txt").write_text("mine")
    paths.sidecar.write_text("{}")
    with pytest.raises(GoldenError, match=r"cpu-float32.safetensors: is a directory, not a golden file"):
        load_golden(paths)
    with pytest.raises(GoldenWriteError, match=r"is a directory, not a golden file; remove it by hand \(nothing was written\)"):
        store(tmp_path, {"output": torch.ones(2)})
    assert (paths.data / "keep.txt").read_text() == "mine"


def test_fifo_at_a_golden_path_never_hangs_and_update_replaces_it(tmp_path):
    paths, _ = store(tmp_path, {"output": torch.ones(2)})
    paths.data.unlink()
    os.mkfifo(paths.data)
    with pytest.raises(GoldenError, match=r"cpu-float32.safetensors: is a FIFO, not a golden file"):
        run_briefly(lambda: load_golden(paths))
    _, update = run_briefly(lambda: store(tmp_path, {"output": torch.ones(2)}))
    assert update.status == "replaced" and stat.S_ISREG(paths.data.lstat().st_mode)


def test_symlinks_out_of_the_golden_tree_are_not_read_nor_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    paths, _ = store(tmp_path, {"output": torch.ones(2)})
    precious = outside / "precious.safetensors"
    precious.write_bytes(paths.data.read_bytes())
    paths.data.unlink()
    paths.data.symlink_to(precious)
    with pytest.raises(GoldenError, match=r"is a symlink to .*precious.safetensors, outside the golden tree"):
        load_golden(paths)
    _, update = store(tmp_path, {"output": torch.zeros(2)})  # the link is replaced, its target untouched
    assert update.status == "replaced" and not paths.data.is_symlink()
    assert load_golden(paths)["output"].eq(0).all() and precious.read_bytes() != paths.data.read_bytes()
    # A case directory that leads out of the tree: nothing is read or written there.
    linked = golden_paths(tmp_path / "golden", "suite", "linked", "cpu", "float32")
    linked.case_dir.symlink_to(outside, target_is_directory=True)
    with pytest.raises(GoldenWriteError, match=r"suite/linked: resolves to .*outside, outside the golden tree"):
        store(tmp_path, {"output": torch.ones(2)}, case="linked")
    with pytest.raises(GoldenError, match="outside the golden tree"):
        load_golden(linked)
    assert sorted(p.name for p in outside.iterdir()) == ["precious.safetensors"]


def test_a_read_during_a_commit_waits_for_it(tmp_path, monkeypatch):
    """Readers take the directory lock: no false 'sha256 mismatch' between the data and sidecar renames."""
    paths, _ = store(tmp_path, {"output": torch.zeros(64)})
    real_replace = os.replace

    def slow_replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".safetensors"):
            time.sleep(0.03)  # between the data and the sidecar: the window a lock-free reader fell into

    monkeypatch.setattr(golden_module.os, "replace", slow_replace)
    stop = threading.Event()
    errors: list[Exception] = []

    def read_forever():
        while not stop.is_set():
            try:
                load_golden(paths)
            except GoldenError as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for value in range(1, 9):
            store(tmp_path, {"output": torch.full((64,), float(value))})
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []


def test_full_disk_or_read_only_tree_is_one_line_and_leaves_nothing_behind(tmp_path, monkeypatch):
    paths, _ = store(tmp_path, {"output": torch.ones(2)})
    before = (paths.data.read_bytes(), paths.sidecar.read_bytes())

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(golden_module.os, "fsync", disk_full)
    with pytest.raises(GoldenWriteError, match=r"cannot write the golden \(No space left on device\); the old one, if any, is untouched"):
        store(tmp_path, {"output": torch.zeros(2)})
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(paths.case_dir))

    monkeypatch.setattr(golden_module.tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(GoldenWriteError, match=r"suite/c/cpu-float32.safetensors: cannot write the golden \(Permission denied\)"):
        store(tmp_path, {"output": torch.zeros(2)})
    monkeypatch.undo()
    assert (paths.data.read_bytes(), paths.sidecar.read_bytes()) == before
    assert sorted(p.name for p in paths.case_dir.iterdir()) == ["cpu-float32.json", "cpu-float32.safetensors"]


def test_leftovers_of_killed_writers_are_reported_and_cleaned(tmp_path):
    paths, _ = store(tmp_path, {"output": torch.ones(2)})
    (paths.case_dir / ".cpu-float32.safetensors.x1y2.tmp").write_bytes(b"half")
    paths.pending.write_text("{}")  # an intent that does not match the data: undone
    done = recover_leftovers(tmp_path / "golden")
    assert [line.split(": ", 1)[1] for line in done] == [
        "removed (temporary file of a killed writer)",
        "removed (a killed writer's commit, undone: the old golden stays)",
    ]
    assert sorted(p.name for p in paths.case_dir.iterdir()) == ["cpu-float32.json", "cpu-float32.safetensors"]
    assert recover_leftovers(tmp_path / "golden") == []


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


@pytest.mark.parametrize("committed", [True, False], ids=["data-replaced", "data-old"])
def test_a_killed_writers_pending_commit_in_a_read_only_tree_is_read_past(tmp_path, monkeypatch, committed):
    """Was a PermissionError traceback: the repair cannot write here, so the reader takes the
    golden the repair would keep, and says so."""
    paths, _ = store(tmp_path, {"output": torch.ones(2)})
    old_sidecar = paths.sidecar.read_bytes()
    store(tmp_path, {"output": torch.zeros(2)})
    new_sidecar = paths.sidecar.read_bytes()
    paths.pending.write_bytes(new_sidecar)  # killed between its steps: the next sidecar still pending
    paths.sidecar.write_bytes(old_sidecar)
    if not committed:  # killed before the data was replaced
        store_dir = tmp_path / "other"
        other, _ = store(store_dir, {"output": torch.ones(2)})
        paths.data.write_bytes(other.data.read_bytes())

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(golden_module.os, "replace", read_only)
    monkeypatch.setattr(type(paths.pending), "unlink", read_only)
    notes: list[str] = []
    tensors = load_golden(paths, suite="suites/suite.yaml", notes=notes)
    monkeypatch.undo()
    assert torch.equal(tensors["output"], torch.zeros(2) if committed else torch.ones(2))
    assert notes == [f"{paths.pending}: a killed writer's commit; cannot clean it here (Permission denied), read past it"]
    assert paths.pending.exists()  # nothing changed
