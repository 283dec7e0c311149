"""Audio-reference IC-LoRA training for LTX-2, as a plugin for the stock ltx-trainer.

Importing this package changes nothing. Call :func:`install` (the CLI does) to teach the stock trainer the
registered strategies and hooks.
"""

from __future__ import annotations

from importlib import metadata

from ltx_audio_reference.hookspecs import hookimpl

try:
    __version__ = metadata.version("ltx-audio-reference")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

__all__ = ["__version__", "hookimpl", "install"]


def install() -> None:
    """Install the registered strategies and hooks into the stock ltx-trainer (idempotent).

    Raises:
        ModuleNotFoundError: If ltx-trainer is not installed; the message says how to install it.
    """
    from ltx_audio_reference import bridge  # noqa: PLC0415 - nothing may touch ltx_trainer at import time

    bridge.install()
