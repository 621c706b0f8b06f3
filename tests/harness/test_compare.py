"""harness/compare.py: the tolerance model and the report text."""

from __future__ import annotations

import math

import torch

from harness.case import Tolerance
from harness.compare import compare_outputs, sqnr_db

F32 = Tolerance(atol=1e-5, rtol=1.3e-6)


def test_equal_outputs_pass_with_no_report():
    x = torch.randn(4, 4)
    result = compare_outputs({"output": x}, {"output": x.clone()}, F32, label="a vs b")
    assert result.ok and result.report == "" and result.max_abs == 0.0


def test_report_lists_counts_max_errors_sqnr_and_worst_elements():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    actual[0, 1] = -0.25
    result = compare_outputs({"output": expected}, {"output": actual}, F32, label="compiled (inductor) vs eager")
    assert not result.ok
    assert result.report.splitlines() == [
        "compiled (inductor) vs eager:",
        "  output: (2, 3) float32",
        "    mismatched elements: 2 / 6 (33.33%)  [atol=1e-05, rtol=1.3e-06]",
        "    max abs error: 0.5 at index (1, 2)",
        "    max rel error: inf at index (0, 1)",
        "    SQNR: -inf dB",
        "    worst elements:",
        "       index  expected  actual  abs err",
        "      (1, 2)         0     0.5      0.5",
        "      (0, 1)         0   -0.25     0.25",
    ]
    assert result.max_abs == 0.5


def test_integers_compare_exactly_and_dtype_or_shape_change_fails():
    a = torch.arange(6)
    assert not compare_outputs({"o": a}, {"o": a + (a == 3)}, Tolerance(atol=10, rtol=10), label="x").ok
    dtype = compare_outputs({"o": a}, {"o": a.to(torch.int32)}, F32, label="x")
    assert "o: dtype differs: expected torch.int64, got torch.int32" in dtype.report
    shape = compare_outputs({"o": a}, {"o": a.reshape(2, 3)}, F32, label="x")
    assert "o: shape differs: expected (6,), got (2, 3)" in shape.report


def test_missing_and_new_outputs_are_named():
    x = torch.ones(2)
    result = compare_outputs({"output[0]": x, "output[1]": x}, {"output[0]": x, "output[2]": x}, F32, label="x")
    assert "outputs differ: missing output[1]; new output[2]; matching output[0]" in result.report


def test_nan_matches_nan_and_inf_matches_same_inf():
    x = torch.tensor([math.nan, math.inf, -math.inf, 1.0])
    assert compare_outputs({"o": x}, {"o": x.clone()}, F32, label="x").ok
    y = x.clone()
    y[0] = 0.0
    assert not compare_outputs({"o": x}, {"o": y}, F32, label="x").ok


def test_sqnr_and_quant_step_and_float64_factor():
    torch.manual_seed(0)
    expected = torch.randn(1000)
    noisy = expected + 0.01 * torch.randn(1000)
    assert 38 < sqnr_db(expected, noisy) < 42
    loose = Tolerance(atol=math.inf, rtol=0.0, min_sqnr_db=45.0)
    assert "failed: SQNR" in compare_outputs({"o": expected}, {"o": noisy}, loose, label="x").report
    steps = Tolerance(atol=math.inf, rtol=0.0, quant_step=0.01, max_step_error=2.0)
    assert "quantization steps > 2" in compare_outputs({"o": expected}, {"o": noisy}, steps, label="x").report
    ref64 = expected.double()
    eager = expected + 0.001
    factor = Tolerance(atol=0.0, rtol=math.inf, float64_factor=2.0)
    result = compare_outputs({"o": eager}, {"o": noisy}, factor, label="x", float64={"o": ref64}, eager={"o": eager})
    assert "failed: error vs float64" in result.report
    fine = compare_outputs({"o": eager}, {"o": expected + 0.0015}, factor, label="x", float64={"o": ref64}, eager={"o": eager})
    assert fine.ok, fine.report
