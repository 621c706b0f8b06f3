"""Run a script where the kernels are compiled ``JITFunction``s, as under Inductor on a GPU.

Tests in this process may have switched Triton to its interpreter (``TRITON_INTERPRET=1``),
which decides at import what ``@triton.jit`` builds; a fresh process without it sees the
kernels as Inductor does. The script prints one JSON value, which is returned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_with_compiled_kernels(script: str, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
