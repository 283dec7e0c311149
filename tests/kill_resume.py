"""Run training in subprocesses and SIGKILL them: the kill-and-resume tests of tier 2 and the GPU tier share this.

Each run goes through ``reliability_driver.py`` (next to this file), which logs every per-sample loss in ``float.hex``
and can stall inside a save so that the kill lands there.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ltx_audio_reference.reliability import checkpoints

DRIVER = Path(__file__).with_name("reliability_driver.py")


def demo_config(demo_root: Path, out: Path, edits: dict[str, Any] | None = None, *, data: Path | None = None) -> dict:
    """The demo's config with ``output_dir`` set and dotted-key ``edits`` applied (``"a.b": v`` sets ``c[a][b]``)."""
    config = yaml.safe_load((demo_root / "config.yaml").read_text())
    config["output_dir"] = str(out)
    if data is not None:
        config["data"]["preprocessed_data_root"] = str(data)
    for dotted, value in (edits or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


def spawn(config: dict, folder: Path, name: str, *driver_args: str) -> tuple[subprocess.Popen, Path]:
    """Start the driver on ``config`` (written to ``folder/name.yaml``); output goes to ``folder/name.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log = folder / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), str(config_path), *driver_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "250"},
        )
    return proc, log


def kill_once(proc: subprocess.Popen, log: Path, ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting to kill:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    """Wait for a clean exit and return the run's output."""
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-5000:]
    return log.read_text()


def losses(path: Path) -> dict[int, list[str]]:
    """``{step: [per-sample loss as float.hex, ...]}`` from a driver's loss log (empty if it does not exist)."""
    found: dict[int, list[str]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        step, *values = line.split()
        found[int(step)] = values
    return found


def step_of(path: Path) -> int:
    """The step number in a checkpoint file name."""
    return int(re.search(r"step_(\d+)", path.name)[1])


def relative_norm_differences(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per tensor, ``|a - e| / |e|`` in Frobenius norms (LoRA B starts at zero, so elementwise relative error means
    nothing for its small entries). The two files must hold the same keys."""
    assert actual.keys() == expected.keys()
    return {
        key: float((actual[key].float() - e.float()).norm() / e.float().norm().clamp_min(1e-5))
        for key, e in expected.items()
    }


def assert_on_disk_only_complete_files(folder: Path) -> None:
    """Every visible checkpoint file in ``folder`` is complete (temporary files are hidden and skipped)."""
    for path in folder.iterdir():
        if path.suffix == ".safetensors" and not path.name.startswith("."):
            assert checkpoints.safetensors_problem(path) is None, path
        if path.suffix == ".pt":
            assert checkpoints.torch_file_problem(path) is None, path


class Chain:
    """Runs training subprocesses one after another into one output folder, keeping each one's loss log."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.segments: list[dict[int, list[str]]] = []

    def run(self, name: str, config: dict, *fault: str, kill_when: Callable[[Path], bool] | None = None) -> str:
        """Run to the end, or SIGKILL the run once ``kill_when(loss_log)`` holds; returns the run's output."""
        log_path = self.tmp_path / f"{name}.losses"
        proc, log = spawn(config, self.tmp_path, name, "--loss-log", str(log_path), *fault)
        if kill_when is None:
            text = finish(proc, log)
        else:
            kill_once(proc, log, lambda: kill_when(log_path))
            text = log.read_text()
        self.segments.append(losses(log_path))
        return text

    def kill_at_random_step(self, config: dict, folder: Path, low: int, high: int) -> tuple[int, int]:
        """SIGKILL a run once a random step in ``[low, high]`` has logged its losses, wherever the signal lands
        (between steps, in backward, inside a save).

        Returns:
            ``(kill step, step of the newest complete checkpoint pair left in folder)``.
        """
        kill_step = random.Random().randint(low, high)
        self.run("first", config, kill_when=lambda log: max(losses(log), default=0) >= kill_step)
        assert_on_disk_only_complete_files(folder)
        resumed_at = step_of(checkpoints.select_checkpoint(folder).weights)
        assert 1 <= resumed_at <= kill_step, (kill_step, resumed_at)
        return kill_step, resumed_at

    def kill_inside_weights_write(self, name: str, config: dict, step: int) -> str:
        """Run ``config`` with the weights write of ``step`` stalled half-written, SIGKILL it there; its output."""
        marker = self.tmp_path / f"{name}.marker"
        return self.run(
            name, config, "--fault", f"write:{step}", "--marker", str(marker), kill_when=lambda _: marker.exists()
        )
