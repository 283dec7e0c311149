"""Tier 2: the hooks fire inside the stock LtxvTrainer, in order, with real objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy
import pytest
import yaml

from ltx_audio_reference import bridge, hookimpl
from ltx_audio_reference.demo import write_demo
from ltx_audio_reference.registry import LoraContext, ModelContext

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
