#!/usr/bin/env bash
# Set up a virtual environment (.venv, or $VENV) for this package.
#
#   bash scripts/setup.sh                     tier 1 (what CI runs): CPU torch 2.13 + ltx-core 1.0.0 from PyPI, fast
#   bash scripts/setup.sh --trainer [SOURCE]  training: a torch set whose torchvision, torchaudio and torchcodec load,
#                                             ltx-core + ltx-trainer + ltx-pipelines 1.2.0, and this package
#   bash scripts/setup.sh --check [--trainer] check an existing environment again (after installing FFmpeg, say);
#                                             installs nothing
#   bash scripts/setup.sh --fetch-ltx2 [SOURCE]  only fetch the LTX-2 checkout (.venv/src/LTX-2) whose preprocessing
#                                             scripts `ltx-trainer audio-reference preprocess` runs
#
# SOURCE is a local LTX-2 checkout at v1.2.0 (a folder holding packages/ltx-trainer) or a git URL with a tag,
# by default https://github.com/Lightricks/LTX-2.git@v1.2.0 (ltx-trainer is not on PyPI), which is cloned once into
# $VENV/src/LTX-2 and kept there: its packages/ltx-trainer/scripts/ hold upstream's preprocessing, which the wheel
# lacks. After --trainer the script checks the environment and trains the demo once. Without FFmpeg it finishes
# everything else, says what needs FFmpeg and how to install it, and exits 0: training on precomputed latents works.
# Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) to take torch from another index.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DEFAULT_SOURCE="https://github.com/Lightricks/LTX-2.git@v1.2.0"
DEFAULT_TAG="v1.2.0"
# The set seen working together (CPU and CUDA 12.8 wheels on PyPI); torchcodec decodes audio through FFmpeg.
TORCH_SET=(torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 torchcodec==0.8.1)

trainer=0
check_only=0
fetch_only=0
source_arg=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trainer) trainer=1; if [[ $# -gt 1 && $2 != --* ]]; then source_arg=$2; shift; fi ;;
    --fetch-ltx2) fetch_only=1; if [[ $# -gt 1 && $2 != --* ]]; then source_arg=$2; shift; fi ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1 (see bash scripts/setup.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
source_arg=${source_arg:-$DEFAULT_SOURCE}

# The LTX-2 checkout: a local SOURCE is used where it is; a git SOURCE is cloned once into $VENV/src/LTX-2.
fetch_ltx2() {
  if [[ -d $source_arg ]]; then
    for name in ltx-core ltx-trainer ltx-pipelines; do
      [[ -f $source_arg/packages/$name/pyproject.toml ]] \
        || { echo "setup.sh: $source_arg is not an LTX-2 checkout (no packages/$name/pyproject.toml)" >&2; exit 2; }
    done
    LTX2_ROOT=$(cd "$source_arg" && pwd)
    return
  fi
  local url=$source_arg tag=$DEFAULT_TAG last=${source_arg##*/}
  if [[ $last == *@* ]]; then tag=${last##*@}; url=${source_arg%@*}; fi
  local checkout="$VENV/src/LTX-2"
  command -v git >/dev/null 2>&1 \
    || { echo "setup.sh: git is needed to fetch LTX-2 (sudo apt-get install git), or pass a local checkout" >&2; exit 2; }
  if [[ -d $checkout/.git ]] && [[ $(git -C "$checkout" describe --tags --exact-match 2>/dev/null || true) == "$tag" ]]
  then
    echo "setup.sh: LTX-2 $tag already in $checkout"
  else
    rm -rf "$checkout"
    mkdir -p "$(dirname "$checkout")"
    echo "setup.sh: cloning LTX-2 $tag into $checkout (its preprocessing scripts are not in the ltx-trainer wheel)"
    git -c advice.detachedHead=false clone --quiet --depth 1 --branch "$tag" "$url" "$checkout"
  fi
  LTX2_ROOT=$(cd "$checkout" && pwd)
}

check_tier1() {
  "$VENV/bin/python" -c "import ltx_core, peft, optimum.quanto, ltx_audio_reference; print('setup ok')"
}

# Everything that works without FFmpeg first; FFmpeg is reported at the end, with its install line, and is no failure.
check_trainer() {
  "$VENV/bin/python" - <<'PY'
import torchvision.ops  # noqa: F401 - fails when torchvision does not match torch ("operator torchvision::nms")
import torchaudio  # noqa: F401
import ltx_core, ltx_pipelines, ltx_trainer  # noqa: E401, F401
import ltx_audio_reference
ltx_audio_reference.install()
print("trainer environment ok: ltx-trainer, ltx-core and ltx-pipelines import, the bridge installs")
PY
  local demo
  demo=$(mktemp -d)
  "$VENV/bin/ltx-trainer" demo "$demo/demo" >/dev/null
  "$VENV/bin/ltx-trainer" train "$demo/demo/config.yaml" --disable-progress-bars >"$demo/train.log" 2>&1 \
    || { tail -30 "$demo/train.log" >&2; echo "setup.sh: the demo did not train (log above)" >&2; exit 1; }
  rm -rf "$demo"
  echo "demo trained: ltx-trainer demo DIR && ltx-trainer train DIR/config.yaml work (in $VENV/bin)"

  "$VENV/bin/python" - <<'PY' || echo "setup.sh: warning: upstream's preprocessing scripts not found (above): \`ltx-trainer audio-reference preprocess\` needs them" >&2
import sys
from ltx_audio_reference.data.preprocess import PreprocessError, find_ltx2_checkout
try:
    checkout = find_ltx2_checkout()
except PreprocessError as e:
    print(e, file=sys.stderr)
    sys.exit(1)
print(f"preprocessing scripts: {checkout.process_dataset} (ltx-trainer {checkout.version})")
PY

  local missing
  missing=$("$VENV/bin/python" -c "
from ltx_audio_reference.data.media_tools import missing_ffmpeg, missing_torchcodec
print('\n'.join(line for line in (missing_ffmpeg(), missing_torchcodec()) if line))")
  if [[ -z $missing ]]; then
    echo "FFmpeg found: torchcodec decodes audio"
    echo "next: source $VENV/bin/activate (puts ltx-trainer on PATH), then the README's demo: ltx-trainer demo /tmp/demo"
    echo "setup ok (trainer)"
    return
  fi
  cat >&2 <<MSG
setup.sh: FFmpeg is missing:
$(sed 's/^/  /' <<<"$missing")
Everything else is set up. Without FFmpeg, training on precomputed latents works (the demo just trained), and so do
check, demo, inspect, precompute and build-dataset (PyAV brings its own FFmpeg). What needs FFmpeg is reading audio
through torchaudio and torchcodec: \`ltx-trainer audio-reference preprocess\` (upstream reads each clip's sound),
validation with reference audio, and \`ltx-trainer audio-reference eval\`. Install it with:
  sudo apt-get install ffmpeg          (conda: conda install -c conda-forge ffmpeg; macOS: brew install ffmpeg)
then check again: bash scripts/setup.sh --check --trainer
MSG
  echo "next: source $VENV/bin/activate (puts ltx-trainer on PATH), then the README's demo: ltx-trainer demo /tmp/demo"
  echo "setup ok (trainer, without FFmpeg: preprocess, validation with references and eval need it; see above)"
}

if [[ $fetch_only == 1 ]]; then
  fetch_ltx2
  echo "LTX-2 checkout: $LTX2_ROOT (scripts in packages/ltx-trainer/scripts)"
  exit 0
fi

if [[ $check_only == 1 ]]; then
  [[ -x $VENV/bin/python ]] \
    || { echo "setup.sh: no environment at $VENV: run bash scripts/setup.sh$([[ $trainer == 1 ]] && echo " --trainer") first" >&2; exit 2; }
  if [[ $trainer == 1 ]]; then check_trainer; else check_tier1; fi
  exit 0
fi

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
  check_tier1
  exit 0
fi

fetch_ltx2
packages=()
for name in ltx-core ltx-trainer ltx-pipelines; do
  packages+=("$LTX2_ROOT/packages/$name")
done
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
echo "setup.sh: 1/3 installing ${TORCH_SET[*]} (a few GB with CUDA kernels: minutes)"
"$VENV/bin/pip" install --quiet "${index[@]}" "${TORCH_SET[@]}"
echo "setup.sh: 2/3 installing ltx-core, ltx-trainer and ltx-pipelines from $LTX2_ROOT"
"$VENV/bin/pip" install --quiet -c "$constraints" "${packages[@]}"
echo "setup.sh: 3/3 installing ltx-audio-reference (editable, with its test and recipes extras)"
"$VENV/bin/pip" install --quiet -c "$constraints" -e '.[test,recipes]'
echo "setup.sh: checking the environment and training the demo once"
check_trainer
