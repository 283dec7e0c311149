"""Tier 2: the audio_reference strategy through the stock runner: exact export, int8-quanto, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_cli
from safetensors import safe_open

from ltx_audio_reference.data.audio_io import write_wav
from ltx_audio_reference.strategies.audio_reference.lora_targets import preset_block_modules
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

NUM_BLOCKS = 2


def _expected_keys(preset: str) -> set[str]:
    return {
        f"diffusion_model.transformer_blocks.{i}.{module}.lora_{ab}.weight"
        for i in range(NUM_BLOCKS)
        for module in preset_block_modules(preset)
        for ab in "AB"
    }


def _write(demo: Path, name: str, edit: dict) -> Path:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    for dotted, value in edit.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    path = demo / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = write_demo(tmp_path / "demo", steps=3, num_samples=4).parent
    # The demo names the strategy; drop the section so --strategy supplies it with its defaults.
    _write(root, "no_strategy.yaml", {"training_strategy": None, "checkpoints.interval": 3})
    return root


def _assert_exported(path: Path, preset: str = "audio") -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        tensors = [f.get_tensor(k) for k in sorted(keys)]
        metadata = f.metadata()
    assert keys == _expected_keys(preset)
    assert all(t.dtype == torch.bfloat16 and bool(torch.isfinite(t).all()) for t in tensors)
    assert any(bool(t.abs().sum() > 0) for t in tensors if t.shape[0] != 4)  # lora_B moved off its zero init
    return metadata


def test_strategy_flag_trains_and_exports_exactly_the_preset(demo: Path) -> None:
    result = run_cli("train", str(demo / "no_strategy.yaml"), "--strategy", "audio_reference")
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = _assert_exported(demo / "outputs" / "checkpoints" / "lora_weights_step_00003.safetensors")
    assert metadata["strategy"] == "audio_reference"
    assert metadata["reference_modality"] == "audio"
    assert metadata["reference_positions"] == "negative"
    assert metadata["reference_gap_s"] == "0.04"
    assert metadata["reference_downscale_factor"] == "1"
    assert metadata["reference_guidance_scale"] == "0.0"  # validation sampled without reference guidance
    assert (metadata["lora_preset"], metadata["lora_rank"], metadata["lora_alpha"]) == ("audio", "4", "4")


def test_bridges_preset_exports_the_bridge_modules(demo: Path) -> None:
    config = _write(demo, "bridges.yaml", {"training_strategy.lora_preset": "audio+bridges"})
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    checkpoint = sorted((demo / "outputs" / "checkpoints").glob("lora_*.safetensors"))[-1]
    metadata = _assert_exported(checkpoint, "audio+bridges")
    assert metadata["lora_preset"] == "audio+bridges"


def test_int8_quanto_trains_and_exports_the_same_keys(demo: Path) -> None:
    config = _write(demo, "int8.yaml", {"acceleration.quantization": "int8-quanto", "checkpoints.interval": 3})
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_exported(demo / "outputs" / "checkpoints" / "lora_weights_step_00003.safetensors")


def test_resume_continues_at_step_3(demo: Path) -> None:
    first = run_cli("train", str(_write(demo, "first.yaml", {"checkpoints.interval": 3})))
    assert first.returncode == 0, first.stdout + first.stderr
    resume = _write(
        demo,
        "resume.yaml",
        {"optimization.steps": 5, "model.load_checkpoint": str(demo / "outputs" / "checkpoints")},
    )
    second = run_cli("train", str(resume))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Resuming training from step 3" in second.stdout + second.stderr
    assert (demo / "outputs" / "checkpoints" / "lora_weights_step_00005.safetensors").is_file()


def _assert_refused_before_training(demo: Path, config: Path, *expected: str) -> None:
    result = run_cli("train", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for text in expected:
        assert text in output
    assert "Traceback" not in output
    assert not (demo / "outputs").exists()  # nothing written


def test_sample_without_its_reference_is_refused(demo: Path) -> None:
    (demo / "data" / "reference_audio_latents" / "sample_002.pt").unlink()
    _assert_refused_before_training(
        demo, demo / "config.yaml", "reference_audio_latents/sample_002.pt: expected a file paired with"
    )


@pytest.mark.parametrize(("shape", "found"), [((4, 5, 16), "[4, 5, 16]"), ((8, 5, 32), "[8, 5, 32]")])
def test_reference_with_wrong_channels_or_mel_bins_is_refused(demo: Path, shape: tuple, found: str) -> None:
    path = demo / "data" / "reference_audio_latents" / "sample_001.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(*shape)
    torch.save(data, path)
    _assert_refused_before_training(demo, demo / "config.yaml", "expected [8, T, 16] audio latents", found)


def test_nan_reference_is_refused(demo: Path) -> None:
    path = demo / "data" / "reference_audio_latents" / "sample_003.pt"
    data = torch.load(path, weights_only=True)
    data["latents"][0, 0, 0] = float("nan")
    torch.save(data, path)
    _assert_refused_before_training(demo, demo / "config.yaml", "sample_003.pt [latents]: expected finite values")


def test_custom_preset_without_audio_modules_is_refused(demo: Path) -> None:
    config = _write(
        demo,
        "custom.yaml",
        {"training_strategy.lora_preset": "custom", "lora.target_modules": ["attn1.to_q", "attn1.to_k"]},
    )
    _assert_refused_before_training(demo, config, "names no audio module")


def test_audio_preset_with_video_target_modules_is_refused(demo: Path) -> None:
    config = _write(demo, "video_targets.yaml", {"lora.target_modules": ["audio_attn1.to_q", "attn1.to_q"]})
    _assert_refused_before_training(demo, config, "outside the audio stack (attn1.to_q)", "lora_preset: custom")


def _guided_validation(demo: Path, name: str, *, every_sample_has_a_reference: bool) -> Path:
    # A real tone: the check decodes validation's reference audio (the model and the validation runner never load).
    tone = str(write_wav(demo / "tone.wav", np.full((1, 16000), 0.1, dtype=np.float32), 16000))
    samples = [{"prompt": "a voice", "conditions": [{"type": "reference", "audio": tone}]}]
    samples.append(samples[0] if every_sample_has_a_reference else {"prompt": "a voice, no reference"})
    return _write(
        demo,
        name,
        {
            "training_strategy.validation_reference_guidance": 2.0,
            "validation.interval": 2,
            "validation.skip_initial_validation": True,
            "validation.generate_audio": True,
            "validation.samples": samples,
        },
    )


def test_reference_guidance_with_a_validation_sample_without_a_reference_is_refused(demo: Path) -> None:
    config = _guided_validation(demo, "guided.yaml", every_sample_has_a_reference=False)
    expected = ("validation.samples[1] has no audio reference", "set validation_reference_guidance: 0")
    _assert_refused_before_training(demo, config, *expected)
    checked = run_cli("check", str(config))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert all(text in checked.stdout + checked.stderr for text in expected)


def test_reference_guidance_with_a_reference_in_every_validation_sample_passes_the_check(demo: Path) -> None:
    config = _guided_validation(demo, "guided_ok.yaml", every_sample_has_a_reference=True)
    checked = run_cli("check", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
