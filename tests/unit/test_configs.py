"""Every training YAML in configs/ validates its plugin sections through the real config classes (tier 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ltx_audio_reference.blockswap.config import BlockSwapConfig
from ltx_audio_reference.plugins import build_plugin_manager, collect_strategies

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINING_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml"))


def test_there_are_training_configs() -> None:
    assert TRAINING_CONFIGS


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_strategy_section_validates(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    registry = collect_strategies(build_plugin_manager())
    section = data["training_strategy"]
    config = registry.get(section["name"]).config_cls.model_validate(section)
    assert config.name == section["name"]
    assert data["lora"]["alpha"] == data["lora"]["rank"]


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_block_swap_section_validates(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    if "block_swap" in data:
        BlockSwapConfig.model_validate(data["block_swap"])


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_is_indexed(path: Path) -> None:
    index = (CONFIGS / "README.md").read_text()
    assert f"`{path.relative_to(CONFIGS)}`" in index
