"""Tier 1: LoRA presets expanded over a real tiny LTX-2 model and applied with real peft."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ltx_audio_reference.reliability.checkpoints import safetensors_shapes
from ltx_audio_reference.strategies.audio_reference import inputs as ar_inputs
from ltx_audio_reference.strategies.audio_reference import loss as ar_loss
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig
from ltx_audio_reference.strategies.audio_reference.lora_targets import (
    AUDIO_MODULES,
    BRIDGE_MODULES,
    TrainableParameterError,
    assert_only_allowed_trainable,
    checkpoint_modules,
    custom_target_problems,
    expand_lora_targets,
    preset_target_problem,
)
from ltx_audio_reference.testing import tiny_ltx25
from ltx_audio_reference.testing.tiny_model import build_tiny_model, write_tiny_checkpoint
from ltx_core.model.transformer.model import LTXModel, LTXModelType

STOCK_DEFAULT_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def _wrap(model: torch.nn.Module, targets: list[str]) -> torch.nn.Module:
    model.requires_grad_(False)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=True))


def _lora_modules(model: torch.nn.Module) -> set[str]:
    names = {name.removeprefix("base_model.model.") for name, m in model.named_modules() if hasattr(m, "lora_A")}
    return {n for n in names if n}


def test_audio_preset_names_ten_linears_per_block() -> None:
    assert len(AUDIO_MODULES) == 10
    model = build_tiny_model(num_layers=2)
    names = expand_lora_targets(model, "audio")
    assert len(names) == 20
    assert names[0] == "transformer_blocks.0.audio_attn1.to_q"
    assert {n.split(".", 2)[2] for n in names} == set(AUDIO_MODULES)
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in names)


def test_audio_preset_on_48_blocks_gives_960_lora_tensors() -> None:
    model = build_tiny_model(num_layers=48)
    names = expand_lora_targets(model, "audio")
    assert len(names) == 480
    wrapped = _wrap(model, names)
    lora_tensors = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert len(lora_tensors) == 960
    assert all(".lora_A." in n or ".lora_B." in n for n in lora_tensors)


def test_peft_wraps_exactly_the_audio_modules() -> None:
    model = build_tiny_model(num_layers=2)
    names = expand_lora_targets(model, "audio")
    wrapped = _wrap(model, names)
    assert _lora_modules(wrapped) == set(names)
    video_or_bridge = re.compile(r"\.(attn1|attn2|ff|audio_to_video_attn|video_to_audio_attn)\.")
    assert not any(video_or_bridge.search(n) for n in _lora_modules(wrapped))
    assert assert_only_allowed_trainable(wrapped, "audio") == 40


def test_audio_plus_bridges_adds_the_cross_modal_attentions() -> None:
    model = build_tiny_model(num_layers=2)
    names = expand_lora_targets(model, "audio+bridges")
    assert len(names) == 2 * (len(AUDIO_MODULES) + len(BRIDGE_MODULES)) == 36
    wrapped = _wrap(model, names)
    assert _lora_modules(wrapped) == set(names)
    assert "transformer_blocks.1.video_to_audio_attn.to_out.0" in _lora_modules(wrapped)
    assert not any(re.search(r"\.(attn1|attn2|ff)\.", n) for n in _lora_modules(wrapped))
    assert_only_allowed_trainable(wrapped, "audio+bridges")
    with pytest.raises(TrainableParameterError, match="audio_to_video_attn"):
        assert_only_allowed_trainable(wrapped, "audio")


def test_custom_preset_uses_target_modules_as_written() -> None:
    model = build_tiny_model(num_layers=2)
    assert expand_lora_targets(model, "custom", ["audio_attn1.to_q"]) == ["audio_attn1.to_q"]
    wrapped = _wrap(model, ["audio_attn1.to_q"])
    assert assert_only_allowed_trainable(wrapped, "custom", ["audio_attn1.to_q"]) == 4
    with pytest.raises(ValueError, match=r"lora\.target_modules"):
        expand_lora_targets(model, "custom")


def test_stock_default_targets_fail_the_audio_check_and_name_the_offenders() -> None:
    wrapped = _wrap(build_tiny_model(num_layers=2), STOCK_DEFAULT_TARGETS)
    with pytest.raises(TrainableParameterError) as excinfo:
        assert_only_allowed_trainable(wrapped, "audio")
    message = str(excinfo.value)
    assert "transformer_blocks.0.attn1.to_q.lora_A.default.weight" in message
    assert "audio_attn1" not in message


def test_unfrozen_base_weight_is_reported() -> None:
    model = build_tiny_model(num_layers=2)
    wrapped = _wrap(model, expand_lora_targets(model, "audio"))
    wrapped.get_submodule("base_model.model.transformer_blocks.1.ff.net.2").weight.requires_grad_(True)
    with pytest.raises(TrainableParameterError, match=r"transformer_blocks\.1\.ff\.net\.2\.weight"):
        assert_only_allowed_trainable(wrapped, "audio")


def test_nothing_trainable_is_an_error_unless_allowed() -> None:
    model = build_tiny_model(num_layers=1).requires_grad_(False)
    with pytest.raises(TrainableParameterError, match="No LoRA parameter"):
        assert_only_allowed_trainable(model, "audio")
    assert assert_only_allowed_trainable(model, "audio", require_any=False) == 0


def test_video_only_model_cannot_take_the_audio_preset() -> None:
    model = LTXModel(
        model_type=LTXModelType.VideoOnly,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        cross_attention_dim=32,
    )
    with pytest.raises(ValueError, match="lacks"):
        expand_lora_targets(model, "audio")
    with pytest.raises(ValueError, match="no 'transformer_blocks'"):
        expand_lora_targets(torch.nn.Linear(2, 2), "audio")


def test_gradients_reach_only_audio_lora_parameters() -> None:
    model = build_tiny_model(num_layers=2)
    wrapped = _wrap(model, expand_lora_targets(model, "audio"))
    # Non-zero B so that both LoRA factors get a gradient.
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if ".lora_B." in name:
                param.normal_(0.0, 0.1)
    g = torch.Generator().manual_seed(0)
    inputs = ar_inputs.prepare_audio_reference_inputs(
        video_tokens=torch.randn(2, 8, 128, generator=g),
        video_grid=ar_inputs.VideoGrid(frames=2, height=2, width=2, fps=24.0),
        audio_tokens=torch.randn(2, 8, 128, generator=g),
        reference_tokens=torch.randn(2, 5, 128, generator=g),
        video_context=torch.randn(2, 128, 64, generator=g),
        audio_context=torch.randn(2, 128, 64, generator=g),
        context_mask=torch.ones(2, 128, dtype=torch.int64),
        sample_sigmas=lambda x: torch.full((x.shape[0],), 0.5),
        options=AudioReferenceConfig(),
        generator=g,
    )
    video_pred, audio_pred = wrapped(video=inputs.video, audio=inputs.audio, perturbations=None)
    loss = ar_loss.audio_reference_loss(
        video_pred=video_pred,
        audio_pred=audio_pred,
        video_targets=inputs.video_targets,
        video_loss_mask=inputs.video_loss_mask,
        audio_targets=inputs.audio_targets,
        audio_loss_mask=inputs.audio_loss_mask,
    )
    loss.mean().backward()
    with_grad = {n for n, p in wrapped.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert len(with_grad) == 40
    assert all(wrapped.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)


LTX25_REASON = tiny_ltx25.ltx25_supported()
needs_ltx25 = pytest.mark.skipif(LTX25_REASON is not None, reason=LTX25_REASON or "")


@needs_ltx25
@pytest.mark.parametrize("num_layers", [2, 48])
def test_audio_preset_count_on_ltx25_follows_the_models_block_count(num_layers: int) -> None:
    model = tiny_ltx25.build_tiny_ltx25_model(num_layers=num_layers)
    blocks = len(model.transformer_blocks)
    names = expand_lora_targets(model, "audio")
    assert len(names) == blocks * len(AUDIO_MODULES)
    wrapped = _wrap(model, names)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * blocks * len(AUDIO_MODULES) == assert_only_allowed_trainable(wrapped, "audio")
    if num_layers == 48:  # the real LTX-2.5 22B's depth, like LTX-2.3's
        assert len(trainable) == 960


@needs_ltx25
def test_ltx25_blocks_have_the_23_module_set_whose_gates_the_presets_leave_out() -> None:
    def linears(block: torch.nn.Module) -> set[str]:
        return {n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}

    block25 = tiny_ltx25.build_tiny_ltx25_model(num_layers=1).transformer_blocks[0]
    block23 = build_tiny_model(
        num_layers=1, overrides={"apply_gated_attention": True, "cross_attention_adaln": True}
    ).transformer_blocks[0]
    assert linears(block25) == linears(block23)  # same Linear layers as an LTX-2.3 22B block
    gates = {n for n in linears(block25) if n.endswith(".to_gate_logits")}
    attentions = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
    assert gates == {f"{a}.to_gate_logits" for a in attentions}
    assert not gates & set(AUDIO_MODULES + BRIDGE_MODULES)
    assert block25.ff.net[0].proj.bias is None  # what 2.5 changes: no video feed-forward biases
    assert block25.ff.net[2].bias is None
    assert block25.audio_ff.net[2].bias is not None

    model = tiny_ltx25.build_tiny_ltx25_model(num_layers=2)
    wrapped = _wrap(model, [*expand_lora_targets(model, "audio"), "transformer_blocks.1.audio_attn1.to_gate_logits"])
    with pytest.raises(TrainableParameterError, match=r"transformer_blocks\.1\.audio_attn1\.to_gate_logits\.lora_A"):
        assert_only_allowed_trainable(wrapped, "audio")


# ---------------------------------------------------------------------------------------------------------------
# Targets checked before the model loads
# ---------------------------------------------------------------------------------------------------------------


def test_a_preset_refuses_a_written_list_it_would_replace() -> None:
    assert preset_target_problem("audio", list(reversed(AUDIO_MODULES))) is None  # the preset's own list agrees
    problem = preset_target_problem("audio", [*AUDIO_MODULES, "audio_to_video_attn.to_q"])
    assert problem == (
        "lora.target_modules names audio_to_video_attn.to_q, which lora_preset 'audio' does not adapt; the preset "
        "sets the LoRA targets itself, so they would be dropped. To fix: set lora_preset: audio+bridges and remove "
        "lora.target_modules (that preset adapts them); or set lora_preset: custom to adapt exactly "
        "lora.target_modules; or remove lora.target_modules"
    )
    assert "audio+bridges" not in preset_target_problem("audio+bridges", ["audio_attn1.to_z"]).split("To fix:")[1]
    assert preset_target_problem("audio", ["audio_attn1.to_q"]) == (
        "lora.target_modules names 1 of the 10 modules per block that lora_preset 'audio' adapts; the preset sets the "
        "LoRA targets itself, so all 10 would be adapted. Set lora_preset: custom to adapt only lora.target_modules, "
        "or remove lora.target_modules"
    )


@pytest.fixture(scope="module")
def checkpoint_module_names(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", num_layers=2)
    return checkpoint_modules(safetensors_shapes(Path(path)))


@pytest.mark.parametrize(
    "targets",
    [["audio_attn1.to_q", "audio_ff.net.2"], ["transformer_blocks.1.audio_attn2.to_out.0"], ["to_v"]],
)
def test_targets_the_header_accepts_are_found_by_peft(checkpoint_module_names: dict[str, int], targets: list) -> None:
    assert custom_target_problems(targets, checkpoint_module_names, "tiny.safetensors") == []
    _wrap(build_tiny_model(num_layers=2), targets)  # peft finds them in the real model


def test_targets_the_header_refuses_are_the_ones_peft_rejects(checkpoint_module_names: dict[str, int]) -> None:
    problems = custom_target_problems(
        ["audio_attn1.to_z", "audio_attn1.q_norm", "audio_ff.net.2"], checkpoint_module_names, "tiny.safetensors"
    )
    assert problems == [
        "lora.target_modules: 'audio_attn1.to_z' matches no module of the transformer in tiny.safetensors (peft takes "
        "a module's name or a '.'-suffix of it, e.g. audio_attn1.to_q). Did you mean audio_attn1.to_v, "
        "audio_attn1.to_q, audio_attn1.to_k? Fix the name, or use lora_preset: audio",
        "lora.target_modules: 'audio_attn1.q_norm' matches only transformer_blocks.0.audio_attn1.q_norm, "
        "transformer_blocks.1.audio_attn1.q_norm, whose weight has one dimension (a norm layer), which peft's LoRA "
        "cannot adapt. Name Linear layers (to_q, to_k, to_v, to_out.0, net.0.proj, net.2)",
    ]
    for bad in (["audio_attn1.to_z"], ["audio_attn1.q_norm"]):
        with pytest.raises(ValueError):  # noqa: PT011 - peft's own message differs by case
            _wrap(build_tiny_model(num_layers=2), bad)
    # The text connectors live in the checkpoint but not in the transformer peft wraps.
    assert not any("embeddings_connector" in name for name in checkpoint_module_names)
