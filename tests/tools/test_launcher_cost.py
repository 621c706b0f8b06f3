"""tools/launcher_cost.py. --stub in a subprocess (it stubs the launch path of the modules it
imports): the real eager launchers record one plan a shape and replay it, on the CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.launcher_cost", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def stubbed(*args: str) -> dict[str, tuple[float, int]]:
    done = run_tool("--stub", "--calls", "20", "--kn", "1024x1024", *args)  # quantized on the CPU: small
    assert done.returncode == 0, done.stderr
    found = re.findall(r"^(\w+): ([\d.]+) µs a call .*; (\d+) plan recorded\)$", done.stdout, re.M)
    return {name: (float(us), int(plans)) for name, us, plans in found}


def test_each_eager_launcher_records_one_plan_and_replays_it():
    with_plans, without = stubbed(), stubbed("--no-plans")
    assert set(with_plans) == set(without) == {"int8", "int4", "nf4"}
    assert all(plans == 1 for _, plans in with_plans.values())
    assert all(plans == 0 for _, plans in without.values())


@pytest.mark.parametrize(("args", "message"), [
    (("--no-plans",), "--no-plans goes with --stub"),
    ((), "no CUDA device here: --stub times our Python alone"),
])
def test_a_call_it_cannot_serve_says_why(args, message):
    if not args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is here: the tool would profile it")
    done = run_tool(*args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
