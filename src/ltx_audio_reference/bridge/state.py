"""What the bridge keeps between calls: the stock ltx-trainer objects it replaces, and the current installation."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import pluggy

from ltx_audio_reference.registry import ConditionerRegistry, QuantizationRegistry, StrategyRegistry

#: The stock ``LtxvTrainer`` methods the bridge wraps; each is saved once, so every install starts from stock.
TRAINER_METHODS = (
    "__init__",
    "train",
    "_load_models",
    "_setup_lora",
    "_prepare_models_for_training",
    "_save_checkpoint",
    "_build_checkpoint_metadata",
    "_training_step",
    "_init_optimizer",
    "_init_dataloader",
    "_save_training_state",
    "_cleanup_checkpoints",
    "_cleanup_training_states",
    "_find_checkpoint",
    "_load_lora_checkpoint",
    "_load_training_state",
    "_restore_training_state",
    "_run_validation",
)


@dataclass
class Stock:
    """The stock objects, saved on the first install so that every install starts from them."""

    strategy_union_args: tuple[Any, ...]
    strategy_field: Any
    config_fields: dict[str, dict[str, Any]]
    factory: Any
    save_file: Any
    get_peft_model_state_dict: Any
    get_gpu_memory_gb: Any
    quantize_model: Any
    load_transformer: Any
    is_main_process: bool
    trainer_methods: dict[str, Any]
    apply_audio_conditionings: Any
    run_denoising: Any
    x0_model: Any
    multimodal_guider: Any


@dataclass
class Installation:
    """What the current installation registered."""

    pm: pluggy.PluginManager
    strategies: StrategyRegistry
    conditioners: ConditionerRegistry
    backends: QuantizationRegistry


_stock: Stock | None = None


def stock() -> Stock:
    """The saved stock objects (saving them on first use)."""
    global _stock  # noqa: PLW0603 - the bridge is process-wide by nature: it patches shared classes
    if _stock is None:
        import ltx_trainer.config as config_module  # noqa: PLC0415
        import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
        import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

        field = config_module.LtxTrainerConfig.model_fields["training_strategy"]
        _stock = Stock(
            strategy_union_args=typing.get_args(field.annotation),
            strategy_field=field,
            config_fields={
                "root": dict(config_module.LtxTrainerConfig.model_fields),
                "acceleration": dict(config_module.AccelerationConfig.model_fields),
            },
            factory=trainer_module.get_training_strategy,
            save_file=trainer_module.save_file,
            get_peft_model_state_dict=trainer_module.get_peft_model_state_dict,
            get_gpu_memory_gb=trainer_module.get_gpu_memory_gb,
            quantize_model=trainer_module.quantize_model,
            load_transformer=trainer_module.load_transformer,
            is_main_process=trainer_module.IS_MAIN_PROCESS,
            trainer_methods={name: trainer_module.LtxvTrainer.__dict__[name] for name in TRAINER_METHODS},
            apply_audio_conditionings=validation_module.ValidationRunner.__dict__["_apply_audio_conditionings"],
            run_denoising=validation_module.ValidationRunner.__dict__["_run_denoising"],
            x0_model=validation_module.X0Model,
            multimodal_guider=validation_module.MultiModalGuider,
        )
    return _stock


def saved() -> Stock | None:
    """The saved stock objects, or None before the first install."""
    return _stock


def trainer_parts() -> tuple[Any, dict[str, Any]]:
    """The stock ``LtxvTrainer`` class and its methods as saved before any wrapping."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    return trainer_module.LtxvTrainer, stock().trainer_methods
