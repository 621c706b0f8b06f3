"""The tolerance model and the numeric report.

Integers and bools compare exactly; so do dtype and shape (a dtype change fails). Floats
must satisfy every check the tolerance declares:

- elementwise ``|actual - expected| <= atol + rtol * |expected|`` (NaN matches NaN, inf
  matches the same inf); ``atol: .inf`` switches it off;
- ``min_sqnr_db``: 10 log10(sum(expected^2) / sum((actual - expected)^2)) >= it;
- ``quant_step`` + ``max_step_error``: max abs error <= max_step_error quantization steps;
- ``float64_factor``: max |actual - ref64| <= factor * max |eager - ref64| + atol, where
  ref64 is the same program run in float64 on the same inputs.

A failure reads like pytest-regressions: mismatched count and percentage, max abs and rel
error with their index, SQNR, and a table of the worst elements.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from .case import Tolerance

WORST_ROWS = 8


@dataclasses.dataclass
class TensorStats:
    mismatched: int
    numel: int
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]
    sqnr_db: float


@dataclasses.dataclass
class Comparison:
    """One side-by-side comparison of two output dicts (e.g. compiled vs eager)."""

    label: str
    ok: bool
    report: str  # empty when ok
    max_abs: float = 0.0
    max_rel: float = 0.0


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size if size else 0)
        flat_index //= size if size else 1
    return tuple(reversed(index))


def _fmt_index(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(i) for i in index) + ("," if len(index) == 1 else "") + ")"


def _fmt(value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}"


def float_errors(expected: torch.Tensor, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(abs error, rel error) in float64 on the CPU; matching NaNs and same-signed infs count as 0."""
    e = expected.detach().to("cpu", torch.float64)
    a = actual.detach().to("cpu", torch.float64)
    both_nan = torch.isnan(e) & torch.isnan(a)
    same_inf = torch.isinf(e) & (e == a)
    abs_err = (a - e).abs()
    abs_err = torch.where(both_nan | same_inf, torch.zeros_like(abs_err), abs_err)
    abs_err = torch.where(torch.isnan(abs_err), torch.full_like(abs_err, math.inf), abs_err)
    rel_err = abs_err / e.abs()
    rel_err = torch.where(abs_err == 0, torch.zeros_like(rel_err), rel_err)
    return abs_err, rel_err


def sqnr_db(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal to noise ratio of ``actual`` as an approximation of ``expected``, in dB (inf when equal)."""
    e = expected.detach().to("cpu", torch.float64)
    a = actual.detach().to("cpu", torch.float64)
    noise = (a - e).pow(2).sum().item()
    signal = e.pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0 or math.isnan(noise):
        return -math.inf
    return 10 * math.log10(signal / noise)


def _stats(expected: torch.Tensor, actual: torch.Tensor, tolerance: Tolerance) -> tuple[TensorStats, torch.Tensor, torch.Tensor]:
    abs_err, rel_err = float_errors(expected, actual)
    e = expected.detach().to("cpu", torch.float64)
    allowed = tolerance.atol + tolerance.rtol * e.abs().nan_to_num(posinf=math.inf)
    mismatch = abs_err > allowed
    numel = abs_err.numel()
    if numel == 0:
        return TensorStats(0, 0, 0.0, (), 0.0, (), math.inf), mismatch, abs_err
    flat_abs = abs_err.reshape(-1)
    flat_rel = rel_err.reshape(-1).nan_to_num(nan=0.0, posinf=math.inf)
    abs_i = int(flat_abs.argmax())
    rel_i = int(flat_rel.argmax())
    stats = TensorStats(
        mismatched=int(mismatch.sum()),
        numel=numel,
        max_abs=float(flat_abs[abs_i]),
        max_abs_index=_unravel(abs_i, tuple(abs_err.shape)),
        max_rel=float(flat_rel[rel_i]),
        max_rel_index=_unravel(rel_i, tuple(abs_err.shape)),
        sqnr_db=sqnr_db(expected, actual) if expected.is_floating_point() else math.inf,
    )
    return stats, mismatch, abs_err


def worst_elements_table(expected: torch.Tensor, actual: torch.Tensor, abs_err: torch.Tensor, mismatch: torch.Tensor) -> list[str]:
    """Fixed-width rows of the worst elements (mismatched ones first), largest error first."""
    flat_err = abs_err.reshape(-1).clone()
    if mismatch.any():
        flat_err[~mismatch.reshape(-1)] = -1.0
    count = min(WORST_ROWS, int((flat_err > 0).sum()) or 1, flat_err.numel())
    order = torch.topk(flat_err, count).indices.tolist()
    e_flat = expected.detach().cpu().reshape(-1)
    a_flat = actual.detach().cpu().reshape(-1)
    rows = [("index", "expected", "actual", "abs err")]
    for i in order:
        rows.append((
            _fmt_index(_unravel(i, tuple(expected.shape))),
            _fmt(e_flat[i].item()),
            _fmt(a_flat[i].item()),
            _fmt(abs_err.reshape(-1)[i].item()),
        ))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]


def _compare_tensor(
    name: str,
    expected: torch.Tensor,
    actual: torch.Tensor,
    tolerance: Tolerance,
    ref64: Optional[torch.Tensor],
    eager: Optional[torch.Tensor],
) -> tuple[bool, list[str], float, float]:
    """(ok, report lines, max abs, max rel) for one named output."""
    header = f"{name}: {tuple(actual.shape)} {str(actual.dtype).removeprefix('torch.')}"
    if actual.dtype != expected.dtype:
        return False, [f"{name}: dtype differs: expected {expected.dtype}, got {actual.dtype}"], math.inf, math.inf
    if actual.shape != expected.shape:
        return False, [f"{name}: shape differs: expected {tuple(expected.shape)}, got {tuple(actual.shape)}"], math.inf, math.inf
    exact = not expected.is_floating_point()
    effective = Tolerance(atol=0.0, rtol=0.0) if exact else tolerance
    stats, mismatch, abs_err = _stats(expected, actual, effective)
    problems = []
    if stats.mismatched:
        problems.append("elementwise")
    if not exact and tolerance.min_sqnr_db is not None and stats.sqnr_db < tolerance.min_sqnr_db:
        problems.append(f"SQNR {stats.sqnr_db:.2f} dB < {tolerance.min_sqnr_db:g} dB")
    if not exact and tolerance.quant_step is not None:
        steps = stats.max_abs / tolerance.quant_step if tolerance.quant_step else math.inf
        if steps > tolerance.max_step_error:
            problems.append(f"max error {steps:.3g} quantization steps > {tolerance.max_step_error:g} (step {tolerance.quant_step:g})")
    f64_line = None
    if not exact and tolerance.float64_factor is not None and ref64 is not None and eager is not None:
        actual_err = float(float_errors(ref64, actual.to(torch.float64))[0].max()) if actual.numel() else 0.0
        eager_err = float(float_errors(ref64, eager.to(torch.float64))[0].max()) if eager.numel() else 0.0
        bound = tolerance.float64_factor * eager_err + tolerance.atol
        f64_line = f"error vs float64: {_fmt(actual_err)} (eager's: {_fmt(eager_err)}; bound {tolerance.float64_factor:g} x eager + atol = {_fmt(bound)})"
        if actual_err > bound:
            problems.append(f"error vs float64 {_fmt(actual_err)} > {_fmt(bound)}")
    if not problems:
        return True, [], stats.max_abs, stats.max_rel
    pct = 100.0 * stats.mismatched / stats.numel if stats.numel else 0.0
    rule = "exact" if exact else f"atol={_fmt(tolerance.atol)}, rtol={_fmt(tolerance.rtol)}"
    lines = [
        header,
        f"  mismatched elements: {stats.mismatched} / {stats.numel} ({pct:.4g}%)  [{rule}]",
        f"  max abs error: {_fmt(stats.max_abs)} at index {_fmt_index(stats.max_abs_index)}",
        f"  max rel error: {_fmt(stats.max_rel)} at index {_fmt_index(stats.max_rel_index)}",
    ]
    if not exact:
        lines.append(f"  SQNR: {_fmt(round(stats.sqnr_db, 2)) if math.isfinite(stats.sqnr_db) else stats.sqnr_db} dB")
    if f64_line:
        lines.append(f"  {f64_line}")
    lines.extend(f"  failed: {p}" for p in problems if p != "elementwise")
    lines.append("  worst elements:")
    lines.extend("    " + row for row in worst_elements_table(expected, actual, abs_err, mismatch))
    return False, lines, stats.max_abs, stats.max_rel


def compare_outputs(
    expected: dict[str, torch.Tensor],
    actual: dict[str, torch.Tensor],
    tolerance: Tolerance,
    *,
    label: str,
    float64: Optional[dict[str, torch.Tensor]] = None,
    eager: Optional[dict[str, torch.Tensor]] = None,
) -> Comparison:
    """Compare two named output sets; the report starts with ``label`` (e.g. 'compiled (inductor) vs eager')."""
    lines: list[str] = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        common = sorted(set(expected) & set(actual))
        lines.append(
            f"outputs differ: missing {', '.join(missing) or '-'}; new {', '.join(extra) or '-'}; matching {', '.join(common) or '-'}"
        )
    worst_abs = worst_rel = 0.0
    for name in expected:
        if name not in actual:
            continue
        ok, tensor_lines, max_abs, max_rel = _compare_tensor(
            name, expected[name], actual[name], tolerance,
            None if float64 is None else float64.get(name),
            None if eager is None else eager.get(name),
        )
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
        lines.extend(tensor_lines)
    ok = not lines
    report = "" if ok else "\n".join([f"{label}:"] + ["  " + line for line in lines])
    return Comparison(label=label, ok=ok, report=report, max_abs=worst_abs, max_rel=worst_rel)
