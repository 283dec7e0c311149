"""Subprocess driver for the kill-and-resume tests: trains one config, logs every loss, and can stall inside a save.

Usage::

    python reliability_driver.py CONFIG --loss-log FILE [--fault write:STEP|state:STEP --marker FILE] [--stock]

``--loss-log`` appends ``step loss0 loss1 ...`` per batch (floats in ``float.hex``, so comparisons are bitwise), through
an ``on_train_step`` plugin; ``{rank}`` in its path becomes the process's rank (under ``accelerate launch``).

Faults are injected around the stock functions *before* the bridge installs, so the bridge wraps them exactly as it
wraps the real ones, and a ``--stock`` run meets the same fault unwrapped:

- ``write:STEP``: the weights file of that step is written half, flushed, then the write stalls (a slow disk).
- ``state:STEP``: the run stalls right before writing that step's training state (the weights are already saved).
- ``full:STEP``: right before that step's training state, the marker file fills the disk it is on (no stall).

When it stalls, the driver writes the marker file; the test then kills it with ``SIGKILL``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from ltx_audio_reference import hookimpl

STALL_SECONDS = 600

logger = logging.getLogger("reliability_driver")


def _install_faults(fault: str | None, marker: Path | None) -> None:
    if fault is None:
        return
    from safetensors.torch import save  # noqa: PLC0415

    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    kind, step = fault.split(":")
    tag = f"step_{int(step):05d}"
    assert marker is not None, "--fault needs --marker"

    if kind == "write":
        real_save_file = trainer_module.save_file

        def save_file(tensors: dict[str, Any], filename: Any, metadata: dict[str, str] | None = None) -> None:  # noqa: ANN401
            if tag not in Path(filename).name:
                real_save_file(tensors, filename, metadata=metadata)
                return
            data = save(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                marker.write_text(f"stalled writing {filename}\n")
                time.sleep(STALL_SECONDS)
                f.write(data[len(data) // 2 :])

        trainer_module.save_file = save_file
    elif kind == "state":
        trainer_cls = trainer_module.LtxvTrainer
        real_save_state = trainer_cls._save_training_state

        def _save_training_state(self: Any, save_dir: Path) -> None:  # noqa: ANN401
            if self._global_step == int(step):
                marker.write_text(f"stalled before the training state of step {step}\n")
                time.sleep(STALL_SECONDS)
            real_save_state(self, save_dir)

        trainer_cls._save_training_state = _save_training_state
    elif kind == "full":
        trainer_cls = trainer_module.LtxvTrainer
        real_save_state = trainer_cls._save_training_state

        def _save_training_state(self: Any, save_dir: Path) -> None:  # noqa: ANN401
            if self._global_step == int(step):
                # The disk fills between the weights and the training state.
                with open(marker, "wb", buffering=0) as filler, contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * 4096)
            real_save_state(self, save_dir)

        trainer_cls._save_training_state = _save_training_state
    else:
        raise SystemExit(f"unknown fault {fault!r}")


class LossLog:
    """Appends each training batch's per-sample losses, exactly."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")  # noqa: SIM115 - kept open for the run; a SIGKILL loses only the unflushed line

    @hookimpl
    def on_train_step(self, context: Any) -> None:  # noqa: ANN401
        """Write ``step loss...`` and flush, so the line is on its way to disk before backward starts."""
        values = " ".join(float.hex(v) for v in context.loss.float().tolist())
        self.file.write(f"{context.step} {values}\n")
        self.file.flush()


def main() -> None:
    """Parse the arguments, install the faults, and train (through the CLI, or the bare stock trainer)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--loss-log", type=Path)
    parser.add_argument("--fault")
    parser.add_argument("--marker", type=Path)
    parser.add_argument("--stock", action="store_true", help="train with the stock runner, bridge not installed")
    args = parser.parse_args()

    _install_faults(args.fault, args.marker)
    if args.stock:
        import yaml  # noqa: PLC0415

        from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
        from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

        config = LtxTrainerConfig(**yaml.safe_load(args.config.read_text()))
        LtxvTrainer(config).train(disable_progress_bars=True)
        return

    from ltx_audio_reference import plugins  # noqa: PLC0415
    from ltx_audio_reference.cli import build_app  # noqa: PLC0415

    if args.loss_log is not None:
        path = Path(str(args.loss_log).format(rank=os.environ.get("RANK", "0")))
        plugins.get_plugin_manager().register(LossLog(path), name="loss_log")
    build_app()(["train", str(args.config), "--disable-progress-bars"])


if __name__ == "__main__":
    main()
