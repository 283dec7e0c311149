"""Block-swap config: parsing, merging the seed's key, validation before model load, and ``auto`` sizing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError, create_model
from safetensors.torch import save_file

from ltx_audio_reference import plugins
from ltx_audio_reference.blockswap import plugin as hooks
from ltx_audio_reference.blockswap.config import (
    GB,
    BlockSwapConfig,
    estimate_peak,
    num_blocks_from_checkpoint,
    plan_auto,
    resolve_block_swap,
    slot_count,
    spread_blocks,
    validate_block_swap,
)
from ltx_audio_reference.registry import ConfigFieldRegistry, ModelContext


def trainer_config(
    *,
    section: BlockSwapConfig | None = None,
    seed: int | None = None,
    training_mode: str = "lora",
    checkpointing: bool = True,
    quantization: str | None = "int8-quanto",
    model_path: str = "missing.safetensors",
) -> SimpleNamespace:
    """The parts of ``LtxTrainerConfig`` block swap reads."""
    return SimpleNamespace(
        block_swap=section,
        acceleration=SimpleNamespace(block_swap_blocks=seed, quantization=quantization),
        model=SimpleNamespace(training_mode=training_mode, model_path=model_path),
        optimization=SimpleNamespace(enable_gradient_checkpointing=checkpointing),
    )


# --------------------------------------------------------------------------------------------------------------------
# BlockSwapConfig
# --------------------------------------------------------------------------------------------------------------------


def test_config_defaults_to_auto_without_a_budget_until_merged() -> None:
    config = BlockSwapConfig()
    assert config.blocks_to_swap == "auto"
    assert config.prefetch == 1
    assert config.pin_memory is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"blocks_to_swap": -1}, "0 turns block swap off"),
        ({"blocks_to_swap": True}, "not a boolean"),
        ({"blocks_to_swap": "all"}, "auto"),
        ({"blocks_to_swap": "auto"}, "needs block_swap.max_vram_gb"),
        ({"blocks_to_swap": 12, "max_vram_gb": 12}, "remove max_vram_gb or set blocks_to_swap: auto"),
        ({"prefetch": 0}, "greater than or equal to 1"),
        ({"max_vram_gb": 0}, "greater than 0"),
        ({"blocks_swap": 3}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values_with_a_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BlockSwapConfig(**kwargs)


def test_config_accepts_auto_with_a_budget() -> None:
    config = BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=12)
    assert config.is_auto


def test_registered_fields_parse_the_seed_key_and_the_section() -> None:
    registry = ConfigFieldRegistry()
    hooks.register_config_fields(registry)
    fields = {(e.owner, e.name): e for e in registry}
    assert set(fields) == {
        ("acceleration", "block_swap_blocks"),
        ("acceleration", "compile_blocks"),
        ("acceleration", "cuda_graphs"),
        ("root", "block_swap"),
    }
    compile_field = fields[("acceleration", "compile_blocks")]
    compiled = create_model("Acceleration", compile_blocks=(compile_field.annotation, compile_field.field))
    assert compiled.model_validate({}).compile_blocks is False
    assert compiled.model_validate({"compile_blocks": True}).compile_blocks is True
    assert compiled.model_validate({"compile_blocks": "auto"}).compile_blocks == "auto"
    with pytest.raises(ValidationError):
        compiled.model_validate({"compile_blocks": "sometimes"})
    graphs_field = fields[("acceleration", "cuda_graphs")]
    graphs = create_model("Acceleration", cuda_graphs=(graphs_field.annotation, graphs_field.field))
    assert graphs.model_validate({}).cuda_graphs is False
    assert graphs.model_validate({"cuda_graphs": "auto"}).cuda_graphs == "auto"
    with pytest.raises(ValidationError):
        graphs.model_validate({"cuda_graphs": "always"})

    seed_field = fields[("acceleration", "block_swap_blocks")]
    acceleration = create_model("Acceleration", block_swap_blocks=(seed_field.annotation, seed_field.field))
    assert acceleration.model_validate({"block_swap_blocks": 24}).block_swap_blocks == 24
    assert acceleration.model_validate({}).block_swap_blocks is None
    with pytest.raises(ValidationError, match="0 turns block swap off"):
        acceleration.model_validate({"block_swap_blocks": -2})

    section_field = fields[("root", "block_swap")]
    root = create_model("Root", block_swap=(section_field.annotation, section_field.field))
    parsed = root.model_validate({"block_swap": {"blocks_to_swap": "auto", "max_vram_gb": 22, "prefetch": 2}})
    assert parsed.block_swap.max_vram_gb == 22
    assert parsed.block_swap.prefetch == 2


def test_the_plugin_is_loaded_from_its_entry_point() -> None:
    pm = plugins.build_plugin_manager()
    assert pm.get_plugin(hooks.PLUGIN_NAME) is not None
    names = {(e.owner, e.name) for e in plugins.collect(ConfigFieldRegistry, pm)}
    assert ("acceleration", "block_swap_blocks") in names
    assert ("root", "block_swap") in names


# --------------------------------------------------------------------------------------------------------------------
# Merging and validation
# --------------------------------------------------------------------------------------------------------------------


def test_resolve_takes_the_seed_key() -> None:
    swap = resolve_block_swap(trainer_config(seed=24))
    assert swap is not None
    assert swap.blocks_to_swap == 24


@pytest.mark.parametrize("config", [None, trainer_config(), trainer_config(seed=0)])
def test_resolve_is_off_when_nothing_asks_for_swap(config: object) -> None:
    assert resolve_block_swap(config) is None


def test_resolve_merges_the_seed_key_into_a_section_without_a_count() -> None:
    swap = resolve_block_swap(trainer_config(section=BlockSwapConfig(prefetch=2), seed=30))
    assert swap is not None
    assert (swap.blocks_to_swap, swap.prefetch) == (30, 2)


def test_resolve_accepts_agreeing_keys_and_rejects_disagreeing_ones() -> None:
    agree = resolve_block_swap(trainer_config(section=BlockSwapConfig(blocks_to_swap=24), seed=24))
    assert agree is not None
    with pytest.raises(ValueError, match="keep only one of them"):
        resolve_block_swap(trainer_config(section=BlockSwapConfig(blocks_to_swap=20), seed=24))
    with pytest.raises(ValueError, match="remove one of them"):
        resolve_block_swap(trainer_config(section=BlockSwapConfig(max_vram_gb=12), seed=24))


def test_resolve_needs_a_count_or_a_budget() -> None:
    with pytest.raises(ValueError, match="needs blocks_to_swap"):
        resolve_block_swap(trainer_config(section=BlockSwapConfig(prefetch=2)))


def test_resolve_treats_zero_blocks_as_off() -> None:
    assert resolve_block_swap(trainer_config(section=BlockSwapConfig(blocks_to_swap=0))) is None


def test_validate_passes_a_good_config() -> None:
    swap = validate_block_swap(trainer_config(seed=24), num_blocks=48, distributed_type="MULTI_GPU")
    assert swap is not None
    assert swap.blocks_to_swap == 24


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (trainer_config(seed=60), {"num_blocks": 48}, "use at most 48"),
        (trainer_config(seed=24), {"distributed_type": "FSDP"}, "cannot run with FSDP"),
        (trainer_config(seed=24), {"distributed_type": SimpleNamespace(value="FSDP")}, "cannot run with FSDP"),
        (trainer_config(seed=24), {"distributed_type": "DEEPSPEED"}, "cannot run with DeepSpeed"),
        (trainer_config(seed=24), {"cuda_available": False}, "none is available"),
        (trainer_config(seed=24, training_mode="full"), {}, "training_mode: lora"),
        (trainer_config(seed=24, checkpointing=False), {}, "enable_gradient_checkpointing: true"),
        (
            trainer_config(seed=24, quantization="int4-quanto"),
            {},
            "int4-quanto weights are repacked.*quantization: int8",
        ),
    ],
)
def test_validate_rejects_before_the_model_loads(config: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_block_swap(config, **kwargs)


def test_validate_accepts_a_bare_section() -> None:
    swap = validate_block_swap(BlockSwapConfig(blocks_to_swap=4), num_blocks=4)
    assert swap is not None


def test_validate_config_hook_reads_the_block_count_from_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    save_file({"x": torch.zeros(1)}, checkpoint, metadata={"config": json.dumps({"transformer": {"num_layers": 4}})})
    with pytest.raises(ValueError, match="model has 4 transformer blocks"):
        hooks.validate_config(trainer_config(seed=6, model_path=str(checkpoint)))
    hooks.validate_config(trainer_config())  # nothing configured: no check, no torch.cuda call


def test_num_blocks_from_checkpoint(tmp_path: Path) -> None:
    with_config = tmp_path / "a.safetensors"
    save_file({"x": torch.zeros(1)}, with_config, metadata={"config": json.dumps({"transformer": {"num_layers": 48}})})
    bare = tmp_path / "b.safetensors"
    save_file({"x": torch.zeros(1)}, bare)
    assert num_blocks_from_checkpoint(with_config) == 48
    assert num_blocks_from_checkpoint(bare) is None
    assert num_blocks_from_checkpoint(tmp_path / "missing.safetensors") is None


def test_configure_model_is_a_no_op_without_block_swap() -> None:
    context = ModelContext(
        config=trainer_config(),
        strategy=None,
        model=torch.nn.Linear(2, 2),
        accelerator=None,
        device=torch.device("cpu"),
    )
    hooks.configure_model(context)
    assert context.device_placement is True
    assert hooks.NOTES_KEY not in context.notes


def test_configure_model_refuses_a_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_cuda_available", lambda: False)
    context = ModelContext(
        config=trainer_config(seed=1),
        strategy=None,
        model=torch.nn.Linear(2, 2),
        accelerator=SimpleNamespace(distributed_type="NO"),
        device=torch.device("cpu"),
    )
    with pytest.raises(ValueError, match="none is available"):
        hooks.configure_model(context)


# --------------------------------------------------------------------------------------------------------------------
# Which blocks, how many slots, auto sizing
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_blocks", [1, 4, 7, 8, 48])
def test_spread_blocks_picks_n_distinct_blocks(num_blocks: int) -> None:
    for n in range(num_blocks + 1):
        chosen = spread_blocks(num_blocks, n)
        assert len(chosen) == n
        assert chosen == sorted(set(chosen))
        assert all(0 <= i < num_blocks for i in chosen)


def test_spread_blocks_layouts() -> None:
    assert spread_blocks(8, 0) == []
    assert spread_blocks(8, 4) == [1, 3, 5, 7]
    assert spread_blocks(8, 7) == [1, 2, 3, 4, 5, 6, 7]  # all but one keeps block 0 resident
    assert spread_blocks(48, 24) == list(range(1, 48, 2))
    with pytest.raises(ValueError, match="between 0 and 8"):
        spread_blocks(8, 9)


def test_slot_count() -> None:
    assert slot_count(0, 1) == 0
    assert slot_count(1, 1) == 1
    assert slot_count(47, 1) == 2
    assert slot_count(47, 3) == 4


def test_estimate_peak_arithmetic() -> None:
    block = int(0.39 * GB)
    plan = estimate_peak([block] * 48, 24, fixed_bytes=2 * int(GB), prefetch=1, reserve_bytes=int(GB))
    assert plan.resident_block_bytes == 24 * block
    assert plan.slot_bytes == 2 * block
    assert plan.estimated_peak_bytes == 3 * int(GB) + 26 * block


def test_plan_auto_chooses_the_smallest_fitting_n(caplog: pytest.LogCaptureFixture) -> None:
    block = int(0.39 * GB)
    caplog.set_level("INFO")
    plan = plan_auto([block] * 48, fixed_bytes=2 * int(GB), max_vram_bytes=12 * int(GB), prefetch=1, reserve_bytes=0)
    # 2 GB + (48 - n + 2) * 0.39 GB <= 12 GB  <=>  n >= 24.36
    assert plan.blocks_to_swap == 25
    assert plan.estimated_peak_bytes <= 12 * GB
    assert estimate_peak([block] * 48, 24, 2 * int(GB), 1, 0).estimated_peak_bytes > 12 * GB
    assert "25 of 48 blocks swapped" in caplog.text


def test_plan_auto_returns_zero_when_everything_fits() -> None:
    plan = plan_auto([100] * 8, fixed_bytes=0, max_vram_bytes=10_000, prefetch=1, reserve_bytes=0)
    assert plan.blocks_to_swap == 0


def test_plan_auto_skips_counts_that_save_nothing() -> None:
    # With prefetch 1, swapping 1 or 2 blocks still holds 2 slots: no saving until n = 3.
    sizes = [100] * 8
    assert [estimate_peak(sizes, n, 0, 1, 0).estimated_peak_bytes for n in range(4)] == [800, 800, 800, 700]
    assert plan_auto(sizes, fixed_bytes=0, max_vram_bytes=750, prefetch=1, reserve_bytes=0).blocks_to_swap == 3


def test_plan_auto_uses_the_measured_sizes_of_each_block() -> None:
    sizes = [400, 100, 100, 100]  # spread_blocks(4, 2) swaps blocks 1 and 3
    plan = estimate_peak(sizes, 2, fixed_bytes=0, prefetch=1, reserve_bytes=0)
    assert plan.resident_block_bytes == 500
    assert plan.slot_bytes == 200


def test_plan_auto_says_how_far_off_a_too_small_budget_is() -> None:
    with pytest.raises(ValueError, match=r"lowest estimate is 3\.\d+ GB with 48 of 48 blocks") as info:
        plan_auto([int(0.78 * GB)] * 48, int(GB), max_vram_bytes=2 * int(GB), prefetch=1, reserve_bytes=int(0.5 * GB))
    assert "Raise max_vram_gb" in str(info.value)
