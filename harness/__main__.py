"""``python -m harness``: every suite over the matrix this machine offers, then the summary table.

Runs pytest on ``suites/`` (or the paths given), with ``-n auto`` when pytest-xdist is
installed and ``--summary``; any other pytest option passes through, e.g.
``python -m harness --devices cpu --summary out/summary.json`` or
``python -m harness suites/invoke_quant.yaml -n 0``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _entry_point_loads_plugin() -> bool:
    from importlib.metadata import entry_points

    return any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11"))


def build_arguments(argv: list[str]) -> list[str]:
    args = list(argv)
    has_path = any(not a.startswith("-") and (Path(a.split("::")[0]).exists()) for a in args)
    if not has_path:
        args.append(str(REPO_ROOT / "suites"))
    if importlib.util.find_spec("xdist") is not None and not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        args[:0] = ["-n", "auto"]
    if not any(a == "--summary" or a.startswith("--summary=") for a in args):
        args.append("--summary")
    if not any(a.startswith("-p") and "cacheprovider" in a for a in args):
        args[:0] = ["-p", "no:cacheprovider"]
    # "-p" (not a plugin object) so that pytest-xdist workers load it too; a conftest using
    # harness.plugin.register_once then sees it registered and does nothing.
    if not _entry_point_loads_plugin():
        args[:0] = ["-p", "harness.plugin"]
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = build_arguments(sys.argv[1:] if argv is None else argv)
    print("python -m pytest " + " ".join(args), flush=True)
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
