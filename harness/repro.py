"""Repro scripts: every failing cell leaves a standalone Python file that reproduces it.

The script is the source of :mod:`harness.core`'s modules (input construction, built-in
programs, running a program, the tolerance model, the golden sample: the code the harness
runs), then :mod:`harness.repro_template`'s (reading the spec, printing the verdict), then the
cell's ``SPEC``: the program (``module:function`` + params, or a built-in by name), each
input's spec and seed, the backend, device, dtype, Inductor and Dynamo config, the case's
passes, and every check the cell makes (tolerance, golden path, counters, graphs,
FileCheck blocks). Running it needs torch, the program's module and the pass factories,
not the harness; it exits 1 with the failures printed, 0 once the cell would pass.

Inputs are rebuilt from their seeds. An input whose builder no script can import (a
lambda, a function defined inside another) is saved beside the script as
``<script>.inputs.safetensors`` instead.

Scripts go to ``.quantcheck/repro/`` under the rootdir, or ``--repro-dir``; a cell that
passes removes its stale script.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import pprint
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import torch

from . import repro_template
from .case import Case
from .core import backends, dtypes, execute, inputs, programs, sample, tolerance
from .filecheck import prefixes_for
from .matrix import MatrixCell
from .run import build_inputs, case_inductor_config, compile_mode, compiled_runs, input_seed

DEFAULT_DIR = ".quantcheck/repro"
#: The core's modules, in the order a script holds them (each after those it imports).
SCRIPT_MODULES = (dtypes, programs, inputs, backends, execute, tolerance, sample)


def script_path(directory: Path, suite_key: str, case: Case, cell: MatrixCell) -> Path:
    """``<suite key, '/' as '.'>.<case>.<cell>.py``: suites of one name in two folders get two scripts."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{suite_key.replace('/', '.')}.{case.name}.{cell.id}")
    return directory / f"{name}.py"


def _importable_name(obj: Any) -> Optional[str]:
    """'module:qualname' when a fresh interpreter can import ``obj`` by that name, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    try:
        if programs.import_program(f"{module}:{qualname}") is not obj:
            return None
    except (programs.ProgramImportError, TypeError):
        return None
    return f"{module}:{qualname}"


def _program_spec(case: Case) -> dict[str, Any]:
    builtin = programs.builtin_program(case.program)
    if builtin is None:
        return {"kind": "function", "target": case.program, "params": dict(case.params)}
    params = {name: dict(case.params).get(name, spec.default) for name, spec in builtin.params.items()}
    core = programs.CORE_BUILTINS.get(case.program)
    if core is not None and core.build is builtin.build:  # a script has the core's built-ins
        return {"kind": "builtin", "name": case.program, "params": params}
    target = _importable_name(builtin.build)
    if target is None:
        raise ValueError(f"built-in program {case.program!r}: its build function cannot be imported by a script")
    return {"kind": "builder", "target": target, "params": params}


def _input_builder(spec) -> str:
    """'tensor', an importable 'module:builder', or 'saved' (the values go beside the script)."""
    if spec.kind == "tensor":
        return "tensor"
    if ":" in spec.kind and inputs.input_kind(spec.kind) is None:
        return spec.kind
    kind = inputs.input_kind(spec.kind)
    return (_importable_name(kind.build) if kind is not None else None) or "saved"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def build_spec(case: Case, cell: MatrixCell, golden_data: Optional[Path], nodeid: str, rootdir: Optional[Path] = None) -> dict[str, Any]:
    """Everything the template needs to reproduce ``cell``, as plain literals; the golden's path
    relative to ``rootdir`` when it lies inside it (the script joins it to the project root)."""
    from torch._inductor import config as inductor_config

    inductor_patch = case_inductor_config(case)
    unknown = [k for k in inductor_patch if not hasattr(inductor_config, k)]
    if unknown:
        raise ValueError(f"config keys this torch does not have: {', '.join(unknown)}")
    golden = None
    if case.checks.golden and golden_data is not None:
        golden = {"path": _relative_to(golden_data, rootdir), "sample": case.checks.golden_sample}
    applies = lambda when: when.applies(cell.backend, cell.device, cell.dtype)  # noqa: E731
    return {
        "nodeid": nodeid,
        "suite_line": f"{case.display_path}:{case.line}",
        "program": _program_spec(case),
        "inputs": [
            {"builder": _input_builder(spec), "seed": input_seed(case, i), "spec": _jsonable(dataclasses.asdict(spec))}
            for i, spec in enumerate(case.inputs)
        ],
        "backend": cell.backend,
        "compile_mode": compile_mode(case, cell.backend),
        "compiled_runs": compiled_runs(case, cell.backend),
        "device": cell.device,
        "dtype": cell.dtype,
        "deterministic": case.deterministic,
        "backward": case.backward,
        "no_grad": case.no_grad,
        "inputs_after": case.checks.inputs_after,
        "inductor_config": _jsonable(inductor_patch),
        "dynamo_config": _jsonable(dict(case.dynamo_config)),
        "passes": [[p.hook, p.factory] for p in case.passes],
        "tolerance": dataclasses.asdict(case.tolerance_for(cell.dtype)),
        "check_eager": case.checks.eager,
        "golden": golden,
        "counters": [
            [c.group, c.name, {op: getattr(c, op) for op in ("equals", "at_least", "at_most") if getattr(c, op) is not None}]
            for c in case.checks.counters if applies(c.when)
        ],
        "graphs": case.checks.graphs,
        "graph_breaks": case.checks.graph_breaks,
        "filecheck": [
            {"target": b.target, "check": b.check, "line": b.first_check_line, "prefixes": prefixes_for(cell.backend, cell.device, b.prefixes)}
            for b in case.checks.filecheck if applies(b.when) and b.target != "autotune_block"
        ],
        "filecheck_prefixes": prefixes_for(cell.backend, cell.device),
        "filecheck_variables": {"DEVICE": cell.device, "DTYPE": cell.dtype, "BACKEND": cell.backend},
    }


def _save_inputs(case: Case, cell: MatrixCell, spec: dict[str, Any], path: Path) -> Optional[Path]:
    """Inputs no script can rebuild, saved as safetensors (tuples as name.0, name.1, ...)."""
    names = {item["spec"]["name"] for item in spec["inputs"] if item["builder"] == "saved"}
    if not names:
        return None
    from safetensors.torch import save_file

    tensors = {}
    for input_spec, value in zip(case.inputs, build_inputs(case, "cpu", dtypes.DTYPES[cell.dtype])):
        if input_spec.name not in names:
            continue
        if isinstance(value, torch.Tensor):
            tensors[input_spec.name] = value.detach().contiguous()
        else:
            for i, part in enumerate(value):
                tensors[f"{input_spec.name}.{i}"] = part.detach().contiguous()
    saved = path.with_suffix(".inputs.safetensors")
    save_file(tensors, str(saved))
    return saved


def _script_part(module: ModuleType) -> str:
    """``module``'s source as a part of a script: without its docstring, its ``__future__``
    import and its imports from the harness (the script holds what they name itself)."""
    source = Path(module.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    dropped: set[int] = set()
    for node in tree.body:
        docstring = node is tree.body[0] and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        ours = isinstance(node, ast.ImportFrom) and (node.level > 0 or node.module == "__future__")
        if docstring or ours:
            dropped.update(range(node.lineno, node.end_lineno + 1))
    kept = "".join(line for number, line in enumerate(source.splitlines(keepends=True), 1) if number not in dropped)
    return f"\n\n# {'-' * 30} {module.__name__}\n" + kept


def _relative_to(path: Path, rootdir: Optional[Path]) -> str:
    """``path`` relative to ``rootdir`` (posix) when inside it, else absolute."""
    resolved = path.resolve()
    if rootdir is not None:
        try:
            return resolved.relative_to(rootdir.resolve()).as_posix()
        except ValueError:
            pass
    return str(resolved)


def render_script(spec: dict[str, Any], rootdir: Path, why: str, saved_inputs: Optional[Path], script_dir: Optional[Path] = None) -> str:
    """The script's text. With ``script_dir`` (where it will lie) the project root and the saved
    inputs are found relative to the script, so that a copy of the project runs its scripts."""
    header = (
        "#!/usr/bin/env python3\n"
        f'"""Repro of {spec["nodeid"]} ({spec["suite_line"]}), written by quantcheck.\n\n'
        f"Runs without the harness: python {'<this file>'}\n"
        "Exit 0: every check of the cell passes; exit 1: a check fails (printed).\n\n"
        "What failed in the harness:\n"
        + "".join(f"    {line}\n" for line in why.strip().splitlines()[:12])
        + '"""\n'
    )
    body = "\nfrom __future__ import annotations\n" + "".join(_script_part(m) for m in (*SCRIPT_MODULES, repro_template))
    if script_dir is not None:
        root = os.path.relpath(rootdir.resolve(), script_dir.resolve())
        saved = f"os.path.join(HERE, {saved_inputs.name!r})" if saved_inputs else "None"
    else:
        root = str(rootdir)
        saved = repr(str(saved_inputs)) if saved_inputs else "None"
    footer = (
        "\n\nHERE = os.path.dirname(os.path.abspath(__file__))\n"
        f"ROOT = os.path.normpath(os.path.join(HERE, {root!r}))  # the project root, found from this script\n"
        "sys.path.insert(0, ROOT)  # the program's module\n"
        "inf, nan = math.inf, math.nan  # as tolerances and params may spell them\n"
        "SPEC = " + pprint.pformat(spec, width=110, sort_dicts=False) + "\n\n"
        "if __name__ == '__main__':\n"
        f"    sys.exit(main(SPEC, root=ROOT, saved_inputs_path={saved}))\n"
    )
    return header + body + footer


def write_repro(
    case: Case, cell: MatrixCell, *, directory: Path, rootdir: Path, suite_key: str, golden_data: Optional[Path], nodeid: str, why: str
) -> Path:
    """Write the cell's script (and saved inputs if needed); returns the script's path.

    ``golden_data``: the cell's golden data file (the script compares with it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = script_path(directory, suite_key, case, cell)
    spec = build_spec(case, cell, golden_data, nodeid, rootdir)
    saved = _save_inputs(case, cell, spec, path)
    path.write_text(render_script(spec, rootdir, why, saved, script_dir=directory), encoding="utf-8")
    return path


def remove_repro(suite_key: str, case: Case, cell: MatrixCell, directory: Path) -> None:
    """A passing cell's old script is stale: remove it and its saved inputs."""
    path = script_path(directory, suite_key, case, cell)
    for stale in (path, path.with_suffix(".inputs.safetensors")):
        stale.unlink(missing_ok=True)
