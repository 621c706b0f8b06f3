"""Goldens: one per (suite, case, device, dtype), safetensors data plus a JSON sidecar.

Layout: ``golden/<suite stem>/<case>/<device>-<dtype>.safetensors`` and ``.json`` beside it.
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
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .compare import float_errors

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


@dataclasses.dataclass(frozen=True)
class GoldenPaths:
    data: Path
    sidecar: Path

    @property
    def case_dir(self) -> Path:
        return self.data.parent

    @property
    def pending(self) -> Path:
        return self.data.with_suffix(PENDING_SUFFIX)


def golden_paths(root: Path, suite_stem: str, case: str, device: str, dtype: str) -> GoldenPaths:
    base = root / suite_stem / case / f"{device}-{dtype}"
    return GoldenPaths(data=base.with_suffix(DATA_SUFFIX), sidecar=base.with_suffix(SIDECAR_SUFFIX))


_SAMPLE_MULTIPLIER = 2654435761  # a prime near 2**32 / golden ratio: spreads k * m mod n over [0, n)


def sample_indices(numel: int, count: int) -> torch.Tensor:
    """``count`` distinct-as-possible flat indices spread over ``[0, numel)``, the same on every
    torch version and machine (plain integer arithmetic, no RNG), sorted."""
    k = torch.arange(count, dtype=torch.int64)
    return torch.unique((k * _SAMPLE_MULTIPLIER) % numel)


def sample_for_golden(tensors: dict[str, torch.Tensor], count: Optional[int]) -> dict[str, torch.Tensor]:
    """Outputs with more than ``count`` elements replaced by a fixed 1-D sample of them.

    Big outputs (a 2048 x 2048 matmul is 16 MB) would bloat the repository; a few
    thousand fixed elements still catch a changed constant, while the full tensors are
    compared with eager in the same run.
    """
    if count is None:
        return tensors
    out = {}
    for name, tensor in tensors.items():
        if tensor.numel() > count:
            flat = tensor.detach().reshape(-1)
            out[name] = flat[sample_indices(flat.numel(), count).to(flat.device)]
        else:
            out[name] = tensor
    return out


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
    return sidecar


def load_golden(paths: GoldenPaths) -> dict[str, torch.Tensor]:
    """The stored outputs, verified against the sidecar (keys, shape, dtype, sha256)."""
    if paths.pending.exists():  # a writer died mid-commit
        with locked_directory(paths.case_dir):
            recover_interrupted_write(paths)
    if not paths.data.exists():
        raise GoldenMissing(paths.data, None, "no golden yet")
    return _verified(paths.data, read_sidecar(paths.sidecar), paths.sidecar)


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
def locked_directory(directory: Path) -> Iterator[None]:
    """Exclusive flock on ``directory`` itself (no lock files left behind)."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.chmod(tmp.name, 0o666 & ~_current_umask())  # mkstemp makes 0600; goldens are ordinary repo files
    os.replace(tmp.name, path)


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


def recover_interrupted_write(paths: GoldenPaths) -> None:
    """Finish or undo a write that was killed between its steps (call under the directory lock).

    A pending sidecar that matches the data means the data was already replaced: finish by
    renaming it into place. One that does not match means the data is still the old one,
    whole with the old sidecar: drop the pending file.
    """
    for target in (paths.data, paths.sidecar, paths.pending):  # temporaries of a writer that died
        for leftover in paths.case_dir.glob(f".{target.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    if not paths.pending.exists():
        return
    try:
        if not paths.data.exists():
            raise GoldenMissing(paths.data, None, "no data")
        _verified(paths.data, read_sidecar(paths.pending), paths.pending)
    except GoldenError:
        paths.pending.unlink(missing_ok=True)
    else:
        os.replace(paths.pending, paths.sidecar)


def write_golden(paths: GoldenPaths, tensors: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> GoldenUpdate:
    """Store ``tensors`` unless the stored bytes already equal them. Safe under concurrent writers."""
    data = _serialize(tensors)
    with locked_directory(paths.case_dir):
        recover_interrupted_write(paths)
        status, changes, note = "created", (), ""
        if paths.data.exists():
            try:
                old = load_golden(paths)
            except GoldenError as exc:
                status, note = "replaced", exc.problem
            else:
                if paths.data.read_bytes() == data:
                    return GoldenUpdate(paths, "unchanged")
                status, changes = "changed", _changes(old, tensors)
                if not changes:
                    note = "same values, different layout or keys"
        _atomic_write(paths.pending, _sidecar_text(sidecar).encode("utf-8"))  # 1. the intent, whole
        _atomic_write(paths.data, data)  # 2. the data
        os.replace(paths.pending, paths.sidecar)  # 3. the commit
        _sync_directory(paths.case_dir)
        return GoldenUpdate(paths, status, changes, note)


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


def find_stale_goldens(root: Path, declared: dict[str, set[tuple[str, str, str]]], rootdir: Path) -> list[Path]:
    """Golden files no declared (case, device, dtype) owns.

    ``declared`` maps a suite stem to its (case, device, dtype) triples, for the suites this
    session loaded. A golden directory of a suite that was not loaded counts as stale only
    when the suite file its sidecars name no longer exists.
    """
    stale: list[Path] = []
    if not root.is_dir():
        return stale
    for suite_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in suite_dir.rglob("*") if f.is_file() and f.suffix in (DATA_SUFFIX, SIDECAR_SUFFIX))
        owned = declared.get(suite_dir.name)
        if owned is None:
            if _suite_file_gone(files, rootdir):
                stale.extend(files)
            continue
        for f in files:
            relative = f.relative_to(suite_dir)
            device, _, dtype = f.stem.partition("-")
            if len(relative.parts) != 2 or (relative.parts[0], device, dtype) not in owned:
                stale.append(f)
    return stale


def _suite_file_gone(files: list[Path], rootdir: Path) -> bool:
    for f in files:
        if f.suffix == SIDECAR_SUFFIX:
            try:
                suite = json.loads(f.read_text(encoding="utf-8")).get("suite")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if isinstance(suite, str):
                return not (rootdir / suite).exists()
    return False


def prune(paths: list[Path]) -> list[Path]:
    """Delete ``paths`` and the directories they leave empty; returns what was deleted."""
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
        parent = path.parent
        for directory in (parent, parent.parent):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds when empty
    return removed
