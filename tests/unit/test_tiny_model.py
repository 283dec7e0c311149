"""Tier-1 tests of the tiny-model kit: real ltx-core models and real files, with ltx-core 1.0.0 or 1.2.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ltx_audio_reference.testing import tiny_model
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.loader import SingleGPUModelBuilder
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS, EmbeddingsProcessorConfigurator
from ltx_core.types import AudioLatentShape, VideoLatentShape

NUM_SAMPLES = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.write_synthetic_dataset(tmp_path_factory.mktemp("data"), NUM_SAMPLES)


def _load(root: Path, folder: str, index: int = 0) -> dict:
    return torch.load(root / folder / f"sample_{index:03d}.pt", map_location="cpu", weights_only=True)


def _modalities(root: Path, indices: list[int], sigma: torch.Tensor) -> tuple[Modality, Modality]:
    """Video and audio ``Modality`` inputs built from dataset files, the way ltx-trainer's strategies do."""
    conditions = [_load(root, "conditions", i) for i in indices]
    video = torch.stack([_load(root, "latents", i)["latents"] for i in indices]).float()
    audio = torch.stack([_load(root, "audio_latents", i)["latents"] for i in indices]).float()
    batch, _, frames, height, width = video.shape
    video_patchifier, audio_patchifier = VideoLatentPatchifier(patch_size=1), AudioPatchifier(patch_size=1)
    video_tokens, audio_tokens = video_patchifier.patchify(video), audio_patchifier.patchify(audio)
    mask = torch.stack([c["prompt_attention_mask"] for c in conditions])

    def modality(tokens: torch.Tensor, positions: torch.Tensor, key: str) -> Modality:
        return Modality(
            latent=tokens,
            sigma=sigma,
            timesteps=sigma[:, None].expand(batch, tokens.shape[1]),
            positions=positions.float(),
            context=torch.stack([c[key] for c in conditions]).float(),
            context_mask=mask,
        )

    video_shape = VideoLatentShape(batch=batch, channels=128, frames=frames, height=height, width=width)
    audio_shape = AudioLatentShape(batch=batch, channels=8, frames=audio.shape[2], mel_bins=16)
    return (
        modality(video_tokens, video_patchifier.get_patch_grid_bounds(video_shape), "video_prompt_embeds"),
        modality(audio_tokens, audio_patchifier.get_patch_grid_bounds(audio_shape), "audio_prompt_embeds"),
    )


def test_checkpoint_config_overrides_layers_without_touching_the_constant() -> None:
    config = tiny_model.tiny_checkpoint_config(num_layers=3)

    assert config["transformer"]["num_layers"] == 3
    assert tiny_model.TINY_TRANSFORMER_CONFIG["num_layers"] == 2
    assert "vae" in config
    assert config["transformer"]["num_attention_heads"] == config["transformer"]["audio_num_attention_heads"]
    with pytest.raises(ValueError, match="num_layers"):
        tiny_model.tiny_checkpoint_config(num_layers=0)


def test_model_is_a_real_audio_video_ltx_model_with_nonzero_weights() -> None:
    model = tiny_model.build_tiny_model(num_layers=2, dtype=torch.bfloat16)

    assert isinstance(model, LTXModel)
    assert len(model.transformer_blocks) == 2
    for name, param in model.named_parameters():
        assert param.dtype == torch.bfloat16, name
        assert torch.isfinite(param).all(), name
        assert param.abs().amax() > 0, name


def test_model_forward_backward_with_dataset_modalities(dataset: Path) -> None:
    model = tiny_model.build_tiny_model()
    video, audio = _modalities(dataset, [0, 1], sigma=torch.tensor([0.3, 0.8]))

    video_out, audio_out = model(video=video, audio=audio, perturbations=None)

    assert video_out.shape == (2, 2 * 2 * 2, 128)
    assert audio_out.shape == (2, 8, 128)
    assert torch.isfinite(video_out).all()
    assert torch.isfinite(audio_out).all()
    (video_out.square().mean() + audio_out.square().mean()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().amax() > 0, name


def test_checkpoint_metadata_parses_and_holds_every_parameter(checkpoint: Path) -> None:
    with safe_open(str(checkpoint), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
        keys = set(handle.keys())
    model = (
        LTXModelConfigurator.from_metadata({"config": config})
        if hasattr(LTXModelConfigurator, "from_metadata")
        else LTXModelConfigurator.from_config(config)
    )

    assert config == tiny_model.tiny_checkpoint_config()
    assert {f"{tiny_model.TRANSFORMER_PREFIX}{name}" for name in model.state_dict()} <= keys
    assert f"{tiny_model.FEATURE_EXTRACTOR_PREFIX}weight" in keys
    assert any(key.startswith(tiny_model.VIDEO_CONNECTOR_PREFIX) for key in keys)
    assert any(key.startswith(tiny_model.AUDIO_CONNECTOR_PREFIX) for key in keys)


def test_model_rebuilds_exactly_from_checkpoint(checkpoint: Path) -> None:
    expected = tiny_model.build_tiny_model().state_dict()

    loaded = SingleGPUModelBuilder(
        model_path=str(checkpoint),
        model_class_configurator=LTXModelConfigurator,
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
    ).build(device=torch.device("cpu"), dtype=torch.float32)

    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    other = tiny_model.build_tiny_model(seed=1)
    raw = load_file(str(checkpoint))
    other.load_state_dict({name: raw[f"{tiny_model.TRANSFORMER_PREFIX}{name}"] for name in expected}, strict=True)
    for name, tensor in expected.items():
        assert torch.equal(other.state_dict()[name], tensor), name


def test_embeddings_processor_loads_and_accepts_dataset_prompts(
    checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    if not hasattr(EmbeddingsProcessorConfigurator, "with_gemma_model_path"):
        pytest.skip("ltx-core < 1.2 sizes the feature extractor from full-size Gemma, not from the folder")
    text_encoder = tiny_model.write_text_encoder_dir(tmp_path / "gemma")

    processor = SingleGPUModelBuilder(
        model_path=str(checkpoint),
        model_class_configurator=EmbeddingsProcessorConfigurator.with_gemma_model_path(str(text_encoder)),
        model_sd_ops=EMBEDDINGS_PROCESSOR_KEY_OPS,
    ).build(device=torch.device("cpu"), dtype=torch.bfloat16)

    assert not [name for name, param in processor.named_parameters() if param.is_meta]
    conditions = _load(dataset, "conditions")
    mask = conditions["prompt_attention_mask"][None]
    additive = (mask.to(torch.int64) - 1).to(torch.bfloat16).reshape(1, 1, 1, -1) * torch.finfo(torch.bfloat16).max
    video, audio, out_mask = processor.create_embeddings(
        conditions["video_prompt_embeds"][None], conditions["audio_prompt_embeds"][None], additive
    )
    assert video.shape == (1, 128, tiny_model.TINY_TRANSFORMER_CONFIG["caption_channels"])
    assert audio.shape == video.shape
    assert out_mask.shape == (1, 128)
    assert torch.isfinite(video).all()
    assert torch.isfinite(audio).all()


def test_text_encoder_dir_is_an_offline_gemma3_folder(tmp_path: Path) -> None:
    folder = tiny_model.write_text_encoder_dir(tmp_path / "gemma")

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3"
    assert config["text_config"]["hidden_size"] == tiny_model.TINY_GEMMA_HIDDEN_SIZE
    assert config["text_config"]["num_hidden_layers"] == tiny_model.TINY_GEMMA_NUM_HIDDEN_LAYERS
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "model.safetensors"):
        assert (folder / name).is_file(), name
    gemma_assets = pytest.importorskip("ltx_core.text_encoders.gemma.gemma_assets")
    tokenizer = gemma_assets.build_gemma_hf_tokenizer(gemma_assets.GemmaAssets.load(folder))
    ids = tokenizer("a cat")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == 1 + len("a cat")
    assert tokenizer.unk_token_id not in ids


def test_dataset_files_have_the_stock_layout(dataset: Path) -> None:
    for folder in tiny_model.DATASET_FOLDERS:
        assert sorted(p.name for p in (dataset / folder).iterdir()) == [
            f"sample_{i:03d}.pt" for i in range(NUM_SAMPLES)
        ]
    for index in range(NUM_SAMPLES):
        conditions = _load(dataset, "conditions", index)
        assert set(conditions) == {"video_prompt_embeds", "audio_prompt_embeds", "prompt_attention_mask"}
        mask = conditions["prompt_attention_mask"]
        assert mask.shape == (128,)
        assert mask.dtype == torch.int64
        assert torch.equal(mask, mask.sort().values)  # left padding: zeros, then ones
        assert mask.sum() >= 1
        for key in ("video_prompt_embeds", "audio_prompt_embeds"):
            embeds = conditions[key]
            assert embeds.shape == (128, 64)
            assert embeds.dtype == torch.bfloat16
            assert torch.isfinite(embeds).all()
            assert not embeds[mask == 0].any()
            assert embeds[mask == 1].abs().sum() > 0

        video = _load(dataset, "latents", index)
        assert set(video) == {"latents", "num_frames", "height", "width", "fps"}
        assert video["latents"].shape == (128, 2, 2, 2)
        assert video["latents"].dtype == torch.bfloat16
        assert torch.isfinite(video["latents"]).all()
        assert (video["num_frames"], video["height"], video["width"]) == (2, 2, 2)
        assert video["fps"] > 0

        for folder, steps in (("audio_latents", 8), ("reference_audio_latents", 5)):
            audio = _load(dataset, folder, index)
            assert set(audio) == {"latents", "num_time_steps", "frequency_bins", "duration"}
            assert audio["latents"].shape == (8, steps, 16)
            assert audio["latents"].dtype == torch.float32
            assert torch.isfinite(audio["latents"]).all()
            assert (audio["num_time_steps"], audio["frequency_bins"]) == (steps, 16)
            assert audio["duration"] == pytest.approx(steps * 0.04)


def test_dataset_reference_fn_makes_the_target_from_the_reference(tmp_path: Path) -> None:
    def repeat_reference(reference: torch.Tensor, num_time_steps: int) -> torch.Tensor:
        return reference.repeat(1, 2, 1)[:, :num_time_steps]

    root = tiny_model.write_synthetic_dataset(
        tmp_path, 2, audio_steps=6, reference_steps=4, reference_fn=repeat_reference
    )

    for index in range(2):
        reference = _load(root, "reference_audio_latents", index)["latents"]
        target = _load(root, "audio_latents", index)["latents"]
        assert torch.equal(target, repeat_reference(reference, 6))


def test_dataset_without_reference_and_invalid_arguments(tmp_path: Path) -> None:
    root = tiny_model.write_synthetic_dataset(tmp_path / "plain", 1, with_reference=False)
    assert not (root / "reference_audio_latents").exists()
    assert (root / "audio_latents" / "sample_000.pt").is_file()

    with pytest.raises(ValueError, match="multiple of 128"):
        tiny_model.write_synthetic_dataset(tmp_path / "bad", 1, prompt_len=100)
    with pytest.raises(ValueError, match="with_reference"):
        tiny_model.write_synthetic_dataset(tmp_path / "bad", 1, with_reference=False, reference_fn=lambda r, _: r)
    with pytest.raises(ValueError, match="shape"):
        tiny_model.write_synthetic_dataset(tmp_path / "bad", 1, reference_fn=lambda r, _: r)


def test_everything_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    first, again, other = (tiny_model.build_tiny_model(seed=s).state_dict() for s in (7, 7, 8))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not any(torch.equal(first[k], other[k]) for k in first)
    three_blocks = tiny_model.build_tiny_model(num_layers=3, seed=7).state_dict()
    assert all(torch.equal(first[k], three_blocks[k]) for k in first)  # weights do not depend on num_layers

    # Compare contents: safetensors may order the metadata differently from one write to the next.
    a, b = (load_file(str(tiny_model.write_tiny_checkpoint(tmp_path / f"{n}.safetensors", seed=7))) for n in "ab")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    roots = [
        tiny_model.write_synthetic_dataset(tmp_path / name, 2, seed=s) for name, s in (("x", 3), ("y", 3), ("z", 4))
    ]
    for folder in tiny_model.DATASET_FOLDERS:
        x, y, z = (_load(root, folder, 1) for root in roots)
        for key, value in x.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, y[key]), (folder, key)
        tensor_key = "video_prompt_embeds" if folder == "conditions" else "latents"
        assert not torch.equal(x[tensor_key], z[tensor_key]), folder


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_checkpoint_written_tensor_by_tensor_in_half_precision_holds_the_models_weights(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    """The writer streams one tensor at a time (how a 44 GB full-scale file is written); its safetensors file parses
    with the library's own reader and holds exactly the in-memory model's weights, rounded once to ``dtype``."""
    path = tiny_model.write_tiny_checkpoint(tmp_path / "half.safetensors", num_layers=3, dtype=dtype)
    tensors = load_file(str(path))
    model = tiny_model.build_tiny_model(num_layers=3)
    expected = {f"{tiny_model.TRANSFORMER_PREFIX}{k}": v.to(dtype) for k, v in model.state_dict().items()}
    assert expected.keys() <= tensors.keys()
    for key, value in expected.items():
        assert tensors[key].dtype == dtype
        assert torch.equal(tensors[key], value), key
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["transformer"]["num_layers"] == 3
    with pytest.raises(ValueError, match="dtype must be one of"):
        tiny_model.write_tiny_checkpoint(tmp_path / "int.safetensors", dtype=torch.int8)
