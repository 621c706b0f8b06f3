"""``python -m harness golden show|diff``: a golden's contents, and how a failing cell's obtained outputs differ from it.

::

    python -m harness golden show golden/s/case/cpu-float32.safetensors
    python -m harness golden diff golden/s/case/cpu-float32.safetensors                    # eager's obtained file
    python -m harness golden diff golden/s/case/cpu-float32.safetensors --backend inductor
    python -m harness golden diff golden/s/case/cpu-float32.safetensors --against other.safetensors

``diff`` compares exactly (atol = rtol = 0) and prints the numeric table a failing cell
prints; exit status 0 when identical, 1 when they differ, 2 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from .compare import compare_outputs
from .core.tolerance import Tolerance
from .golden import DATA_SUFFIX, SIDECAR_SUFFIX, obtained_path, GoldenPaths


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _data_path(given: str) -> Path:
    """The golden's data file, given it, its sidecar or its stem."""
    path = Path(given)
    if path.suffix == SIDECAR_SUFFIX:
        return path.with_suffix(DATA_SUFFIX)
    return path if path.suffix == DATA_SUFFIX else path.with_name(path.name + DATA_SUFFIX)


def show(data: Path) -> int:
    import json

    sidecar_path = data.with_suffix(SIDECAR_SUFFIX)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else {}
    print(f"{data}")
    for key in ("suite", "case", "device", "dtype"):
        if key in sidecar:
            print(f"  {key}: {sidecar[key]}")
    producer = sidecar.get("producer", {})
    if producer:
        print("  written by: " + ", ".join(f"{k} {v}" for k, v in producer.items()))
    for name, tensor in _load(data).items():
        line = f"  {name}: {tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
        if tensor.numel() and (tensor.is_floating_point() or not tensor.is_complex()):
            values = tensor.double()
            line += f"  min {values.min().item():.6g}  max {values.max().item():.6g}  mean {values.mean().item():.6g}"
        print(line)
        flat = tensor.reshape(-1)[:8].tolist()
        print(f"    first values: {flat}{' ...' if tensor.numel() > 8 else ''}")
    return 0


def diff(data: Path, against: Path) -> int:
    golden, obtained = _load(data), _load(against)
    comparison = compare_outputs(golden, obtained, Tolerance(atol=0.0, rtol=0.0), label=f"{against} vs golden {data}")
    if comparison.ok:
        print(f"{against}: identical to the golden {data}")
        return 0
    print(comparison.report)
    return 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness golden", description="show a golden, or diff it against a failing cell's obtained outputs")
    commands = parser.add_subparsers(dest="command", required=True)
    show_parser = commands.add_parser("show", help="a golden's sidecar and tensors (shape, dtype, range, first values)")
    show_parser.add_argument("golden", help="the golden's .safetensors (or .json) path")
    diff_parser = commands.add_parser("diff", help="the golden against the obtained file beside it (what a failing cell wrote)")
    diff_parser.add_argument("golden")
    diff_parser.add_argument("--backend", default=None, help="the obtained outputs of this backend's compiled run (default: eager's)")
    diff_parser.add_argument("--against", default=None, help="another .safetensors file instead of the obtained one")
    args = parser.parse_args(argv)
    data = _data_path(args.golden)
    try:
        if args.command == "show":
            return show(data)
        against = Path(args.against) if args.against else obtained_path(GoldenPaths(data=data, sidecar=data.with_suffix(SIDECAR_SUFFIX)), args.backend)
        return diff(data, against)
    except FileNotFoundError as exc:
        print(f"golden {args.command}: {exc.filename}: no such file" + ("" if args.command == "show" else " (a failing cell writes it)"), file=sys.stderr)
        return 2
    except Exception as exc:  # a damaged file: one line, not a traceback
        print(f"golden {args.command}: {data}: cannot be read ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
