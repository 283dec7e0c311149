"""Tier 2: an LTX-2.5 split pack (transformer, packed Gemma-4 text encoder, two VAEs) through the stock runner.

``ltx-trainer demo DIR --model ltx-2.5`` writes a tiny pack; the stock loaders read every component completely;
``check``, ``train --strategy audio_reference``, the ComfyUI export, ltx-core's LoRA fusion into the 2.5 transformer,
and ``precompute`` from the pack's audio VAE file all work on it. Needs ltx-core 1.2.0 (with transformers
``>=5.8,<5.15`` for Gemma-4), as ltx-trainer 1.2.0 does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_cli
from kill_resume import demo_config, finish, losses, spawn
from safetensors import safe_open
from safetensors.torch import load_file

from ltx_audio_reference.data.audio_io import read_audio, write_wav
from ltx_audio_reference.data.mel import front_end_for
from ltx_audio_reference.data.precompute import encode_waveform
from ltx_audio_reference.strategies.audio_reference.lora_targets import preset_block_modules
from ltx_audio_reference.testing import tiny_ltx25
from ltx_audio_reference.testing.tiny_ltx25 import assert_materialized

pytestmark = pytest.mark.integration

NUM_BLOCKS = 2
AUDIO_TENSORS_PER_BLOCK = 20  # 10 Linear layers of the audio preset, lora_A + lora_B each
# bf16 keeps 8 significant bits: rounding to nearest changes a value by at most 2^-8 of it.
BF16_ROUNDING = 2.0**-8


@pytest.fixture(scope="module")
def demo25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ltx-trainer demo DIR --model ltx-2.5``, through the CLI as a user runs it."""
    if (reason := tiny_ltx25.ltx25_supported() or tiny_ltx25.gemma4_supported()) is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("ltx25") / "demo"
    result = run_cli("demo", str(root), "--model", "ltx-2.5", "--steps", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def _model(root: Path) -> dict[str, str]:
    return yaml.safe_load((root / "config.yaml").read_text())["model"]


@pytest.fixture(scope="module")
def trained25(demo25: Path) -> Path:
    """The demo's config without a strategy section, trained with ``--strategy audio_reference``; the final LoRA.

    The learning rate is raised to 1e-2 so that after 3 steps ``B @ A`` stands well clear of bf16 rounding in the
    fusion check.
    """
    config = yaml.safe_load((demo25 / "config.yaml").read_text())
    del config["training_strategy"]
    config["optimization"]["learning_rate"] = 0.01
    config["checkpoints"]["interval"] = 3
    config["output_dir"] = str(demo25 / "outputs_flag")
    path = demo25 / "no_strategy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path), "--strategy", "audio_reference")
    assert result.returncode == 0, result.stdout + result.stderr
    return demo25 / "outputs_flag" / "checkpoints" / "lora_weights_step_00003.safetensors"


def test_demo_writes_a_split_pack_and_a_config_naming_each_file(demo25: Path) -> None:
    model = _model(demo25)
    assert model == {
        "model_path": str(demo25 / tiny_ltx25.TRANSFORMER_FILE),
        "text_encoder_path": str(demo25 / tiny_ltx25.TEXT_ENCODER_FILE),
        "video_vae_path": str(demo25 / tiny_ltx25.VIDEO_VAE_FILE),
        "audio_vae_path": str(demo25 / tiny_ltx25.AUDIO_VAE_FILE),
        "training_mode": "lora",
    }
    with safe_open(model["model_path"], "pt") as f:
        metadata = f.metadata()
    assert set(json.loads(metadata["config"])) == {"transformer"}  # what marks a split pack's transformer
    assert metadata["model_version"] == "2.5.0"
    with safe_open(model["text_encoder_path"], "pt") as f:
        gemma_config = json.loads(f.metadata()["gemma_config"])
    assert gemma_config["model_type"] == "gemma4_unified"
    assert json.loads(metadata["gemma_source_checkpoint"])["gemma_version"] == gemma_config["gemma_version"]
    leftovers = [p for p in demo25.rglob("*") if ".tmp" in p.name]
    assert leftovers == []  # every file written atomically


def test_the_stock_loaders_read_every_component_of_the_pack_completely(
    demo25: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ltx_core.model.audio_vae import encode_audio  # noqa: PLC0415
    from ltx_core.types import Audio  # noqa: PLC0415
    from ltx_trainer import model_loader as ml  # noqa: PLC0415

    m = _model(demo25)
    transformer, text_encoder, video_vae, audio_vae = (
        m["model_path"],
        m["text_encoder_path"],
        m["video_vae_path"],
        m["audio_vae_path"],
    )
    caplog.set_level(logging.WARNING)
    assert ml.is_split_transformer(transformer)
    with pytest.raises(ValueError, match="split checkpoint pack"):
        ml.resolve_video_vae_path(transformer, None)
    factors = ml.read_video_scale_factors(video_vae)
    assert (factors.time, factors.height, factors.width) == (8, 32, 32)
    assert ml.embedding_weight_paths(transformer, text_encoder) == (transformer, text_encoder)

    cpu = {"device": "cpu", "dtype": torch.float32}
    model = assert_materialized(ml.load_transformer(transformer, **cpu), transformer)
    assert len(model.transformer_blocks) == NUM_BLOCKS
    for block in model.transformer_blocks:
        assert block.ff.net[0].proj.bias is None  # LTX-2.5: the video feed-forward has no biases
        assert block.ff.net[2].bias is None
        assert block.audio_ff.net[0].proj.bias is not None  # ... the audio one keeps them
        assert block.audio_ff.net[2].bias is not None
        assert isinstance(block.audio_attn1.to_gate_logits, torch.nn.Linear)  # gated attention (22B family)
    assert tuple(model.keyframes_abs_pos_embedding.shape) == (1, 32)

    processor = assert_materialized(
        ml.load_embeddings_processor(
            ml.embedding_weight_paths(transformer, text_encoder), gemma_model_path=text_encoder, **cpu
        ),
        text_encoder,
    )
    assert type(processor.feature_extractor).__name__ == "FeatureExtractorV2"
    encoder = assert_materialized(ml.load_text_encoder(text_encoder, **cpu), text_encoder)
    assert type(encoder.model).__name__ == "Gemma4UnifiedForConditionalGeneration"
    hidden_states, mask = encoder.encode(["a voice sings one note"])[0]
    assert len(hidden_states) == tiny_ltx25.TINY_GEMMA4_NUM_HIDDEN_LAYERS + 1
    video_embeds, audio_embeds = processor.feature_extractor(hidden_states, mask, "left")
    condition = torch.load(demo25 / "data" / "conditions" / "sample_000.pt", weights_only=True)
    # The dataset's prompt embeddings have the widths the pack's own text path produces.
    assert video_embeds.shape[-1] == condition["video_prompt_embeds"].shape[-1] == 32
    assert audio_embeds.shape[-1] == condition["audio_prompt_embeds"].shape[-1] == 16

    with torch.no_grad():
        video_encoder = assert_materialized(ml.load_video_vae_encoder(video_vae, **cpu), video_vae)
        latents = video_encoder(torch.randn(1, 3, 9, 64, 64))
        assert tuple(latents.shape) == (1, 128, 2, 2, 2)
        video_decoder = assert_materialized(ml.load_video_vae_decoder(video_vae, **cpu), video_vae)
        assert tuple(video_decoder(latents).shape) == (1, 3, 9, 64, 64)
        audio_encoder = assert_materialized(ml.load_audio_vae_encoder(audio_vae, **cpu), audio_vae)
        audio_latents = encode_audio(Audio(waveform=torch.randn(1, 2, 16000), sampling_rate=16000), audio_encoder)
        assert tuple(audio_latents.shape) == (1, 8, 26, 16)  # 0.04 s a step, plus the causal pad
        assert_materialized(ml.load_audio_vae_decoder(audio_vae, **cpu), audio_vae)
        vocoder = assert_materialized(ml.load_vocoder(audio_vae, **cpu), audio_vae)
        assert type(vocoder).__name__ == "VocoderWithBWE"  # LTX-2.3/2.5's vocoder format
    assert not [r.getMessage() for r in caplog.records if "Uninitialized" in r.getMessage()]


def test_check_accepts_the_25_demo(demo25: Path) -> None:
    result = run_cli("check", str(demo25 / "config.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    assert "reference_audio_latents" in result.stdout


def test_strategy_flag_trains_the_25_pack_and_exports_the_comfy_lora(trained25: Path) -> None:
    with safe_open(str(trained25), "pt") as f:
        keys = set(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
        metadata = f.metadata()
    expected = {
        f"diffusion_model.transformer_blocks.{i}.{module}.lora_{ab}.weight"
        for i in range(NUM_BLOCKS)
        for module in preset_block_modules("audio")
        for ab in "AB"
    }
    assert keys == expected
    assert len(keys) == AUDIO_TENSORS_PER_BLOCK * NUM_BLOCKS
    assert not any("alpha" in k or "gate" in k for k in keys)
    assert all(t.dtype == torch.bfloat16 and bool(torch.isfinite(t).all()) for t in tensors.values())
    assert all(bool(t.abs().sum() > 0) for k, t in tensors.items() if ".lora_B." in k)  # moved off the zero init
    assert (metadata["strategy"], metadata["reference_positions"], metadata["lora_preset"]) == (
        "audio_reference",
        "negative",
        "audio",
    )


@pytest.mark.parametrize("backend", ["int8-quanto", "int8"])
def test_int8_trains_the_25_pack_with_its_bias_free_video_feed_forward(demo25: Path, backend: str) -> None:
    config = yaml.safe_load((demo25 / "config.yaml").read_text())
    config["acceleration"]["quantization"] = backend  # quantizes every block Linear, bias-free ones included
    config["checkpoints"]["interval"] = 3
    config["output_dir"] = str(demo25 / f"outputs_{backend}")
    path = demo25 / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    tensors = load_file(str(demo25 / f"outputs_{backend}" / "checkpoints" / "lora_weights_step_00003.safetensors"))
    assert len(tensors) == AUDIO_TENSORS_PER_BLOCK * NUM_BLOCKS
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values())


def test_the_streamed_load_and_its_cache_train_the_25_pack_as_the_stock_load_does(demo25: Path, tmp_path: Path) -> None:
    """``configs/ltx25_audio_reference.yaml`` streams its ``int8`` load from the split pack's transformer file."""
    shipped = yaml.safe_load((Path(__file__).parents[2] / "configs" / "ltx25_audio_reference.yaml").read_text())
    assert shipped["acceleration"]["quantization"] == "int8"
    assert shipped["acceleration"]["streamed_load"] is True
    edits = {"acceleration.quantization": "int8", "checkpoints.interval": 3, "checkpoints.precision": "float32"}
    streamed = {"acceleration.streamed_load": True, "acceleration.quantized_cache": str(tmp_path / "qcache")}
    logs, exports = {}, {}
    for name, extra in (("stock", {"acceleration.streamed_load": False}), ("cold", streamed), ("warm", streamed)):
        config = demo_config(demo25, tmp_path / name, {**edits, **extra})
        logs[name] = finish(*spawn(config, tmp_path, name, "--loss-log", str(tmp_path / f"{name}.losses")))
        exports[name] = load_file(str(tmp_path / name / "checkpoints" / "lora_weights_step_00003.safetensors"))

    assert "Loaded the transformer part by part" not in logs["stock"]
    assert "Quantized-weight cache written" in logs["cold"]
    assert "Quantized-weight cache hit: loaded int8" in logs["warm"]
    expected = losses(tmp_path / "stock.losses")
    assert sorted(expected) == [1, 2, 3]
    assert len(exports["stock"]) == AUDIO_TENSORS_PER_BLOCK * NUM_BLOCKS
    for name in ("cold", "warm"):
        assert "Loaded the transformer part by part" in logs[name], name
        assert losses(tmp_path / f"{name}.losses") == expected, name  # every per-sample loss, bit for bit
        assert exports[name].keys() == exports["stock"].keys()
        for key, tensor in exports["stock"].items():
            assert torch.equal(exports[name][key], tensor), (name, key)


def _build_transformer(model_path: str, lora: Path | None) -> dict[str, torch.Tensor]:
    """The 2.5 transformer's parameters as ltx-core builds them (bf16, as for inference), ``lora`` fused at 1."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps  # noqa: PLC0415
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: PLC0415
    from ltx_core.model.transformer.model_configurator import (  # noqa: PLC0415
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )

    loras = () if lora is None else (LoraPathStrengthAndSDOps(str(lora), 1.0, LTXV_LORA_COMFY_RENAMING_MAP),)
    model = SingleGPUModelBuilder(
        model_path=model_path,
        model_class_configurator=LTXModelConfigurator,
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
        loras=loras,
    ).build(device=torch.device("cpu"), dtype=torch.bfloat16)
    assert_materialized(model, model_path)
    return {name: p.detach() for name, p in model.named_parameters()}


def test_ltx_core_fuses_the_export_into_every_audio_weight_of_the_25_transformer_and_nothing_else(
    demo25: Path, trained25: Path
) -> None:
    model_path = _model(demo25)["model_path"]
    base, fused = _build_transformer(model_path, None), _build_transformer(model_path, trained25)
    lora = load_file(str(trained25))
    modules = {k.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0] for k in lora}
    assert len(modules) == 10 * NUM_BLOCKS

    changed = {name for name in base if not torch.equal(base[name], fused[name])}
    assert changed == {f"{module}.weight" for module in modules}  # every LoRA module's weight, nothing else
    for module in sorted(modules):
        w = base[f"{module}.weight"].double()
        b = lora[f"diffusion_model.{module}.lora_B.weight"].double()
        a = lora[f"diffusion_model.{module}.lora_A.weight"].double()
        delta = b @ a
        moved = fused[f"{module}.weight"].double() - w
        # ltx-core computes B @ A in bf16, adds it to the file's float32 weight and rounds the sum to bf16, while the
        # base is that weight rounded to bf16: each element is within those roundings of W + B @ A ...
        bound = BF16_ROUNDING * (2 * b.abs() @ a.abs() + (w + delta).abs() + w.abs())
        assert bool(((moved - delta).abs() <= bound).all()), module
        # ... and as a whole the weight moved by B @ A, not by 0, 2 B @ A or -B @ A (relative error 1 or more).
        relative = float((moved - delta).norm() / delta.norm())
        assert relative < 0.25, (module, relative)


def _tone(seconds: float, channels: int, frequency: float, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t)
    return np.stack([mono] * channels).astype(np.float32)


def test_precompute_encodes_references_through_the_packs_audio_vae_file(demo25: Path, tmp_path: Path) -> None:
    from ltx_trainer.model_loader import load_audio_vae_encoder  # noqa: PLC0415

    audio_vae = _model(demo25)["audio_vae_path"]
    references = tmp_path / "references"
    references.mkdir()
    write_wav(references / "sample_000.wav", _tone(0.5, 1, 220.0), 16000)
    write_wav(references / "sample_001.wav", _tone(0.3, 2, 330.0), 16000)
    out = tmp_path / "precomputed"
    result = run_cli("audio-reference", "precompute", str(references), "--model-path", audio_vae, "-o", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 encoded, 0 already done" in result.stdout

    # The files hold what the trainer's own loader makes of the same audio with the same encoder file.
    stock = assert_materialized(load_audio_vae_encoder(audio_vae, device="cpu", dtype=torch.float32), audio_vae)
    front_end = front_end_for(stock)
    for name in ("sample_000", "sample_001"):
        written = torch.load(out / "reference_audio_latents" / f"{name}.pt", weights_only=True)
        samples, sample_rate = read_audio(references / f"{name}.wav")
        direct = encode_waveform(stock, front_end, torch.from_numpy(samples), sample_rate)
        assert written["latents"].shape[0::2] == (8, 16)
        assert torch.equal(written["latents"], direct["latents"])


def test_precompute_refuses_the_packs_transformer_and_names_the_audio_vae_file(demo25: Path, tmp_path: Path) -> None:
    transformer = _model(demo25)["model_path"]
    references = tmp_path / "references"
    references.mkdir()
    write_wav(references / "r.wav", _tone(0.3, 2, 220.0), 16000)
    out = tmp_path / "precomputed"
    result = run_cli("audio-reference", "precompute", str(references), "--model-path", transformer, "-o", str(out))
    output = " ".join((result.stdout + result.stderr).replace("│", " ").split())
    assert result.returncode == 1, output
    assert "is the transformer file of a split checkpoint pack and holds no audio VAE" in output
    assert "pass the pack's audio VAE file" in output
    assert "Traceback" not in output
    assert not out.exists()
