"""Tier 2: no run silently loses or overwrites another's work, and a failed write is one message.

Through ``ltx-trainer train`` on demo copies: two runs into one ``output_dir`` at once (real processes, one killed
with ``SIGKILL``); a second run over a finished one; a config with a repeated block; a resume from a LoRA of another
preset; a full disk (a real tmpfs) at a checkpoint's weights and at its training state; an ``output_dir`` deleted
during the run; a 0-byte latent; a relative ``model_path``; ``eval`` on a full disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pluggy
import pytest
import yaml
from cli_helpers import run_cli
from fault_helpers import fill, small_tmpfs
from kill_resume import DRIVER, demo_config
from typer.testing import CliRunner

from ltx_audio_reference import bridge, hookimpl
from ltx_audio_reference.cli import build_app
from ltx_audio_reference.registry import CheckpointContext
from ltx_audio_reference.reliability import checkpoints, identity, run_start, runlock
from ltx_audio_reference.reliability.files import is_temp_name
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

REFUSED = "before training could start (nothing was loaded or written):"
#: The stock trainer prints its config table first thing in __init__: its absence means the model never loaded.
STOCK_STARTED = "Training Configuration"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("safety") / "demo", steps=2, num_samples=4).parent


def _config(path: Path, demo_root: Path, out: Path, edits: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(demo_config(demo_root, out, edits)))
    return path


def _train(config: Path) -> tuple[int, str]:
    bridge.uninstall()
    try:
        result = CliRunner().invoke(
            build_app(), ["train", str(config), "--disable-progress-bars"], env={"COLUMNS": "400"}
        )
    finally:
        bridge.uninstall()
    return result.exit_code, " ".join(result.output.split())


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# One run per output folder
# ---------------------------------------------------------------------------------------------------------------


def test_two_runs_into_one_output_dir_the_second_stops_before_the_model_loads_naming_pid_and_host(
    demo_root: Path, tmp_path: Path
) -> None:
    # Before: the second run died at its first save, or both exited 0 with only the first run's files on disk.
    out = tmp_path / "out"
    first = _config(tmp_path / "a.yaml", demo_root, out, {"optimization.steps": 100_000, "checkpoints.interval": 1})
    second = _config(
        tmp_path / "b.yaml", demo_root, out, {"seed": 2, "optimization.learning_rate": 0.01, "optimization.steps": 2}
    )
    log = tmp_path / "a.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ltx_audio_reference.cli", "train", str(first), "--disable-progress-bars"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "400"},
        )
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "training_state_step_00001.pt").exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        result = run_cli("train", str(second), "--disable-progress-bars")
        text = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 1, text
        assert REFUSED in text
        assert (
            f"config output_dir: {out} is in use by another training run: PID {proc.pid} on host "
            f"{socket.gethostname()} (started " in text
        )
        assert f"`python -m ltx_audio_reference.cli train {first} --disable-progress-bars`" in text
        assert f"stop it (`kill {proc.pid}` on {socket.gethostname()})" in text
        assert STOCK_STARTED not in text  # the model never loaded
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(runlock.lock_path(out).read_text())["pid"] == proc.pid  # the killed run never released it
    # The killed run's lock is gone with it; the next run resumes and says whose lock it took over.
    newest = checkpoints.select_checkpoint(out / "checkpoints")
    step = int(re.search(r"step_(\d+)", newest.weights.name)[1])
    resume = _config(
        tmp_path / "r.yaml",
        demo_root,
        out,
        {"optimization.steps": 100_000, "checkpoints.interval": 1, "model.load_checkpoint": str(out / "checkpoints")},
    )
    data = yaml.safe_load(resume.read_text())
    data["optimization"]["steps"] = step + 1
    resume.write_text(yaml.safe_dump(data))
    result = run_cli("train", str(resume), "--disable-progress-bars")
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, text[-3000:]
    assert f"{out} was locked by PID {proc.pid} on host {socket.gethostname()}" in text
    assert "which ended without releasing it (killed or crashed); this run takes the folder over" in text
    assert f"Resuming training from step {step}" in text
    assert runlock.lock_path(out).read_text() == ""  # released at the end


def test_train_edit_train_again_is_refused_saying_what_differs_and_resume_or_overwrite_go_on(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: check said OK and the second run overwrote the first run's LoRA files and training states.
    out = tmp_path / "out"
    code, text = _train(_config(tmp_path / "a.yaml", demo_root, out, {"checkpoints.interval": 1}))
    assert code == 0, text
    record = identity.read_record(out)
    assert record is not None
    assert record["config"]["seed"] == 42
    before = _snapshot(out)
    edited = _config(
        tmp_path / "b.yaml", demo_root, out, {"checkpoints.interval": 1, "seed": 2, "optimization.learning_rate": 0.01}
    )
    code, text = _train(edited)
    assert code == 1, text
    assert REFUSED in text
    assert (
        f"config output_dir: {out} holds the checkpoints of another run (lora_weights_step_00002.safetensors and 3 "
        "more file(s)" in text
    )
    assert "in 2 setting(s): optimization.learning_rate 0.001 -> 0.01; seed 42 -> 2" in text
    assert f"or set model.load_checkpoint: {out / 'checkpoints'} (and checkpoints.no_resume: false) to resume" in text
    assert "or set overwrite_output_dir: true to delete its checkpoints and start over" in text
    assert STOCK_STARTED not in text
    after = {k: v for k, v in _snapshot(out).items() if not k.endswith(runlock.LOCK_NAME)}
    assert after == {k: v for k, v in before.items() if not k.endswith(runlock.LOCK_NAME)}  # nothing rewritten
    code, text = _check(edited)
    assert code == 1
    assert "holds the checkpoints of another run" in text

    resumed = _config(
        tmp_path / "c.yaml",
        demo_root,
        out,
        {"checkpoints.interval": 1, "optimization.steps": 3, "model.load_checkpoint": str(out / "checkpoints")},
    )
    code, text = _train(resumed)
    assert code == 0, text
    assert "Resuming with 1 changed setting(s): optimization.steps 2 -> 3" in text
    assert "Resuming training from step 2" in text

    data = yaml.safe_load(edited.read_text())
    data["overwrite_output_dir"] = True
    edited.write_text(yaml.safe_dump(data))
    code, text = _train(edited)
    assert code == 0, text
    assert "overwrite_output_dir: set aside 6 checkpoint file(s) of the previous run" in text
    assert "overwrite_output_dir: deleted 6 checkpoint file(s) of the previous run" in text
    assert not run_start.aside_dir(out).exists()
    assert sorted(p.name for p in identity.checkpoint_files(out)) == [
        "lora_weights_step_00001.safetensors",
        "lora_weights_step_00002.safetensors",
        "training_state_step_00001.pt",
        "training_state_step_00002.pt",
    ]
    assert identity.read_record(out)["config"]["seed"] == 2


def _check(config: Path) -> tuple[int, str]:
    bridge.uninstall()
    try:
        result = CliRunner().invoke(build_app(), ["check", str(config)], env={"COLUMNS": "400"})
    finally:
        bridge.uninstall()
    return result.exit_code, " ".join(result.output.split())


def test_a_second_optimization_block_is_refused_by_train(demo_root: Path, tmp_path: Path) -> None:
    # Before: PyYAML kept the last block; training ran 1 step at lr 1e-4 on a linear schedule, and check said OK.
    config = _config(tmp_path / "c.yaml", demo_root, tmp_path / "out")
    text = config.read_text() + "optimization:\n  learning_rate: 0.0001\n  steps: 1\n  scheduler_type: linear\n"
    config.write_text(text)
    code, output = _train(config)
    assert code == 2, output
    assert f"{config}: key 'optimization' is written twice (lines" in output
    assert "YAML keeps only the last" in output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# Resume checked before the model loads
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints folder of a finished 2-step run with lora_preset audio."""
    out = tmp_path_factory.mktemp("finished") / "out"
    config = _config(out.parent / "c.yaml", demo_root, out, {"checkpoints.interval": 1})
    code, text = _train(config)
    assert code == 0, text
    return out / "checkpoints"


def test_a_resume_from_a_lora_of_another_preset_is_refused_by_check_and_train_before_the_model_loads(
    demo_root: Path, tmp_path: Path, finished: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: refused clearly, but only after the model loaded, and check passed it.
    config = _config(
        tmp_path / "c.yaml",
        demo_root,
        finished.parent,
        {
            "training_strategy.lora_preset": "audio+bridges",
            "model.load_checkpoint": str(finished),
            "optimization.steps": 3,
        },
    )
    expected = (
        f"model.load_checkpoint: {finished / 'lora_weights_step_00002.safetensors'} does not fit this config: it "
        "lacks 16 module(s) that lora_preset 'audio+bridges' adapts (the first is "
        "diffusion_model.transformer_blocks.0.audio_to_video_attn.to_k.lora_A.weight): it was trained with another "
        "LoRA preset or target list"
    )
    code, text = _check(config)
    assert code == 1, text
    assert expected in text
    code, text = _train(config)
    assert code == 1, text
    assert expected in text
    assert STOCK_STARTED not in text


def test_an_empty_latent_is_named_at_training_start_as_check_names_it(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: check said EOFError and train "mmap can only be used with files saved with torch.save(...)".
    data = shutil.copytree(demo_root / "data", tmp_path / "data")
    path = data / "latents" / "sample_002.pt"
    path.write_bytes(b"")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo_config(demo_root, tmp_path / "out", data=data)))
    expected = (
        f"{path}: expected a .pt dict of tensors readable with weights_only=True; found unreadable: an empty file"
    )
    code, text = _train(config)
    assert code == 1, text
    assert expected in text
    assert "mmap" not in text
    code, text = _check(config)
    assert expected in text


def test_a_relative_model_path_says_where_it_was_looked_for(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pm: pluggy.PluginManager
) -> None:
    config = demo_root / "relative.yaml"
    data = demo_config(demo_root, tmp_path / "out")
    data["model"]["model_path"] = "tiny_ltx2.safetensors"
    config.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    try:
        code, text = _train(config)
    finally:
        config.unlink()
    assert code == 1, text
    assert (
        "Model path does not exist: tiny_ltx2.safetensors; found 'tiny_ltx2.safetensors' ('tiny_ltx2.safetensors' is "
        f"a relative path, resolved against the current folder {tmp_path}, not the config's; "
        f"{demo_root / 'tiny_ltx2.safetensors'} exists: write that absolute path, or run from {demo_root})" in text
    )


# ---------------------------------------------------------------------------------------------------------------
# Storage failures during training
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# A run that fails before its first step leaves the folder as it found it
# ---------------------------------------------------------------------------------------------------------------


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_previous_run_until_the_new_one_makes_its_first_step(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: overwrite_output_dir deleted the previous run's checkpoints before the model loaded, so any failure
    # before the first step (a truncated model file, fp16 on a CPU) lost them for nothing, with a full traceback.
    out = tmp_path / "out"
    model = Path(shutil.copy(demo_root / "tiny_ltx2.safetensors", tmp_path / "model.safetensors"))
    edits = {"checkpoints.interval": 1, "model.model_path": str(model)}
    code, text = _train(_config(tmp_path / "a.yaml", demo_root, out, edits))
    assert code == 0, text
    before = _contents(out)
    assert len(identity.checkpoint_files(out)) == 4
    overwrite = {**edits, "seed": 2, "overwrite_output_dir": True}

    # A truncated model file is now refused before anything starts (preflight reads its header): nothing moves.
    intact = model.read_bytes()
    os.truncate(model, 100_000)
    code, text = _train(_config(tmp_path / "b0.yaml", demo_root, out, overwrite))
    assert code == 1, text
    assert "config model.model_path:" in text
    assert "set aside" not in text
    assert _contents(out) == before
    model.write_bytes(intact)

    # fp16 on a CPU fails after the set-aside and before the first optimizer step.
    config = _config(tmp_path / "b.yaml", demo_root, out, {**overwrite, "acceleration.mixed_precision_mode": "fp16"})
    code, text = _train(config)
    assert code == 1, text
    assert "overwrite_output_dir: set aside 4 checkpoint file(s) of the previous run" in text
    assert "The run stopped before its first step: the 4 checkpoint file(s) of the previous run are back in" in text
    assert "Training failed: " in text  # in this process accelerate refuses fp16 on a CPU; in its own, torch does
    assert "Run `ltx-trainer -v train ...` for the traceback." in text
    assert "Traceback" not in text
    assert _contents(out) == before  # every file, the record and training_config.yaml included
    assert not run_start.aside_dir(out).exists()
    assert identity.read_record(out)["config"]["seed"] == 42
    code, text = _train(_config(tmp_path / "c.yaml", demo_root, out, {"checkpoints.interval": 1, "seed": 2}))
    assert code == 1  # still that run's folder: a new run without overwrite is refused
    assert "holds the checkpoints of another run" in text


def test_a_run_that_fails_before_its_first_step_leaves_no_file_in_its_output_folder(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: `mixed_precision_mode: fp16` on a CPU printed torch's traceback, and left the folder it created with
    # .ltx-trainer.lock, run_identity.json (a run that never happened) and training_config.yaml.
    out = tmp_path / "runs" / "out"
    config = _config(tmp_path / "c.yaml", demo_root, out, {"acceleration.mixed_precision_mode": "fp16"})
    code, text = _train_in_a_process(config)
    assert code == 1, text
    assert "Training failed: RuntimeError: " in text
    assert "Run `ltx-trainer -v train ...` for the traceback." in text
    assert f"No complete checkpoint was saved under {out / 'checkpoints'}: running again starts at step 0." in text
    assert "Traceback" not in text
    assert not (tmp_path / "runs").exists()
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    code, text = _train_in_a_process(config, "-v")
    assert code == 1
    assert "Traceback" in text
    assert f"No complete checkpoint was saved under {out / 'checkpoints'}" in text
    assert _contents(out) == {"notes.txt": b"mine"}


def _train_in_a_process(config: Path, *options: str) -> tuple[int, str]:
    """``ltx-trainer [OPTIONS] train CONFIG`` in its own process (accelerate keeps one precision per process)."""
    result = run_cli(*options, "train", str(config), "--disable-progress-bars")
    return result.returncode, " ".join((result.stdout + result.stderr).split())


class _FillAtStep:
    """Fills the disk of ``folder`` at one checkpoint, before its files are written."""

    def __init__(self, folder: Path, step: int) -> None:
        self.folder, self.step = folder, step
        self.filler: Path | None = None

    @hookimpl
    def on_checkpoint(self, context: CheckpointContext) -> None:
        if context.step == self.step:
            self.filler = fill(self.folder)


def test_a_full_disk_at_a_checkpoint_save_is_one_message_with_the_resume_lines(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: `SafetensorError: ... No space left on device` with a traceback, and no resume hint.
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "out"
        filler = _FillAtStep(disk, 2)
        fresh_pm.register(filler, name="fill_at_step_2")
        config = _config(tmp_path / "c.yaml", demo_root, out, {"checkpoints.interval": 1, "optimization.steps": 3})
        code, text = _train(config)
        assert code == 1, text
        weights = out / "checkpoints" / "lora_weights_step_00002.safetensors"
        assert f"Training stopped: cannot write {weights}: no space left on device (ENOSPC)." in text
        assert "Safe on disk: no partial file was left (each checkpoint file is written under a temporary name" in text
        first = out / "checkpoints" / "lora_weights_step_00001.safetensors"
        assert f"The last complete checkpoint is {first} (with its training state)." in text
        assert f"To resume from it, set in {config}: model: load_checkpoint: {out / 'checkpoints'}" in text
        assert "Traceback" not in text
        assert "SafetensorError" not in text
        assert [p for p in out.rglob("*") if is_temp_name(p.name) or p.name == ".incoming"] == []
        assert not weights.exists()
        fresh_pm.unregister(filler)
        filler.filler.unlink()
        data = yaml.safe_load(config.read_text())
        data["model"]["load_checkpoint"] = str(out / "checkpoints")
        config.write_text(yaml.safe_dump(data))
        code, text = _train(config)  # the printed instruction works
        assert code == 0, text
        assert "Resuming training from step 1" in text


def test_a_full_disk_at_the_training_state_is_named_though_torch_gives_no_errno(
    demo_root: Path, tmp_path: Path
) -> None:
    # torch.save says "unexpected pos", and the stock method deletes its partial file (freeing the space) before
    # re-raising; the bridge still names the disk.
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "out"
        config = _config(tmp_path / "c.yaml", demo_root, out, {"checkpoints.interval": 1, "optimization.steps": 3})
        result = subprocess.run(
            [sys.executable, str(DRIVER), str(config), "--fault", "full:2", "--marker", str(disk / "filler.bin")],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "400"},
            timeout=300,
            check=False,
        )
        text = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 1, text[-3000:]
        state = out / "checkpoints" / "training_state_step_00002.pt"
        assert f"Training stopped: cannot write {state}: no space left on device (ENOSPC)." in text
        assert "unexpected pos" not in text
        assert "Traceback" not in text
        assert f"The last complete checkpoint is {out / 'checkpoints' / 'lora_weights_step_00001.safetensors'}" in text
        assert [p for p in out.rglob("*") if is_temp_name(p.name) or p.name.endswith((".tmp", ".hold"))] == []


class _DeleteOutputAtStep:
    def __init__(self, out: Path, step: int) -> None:
        self.out, self.step = out, step

    @hookimpl
    def on_checkpoint(self, context: CheckpointContext) -> None:
        if context.step == self.step:
            shutil.rmtree(self.out)


def test_an_output_dir_deleted_during_the_run_stops_it_with_one_message(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # Before: the stock runner recreated the folder and saved into it (under the mount point, for an unmount).
    out = tmp_path / "out"
    fresh_pm.register(_DeleteOutputAtStep(out, 2), name="delete_output")
    config = _config(tmp_path / "c.yaml", demo_root, out, {"checkpoints.interval": 1, "optimization.steps": 3})
    code, text = _train(config)
    assert code == 1, text
    assert (
        f"Training stopped: cannot write {out / 'checkpoints'}: no such file or directory (ENOENT). Safe on disk: "
        f"output_dir {out} vanished during the run (deleted, moved or unmounted): step 2 was not saved, and nothing "
        "was written in its place." in text
    )
    assert f"No complete checkpoint was saved under {out / 'checkpoints'}" in text
    assert not out.exists()


def test_eval_on_a_full_disk_is_one_message_and_leaves_no_partial_file(demo_root: Path, tmp_path: Path) -> None:
    eval_config = demo_root / "config.yaml"
    with small_tmpfs(tmp_path / "disk", "16k") as disk:
        result = run_cli(
            "audio-reference",
            "eval",
            str(eval_config),
            "--out",
            str(disk / "sweep"),
            "--arms",
            "base",
            "--tones",
            "2",
            "--prompt",
            "a person speaks",
        )
        text = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 1, text[-3000:]
        assert f"error: Cannot write {disk / 'sweep' / 'references'}/tone_00_" in text
        assert (
            "no space left on device (ENOSPC). Safe on disk: each reference tone and each finished arm's outputs"
            in text
        )
        assert "sweep.json and sweep.png are written last, so they were not" in text
        assert "Traceback" not in text
        assert [p for p in disk.rglob("*") if is_temp_name(p.name)] == []
        assert not (disk / "sweep" / "sweep.json").exists()
