#!/usr/bin/env bash
# Install what the harness and its tests need on a fresh machine (Python and pip only), at the
# exact versions of constraints.txt (a run is reproducible: the registry's newest pytest is not
# picked up by surprise).
# torch: kept if an importable one is present (the GPU machine ships 2.11); otherwise the
# pinned 2.13.0 CPU build, so that no multi-GB CUDA build is pulled in.
# transformers: optional (the tests of a Hugging Face model skip without it), installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip --version >/dev/null
if ! python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install -q -c constraints.txt torch==2.13.0
fi
python3 -m pip install -q -c constraints.txt -r requirements.txt transformers
python3 -c "import torch, yaml, safetensors, filecheck, xdist, pytest, transformers; print('setup ok: torch', torch.__version__, 'pytest', pytest.__version__)"
