"""harness/perf.py: timing helpers, perf goldens, and the perf check end to end with a fake timer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.case import CaseFormatError, PerfSpec, parse_suite
from harness.golden import device_kind_slug, parse_perf_golden_name
from harness.perf import (
    PerfGoldenError,
    PerfGoldenMissing,
    PerfSample,
    judge,
    perf_section,
    read_perf_golden,
    summarize,
    why_not_timed,
)

pytest_plugins = ["pytester"]

# --------------------------------------------------------------------------- pure helpers


def test_summarize_gives_median_and_relative_interquartile_range():
    sample = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert sample.median_us == 3.0
    assert sample.spread == pytest.approx((4.0 - 2.0) / 3.0)
    assert sample.reps == 5
    with pytest.raises(ValueError):
        summarize([])


def test_device_kind_slug_and_golden_name_round_trip():
    assert device_kind_slug("NVIDIA H200") == "nvidia-h200"
    assert device_kind_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert parse_perf_golden_name("perf-nvidia-h200-inductor_max_autotune-bfloat16.json") == (
        "nvidia-h200", "inductor_max_autotune", "bfloat16",
    )
    assert parse_perf_golden_name("cuda-bfloat16.json") is None
    assert parse_perf_golden_name("perf-x.json") is None


def test_why_not_timed():
    assert why_not_timed("cuda", enabled=False, workers=0, device_count=1) == "perf checks are off (--no-perf)"
    assert why_not_timed("cpu", enabled=True, workers=0, device_count=1) == "timer: events needs cuda; cpu cells have timer: wall"
    assert why_not_timed("cpu", enabled=True, workers=0, device_count=1, timer="wall") is None
    assert why_not_timed("xpu", enabled=True, workers=0, device_count=1) == "no timer for xpu cells"
    assert why_not_timed("cuda", enabled=True, workers=0, device_count=1) is None
    assert why_not_timed("cuda", enabled=True, workers=2, device_count=2) is None
    contended = why_not_timed("cuda", enabled=True, workers=8, device_count=1)
    assert contended.startswith("8 xdist workers share 1 cuda device(s)")


def _golden(median_us: float, **setup) -> dict:
    return {"median_us": median_us, "setup": {"shapes": {"x": [4]}, **setup}, "torch": "2.11.0", "triton": "3.6.0", "reps": 100}


def test_judge_passes_inside_the_band_and_fails_outside_it():
    setup = {"shapes": {"x": [4]}}
    inside = judge(PerfSample(114.0, 0.01, 100), _golden(100.0), 0.15, "g.json", setup)
    assert inside.ok and "ratio 1.14" in inside.note
    slower = judge(PerfSample(130.0, 0.02, 100), _golden(100.0), 0.15, "g.json", setup)
    assert not slower.ok
    assert slower.failure.splitlines()[0] == (
        "perf: slower than the golden: 130.0 µs measured, golden 100.0 µs, ratio 1.30 > 1.15 allowed (band +15%)"
    )
    moved = judge(PerfSample(100.0, 0.0, 100), _golden(100.0), 0.15, "g.json", {"shapes": {"x": [8]}})
    assert not moved.ok and "was measured with shapes = {'x': [4]}; the case now has {'x': [8]}" in moved.failure


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a quantcheck-perf/1 record"),
        ('{"format": "quantcheck-perf/1", "median_us": -1, "setup": {}}', "key 'median_us' must be a positive number (got -1)"),
        ('{"format": "quantcheck-perf/1", "median_us": 3.0}', "key 'setup' must be a mapping"),
    ],
)
def test_bad_perf_golden_is_one_line_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "perf-x-eager-float32.json"
    path.write_text(text)
    with pytest.raises(PerfGoldenError) as error:
        read_perf_golden(path)
    assert str(error.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(error.value)
    with pytest.raises(PerfGoldenMissing):
        read_perf_golden(tmp_path / "absent.json")


def test_perf_section_lists_timed_cells_and_counts_the_rest():
    lines = perf_section([
        "s.yaml::b[x]: 1.0 µs measured", "s.yaml::a[x]: not timed: off", "s.yaml::c[x]: not timed: off",
    ])
    assert lines == ["s.yaml::b[x]: 1.0 µs measured", "2 cell(s) not timed: off"]


# --------------------------------------------------------------------------- the YAML block


def _parse(checks: str):
    text = f"cases:\n  a:\n    program: matmul\n    inputs: {{x: {{shape: [2, 2]}}, y: {{shape: [2, 2]}}}}\n    checks: {checks}\n"
    return parse_suite(text, Path("suites/x.yaml"), "suites/x.yaml").cases[0]


def test_perf_block_parses_with_defaults():
    spec = _parse("{perf: {band: 0.1, cuda_graph: true, when: {backends: [inductor]}}}").checks.perf
    assert (spec.band, spec.cuda_graph, spec.warmup, spec.reps, spec.l2_flush) == (0.1, True, 10, 100, False)
    assert spec.when.backends == ("inductor",)
    assert _parse("{golden: true}").checks.perf is None
    assert PerfSpec().band == 0.15


@pytest.mark.parametrize(
    "checks, message",
    [
        ("{perf: {band: -0.1}}", "suites/x.yaml:5: cases.a.checks.perf.band: must be >= 0.0 (got -0.1)"),
        ("{perf: {reps: 0}}", "suites/x.yaml:5: cases.a.checks.perf.reps: must be >= 1 (got 0)"),
        ("{perf: {speed: fast}}", "suites/x.yaml:5: cases.a.checks.perf.speed: unknown key (got 'speed'; allowed band, warmup, reps, cuda_graph, l2_flush, when, timer, golden, faster_than)"),
        ("{perf: {timer: stopwatch}}", "suites/x.yaml:5: cases.a.checks.perf.timer: 'stopwatch' is not one of the allowed values (got 'stopwatch'; allowed events, graph, wall)"),
        ("{perf: {timer: wall, cuda_graph: true}}", "suites/x.yaml:5: cases.a.checks.perf.cuda_graph: contradicts timer: wall (cuda_graph: true is timer: graph; give one of them)"),
        ("{perf: {golden: false}}", "suites/x.yaml:5: cases.a.checks.perf: checks nothing: golden: false and no faster_than (give a baseline, or keep the perf golden)"),
        ("{perf: {faster_than: {program: linear}}}", "suites/x.yaml:5: cases.a.checks.perf.faster_than: missing key 'by' (how many times faster than the baseline the case must be, e.g. 1.2)"),
        ("{perf: {faster_than: {by: 0}}}", "suites/x.yaml:5: cases.a.checks.perf.faster_than.by: must be > 0 (got 0.0)"),
        ("{perf: {faster_than: {by: 2, inputs: {z: {shape: [1]}}}}}", "suites/x.yaml:5: cases.a.checks.perf.faster_than.inputs.z: not an input of this case (got 'z'; allowed x, y)"),
        ("{perf: 0.15}", "suites/x.yaml:5: cases.a.checks.perf: must be a mapping (got 0.15)"),
    ],
)
def test_bad_perf_block_is_one_line(checks, message):
    with pytest.raises(CaseFormatError) as error:
        _parse(checks)
    assert str(error.value) == message


def test_timer_golden_and_faster_than_parse():
    spec = _parse("{perf: {timer: graph}}").checks.perf
    assert (spec.timer, spec.cuda_graph, spec.golden, spec.faster_than) == ("graph", True, True, None)
    assert _parse("{perf: {cuda_graph: true}}").checks.perf.timer == "graph"  # the older spelling
    spec = _parse("{perf: {timer: wall, faster_than: {inputs: {y: {shape: [2, 2], distribution: ones}}, by: 1.5}}}").checks.perf
    assert spec.golden is False  # a ratio needs no golden unless asked
    baseline = spec.faster_than.baseline
    assert (spec.faster_than.by, baseline.program, baseline.changed, baseline.text) == (1.5, "matmul", ("y",), "matmul, y changed")
    assert [s.distribution for s in baseline.inputs] == ["normal", "ones"]


def test_setup_records_the_wall_timer_and_compile_mode_only_when_used():
    from harness.perf import setup_of

    assert setup_of(PerfSpec(), {"x": [1]}) == {"shapes": {"x": [1]}, "cuda_graph": False, "l2_flush": False}
    assert setup_of(PerfSpec(timer="wall"), {"x": [1]}, "max-autotune")  == {
        "shapes": {"x": [1]}, "cuda_graph": False, "l2_flush": False, "timer": "wall", "compile_mode": "max-autotune",
    }


def test_time_wall_includes_what_the_host_does():
    import time as _time

    from harness.perf import time_wall

    sample = time_wall(lambda: _time.sleep(0.002), PerfSpec(warmup=1, reps=5))
    assert 1900 < sample.median_us < 20000 and sample.reps == 5


def test_perf_cuda_graph_refuses_a_compile_mode_with_cuda_graphs():
    with pytest.raises(CaseFormatError, match=r"compile_mode: compile_mode 'reduce-overhead' replays CUDA graphs itself"):
        _parse("{perf: {cuda_graph: true}}\n    compile_mode: reduce-overhead")
    assert _parse("{perf: {cuda_graph: false}}\n    compile_mode: reduce-overhead").compile_mode == "reduce-overhead"


# --------------------------------------------------------------------------- end to end

FAKE_TIMER = '''

import os

import harness.perf as _perf

_previous = []


def pytest_configure(config):
    """A fake CPU timer: returns FAKE_PERF_US (after calling the program once)."""
    if "FAKE_PERF_US" not in os.environ:
        return

    def measure(fn, spec):
        assert fn() is not None
        return _perf.PerfSample(median_us=float(os.environ["FAKE_PERF_US"]), spread=0.01, reps=spec.reps)

    _previous.append(_perf.register_timer("cpu", _perf.DeviceTimer(device_kind=lambda: "Fake Timer 9000", measure=measure)))


def pytest_unconfigure(config):
    if _previous:
        _perf.register_timer("cpu", _previous.pop())
'''

TIMED = """
cases:
  timed:
    program: progs:scaled
    inputs:
      x: {shape: [4, 3]}
    matrix: {backends: [eager], devices: [cpu]}
    checks: {golden: false, perf: {band: 0.15, reps: 7}}
"""

GOLDEN = "golden/s/timed/perf-fake-timer-9000-eager-float32.json"
# The rerun hint repeats the options Project.run passes.
REFRESH = "python -m pytest 'suites/s.yaml::timed[[]eager-cpu-float32[]]' -p no:cacheprovider -W ignore::UserWarning -W ignore::DeprecationWarning --update-golden"


@pytest.fixture
def timed_project(project, monkeypatch):
    (project.root / "conftest.py").write_text((project.root / "conftest.py").read_text() + FAKE_TIMER)
    project.suite(TIMED)
    monkeypatch.setenv("FAKE_PERF_US", "100")
    return project


def test_perf_golden_workflow(timed_project, monkeypatch):
    project = timed_project
    missing = project.run()
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines([
        f"perf golden missing: {GOLDEN} (measured now: 100.0 µs on Fake Timer 9000)",
        "  record it with:",
        f"    {REFRESH}",
    ])
    assert not (project.root / GOLDEN).exists()

    added = project.run("--add-missing-goldens")
    added.assert_outcomes(passed=1)
    added.stdout.fnmatch_lines(["*quantcheck perf*", f"suites/s.yaml::timed[[]eager-cpu-float32[]]: perf golden written: {GOLDEN}: 100.0 µs"])
    record = json.loads((project.root / GOLDEN).read_text())
    assert (record["median_us"], record["reps"], record["backend"], record["device_kind"]) == (100.0, 7, "eager", "Fake Timer 9000")
    assert record["setup"] == {"shapes": {"x": [4, 3]}, "cuda_graph": False, "l2_flush": False}
    assert record["torch"] == torch.__version__

    monkeypatch.setenv("FAKE_PERF_US", "110")
    summary = project.root / "summary.json"
    within = project.run(f"--summary={summary}")
    within.assert_outcomes(passed=1)
    assert json.loads(summary.read_text())[0]["perf_us"] == 110.0
    within.stdout.fnmatch_lines(["*: 110.0 µs measured (spread 1%), golden 100.0 µs, ratio 1.10 (band +15%)"])

    monkeypatch.setenv("FAKE_PERF_US", "130")
    slower = project.run()
    slower.assert_outcomes(failed=1)
    slower.stdout.fnmatch_lines([
        "suites/s.yaml:2: case 'timed' [[]eager-cpu-float32[]] failed",
        "perf: slower than the golden: 130.0 µs measured, golden 100.0 µs, ratio 1.30 > 1.15 allowed (band +15%)",
        f"  golden: {GOLDEN} (torch *, triton *, spread 1%, 7 reps)",
        "  now: spread 1%, 7 reps",
        "  if the change is intended, record the new time with:",
        f"    {REFRESH}",
    ])

    updated = project.run("--update-golden")
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines([f"*: perf golden written: {GOLDEN}: 130.0 µs (was 100.0 µs)"])
    assert json.loads((project.root / GOLDEN).read_text())["median_us"] == 130.0
    project.run().assert_outcomes(passed=1)

    # The perf golden belongs to the case: not stale while the case declares perf, stale after.
    assert "stale" not in project.run().stdout.str()
    project.suite(TIMED.replace(", perf: {band: 0.15, reps: 7}", ""))
    project.run().stdout.fnmatch_lines([f"stale (no case declares it): {GOLDEN}"])


def test_corrupt_perf_golden_is_one_line_and_not_overwritten(timed_project):
    project = timed_project
    path = project.root / GOLDEN
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "quantcheck-perf/1", "median_us": "fast"')
    before = path.read_bytes()
    result = project.run("--add-missing-goldens")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"perf golden unusable: {GOLDEN}: not valid JSON (*)",
        "  nothing was overwritten; to regenerate it:",
        f"    {REFRESH}",
    ])
    assert path.read_bytes() == before
    project.run("--update-golden").assert_outcomes(passed=1)
    assert json.loads(path.read_text())["median_us"] == 100.0


def test_changed_shapes_fail_against_the_old_perf_golden(timed_project):
    project = timed_project
    project.run("--add-missing-goldens").assert_outcomes(passed=1)
    project.suite(TIMED.replace("shape: [4, 3]", "shape: [8, 3]"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"perf golden {GOLDEN} was measured with shapes = {{'x': [4, 3]}}; the case now has {{'x': [8, 3]}}: the numbers do not compare",
    ])


def test_cells_not_timed_say_why(timed_project, monkeypatch):
    project = timed_project
    off = project.run("--no-perf")
    off.assert_outcomes(passed=1)
    off.stdout.fnmatch_lines(["1 cell(s) not timed: perf checks are off (--no-perf)"])
    monkeypatch.delenv("FAKE_PERF_US")  # the real CPU timer: wall only
    cpu = project.run()
    cpu.assert_outcomes(passed=1)
    cpu.stdout.fnmatch_lines(["1 cell(s) not timed: timer: events needs cuda; cpu cells have timer: wall"])
    assert not (project.root / "golden").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA events; needs a CUDA device")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_time_cuda_measures_a_matmul(cuda_graph):
    from harness.perf import time_cuda

    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    sample = time_cuda(lambda: a @ a, PerfSpec(reps=20, warmup=3, cuda_graph=cuda_graph))
    assert sample.reps == 20
    assert 0.5 < sample.median_us < 10_000  # a 1024^3 bf16 matmul takes some µs on any GPU


RATIO = """
cases:
  ratio:
    program: progs:quick
    inputs:
      x: {shape: [4, 3]}
    matrix: {backends: [eager, inductor], devices: [cpu], dynamic: [true]}
    checks:
      golden: false
      perf: {timer: wall, warmup: 2, reps: 9, faster_than: {program: progs:slow, by: BY}}
"""

RATIO_PROGRAMS = """
import time

def quick(x):
    return x + 1

def slow(x):
    time.sleep(0.004)  # a graph break: the sleep runs in every call, compiled or not
    return x + 1
"""


@pytest.mark.parametrize("by, outcome", [(2.0, "passed"), (1000.0, "failed")])
def test_faster_than_times_the_baseline_in_the_same_cell_on_the_cpu(project, by, outcome):
    project.set_programs(RATIO_PROGRAMS)
    project.suite(RATIO.replace("BY", str(by)))
    result = project.run("-W", "ignore::UserWarning")
    result.assert_outcomes(**{outcome: 2})
    if outcome == "passed":
        result.stdout.fnmatch_lines([
            "*quantcheck perf*",
            "suites/s.yaml::ratio[[]eager-cpu-float32-dynamic[]]: * µs measured, baseline progs:slow * µs: *x as fast (needs >= 2.00x)",
        ])
    else:
        result.stdout.fnmatch_lines([
            "perf: not 1000.00x as fast as the baseline: * µs measured, baseline * µs, ratio *",
            "  baseline: progs:slow, timed in this cell the same way",
        ])
    assert not (project.root / "golden").exists()  # no perf golden asked for


def test_a_perf_golden_of_a_dynamic_cell_names_its_mode(timed_project):
    project = timed_project
    project.suite(TIMED.replace("devices: [cpu]}", "devices: [cpu], dynamic: [true]}"))
    project.run("--add-missing-goldens").assert_outcomes(passed=1)
    assert (project.root / "golden/s/timed/perf-fake-timer-9000-eager.dynamic-float32.json").exists()
    assert "stale" not in project.run().stdout.str()
