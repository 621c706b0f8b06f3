"""The FileCheck check of a cell: each block of ``checks.filecheck`` that applies, on its
target's text (or on each compiled graph's, ``each_graph``), with our diagnostics."""

from __future__ import annotations

from typing import Callable

from ..case import Case, FileCheckBlock
from ..filecheck import generated_checks, prefixes_for, run_filecheck
from ..matrix import MatrixCell
from ..core.execute import extract_kernel_sources
from ..run import CellRun
from .context import CheckContext


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


class FileCheckCheck:
    """``checks.filecheck``: each block that applies to the cell."""

    name = "filecheck"
    per_example = True

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return any(block.when.applies(cell.backend, cell.device, cell.dtype) for block in case.checks.filecheck)

    def run(self, ctx: CheckContext) -> list[str]:
        site = ctx.site  # a fuzz example writes no checks file: its text is one example's
        return filecheck_sections(
            ctx.case, ctx.cell, ctx.run, ctx.dump, ctx.note,
            update_checks=site is not None and site.settings.update_checks, source=site.nodeid if site is not None else "",
        )
