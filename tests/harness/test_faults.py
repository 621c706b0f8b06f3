"""Fault tests of the harness itself: concurrent and killed golden refreshes, damaged goldens,
hanging cells, out-of-memory cells. Cheap on purpose: eager cells, tiny shapes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest
import torch

from harness import golden as golden_module
from harness.golden import GoldenError, golden_paths, load_golden, sidecar_for, write_golden
from harness.guard import CellTimeout, deadline, guarded_cell

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
QUIET = ("-p", "no:cacheprovider", "-W", "ignore::UserWarning", "-W", "ignore::DeprecationWarning")
DTYPES = ("float32", "float64", "bfloat16", "float16")


def many_cases(count: int, dtypes=("float32",), kind: str = "tensor") -> str:
    """A suite of ``count`` eager cases over ``dtypes``: count x len(dtypes) cells."""
    lines = ["defaults:", f"  matrix: {{backends: [eager], devices: [cpu], dtypes: [{', '.join(dtypes)}]}}", "cases:"]
    for i in range(count):
        lines += [f"  c{i:03d}:", "    program: progs:scaled", f"    inputs: {{x: {{shape: [3, 4], seed: {i}, kind: '{kind}'}}}}"]
    return "\n".join(lines) + "\n"


SLOW_BUILDER = '''

def slow_tensor(spec, ctx):
    """A plain input that takes 50 ms to build: a refresh long enough to be killed half-way."""
    import time

    from harness.core.inputs import build_plain_tensor

    time.sleep(0.05)
    return build_plain_tensor(spec, ctx)
'''


def subprocess_env(monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def golden_pairs(root: Path) -> list[tuple[Path, Path]]:
    return [(data, data.with_suffix(".json")) for data in sorted(root.rglob("*.safetensors"))]


def leftovers(root: Path) -> list[str]:
    """Temporary or pending files a writer left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix in (".tmp", ".pending"))


# --------------------------------------------------------------------------- golden writes


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no except or finally of the writer catches it)."""


def _one_output(value: float) -> tuple[dict, dict]:
    tensors = {"output": torch.full((2, 3), value)}
    return tensors, sidecar_for(tensors, {}, suite="suites/s.yaml", case="c", device="cpu", dtype="float32", backend="eager")


@pytest.mark.parametrize("killed_after", [1, 2, 3], ids=["pending-written", "data-replaced", "sidecar-committed"])
def test_writer_killed_between_steps_leaves_old_or_new(tmp_path, monkeypatch, killed_after):
    """Every instant of a write: the next reader sees the old golden or the new one, whole."""
    paths = golden_paths(tmp_path, "s", "c", "cpu", "float32")
    write_golden(paths, *_one_output(1.0))
    replaces = []
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        replaces.append(dst)
        if len(replaces) == killed_after:
            raise Killed()

    monkeypatch.setattr(golden_module.os, "replace", replace_then_die)
    with pytest.raises(Killed):
        write_golden(paths, *_one_output(2.0))
    monkeypatch.setattr(golden_module.os, "replace", real_replace)
    expected = 1.0 if killed_after == 1 else 2.0  # after step 2 the data is new: the commit is finished
    assert load_golden(paths)["output"].eq(expected).all()
    assert leftovers(tmp_path) == []


def test_writer_killed_mid_temp_file_leaves_the_old_golden(tmp_path, monkeypatch):
    paths = golden_paths(tmp_path, "s", "c", "cpu", "float32")
    write_golden(paths, *_one_output(1.0))
    monkeypatch.setattr(golden_module.os, "fsync", lambda fd: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        write_golden(paths, *_one_output(2.0))
    monkeypatch.undo()
    assert load_golden(paths)["output"].eq(1.0).all()
    assert write_golden(paths, *_one_output(2.0)).status == "changed"  # the next writer also sweeps the temporaries
    assert leftovers(tmp_path) == []


def test_update_golden_n8_over_200_cells_loses_and_tears_nothing(project, monkeypatch):
    pytest.importorskip("xdist")
    subprocess_env(monkeypatch)
    project.suite(many_cases(50, DTYPES))
    result = project.pytester.runpytest_subprocess(*QUIET, "-n", "8", "--update-golden")
    result.assert_outcomes(passed=200)
    result.stdout.fnmatch_lines(["200 goldens rewritten (created 200, changed 0), 0 unchanged"])
    golden = project.root / "golden"
    pairs = golden_pairs(golden)
    assert len(pairs) == 200 and all(sidecar.exists() for _, sidecar in pairs)
    assert leftovers(golden) == []
    for data, sidecar in pairs:
        tensors = load_golden(golden_module.GoldenPaths(data, sidecar))  # data and sidecar agree
        case, dtype = data.parent.name, data.stem.split("-", 1)[1]
        assert json.loads(sidecar.read_text())["case"] == case and tensors["output"].dtype == getattr(torch, dtype)
    # A second update run leaving every byte alone is test_plugin's xdist test (cheaper at 3 cells).


def test_refresh_killed_half_way_leaves_every_golden_whole(project, monkeypatch):
    pytest.importorskip("xdist")
    subprocess_env(monkeypatch)
    project.set_programs((project.root / "progs.py").read_text() + SLOW_BUILDER)
    project.suite(many_cases(40, kind="progs:slow_tensor"))
    project.run("--update-golden").assert_outcomes(passed=40)  # the old goldens, in-process (cheap)
    golden = project.root / "golden"
    old = {data: data.read_bytes() for data, _ in golden_pairs(golden)}
    old_values = {data: load_golden(golden_module.GoldenPaths(data, data.with_suffix(".json")))["output"] for data in old}
    project.set_programs((project.root / "progs.py").read_text().replace("SCALE = 2.0", "SCALE = 3.0"))

    command = [sys.executable, "-m", "pytest", *QUIET, "-n", "2", "--update-golden", "-q"]
    refresh = subprocess.Popen(command, cwd=project.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline_at = time.monotonic() + 240
        while time.monotonic() < deadline_at and refresh.poll() is None:
            if sum(data.read_bytes() != content for data, content in old.items()) >= 3:
                break
            time.sleep(0.01)
        assert refresh.poll() is None, "the refresh finished before it could be killed; make the suite longer"
    finally:
        if refresh.poll() is None:
            os.killpg(refresh.pid, signal.SIGKILL)
        refresh.wait()

    changed = 0
    for data, content in old.items():
        tensors = load_golden(golden_module.GoldenPaths(data, data.with_suffix(".json")))  # whole: sha256 checked
        if data.read_bytes() == content:
            continue
        changed += 1
        torch.testing.assert_close(tensors["output"], (old_values[data] - 1) * 1.5 + 1)  # x * 3 + 1, the new golden
    assert 3 <= changed < len(old), f"{changed} of {len(old)} goldens changed: not a refresh killed half-way"
    assert [p for p in leftovers(golden) if p.endswith(".pending")] == []  # readers finished interrupted commits


# --------------------------------------------------------------------------- damaged goldens


def _truncate(data: Path) -> None:
    data.write_bytes(data.read_bytes()[:30])


def _flip_payload_byte(data: Path) -> None:
    raw = bytearray(data.read_bytes())
    raw[-3] ^= 0xFF  # inside the tensor bytes: still readable, hashes differently
    data.write_bytes(bytes(raw))


def _edit_hash(data: Path) -> None:
    sidecar = data.with_suffix(".json")
    content = json.loads(sidecar.read_text())
    content["tensors"]["output"]["sha256"] = "f" * 64
    sidecar.write_text(json.dumps(content))


def _truncate_sidecar(data: Path) -> None:
    sidecar = data.with_suffix(".json")
    sidecar.write_text(sidecar.read_text()[:40])


def _garble_header(data: Path) -> None:
    raw = bytearray(data.read_bytes())
    raw[9:14] = b"@@@@@"
    data.write_bytes(bytes(raw))


DAMAGE = {
    "c000": (_truncate, "golden/s/c000/cpu-float32.safetensors: unreadable safetensors data (truncated or corrupt: *"),
    "c001": (_flip_payload_byte, "golden/s/c001/cpu-float32.safetensors: key 'output': sha256 mismatch: data hashes to *"),
    "c002": (_edit_hash, "golden/s/c002/cpu-float32.safetensors: key 'output': sha256 mismatch: *, sidecar says ffffffffffffffff*"),
    "c003": (_truncate_sidecar, "golden/s/c003/cpu-float32.json: sidecar is not valid JSON (*"),
    "c004": (_garble_header, "golden/s/c004/cpu-float32.safetensors: unreadable safetensors data (truncated or corrupt: *"),
}


def test_damaged_goldens_are_one_clear_error_each_and_never_overwritten(project):
    project.suite(many_cases(6))
    project.run("--update-golden").assert_outcomes(passed=6)
    for case, (damage, _) in DAMAGE.items():
        damage(project.root / "golden" / "s" / case / "cpu-float32.safetensors")
    before = project.golden_files()
    result = project.run()
    result.assert_outcomes(failed=5, passed=1)
    out = result.stdout.str()
    for case, (_, message) in DAMAGE.items():
        result.stdout.fnmatch_lines([f"golden unusable: {message}"])
    assert out.count("golden unusable:") == 5  # one line per damaged golden
    assert "Traceback" not in out
    assert project.golden_files() == before


# --------------------------------------------------------------------------- hangs and OOM

FAULTY_PROGRAMS = '''
import os
import signal
import time

import torch

SCALE = 2.0


def scaled(x):
    return x * SCALE + 1


def spins(x):
    while True:  # a program that never returns
        time.sleep(0.01)


def stuck_in_c(x):
    # what a deadlocked C library looks like to the alarm: the signal never reaches Python
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    time.sleep(600)
    return x


def out_of_memory(x):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1024.00 GiB")


def real_out_of_memory(x):
    return torch.empty(1 << 50, dtype=torch.uint8, device="cuda").sum() + x


def after(x):
    return x.cos()


def segfaults(x):
    import ctypes

    return ctypes.string_at(0)  # reads address 0: SIGSEGV


def killed(x):
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does
'''


def test_hanging_cell_is_timed_out_and_reported_and_the_others_run(project):
    project.set_programs(FAULTY_PROGRAMS)
    project.suite("""
        defaults:
          matrix: {backends: [eager], devices: [cpu]}
          checks: {golden: false}
        cases:
          hangs:
            program: progs:spins
            inputs: {x: {shape: [2]}}
            timeout: 1
          hangs_by_default:
            program: progs:spins
            inputs: {x: {shape: [2]}}
          fine:
            program: progs:scaled
            inputs: {x: {shape: [2]}}
    """)
    start = time.monotonic()
    result = project.run("--cell-timeout", "2")
    assert time.monotonic() - start < 60
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines([
        "suites/s.yaml:5: case 'hangs' [[]eager-cpu-float32[]] raised CellTimeout: cell timed out after 1 s (the case's timeout: 1)",
        "stuck in (innermost last):",
        "*progs.py*, line *, in spins*",
    ])
    result.stdout.fnmatch_lines(["*case 'hangs_by_default' [[]eager-cpu-float32[]] raised CellTimeout: cell timed out after 2 s (--cell-timeout 2)"])


def test_cell_stuck_in_c_code_ends_its_worker_and_the_others_run(project, monkeypatch):
    pytest.importorskip("xdist")
    subprocess_env(monkeypatch)
    monkeypatch.setenv("QUANTCHECK_HARD_STOP_GRACE", "1")
    project.set_programs(FAULTY_PROGRAMS)
    project.suite("""
        defaults:
          matrix: {backends: [eager], devices: [cpu]}
          checks: {golden: false}
        cases:
          warm_up:  # imports and first compile before the timed cell (one worker runs them in order)
            program: progs:scaled
            inputs: {x: {shape: [2]}}
          fine:
            program: progs:scaled
            inputs: {x: {shape: [2]}}
          stuck:  # last: the session needs no replacement worker (one torch import less)
            program: progs:stuck_in_c
            inputs: {x: {shape: [2]}}
            timeout: 1
    """)
    result = project.pytester.runpytest_subprocess(*QUIET, "-n", "1", "-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=2)
    out = result.stdout.str() + result.stderr.str()
    assert "worker 'gw0' crashed while running 'suites/s.yaml::stuck[eager-cpu-float32]'" in out
    assert "the cell ran past its timeout inside code that never returned to Python" in out
    assert "Timeout (0:00:02)!" in out  # faulthandler's dump of the stuck stacks, with the program's frame
    assert 'progs.py", line' in out and "stuck_in_c" in out


def test_a_cell_that_kills_its_worker_is_crashed_everywhere(project, monkeypatch, tmp_path):
    """Summary table and footer, report HTML and JSON (signal, stack), exit status, repro script."""
    pytest.importorskip("xdist")
    subprocess_env(monkeypatch)
    project.set_programs(FAULTY_PROGRAMS)
    project.suite("""
        defaults:
          matrix: {backends: [eager], devices: [cpu]}
          checks: {golden: false}
        cases:
          fine:
            program: progs:scaled
            inputs: {x: {shape: [2]}}
          segv:
            program: progs:segfaults
            inputs: {x: {shape: [2]}}
          oom_killed:
            program: progs:killed
            inputs: {x: {shape: [2]}}
          after:
            program: progs:after
            inputs: {x: {shape: [2]}}
    """)
    report = tmp_path / "report"
    result = project.pytester.runpytest_subprocess(*QUIET, "-n", "1", "-p", "no:randomly", "--summary", f"--report={report}")
    result.assert_outcomes(failed=2, passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "suites/s.yaml:8: case 'segv' [[]eager-cpu-float32[]] crashed: SIGSEGV (Segmentation fault)",
        "the last stack the harness saw in it (most recent call first):",
        "Fatal Python error: Segmentation fault",
        '*progs.py", line * in segfaults',
    ], consecutive=False)
    result.stdout.fnmatch_lines([
        "suites/s.yaml:11: case 'oom_killed' [[]eager-cpu-float32[]] crashed: SIGKILL (the kernel's out-of-memory killer, or kill -9)",
        "repro script:          python .quantcheck/repro/s.oom_killed.eager-cpu-float32.py",
    ], consecutive=False)
    result.stdout.fnmatch_lines([
        "suites/s.yaml::segv *CRASH",
        "suites/s.yaml::oom_killed *CRASH",
        "cells: 2 crashed, 2 passed*",
    ], consecutive=False)
    assert (project.root / ".quantcheck/repro/s.segv.eager-cpu-float32.py").is_file()
    cells = {c["case"]: c for c in json.loads((report / "report.json").read_text())["cells"]}
    assert sorted(cells) == ["after", "fine", "oom_killed", "segv"]
    assert (cells["segv"]["outcome"], cells["segv"]["crash"]["signal"]) == ("crashed", "SIGSEGV")
    assert "in segfaults" in cells["segv"]["crash"]["stack"]
    assert cells["oom_killed"]["crash"]["signal"] == "SIGKILL"
    assert "Crashed: SIGSEGV (Segmentation fault)" in (report / "index.html").read_text()


def test_out_of_memory_fails_that_cell_only(project):
    project.set_programs(FAULTY_PROGRAMS)
    project.suite("""
        defaults:
          matrix: {backends: [eager, aot_eager], devices: [cpu]}
          checks: {golden: false}
        cases:
          before: {program: progs:scaled, inputs: {x: {shape: [2]}}}
          oom: {program: progs:out_of_memory, inputs: {x: {shape: [2]}}}
          after: {program: progs:after, inputs: {x: {shape: [2]}}}
    """)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(failed=2, passed=4)
    result.stdout.fnmatch_lines(["*case 'oom' [[]eager-cpu-float32[]] raised OutOfMemoryError: CUDA out of memory. Tried to allocate 1024.00 GiB"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a real CUDA out-of-memory needs a CUDA device")
def test_real_cuda_out_of_memory_fails_that_cell_only_and_frees_its_memory(project):
    project.set_programs(FAULTY_PROGRAMS)
    project.suite("""
        defaults:
          matrix: {backends: [eager], devices: [cuda]}
          checks: {golden: false}
        cases:
          oom: {program: progs:real_out_of_memory, inputs: {x: {shape: [2]}}}
          after: {program: progs:after, inputs: {x: {shape: [1024, 1024]}}}
    """)
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*case 'oom' [[]eager-cuda-float32[]] raised OutOfMemoryError: *"])


def test_out_of_memory_cleanup_drops_the_cells_tensors():
    """The failed cell's frames hold its tensors; after the guard they are gone."""
    refs = []

    def cell():
        held = torch.ones(1 << 16)
        refs.append(weakref.ref(held))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError) as excinfo:
        with guarded_cell(None, ""):
            cell()
    assert excinfo.value is not None  # the exception (and its traceback) is still referenced here
    assert refs[0]() is None


def test_deadline_reports_the_timeout_not_a_wrapper():
    """Code that wraps every exception (as Dynamo's BackendCompilerFailed does) still reports a timeout."""
    with pytest.raises(CellTimeout, match=r"cell timed out after 0.2 s \(test\)"):
        with deadline(0.2, "test"):
            try:
                while True:
                    time.sleep(0.01)
            except CellTimeout as exc:
                raise RuntimeError("backend compiler failed") from exc
    with deadline(5, "test"):  # a body that finishes in time is left alone, and the alarm is off afterwards
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("cell_id, expected", [
    ("inductor-cpu-float32", ("inductor", "cpu", "float32")),
    ("inductor-cpu-float32-dynamic", ("inductor.dynamic", "cpu", "float32")),  # was dtype "float32-dynamic"
    ("eager", ("eager", "?", "?")),
])
def test_a_crash_row_from_the_node_id_alone_splits_the_dynamic_mode_off(cell_id, expected):
    from harness.diagnostics import Diagnostics
    from harness.guard import Crash

    row = Diagnostics._crash_row(f"suites/s.yaml::case[{cell_id}]", None, Crash("SIGSEGV", "SIGSEGV", ""))
    assert (row.backend, row.device, row.dtype) == expected
