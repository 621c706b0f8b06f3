"""Mutation score: plant numeric bugs in ``impl/`` one at a time and count how many the tests catch.

Each mutant (``tools/mutants.py``) is one exact text replacement in one file, plus the tests
that should notice it. The tool copies the repository (tracked and untracked-but-not-ignored
files) into a temporary directory once, never touching the working tree, then for each
mutant: writes the mutated file, runs its tests there (pytest, ``-x``, xdist ``-n``, a fresh
Inductor/Triton cache so no compiled artifact of the original code is reused, no bytecode
caches), restores the file, and records

    killed    the tests failed (or could not even be collected)
    survived  the tests passed: the suite would not have caught this bug
    timeout   the run exceeded --timeout (counted as not killed)
    stale     the text to replace is no longer in the file exactly once: update the catalogue
    error     the same tests already fail without the mutant (no verdict possible)

and prints a table and the score, killed / (killed + survived + timeout).

    python -m tools.mutation                       # every mutant, -n 2
    python -m tools.mutation --list
    python -m tools.mutation --only int4_kernel_zero_off_by_one,nf4_table_entry -n 0
    python -m tools.mutation --json out/mutation.json --timeout 600
    python -m tools.mutation --only split_k_drops_remainder --tests suites/woq_kernels.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(REPO))

from tools.mutants import CATALOGUE, Mutant  # noqa: E402  (after the path set-up above)

STATUSES = ("killed", "survived", "timeout", "stale", "error")
_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Result:
    mutant: Mutant
    status: str
    seconds: float
    detail: str = ""  # the first failing test, or why stale / error

    def to_json(self) -> dict:
        return {
            "name": self.mutant.name, "path": self.mutant.path, "bug": self.mutant.bug, "tests": list(self.mutant.tests),
            "status": self.status, "seconds": round(self.seconds, 1), "detail": self.detail,
        }


def score(results: Iterable[Result]) -> tuple[int, int]:
    """(killed, judged): stale and error results have no verdict and are left out."""
    judged = [r for r in results if r.status in ("killed", "survived", "timeout")]
    return sum(r.status == "killed" for r in judged), len(judged)


# --------------------------------------------------------------------------- the copy


def export_head(repo: Path, dest: Path) -> Path:
    """The committed tree of ``repo`` (HEAD) in ``dest``: what others' half-done edits cannot break."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=repo, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def repository_files(repo: Path) -> list[Path]:
    """Tracked and untracked-but-not-ignored files (what a commit of everything would hold)."""
    if (repo / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo, check=True, capture_output=True,
        ).stdout.decode()
        return [Path(p) for p in out.split("\0") if p and (repo / p).is_file()]
    skip = {".git", "__pycache__", ".pytest_cache", ".hypothesis"}
    return [p.relative_to(repo) for p in repo.rglob("*") if p.is_file() and not skip & set(p.relative_to(repo).parts)]


def copy_repository(repo: Path, dest: Path) -> Path:
    for relative in repository_files(repo):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / relative, target)
    return dest


def mutate_text(text: str, mutant: Mutant) -> Optional[str]:
    """The mutated text, or None when ``find`` does not occur exactly once."""
    if text.count(mutant.find) != 1:
        return None
    return text.replace(mutant.find, mutant.replace)


# --------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class RunOptions:
    workers: int = 2  # xdist -n; 0 runs in one process
    timeout: float = 900.0
    extra_pytest_args: tuple[str, ...] = ()


def _pytest_command(tests: Sequence[str], options: RunOptions) -> list[str]:
    command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "--no-header", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"]
    if options.workers:
        command += ["-n", str(options.workers)]
    return command + list(options.extra_pytest_args)


def run_tests(root: Path, tests: Sequence[str], options: RunOptions, scratch: Path) -> tuple[str, float, str]:
    """Run ``tests`` in ``root``; returns (passed | failed | timeout | nothing, seconds, output)."""
    caches = Path(tempfile.mkdtemp(prefix="caches-", dir=scratch))
    env = dict(os.environ)
    env.update(
        PYTHONDONTWRITEBYTECODE="1",  # a same-size edit within one second would reuse a stale .pyc
        PYTHONPATH=os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p),
        TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"),  # no compiled code of the unmutated source
        TRITON_CACHE_DIR=str(caches / "triton"),
    )
    start = time.perf_counter()
    process = subprocess.Popen(
        _pytest_command(tests, options), cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group: a timeout ends the xdist workers too
    )
    try:
        output, _ = process.communicate(timeout=options.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return "timeout", time.perf_counter() - start, output.decode(errors="replace")
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    seconds = time.perf_counter() - start
    text = output.decode(errors="replace")
    if process.returncode == 0:
        return "passed", seconds, text
    if process.returncode == 5:
        return "nothing", seconds, text
    return "failed", seconds, text


def _first_failure(output: str) -> str:
    match = _FAILED_LINE.search(output)
    if match:
        return match.group(1)
    for line in output.splitlines():
        if "Error" in line or "error" in line:
            return line.strip()[:160]
    return "(see output)"


def run_mutants(
    mutants: Sequence[Mutant],
    repo: Path = REPO,
    options: RunOptions = RunOptions(),
    baseline: bool = True,
    progress: Callable[[Result], None] = lambda result: None,
    source: str = "worktree",
) -> list[Result]:
    """Every mutant in one temporary copy of ``repo`` (its working tree, or ``source="head"``:
    its last commit), one at a time."""
    results = []
    with tempfile.TemporaryDirectory(prefix="quantcheck-mutation-") as tmp:
        scratch = Path(tmp)
        root = export_head(repo, scratch / "repo") if source == "head" else copy_repository(repo, scratch / "repo")
        baseline_failures: dict[tuple[str, ...], str] = {}
        if baseline:
            runnable = [m for m in mutants if check_mutant(m, root) is None]
            for tests in dict.fromkeys(m.tests for m in runnable):
                outcome, _, output = run_tests(root, tests, options, scratch)
                if outcome != "passed":
                    baseline_failures[tests] = f"without the mutant the tests already {outcome}: {_first_failure(output)}"
        for mutant in mutants:
            result = _run_one(mutant, root, options, scratch, baseline_failures.get(mutant.tests))
            results.append(result)
            progress(result)
    return results


def check_mutant(mutant: Mutant, root: Path) -> Optional[Result]:
    """A stale or error Result when the mutant cannot be planted or its tests do not exist; else None."""
    path = root / mutant.path
    if not path.is_file():
        return Result(mutant, "stale", 0.0, f"{mutant.path} does not exist")
    count = path.read_text(encoding="utf-8").count(mutant.find)
    if count != 1:
        return Result(mutant, "stale", 0.0, f"the text to replace occurs {count} times in {mutant.path}, not once")
    missing = [t for t in mutant.tests if not t.startswith("-") and not (root / t.split("::")[0]).exists()]
    if missing:  # pytest would exit 4, which must not count as a kill
        return Result(mutant, "error", 0.0, f"test path(s) missing: {', '.join(missing)}")
    return None


def _run_one(mutant: Mutant, root: Path, options: RunOptions, scratch: Path, baseline_failure: Optional[str]) -> Result:
    problem = check_mutant(mutant, root)
    if problem is not None:
        return problem
    if baseline_failure is not None:
        return Result(mutant, "error", 0.0, baseline_failure)
    path = root / mutant.path
    original = path.read_text(encoding="utf-8")
    mutated = mutate_text(original, mutant)
    assert mutated is not None
    path.write_text(mutated, encoding="utf-8")
    try:
        outcome, seconds, output = run_tests(root, mutant.tests, options, scratch)
    finally:
        path.write_text(original, encoding="utf-8")
    if outcome == "passed":
        return Result(mutant, "survived", seconds)
    if outcome == "timeout":
        return Result(mutant, "timeout", seconds, f"no verdict within {options.timeout:.0f} s")
    if outcome == "nothing":
        return Result(mutant, "error", seconds, "its tests collected nothing")
    return Result(mutant, "killed", seconds, _first_failure(output))


# --------------------------------------------------------------------------- report


def table(results: Sequence[Result]) -> list[str]:
    rows = [("mutant", "file", "status", "time", "killed by / detail")]
    for r in results:
        rows.append((r.mutant.name, r.mutant.path, r.status, f"{r.seconds:.0f}s", r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 18)
    killed, judged = score(results)
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    percent = f"{100.0 * killed / judged:.1f}%" if judged else "n/a"
    lines.append("")
    lines.append(f"mutation score: {killed}/{judged} killed ({percent}); " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return [line.rstrip() for line in lines]


def main(argv: Optional[Sequence[str]] = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma list of mutant names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("-n", "--workers", type=int, default=2, help="pytest-xdist workers per run (0: none)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant run")
    parser.add_argument("--no-baseline", action="store_true", help="skip checking that the tests pass unmutated")
    parser.add_argument("--source", choices=("worktree", "head"), default="worktree",
                        help="copy the working tree (default) or the last commit")
    parser.add_argument("--check", action="store_true", help="only check that every mutant can be planted")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--tests", default="",
                        help="comma list of pytest arguments run against every mutant instead of its own tests "
                             "(what one suite catches alone: --tests suites/woq_kernels.yaml)")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 when the score (percent) is lower")
    args = parser.parse_args(argv)

    mutants = list(CATALOGUE)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        known = {m.name: m for m in mutants}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            parser.error(f"--only: unknown mutant(s) {', '.join(unknown)}; see --list")
        mutants = [known[n] for n in wanted]
    if args.tests:
        tests = tuple(t.strip() for t in args.tests.split(",") if t.strip())
        mutants = [dataclasses.replace(m, tests=tests) for m in mutants]
    if args.list:
        for m in mutants:
            print(f"{m.name:34} {m.path:44} {m.bug}")
        return 0

    if args.check:
        with tempfile.TemporaryDirectory(prefix="quantcheck-mutation-") as tmp:
            root = export_head(REPO, Path(tmp)) if args.source == "head" else REPO
            problems = [p for p in (check_mutant(m, root) for m in mutants) if p is not None]
        for p in problems:
            print(f"{p.mutant.name}: {p.status}: {p.detail}")
        print(f"{len(mutants) - len(problems)} of {len(mutants)} mutants can be planted")
        return 1 if problems else 0

    start = time.perf_counter()

    def progress(result: Result) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {result.mutant.name}: {result.status} {result.detail}", flush=True)

    results = run_mutants(mutants, REPO, RunOptions(workers=args.workers, timeout=args.timeout), not args.no_baseline, progress, args.source)
    wall = time.perf_counter() - start
    print()
    for line in table(results):
        print(line)
    print(f"wall time: {wall:.0f} s ({len(mutants)} mutants, -n {args.workers})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"wall_seconds": round(wall, 1), "results": [r.to_json() for r in results]}, indent=2) + "\n")
    killed, judged = score(results)
    if args.fail_under is not None and judged and 100.0 * killed / judged < args.fail_under:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
