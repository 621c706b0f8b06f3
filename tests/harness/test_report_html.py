"""--report DIR: error pictures, the bandwidth chart, and the page itself, rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
import torch

from harness.report_html import error_picture, load_benchmarks, svg_bandwidth_chart, svg_heatmap, svg_histogram, write_report

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks" / "woq_h100.json"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def test_heatmap_puts_the_error_where_it_is_in_quantization_steps():
    expected = torch.zeros(10, 64)
    actual = expected.clone()
    actual[5, 37] = 0.3  # 3 steps of 0.1
    picture = error_picture("compiled vs eager", "output", expected, actual, quant_step=0.1)
    assert picture["unit"].startswith("quantization step 0.1") and picture["grid_shape"] == [10, 64]
    heat = torch.tensor(picture["heat"])
    assert heat.shape == (10, 48)
    row, col = divmod(int(heat.argmax()), heat.shape[1])
    assert row == 5 and col in (27, 28) and heat.max() == pytest.approx(3.0)
    assert int((heat > 0).sum()) <= 2  # pooling windows overlap by at most one column
    edges, counts = picture["hist_edges"], picture["hist_counts"]
    assert sum(counts) == 640 and counts[0] == 639
    (bin_of_3,) = [i for i in range(len(counts)) if edges[i] <= 3.0 < float(edges[i + 1])]
    assert counts[bin_of_3] == 1
    for svg in (svg_heatmap(picture), svg_histogram(picture)):
        ET.fromstring(svg)  # well-formed, inline-able SVG


def test_picture_without_quant_step_uses_the_dtype_spacing():
    expected = torch.full((4,), 2.0, dtype=torch.bfloat16)
    actual = expected.clone()
    actual[1] = 2.0 + 2 * 0.015625  # two bf16 steps at magnitude 2
    picture = error_picture("x", "output", expected, actual, quant_step=None)
    assert "bfloat16 spacing at max |expected|" in picture["unit"] and picture["max_steps"] == pytest.approx(2.0)


def test_a_float32_output_of_a_bfloat16_cell_is_measured_in_bfloat16_steps():
    """The cell computes in bfloat16: float32 steps would call each bf16 rounding ~65 000 steps."""
    from types import SimpleNamespace

    from harness.report_html import cell_detail

    expected = torch.full((4, 4), 2.0).to(torch.bfloat16).float()
    compiled = expected.clone()
    compiled[1, 2] = 2.0 + 2 * 0.015625  # two bf16 steps at magnitude 2, in a float32 tensor
    run = SimpleNamespace(eager={"output": expected}, compiled={"output": compiled}, seconds={}, counters={})
    row = {"backend": "inductor", "dtype": "bfloat16"}
    picture = cell_detail(row, run, SimpleNamespace(quant_step=None), True, "failed")["picture"]
    assert picture["unit"].startswith("torch.bfloat16 spacing at max |expected| (0.0156; the cell's dtype; the output is torch.float32")
    assert picture["max_steps"] == pytest.approx(2.0)
    as_float32 = error_picture("x", "output", expected, compiled, quant_step=None, cell_dtype="float32")
    assert as_float32["max_steps"] > 60000


@pytest.mark.skipif(not BENCHMARKS.is_file(), reason="benchmarks/woq_h100.json is not in this checkout")
def test_bandwidth_chart_draws_every_measured_path_against_copy_bandwidth():
    bench = load_benchmarks(BENCHMARKS)
    rows = [r for r in bench["rows"] if r["scheme"] == "int8"]
    svg = svg_bandwidth_chart("int8", rows, ["ours", "eager"], bench["copy_GBps"])
    root = ET.fromstring(svg)
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.find("{http://www.w3.org/2000/svg}title") is not None]
    assert len(bars) == sum(1 for r in rows for p in ("ours", "eager") if r["paths"].get(p, {}).get("GBps"))
    assert f"copy {bench['copy_GBps']:.0f} GB/s" in svg


def test_relative_error_view_shows_a_constant_relative_error_that_steps_hide():
    torch.manual_seed(0)
    expected = torch.randn(16, 24) * 1000
    actual = expected * (1 + 9.8e-4)  # thousands of float32 steps, one constant relative error
    picture = error_picture("compiled vs eager", "output", expected, actual, quant_step=None)
    assert picture["max_steps"] > 1000
    edges, counts = picture["rel_hist_edges"], picture["rel_hist_counts"]
    (bin_index,) = [i for i, n in enumerate(counts) if n]
    assert (edges[bin_index], edges[bin_index + 1]) == (1e-4, 1e-3) and counts[bin_index] == 16 * 24
    assert picture["max_rel"] == pytest.approx(9.8e-4, rel=1e-3) and picture["median_rel"] == pytest.approx(9.8e-4, rel=1e-3)
    svg = svg_histogram(picture, relative=True)
    assert 'aria-label="relative error histogram"' in svg and "&lt;0.001" in svg


def _texts_inside(svg: str) -> list[str]:
    """The <text> elements whose glyphs (font-size tall, ~0.6 font-size per character wide) leave the SVG."""
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg)
    width, height = float(root.get("width")), float(root.get("height"))
    outside = []
    for text in root.iter(f"{ns}text"):
        if text.get("transform"):
            continue  # rotated labels: the bandwidth chart's, checked on the rendered page
        size, x, y = float(text.get("font-size")), float(text.get("x")), float(text.get("y"))
        span = 0.6 * size * len(text.text or "")
        left = {"middle": x - span / 2, "end": x - span}.get(text.get("text-anchor"), x)
        if y - size < 0 or y > height or left < 0 or left + span > width:
            outside.append(f"{text.text!r} at ({x}, {y}) in {width} x {height}")
    return outside


def test_no_label_is_clipped():
    expected = torch.zeros(1, 3)
    actual = expected.clone()
    actual[0, 1] = 0.5
    picture = error_picture("x", "output", expected, actual, quant_step=0.125)  # one row: shorter than the legend
    for svg in (svg_heatmap(picture), svg_histogram(picture), svg_histogram(picture, relative=True)):
        assert _texts_inside(svg) == [], svg


def test_failures_and_crashes_come_first_and_the_gpu_benchmarks_only_when_asked(tmp_path):
    def cell(case, outcome, line):
        return {"suite": "suites/s.yaml", "case": case, "backend": "eager", "device": "cpu", "dtype": "float32",
                "line": line, "outcome": outcome, "message": "", "picture": None, "counters": {}}

    cells = [cell("a", "passed", 1), cell("b", "skipped", 2), cell("c", "failed", 3), cell("d", "crashed", 4), cell("e", "xfailed", 5)]
    page = write_report(tmp_path / "plain", cells, None, REPO)
    order = [c["case"] for c in json.loads((tmp_path / "plain" / "report.json").read_text())["cells"]]
    assert order == ["d", "c", "e", "a", "b"]
    text = page.read_text()
    assert "Kernel bandwidth" not in text and "H100" not in text
    if BENCHMARKS.is_file():
        assert "Kernel bandwidth" in write_report(tmp_path / "bench", cells, BENCHMARKS, REPO).read_text()


def test_a_cpu_run_draws_no_gpu_benchmark_section(project, tmp_path):
    project.set_programs(PROGRAMS)
    project.suite(SUITE)
    out = tmp_path / "report"
    project.run(f"--report={out}").assert_outcomes(passed=2, failed=1)
    page = (out / "index.html").read_text()
    assert "Kernel bandwidth" not in page and "H100" not in page  # benchmarks/woq_h100.json exists, but nobody asked


PROGRAMS = '''
import torch

def scaled(x):
    return x * 2 + 1

def bumped_when_compiled(x):
    """Numerically wrong only under compilation: one element moves by 0.5."""
    y = x * 2
    if torch.compiler.is_compiling():
        y = y + torch.nn.functional.pad(torch.full((1, 1), 0.5), (5, x.shape[1] - 6, 3, x.shape[0] - 4))
    return y
'''

SUITE = """
cases:
  fine:
    program: progs:scaled
    inputs: {x: {shape: [4, 3]}}
    matrix: {backends: [eager, aot_eager], devices: [cpu]}
    checks: {golden: false}
  bumped:
    program: progs:bumped_when_compiled
    inputs: {x: {shape: [8, 12]}}
    matrix: {backends: [aot_eager], devices: [cpu]}
    checks: {golden: false}
    tolerances: {quant_step: 0.125, max_step_error: 1}
"""


def _png_is_not_blank(path: Path) -> bool:
    """Decode the PNG's pixel rows (zlib, no imaging library) and look for more than one colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos: pos + 4])
        kind = data[pos + 4: pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8: pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return len(set(raw[i] for i in range(0, len(raw), 7))) > 8


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )


def test_report_under_xdist_renders_in_headless_chromium(project, monkeypatch, tmp_path):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    project.set_programs(PROGRAMS)
    project.suite(SUITE)
    out = tmp_path / "report"
    result = project.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::UserWarning", "-n", "2", f"--report={out}", f"--report-benchmarks={BENCHMARKS}",
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([f"quantcheck report: {out / 'index.html'} (3 cells)"])

    report = json.loads((out / "report.json").read_text())
    cells = {(c["case"], c["backend"]): c for c in report["cells"]}
    assert sorted(cells) == [("bumped", "aot_eager"), ("fine", "aot_eager"), ("fine", "eager")]
    failed = cells[("bumped", "aot_eager")]
    assert failed["outcome"] == "failed" and failed["max_abs"] == 0.5 and failed["compile_s"] > 0
    assert failed["counters"].get("aot_autograd.total", 0) >= 1
    picture = failed["picture"]
    assert picture["unit"].startswith("quantization step 0.125") and picture["max_steps"] == 4.0
    assert picture["heat"][3][5] == 4.0 and sum(v > 0 for row in picture["heat"] for v in row) == 1
    assert cells[("fine", "aot_eager")]["sqnr_db"] == "inf" and cells[("fine", "aot_eager")]["picture"] is None

    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it): the page was written but not rendered")
    page = (out / "index.html").as_uri()
    for width in (1280, 480):  # a laptop and a narrow window
        shot = tmp_path / f"report-{width}.png"
        rendered = _chromium(f"--screenshot={shot}", f"--window-size={width},1600", page)
        assert shot.is_file(), rendered.stderr[-2000:]
        assert _png_is_not_blank(shot)
    dom = _chromium("--dump-dom", page).stdout
    for text in ("quantcheck report", "suites/s.yaml::bumped", "1 failed", "2 passed", "Numeric failures",
                 "error in units of the quantization step 0.125", "Kernel bandwidth", "copy 3005 GB/s"):
        assert text in dom, text


def test_complex_outputs_get_a_picture_of_both_parts():
    from harness.report_html import worst_output

    expected = torch.tensor([[1 + 1j, 2j, 3]], dtype=torch.complex64)
    actual = expected.clone()
    actual[0, 1] = 2j + 0.5j  # only the imaginary part moves
    assert worst_output({"o": expected}, {"o": actual}) == "o"
    picture = error_picture("x", "o", expected, actual, quant_step=0.125)
    assert picture["max_steps"] == pytest.approx(4.0)


def test_a_gpu_run_draws_the_benchmarks_of_its_own_gpu_kind(tmp_path):
    from harness.diagnostics import benchmarks_for_gpu

    bench = tmp_path / "benchmarks"
    bench.mkdir()
    for name in ("woq_h100.json", "woq_h200.json", "woq_h200_tune.json"):
        (bench / name).write_text("{}")
    assert benchmarks_for_gpu(tmp_path, "NVIDIA H200") == bench / "woq_h200.json"
    assert benchmarks_for_gpu(tmp_path, "NVIDIA H100 80GB HBM3") == bench / "woq_h100.json"
    assert benchmarks_for_gpu(tmp_path, "NVIDIA A100-SXM4-80GB") is None  # no table of another GPU instead
