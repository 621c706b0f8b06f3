"""Goldens: one per (suite, case, device, dtype), safetensors data plus a JSON sidecar.

Layout: ``golden/<suite key>/<case>/<device>-<dtype>.safetensors`` and ``.json`` beside it,
the suite key being the suite's path under the suites root without its suffix
(:mod:`harness.project`).
The data file holds the named outputs (lossless, pickle-free); the sidecar holds, per
tensor, shape, dtype, strides and the sha256 of its bytes, plus the torch version, device
and producing backend. A golden is produced from *eager* on that device: eager is the
reference every backend is held to, and it is the run least likely to change when the
compiler does (document: docs/harness.md, "Goldens").

Writes are atomic (temporary file in the same directory, then ``os.replace``) and
serialized by an ``fcntl.flock`` on the case directory, so ``pytest -n auto
--update-golden`` is safe. The pair is committed through a journal so that a writer killed
at any instant leaves the old golden or the new one, never data of one with the sidecar of
the other: the new sidecar is first written whole as ``<device>-<dtype>.pending``, then the
data replaced, then the pending sidecar renamed over the old one. Whoever next touches the
golden finishes or undoes an interrupted commit (:func:`recover_interrupted_write`). Bytes that would not change are not rewritten: a second update
run leaves every file byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

# The fixed sample of a large output lives where repro scripts can carry it (re-exported).
from .core.tolerance import float_errors

GOLDEN_FORMAT = "quantcheck-golden/1"
DATA_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
PENDING_SUFFIX = ".pending"  # the next sidecar, while a write is committing

try:
    import fcntl
except ImportError:  # not POSIX: writes stay atomic, concurrent writers are not serialized
    fcntl = None  # type: ignore[assignment]


class GoldenError(Exception):
    """A golden that cannot be trusted: names the file and the key; nothing is overwritten."""

    def __init__(self, path: Path, key: Optional[str], problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        where = f"{path}" + (f": key {key!r}" if key else "")
        super().__init__(f"{where}: {problem}")


class GoldenMissing(GoldenError):
    pass


class GoldenWriteError(GoldenError):
    """A golden that could not be written (read-only tree, full disk, a directory in the way)."""


@dataclasses.dataclass(frozen=True)
class GoldenPaths:
    data: Path
    sidecar: Path
    root: Optional[Path] = None  # the golden tree; nothing outside it is read or written

    @property
    def case_dir(self) -> Path:
        return self.data.parent

    @property
    def pending(self) -> Path:
        return self.data.with_suffix(PENDING_SUFFIX)


OBTAINED_MARK = ".obtained"  # <device>-<dtype>.obtained[-<backend>].safetensors: what a failing cell got


def obtained_path(paths: GoldenPaths, backend: Optional[str] = None) -> Path:
    """Beside the golden, as pytest-regressions' ``.obtained`` files: eager's outputs (what
    --update-golden would write), or with ``backend`` that backend's compiled outputs."""
    tag = OBTAINED_MARK + (f"-{backend}" if backend else "")
    return paths.data.with_name(paths.data.stem + tag + DATA_SUFFIX)


def write_obtained(path: Path, tensors: dict[str, torch.Tensor]) -> Optional[str]:
    """Write ``tensors`` to ``path`` (whole or not at all); the problem as text when it cannot."""
    from safetensors.torch import save_file

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(temporary))
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        return f"{path}: not written ({exc.strerror or exc})"
    return None


def golden_paths(root: Path, suite_key: str, case: str, device: str, dtype: str) -> GoldenPaths:
    base = root / suite_key / case / f"{device}-{dtype}"
    return GoldenPaths(data=base.with_suffix(DATA_SUFFIX), sidecar=base.with_suffix(SIDECAR_SUFFIX), root=root)


def _check_inside_tree(paths: GoldenPaths, error: type[GoldenError]) -> None:
    """The case directory must resolve inside the golden tree (no symlinked way out)."""
    if paths.root is None:
        return
    root, case_dir = paths.root.resolve(), paths.case_dir.resolve()
    if case_dir != root and root not in case_dir.parents:
        raise error(paths.case_dir, None, f"resolves to {case_dir}, outside the golden tree {root}; nothing is read or written there")


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular(path: Path, root: Optional[Path], error: type[GoldenError] = GoldenError) -> bool:
    """Whether ``path`` exists; raises when it is anything but a regular file inside ``root``."""
    try:
        mode = path.stat().st_mode  # follows a symlink: what a read would open
    except FileNotFoundError:
        if path.is_symlink():
            raise error(path, None, f"is a dangling symlink (to {os.readlink(path)})") from None
        return False
    if path.is_symlink() and root is not None:
        target, tree = path.resolve(), root.resolve()
        if tree not in target.parents:
            raise error(path, None, f"is a symlink to {target}, outside the golden tree; goldens are read only inside it")
    for is_kind, kind in _FILE_KINDS:
        if is_kind(mode):
            raise error(path, None, f"is {kind}, not a golden file")
    return True


def tensor_sha256(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8)  # the bytes as stored, whatever the dtype (bf16 and bool included)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def _serialize(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})


def _device_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return device


def sidecar_for(
    tensors: dict[str, torch.Tensor],
    strides: dict[str, tuple[int, ...]],
    *,
    suite: str,
    case: str,
    device: str,
    dtype: str,
    backend: str,
    sampled_from: Optional[dict[str, list[int]]] = None,
) -> dict[str, Any]:
    """The sidecar of ``tensors``. ``sampled_from`` gives the full shape of outputs stored as samples."""
    sidecar = {
        "format": GOLDEN_FORMAT,
        "suite": suite,
        "case": case,
        "device": device,
        "dtype": dtype,
        "producer": {"backend": backend, "torch": torch.__version__, "device_name": _device_name(device)},
        "tensors": {
            name: {
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "strides": list(strides.get(name, t.stride())),
                "sha256": tensor_sha256(t),
            }
            for name, t in tensors.items()
        },
    }
    for name, shape in (sampled_from or {}).items():
        sidecar["tensors"][name]["sampled_from"] = shape
    return sidecar


def _sidecar_text(sidecar: dict[str, Any]) -> str:
    return json.dumps(sidecar, indent=2, sort_keys=True) + "\n"


def read_sidecar(path: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenMissing(path, None, "sidecar is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GoldenError(path, None, f"sidecar is not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != GOLDEN_FORMAT or not isinstance(sidecar.get("tensors"), dict):
        raise GoldenError(path, "format", f"not a {GOLDEN_FORMAT} sidecar")
    for key, entry in sidecar["tensors"].items():
        if not isinstance(entry, dict):
            raise GoldenError(path, key, f"entry is a {type(entry).__name__}, not a mapping of shape, dtype, strides and sha256")
        for field, kind in (("shape", list), ("dtype", str), ("sha256", str)):
            if not isinstance(entry.get(field), kind):
                raise GoldenError(path, key, f"{field}: must be a {kind.__name__} (got {entry.get(field)!r})")
    return sidecar


def load_golden(
    paths: GoldenPaths, *, suite: Optional[str] = None, notes: Optional[list[str]] = None
) -> dict[str, torch.Tensor]:
    """The stored outputs, verified against the sidecar (keys, shape, dtype, sha256).

    ``suite``: the suite file that owns this golden (its display path); a sidecar naming
    another one is an error. ``notes`` receives what was repaired on the way (an
    interrupted commit finished or undone).
    """
    _check_inside_tree(paths, GoldenError)
    if not paths.case_dir.is_dir():
        if paths.case_dir.exists() or paths.case_dir.is_symlink():
            _check_regular(paths.case_dir, paths.root)  # raises: the case directory is a file, FIFO, dangling link
        raise GoldenMissing(paths.data, None, "no golden yet")
    for _ in range(3):
        with locked_directory(paths.case_dir, shared=True):
            if not paths.pending.exists():
                return _load_locked(paths, suite)
        # A writer died mid-commit (a live one holds the exclusive lock until it is done).
        try:
            with locked_directory(paths.case_dir):
                recovered = recover_interrupted_write(paths)
        except OSError as exc:  # a read-only tree: read what the repair would keep, change nothing
            with locked_directory(paths.case_dir, shared=True):
                return _load_past_pending(paths, suite, exc, notes)
        if notes is not None:
            notes.extend(recovered)
    with locked_directory(paths.case_dir):
        return _load_locked(paths, suite)


def _load_past_pending(paths: GoldenPaths, suite: Optional[str], exc: OSError, notes: Optional[list[str]]) -> dict[str, torch.Tensor]:
    """A killed writer's pending sidecar that cannot be cleaned: the golden the repair would
    keep (the pending commit's when the data already matches it, else the old one), read only."""
    try:
        pending = read_sidecar(paths.pending)
        tensors = _verified(paths.data, pending, paths.pending)
    except (GoldenError, OSError):
        tensors = None
    if notes is not None:
        notes.append(f"{paths.pending}: a killed writer's commit; cannot clean it here ({exc.strerror or exc}), read past it")
    if tensors is None:
        return _load_locked(paths, suite)
    if suite is not None and pending.get("suite") != suite:
        raise GoldenError(paths.pending, "suite", f"this golden belongs to {pending.get('suite')!r}, not {suite!r}")
    return tensors


def _load_locked(paths: GoldenPaths, suite: Optional[str] = None) -> dict[str, torch.Tensor]:
    """load_golden's body, for a caller that holds the case directory's lock."""
    if not _check_regular(paths.data, paths.root):
        raise GoldenMissing(paths.data, None, "no golden yet")
    if not _check_regular(paths.sidecar, paths.root):
        raise GoldenMissing(paths.sidecar, None, "sidecar is missing")
    sidecar = read_sidecar(paths.sidecar)
    if suite is not None and sidecar.get("suite") != suite:
        raise GoldenError(
            paths.sidecar, "suite",
            f"this golden belongs to {sidecar.get('suite')!r}, not {suite!r} (two suites mapped to one golden directory?)",
        )
    return _verified(paths.data, sidecar, paths.sidecar)


def _verified(data_path: Path, sidecar: dict[str, Any], sidecar_path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    paths = GoldenPaths(data=data_path, sidecar=sidecar_path)
    raw = paths.data.read_bytes()
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise GoldenError(paths.data, None, f"unreadable safetensors data (truncated or corrupt: {exc})") from None
    declared = sidecar["tensors"]
    for key in sorted(set(declared) | set(tensors)):
        if key not in tensors:
            raise GoldenError(paths.data, key, "listed in the sidecar but absent from the data file")
        if key not in declared:
            raise GoldenError(paths.sidecar, key, "present in the data file but not listed in the sidecar")
        entry, tensor = declared[key], tensors[key]
        if list(tensor.shape) != entry.get("shape") or str(tensor.dtype).removeprefix("torch.") != entry.get("dtype"):
            raise GoldenError(
                paths.data, key,
                f"data is {list(tensor.shape)} {tensor.dtype}, sidecar says {entry.get('shape')} {entry.get('dtype')}",
            )
        digest = tensor_sha256(tensor)
        if digest != entry.get("sha256"):
            raise GoldenError(paths.data, key, f"sha256 mismatch: data hashes to {digest[:16]}…, sidecar says {str(entry.get('sha256'))[:16]}…")
    return tensors


@contextlib.contextmanager
def locked_directory(directory: Path, shared: bool = False) -> Iterator[None]:
    """flock on ``directory`` itself (no lock files left behind): exclusive for writers, shared for readers.

    Writers create the directory; readers need it to exist."""
    if not shared:
        directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    The rename replaces whatever entry is at ``path`` (a symlink or FIFO included); it never
    writes through it. On any error the temporary file is removed."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        except OSError:
            tmp.close()
            os.unlink(tmp.name)
            raise
    try:
        os.chmod(tmp.name, 0o666 & ~_current_umask())  # mkstemp makes 0600; goldens are ordinary repo files
        os.replace(tmp.name, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclasses.dataclass(frozen=True)
class GoldenUpdate:
    """What ``write_golden`` did: 'created', 'changed', 'unchanged' or 'replaced' (was corrupt)."""

    paths: GoldenPaths
    status: str
    changes: tuple[tuple[str, float, float], ...] = ()  # (key, max abs change, max rel change)
    note: str = ""
    recovered: tuple[str, ...] = ()  # what an interrupted earlier write left, and what became of it

    def describe(self) -> str:
        if self.status == "unchanged":
            return f"{self.paths.data}: unchanged"
        if self.status == "created":
            return f"{self.paths.data}: created"
        if self.status == "replaced":
            return f"{self.paths.data}: replaced a corrupt golden ({self.note})"
        parts = [f"{key}: max abs change {abs_c:.6g}, max rel change {rel_c:.6g}" for key, abs_c, rel_c in self.changes]
        return f"{self.paths.data}: changed; " + "; ".join(parts or [self.note])


def _changes(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> tuple[tuple[str, float, float], ...]:
    out = []
    for key, tensor in new.items():
        before = old.get(key)
        if before is None or before.shape != tensor.shape or before.dtype != tensor.dtype:
            out.append((key, float("inf"), float("inf")))
            continue
        if tensor.numel() == 0:
            continue
        abs_err, rel_err = float_errors(before, tensor)
        if abs_err.max().item() > 0:
            out.append((key, abs_err.max().item(), rel_err.nan_to_num(nan=0.0, posinf=float("inf")).max().item()))
    return tuple(out)


def recover_interrupted_write(paths: GoldenPaths) -> list[str]:
    """Finish or undo a write that was killed between its steps (call under the directory lock).

    A pending sidecar that matches the data means the data was already replaced: finish by
    renaming it into place. One that does not match means the data is still the old one,
    whole with the old sidecar: drop the pending file. Returns one line per thing done.
    """
    done = []
    for target in (paths.data, paths.sidecar, paths.pending):  # temporaries of a writer that died
        for leftover in sorted(paths.case_dir.glob(f".{target.name}.*.tmp")):
            leftover.unlink(missing_ok=True)
            done.append(f"{leftover}: removed (temporary file of a killed writer)")
    if not paths.pending.is_file() or paths.pending.is_symlink():
        return done
    try:
        if not _check_regular(paths.data, paths.root):
            raise GoldenMissing(paths.data, None, "no data")
        _verified(paths.data, read_sidecar(paths.pending), paths.pending)
    except GoldenError:
        paths.pending.unlink(missing_ok=True)
        done.append(f"{paths.pending}: removed (a killed writer's commit, undone: the old golden stays)")
    else:
        os.replace(paths.pending, paths.sidecar)
        done.append(f"{paths.pending}: committed (a killed writer's commit, finished: the new golden stays)")
    return done


def write_golden(paths: GoldenPaths, tensors: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> GoldenUpdate:
    """Store ``tensors`` unless the stored bytes already equal them. Safe under concurrent writers.

    Raises :class:`GoldenWriteError` (one line, nothing half-written left behind) when the
    tree cannot be written: read-only, full, or a directory where the golden belongs."""
    data = _serialize(tensors)
    _check_inside_tree(paths, GoldenWriteError)
    for path in (paths.data, paths.sidecar, paths.pending):
        if path.is_dir() and not path.is_symlink():
            raise GoldenWriteError(path, None, "is a directory, not a golden file; remove it by hand (nothing was written)")
    try:
        with locked_directory(paths.case_dir):
            return _write_locked(paths, data, tensors, sidecar)
    except OSError as exc:
        problem = f"cannot write the golden ({exc.strerror or exc}); the old one, if any, is untouched"
        raise GoldenWriteError(paths.data, None, problem) from None


def _write_locked(paths: GoldenPaths, data: bytes, tensors: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> GoldenUpdate:
    notes = recover_interrupted_write(paths)
    status, changes, note = "created", (), ""
    if paths.data.exists() or paths.data.is_symlink():
        try:
            old = _load_locked(paths)
        except GoldenError as exc:
            status, note = "replaced", exc.problem
        else:
            if paths.data.read_bytes() == data:
                return GoldenUpdate(paths, "unchanged", recovered=tuple(notes))
            status, changes = "changed", _changes(old, tensors)
            if not changes:
                note = "same values, different layout or keys"
    _atomic_write(paths.pending, _sidecar_text(sidecar).encode("utf-8"))  # 1. the intent, whole
    try:
        _atomic_write(paths.data, data)  # 2. the data
    except OSError:
        paths.pending.unlink(missing_ok=True)  # the old pair is still whole: drop the intent
        raise
    os.replace(paths.pending, paths.sidecar)  # 3. the commit
    _sync_directory(paths.case_dir)
    return GoldenUpdate(paths, status, changes, note, recovered=tuple(notes))


def _sync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class StaleGolden:
    path: Path
    why: str


def _golden_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root``, never through a symlink (a pruner must not leave the tree)."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if not path.is_symlink() and path.is_file():
                yield path


def find_stale_goldens(
    root: Path,
    declared: dict[str, set[tuple[str, str, str]]],
    suite_exists: Callable[[str], bool],
    undecided: frozenset[str] = frozenset(),
) -> list[StaleGolden]:
    """Golden files no suite owns any more, each with the reason.

    A file's owner is read from its path alone (``<key>/<case>/<device>-<dtype>.<ext>``),
    never from its sidecar's claims. ``declared`` maps the key of each suite this session
    loaded to its (case, device, dtype) triples: a loaded suite's file is stale when no
    triple matches. The file of a suite not loaded is stale only when
    ``suite_exists(key)`` says no suite file has that key any more. Keys in ``undecided``
    (suites that failed to load) are never stale.
    """
    stale: list[StaleGolden] = []
    if not root.is_dir():
        return stale
    for path in _golden_files(root):
        parts = path.relative_to(root).parts
        if path.suffix not in (DATA_SUFFIX, SIDECAR_SUFFIX) or path.name.startswith(".") or len(parts) < 3 or OBTAINED_MARK in path.name:
            continue
        key, case = "/".join(parts[:-2]), parts[-2]
        device, _, dtype = path.stem.partition("-")
        if key in undecided:
            continue
        if key in declared:
            if (case, device, dtype) not in declared[key]:
                stale.append(StaleGolden(path, "no case declares it"))
        elif not suite_exists(key):
            stale.append(StaleGolden(path, "its suite file is gone"))
    return stale


def recover_leftovers(root: Path) -> list[str]:
    """Finish or undo every interrupted write under ``root`` (temporary and pending files of
    killed writers); one line per thing done. What any reader of those goldens would do."""
    done: list[str] = []
    if not root.is_dir():
        return done
    seen: set[Path] = set()
    for path in _golden_files(root):
        if path.suffix == PENDING_SUFFIX:
            base = path.with_suffix("")
        elif path.name.startswith(".") and path.suffix == ".tmp":
            name = path.name[1:]
            cut = min((name.find(s + ".") for s in (DATA_SUFFIX, SIDECAR_SUFFIX, PENDING_SUFFIX) if s + "." in name), default=-1)
            if cut < 0:
                continue
            base = path.parent / name[:cut]
        else:
            continue
        if base in seen:
            continue
        seen.add(base)
        paths = GoldenPaths(base.with_suffix(DATA_SUFFIX), base.with_suffix(SIDECAR_SUFFIX), root)
        try:
            with locked_directory(paths.case_dir):
                done.extend(recover_interrupted_write(paths))
        except OSError as exc:
            done.append(f"{path}: left by a killed writer; cannot clean it ({exc.strerror or exc})")
    return done


def prune(stale: list[StaleGolden], root: Path) -> list[Path]:
    """Delete the stale files (each under its directory's lock) and the directories below
    ``root`` they leave empty; returns what was deleted."""
    removed = []
    for entry in stale:
        path = entry.path
        with contextlib.suppress(FileNotFoundError):
            with locked_directory(path.parent):
                path.unlink()
            removed.append(path)
        directory = path.parent
        while directory != root and root in directory.parents:
            try:
                directory.rmdir()  # only succeeds when empty
            except OSError:
                break
            directory = directory.parent
    return removed
