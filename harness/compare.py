"""The tolerance model and the numeric report.

Integers and bools compare exactly; so do dtype and shape (a dtype change fails). Floats
must satisfy every check the tolerance declares:

- elementwise ``|actual - expected| <= atol + rtol * |expected|`` (NaN matches NaN, inf
  matches the same inf); ``atol: .inf`` switches it off;
- ``min_sqnr_db``: 10 log10(sum(expected^2) / sum((actual - expected)^2)) >= it;
- ``quant_step`` + ``max_step_error``: max abs error <= max_step_error quantization steps;
- ``float64_factor``: max |actual - ref64| <= factor * max |eager - ref64| + atol, where
  ref64 is the same program run in float64 on the same inputs;
- ``max_kl_div`` / ``min_top_k_agreement`` (+ ``top_k``): the last dimension read as logits,
  the mean KL divergence of the next-token distributions and the share of rows whose argmax
  is in expected's top k.

Complex outputs compare like floats, by the modulus of the difference (real and imaginary
parts both count).

A failure reads like pytest-regressions: mismatched count and percentage, max abs and rel
error with their index, SQNR, and a table of the worst elements: the mismatched ones with
the largest abs error, and always the max-abs and max-rel elements named above it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

# The tolerance model's numbers (errors, SQNR, which checks an output fails) are the core's;
# this module turns them into the report.
from .core.tolerance import Tolerance, judge_tensor, unravel

WORST_ROWS = 8


@dataclasses.dataclass
class Comparison:
    """One side-by-side comparison of two output dicts (e.g. compiled vs eager)."""

    label: str
    ok: bool
    report: str  # empty when ok
    max_abs: float = 0.0
    max_rel: float = 0.0


def _fmt_index(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(i) for i in index) + ("," if len(index) == 1 else "") + ")"


def _fmt(value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, complex):
        return f"{_fmt(value.real)}{'' if _fmt(value.imag).startswith('-') else '+'}{_fmt(value.imag)}j"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}"


def worst_elements_table(
    expected: torch.Tensor, actual: torch.Tensor, abs_err: torch.Tensor, rel_err: torch.Tensor, mismatch: torch.Tensor,
) -> tuple[str, list[str]]:
    """(what the table lists, its fixed-width rows): the up to WORST_ROWS mismatched elements
    with the largest abs error (all elements when none mismatches, e.g. an SQNR failure),
    plus the max-abs and max-rel elements wherever they are, largest abs error first."""
    flat_abs = abs_err.reshape(-1)
    flat_rel = rel_err.reshape(-1).nan_to_num(nan=0.0, posinf=math.inf)
    flat_mismatch = mismatch.reshape(-1)
    any_mismatch = bool(flat_mismatch.any())
    ranked = torch.where(flat_mismatch, flat_abs, torch.full_like(flat_abs, -1.0)) if any_mismatch else flat_abs
    count = min(WORST_ROWS, int(flat_mismatch.sum()) if any_mismatch else flat_abs.numel())
    chosen = set(torch.topk(ranked, count).indices.tolist()) if count else set()
    max_abs_i, max_rel_i = int(flat_abs.argmax()), int(flat_rel.argmax())
    chosen |= {max_abs_i, max_rel_i}
    order = sorted(chosen, key=lambda i: (-float(flat_abs[i]), i))
    e_flat = expected.detach().cpu().reshape(-1)
    a_flat = actual.detach().cpu().reshape(-1)
    rows = [("index", "expected", "actual", "abs err", "rel err", "")]
    for i in order:
        notes = [n for n, hit in (("max abs", i == max_abs_i), ("max rel", i == max_rel_i)) if hit]
        if any_mismatch and not bool(flat_mismatch[i]):
            notes.append("within tolerance")
        rows.append((
            _fmt_index(unravel(i, tuple(expected.shape))),
            _fmt(e_flat[i].item()),
            _fmt(a_flat[i].item()),
            _fmt(flat_abs[i].item()),
            _fmt(flat_rel[i].item()),
            ", ".join(notes),
        ))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row[:-1], widths)) + (f"  {row[-1]}" if row[-1] else "") for row in rows]
    picked = f"the {count} mismatched with the largest abs error" if any_mismatch else f"the {count} with the largest abs error"
    return f"worst elements ({picked}, and the max abs and max rel ones):", lines


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
    verdict = judge_tensor(expected, actual, tolerance, ref64, eager)
    exact, stats = verdict.exact, verdict.stats
    problems = []
    if stats.mismatched:
        problems.append("elementwise")
    if verdict.sqnr_failed:
        problems.append(f"SQNR {stats.sqnr_db:.2f} dB < {tolerance.min_sqnr_db:g} dB")
    if verdict.steps_failed:
        problems.append(f"max error {verdict.steps:.3g} quantization steps > {tolerance.max_step_error:g} (step {tolerance.quant_step:g})")
    f64_line = None
    if verdict.float64 is not None:
        actual_err, eager_err, bound = verdict.float64
        f64_line = f"error vs float64: {_fmt(actual_err)} (eager's: {_fmt(eager_err)}; bound {tolerance.float64_factor:g} x eager + atol = {_fmt(bound)})"
        if verdict.float64_failed:
            problems.append(f"error vs float64 {_fmt(actual_err)} > {_fmt(bound)}")
    distribution_line = None
    if verdict.distribution is not None:
        mean_kl, max_kl, agreement = verdict.distribution
        k = int(tolerance.top_k or 1)
        distribution_line = (
            f"next-token distributions (one per row of the last dim): KL mean {_fmt(mean_kl)} nats, max {_fmt(max_kl)}; "
            f"argmax in expected's top-{k}: {agreement:.1%} of rows"
        )
        if verdict.kl_failed:
            problems.append(f"mean KL {_fmt(mean_kl)} > {_fmt(tolerance.max_kl_div)} nats")
        if verdict.top_k_failed:
            problems.append(f"top-{k} agreement {agreement:.1%} < {tolerance.min_top_k_agreement:.1%}")
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
    if distribution_line:
        lines.append(f"  {distribution_line}")
    lines.extend(f"  failed: {p}" for p in problems if p != "elementwise")
    heading, rows = worst_elements_table(expected, actual, verdict.abs_err, verdict.rel_err, verdict.mismatch)
    lines.append(f"  {heading}")
    lines.extend("    " + row for row in rows)
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


def check_sampled_shapes(sampled_from: dict[str, list[int]], full: dict[str, torch.Tensor], label: str) -> Optional[Comparison]:
    """A failed Comparison when an output stored as a sample (``golden_sample``) now has another
    full shape: the sample of a (2, 8) output is that of a (4, 4) one, so values alone cannot tell."""
    lines = [
        f"{name}: shape differs: expected {tuple(shape)} (the golden's sample was drawn from that), got {tuple(full[name].shape)}"
        for name, shape in sampled_from.items()
        if name in full and list(full[name].shape) != list(shape)
    ]
    if not lines:
        return None
    return Comparison(label=label, ok=False, report="\n".join([f"{label}:"] + ["  " + line for line in lines]), max_abs=math.inf, max_rel=math.inf)
