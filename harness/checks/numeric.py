"""The numeric checks of a run: compiled vs eager (with ``float64_factor``, KL and top-k where
the tolerance declares them), a fuzz case's reference, and ``checks.references``."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..case import Case
from ..case.check_sections import CheckKey, CheckSection, parse_flag
from ..case.model import Reference
from ..case.validators import At, list_items, optional_when, require_str
from ..compare import Comparison, compare_outputs
from ..core.dtypes import DTYPES
from ..matrix import MatrixCell
from ..core.execute import flatten_outputs
from ..core.programs import make_program
from ..run import CellRun, build_inputs
from .context import CheckContext


def compare_with_eager(case: Case, cell: MatrixCell, run: CellRun, *, label: str, float64: bool = True) -> Comparison:
    """Compiled outputs against eager's of the same run, within the case's tolerance for the
    cell's dtype; ``float64``: with the ``float64_factor`` check where the case declares it."""
    return compare_outputs(
        run.eager, run.compiled, case.tolerance_for(cell.dtype), label=label,
        float64=run.float64 if float64 else None, eager=run.eager if float64 else None,
    )


def compare_eager_with_float64(case: Case, cell: MatrixCell, run: CellRun) -> Optional[Comparison]:
    """Eager against the program's float64 run (cast back to eager's dtypes), within the
    case's tolerance; None when the run has no float64 outputs."""
    if not run.float64:
        return None
    reference = {n: t.to(run.eager[n].dtype) for n, t in run.float64.items() if n in run.eager}
    return compare_outputs(reference, run.eager, case.tolerance_for(cell.dtype), label="eager vs float64")


def compare_with_references(case: Case, cell: MatrixCell, run: CellRun) -> list[Comparison]:
    """The compiled outputs against each of ``checks.references`` (run eagerly in this cell),
    cast to the compiled outputs' dtypes, within the reference's tolerance."""
    comparisons = []
    for ref in case.checks.references:
        if ref.name not in run.references:
            continue
        expected = {n: t.to(run.compiled[n].dtype) if n in run.compiled else t for n, t in run.references[ref.name].items()}
        comparisons.append(compare_outputs(
            expected, run.compiled, ref.tolerance_for(cell.dtype),
            label=f"compiled ({cell.backend}) vs reference {ref.name!r} ({ref.variant.text}, eager)",
        ))
    return comparisons


def compare_with_reference(case: Case, cell: MatrixCell, run: CellRun, reference: str) -> list[Comparison]:
    """Eager's and the compiled outputs against a fuzz case's reference ``module:function``."""
    expected = reference_outputs(case, cell, reference, like=run.eager)
    tolerance = case.tolerance_for(cell.dtype)
    return [
        compare_outputs(expected, actual, tolerance, label=f"{label} vs reference {reference}")
        for label, actual in (("eager", run.eager), (f"compiled ({cell.backend})", run.compiled))
    ]


def reference_outputs(case: Case, cell: MatrixCell, reference: str, like: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The reference's outputs on fresh inputs, cast to the dtype and device of ``like``'s."""
    fn = make_program(reference, dict(case.params))
    outputs = flatten_outputs(fn(*build_inputs(case, cell.device, DTYPES[cell.dtype])))
    return {
        name: t.detach().to(device=like[name].device, dtype=like[name].dtype) if name in like else t.detach()
        for name, t in outputs.items()
    }


class EagerCheck:
    """``checks.eager``: the compiled outputs against eager's of the same run."""

    name = "eager"
    per_example = True
    keys = {
        "eager": CheckKey(parse_flag, default=True),
        "inputs_after": CheckKey(parse_flag, default=False),  # read by the run: inputs after the call join the compared outputs
    }

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return case.checks.eager

    def run(self, ctx: CheckContext) -> list[str]:
        # A fuzz example's inputs are its own: no "same run" (each example runs once).
        same = "same run, same inputs" if ctx.site is not None else "same inputs"
        comparison = compare_with_eager(ctx.case, ctx.cell, ctx.run, label=f"compiled ({ctx.cell.backend}) vs eager, {same}")
        ctx.comparisons.append(comparison)
        ctx.compiled_matches_eager = comparison.ok
        return [] if comparison.ok else [comparison.report]


class FuzzReferenceCheck:
    """A fuzz case's ``reference: module:function``: eager's and the compiled outputs against it."""

    name = "fuzz reference"
    per_example = True

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return True  # the reference is the example's (CheckContext.reference); a plain cell has none

    def run(self, ctx: CheckContext) -> list[str]:
        if ctx.reference is None:
            return []
        return [c.report for c in compare_with_reference(ctx.case, ctx.cell, ctx.run, ctx.reference) if not c.ok]


REFERENCE_KEYS = ("name", "program", "params", "inputs", "tolerances", "when")


def _parse_references(value: Any, at: At, section: CheckSection) -> tuple[Reference, ...]:
    out = []
    for item, item_at in list_items(value, at):
        parsed, mapping = section.variant(item, item_at, REFERENCE_KEYS)
        for key in ("name", "tolerances"):
            if key not in mapping:
                raise item_at.error(f"missing key '{key}'")
        name = require_str(mapping["name"], item_at.key(mapping, "name"))
        if name in {r.name for r in out}:
            raise item_at.key(mapping, "name").error("named twice", got=name)
        tolerances = section.tolerances(mapping["tolerances"], item_at.key(mapping, "tolerances"))
        when = optional_when(mapping, item_at)
        out.append(Reference(name=name, variant=parsed, tolerances=tolerances, when=when))
    return tuple(out)


class ReferencesCheck:
    """``checks.references``: the compiled outputs against other programs run eagerly (the
    dense model, float64). Not in the summary's worst error: a reference differs by design."""

    name = "references"
    per_example = True
    keys = {"references": CheckKey(_parse_references, default=())}

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return bool(case.checks.references)

    def run(self, ctx: CheckContext) -> list[str]:
        return [c.report for c in compare_with_references(ctx.case, ctx.cell, ctx.run) if not c.ok]
