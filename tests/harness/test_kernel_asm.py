"""harness/kernel_asm.py: PTX / SASS / register-count targets from compiled Triton kernels."""

from __future__ import annotations

import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.case import parse_suite
from harness.filecheck import run_filecheck
from harness.kernel_asm import (
    KernelAsm,
    KernelAsmError,
    LoadedModules,
    asm_artifacts,
    collect_asm_artifacts,
    kernel_asm,
    output_modules,
    triton_kernels,
)
from harness.matrix import MatrixCell
from harness.run import run_cell

pytest_plugins = ["pytester"]

PTX = """\
.visible .entry triton_poi_fused_sin_0(
\tld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
\tst.global.v4.b32 [ %rd2 + 0 ], { %r5, %r6, %r7, %r8 };
}"""


def fake_autotuner(**launcher_fields) -> SimpleNamespace:
    launcher = SimpleNamespace(config="XBLOCK: 1024, num_warps: 4", n_regs=26, n_spills=0, shared=0, **launcher_fields)
    return SimpleNamespace(fn=object(), launchers=[launcher])


def fake_module(**kernels) -> types.ModuleType:
    module = types.ModuleType("fake_output_code")
    module.__dict__.update(kernels, call=lambda args: None, unrelated=42)
    return module


def test_kernels_are_found_in_modules_and_read_from_the_launcher():
    module = fake_module(triton_poi_fused_sin_0=fake_autotuner(bin=SimpleNamespace(asm={"ptx": PTX, "cubin": b"\x7fELF"})))
    kernels = triton_kernels([module])
    assert list(kernels) == ["triton_poi_fused_sin_0"]
    (asm,) = kernel_asm("triton_poi_fused_sin_0", kernels["triton_poi_fused_sin_0"], cache_dirs=[])
    assert (asm.ptx, asm.cubin, asm.n_regs, asm.n_spills) == (PTX, b"\x7fELF", 26, 0)


def test_static_launchers_are_read_from_the_triton_cache(tmp_path):
    (tmp_path / "KEYDIR").mkdir()
    (tmp_path / "KEYDIR" / "triton_poi_fused_sin_0.ptx").write_text(PTX)
    (tmp_path / "KEYDIR" / "triton_poi_fused_sin_0.cubin").write_bytes(b"\x7fELF")
    (asm,) = kernel_asm("k", fake_autotuner(cache_hash="KEYDIR"), cache_dirs=[tmp_path / "elsewhere", tmp_path])
    assert asm.ptx == PTX and asm.cubin == b"\x7fELF"
    (absent,) = kernel_asm("k", fake_autotuner(cache_hash="OTHER"), cache_dirs=[tmp_path])
    assert absent.ptx is None


def test_texts_are_checked_by_filecheck():
    kernel = KernelAsm(name="triton_poi_fused_sin_0", config="XBLOCK: 1024", ptx=PTX, cubin=b"x", n_regs=26, n_spills=0, shared=0)
    texts, missing = asm_artifacts([kernel], sass_of=lambda cubin: "LDG.E.128 R4, desc[UR4][R2.64] ;")
    assert missing == {}
    assert texts["ptx"].startswith("# kernel triton_poi_fused_sin_0\n.visible .entry")
    assert texts["kernel_resources"] == "# kernel triton_poi_fused_sin_0\nregisters: 26\nspills: 0\nshared_bytes: 0\nconfig: XBLOCK: 1024"
    assert texts["sass"] == "# kernel triton_poi_fused_sin_0\nLDG.E.128 R4, desc[UR4][R2.64] ;"

    def check(pattern: str, target: str) -> bool:
        return run_filecheck(pattern, texts[target], prefixes=["CHECK"], variables={}, check_path="s.yaml",
                             first_check_line=1, input_label=target, input_dump=None).ok

    assert check("CHECK: ld.global.v4", "ptx")
    assert not check("CHECK: ld.global.v2", "ptx")
    assert check("CHECK-NOT: spills: {{[1-9]}}", "kernel_resources")
    spilling = dataclass_replace(kernel, n_spills=12)
    assert not run_filecheck("CHECK-NOT: spills: {{[1-9]}}", asm_artifacts([spilling], sass_of=str)[0]["kernel_resources"],
                             prefixes=["CHECK"], variables={}, check_path="s.yaml", first_check_line=1,
                             input_label="kernel_resources", input_dump=None).ok


def dataclass_replace(kernel: KernelAsm, **fields) -> KernelAsm:
    import dataclasses

    return dataclasses.replace(kernel, **fields)


def test_sass_without_cuobjdump_is_absent_with_the_reason():
    def no_cuobjdump(cubin: bytes) -> str:
        raise FileNotFoundError("cuobjdump not found")

    texts, missing = asm_artifacts([KernelAsm(name="k", ptx=PTX, cubin=b"x")], sass_of=no_cuobjdump)
    assert "ptx" in texts and "sass" not in texts
    assert missing == {"sass": "cuobjdump -sass failed (FileNotFoundError: cuobjdump not found)"}
    assert asm_artifacts([KernelAsm(name="k", ptx=PTX)], wanted=("sass",))[1] == {"sass": "no cubin kept for Triton kernel k"}


def test_a_kernel_without_ptx_is_an_error_not_a_pass():
    with pytest.raises(KernelAsmError, match="no PTX found for Triton kernel"):
        asm_artifacts([KernelAsm(name="k")], wanted=("ptx",))
    lost = "triton_poi_fused_0 = async_compile.triton('triton_poi_fused_0', '''\n"
    with pytest.raises(KernelAsmError, match="defines Triton kernel.s. triton_poi_fused_0 that no loaded Inductor module holds"):
        collect_asm_artifacts([fake_module()], [lost], "cuda", "inductor")


def test_cells_without_triton_kernels_say_why():
    assert collect_asm_artifacts([], [""], "cpu", "eager")[1]["ptx"] == "the eager backend generates no kernels"
    assert collect_asm_artifacts([fake_module()], ["cpp_fused_0 = async_compile.cpp_pybinding("], "cpu", "inductor") == (
        {}, {t: "cpu cells compile no Triton kernels" for t in ("ptx", "sass", "kernel_resources")},
    )


def test_only_the_output_modules_kernels_count(tmp_path):
    """max-autotune also loads benchmark modules: a kernel of the same name there is not the graph's."""
    code = "triton_poi_fused_sin_0 = async_compile.triton('triton_poi_fused_sin_0', '''\n"
    (tmp_path / "output.py").write_text(code)
    (tmp_path / "benchmark.py").write_text("# a template choice timed by max-autotune\n")
    output = fake_module(triton_poi_fused_sin_0=fake_autotuner(bin=SimpleNamespace(asm={"ptx": PTX, "cubin": b"x"})))
    output.__file__ = str(tmp_path / "output.py")
    benchmark = fake_module(triton_poi_fused_sin_0=fake_autotuner(bin=SimpleNamespace(asm={"ptx": "// loser", "cubin": b"x"})))
    benchmark.__file__ = str(tmp_path / "benchmark.py")
    assert output_modules([benchmark, output], [code]) == [output]
    texts, _ = collect_asm_artifacts([benchmark, output], [code], "cuda", "inductor", wanted=("ptx",))
    assert texts["ptx"] == f"# kernel triton_poi_fused_sin_0\n{PTX}"


def test_loaded_modules_captures_inductor_output_modules():
    from torch._inductor.utils import run_and_get_code

    capture = LoadedModules()
    torch._dynamo.reset()
    with capture.installed():
        _, codes = run_and_get_code(torch.compile(lambda x: x.cos() * 3, backend="inductor"), torch.randn(8))
    torch._dynamo.reset()
    (module,) = output_modules(capture.modules, codes)  # the output code is the loaded module's source
    assert callable(getattr(module, "call", None))
    from torch._inductor.codecache import PyCodeCache

    assert isinstance(PyCodeCache.__dict__["load_by_key_path"], classmethod)  # put back as it was


ASM_SUITE = """
cases:
  sin:
    program: pointwise_chain
    params: {ops: [sin]}
    inputs:
      x: {shape: [4096]}
    matrix: {backends: [inductor], devices: [cpu, cuda], dtypes: [float32]}
    checks:
      golden: false
      filecheck:
        - target: ptx
          check: |
            CHECK: .entry triton_
            CHECK: ld.global
        - target: kernel_resources
          check: |
            CHECK: registers:
            CHECK-NOT: spills: {{[1-9]}}
"""


def test_ptx_block_is_not_run_on_a_cpu_cell_and_the_session_says_why(project):
    project.suite(ASM_SUITE)
    result = project.run("--devices", "cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*quantcheck checks not run*",
        "1 cell(s): FileCheck on kernel_resources not run: cpu cells compile no Triton kernels",
        "1 cell(s): FileCheck on ptx not run: cpu cells compile no Triton kernels",
    ])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiles Triton kernels for a GPU; needs a CUDA device")
def test_ptx_and_register_counts_of_an_inductor_kernel_on_cuda():
    case = parse_suite(ASM_SUITE, Path("suites/asm.yaml"), "suites/asm.yaml").cases[0]
    run = run_cell(case, MatrixCell("inductor", "cuda", "float32"))
    assert run.unavailable.get("ptx") is None
    # (the H200 run: this kernel's PTX has its entry and global loads, not necessarily 128-bit ones)
    assert ".entry triton_" in run.artifacts["ptx"] and "ld.global" in run.artifacts["ptx"]
    assert "registers: " in run.artifacts["kernel_resources"]
    assert "registers: None" not in run.artifacts["kernel_resources"]
