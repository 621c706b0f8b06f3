"""Time the invoke_quant seed cases as YAML (suites/invoke_quant.yaml) against the same cases as
plain pytest (tests/impl/test_hop_seed.py), side by side in one pytest run, and print the ratio.

Issue 3, item 7: the harness may cost at most 1.1x the plain tests. Compared like for like:
the CPU cells of both (``--devices cpu``), without the GPU-only prologue case. Both files run in the
same pytest process (same imports; compiler caches off for both, so both do the same
compile work); the order alternates between
repeats so that neither side always pays the one-time warm-up, and a warm-up test that
compiles once on every backend runs first. Per-test times (setup + call + teardown)
come from pytest's JUnit XML.

    python tools/compare_harness_cost.py                 # 2 repeats
    python tools/compare_harness_cost.py --repeats 4 --json out/cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
YAML_SUITE = "suites/invoke_quant.yaml"
PLAIN_TESTS = "tests/impl/test_hop_seed.py"

WARMUP = textwrap.dedent(
    '''
    import torch

    def test_warm_up_every_backend():
        """Pay the one-time imports and first compiles before either side is timed."""
        import impl  # noqa: F401
        for backend in ("eager", "aot_eager", "inductor"):
            torch._dynamo.reset()
            torch.compile(lambda x: x.sin() + 1, backend=backend)(torch.randn(4))
        torch._dynamo.reset()
    '''
)


def _side_of(testcase: ET.Element) -> str | None:
    file_attr = testcase.get("file") or ""
    classname = testcase.get("classname") or ""
    if "invoke_quant.yaml" in file_attr or "invoke_quant.yaml" in classname or classname.startswith("suites."):
        return "yaml"
    if "test_hop_seed" in file_attr or "test_hop_seed" in classname:
        return "plain"
    return None


def run_once(order: list[str], workdir: Path) -> dict[str, dict[str, float]]:
    """One pytest process over the warm-up test and both sides in ``order``; seconds per side."""
    warmup = workdir / "test_warmup_cost.py"
    warmup.write_text(WARMUP)
    junit = workdir / "junit.xml"
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "harness.plugin", "-q",
        "-W", "ignore::UserWarning", "-W", "ignore::DeprecationWarning",
        f"--junitxml={junit}", "-o", "junit_family=xunit1", "--rootdir", str(REPO),
        # Like for like: the plain tests run on the CPU (the prologue test alone needs a GPU),
        # so the YAML side runs its CPU cells and both sides leave the prologue out.
        "--devices", "cpu", "-k", "not prologue",
        str(warmup), *order,
    ]
    # Caches off for both sides: the same compile work on each, and the plain test_multiple
    # checks the post-grad log, which an FX-graph-cache hit never writes.
    env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if completed.returncode not in (0, 5):
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"pytest failed (exit {completed.returncode}); the timing would mean nothing")
    totals = {"yaml": 0.0, "plain": 0.0}
    counts = {"yaml": 0, "plain": 0}
    skipped = {"yaml": 0, "plain": 0}
    for testcase in ET.parse(junit).getroot().iter("testcase"):
        side = _side_of(testcase)
        if side is None:
            continue
        if testcase.find("skipped") is not None:
            skipped[side] += 1
            continue
        totals[side] += float(testcase.get("time", 0.0))
        counts[side] += 1
    return {side: {"seconds": totals[side], "ran": counts[side], "skipped": skipped[side]} for side in totals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="pytest runs; the order of the two sides alternates")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            order = [YAML_SUITE, PLAIN_TESTS] if i % 2 == 0 else [PLAIN_TESTS, YAML_SUITE]
            result = run_once(order, Path(tmp))
            ratio = result["yaml"]["seconds"] / result["plain"]["seconds"]
            runs.append({"order": ["yaml" if o == YAML_SUITE else "plain" for o in order], **result, "ratio": ratio})
            print(
                f"run {i + 1} ({' then '.join(runs[-1]['order'])}): "
                f"yaml {result['yaml']['seconds']:.2f} s ({result['yaml']['ran']} cells ran, {result['yaml']['skipped']} skipped), "
                f"plain {result['plain']['seconds']:.2f} s ({result['plain']['ran']} tests ran, {result['plain']['skipped']} skipped), "
                f"ratio {ratio:.3f}",
                flush=True,
            )
    yaml_total = sum(r["yaml"]["seconds"] for r in runs)
    plain_total = sum(r["plain"]["seconds"] for r in runs)
    summary = {
        "runs": runs,
        "ratio_of_totals": yaml_total / plain_total,
        "median_ratio": statistics.median(r["ratio"] for r in runs),
        "budget": 1.1,
    }
    print(f"harness / plain: {summary['ratio_of_totals']:.3f} over all runs (median per run {summary['median_ratio']:.3f}; budget 1.1)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ratio_of_totals"] <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
