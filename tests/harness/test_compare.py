"""harness/compare.py: the tolerance model and the report text."""

from __future__ import annotations

import math

import pytest
import torch

from harness.case import Tolerance
from harness.compare import compare_outputs
from harness.core.tolerance import sqnr_db

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
        "    worst elements (the 2 mismatched with the largest abs error, and the max abs and max rel ones):",
        "       index  expected  actual  abs err  rel err",
        "      (1, 2)         0     0.5      0.5      inf  max abs",
        "      (0, 1)         0   -0.25     0.25      inf  max rel",
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


def test_worst_elements_always_hold_the_max_abs_and_max_rel_elements():
    # The largest abs error sits on a large value and is within rtol; two small values mismatch.
    expected = torch.tensor([1000.0, 0.001, 1.0] + [5.0] * 20)
    actual = expected.clone()
    actual[0], actual[1], actual[2] = 1000.5, 0.0011, 1.2
    actual[3:] += torch.linspace(1e-2, 2e-2, 20)  # 20 more mismatches, larger abs error than (1,)
    report = compare_outputs({"o": expected}, {"o": actual}, Tolerance(atol=1e-5, rtol=1e-3), label="x").report
    lines = report.splitlines()
    assert "    max abs error: 0.5 at index (0,)" in lines
    assert "    max rel error: 0.2 at index (2,)" in lines
    heading = lines.index("    worst elements (the 8 mismatched with the largest abs error, and the max abs and max rel ones):")
    rows = lines[heading + 2:]
    assert rows[0].split() == ["(0,)", "1000", "1000.5", "0.5", "0.0005", "max", "abs,", "within", "tolerance"]
    assert rows[1].split()[:1] == ["(2,)"] and rows[1].endswith("max rel")
    assert len(rows) == 9  # 8 mismatched (the max-rel one among them) + the max-abs one


def test_complex_outputs_compare_both_parts():
    z = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex64)
    assert compare_outputs({"o": z}, {"o": z.clone()}, F32, label="x").ok
    real_only = torch.complex(z.real, torch.zeros(2))
    result = compare_outputs({"o": z}, {"o": real_only}, Tolerance(atol=1e-3, rtol=1e-3), label="x")
    assert not result.ok
    assert "    max abs error: 1 at index (0,)" in result.report.splitlines()
    assert "(0,)      1+1j    1+0j        1" in result.report
    close = compare_outputs({"o": z}, {"o": z + 1e-4j}, Tolerance(atol=1e-3, rtol=0.0), label="x")
    assert close.ok, close.report


def test_next_token_kl_divergence_and_top_k_agreement():
    from harness.core.tolerance import next_token_agreement

    expected = torch.tensor([[4.0, 1.0, 0.0, 0.0], [0.0, 3.0, 2.9, 0.0]])
    swapped = torch.tensor([[4.0, 1.0, 0.0, 0.0], [0.0, 2.9, 3.0, 0.0]])  # row 1's argmax moves to its second best
    mean_kl, max_kl, top1 = next_token_agreement(expected, swapped, 1)
    p = torch.tensor([0.0, 3.0, 2.9, 0.0], dtype=torch.float64).softmax(-1)
    q = torch.tensor([0.0, 2.9, 3.0, 0.0], dtype=torch.float64).softmax(-1)
    assert max_kl == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-4) and mean_kl == pytest.approx(max_kl / 2)
    assert top1 == 0.5 and next_token_agreement(expected, swapped, 2)[2] == 1.0

    loose = Tolerance(atol=math.inf, rtol=0.0, max_kl_div=0.01, top_k=2, min_top_k_agreement=1.0)
    assert compare_outputs({"output": expected}, {"output": swapped}, loose, label="x").ok
    strict = Tolerance(atol=math.inf, rtol=0.0, max_kl_div=1e-4, min_top_k_agreement=1.0)
    result = compare_outputs({"output": expected}, {"output": swapped}, strict, label="compiled vs dense")
    assert not result.ok
    assert "next-token distributions (one per row of the last dim): KL mean 0.00" in result.report
    assert "argmax in expected's top-1: 50.0% of rows" in result.report
    assert "failed: mean KL" in result.report and "> 0.0001 nats" in result.report
    assert "failed: top-1 agreement 50.0% < 100.0%" in result.report
