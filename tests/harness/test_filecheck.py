"""harness/filecheck.py: prefixes, variables, and our diagnostics with YAML line numbers."""

from __future__ import annotations

from harness.filecheck import prefixes_for, run_filecheck

CODE = """def call(args):
    buf0 = empty_strided_cpu((2048, 2048), (2048, 1), torch.float32).as_strided((2048, 2047), (2048, 1))
    cpp_fused_add_0(arg0_1, buf0)
    extern_kernels.mm(buf0, buf0, out=buf1)
    return (buf1, )
"""


def check(text, backend="inductor", device="cpu"):
    return run_filecheck(
        text, CODE, prefixes=prefixes_for(backend, device), variables={"DEVICE": device},
        check_path="suites/s.yaml", first_check_line=20, input_label="output_code",
    )


def test_prefixes_per_device_and_backend():
    assert prefixes_for("aot_eager", "cuda") == ["CHECK", "CHECK-CUDA", "CHECK-AOT-EAGER", "CHECK-CUDA-AOT-EAGER"]
    assert "CHECK-MAX-AUTOTUNE" in prefixes_for("inductor_max_autotune", "cuda")


def test_passing_checks_with_regex_variables_and_directives():
    result = check(
        "CHECK-LABEL: def call\n"
        "CHECK: [[BUF:buf[0-9]+]] = empty_strided_[[DEVICE]]({{.*}}).as_strided\n"
        "CHECK-NEXT: cpp_fused_add_0(arg0_1, [[BUF]])\n"
        "CHECK-NOT: triton\n"
        "CHECK-CPU: extern_kernels.mm([[BUF]], [[BUF]]\n"
        "CHECK-SAME: out=buf1\n"
        "CHECK-CUDA: this line is not checked on cpu\n"
    )
    assert result.ok and result.ran_checks == 6, result.report


def test_only_other_device_lines_means_nothing_to_check():
    result = check("CHECK-CUDA: triton_\n")
    assert result.ok and result.ran_checks == 0


def test_failure_names_yaml_line_variables_and_partial_match():
    result = check("CHECK: [[BUF:buf[0-9]+]] = empty_strided_cpu\nCHECK: extern_kernels.mm([[BUF]], buf7)\n")
    assert not result.ok
    lines = result.report.splitlines()
    assert lines[1] == "suites/s.yaml:21: CHECK: extern_kernels.mm([[BUF]], buf7)"
    assert lines[3] == "  variables: DEVICE = 'cpu', BUF = 'buf0'"
    assert lines[5] == "  best partial match, output_code line 4:"
    assert "  >" in result.report and "4 |     extern_kernels.mm(buf0, buf0, out=buf1)" in result.report
    assert "matches the start of the check: 'extern_kernels.mm(buf0, buf'" in result.report


def test_check_not_failure_points_at_the_excluded_text():
    result = check("CHECK: def call\nCHECK-NOT: cpp_fused\nCHECK: return\n")
    assert not result.ok
    assert "suites/s.yaml:21: CHECK-NOT: cpp_fused" in result.report
    assert "  found at output_code line 3:" in result.report


def test_bad_check_syntax_points_at_yaml_line():
    result = check("CHECK: fine\nCHECK-NEXT:\n")
    assert not result.ok and "suites/s.yaml:21: bad check line: found empty check string" in result.report


def test_empty_input_is_explained():
    result = run_filecheck(
        "CHECK: x\n", "", prefixes=["CHECK"], variables={}, check_path="s.yaml", first_check_line=3, input_label="output_code"
    )
    assert "output_code is empty (this backend produced none" in result.report
