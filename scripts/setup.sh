#!/usr/bin/env bash
# Set up a development environment for tier-1 tests: CPU torch 2.13 + ltx-core 1.0.0 from PyPI.
# ltx-trainer is not on PyPI; see the README's "Install the trainer" section for tier 2.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch==2.13.0 resolves to the local CPU wheel; a looser pin would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet torch==2.13.0 -e '.[test,recipes]'
# ltx-core declares torchaudio, and PyPI's Linux torchaudio is a CUDA build that cannot load next to CPU torch
# (it breaks `import transformers`, hence peft). Nothing in tier 1 needs it, so it is removed.
.venv/bin/pip uninstall --quiet -y torchaudio
.venv/bin/python -c "import ltx_core, peft, optimum.quanto, ltx_audio_reference; print('setup ok')"
