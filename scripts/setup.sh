#!/usr/bin/env bash
# Set up a virtual environment (.venv, or $VENV) for this package.
#
#   bash scripts/setup.sh                     tier 1 (what CI runs): CPU torch 2.13 + ltx-core 1.0.0 from PyPI, fast
#   bash scripts/setup.sh --trainer [SOURCE]  training: a torch set whose torchvision, torchaudio and torchcodec load,
#                                             ltx-core + ltx-trainer + ltx-pipelines 1.2.0, and this package
#
# SOURCE is a local LTX-2 checkout at v1.2.0 (a folder holding packages/ltx-trainer) or a git URL with a tag,
# by default https://github.com/Lightricks/LTX-2.git@v1.2.0 (ltx-trainer is not on PyPI). After --trainer,
# `.venv/bin/ltx-trainer demo DIR` and `.venv/bin/ltx-trainer train DIR/config.yaml` work; the script runs both once
# to prove it. Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) to take torch from another index.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DEFAULT_SOURCE="https://github.com/Lightricks/LTX-2.git@v1.2.0"
# The set seen working together (CPU and CUDA 12.8 wheels on PyPI); torchcodec decodes audio through FFmpeg.
TORCH_SET=(torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 torchcodec==0.8.1)

trainer=0
source_arg=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trainer) trainer=1; if [[ $# -gt 1 && $2 != --* ]]; then source_arg=$2; shift; fi ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1 (see bash scripts/setup.sh --help)" >&2; exit 2 ;;
  esac
  shift
done

python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup.sh: Python >= 3.10 is needed (python3 is $(python3 --version 2>&1))" >&2; exit 2; }
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip

if [[ $trainer == 0 ]]; then
  # torch==2.13.0 resolves to the local CPU wheel; a looser pin would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install --quiet torch==2.13.0 -e '.[test,recipes]'
  # ltx-core declares torchaudio, and PyPI's Linux torchaudio is a CUDA build that cannot load next to CPU torch
  # (it breaks `import transformers`, hence peft). Nothing in tier 1 needs it, so it is removed.
  "$VENV/bin/pip" uninstall --quiet -y torchaudio
  "$VENV/bin/python" -c "import ltx_core, peft, optimum.quanto, ltx_audio_reference; print('setup ok')"
  exit 0
fi

source_arg=${source_arg:-$DEFAULT_SOURCE}
packages=()
if [[ -d $source_arg ]]; then
  for name in ltx-core ltx-trainer ltx-pipelines; do
    [[ -f $source_arg/packages/$name/pyproject.toml ]] \
      || { echo "setup.sh: $source_arg is not an LTX-2 checkout (no packages/$name/pyproject.toml)" >&2; exit 2; }
    packages+=("$source_arg/packages/$name")
  done
else
  for name in ltx-core ltx-trainer ltx-pipelines; do
    packages+=("$name @ git+$source_arg#subdirectory=packages/$name")
  done
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup.sh: CUDA GPU found: torch ${TORCH_SET[0]#torch==} with its CUDA 12.8 kernels"
else
  echo "setup.sh: no CUDA GPU: the same torch set runs on the CPU"
fi
index=()
[[ -n ${TORCH_INDEX_URL:-} ]] && index=(--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "${TORCH_SET[@]}" >"$constraints"
"$VENV/bin/pip" install --quiet "${index[@]}" "${TORCH_SET[@]}"
"$VENV/bin/pip" install --quiet -c "$constraints" "${packages[@]}"
"$VENV/bin/pip" install --quiet -c "$constraints" -e '.[test,recipes]'

"$VENV/bin/python" - <<'PY'
import torchvision.ops  # noqa: F401 - fails when torchvision does not match torch ("operator torchvision::nms")
import torchaudio  # noqa: F401
import torchcodec  # noqa: F401
import ltx_core, ltx_pipelines, ltx_trainer  # noqa: E401, F401
import ltx_audio_reference
ltx_audio_reference.install()
print("trainer environment ok: ltx-trainer, ltx-core and ltx-pipelines import, the bridge installs")
PY
demo=$(mktemp -d)
"$VENV/bin/ltx-trainer" demo "$demo/demo" >/dev/null
"$VENV/bin/ltx-trainer" train "$demo/demo/config.yaml" --disable-progress-bars >"$demo/train.log" 2>&1 \
  || { tail -30 "$demo/train.log" >&2; echo "setup.sh: the demo did not train (log above)" >&2; exit 1; }
rm -rf "$demo"
echo "demo trained: ltx-trainer demo DIR && ltx-trainer train DIR/config.yaml work (in $VENV/bin)"

if ! command -v ffmpeg >/dev/null 2>&1; then
  cat >&2 <<'MSG'
setup.sh: FFmpeg is not installed. Training on precomputed latents works without it, but decoding audio does not
(validation and `audio-reference eval` with reference audio, precompute and build-dataset on MP3/AAC/MP4 input).
Install it with:  sudo apt-get install ffmpeg     (or: conda install -c conda-forge ffmpeg; macOS: brew install ffmpeg)
MSG
fi
echo "setup ok (trainer)"
