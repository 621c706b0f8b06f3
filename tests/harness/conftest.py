"""Fixtures for end-to-end tests of the plugin: a throw-away project run through pytester."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

CONFTEST = '''
def pytest_addhooks(pluginmanager):
    from harness.plugin import register_once
    register_once(pluginmanager)
'''

PROGRAMS = '''
import torch

SCALE = 2.0


def scaled(x):
    """x * SCALE + 1"""
    return x * SCALE + 1


def two_outputs(x, y):
    return x + y, (x * y).sum()


def with_print(x):
    y = x.sin()
    print("graph break")
    return y.cos()


def integer_out(x):
    return (x * 10).to(torch.int64)
'''

# A planted miscompile shared by the bisect and repro tests: aten.sin rewritten to aten.cos
# by a post-grad pass (and a pass that does nothing, for the bisector to clear).
PLANTED_MISCOMPILE = '''
import torch

def sincos(x):
    return x.sin() * 2 + 1

def harmless_pass():
    return lambda graph: None

def sin_to_cos_pass():
    """The planted numeric bug: aten.sin rewritten to aten.cos after AOTAutograd."""
    def rewrite(graph):
        for node in graph.nodes:
            if node.target is torch.ops.aten.sin.default:
                node.target = torch.ops.aten.cos.default
    return rewrite
'''


class Project:
    """A small project in a pytester directory: suites/, golden/, a programs module ``progs``."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = Path(pytester.path)
        pytester.makeconftest(CONFTEST)
        pytester.makepyfile(progs=PROGRAMS)
        pytester.syspathinsert()
        (self.root / "suites").mkdir()

    def suite(self, text: str, name: str = "s") -> Path:
        path = self.root / "suites" / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def set_programs(self, text: str) -> None:
        (self.root / "progs.py").write_text(textwrap.dedent(text), encoding="utf-8")

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::UserWarning", "-W", "ignore::DeprecationWarning", *args)

    def golden_files(self) -> dict[str, bytes]:
        golden = self.root / "golden"
        if not golden.exists():
            return {}
        return {str(p.relative_to(golden)): p.read_bytes() for p in sorted(golden.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def warm_torch() -> None:
    """Import and exercise torch's compiler stack once, before any pytester snapshot.

    In-process pytester runs restore ``sys.modules`` afterwards, dropping every module
    imported during the run; torch's C extension cannot be imported twice, and Inductor
    registers lowerings at import. Importing it all here (one tiny compile per backend)
    keeps those modules out of the snapshot's reach.
    """
    import torch

    import harness.plugin  # noqa: F401  (and everything it imports)
    import harness.run  # noqa: F401
    import safetensors.torch  # noqa: F401

    for backend in ("eager", "aot_eager", "inductor"):
        torch._dynamo.reset()
        torch.compile(lambda x: x.sin() + 1, backend=backend)(torch.randn(4))
    torch._dynamo.reset()


@pytest.fixture
def project(warm_torch: None, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Project:
    # Under CI (``CI`` or ``BUILD_NUMBER`` set) pytest prints whole failure messages in the
    # short summary too; inner runs must print the same on a CI machine as on a laptop.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    return Project(pytester)
