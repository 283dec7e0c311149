"""Registries: duplicates rejected, lookups list what exists, lazy references, metadata encoding."""

from __future__ import annotations

import sys

import pytest
import torch
from pydantic import Field

from ltx_audio_reference.registry import (
    CheckpointMetadata,
    ConditionerRegistry,
    ConfigFieldRegistry,
    DuplicateNameError,
    StrategyRegistry,
    UnknownNameError,
    resolve,
)


class _Cfg:
    pass


def test_duplicate_strategy_names_both_plugins() -> None:
    registry = StrategyRegistry()
    registry.current_plugin = "first"
    registry("mine", _Cfg, _Cfg)
    registry.current_plugin = "second"
    with pytest.raises(DuplicateNameError, match=r"'mine'.*'first'.*'second'"):
        registry("mine", _Cfg, _Cfg)


@pytest.mark.parametrize("name", ["text_to_video", "video_to_video", "flexible"])
def test_stock_strategy_names_cannot_be_taken(name: str) -> None:
    with pytest.raises(DuplicateNameError, match="built into ltx-trainer"):
        StrategyRegistry()(name, _Cfg, _Cfg)


@pytest.mark.parametrize("name", ["Audio", "audio-reference", "2x", ""])
def test_strategy_names_must_be_lowercase_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="lowercase identifier"):
        StrategyRegistry()(name, _Cfg, _Cfg)


def test_unknown_strategy_lists_every_available_name() -> None:
    registry = StrategyRegistry()
    registry("mine", _Cfg, _Cfg)
    with pytest.raises(UnknownNameError) as info:
        registry.get("nope")
    assert info.value.args[0] == (
        "Unknown training strategy 'nope'. Available: text_to_video, video_to_video, flexible, mine"
    )


def test_string_references_are_imported_only_when_used() -> None:
    registry = StrategyRegistry()
    registry("lazy", "not_a_real_module_xyz:Config", "not_a_real_module_xyz:Strategy")
    entry = registry.get("lazy")  # registering and listing import nothing
    assert "not_a_real_module_xyz" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        _ = entry.config_cls


def test_resolve_reports_bad_references() -> None:
    assert resolve("collections:OrderedDict").__name__ == "OrderedDict"
    assert resolve("os.path:join.__name__") == "join"
    with pytest.raises(ImportError, match=r"package\.module:attribute"):
        resolve("collections.OrderedDict")
    with pytest.raises(ImportError, match="no attribute 'Nope'"):
        resolve("collections:Nope")


def test_for_config_finds_the_entry_by_config_class() -> None:
    registry = StrategyRegistry()
    registry("mine", _Cfg, _Cfg)
    assert registry.for_config(_Cfg()).name == "mine"
    assert registry.for_config(object()) is None


def test_checkpoint_metadata_json_encodes_non_strings() -> None:
    metadata = CheckpointMetadata({"a": "audio", "gap": 0.04, "flag": True, "rank": 32})
    metadata.add("nested", {"k": [1, 2]})
    assert metadata.to_dict() == {
        "a": "audio",
        "gap": "0.04",
        "flag": "true",
        "rank": "32",
        "nested": '{"k": [1, 2]}',
    }


def test_checkpoint_metadata_rejects_conflicting_values() -> None:
    metadata = CheckpointMetadata({"rank": 4})
    metadata.add("rank", 4)  # same value: fine
    with pytest.raises(DuplicateNameError, match="'rank'"):
        metadata.add("rank", 8)
    metadata.add("rank", 8, overwrite=True)
    assert metadata.to_dict()["rank"] == "8"


def test_config_field_registry_rejects_duplicates_and_bad_owners() -> None:
    registry = ConfigFieldRegistry()
    registry("acceleration", "block_swap_blocks", int | None, Field(default=None))
    with pytest.raises(DuplicateNameError, match=r"acceleration\.block_swap_blocks"):
        registry("acceleration", "block_swap_blocks", int | None, Field(default=None))
    with pytest.raises(ValueError, match="'root' or 'acceleration'"):
        registry("optimization", "x", int, Field(default=0))  # type: ignore[arg-type]
    assert len(registry) == 1


def test_conditioner_registry_lookup_and_duplicates() -> None:
    registry = ConditionerRegistry()

    def place(ref: torch.Tensor, target: torch.Tensor, cfg: object) -> tuple[torch.Tensor, float]:
        return target, 0.0

    registry("mine", "audio", place)
    assert registry.get("mine", "audio") is place
    assert registry.get("mine", "video") is None
    with pytest.raises(DuplicateNameError):
        registry("mine", "audio", place)
    with pytest.raises(ValueError, match="'audio' or 'video'"):
        registry("mine", "text", place)  # type: ignore[arg-type]
