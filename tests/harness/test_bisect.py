"""--bisect: a planted miscompile is named, by PyTorch's CompilerBisector and by our own ablation; a stage
or component that cannot run the program is never blamed."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import linecache
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
import torch

from harness.bisect import bisect_cell
from harness.case import load_suite
from harness.matrix import Narrowing, expand_matrix
from tests.harness.conftest import PLANTED_MISCOMPILE
from tools.mutants import CATALOGUE
from tools.mutation import Mutant

pytest_plugins = ["pytester"]


def test_bisect_names_the_stage_and_the_planted_pass(project):
    project.set_programs(PLANTED_MISCOMPILE)
    project.suite("""
        cases:
          planted:
            program: progs:sincos
            inputs: {x: {shape: [8, 6]}}
            matrix: {backends: [inductor], devices: [cpu]}
            checks: {golden: false}
            passes:
              - {hook: post_grad_custom_pre_pass, factory: "progs:harmless_pass"}
              - {hook: post_grad_custom_pre_pass, factory: "progs:sin_to_cos_pass"}
    """)
    result = project.run("--bisect", f"--repro-dir={project.root / 'repro'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "bisect (--bisect): reran the cell; good = runs and compiled matches eager",
        "  first failing stage (CompilerBisector): backend inductor (eager, aot_eager, *good); subsystem post_grad_passes*(post_grad_custom_pre_pass)",
        "  passes and lowerings (the case's, installed hooks, quantcheck's), disabled one at a time (pipeline order):",
        "    no     pass post_grad_custom_pre_pass: progs:harmless_pass (suites/s.yaml:8)",
        "    FIXES  pass post_grad_custom_pre_pass: progs:sin_to_cos_pass (suites/s.yaml:9)",
        "  diverges at: pass post_grad_custom_pre_pass: progs:sin_to_cos_pass (suites/s.yaml:9)",
        "repro script:*",
    ])


# A lowering of ours that miscompiles: the op doubles in eager, its lowering triples.
_LIB = torch.library.Library("quantcheck_bisect_test", "DEF")
_LIB.define("double(Tensor x) -> Tensor")
_LIB.impl("double", lambda x: x * 2, "CompositeExplicitAutograd")
_LIB.impl("double", lambda x: torch.empty_like(x), "Meta")


def _register_bad_lowering() -> None:
    from torch._inductor.lowering import lowerings, register_lowering

    op = torch.ops.quantcheck_bisect_test.double.default
    if op in lowerings:
        return

    @register_lowering(op)
    def triple(x):
        return lowerings[torch.ops.aten.mul.Tensor](x, 3)


def _lowered_case(tmp_path, backends: str):
    """A case calling ``uses_double`` (its lowering of ours miscompiles) on ``backends``, CPU."""
    _register_bad_lowering()
    (tmp_path / "s.yaml").write_text(textwrap.dedent(f"""
        cases:
          lowered:
            program: tests.harness.test_bisect:uses_double
            inputs: {{x: {{shape: [5]}}}}
            matrix: {{backends: [{backends}], devices: [cpu]}}
            checks: {{golden: false}}
    """))
    case = load_suite(tmp_path / "s.yaml", "s.yaml").cases[0]
    return case, expand_matrix(case, Narrowing(devices=("cpu",)))


def test_bisect_names_a_miscompiling_lowering_of_ours(tmp_path):
    case, (aot_eager, inductor) = _lowered_case(tmp_path, "aot_eager, inductor")
    report = bisect_cell(case, inductor, use_compiler_bisector=False)
    assert report.note == ""
    names = [c.name for c in report.culprits]
    assert names == ["lowering of quantcheck_bisect_test.double.default (tests.harness.test_bisect:_register_bad_lowering.<locals>.triple)"]
    assert "diverges at: lowering of quantcheck_bisect_test.double.default" in report.render()
    assert "compiled matches eager on a rerun" in bisect_cell(case, aot_eager, use_compiler_bisector=False).note


def test_bisect_runs_the_cell_once_and_then_once_a_component(tmp_path, monkeypatch):
    """The first rerun carries the probe that finds our components: no run of its own for that."""
    import harness.bisect as bisect_module

    case, (inductor,) = _lowered_case(tmp_path, "inductor")
    runs = []
    run_cell = bisect_module.run_cell
    monkeypatch.setattr(bisect_module, "run_cell", lambda case, cell: runs.append(cell) or run_cell(case, cell))
    report = bisect_cell(case, inductor, use_compiler_bisector=False)
    assert [a.component.name for a in report.components] == [
        "lowering of quantcheck_bisect_test.double.default (tests.harness.test_bisect:_register_bad_lowering.<locals>.triple)"
    ]
    assert len(runs) == 1 + len(report.components)


def uses_double(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.quantcheck_bisect_test.double(x) + 1


# ------------------------------------------------------------ bugs planted in impl/ (tools/mutants.py)

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def planted(name: str) -> Iterator[Mutant]:
    """The catalogue's mutant ``name`` planted for the block, its file untouched: the module's
    source, mutated, is run again in the module's own namespace (under a name linecache
    knows, for Triton's jit, which reads kernel source); namespace and Inductor's lowerings
    are put back afterwards."""
    from torch._inductor import lowering

    mutant = next(m for m in CATALOGUE if m.name == name)
    module = importlib.import_module(mutant.path.removesuffix(".py").replace("/", "."))
    source = (REPO / mutant.path).read_text(encoding="utf-8")
    assert source.count(mutant.find) == 1, f"mutant {name} is stale"
    mutated = source.replace(mutant.find, mutant.replace)
    filename = f"<mutant {name} of {mutant.path}>"
    linecache.cache[filename] = (len(mutated), None, mutated.splitlines(True), filename)
    namespace, lowerings = dict(vars(module)), dict(lowering.lowerings)
    try:
        exec(compile(mutated, filename, "exec"), vars(module))  # noqa: S102 (our own file, mutated)
        yield mutant
    finally:
        vars(module).clear()
        vars(module).update(namespace)
        lowering.lowerings.clear()
        lowering.lowerings.update(lowerings)
        linecache.cache.pop(filename, None)


def suite_cell(suite: str, case_name: str, backend: str, dtype: str):
    case = next(c for c in load_suite(REPO / suite, suite).cases if c.name == case_name)
    cell = next(c for c in expand_matrix(case, Narrowing(devices=("cpu",))) if (c.backend, c.dtype) == (backend, dtype))
    return case, cell


def test_a_bug_in_our_hop_lowering_is_not_blamed_on_a_backend_that_cannot_run_the_hop():
    from torch._inductor.compiler_bisector import BACKENDS

    case, cell = suite_cell("suites/invoke_quant.yaml", "simple", "inductor", "float32")
    with planted("lowering_operands_reversed"):
        text = bisect_cell(case, cell).render()
    stage = next(line for line in text.splitlines() if "first failing stage" in line)
    assert stage.startswith("  first failing stage (CompilerBisector): backend inductor (eager, aot_eager, aot_eager_decomp_partition good"), text
    if "aot_eager_decomp_partition_crossref" in BACKENDS:  # torch 2.13; it raises NotImplementedError on any HOP
        assert (
            "aot_eager_decomp_partition_crossref not applicable (cannot run this program: NotImplementedError: "
            "There was no rule registered for HigherOrderOperator impl_invoke_quant and mode "
            "<torch._subclasses.fake_utils.CrossRefFakeMode>)"
        ) in stage
    assert "backend aot_eager_decomp_partition_crossref (" not in stage  # was: the first failing stage
    assert text.splitlines()[-4:] == [
        "  passes and lowerings (the case's, installed hooks, quantcheck's), disabled one at a time (pipeline order):",
        "    no     lowering of impl_invoke_quant (impl.lowerings.invoke_quant:lower_invoke_quant)",
        "           cannot be turned off alone: a higher-order op has no eager kernel to fall back to; "
        "reran with the lowering kept but its low-precision and prologue-fusion marks dropped",
        "  diverges at: not found: no pass or lowering could be turned off alone; not cleared (cannot be turned off alone): "
        "lowering of impl_invoke_quant (impl.lowerings.invoke_quant:lower_invoke_quant)",
    ]
    assert "compiled matches eager on a rerun" in bisect_cell(case, cell, use_compiler_bisector=False).note  # unplanted


def test_a_bug_in_the_fusion_pass_is_named():
    case, cell = suite_cell("suites/woq_fusion.yaml", "int8_addmm", "inductor", "float32")
    with planted("woq_fusion_drops_bias"):
        report = bisect_cell(case, cell, use_compiler_bisector=False)
    suite_lines = (REPO / "suites/woq_fusion.yaml").read_text(encoding="utf-8").splitlines()
    passes_line = 1 + next(i for i, line in enumerate(suite_lines) if "woq_fusion:installed_passes" in line)
    assert [c.name for c in report.culprits] == [
        f"pass post_grad_custom_pre_pass: suites.programs.woq_fusion:installed_passes (suites/woq_fusion.yaml:{passes_line})",
        "pattern pass 'woq_fusion_int8' (impl.passes.woq_fusion:_fuse)",
    ]
    text = report.render()
    assert "    no     lowering of impl.woq_mm_int8.default (impl.lowerings.woq_mm_devices:" in text
    assert (f"diverges at: pass post_grad_custom_pre_pass: suites.programs.woq_fusion:installed_passes "
            f"(suites/woq_fusion.yaml:{passes_line}) > pattern pass 'woq_fusion_int8'") in text


def test_a_bug_in_a_kernel_eager_runs_too_is_not_called_a_compile_divergence():
    pytest.importorskip("triton")
    case, cell = suite_cell("suites/woq_kernels.yaml", "int4_g32_gemv", "eager", "float16")
    if cell.skip_reason:
        pytest.skip(f"the suite cannot run this cell here: {cell.skip_reason}")
    from impl import kernels

    kernels.use_interpreter()  # before planting: switching to the interpreter re-imports the kernel modules
    with planted("int4_kernel_zero_off_by_one"):
        note = bisect_cell(case, cell).note
    assert note.startswith("an eager cell compiles nothing: nothing to bisect. Eager itself is off the program's float64 run (max abs error ")
    assert note.endswith("the bug is in code eager runs too (a kernel, a function of the program or its package), not in the compilation.")
    inductor = dataclasses.replace(cell, backend="inductor")  # the interpreted kernel is one opaque op there: compiled == eager
    with planted("int4_kernel_zero_off_by_one"):
        note = bisect_cell(case, inductor).note
    assert note.startswith("compiled matches eager on a rerun: the failure is not a compiled-vs-eager divergence")
    assert "Eager itself is off the program's float64 run" in note


def test_a_component_the_cell_cannot_run_without_is_reported_not_cleared(project, monkeypatch):
    from harness import bisect as bisect_module

    project.set_programs(PLANTED_MISCOMPILE)
    project.suite("""
        cases:
          planted:
            program: progs:sincos
            inputs: {x: {shape: [8, 6]}}
            matrix: {backends: [inductor], devices: [cpu]}
            checks: {golden: false}
            passes:
              - {hook: post_grad_custom_pre_pass, factory: "progs:sin_to_cos_pass"}
    """)
    case = load_suite(project.root / "suites/s.yaml", "suites/s.yaml").cases[0]
    (cell,) = expand_matrix(case, Narrowing(devices=("cpu",)))
    real_rerun = bisect_module.rerun

    def rerun_needing_the_pass(edited, rerun_cell):  # as if the backend rejected the graph without the pass
        return bisect_module.Rerun("RuntimeError: the backend needs the pass") if not edited.passes else real_rerun(edited, rerun_cell)

    monkeypatch.setattr(bisect_module, "rerun", rerun_needing_the_pass)
    report = bisect_cell(case, cell, use_compiler_bisector=False)
    assert report.culprits == []
    assert report.render().splitlines()[-3:] == [
        "    n/a    pass post_grad_custom_pre_pass: progs:sin_to_cos_pass (suites/s.yaml:8)",
        "           the cell cannot run without it: RuntimeError: the backend needs the pass",
        "  diverges at: not found: no pass or lowering could be turned off alone; not cleared (the cell cannot run without it): "
        "pass post_grad_custom_pre_pass: progs:sin_to_cos_pass (suites/s.yaml:8)",
    ]
