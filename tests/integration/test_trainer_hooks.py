"""Tier 2: the hooks fire inside the stock LtxvTrainer, in order, with real objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy
import pytest
import torch
import yaml
from safetensors import safe_open

from ltx_audio_reference import bridge, hookimpl
from ltx_audio_reference.registry import CheckpointContext, LoraContext, ModelContext
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def validate_config(self, config: Any) -> None:  # noqa: ANN401
        self.events.append(("validate_config", config.training_strategy.name))

    @hookimpl(trylast=True)
    def configure_lora(self, context: LoraContext) -> None:
        self.events.append(("configure_lora", list(context.target_modules)))

    @hookimpl(trylast=True)
    def configure_model(self, context: ModelContext) -> None:
        trainable = [n for n, p in context.model.named_parameters() if p.requires_grad]
        self.events.append(("configure_model", (trainable, dict(context.notes), str(context.device))))


@pytest.fixture
def recorder(fresh_pm: pluggy.PluginManager) -> Any:  # noqa: ANN401
    rec = _Recorder()
    fresh_pm.register(rec, name="recorder")
    bridge.uninstall()
    bridge.install(fresh_pm)
    yield rec
    bridge.uninstall()


def test_hooks_fire_in_order_inside_the_stock_trainer(recorder: _Recorder, tmp_path: Path) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    config = yaml.safe_load(write_demo(tmp_path / "demo", steps=1, num_samples=2).read_text())
    trainer = LtxvTrainer(LtxTrainerConfig(**config))

    assert [name for name, _ in recorder.events] == ["validate_config", "configure_lora", "configure_model"]
    assert recorder.events[0][1] == "audio_reference"
    targets = recorder.events[1][1]
    assert len(targets) == 20
    assert targets[0] == "transformer_blocks.0.audio_attn1.to_q"
    assert all(".audio_" in t for t in targets)
    # The trainer really used the expanded list (the saved training config shows it too).
    assert trainer._config.lora.target_modules == targets

    trainable, notes, device = recorder.events[2][1]
    assert len(trainable) == 40
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert notes["lora_trainable_tensors"] == 40  # the built-in plugin's check ran first
    assert device == "cpu"


class _Probe:
    """An on_checkpoint plugin that measures the loss on two fixed samples, drawing fresh random noise."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    @hookimpl
    def on_checkpoint(self, context: CheckpointContext) -> None:
        batch = context.collate([context.dataset[0], context.dataset[1]])
        torch.randn(1000)  # consumes the global RNG; the bridge must isolate it from training
        loss = context.loss_fn(batch)
        assert loss.shape == (2,)
        assert not loss.requires_grad
        self.steps.append(context.step)
        context.metrics["probe_loss"] = float(loss.mean())


def _train(tmp_path: Path, pm: pluggy.PluginManager) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    bridge.uninstall()
    bridge.install(pm)
    try:
        config = yaml.safe_load(write_demo(tmp_path, steps=4, num_samples=4).read_text())
        torch.manual_seed(0)  # peft draws lora_A before the trainer seeds; in-process runs need the same start
        saved, _ = LtxvTrainer(LtxTrainerConfig(**config)).train(disable_progress_bars=True)
    finally:
        bridge.uninstall()
    with safe_open(str(saved), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def test_on_checkpoint_metrics_reach_metadata_without_touching_training(tmp_path: Path) -> None:
    from ltx_audio_reference import plugins  # noqa: PLC0415

    plain_weights, plain_metadata = _train(tmp_path / "plain", plugins.build_plugin_manager())
    pm = plugins.build_plugin_manager()
    probe = _Probe()
    pm.register(probe, name="probe")
    probed_weights, probed_metadata = _train(tmp_path / "probed", pm)

    assert probe.steps == [2, 4]  # every interval; the final save of step 4 reuses the interval save
    assert "probe_loss" not in plain_metadata
    assert 0 < float(probed_metadata["probe_loss"]) < 100
    assert plain_weights.keys() == probed_weights.keys()
    for key, tensor in plain_weights.items():
        assert torch.equal(tensor, probed_weights[key]), key


def test_the_text_connectors_are_frozen_so_no_gradient_flows_into_the_text_context(
    fresh_pm: pluggy.PluginManager, tmp_path: Path
) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    bridge.uninstall()
    bridge.install(fresh_pm)
    try:
        config = yaml.safe_load(write_demo(tmp_path / "demo", steps=2, num_samples=2).read_text())
        trainer = LtxvTrainer(LtxTrainerConfig(**config))
        connectors = list(trainer._embeddings_processor.parameters())
        assert connectors
        assert not any(p.requires_grad for p in connectors)
        contexts: list[bool] = []

        def record(module: torch.nn.Module, args: Any, output: Any) -> None:  # noqa: ANN401
            if torch.is_grad_enabled():
                contexts.extend(modality.context.requires_grad for modality in output)

        model = trainer._transformer.get_base_model()
        handle = model.transformer_blocks[0].register_forward_hook(record)
        trainer.train(disable_progress_bars=True)
        handle.remove()
    finally:
        bridge.uninstall()
    assert contexts == [False, False] * 2  # video and audio, two steps
    assert all(p.grad is None for p in connectors)
