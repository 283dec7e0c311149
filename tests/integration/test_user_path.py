"""Tier 2: a new user's whole path, on CPU, in the documented commands: clips -> pairs -> latents -> LoRA -> eval.

Six synthetic talking-head clips are made here with PyAV (a moving test pattern and a voiced vowel of known F0).
Then, each through the ``ltx-trainer`` CLI in its own process, as the README runs them:

1. ``demo`` writes the tiny model pack (``--model ltx-2.3``, and ``ltx-2.5`` in the second run);
2. ``audio-reference build-dataset`` (the decorrelated recipe) turns the clips into (reference tone, pitch-shifted
   target) pairs;
3. ``audio-reference preprocess`` runs ltx-trainer's own ``process_dataset.py`` over the pack, then the reference
   latents, and ends with check's verdict;
4. ``check`` and ``train`` (a few steps) on a config pointing at the result;
5. ``audio-reference inspect`` on the LoRA;
6. ``audio-reference eval``: a pitch sweep with 2 tones (LTX-2.3 pack only: the 2.5 pack's vocoder is LTX-2.5's
   bandwidth-extension one, which ltx-trainer runs in bf16 autocast, and CPU autocast has no float32).

Every artifact is asserted on: pair counts and files, latent shapes, the LoRA's tensors, the inspect report, and the
sweep's measured pitches.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_cli
from safetensors import safe_open

from ltx_audio_reference.testing import tiny_ltx25
from ltx_audio_reference.testing.synthetic_audio import synthetic_voice, write_clip

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLIPS = 6
SOURCE_F0 = (100.0, 120.0, 140.0, 165.0, 190.0, 220.0)
BUCKET = "64x64x25"  # 1 s at 25 fps: 4 latent frames of 2 x 2, 26 audio latents
STEPS = 2
NUM_BLOCKS = 2
AUDIO_TENSORS = 20 * NUM_BLOCKS  # the audio preset: 10 Linear layers a block, lora_A and lora_B each
SWEEP_TONES = 2

_cli = functools.partial(run_cli, timeout=900)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    return output


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six talking-head clips made with PyAV, turned into pairs by ``build-dataset`` (decorrelated recipe)."""
    root = tmp_path_factory.mktemp("user_path")
    vowels = ("a", "i", "u", "a", "i", "u")
    for index, f0 in enumerate(SOURCE_F0):
        voice = synthetic_voice(f0, sample_rate=44100, duration_s=1.2, vowel=vowels[index], seed=index)
        write_clip(root / "clips" / f"speaker_{index}.mp4", np.stack([voice, 0.8 * voice]), 44100, size=(64, 64))
    output = root / "pairs"
    built = _cli(
        "audio-reference",
        "build-dataset",
        str(REPO / "recipes" / "helium" / "decorrelated.yaml"),
        "--input",
        str(root / "clips"),
        "--output",
        str(output),
        "--workers",
        "1",
    )
    _ok(built)
    return output


def test_build_dataset_keeps_pairs_with_a_manifest_report_and_files(pairs: Path) -> None:
    report = json.loads((pairs / "report.json").read_text())
    manifest = json.loads((pairs / "dataset.json").read_text())
    assert report["clips"] == CLIPS
    assert report["kept"] == len(manifest) >= 4  # synthetic vowels re-measure well; a drop needs a reason
    assert report["kept"] + sum(report["dropped_by_reason"].values()) == CLIPS
    assert report["target_kind"] == "decorrelated"
    for row in manifest:
        assert set(row) == {"video", "caption", "reference_audio"}
        assert (pairs / row["video"]).is_file()
        assert (pairs / row["reference_audio"]).is_file()
    assert (pairs / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _demo(root: Path, model: str) -> tuple[Path, dict[str, str]]:
    """``ltx-trainer demo`` and the preprocess options naming its pack."""
    if model == "ltx-2.5" and (reason := tiny_ltx25.ltx25_supported() or tiny_ltx25.gemma4_supported()):
        pytest.skip(reason)
    demo = root / "demo"
    _ok(_cli("demo", str(demo), "--model", model))
    section = yaml.safe_load((demo / "config.yaml").read_text())["model"]
    options = {"--model-path": section["model_path"], "--text-encoder-path": section["text_encoder_path"]}
    if model == "ltx-2.5":
        options |= {"--video-vae-path": section["video_vae_path"], "--audio-vae-path": section["audio_vae_path"]}
    return demo, options


@pytest.fixture(scope="module", params=["ltx-2.3", "ltx-2.5"])
def path(request: pytest.FixtureRequest, pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """demo -> preprocess -> check -> train -> inspect (-> eval) for one pack; every command's result."""
    model = request.param
    root = tmp_path_factory.mktemp(model)
    demo, options = _demo(root, model)
    data = root / "precomputed"
    manifest = pairs / "dataset.json"
    preprocess = _cli(
        "audio-reference",
        "preprocess",
        str(manifest),
        "--resolution-buckets",
        BUCKET,
        "--output",
        str(data),
        "--device",
        "cpu",
        *[part for option, value in options.items() for part in (option, value)],
    )
    _ok(preprocess)

    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["data"]["preprocessed_data_root"] = str(data)
    config["optimization"] |= {"steps": STEPS, "batch_size": 1}
    config["checkpoints"]["interval"] = STEPS
    config["output_dir"] = str(root / "outputs")
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(config))
    check = _cli("check", str(config_path))
    train = _cli("train", str(config_path), "--disable-progress-bars")
    lora = root / "outputs" / "checkpoints" / f"lora_weights_step_{STEPS:05d}.safetensors"
    inspect = _cli("audio-reference", "inspect", str(lora), "--json")
    result: dict[str, object] = {
        "model": model,
        "manifest": manifest,
        "data": data,
        "preprocess": preprocess,
        "check": check,
        "train": train,
        "lora": lora,
        "inspect": inspect,
    }
    if model == "ltx-2.3":
        config["validation"] = {
            "interval": None,
            "prompts": ["a person holds one steady note"],
            "video_dims": [32, 32, 25],
            "frame_rate": 25.0,
            "inference_steps": 2,
            "video_stg_scale": 0.0,  # the tiny model has 2 blocks, not the default STG block 28
            "audio_stg_scale": 0.0,
        }
        eval_config = root / "eval.yaml"
        eval_config.write_text(yaml.safe_dump(config))
        sweep = root / "sweep"
        args = ("--lora", str(lora), "--out", str(sweep), "--tones", str(SWEEP_TONES), "--bootstrap", "200")
        result |= {"sweep_dir": sweep, "eval": _cli("audio-reference", "eval", str(eval_config), *args)}
    return result


def test_preprocess_writes_every_sample_with_upstream_shapes_and_ends_with_checks_verdict(
    path: dict[str, object],
) -> None:
    output = _ok(path["preprocess"])  # type: ignore[arg-type]
    assert "process_dataset.py" in output  # upstream's own script ran
    assert "check: OK" in output
    data: Path = path["data"]  # type: ignore[assignment]
    rows = json.loads(Path(path["manifest"]).read_text())  # type: ignore[arg-type]
    names = [Path(row["video"]).with_suffix(".pt") for row in rows]
    width = 32 if path["model"] == "ltx-2.5" else 64  # the tiny 2.5 transformer's width; 2.3: the Gemma width
    for name in names:
        video = torch.load(data / "latents" / name, weights_only=True)
        assert tuple(video["latents"].shape) == (128, 4, 2, 2)  # 25 frames of 64 x 64 through the 32 x 32 x 8 VAE
        assert (video["num_frames"], video["height"], video["width"]) == (4, 2, 2)
        assert video["fps"] == pytest.approx(25.0)
        audio = torch.load(data / "audio_latents" / name, weights_only=True)
        # The clip's sound, trimmed to the bucket's 1 s: 25 latents of 0.04 s, and one more from the causal padding.
        assert tuple(audio["latents"].shape) == (8, 26, 16)
        reference = torch.load(data / "reference_audio_latents" / name, weights_only=True)
        assert tuple(reference["latents"].shape) == (8, 51, 16)  # the 2 s tone (not trimmed to the bucket)
        assert reference["duration"] == pytest.approx(2.0)
        assert not torch.equal(reference["latents"][:, :26], audio["latents"])
        condition = torch.load(data / "conditions" / name, weights_only=True)
        assert condition["video_prompt_embeds"].shape[-1] == width
        assert condition["prompt_attention_mask"].shape[0] == condition["video_prompt_embeds"].shape[0]
        for tensor in (video["latents"], audio["latents"], reference["latents"], condition["video_prompt_embeds"]):
            assert bool(torch.isfinite(tensor).all())
    for folder in ("conditions", "latents", "audio_latents", "reference_audio_latents"):
        assert len(list((data / folder).rglob("*.pt"))) == len(rows)
    assert not [p for p in data.rglob("*") if ".tmp" in p.name]
    state = json.loads((data / ".preprocess.json").read_text())
    assert state["status"] == "complete"
    assert state["samples"] == len(rows)
    # The manifest copy upstream read (without the reference column) is gone.
    assert sorted(p.name for p in Path(path["manifest"]).parent.glob(".*.json")) == []  # type: ignore[arg-type]


def test_check_and_train_accept_the_preprocessed_data_and_export_the_audio_lora(path: dict[str, object]) -> None:
    rows = json.loads(Path(path["manifest"]).read_text())  # type: ignore[arg-type]
    check = _ok(path["check"])  # type: ignore[arg-type]
    assert f"{len(rows)} samples" in check
    _ok(path["train"])  # type: ignore[arg-type]
    lora: Path = path["lora"]  # type: ignore[assignment]
    with safe_open(str(lora), "pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
        tensors = [f.get_tensor(k) for k in keys]
    assert len(keys) == AUDIO_TENSORS
    assert all(k.startswith("diffusion_model.transformer_blocks.") for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert all(".audio_" in k for k in keys)
    assert metadata["strategy"] == "audio_reference"
    assert all(bool(torch.isfinite(t).all()) for t in tensors)
    assert any(bool(t.abs().sum() > 0) for k, t in zip(keys, tensors, strict=True) if "lora_B" in k)  # it trained


def test_inspect_reports_the_audio_preset_and_finite_tensors(path: dict[str, object]) -> None:
    report = json.loads(_ok(path["inspect"]))["files"][0]  # type: ignore[arg-type]
    assert report["num_tensors"] == AUDIO_TENSORS
    assert report["preset"] == "audio"
    assert report["num_blocks"] == NUM_BLOCKS
    assert report["non_finite_tensors"] == []
    assert report["metadata"]["strategy"] == "audio_reference"
    assert report["total_delta_norm"] > 0


def test_eval_sweeps_two_tones_and_measures_every_pitch(path: dict[str, object]) -> None:
    if path["model"] != "ltx-2.3":
        pytest.skip("the tiny 2.5 pack's bandwidth-extension vocoder cannot decode on CPU inside ltx-trainer")
    output = _ok(path["eval"])  # type: ignore[arg-type]
    assert "voiced fraction" in output
    sweep: Path = path["sweep_dir"]  # type: ignore[assignment]
    document = json.loads((sweep / "sweep.json").read_text())
    assert document["lora"] == str(path["lora"])
    assert set(document["arms"]) == {"lora", "base", "overlap"}
    assert document["nominal_f0_hz"] == pytest.approx([90.0, 300.0])
    for nominal, measured in zip(document["nominal_f0_hz"], document["reference_f0_hz"], strict=True):
        assert abs(measured - nominal) / nominal < 0.03  # the reference tones measure at their pitch
    for arm in document["arms"].values():
        assert len(arm["outputs"]) == SWEEP_TONES
        for row in arm["outputs"]:
            assert Path(row["file"]).is_file()
            # Measured by Praat. The tiny random vocoder buzzes at its mel frame rate, 100 Hz, whatever the reference
            # (docs/evaluation.md): the mechanics are real, the numbers mean nothing.
            assert row["f0_hz"] == pytest.approx(100.0, abs=3.0)
        assert 0.0 < arm["voiced_fraction"] <= 1.0
        assert arm["fit"]["slope"] is not None
    assert (sweep / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
