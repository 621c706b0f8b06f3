"""The CPU int8 lowering's ATen path holds on every x86 code path of _weight_int8pack_mm.

The bfloat16 kernel assumes K a multiple of its vector step and aligned rows (see
``impl.lowerings.woq_mm_cpu.INT8PACK_BF16_K_MULTIPLE``); off that contract it misreads
(M = 1) or segfaults (M > 1) on AVX-512 hosts, and on AVX2 hosts for K % 8 != 0 or a
misaligned x. ``ATEN_CPU_CAPABILITY=avx2`` selects the AVX2 path on an AVX-512 host, so one
machine exercises both; on an AVX2-only host both runs take the AVX2 path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_RELATIVE_ERROR = 2e-2  # bfloat16 output rounding; a misread row is off by O(1)


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_int8pack_path_neither_crashes_nor_misreads(capability, tmp_path):
    # An Inductor cache of its own: graphs compiled under avx2 must not be loaded by the
    # default-capability processes sharing the machine's cache (wrong numbers, aborts).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "default":
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run(
        [sys.executable, "-m", "tests.impl.int8pack_probe"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:
        died = f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
        last = lines[-1] if lines else "(before the first call)"
        pytest.fail(f"probe ({capability}) died with {died} at: {last}\n{proc.stderr[-3000:]}", pytrace=False)
    print(lines[-2])  # the capability actually used, for the log
    error = float(lines[-1].split()[3])
    assert error < MAX_RELATIVE_ERROR, lines[-1]
