"""harness/filecheck.py: prefixes, variables, and our diagnostics with YAML line numbers."""

from __future__ import annotations

from harness.filecheck import prefixes_for, run_filecheck

pytest_plugins = ["pytester"]

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


def test_generated_checks_capture_kernel_and_buffer_names_and_match_their_code():
    from harness.filecheck import generated_checks

    text = "import torch\n\n" + CODE + "\n\ndef benchmark_compiled_module():\n    pass\n"
    checks = generated_checks("output_code", text, "FUSED", "suites/s.yaml::c[inductor-cpu-float32]")
    lines = checks.splitlines()
    assert lines[1:3] == [
        "FUSED-LABEL: def call(args):",
        "FUSED: [[BUF0:buf[0-9]+]] = empty_strided_cpu((2048, 2048), (2048, 1), torch.float32).as_strided((2048, 2047), (2048, 1))",
    ]
    assert lines[3] == "FUSED: [[KERNEL0:[a-z]+_[a-zA-Z0-9_]*fused[a-zA-Z0-9_]*]](arg0_1, [[BUF0]])"
    assert lines[4] == "FUSED: extern_kernels.mm([[BUF0]], [[BUF0]], out=[[BUF1:buf[0-9]+]])"
    assert "benchmark_compiled_module" not in checks  # the call function only
    renamed = CODE.replace("cpp_fused_add_0", "cpp_fused_add_7").replace("buf1", "buf9")
    result = run_filecheck(
        checks, renamed, prefixes=prefixes_for("inductor", "cpu", ("FUSED",)), variables={},
        check_path="suites/checks/c.check", first_check_line=1, input_label="output_code",
    )
    assert result.ok, result.report  # names Inductor picks may change; the structure may not


def test_checks_file_with_custom_prefixes_written_by_update_checks(project):
    """lit users' workflow: the checks beside the suite in a file of their own, with their own
    prefix, written (and refreshed) from the output code by --update-checks."""
    project.suite("""
        cases:
          fused:
            program: pointwise_chain
            params: {ops: [sin, {mul: 2.0}]}
            inputs: {x: {shape: [16]}}
            matrix: {backends: [inductor], devices: [cpu]}
            checks:
              golden: false
              filecheck:
                - {file: checks/fused.check, prefixes: [FUSED]}
    """)
    checks_file = project.root / "suites" / "checks" / "fused.check"
    missing = project.run()
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["FileCheck on output_code: checks file suites/checks/fused.check does not exist; write it *--update-checks"])

    project.run("--update-checks").assert_outcomes(passed=1)
    written = checks_file.read_text()
    assert "FUSED-LABEL: def call(" in written and "[[KERNEL0:" in written and "[[BUF0:buf[0-9]+]]" in written
    project.run().assert_outcomes(passed=1)

    checks_file.write_text(written + "FUSED-CPU: this line is not there\n")
    failing = project.run()
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines([
        "FileCheck on output_code (prefixes FUSED, FUSED-CPU, FUSED-INDUCTOR, FUSED-CPU-INDUCTOR):",
        f"suites/checks/fused.check:{len(written.splitlines()) + 1}: FUSED-CPU: this line is not there",
    ])
