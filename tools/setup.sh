#!/usr/bin/env bash
# Install what the harness and its tests need on a fresh machine (Python and pip only).
# torch: kept if an importable one is present (the GPU machine ships 2.11); otherwise the
# pinned 2.13.0 CPU build, so that no multi-GB CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip --version >/dev/null
if ! python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install -q torch==2.13.0
fi
python3 -m pip install -q -r requirements.txt
python3 -c "import torch, yaml, safetensors, filecheck, xdist; print('setup ok: torch', torch.__version__)"
