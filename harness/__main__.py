"""``python -m harness`` (installed: ``python -m quantcheck``): every suite of the current project over the matrix this machine offers, then the summary table.

Runs pytest with ``-n auto`` when pytest-xdist is installed, ``--summary``, and
``--all-suites``: with no path given, pytest collects the project's suites root (its
``suites_root`` setting, see :mod:`harness.project`; the rootdir is pytest's, found from the
current directory), not its ``testpaths``. Every other argument passes through to pytest
unchanged, e.g. ``python -m harness --devices cpu --summary out/summary.json``,
``python -m harness --lf`` or ``python -m harness suites/invoke_quant.yaml -n 0``.
``python -m harness golden show|diff PATH`` looks at one golden instead (:mod:`harness.golden_cli`).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Optional

import pytest


#: The plugin's module under the installed name and a checkout's.
PLUGIN_MODULES = ("quantcheck.harness.plugin", "harness.plugin")


def _entry_point_loads_plugin() -> bool:
    from importlib.metadata import entry_points

    return any(ep.value in PLUGIN_MODULES for ep in entry_points(group="pytest11"))


def build_arguments(argv: list[str]) -> list[str]:
    args = list(argv)
    if importlib.util.find_spec("xdist") is not None and not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        args[:0] = ["-n", "auto"]
    if not any(a == "--summary" or a.startswith("--summary=") for a in args):
        args.append("--summary")
    args.append("--all-suites")
    # "-p" (not a plugin object) so that pytest-xdist workers load it too; a conftest using
    # harness.plugin.register_once then sees it registered and does nothing.
    if not _entry_point_loads_plugin():
        args[:0] = ["-p", f"{__package__}.plugin"]
    return args


def main(argv: Optional[list[str]] = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["golden"]:
        from .golden_cli import main as golden_main

        return golden_main(given[1:])
    args = build_arguments(given)
    print("python -m pytest " + " ".join(args), flush=True)
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
