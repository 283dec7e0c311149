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


@pytest.fixture(scope="module")
def demo25_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LTX-2.5 demo (split pack), for the configs that name a split pack's four files."""
    from ltx_audio_reference.testing import tiny_ltx25  # noqa: PLC0415

    if (reason := tiny_ltx25.ltx25_supported() or tiny_ltx25.gemma4_supported()) is not None:
        pytest.skip(reason)
    return write_demo(tmp_path_factory.mktemp("configs_demo25"), steps=1, num_samples=2, model="ltx-2.5").parent


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_loads_through_the_stock_model(
    path: Path, request: pytest.FixtureRequest, fresh_pm: pluggy.PluginManager
) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    data = yaml.safe_load(path.read_text())
    # The configs point at real model and data paths; swap in a demo's of the same layout so the path validators
    # pass: a split pack (LTX-2.5) names its VAE files, a monolith (LTX-2.3) does not.
    split = "video_vae_path" in data["model"]
    root = request.getfixturevalue("demo25_root" if split else "demo_root")
    demo = yaml.safe_load((root / "config.yaml").read_text())["model"]
    assert set(data["model"]) == set(demo), "the config names the components a demo of its layout names"
    data["model"].update({k: v for k, v in demo.items() if k.endswith("_path")})
    data["data"]["preprocessed_data_root"] = str(root / "data")
    bridge.uninstall()
    try:
        bridge.install(fresh_pm)
        config = LtxTrainerConfig(**data)
    finally:
        bridge.uninstall()
    assert config.training_strategy.name == data["training_strategy"]["name"]
    assert config.model_dump()["training_strategy"] == config.training_strategy.model_dump()
