"""Checks that the media tools a command needs are installed, so it stops with the fix instead of a traceback.

- **FFmpeg** (``eval``): ltx-trainer's validation runner reads each reference with ``torchaudio.load``, which from
  torchaudio 2.9 on decodes through torchcodec, and torchcodec loads FFmpeg's shared libraries. Without FFmpeg the
  sweep dies in a torchcodec traceback after loading the models. The libraries are found by the dynamic loader, not
  on ``PATH``; the ``ffmpeg`` program on ``PATH`` is the visible sign of an FFmpeg install (``apt-get install
  ffmpeg`` and conda's ``ffmpeg`` install both), so both are checked.
- **torchcodec** (``eval``, where torchaudio is 2.9 or newer or not installed): imported, which loads FFmpeg.
- **PyAV** (``build-dataset`` always: it probes and re-muxes the clips; ``precompute`` for audio that is not WAV,
  FLAC or OGG): its wheels bundle their own FFmpeg, so only the package is needed.

Each check returns one line naming what is missing and the command that installs it, or None.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import shutil

logger = logging.getLogger(__name__)

FFMPEG_FIX = "sudo apt-get install ffmpeg (or conda install -c conda-forge ffmpeg; macOS: brew install ffmpeg)"
TORCHCODEC_FIX = "pip install 'torchcodec>=0.8.1,<1.0.0' (the release built for your torch, as ltx-trainer pins it)"
PYAV_FIX = "pip install av"
# The package is installed from a clone (it is not on PyPI); scripts/setup.sh installs this extra.
RECIPES_FIX = "pip install -e '.[recipes]' in the ltx-audio-reference clone"


class MissingToolError(RuntimeError):
    """A command needs a media tool that is not installed; the message has one line per tool, each with its fix."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def missing_ffmpeg() -> str | None:
    """A line saying FFmpeg is not installed, or None when ``ffmpeg`` is on ``PATH``."""
    if shutil.which("ffmpeg") is None:
        return f"FFmpeg is not installed (no ffmpeg program on PATH): {FFMPEG_FIX}"
    return None


def _torchaudio_needs_torchcodec() -> bool:
    try:
        version = importlib.metadata.version("torchaudio")
    except importlib.metadata.PackageNotFoundError:
        return True  # ltx-trainer 1.2.0 installs torchaudio >= 2.7; assume the current one
    major, minor = (int(part) for part in version.split("+")[0].split(".")[:2])
    return (major, minor) >= (2, 9)


def missing_torchcodec() -> str | None:
    """A line saying torchcodec is missing or cannot load FFmpeg, or None when its decoders import (or are unneeded)."""
    if not _torchaudio_needs_torchcodec():
        return None
    try:
        importlib.import_module("torchcodec.decoders")
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "torchcodec":
            return f"torchcodec is not installed (torchaudio 2.9+ reads audio through it): {TORCHCODEC_FIX}"
        return f"torchcodec cannot be imported ({_first_line(e)}): {TORCHCODEC_FIX}"
    except (ImportError, OSError, RuntimeError) as e:  # torchcodec raises RuntimeError when no FFmpeg library loads
        logger.debug("torchcodec failed to load: %s", e)
        return f"torchcodec cannot load FFmpeg's libraries ({_first_line(e)}): install FFmpeg 4 to 7: {FFMPEG_FIX}"
    return None


def missing_pyav() -> str | None:
    """A line saying PyAV is not installed, or None when ``import av`` works."""
    try:
        importlib.import_module("av")
    except ImportError as e:
        return f"PyAV is not installed ({_first_line(e)}): {PYAV_FIX}"
    return None


def missing_package(module: str, package: str, use: str) -> str | None:
    """A line saying the pip package ``package`` (imported as ``module``, needed for ``use``) is not installed."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        return f"{package} ({use}) is not installed ({_first_line(e)}): pip install {package}"
    return None


def require(purpose: str, *lines: str | None) -> None:
    """Raise if any check found something missing.

    Args:
        purpose: What needs the tools, e.g. ``"eval (ltx-trainer's validation runner decodes the reference tones)"``.
        lines: The results of ``missing_*`` calls; None entries are fine.

    Raises:
        MissingToolError: Naming each missing tool and its fix.
    """
    missing = [line for line in lines if line]
    if missing:
        raise MissingToolError("\n".join([f"{purpose} needs tools that are missing:", *(f"  {m}" for m in missing)]))
