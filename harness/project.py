"""The project under check: where its suites and goldens live, and its quantcheck settings.

Each setting is read, first found wins, from the pytest ini key ``quantcheck_<name>``
(pytest.ini, ``[tool.pytest.ini_options]``, tox.ini, setup.cfg), then the
``[tool.quantcheck]`` table of the rootdir's ``pyproject.toml``, then its default:

=========================  ==========================================  ==============================
setting                    meaning                                     default
=========================  ==========================================  ==============================
``suites``                 glob patterns (relative to rootdir)          ``suites/*.yaml``, ``suites/*.yml``
``suites_root``            the directory suite keys are relative to     the patterns' common directory
``golden_dir``             the golden tree, relative to rootdir         ``golden``
``fail_on_stale_goldens``  stale goldens fail the run                   false
=========================  ==========================================  ==============================

A suite's *key* is its path relative to the suites root without the ``.yaml`` / ``.yml``
suffix (``woq_fusion``, ``sub/other``); its goldens live under ``<golden_dir>/<key>/``.
Keying by path, not by file name, keeps ``numerics/other.yaml`` and
``numerics/sub/other.yaml`` apart.
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path, PurePosixPath
from typing import Any

SUITE_SUFFIXES = (".yaml", ".yml")
TOOL_TABLE = "tool.quantcheck"
DEFAULTS: dict[str, Any] = {
    "suites": ["suites/*.yaml", "suites/*.yml"],
    "suites_root": None,
    "golden_dir": "golden",
    "fail_on_stale_goldens": False,
}
INI_HELP = {
    "suites": "glob patterns (relative to rootdir) of YAML suite files",
    "suites_root": "directory (relative to rootdir) that suite keys, and so golden paths, are relative to",
    "golden_dir": "golden directory, relative to rootdir",
    "fail_on_stale_goldens": "true: stale goldens (no case declares them) fail the run",
}


class ProjectSettingsError(Exception):
    """A bad quantcheck setting: names the file, the key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Project:
    rootdir: Path
    suite_patterns: tuple[str, ...]
    suites_root: Path
    golden_root: Path
    fail_on_stale_goldens: bool

    def suite_key(self, suite_path: Path) -> str:
        """``suites_root/sub/x.yaml`` -> ``sub/x``. Raises ValueError for a file outside the suites root."""
        relative = PurePosixPath(Path(suite_path).resolve().relative_to(self.suites_root.resolve()).as_posix())
        return str(relative.with_suffix("")) if relative.suffix in SUITE_SUFFIXES else str(relative)

    def suite_files_for_key(self, key: str) -> list[Path]:
        """The suite files that would own ``<golden_dir>/<key>/`` (existing ones only)."""
        return [p for p in (self.suites_root / f"{key}{s}" for s in SUITE_SUFFIXES) if p.is_file()]


def read_tool_table(rootdir: Path) -> dict[str, Any]:
    """``[tool.quantcheck]`` of ``rootdir/pyproject.toml`` ({} when there is none), keys checked."""
    pyproject = rootdir / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            if "[tool.quantcheck]" in pyproject.read_text(encoding="utf-8", errors="replace"):
                raise ProjectSettingsError(f"{pyproject}: [{TOOL_TABLE}] needs Python 3.11 or the tomli package to be read") from None
            return {}
    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectSettingsError(f"{pyproject}: not valid TOML ({exc})") from None
    table = document.get("tool", {}).get("quantcheck", {})
    if not isinstance(table, dict):
        raise ProjectSettingsError(f"{pyproject}: [{TOOL_TABLE}] must be a table")
    for key, value in table.items():
        if key not in DEFAULTS:
            raise ProjectSettingsError(f"{pyproject}: [{TOOL_TABLE}] {key}: unknown key (allowed {', '.join(DEFAULTS)})")
        _check_type(f"{pyproject}: [{TOOL_TABLE}] {key}", key, value)
    return table


def _check_type(where: str, key: str, value: Any) -> None:
    if key == "suites":
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
        wanted = "a non-empty list of glob patterns"
    elif key == "fail_on_stale_goldens":
        ok, wanted = isinstance(value, bool), "true or false"
    else:
        ok, wanted = isinstance(value, str) and bool(value), "a non-empty path string"
    if not ok:
        raise ProjectSettingsError(f"{where}: must be {wanted} (got {value!r})")


def parse_ini_value(key: str, raw: Any) -> Any:
    """An ini value as the setting's type, or None when the ini file does not set it."""
    if raw in ("", [], None):
        return None
    if key == "fail_on_stale_goldens":
        text = str(raw).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ProjectSettingsError(f"ini key quantcheck_{key}: must be true or false (got {raw!r})")
        return text in ("true", "1", "yes")
    return raw


def common_directory(patterns: tuple[str, ...]) -> str:
    """The directory part every pattern shares before its first glob character ('' for the rootdir)."""
    prefixes = []
    for pattern in patterns:
        parts = PurePosixPath(pattern).parts
        literal = []
        for part in parts[:-1]:
            if glob.has_magic(part):
                break
            literal.append(part)
        prefixes.append(literal)
    common = []
    for column in zip(*prefixes):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return "/".join(common)


def load_project(rootdir: Path, ini: dict[str, Any]) -> Project:
    """Settings from ``ini`` (setting name -> raw ini value, unset ones empty), then pyproject, then defaults."""
    table = read_tool_table(rootdir)
    values = {}
    for key, default in DEFAULTS.items():
        from_ini = parse_ini_value(key, ini.get(key))
        values[key] = from_ini if from_ini is not None else table.get(key, default)
    patterns = tuple(values["suites"])
    suites_root = values["suites_root"] if values["suites_root"] is not None else common_directory(patterns)
    return Project(
        rootdir=rootdir,
        suite_patterns=patterns,
        suites_root=rootdir / suites_root,
        golden_root=rootdir / values["golden_dir"],
        fail_on_stale_goldens=bool(values["fail_on_stale_goldens"]),
    )

