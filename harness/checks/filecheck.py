"""The FileCheck check of a cell: each block of ``checks.filecheck`` that applies, on its
target's text (or on each compiled graph's, ``each_graph``), with our diagnostics."""

from __future__ import annotations

import re
from typing import Any, Callable

from ..case import Case, FileCheckBlock
from ..case.check_sections import CheckKey, CheckSection
from ..case.model import FILECHECK_TARGETS
from ..case.validators import At, check_directives, list_items, optional_when, require_bool, require_choice, require_map, require_str
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


EACH_GRAPH_TARGETS = ("output_code", "kernel_source")  # texts the run keeps per compiled graph


def _parse_filechecks(value: Any, at: At, section: CheckSection) -> tuple[FileCheckBlock, ...]:
    out = []
    for item, item_at in list_items(value, at):
        block = require_map(item, item_at, ("target", "check", "file", "prefixes", "when", "each_graph"))
        if ("check" in block) == ("file" in block):
            raise item_at.error("needs one of 'check' (FileCheck text: CHECK lines) and 'file' (a checks file beside the suite)")
        target = require_choice(block.get("target", "output_code"), item_at.child("target", block.value_lines.get("target", item_at.line)), FILECHECK_TARGETS)
        prefixes = ("CHECK",)
        if "prefixes" in block:
            prefixes_at = item_at.child("prefixes", block.value_lines["prefixes"])
            prefixes = tuple(require_str(p, p_at) for p, p_at in list_items(block["prefixes"], prefixes_at))
            bad = [p for p in prefixes if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", p)]
            if bad:
                raise prefixes_at.error("a prefix is a letter, then letters, digits, '-' or '_'", got=bad[0])
        when = optional_when(block, item_at)
        each_graph = False
        if "each_graph" in block:
            each_at = item_at.child("each_graph", block.value_lines["each_graph"])
            each_graph = require_bool(block["each_graph"], each_at)
            if each_graph and target not in EACH_GRAPH_TARGETS:
                raise each_at.error(f"target {target!r} is not kept per graph", got=target, allowed=EACH_GRAPH_TARGETS)
        if "file" in block:  # read (and checked) by the loader, which knows the suite file's folder
            file = require_str(block["file"], item_at.child("file", block.value_lines["file"]))
            out.append(FileCheckBlock(target=target, check="", first_check_line=1, when=when, line=item_at.line,
                                      prefixes=prefixes, file=file, each_graph=each_graph))
            continue
        check_at = item_at.child("check", block.value_lines["check"])
        check = require_str(block["check"], check_at)
        # A block scalar ('|' or '>') starts on the line after its indicator.
        first_line = check_at.line + (1 if block.value_styles.get("check") in ("|", ">") else 0)
        check_directives(check, check_at, first_line, prefixes)
        out.append(FileCheckBlock(target=target, check=check, first_check_line=first_line, when=when, line=item_at.line,
                                  prefixes=prefixes, each_graph=each_graph))
    return tuple(out)


class FileCheckCheck:
    """``checks.filecheck``: each block that applies to the cell."""

    name = "filecheck"
    per_example = True
    keys = {"filecheck": CheckKey(_parse_filechecks, default=())}

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return any(block.when.applies(cell.backend, cell.device, cell.dtype) for block in case.checks.filecheck)

    def run(self, ctx: CheckContext) -> list[str]:
        site = ctx.site  # a fuzz example writes no checks file: its text is one example's
        return filecheck_sections(
            ctx.case, ctx.cell, ctx.run, ctx.dump, ctx.note,
            update_checks=site is not None and site.settings.update_checks, source=site.nodeid if site is not None else "",
        )
