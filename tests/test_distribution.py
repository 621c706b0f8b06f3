"""The installed distribution: import names under ``quantcheck`` that cannot collide with a
project's own packages, one module under both names in a checkout, and a user's project
(its own ``impl`` and ``harness``) that uses the plugin and the quantization API."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"impl": "quantcheck.impl", "harness": "quantcheck.harness", "quantcheck": "quantcheck"}


def _python(code: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_distribution_lists_every_package_folder():
    """A subpackage missing from pyproject's list would be missing from every install."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *relative)))
    assert listed == found


@pytest.mark.parametrize("first, second", [("impl", "quantcheck.impl"), ("quantcheck.impl", "impl")])
def test_a_checkout_imports_each_module_once_under_both_names(first, second):
    """Run twice, the stack's modules would register their torch ops twice (torch 2.11 raises)."""
    result = _python(f"""
        import importlib, sys
        a = importlib.import_module("{first}.woq_mm")
        b = importlib.import_module("{second}.woq_mm")
        import quantcheck.impl.kernels as k1, impl.kernels as k2
        from quantcheck.impl.schemes import quantize_linear_
        from impl.schemes import quantize_linear_ as q2
        import quantcheck.harness.items as i1, harness.items as i2
        assert a is b and k1 is k2 and quantize_linear_ is q2 and i1.SETTINGS_KEY is i2.SETTINGS_KEY
        from quantcheck.names import twin_name
        two = [n for n, m in list(sys.modules.items()) if twin_name(n) in sys.modules and sys.modules[twin_name(n)] is not m]
        assert not two, two
        print("ok", a.__name__)
    """, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """The distribution built from this checkout and installed into a directory of its own
    (no dependencies: torch and the rest come from this environment)."""
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "pyproject.toml", "README.md", "impl", "harness", "quantcheck"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=600,
    )
    return target


USER_PROGRAMS = '''
import impl
import harness
import torch
from quantcheck.impl.schemes import quantize_linear_

# The user's own impl and harness are theirs; ours is quantcheck.impl.
assert impl.WHOSE == harness.WHOSE == "myproj", (impl.__file__, harness.__file__)
torch.manual_seed(0)
MODEL = quantize_linear_(torch.nn.Sequential(torch.nn.Linear(64, 32)), "int8")


def quantized_linear(x):
    return MODEL(x)
'''
USER_SUITE = """
cases:
  int8_linear:
    program: myquant:quantized_linear
    inputs: {x: {shape: [4, 64]}}
    matrix: {backends: [aot_eager], devices: [cpu], dtypes: [float32]}
"""
USER_PYPROJECT = """
[project]
name = "myproj"
version = "0"

[tool.pytest.ini_options]
pythonpath = ["."]
"""


def make_user_project(root: Path) -> Path:
    """A project with packages named impl and harness of its own, a program module, a suite."""
    for package in ("impl", "harness"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text('WHOSE = "myproj"\n')
    (root / "myquant.py").write_text(USER_PROGRAMS)
    (root / "pyproject.toml").write_text(USER_PYPROJECT)
    (root / "suites").mkdir()
    (root / "suites" / "quant.yaml").write_text(USER_SUITE)
    return root


def user_env(installed: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "CI", "BUILD_NUMBER")}
    env["PYTHONPATH"] = str(installed)
    return env


def test_a_project_with_its_own_impl_and_harness_uses_the_plugin_and_our_stack(installed, tmp_path):
    project = make_user_project(tmp_path / "myproj")
    env = user_env(installed)
    names = _python("""
        import impl, harness, quantcheck.impl, quantcheck.harness.plugin
        print(impl.WHOSE, harness.WHOSE, quantcheck.impl.__file__)
    """, cwd=project, env=env)
    assert names.returncode == 0, names.stderr[-3000:]
    assert names.stdout.split()[:2] == ["myproj", "myproj"]
    assert names.stdout.split()[2].startswith(str(installed))
    pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", "suites"]
    first = subprocess.run([*pytest_cmd, "--update-golden"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert (project / "golden" / "quant" / "int8_linear" / "cpu-float32.safetensors").is_file()
    again = subprocess.run(pytest_cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "1 passed" in again.stdout


NEWCOMER_PACKAGE = '''
import torch
from quantcheck.impl.schemes import quantize_linear_

torch.manual_seed(0)
MODEL = quantize_linear_(torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU()), "int8")


def mlp(x):
    return MODEL(x)
'''
NEWCOMER_SUITE = """
cases:
  mlp:
    program: myquant.models:mlp
    inputs: {x: {shape: [4, 32]}}
    matrix: {backends: [eager, aot_eager], devices: [cpu], dtypes: [float32]}
"""


def test_a_newcomers_project_runs_the_documented_commands(installed, tmp_path):
    """docs/using-in-your-project.md, step by step: a package, pyproject.toml, a suite; goldens
    written with --update-golden, then python -m quantcheck and --report."""
    project = tmp_path / "newcomer"
    (project / "myquant").mkdir(parents=True)
    (project / "myquant" / "__init__.py").write_text("")
    (project / "myquant" / "models.py").write_text(NEWCOMER_PACKAGE)
    (project / "suites").mkdir()
    (project / "suites" / "mlp.yaml").write_text(NEWCOMER_SUITE)
    env = user_env(installed)

    def run(*args: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *python_flags, "-m", *args, "-n", "0", "-W", "ignore::DeprecationWarning"],
            cwd=project, env=env, capture_output=True, text=True, timeout=600,
        )

    # Without the pythonpath setting (and with -P, as the `pytest` command runs: the current
    # directory not on sys.path) the program does not import; the error says what to set.
    (project / "pyproject.toml").write_text('[project]\nname = "newcomer"\nversion = "0"\n')
    unset = run("pytest", "-p", "no:cacheprovider", python_flags=("-P",))
    assert unset.returncode == pytest.ExitCode.TESTS_FAILED, unset.stdout[-3000:]
    assert "cannot import module 'myquant.models': No module named 'myquant'; is the project's root on the import path? " \
        'set pythonpath = ["."] under [tool.pytest.ini_options] in pyproject.toml' in unset.stdout

    (project / "pyproject.toml").write_text('[project]\nname = "newcomer"\nversion = "0"\n\n[tool.pytest.ini_options]\npythonpath = ["."]\n')
    written = run("quantcheck", "--update-golden")
    assert written.returncode == 0, written.stdout[-3000:] + written.stderr[-2000:]
    assert sorted(p.name for p in (project / "golden" / "mlp" / "mlp").iterdir()) == ["cpu-float32.json", "cpu-float32.safetensors"]
    checked = run("quantcheck", "--report=out/report")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
    assert "2 passed" in checked.stdout and "quantcheck summary" in checked.stdout
    assert (project / "out" / "report" / "index.html").is_file()
    report = (project / "out" / "report" / "report.json").read_text()
    assert "mlp" in report
