"""Tier 2: the faults a new user hits around training start, each through ``ltx-trainer train`` on a demo copy.

Each is refused before any model loads, with one message that names the file or key and the fix, exit code 1 and
nothing written (``output_dir`` untouched), or, where the input is legitimate, handled: a resume with nothing to resume
says why at the default level, SIGINT and SIGTERM say where the last good checkpoint is, a CPU run logs no
``nvidia-smi`` error, and a stock ``ValueError`` or ``OSError`` reads as one message (its traceback at ``-v``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
import yaml
from cli_helpers import env_without_ffmpeg, run_cli
from fault_helpers import unwritable
from kill_resume import demo_config
from typer.testing import CliRunner

from ltx_audio_reference import bridge, hookimpl
from ltx_audio_reference.cli import build_app
from ltx_audio_reference.registry import CheckpointContext
from ltx_audio_reference.reliability.files import temp_path_for
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

REFUSED = "before training could start (nothing was loaded or written):"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model, text encoder and 4-sample dataset for the whole module."""
    return write_demo(tmp_path_factory.mktemp("startup") / "demo", steps=2, num_samples=4).parent


@pytest.fixture(scope="module")
def finished(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints folder of a finished 2-step run (a weights + training-state pair at steps 1 and 2)."""
    from ltx_audio_reference import plugins  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    out = tmp_path_factory.mktemp("finished")
    bridge.uninstall()
    bridge.install(plugins.build_plugin_manager())
    try:
        config = demo_config(demo_root, out, {"optimization.steps": 2, "checkpoints.interval": 1})
        LtxvTrainer(LtxTrainerConfig(**config)).train(disable_progress_bars=True)
    finally:
        bridge.uninstall()
    return out / "checkpoints"


def _config(tmp_path: Path, demo_root: Path, edits: dict | None = None, *, data: Path | None = None) -> Path:
    config = demo_config(demo_root, tmp_path / "out", edits, data=data)
    for dotted, value in (edits or {}).items():
        if value is None:  # None removes the key
            *parents, leaf = dotted.split(".")
            node = config
            for key in parents:
                node = node[key]
            node.pop(leaf)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _data(demo_root: Path, tmp_path: Path) -> Path:
    return shutil.copytree(demo_root / "data", tmp_path / "data")


def _train(config: Path, *args: str) -> tuple[int, str]:
    bridge.uninstall()
    try:
        result = CliRunner().invoke(
            build_app(), [*args, "train", str(config), "--disable-progress-bars"], env={"COLUMNS": "400"}
        )
    finally:
        bridge.uninstall()
    return result.exit_code, " ".join(result.output.split())


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))} if root.exists() else {}


def _assert_refused(config: Path, *expected: str, out: Path | None = None) -> str:
    """Train must exit 1 with ``expected`` in one message, no traceback, and leave ``out`` as it was."""
    out = out if out is not None else Path(yaml.safe_load(config.read_text())["output_dir"])
    before = _snapshot(out), out.exists()
    code, text = _train(config)
    assert code == 1, text
    assert REFUSED in text, text
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"
    assert "Traceback" not in text
    assert (_snapshot(out), out.exists()) == before  # nothing written
    return text


# ---------------------------------------------------------------------------------------------------------------
# Silent wrong behaviour
# ---------------------------------------------------------------------------------------------------------------


def test_references_identical_to_their_targets_are_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    data = _data(demo_root, tmp_path)
    for path in (data / "audio_latents").glob("*.pt"):
        shutil.copy(path, data / "reference_audio_latents" / path.name)
    _assert_refused(
        _config(tmp_path, demo_root, data=data),
        f"{data / 'reference_audio_latents'}/: expected references that differ from their target in audio_latents/",
        "the LoRA learns to copy it); found 4 of 4 equal to their target",
        "make each reference from another clip than its target",
    )


def test_a_preset_with_a_target_list_it_would_drop_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    config = _config(tmp_path, demo_root, {"lora.target_modules": ["audio_attn1.to_q", "audio_to_video_attn.to_q"]})
    code, text = _train(config)
    assert code == 1, text
    assert (
        "lora.target_modules names audio_to_video_attn.to_q, which lora_preset 'audio' does not adapt; the preset "
        "sets the LoRA targets itself, so they would be dropped. To fix: set lora_preset: audio+bridges and remove "
        "lora.target_modules (that preset adapts them); or set lora_preset: custom" in text
    )
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()
    code, text = _check(config)
    assert code == 1
    assert "config: lora.target_modules names audio_to_video_attn.to_q" in text


def _check(config: Path) -> tuple[int, str]:
    bridge.uninstall()
    try:
        result = CliRunner().invoke(build_app(), ["check", str(config)], env={"COLUMNS": "400"})
    finally:
        bridge.uninstall()
    return result.exit_code, " ".join(result.output.split())


# ---------------------------------------------------------------------------------------------------------------
# Pre-load checks that passed, then a traceback after the model loaded
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["video file", "conditions file", "no latents key"])
def test_a_wrong_file_in_an_audio_folder_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    data = _data(demo_root, tmp_path)
    path = data / "audio_latents" / "sample_001.pt"
    if fault == "video file":
        shutil.copy(data / "latents" / "sample_001.pt", path)
        expected = "found video data (latents [128, F, H, W]); this file belongs in another folder"
    elif fault == "conditions file":
        shutil.copy(data / "conditions" / "sample_001.pt", path)
        expected = "found conditions data (prompt embeddings); this file belongs in another folder"
    else:
        torch.save({"audio": torch.randn(8, 8, 16)}, path)
        expected = "expected a tensor under key 'latents' (audio latents [8, T, 16]"
    _assert_refused(_config(tmp_path, demo_root, data=data), f"{path}: expected", expected)


@pytest.mark.parametrize(
    ("key", "fix"),
    [("steps", "Set it to the number of optimizer steps to train"), ("batch_size", "Set it to the samples per step")],
)
def test_a_zero_count_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, key: str, fix: str
) -> None:
    _assert_refused(
        _config(tmp_path, demo_root, {f"optimization.{key}": 0}),
        f"config optimization.{key}: expected an integer >= 1; found 0. {fix}",
    )


@pytest.mark.parametrize("value", [0.0, -0.001])
def test_a_learning_rate_not_above_zero_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, value: float
) -> None:
    # Before: -0.001 failed in torch's AdamW after the model loaded (`Invalid learning rate`), leaving the lock and
    # run_identity.json; 0 trained without a word.
    _assert_refused(
        _config(tmp_path, demo_root, {"optimization.learning_rate": value}),
        f"config optimization.learning_rate: expected a number > 0; found {value}. Set it to the optimizer's step size",
    )


@pytest.mark.parametrize("folder", ["audio_latents", "latents"])
def test_a_batch_of_targets_of_unequal_length_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, folder: str
) -> None:
    data = _data(demo_root, tmp_path)
    path = data / folder / "sample_002.pt"
    record = torch.load(path, weights_only=True)
    if folder == "audio_latents":
        record.update(latents=torch.randn(8, 11, 16), num_time_steps=11)
        expected = "11 time steps (0.44 s) in sample_002.pt; trim or pad them to one length"
    else:
        record.update(latents=torch.randn(128, 3, 2, 2, dtype=torch.bfloat16), num_frames=3)
        expected = "shape [128, 3, 2, 2] in sample_002.pt; trim or pad them to one shape"
    torch.save(record, path)
    _assert_refused(
        _config(tmp_path, demo_root, data=data),
        f"{data / folder}/: expected one",
        "in every sample for batch_size 2",
        expected,
        "or set optimization.batch_size: 1",
    )


def test_fewer_samples_than_one_batch_are_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    data = _data(demo_root, tmp_path)
    for path in data.rglob("*.pt"):
        if path.name != "sample_000.pt":
            path.unlink()
    _assert_refused(
        _config(tmp_path, demo_root, data=data),
        f"{data}: expected at least 2 complete samples for batch_size 2",
        "found 1; add samples or set optimization.batch_size: 1",
    )


def test_a_custom_target_that_names_no_module_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    config = _config(
        tmp_path,
        demo_root,
        {"training_strategy.lora_preset": "custom", "lora.target_modules": ["audio_attn1.to_q", "audio_attn1.to_z"]},
    )
    code, text = _train(config)
    assert code == 1, text
    assert (
        f"lora.target_modules: 'audio_attn1.to_z' matches no module of the transformer in "
        f"{demo_root / 'tiny_ltx2.safetensors'}" in text
    )
    assert "Did you mean audio_attn1.to_" in text
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [None, "/nonexistent/gemma"], ids=["absent", "missing"])
def test_a_missing_text_encoder_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, value: str | None
) -> None:
    found = "required; found nothing" if value is None else "found '/nonexistent/gemma' (no such file or folder)"
    _assert_refused(
        _config(tmp_path, demo_root, {"model.text_encoder_path": value}),
        f"config model.text_encoder_path: {found}" if value is None else found,
        "Set it to the Gemma-3 folder (with config.json and tokenizer.json)",
    )


@pytest.mark.parametrize("fault", ["truncated", "gemma weights", "folder"])
def test_a_model_path_that_is_no_ltx2_checkpoint_is_refused_by_check_and_train(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    model = tmp_path / "model.safetensors"
    if fault == "truncated":  # a copy cut short: the stock runner failed in safetensors once the text encoder loaded
        model.write_bytes((demo_root / "tiny_ltx2.safetensors").read_bytes()[:100_000])
        expected = f"{model} is not a complete .safetensors file (truncated: 100000 bytes, the header describes "
    elif fault == "gemma weights":
        shutil.copy(demo_root / "text_encoder" / "model.safetensors", model)
        expected = f"{model} is a .safetensors file without LTX-2's 'config' metadata, so not an LTX-2 checkpoint"
    else:
        model.mkdir()
        expected = f"expected a .safetensors file; found the folder {model}"
    config = _config(tmp_path, demo_root, {"model.model_path": str(model)})
    code, text = _check(config)
    assert code == 1, text
    assert f"config model.model_path: {expected}" in text
    assert "Set it to the LTX-2 checkpoint .safetensors" in text
    assert "memory estimate unavailable" not in text  # the problem says it; no note repeats it
    _assert_refused(config, f"config model.model_path: {expected}")


def _validation_audio(tmp_path: Path, demo_root: Path, audio: Path) -> Path:
    return _config(
        tmp_path,
        demo_root,
        {
            "validation.interval": 1,
            "validation.generate_audio": True,
            "validation.samples": [{"prompt": "a tone", "conditions": [{"type": "reference", "audio": str(audio)}]}],
        },
    )


@pytest.mark.parametrize("fault", ["missing", "not audio"])
def test_validation_reference_audio_that_cannot_be_read_is_refused_by_check_and_train(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    audio = tmp_path / "tone.wav"
    if fault == "not audio":
        audio.write_text("not audio\n")
    config = _validation_audio(tmp_path, demo_root, audio)
    key = "config validation.samples[0].conditions[0].audio"
    expected = (
        f"{key}: expected an audio file; found '{audio}' (no such file)"
        if fault == "missing"
        else f"{key}: {audio}: cannot read audio (wave: "
    )
    code, text = _check(config)
    assert code == 1, text
    assert expected in text
    fix = "Point it at the reference's audio file (WAV, FLAC, MP3, ...), or set validation.interval: null"
    assert fix in text
    _assert_refused(config, expected, fix)


def test_validation_reference_audio_without_ffmpeg_is_refused_naming_the_install_line(
    demo_root: Path, tmp_path: Path
) -> None:
    from ltx_audio_reference.data.audio_io import write_wav  # noqa: PLC0415

    tone = write_wav(tmp_path / "tone.wav", np.full((1, 16000), 0.1, dtype=np.float32), 16000)
    config = _validation_audio(tmp_path, demo_root, tone)
    env = env_without_ffmpeg(tmp_path / "no_ffmpeg")
    line = (
        "config validation.samples: validation reads 1 reference audio file(s) with torchaudio, through torchcodec and "
        "FFmpeg, and FFmpeg is not installed (no ffmpeg program on PATH): sudo apt-get install ffmpeg"
    )
    for command in ("check", "train"):
        result = run_cli(command, str(config), env=env)
        text = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 1, text
        assert line in text
        assert "torchcodec cannot load FFmpeg's libraries" in text
        assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_prompt_embeddings_of_another_width_are_refused_by_check_and_train(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, batch_size: int
) -> None:
    data = _data(demo_root, tmp_path)
    path = data / "conditions" / "sample_002.pt"
    conditions = torch.load(path, weights_only=True)
    conditions["video_prompt_embeds"] = torch.randn(128, 96, dtype=torch.bfloat16)
    torch.save(conditions, path)
    config = _config(tmp_path, demo_root, {"optimization.batch_size": batch_size}, data=data)
    expected = (
        f"{data / 'conditions'}/ [video_prompt_embeds]: expected prompt embeddings [L, 64]: 64 is the width the video "
        f"text connector of {demo_root / 'tiny_ltx2.safetensors'} takes; found width 96 in 1 of 4 samples "
        "(sample_002.pt). These captions were encoded for another model: preprocess them again with this model's "
        "text encoder and checkpoint"
    )
    code, text = _check(config)
    assert code == 1, text
    assert expected in text
    assert "trim or pad them" not in text
    _assert_refused(config, expected)


@pytest.mark.parametrize("fault", ["a file", "under /proc", "unwritable"])
def test_an_output_dir_that_cannot_be_written_is_refused(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    fix = "Point output_dir at a folder this user can write"
    if fault == "a file":
        config = _config(tmp_path, demo_root)
        (tmp_path / "out").write_text("not a folder")
        _assert_refused(config, f"config output_dir: expected a folder; found the file {tmp_path / 'out'}. {fix}")
    elif fault == "under /proc":
        config = _config(tmp_path, demo_root, {"output_dir": "/proc/ltx_run"})
        _assert_refused(
            config, "config output_dir: /proc/ltx_run cannot be created in /proc (FileNotFoundError", fix, out=tmp_path
        )
    else:
        config = _config(tmp_path, demo_root)
        (tmp_path / "out").mkdir()
        with unwritable(tmp_path / "out"):
            _assert_refused(config, f"config output_dir: {tmp_path / 'out'} is not writable (PermissionError", fix)


def test_a_read_only_checkpoints_folder_is_refused_before_step_1(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    config = _config(tmp_path, demo_root)
    ckpt = tmp_path / "out" / "checkpoints"
    ckpt.mkdir(parents=True)
    with unwritable(ckpt):
        _assert_refused(
            config,
            f"config output_dir: {ckpt} is not writable (PermissionError",
            "every checkpoint save would fail, the first one after checkpoints.interval steps of training",
        )


@pytest.mark.parametrize("fault", ["missing", "temporary file", "finished run"])
def test_a_checkpoint_that_cannot_resume_is_refused(
    demo_root: Path, finished: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    key = "config model.load_checkpoint:"
    if fault == "missing":
        target = tmp_path / "nope" / "checkpoints"
        expected = [f"{key} {target} does not exist. Point it at a checkpoints folder"]
    elif fault == "temporary file":
        folder = shutil.copytree(finished, tmp_path / "checkpoints")
        weights = folder / "lora_weights_step_00002.safetensors"
        target = temp_path_for(weights, pid=4321)
        target.write_bytes(weights.read_bytes()[:100])
        expected = [f"{key} {target} is the temporary file of an interrupted save", f"load_checkpoint: {folder} to"]
    else:
        target = finished
        expected = [
            f"{key} the run is finished: lora_weights_step_00002.safetensors with its training state is step 2, and "
            "optimization.steps is 2. Raise optimization.steps",
            "or set checkpoints.no_resume: true",
        ]
    before = _snapshot(finished)
    _assert_refused(_config(tmp_path, demo_root, {"model.load_checkpoint": str(target)}), *expected)
    assert _snapshot(finished) == before


# ---------------------------------------------------------------------------------------------------------------
# Errors after the model loaded read as one message
# ---------------------------------------------------------------------------------------------------------------


def test_a_stock_value_error_is_one_message_and_its_traceback_shows_at_v(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    # The stock runner raises this in _load_models, after the transformer loaded; nothing of ours checks it first.
    edits = {
        "training_strategy": {"name": "text_to_video", "with_audio": True, "first_frame_conditioning_p": 0.0},
        "model.training_mode": "full",
        "acceleration.quantization": "int8-quanto",
    }
    config = _config(tmp_path, demo_root, edits)
    code, text = _train(config)
    assert code == 1, text
    assert "Training failed: ValueError: Quantization is not supported in full training mode." in text
    assert "Run `ltx-trainer -v train ...` for the traceback." in text
    assert "Traceback" not in text
    code, text = _train(config, "-v")
    assert code == 1
    assert "Traceback" in text
    assert "Quantization is not supported in full training mode." in text


class _DiskFull:
    """The disk fills up at the first checkpoint save (an OSError the stock runner does not catch)."""

    @hookimpl
    def on_checkpoint(self, context: CheckpointContext) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(context.config.output_dir))


def test_an_os_error_during_training_is_one_message(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    fresh_pm.register(_DiskFull(), name="disk_full")
    code, text = _train(_config(tmp_path, demo_root, {"checkpoints.interval": 1}))
    assert code == 1, text
    # An OSError carrying a write-only errno is a storage failure: one message, what is safe, how to go on.
    assert f"Training stopped: cannot write {tmp_path / 'out'}: no space left on device (ENOSPC)." in text
    assert f"No complete checkpoint was saved under {tmp_path / 'out' / 'checkpoints'}" in text
    assert "Traceback" not in text


# ---------------------------------------------------------------------------------------------------------------
# Unclear: resume with nothing to resume, stop signals, the CPU nvidia-smi error
# ---------------------------------------------------------------------------------------------------------------


def test_a_resume_with_nothing_to_resume_says_why_and_no_nvidia_smi_error_on_cpu(
    demo_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "old" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "lora_weights_step_00002.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{}")
    config = _config(tmp_path, demo_root, {"optimization.steps": 1, "model.load_checkpoint": str(folder)})
    result = run_cli("train", str(config), "--disable-progress-bars")
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, text
    assert (
        f"Not resuming from {folder}: no weights file there is complete (lora_weights_step_00002.safetensors: "
        "truncated" in text
    )
    assert "Training starts at step 0 with new LoRA weights" in text
    assert "Failed to get GPU memory" not in text
    assert (tmp_path / "out" / "checkpoints" / "lora_weights_step_00001.safetensors").is_file()


def test_the_gpu_memory_probe_is_quiet_on_cpu_and_stock_on_cuda(
    fresh_pm: pluggy.PluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    bridge.uninstall()
    stock_probe = trainer_module.get_gpu_memory_gb
    with caplog.at_level(logging.ERROR):
        stock_probe(torch.device("cpu"))
    stock_logged = [r.getMessage() for r in caplog.records]
    caplog.clear()
    bridge.install(fresh_pm)
    try:
        assert trainer_module.get_gpu_memory_gb is not stock_probe
        with caplog.at_level(logging.ERROR):
            assert trainer_module.get_gpu_memory_gb(torch.device("cpu")) == 0.0
            assert caplog.records == []
            if shutil.which("nvidia-smi") is None:
                # On a CUDA device the stock probe runs as before, so its real error is still logged.
                trainer_module.get_gpu_memory_gb(torch.device("cuda"))
                assert any("Failed to get GPU memory from nvidia-smi" in r.getMessage() for r in caplog.records)
    finally:
        bridge.uninstall()
    assert trainer_module.get_gpu_memory_gb is stock_probe
    if shutil.which("nvidia-smi") is None:
        assert any("Failed to get GPU memory from nvidia-smi" in m for m in stock_logged)


def _default_sigint() -> None:
    # A background pytest (a non-interactive shell's `&`) ignores SIGINT, and children inherit that; a user's
    # terminal run does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(config: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ltx_audio_reference.cli", "train", str(config), "--disable-progress-bars"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "400"},
            preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads are started before the exec
        )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_says_where_the_last_good_checkpoint_is_and_how_to_resume(
    demo_root: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    config = _config(tmp_path, demo_root, {"optimization.steps": 10_000, "checkpoints.interval": 1})
    folder = tmp_path / "out" / "checkpoints"
    log = tmp_path / "train.log"
    proc = _start(config, log)
    try:
        deadline = time.monotonic() + 300
        while not (folder / "training_state_step_00002.pt").exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 128 + signum, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = " ".join(log.read_text().split())
    assert f"Training stopped by {signal.Signals(signum).name}." in text
    match = re.search(r"The last complete checkpoint is (\S+lora_weights_step_(\d+)\.safetensors) \(with its", text)
    assert match, text[-3000:]
    assert Path(match[1]).parent == folder
    assert f"To resume from it, set in {config}: model: load_checkpoint: {folder}" in text
    assert "Traceback" not in text
    assert "Aborted" not in text
    if signum == signal.SIGTERM:
        # The printed instruction works: the run resumes from that step.
        step = int(match[2])
        data = yaml.safe_load(config.read_text())
        data["model"]["load_checkpoint"] = str(folder)
        data["optimization"]["steps"] = step + 1
        config.write_text(yaml.safe_dump(data))
        result = run_cli("train", str(config), "--disable-progress-bars")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"Resuming training from step {step}" in " ".join((result.stdout + result.stderr).split())


def test_a_config_that_is_not_utf8_is_refused_by_train_naming_its_line(demo_root: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, demo_root)
    text = config.read_text()
    config.write_bytes(text.encode() + "# r\u00e9glage\n".encode("latin-1"))
    code, output = _train(config)
    assert code == 2, output
    assert f"not UTF-8 text (byte 0xe9 on line {text.count(chr(10)) + 1}); save it as UTF-8" in output
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()
