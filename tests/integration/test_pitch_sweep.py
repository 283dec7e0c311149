"""Tier 2: ``audio-reference eval`` end to end on the tiny model, through ltx-trainer's validation sampler.

The kit's checkpoint gains a tiny random audio VAE, vocoder and video decoder, and its Gemma folder random weights,
so prompts encode and latents decode. A LoRA is trained for two steps by the stock runner. The sweep then generates
audio and video for every tone in every arm and measures them. The numbers are meaningless (random decoders make
noise-like audio); the mechanics are what is tested.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import run_cli
from safetensors import safe_open

from ltx_audio_reference.data.audio_io import read_audio
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

TONES = 3


_cli = functools.partial(run_cli, timeout=900)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("sweep")
    config_path = write_demo(root / "demo", steps=2, num_samples=2)
    demo = config_path.parent
    trained = _cli("train", str(config_path), "--disable-progress-bars")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    lora = demo / "outputs" / "checkpoints" / "lora_weights_step_00002.safetensors"

    config = yaml.safe_load(config_path.read_text())
    config["validation"] = {
        "interval": None,
        "prompts": ["a voice holds one steady note"],
        "video_dims": [32, 32, 25],  # 1 s at 25 fps: 4 latent frames of 1 x 1, 25 audio latents
        "frame_rate": 25.0,
        "inference_steps": 2,
        "video_stg_scale": 0.0,  # the tiny model has 2 blocks, not the default STG block 28
        "audio_stg_scale": 0.0,
    }
    eval_config = demo / "eval.yaml"
    eval_config.write_text(yaml.safe_dump(config))
    out = root / "out"
    result = _cli(
        "audio-reference", "eval", str(eval_config), "--lora", str(lora), "--out", str(out), "--tones", str(TONES)
    )
    return out, lora, result


@pytest.fixture(scope="module")
def guided_sweep(
    sweep: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The same sweep's lora arm, also sampled with reference guidance 2."""
    out, lora, _ = sweep
    guided_out = out.parent / "guided"
    result = _cli(
        "audio-reference",
        "eval",
        str(lora.parents[2] / "eval.yaml"),
        "--lora",
        str(lora),
        "--out",
        str(guided_out),
        "--tones",
        str(TONES),
        "--arms",
        "lora",
        "--reference-guidance",
        "0,2",
    )
    return guided_out, result


def test_sweep_writes_json_and_png_for_three_arms(sweep: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    out, lora, result = sweep
    assert result.returncode == 0, result.stdout + result.stderr
    assert "voiced fraction" in result.stdout
    document = json.loads((out / "sweep.json").read_text())
    assert document["lora"] == str(lora)
    assert set(document["arms"]) == {"lora", "base", "overlap"}
    assert len(document["nominal_f0_hz"]) == TONES
    assert document["nominal_f0_hz"][0] == pytest.approx(90.0)
    assert document["nominal_f0_hz"][-1] == pytest.approx(300.0)
    # The reference tones are real voiced tones at the nominal pitch.
    for nominal, measured in zip(document["nominal_f0_hz"], document["reference_f0_hz"], strict=True):
        assert abs(measured - nominal) / nominal < 0.03
    for arm in document["arms"].values():
        assert len(arm["outputs"]) == TONES
        assert 0.0 <= arm["voiced_fraction"] <= 1.0
        assert {"slope", "ci_low", "ci_high", "points"} <= set(arm["fit"])
        for row in arm["outputs"]:
            assert Path(row["file"]).suffix == ".mp4"  # video and audio, generated together
            assert row["frames"] > 0
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_arms_differ_only_where_they_should(sweep: tuple[Path, Path, subprocess.CompletedProcess[str]]) -> None:
    out, _, result = sweep
    assert result.returncode == 0, result.stdout + result.stderr
    waves = {arm: read_audio(out / arm / "samples" / "step_000000_1.mp4") for arm in ("lora", "base", "overlap")}
    for waveform, sample_rate in waves.values():
        assert sample_rate == 24000
        assert waveform.shape[0] == 2
        assert waveform.shape[1] > 0.9 * sample_rate  # about one second
        assert np.isfinite(waveform).all()
    length = min(w.shape[1] for w, _ in waves.values())
    lora, base, overlap = (waves[arm][0][:, :length] for arm in ("lora", "base", "overlap"))
    assert not np.allclose(lora, base)  # the LoRA was fused
    # Negative and overlap placement differ, so the reference went through the strategy's conditioner (the stock
    # placement is the overlap one).
    assert not np.allclose(lora, overlap)


def test_lora_arms_need_a_lora(tmp_path: Path) -> None:
    config_path = write_demo(tmp_path / "demo", steps=1, num_samples=2)
    result = _cli("audio-reference", "eval", str(config_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "need --lora" in result.stdout


def test_eval_without_ffmpeg_on_path_names_the_fix_before_loading_models(tmp_path: Path) -> None:
    # torchcodec imports here (ltx-trainer's stack); only the ffmpeg program is hidden.
    config_path = write_demo(tmp_path / "demo", steps=1, num_samples=2)
    (tmp_path / "empty_path").mkdir()
    out = tmp_path / "out"
    result = _cli(
        "audio-reference", "eval", str(config_path), "--arms", "base", "--out", str(out),
        env={"PATH": str(tmp_path / "empty_path")},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "FFmpeg is not installed (no ffmpeg program on PATH): sudo apt-get install ffmpeg" in text
    assert "torchcodec" not in text  # torchcodec itself loads: only FFmpeg's program is missing
    assert "Traceback" not in result.stdout + result.stderr
    assert not out.exists()


def test_reference_guidance_arms_sit_next_to_the_plain_arm_which_is_unchanged(
    sweep: tuple[Path, Path, subprocess.CompletedProcess[str]],
    guided_sweep: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    plain_out, _, _ = sweep
    out, result = guided_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "sweep.json").read_text())
    assert document["reference_guidance"] == [0.0, 2.0]
    assert list(document["arms"]) == ["lora", "lora_rg2"]
    for name, scale in (("lora", 0.0), ("lora_rg2", 2.0)):
        arm = document["arms"][name]
        assert (arm["base_arm"], arm["reference_guidance_scale"]) == ("lora", scale)
        assert len(arm["outputs"]) == TONES
        assert all(Path(row["file"]).parent.parent == out / name for row in arm["outputs"])
    assert "lora_rg2" in result.stdout
    for index in range(1, TONES + 1):
        name = f"samples/step_000000_{index}.mp4"
        # Scale 0 is the stock sampler: the plain arm's outputs equal those of a sweep without the option.
        assert read_audio(out / "lora" / name)[0].tobytes() == read_audio(plain_out / "lora" / name)[0].tobytes()
        assert not np.array_equal(read_audio(out / "lora_rg2" / name)[0], read_audio(out / "lora" / name)[0])
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_in_trainer_validation_samples_with_the_configured_reference_guidance(
    sweep: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    """The stock trainer's validation reads validation_reference_guidance and the checkpoint records it."""
    out, lora, _ = sweep
    demo = lora.parents[2]
    config = yaml.safe_load((demo / "eval.yaml").read_text())
    tone = sorted((out / "references").glob("*.wav"))[0]
    config["optimization"]["steps"] = 1
    config["checkpoints"]["interval"] = 1
    config["validation"] = {
        "interval": 1,
        "skip_initial_validation": True,
        "samples": [
            {"prompt": "a voice holds one steady note", "conditions": [{"type": "reference", "audio": str(tone)}]}
        ],
        "video_dims": [32, 32, 25],
        "frame_rate": 25.0,
        "inference_steps": 2,
        "video_stg_scale": 0.0,
        "audio_stg_scale": 0.0,
    }
    waves = {}
    for scale in (0.0, 2.0):
        config["training_strategy"]["validation_reference_guidance"] = scale
        config["output_dir"] = str(demo / f"validated_{scale:g}")
        path = demo / f"validated_{scale:g}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = _cli("train", str(path), "--disable-progress-bars")
        assert result.returncode == 0, result.stdout + result.stderr
        root = Path(config["output_dir"])
        waves[scale] = read_audio(root / "samples" / "step_000001_1.mp4")[0]
        with safe_open(str(root / "checkpoints" / "lora_weights_step_00001.safetensors"), "pt") as f:
            assert f.metadata()["reference_guidance_scale"] == str(scale)
    length = min(w.shape[1] for w in waves.values())
    assert not np.array_equal(waves[0.0][:, :length], waves[2.0][:, :length])


def test_video_dims_the_vae_cannot_make_are_refused_before_any_tone_is_written(
    sweep: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    _, lora, _ = sweep
    out = tmp_path / "out"
    config = str(lora.parents[2] / "eval.yaml")
    result = _cli("audio-reference", "eval", config, "--arms", "base", "--out", str(out), "--video-dims", "33,32,24")
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "--video-dims 33x32x24: width and height must be positive multiples of 32 and 32 and frames" in text
    assert "the nearest valid size is 32x32x25" in text
    base = ("audio-reference", "eval", config, "--arms", "base", "--out", str(out))
    result = _cli(*base, "--validation", "frame_rat=25")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "validation.frame_rat: Extra inputs are not permitted" in " ".join(result.stdout.split())
    assert "errors.pydantic.dev" not in result.stdout
    assert not out.exists()


def test_a_sweep_into_an_earlier_sweeps_folder_replaces_its_tones(
    sweep: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    import shutil  # noqa: PLC0415

    earlier, lora, _ = sweep
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    assert len(list((out / "references").glob("tone_*.wav"))) == TONES
    config = str(lora.parents[2] / "eval.yaml")
    result = _cli("audio-reference", "eval", config, "--arms", "base", "--out", str(out), "--tones", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{out} holds an earlier sweep: it is replaced" in " ".join((result.stdout + result.stderr).split())
    tones = sorted(p.name for p in (out / "references").glob("tone_*.wav"))
    assert tones == ["tone_00_90.0hz.wav", "tone_01_300.0hz.wav"]
    document = json.loads((out / "sweep.json").read_text())
    assert set(document["arms"]) == {"base"}
    assert [row["reference_file"] for row in document["arms"]["base"]["outputs"]] == [
        str(out / "references" / name) for name in tones
    ]
