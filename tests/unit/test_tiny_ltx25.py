"""Tier 1: the tiny LTX-2.5 split-pack kit, read back with ltx-core's own loader (no ltx-trainer).

Writing a 2.5 pack needs ltx-core 1.2.0 (and transformers with Gemma-4); with ltx-core 1.0.0 these tests skip, and
``ltx-trainer demo --model ltx-2.5`` is shown to refuse cleanly instead. The stock trainer's loaders, training,
export, fusion and precompute on the pack are tier 2 (``tests/integration/test_ltx25.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.testing import tiny_ltx25
from ltx_audio_reference.testing.demo import write_demo

REASON = tiny_ltx25.ltx25_supported() or tiny_ltx25.gemma4_supported()
needs_ltx25 = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> tiny_ltx25.Ltx25Pack:
    if REASON is not None:
        pytest.skip(REASON)
    return tiny_ltx25.write_tiny_ltx25_pack(tmp_path_factory.mktemp("pack"), seed=1, vocoder="plain")


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def test_transformer_config_is_the_ltx25_shape_at_both_widths() -> None:
    for width, (video, audio) in (("tiny", (32, 16)), ("full", (4096, 2048))):
        config = tiny_ltx25.ltx25_transformer_config(num_layers=3, width=width)
        assert config["num_layers"] == 3
        assert (config["ff_bias"], config["audio_ff_bias"], config["use_keyframes_abs_pos_embedding"]) == (
            False,
            True,
            True,
        )
        assert config["apply_gated_attention"]
        assert config["cross_attention_adaln"]
        assert tiny_ltx25.prompt_widths(config) == (video, audio)
        # V2: the connectors and the cross-attention context work at the transformer's inner widths.
        assert config["connector_num_attention_heads"] * config["connector_attention_head_dim"] == video
        assert config["audio_connector_num_attention_heads"] * config["audio_connector_attention_head_dim"] == audio
        assert (config["cross_attention_dim"], config["audio_cross_attention_dim"]) == (video, audio)
    with pytest.raises(ValueError, match="width must be"):
        tiny_ltx25.ltx25_transformer_config(width="wide")  # type: ignore[arg-type]


@needs_ltx25
def test_transformer_file_rebuilds_the_kits_model_exactly(pack: tiny_ltx25.Ltx25Pack) -> None:
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: PLC0415
    from ltx_core.model.transformer.model_configurator import (  # noqa: PLC0415
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )

    loaded = SingleGPUModelBuilder(
        model_path=str(pack.transformer),
        model_class_configurator=LTXModelConfigurator,
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
    ).build(device=torch.device("cpu"), dtype=torch.float32)
    tiny_ltx25.assert_materialized(loaded, pack.transformer)
    built = tiny_ltx25.build_tiny_ltx25_model(seed=1)
    assert loaded.state_dict().keys() == built.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in built.state_dict().items())
    metadata = _metadata(pack.transformer)
    assert json.loads(metadata["config"]) == {"transformer": tiny_ltx25.ltx25_transformer_config()}
    assert metadata["model_version"] == tiny_ltx25.MODEL_VERSION
    assert json.loads(metadata["gemma_source_checkpoint"])["gemma_version"] == tiny_ltx25.GEMMA_VERSION


@needs_ltx25
def test_text_encoder_is_a_comfy_flat_packed_gemma4_with_the_v2_projection(pack: tiny_ltx25.Ltx25Pack) -> None:
    tensors = load_file(str(pack.text_encoder))
    gemma_config = json.loads(_metadata(pack.text_encoder)["gemma_config"])
    assert gemma_config["model_type"] == "gemma4_unified"
    assert gemma_config["gemma_version"] == tiny_ltx25.GEMMA_VERSION
    assert "model.layers.0.post_feedforward_layernorm.weight" in tensors  # the Comfy-flat LM layout
    assert any(k.startswith("vision_model.") for k in tensors)
    assert "multi_modal_projector.embedding_projection.weight" in tensors
    assert "audio_projector.embedding_projection.weight" in tensors
    assert not any(k.startswith(("model.language_model.", "model.embed_vision.", "lm_head.")) for k in tensors)
    assert {k for k in tensors if k.startswith(("tokenizer_json", "hf_asset__"))} == {
        "tokenizer_json",
        "hf_asset__tokenizer_config.json",
        "hf_asset__processor_config.json",
        "hf_asset__generation_config.json",
    }
    features = tiny_ltx25.TINY_GEMMA4_HIDDEN_SIZE * (tiny_ltx25.TINY_GEMMA4_NUM_HIDDEN_LAYERS + 1)
    assert tensors["text_embedding_projection.video_aggregate_embed.weight"].shape == (32, features)
    assert tensors["text_embedding_projection.audio_aggregate_embed.weight"].shape == (16, features)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16, torch.uint8}


@needs_ltx25
def test_text_encoder_without_gemma_weights_keeps_everything_training_reads(tmp_path: Path) -> None:
    path = tiny_ltx25.write_tiny_gemma4_text_encoder(
        tmp_path / "te.safetensors", tiny_ltx25.ltx25_transformer_config(), gemma_weights=False
    )
    keys = set(load_file(str(path)))
    assert not any(k.startswith(("model.", "vision_model.")) for k in keys)
    assert keys >= {
        "tokenizer_json",
        "hf_asset__tokenizer_config.json",
        "hf_asset__processor_config.json",
        "text_embedding_projection.video_aggregate_embed.weight",
        "text_embedding_projection.audio_aggregate_embed.bias",
    }
    assert "gemma_config" in _metadata(path)


@needs_ltx25
def test_vae_files_load_completely_through_ltx_core(pack: tiny_ltx25.Ltx25Pack) -> None:
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: PLC0415
    from ltx_core.model.audio_vae import (  # noqa: PLC0415
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
        AudioDecoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.video_vae import (  # noqa: PLC0415
        VAE_DECODER_COMFY_KEYS_FILTER,
        VAE_ENCODER_COMFY_KEYS_FILTER,
        VideoDecoderConfigurator,
        VideoEncoderConfigurator,
    )

    for path, configurator, ops in (
        (pack.video_vae, VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER),
        (pack.video_vae, VideoDecoderConfigurator, VAE_DECODER_COMFY_KEYS_FILTER),
        (pack.audio_vae, AudioDecoderConfigurator, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER),
        (pack.audio_vae, VocoderConfigurator, VOCODER_COMFY_KEYS_FILTER),
    ):
        module = SingleGPUModelBuilder(
            model_path=str(path), model_class_configurator=configurator, model_sd_ops=ops
        ).build(device=torch.device("cpu"), dtype=torch.float32)
        tiny_ltx25.assert_materialized(module, path)
    for path in (pack.video_vae, pack.audio_vae):
        assert _metadata(path)["model_version"] == tiny_ltx25.MODEL_VERSION
    assert set(json.loads(_metadata(pack.audio_vae)["config"])) == {"audio_vae", "vocoder"}


@needs_ltx25
def test_bwe_vocoder_fills_the_buffers_a_checkpoint_must_carry() -> None:
    vocoder = tiny_ltx25.build_tiny_bwe_vocoder(seed=0)
    stft = vocoder.mel_stft.stft_fn
    assert bool(stft.forward_basis.abs().sum() > 0)
    assert bool(stft.inverse_basis.abs().sum() > 0)
    assert bool(vocoder.mel_stft.mel_basis.abs().sum() > 0)
    # The inverse basis is the pseudo-inverse of the windowed DFT rows (the Hann window's zero makes it singular).
    forward, inverse = stft.forward_basis[:, 0].double(), stft.inverse_basis[:, 0].double()
    assert torch.allclose(forward @ (inverse.T @ forward), forward, atol=1e-4)


@needs_ltx25
def test_dataset_has_the_25_prompt_widths_and_files_are_atomic(tmp_path: Path) -> None:
    root = tiny_ltx25.write_ltx25_dataset(tmp_path / "data", num_samples=2)
    condition = torch.load(root / "conditions" / "sample_000.pt", weights_only=True)
    assert condition["video_prompt_embeds"].shape == (128, 32)
    assert condition["audio_prompt_embeds"].shape == (128, 16)
    assert [p for p in tmp_path.rglob("*") if ".tmp" in p.name] == []


def test_meta_tensors_are_reported_naming_the_file() -> None:
    with torch.device("meta"):
        module = torch.nn.Linear(2, 2)
    assert tiny_ltx25.meta_tensors(module) == ["weight", "bias"]
    with pytest.raises(AssertionError, match=r"x\.safetensors: 2 tensor\(s\) of Linear left on the meta device"):
        tiny_ltx25.assert_materialized(module, "x.safetensors")
    assert tiny_ltx25.assert_materialized(torch.nn.Linear(2, 2), "y") is not None


def test_demo_refuses_an_unknown_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["demo", str(tmp_path / "d"), "--model", "ltx-9"])
    assert result.exit_code == 2
    assert "choose one of ltx-2.3, ltx-2.5" in " ".join(result.output.replace("│", " ").split())
    with pytest.raises(ValueError, match="model must be one of"):
        write_demo(tmp_path / "e", model="ltx-9")  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()
    assert not (tmp_path / "e").exists()


@pytest.mark.skipif(REASON is None, reason="this ltx-core builds LTX-2.5; the refusal is for older ones")
def test_demo_25_on_an_old_ltx_core_refuses_before_writing(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["demo", str(tmp_path / "d"), "--model", "ltx-2.5"])
    assert result.exit_code == 1
    assert "LTX-2.5 needs ltx-core >= 1.2.0" in " ".join(result.output.split())
    assert not (tmp_path / "d").exists()
