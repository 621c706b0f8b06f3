"""Run the same pytest command N times and report every test whose outcome was not the same each time.

A flake is a test that passed in one run and failed (or errored, or was skipped) in
another with nothing changed: xdist scheduling, shared compiler caches, leftover files,
timing. Each run writes JUnit XML; the outcomes are compared per test id.

    python -m tools.flakes --repeat 20                         # suites/ with -n 2
    python -m tools.flakes --repeat 3 -n 2 -- tests/harness    # any pytest arguments after --
    python -m tools.flakes --repeat 20 --json out/flakes.json

Exit status 1 when any test flaked (consistent failures are listed, but are not flakes).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class RunRecord:
    index: int
    seconds: float
    exit_code: int
    outcomes: dict[str, str]  # test id -> passed | failed | error | skipped


@dataclasses.dataclass
class FlakeReport:
    runs: list[RunRecord]
    flaky: dict[str, list[str]]  # test id -> its outcome in each run ("missing" when not reported)
    always_failing: list[str]

    @property
    def tests(self) -> int:
        return len({test for run in self.runs for test in run.outcomes})

    def lines(self) -> list[str]:
        seconds = [r.seconds for r in self.runs]
        out = [
            f"{len(self.runs)} runs of {self.tests} tests: {len(self.flaky)} flaky, {len(self.always_failing)} failing every run",
            f"run time: min {min(seconds):.0f} s, max {max(seconds):.0f} s, total {sum(seconds):.0f} s",
        ]
        for test, outcomes in sorted(self.flaky.items()):
            counts = collections.Counter(outcomes)
            out.append(f"FLAKY {test}: " + ", ".join(f"{n} {o}" for o, n in counts.most_common()))
        for test in self.always_failing:
            out.append(f"FAILS EVERY RUN {test}")
        return out


def junit_outcomes(path: Path) -> dict[str, str]:
    """Test id -> outcome from one JUnit XML file (pytest's flavour)."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        if "error" in tags:
            outcome = "error"
        elif "failure" in tags:
            outcome = "failed"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        # a test can appear twice (a failing teardown after a pass): keep the worst
        if outcomes.get(test) not in ("error", "failed"):
            outcomes[test] = outcome
    return outcomes


def analyse(runs: Sequence[RunRecord]) -> FlakeReport:
    tests = sorted({test for run in runs for test in run.outcomes})
    flaky, always_failing = {}, []
    for test in tests:
        outcomes = [run.outcomes.get(test, "missing") for run in runs]
        if len(set(outcomes)) > 1:
            flaky[test] = outcomes
        elif outcomes[0] in ("failed", "error"):
            always_failing.append(test)
    return FlakeReport(list(runs), flaky, always_failing)


def run_repeatedly(
    pytest_args: Sequence[str], repeat: int, workers: int, cwd: Path = REPO, progress=lambda record: None
) -> FlakeReport:
    runs = []
    with tempfile.TemporaryDirectory(prefix="quantcheck-flakes-") as tmp:
        for index in range(repeat):
            xml = Path(tmp) / f"run-{index}.xml"
            command = [sys.executable, "-m", "pytest", *pytest_args, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
            if workers:
                command += ["-n", str(workers)]
            start = time.perf_counter()
            completed = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            outcomes = junit_outcomes(xml) if xml.exists() else {}
            record = RunRecord(index, seconds, completed.returncode, outcomes)
            runs.append(record)
            progress(record)
    return analyse(runs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, pytest_args = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("-n", "--workers", type=int, default=2, help="pytest-xdist workers per run (0: none)")
    parser.add_argument("--json", type=Path, help="also write every run's outcomes as JSON")
    args = parser.parse_args(argv)
    pytest_args = pytest_args or ["suites/"]

    def progress(record: RunRecord) -> None:
        counts = collections.Counter(record.outcomes.values())
        print(f"run {record.index + 1}/{args.repeat}: {record.seconds:.0f} s, exit {record.exit_code}, "
              + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())), flush=True)

    report = run_repeatedly(pytest_args, args.repeat, args.workers, REPO, progress)
    for line in report.lines():
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "pytest_args": pytest_args, "workers": args.workers,
            "runs": [dataclasses.asdict(r) for r in report.runs], "flaky": report.flaky, "always_failing": report.always_failing,
        }, indent=2) + "\n")
    return 1 if report.flaky else 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    sys.exit(main())
