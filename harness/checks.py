"""The checks of one cell's run, written once: compiled vs eager (and float64), a fuzz case's
reference, counters and graphs, FileCheck.

``CaseItem`` and ``FuzzItem`` (items.py) and ``--bisect`` (bisect.py) all judge a run
through these, so a cell, each fuzz example of it and each bisect rerun are held to the
same rules. Each returns comparisons or report sections (empty: the check passed);
goldens stay with the item (they need the session's golden directory and write mode).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .case import Case, FileCheckBlock
from .compare import Comparison, compare_outputs
from .counters import check_counters, check_graphs
from .core.dtypes import DTYPES
from .core.execute import extract_kernel_sources, flatten_outputs
from .core.programs import make_program
from .filecheck import generated_checks, prefixes_for, run_filecheck
from .matrix import MatrixCell
from .run import CellRun, build_inputs


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


def counter_sections(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """The ``checks.counters``, ``graphs`` and ``graph_breaks`` failures, as one section."""
    failures = check_counters(case.checks.counters, run.counters, cell, case.display_path)
    failures += check_graphs(case.checks, run.graphs, run.graph_breaks, run.graph_break_reasons, case.line, case.display_path)
    failures += recompile_failures(case, cell, run)
    return ["counters and graphs:\n" + "\n".join("  " + f for f in failures)] if failures else []


def recompile_failures(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """``checks.recompiles`` of the cell's ``dynamic:`` mode against the calls that compiled anew."""
    mode = getattr(cell, "dynamic", None)
    failures = []
    for bound in case.checks.recompiles:
        if bound.dynamic is not None and bound.dynamic != mode:
            continue
        if not bound.holds(run.recompiles):
            compiled_by = sorted({index for index, _ in run.graph_codes})
            failures.append(
                f"{case.display_path}:{bound.line}: recompiles: {run.recompiles}, expected {bound.op} {bound.count} "
                f"(calls that compiled, counting from 0: {', '.join(map(str, compiled_by)) or 'none'})"
            )
    return failures


def writes_check_file(case: Case, block: FileCheckBlock, cell: MatrixCell) -> bool:
    """Under --update-checks, the one cell that writes ``block``'s file on this cell's device:
    the first of the matrix, in order, that the block applies to."""
    for backend in case.matrix.backends:
        for dtype in case.matrix.dtypes:
            if block.when.applies(backend, cell.device, dtype):
                return (backend, dtype) == (cell.backend, cell.dtype)
    return False


def filecheck_sections(
    case: Case, cell: MatrixCell, run: CellRun, dump: Callable[[str, str], str], note: Callable[[str], None],
    update_checks: bool = False, source: str = "",
) -> list[str]:
    """One section per FileCheck block of the cell that fails; ``dump(target, text)`` saves the
    checked text where a person can open it and returns its path; ``note(text)`` hears of a
    block whose target this run could not produce (it is not run). ``update_checks``: a block
    with a checks file gets it (re)written from this run's text (:func:`writes_check_file`;
    ``source`` names the cell in its first line), then checked against it."""
    failures = []
    for block in case.checks.filecheck:
        if not block.when.applies(cell.backend, cell.device, cell.dtype):
            continue
        if block.target in run.unavailable:
            note(f"FileCheck on {block.target} not run: {run.unavailable[block.target]}")
            continue
        check = block.check
        if block.file_path is not None and update_checks and writes_check_file(case, block, cell):
            check = generated_checks(block.target, run.artifacts[block.target], block.prefixes[0], source)
            block.file_path.parent.mkdir(parents=True, exist_ok=True)
            block.file_path.write_text(check, encoding="utf-8")
        elif block.file_path is not None and not block.file_path.is_file():
            failures.append(f"FileCheck on {block.target}: checks file {block.file} does not exist; write it from this cell's {block.target} with --update-checks")
            continue
        if block.each_graph:
            texts = [
                (f"{block.target} of graph {number} (compiled by call {call})", _graph_text(block.target, code))
                for number, (call, code) in enumerate(run.graph_codes)
            ]
            if not texts:
                failures.append(f"FileCheck on {block.target} of each graph (each_graph: true): the cell compiled no graph")
        else:
            texts = [(block.target, run.artifacts[block.target])]
        for label, text in texts:
            result = run_filecheck(
                check, text,
                prefixes=prefixes_for(cell.backend, cell.device, block.prefixes),
                variables={"DEVICE": cell.device, "DTYPE": cell.dtype, "BACKEND": cell.backend},
                check_path=block.file or case.display_path,
                first_check_line=block.first_check_line,
                input_label=label,
                input_dump=None,
            )
            if not result.ok:
                name = label.replace(" ", "_").replace("(", "").replace(")", "")
                failures.append(result.report + f"\n  the whole {label}: {dump(name, text)}")
    return failures


def _graph_text(target: str, code: str) -> str:
    """One graph's text for ``target`` (``output_code`` or ``kernel_source``)."""
    return extract_kernel_sources(code) if target == "kernel_source" else code
