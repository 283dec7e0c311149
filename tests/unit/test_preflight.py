"""Run-settings checks before any model loads: counts, text encoder, writable output folders, the checkpoint to
resume from. Real folders and files; each check is broken one way at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import unwritable
from safetensors.torch import save_file

from ltx_audio_reference.reliability import preflight
from ltx_audio_reference.reliability.files import temp_path_for
from ltx_audio_reference.testing import tiny_ltx25, tiny_model

GEMMA_FIX = "Set it to the Gemma-3 folder (with config.json and tokenizer.json)"


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def _weights(path: Path, step_state: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"diffusion_model.x.lora_A.weight": torch.zeros(2, 2)}, str(path))
    if step_state:
        torch.save(
            {"global_step": 1}, path.with_name(path.name.replace("lora_weights", "training_state")).with_suffix(".pt")
        )
    return path


# ---------------------------------------------------------------------------------------------------------------
# counts and text encoder
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"), [("steps", 0), ("batch_size", 0), ("batch_size", -2), ("gradient_accumulation_steps", 0)]
)
def test_counts_below_one_are_named_with_their_key_and_fix(key: str, value: int) -> None:
    problems = preflight.count_problems(preflight.RunSettings(**{key: value}))
    assert len(problems) == 1
    assert problems[0].startswith(f"config optimization.{key}: expected an integer >= 1; found {value}. Set it to")


def test_counts_of_one_or_more_and_absent_counts_pass() -> None:
    assert preflight.count_problems(preflight.RunSettings(steps=1, batch_size=4, gradient_accumulation_steps=2)) == []
    assert preflight.count_problems(preflight.RunSettings()) == []
    assert preflight.count_problems(preflight.RunSettings(steps=True)) != []  # a YAML `yes` is not a count


@pytest.mark.parametrize("value", [0, 0.0, -1e-4, "-1e-4", float("nan"), "fast", True])
def test_a_learning_rate_that_is_not_above_zero_is_named_with_its_fix(value: object) -> None:
    # Before: a negative rate failed in torch's AdamW after the model loaded, and 0 trained nothing without a word.
    problems = preflight.count_problems(preflight.RunSettings(learning_rate=value))
    assert len(problems) == 1
    assert problems[0].startswith(f"config optimization.learning_rate: expected a number > 0; found {value!r}.")
    assert "Set it to the optimizer's step size, such as 1e-4 for a LoRA" in problems[0]


def test_a_learning_rate_above_zero_passes_also_as_yaml_writes_it() -> None:
    for value in (1e-4, 1, "1e-4"):  # PyYAML reads 1e-4 as a string; pydantic makes it a float
        assert preflight.count_problems(preflight.RunSettings(learning_rate=value)) == []
    data = {"optimization": {"learning_rate": 0}}
    assert len(preflight.count_problems(preflight.RunSettings.from_dict(data))) == 1


def test_text_encoder_must_be_given_and_be_a_gemma_folder_or_a_safetensors(tmp_path: Path) -> None:
    assert preflight.text_encoder_problem(None) == (
        f"config model.text_encoder_path: required; found nothing. {GEMMA_FIX}, or to the packed text-encoder "
        ".safetensors of a split pack; training reads it even with precomputed prompts and validation off"
    )
    missing = preflight.text_encoder_problem(tmp_path / "gemma")
    assert f"found '{tmp_path / 'gemma'}' (no such file or folder). {GEMMA_FIX}" in missing
    (tmp_path / "empty").mkdir()
    assert f"found {tmp_path / 'empty'} without config.json and tokenizer.json" in preflight.text_encoder_problem(
        tmp_path / "empty"
    )
    (tmp_path / "model.bin").write_bytes(b"x")
    assert "expected a Gemma folder or a .safetensors file" in preflight.text_encoder_problem(tmp_path / "model.bin")
    assert preflight.text_encoder_problem(tiny_model.write_text_encoder_dir(tmp_path / "te")) is None


# ---------------------------------------------------------------------------------------------------------------
# output folders
# ---------------------------------------------------------------------------------------------------------------


def test_a_missing_output_dir_in_a_writable_folder_passes_and_nothing_is_left(tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    assert preflight.output_problem(tmp_path / "runs" / "a") is None
    assert preflight.output_problem(tmp_path) is None
    assert _snapshot(tmp_path) == before  # the probe folder is gone


def test_an_output_dir_that_is_a_file_or_lies_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    assert preflight.output_problem(tmp_path / "out") == (
        f"config output_dir: expected a folder; found the file {tmp_path / 'out'}. Point output_dir at a folder this "
        "user can write (it is created if missing)"
    )
    assert preflight.output_problem(tmp_path / "out" / "run") == (
        f"config output_dir: {tmp_path / 'out' / 'run'} cannot be created: {tmp_path / 'out'} is a file. Point "
        "output_dir at a folder this user can write (it is created if missing)"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("x")
    assert "checkpoints is a file, where the trainer saves its checkpoints folder" in preflight.output_problem(
        tmp_path / "run"
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_dir_under_proc_is_refused_even_for_root() -> None:
    problem = preflight.output_problem("/proc/ltx_run/outputs")
    assert problem is not None
    assert problem.startswith("config output_dir: /proc/ltx_run/outputs cannot be created in /proc (")
    assert problem.endswith("Point output_dir at a folder this user can write (it is created if missing)")


def test_an_unwritable_output_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with unwritable(out):
        problem = preflight.output_problem(out)
        assert problem is not None
        assert problem.startswith(f"config output_dir: {out} is not writable (PermissionError: ")
        with unwritable(tmp_path):
            assert f"{tmp_path / 'new'} cannot be created in {tmp_path}" in preflight.output_problem(tmp_path / "new")


def test_a_read_only_checkpoints_folder_is_refused_before_the_first_save(tmp_path: Path) -> None:
    ckpt = tmp_path / "out" / "checkpoints"
    ckpt.mkdir(parents=True)
    with unwritable(ckpt):
        problem = preflight.output_problem(tmp_path / "out")
    assert problem.startswith(f"config output_dir: {ckpt} is not writable (PermissionError: ")
    assert "every checkpoint save would fail, the first one after checkpoints.interval steps" in problem
    assert "Make it writable (chmod u+w, chattr -i, a read-write mount)" in problem


# ---------------------------------------------------------------------------------------------------------------
# the checkpoint to resume from
# ---------------------------------------------------------------------------------------------------------------


def test_a_checkpoint_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    result = preflight.resume_check(tmp_path / "checkpoints", 10, False)
    assert result.problems == [
        f"config model.load_checkpoint: {tmp_path / 'checkpoints'} does not exist. Point it at a checkpoints folder "
        "(training resumes from its newest complete checkpoint) or at a .safetensors LoRA file, or remove "
        "model.load_checkpoint to start a new run"
    ]


def test_a_temporary_or_partial_or_non_safetensors_file_is_refused_naming_its_folder(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "checkpoints" / "lora_weights_step_00002.safetensors")
    tmp = temp_path_for(weights, pid=1234)
    tmp.write_bytes(weights.read_bytes()[:40])
    (problem,) = preflight.resume_check(tmp, 10, False).problems
    assert problem == (
        f"config model.load_checkpoint: {tmp} is the temporary file of an interrupted save, not a checkpoint. Set "
        f"model.load_checkpoint: {weights.parent} to resume from the newest complete checkpoint there"
    )
    partial = weights.with_name("lora_weights_step_00004.safetensors")
    partial.write_bytes(weights.read_bytes()[:-3])
    (problem,) = preflight.resume_check(partial, 10, False).problems
    assert problem.startswith(f"config model.load_checkpoint: {partial} is an incomplete checkpoint (truncated: ")
    assert problem.endswith(
        f"Set model.load_checkpoint: {weights.parent} to resume from the newest complete checkpoint there"
    )
    state = weights.with_name("training_state_step_00002.pt")
    (problem,) = preflight.resume_check(state, 10, False).problems
    assert f"expected a .safetensors weights file or a checkpoints folder; found {state}" in problem


def test_a_finished_run_is_refused_unless_no_resume(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "checkpoints" / "lora_weights_step_00004.safetensors")
    for path in (weights, weights.parent):
        (problem,) = preflight.resume_check(path, 4, False).problems
        assert problem == (
            "config model.load_checkpoint: the run is finished: lora_weights_step_00004.safetensors with its training "
            "state is step 4, and optimization.steps is 4. Raise optimization.steps to train on from step 4, or set "
            "checkpoints.no_resume: true to start a new schedule from these weights"
        )
        assert preflight.resume_check(path, 6, False).problems == []
        assert preflight.resume_check(path, 4, True).problems == []  # no_resume: weights only, step 0


def test_weights_without_a_training_state_are_no_finished_run(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "c" / "lora_weights_step_00004.safetensors", step_state=False)
    assert preflight.resume_check(weights, 4, False).problems == []  # the stock runner starts at step 0


def test_a_folder_with_nothing_complete_is_a_note_saying_why(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    result = preflight.resume_check(folder, 4, False)
    assert result.problems == []
    assert result.notes == [
        f"model.load_checkpoint: nothing to resume under {folder} (it holds no lora_weights_step_N.safetensors (or "
        "model_weights_...) file): training starts at step 0 with new LoRA weights"
    ]
    (folder / "lora_weights_step_00002.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{}")
    (note,) = preflight.resume_check(folder, 4, False).notes
    assert "no weights file there is complete (lora_weights_step_00002.safetensors: truncated" in note


def test_check_run_collects_every_problem_and_reads_raw_yaml(tmp_path: Path) -> None:
    data = {
        "optimization": {"steps": 0, "batch_size": 0},
        "model": {"load_checkpoint": str(tmp_path / "nope")},
        "output_dir": str(tmp_path / "out"),
    }
    result = preflight.check_run(preflight.RunSettings.from_dict(data))
    keys = [p.split(":")[0] for p in result.problems]
    assert keys == [
        "config optimization.steps",
        "config optimization.batch_size",
        "config model.text_encoder_path",
        "config model.load_checkpoint",
    ]
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# model.model_path, from its header
# ---------------------------------------------------------------------------------------------------------------

MODEL_FIX = "Set it to the LTX-2 checkpoint .safetensors (the file of the whole model), or to the transformer"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LTX-2.3 checkpoint (header and sparse data: only the header is read)."""
    return tiny_model.write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", header_only=True)


def _broken_model(kind: str, checkpoint: Path, folder: Path) -> tuple[Path, str]:  # noqa: PLR0911 - one per kind
    """A model_path broken as ``kind``, and what the problem must say about it."""
    path = folder / "model.safetensors"
    if kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:100_000])
        return path, "is not a complete .safetensors file (truncated: 100000 bytes, the header describes "
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is not a complete .safetensors file (truncated: 0 bytes, shorter than the 8-byte header length)"
    if kind == "text":
        path.write_text("model weights go here\n")
        return path, "is not a complete .safetensors file (truncated or not safetensors: header length"
    if kind == "torch .pt":
        path = folder / "model.pt"
        torch.save({"weight": torch.zeros(2)}, path)
        return path, "another format such as a .pt file"
    if kind == "folder":
        path.mkdir()
        return path, f"expected a .safetensors file; found the folder {path}"
    if kind == "gemma weights":
        save_file({"model.embed_tokens.weight": torch.zeros(4, 2)}, str(path), metadata={"format": "pt"})
        return path, "is a .safetensors file without LTX-2's 'config' metadata, so not an LTX-2 checkpoint (a LoRA"
    if kind == "lora":
        return _weights(folder / "lora_weights_step_00001.safetensors", step_state=False), "without LTX-2's 'config'"
    if kind == "vae file":
        save_file({"x": torch.zeros(1)}, str(path), metadata={"config": '{"vae": {}, "audio_vae": {}}'})
        return path, "holds no transformer (its config has audio_vae, vae): a component file of a pack"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["truncated", "empty", "text", "torch .pt", "folder", "gemma weights", "lora", "vae file"]
)
def test_a_model_path_that_is_no_ltx2_transformer_checkpoint_is_refused_from_its_header(
    checkpoint: Path, tmp_path: Path, kind: str
) -> None:
    path, expected = _broken_model(kind, checkpoint, tmp_path)
    problem = preflight.model_problem(path)
    assert problem is not None
    assert problem.startswith("config model.model_path: ")
    assert expected in problem
    assert MODEL_FIX in problem
    assert "\n" not in problem
    settings = preflight.RunSettings(
        model_path=path, text_encoder_path=tiny_model.write_text_encoder_dir(tmp_path / "g")
    )
    assert preflight.check_run(settings).problems == [problem]
    missing = preflight.model_problem("model.safetensors", config_dir=tmp_path)
    assert missing.startswith(
        "config model.model_path: expected an existing .safetensors file; found 'model.safetensors'"
    )


@pytest.mark.skipif(tiny_ltx25.ltx25_supported() is not None, reason="LTX-2.5 transformer files need ltx-core >= 1.2.0")
def test_an_ltx23_checkpoint_and_an_ltx25_split_transformer_pass(checkpoint: Path, tmp_path: Path) -> None:
    assert preflight.model_problem(checkpoint) is None
    split = tiny_ltx25.write_tiny_ltx25_transformer(tmp_path / "transformer.safetensors")
    assert preflight.model_problem(split) is None
    assert preflight.model_problem(None) is None  # the stock config requires it; raw YAML without it: not checked


# ---------------------------------------------------------------------------------------------------------------
# validation's reference audio
# ---------------------------------------------------------------------------------------------------------------


def _validation(*audio: str, interval: int | None = 2) -> dict:
    samples = [{"prompt": "a tone", "conditions": [{"type": "reference", "audio": a}]} for a in audio]
    return {"validation": {"interval": interval, "samples": samples}}


def _tone(path: Path) -> Path:
    from ltx_audio_reference.data.audio_io import write_wav  # noqa: PLC0415

    t = np.arange(16000, dtype=np.float32) / 16000
    return write_wav(path, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)


def test_validation_reference_audio_that_is_missing_or_not_audio_is_refused_before_training(tmp_path: Path) -> None:
    tone = _tone(tmp_path / "tone.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n")
    folder = tmp_path / "refs"
    folder.mkdir()
    settings = preflight.RunSettings.from_dict(_validation(str(tone), "nope.wav", str(text), str(folder)), tmp_path)
    assert [key for key, _ in settings.validation_audio] == [
        f"validation.samples[{i}].conditions[0].audio" for i in range(4)
    ]
    result = preflight.validation_audio_check(settings.validation_audio, tmp_path)
    files = [p for p in result.problems if not p.startswith("config validation.samples:")]  # tools: next test
    fix = "Point it at the reference's audio file (WAV, FLAC, MP3, ...), or set validation.interval: null"
    assert len(files) == 3
    assert files[0].startswith(
        "config validation.samples[1].conditions[0].audio: expected an audio file; found 'nope.wav' (no such file) "
        "('nope.wav' is a relative path, resolved against the current folder"
    )
    assert files[1].startswith(f"config validation.samples[2].conditions[0].audio: {text}: cannot read audio (wave: ")
    assert files[2] == (
        f"config validation.samples[3].conditions[0].audio: expected an audio file; found the folder {folder}. {fix} "
        "to train without validation"
    )
    assert all(fix in p for p in files)
    # No validation run, no audio read.
    assert preflight.RunSettings.from_dict(_validation("nope.wav", interval=None)).validation_audio == ()
    problems = preflight.check_run(preflight.RunSettings.from_dict(_validation(str(tone)))).problems
    assert [p for p in problems if p.startswith("config validation.samples[")] == []  # the tone reads


def test_validation_reference_audio_without_ffmpeg_names_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tone = _tone(tmp_path / "tone.wav")
    settings = preflight.RunSettings.from_dict(_validation(str(tone)))
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg program: what a machine without FFmpeg has
    problems = preflight.validation_audio_check(settings.validation_audio).problems
    assert problems[0] == (
        "config validation.samples: validation reads 1 reference audio file(s) with torchaudio, through torchcodec "
        "and FFmpeg, and FFmpeg is not installed (no ffmpeg program on PATH): sudo apt-get install ffmpeg (or conda "
        "install -c conda-forge ffmpeg; macOS: brew install ffmpeg); or set validation.interval: null to train "
        "without validation"
    )
    assert preflight.validation_audio_check(()).problems == []  # no audio condition: no tool needed
