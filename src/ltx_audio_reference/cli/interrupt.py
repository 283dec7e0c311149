"""``ltx-trainer train`` stopped early, by SIGINT or SIGTERM or by the storage: say where the last good checkpoint is.

Python turns SIGINT into a ``KeyboardInterrupt`` and dies silently on SIGTERM (a scheduler's or ``kill``'s default).
Both now raise :class:`TrainingStopped`, a ``KeyboardInterrupt``, so every ``finally`` and atomic write unwinds as for
Ctrl-C (a file being written is left under its temporary name and removed by the next save), and the command prints
the newest complete checkpoint and how to resume from it. A full disk, a read-only or vanished folder
(:class:`~ltx_audio_reference.errors.StorageError`) prints the same after one line naming the path and the errno.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from ltx_audio_reference.errors import StorageError
from ltx_audio_reference.reliability.checkpoints import select_checkpoint
from ltx_audio_reference.reliability.preflight import CHECKPOINTS_DIR_NAME

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(KeyboardInterrupt):
    """A stop signal arrived during ``ltx-trainer train``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 128 + self.signum


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`TrainingStopped` (unless ignored); the previous handlers come
    back after.

    Outside the main thread (where Python cannot set handlers) the block runs with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        raise TrainingStopped(signum)

    # A signal the caller ignores (nohup, a background job of a non-interactive shell) stays ignored.
    previous = {
        signum: signal.signal(signum, handler) for signum in STOP_SIGNALS if signal.getsignal(signum) != signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def checkpoint_lines(output_dir: str | Path, config_path: str | Path) -> list[str]:
    """The newest complete checkpoint under ``output_dir`` and how to resume from it (or that there is none)."""
    folder = Path(output_dir) / CHECKPOINTS_DIR_NAME
    choice = select_checkpoint(folder) if folder.is_dir() else None
    if choice is None:
        return [f"No complete checkpoint was saved under {folder}: running again starts at step 0."]
    state = "with its training state" if choice.state is not None else "without a training state (steps restart at 0)"
    return [
        f"The last complete checkpoint is {choice.weights} ({state}).",
        f"To resume from it, set in {config_path}:",
        "  model:",
        f"    load_checkpoint: {folder}",
        f"and run `ltx-trainer train {config_path}` again.",
    ]


def stopped_message(stop: TrainingStopped, output_dir: str | Path, config_path: str | Path) -> list[str]:
    """What to tell the user after a stop: the newest complete checkpoint and how to resume from it."""
    return [f"Training stopped by {stop.name}.", *checkpoint_lines(output_dir, config_path)]


def storage_message(error: StorageError, output_dir: str | Path, config_path: str | Path) -> list[str]:
    """What to tell the user after a write failed: the path and errno, what is safe on disk, how to resume."""
    safe = error.safe or (
        "no partial file was left (each checkpoint file is written under a temporary name and published only once "
        "complete)"
    )
    return [
        f"Training stopped: cannot write {error.path}: {error.reason}.",
        f"Safe on disk: {safe}.",
        *checkpoint_lines(output_dir, config_path),
    ]
