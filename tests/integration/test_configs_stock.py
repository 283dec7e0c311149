"""Tier 2: every training YAML in configs/ loads through the stock LtxTrainerConfig (bridge installed)."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest
import yaml

from ltx_audio_reference import bridge
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("configs_demo"), steps=1, num_samples=2).parent


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_loads_through_the_stock_model(path: Path, demo_root: Path, fresh_pm: pluggy.PluginManager) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    data = yaml.safe_load(path.read_text())
    # The configs point at real model and data paths; swap in the demo's so the path validators pass.
    data["model"]["model_path"] = str(demo_root / "tiny_ltx2.safetensors")
    data["model"]["text_encoder_path"] = str(demo_root / "text_encoder")
    data["data"]["preprocessed_data_root"] = str(demo_root / "data")
    bridge.uninstall()
    try:
        bridge.install(fresh_pm)
        config = LtxTrainerConfig(**data)
    finally:
        bridge.uninstall()
    assert config.training_strategy.name == data["training_strategy"]["name"]
    assert config.model_dump()["training_strategy"] == config.training_strategy.model_dump()
