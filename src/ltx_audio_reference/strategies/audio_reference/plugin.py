"""The package's own plugin, registered through the ``ltx_trainer`` entry-point group like any third party.

It registers the ``audio_reference`` strategy and hooks it into the stock runner: LoRA presets, a trainable-parameter
check, the validation conditioner (negative reference positions) and checkpoint metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx_audio_reference.hookspecs import hookimpl
from ltx_audio_reference.strategies.audio_reference import STRATEGY_NAME

if TYPE_CHECKING:
    from ltx_audio_reference.registry import (
        CheckpointMetadata,
        ConditionerRegistry,
        LoraContext,
        ModelContext,
        StrategyRegistry,
    )

PLUGIN_NAME = "audio_reference"


def _audio_reference_config(config: Any) -> Any | None:  # noqa: ANN401
    strategy = getattr(config, "training_strategy", None)
    return strategy if getattr(strategy, "name", None) == STRATEGY_NAME else None


@hookimpl
def register_strategies(register: StrategyRegistry) -> None:
    """Register the ``audio_reference`` strategy (classes imported on first use)."""
    register(
        STRATEGY_NAME,
        "ltx_audio_reference.strategies.audio_reference.config:AudioReferenceConfig",
        "ltx_audio_reference.strategies.audio_reference.strategy:AudioReferenceStrategy",
    )


@hookimpl
def register_reference_conditioners(register: ConditionerRegistry) -> None:
    """Validation places the reference with the same function training uses."""
    from ltx_audio_reference.strategies.audio_reference.positions import audio_reference_conditioner  # noqa: PLC0415

    register(STRATEGY_NAME, "audio", audio_reference_conditioner)


@hookimpl
def validate_config(config: Any) -> None:  # noqa: ANN401
    """LoRA mode with alpha equal to rank, LoRA targets that peft will find and the preset will not replace, and
    reference guidance only with a reference in every validation sample."""
    strategy = _audio_reference_config(config)
    if strategy is None:
        return
    if config.model.training_mode != "lora" or config.lora is None:
        raise ValueError("The audio_reference strategy trains a LoRA: set model.training_mode: lora and a lora section")
    _validate_lora_targets(strategy.lora_preset, config.lora, config.model.model_path)
    if config.lora.alpha != config.lora.rank:
        raise ValueError(
            f"lora.alpha ({config.lora.alpha}) must equal lora.rank ({config.lora.rank}): exported LoRAs carry no "
            f"alpha, and ltx-core and ComfyUI apply them with scale 1. Set lora.alpha: {config.lora.rank}"
        )
    _validate_reference_guidance(strategy.validation_reference_guidance, getattr(config, "validation", None))
    _validate_resumed_lora_targets(strategy.lora_preset, config)


def _validate_resumed_lora_targets(preset: str, config: Any) -> None:  # noqa: ANN401 - the stock LtxTrainerConfig
    """A LoRA to resume from (``model.load_checkpoint``) must adapt what the preset adapts, read from the headers.

    Widths, blocks and rank are the run-settings check's (:func:`~ltx_audio_reference.reliability.preflight
    .lora_fit_problems`); the target set needs the preset, which only this plugin knows.

    Raises:
        ValueError: Naming the first module the LoRA adapts and the preset does not (or the reverse).
    """
    from ltx_audio_reference.reliability import checkpoints  # noqa: PLC0415 - torch-free header reads
    from ltx_audio_reference.reliability.lora_fit import (  # noqa: PLC0415
        lora_modules,
        target_problems,
        transformer_weight_shapes,
    )
    from ltx_audio_reference.strategies.audio_reference import lora_targets  # noqa: PLC0415

    load = config.model.load_checkpoint
    model = Path(config.model.model_path).expanduser() if config.model.model_path else None
    if not load or model is None or not model.is_file():
        return
    path = Path(load).expanduser()
    if path.is_dir():
        choice = checkpoints.select_checkpoint(path)
        path = choice.weights if choice is not None else None
    if path is None or not path.is_file() or checkpoints.safetensors_problem(path) is not None:
        return  # nothing to load, or a broken file: the run-settings check says so
    custom = preset == "custom"
    targets = list(config.lora.target_modules) if custom else list(lora_targets.preset_block_modules(preset))
    weights = {m: w for m, w in transformer_weight_shapes(checkpoints.safetensors_shapes(model)).items() if len(w) == 2}
    problems = target_problems(
        lora_modules(checkpoints.safetensors_shapes(path)),
        weights,
        targets,
        head=f"{path} does not fit this config",
        targets_label="lora.target_modules" if custom else f"lora_preset {preset!r}",
    )
    if problems:
        raise ValueError(
            f"model.load_checkpoint: {problems[0]}. Set training_strategy.lora_preset (or lora.target_modules) to what "
            "it was trained with, or point model.load_checkpoint at a LoRA of this preset"
        )


def _has_audio_reference(sample: Any) -> bool:  # noqa: ANN401 - the stock ValidationSample
    return any(
        getattr(cond, "type", None) == "reference" and getattr(cond, "audio", None) is not None
        for cond in sample.conditions
    )


def _validate_reference_guidance(scale: float, validation: Any) -> None:  # noqa: ANN401 - the stock ValidationConfig
    """Reference guidance needs a reference in every validation sample, so every sample runs the same passes.

    A sample without a reference gets no extra pass. The stock trainer pads every process to the same number of
    validation samples under FSDP, whose forwards are collective, so unequal pass counts would hang the ranks;
    refusing here (before the model loads) keeps the count per sample equal on any number of processes.
    """
    if scale == 0 or validation is None or not validation.interval:
        return
    missing = [i for i, sample in enumerate(validation.samples) if not _has_audio_reference(sample)]
    if missing:
        listed = ", ".join(f"validation.samples[{i}]" for i in missing)
        raise ValueError(
            f"training_strategy.validation_reference_guidance is {scale:g}, but {listed} has no audio reference: "
            "reference guidance runs one extra forward pass per step on samples with a reference only, and under "
            "FSDP every process must run the same number of forward passes. Give every validation sample a "
            "`{type: reference, audio: FILE}` condition, or set validation_reference_guidance: 0"
        )


def _validate_lora_targets(preset: str, lora: Any, model_path: Any = None) -> None:  # noqa: ANN401 - stock LoraConfig
    """Refuse targets that peft would not find (``custom``) or that a fixed preset would silently replace.

    Args:
        preset: The strategy's ``lora_preset``.
        lora: The stock ``LoraConfig`` (``target_modules``, and ``model_fields_set`` to tell a written list from the
            stock default).
        model_path: The checkpoint; with ``custom``, its header names the modules peft can wrap.

    Raises:
        ValueError: Saying which entries are wrong and how to fix them.
    """
    from ltx_audio_reference.strategies.audio_reference import lora_targets  # noqa: PLC0415 - torch-free

    targets = list(lora.target_modules)
    if preset == "custom":
        if not any("audio" in t for t in targets):
            raise ValueError(
                f"lora_preset 'custom' with lora.target_modules {targets} names no audio module, so the LoRA cannot "
                "adapt the audio stack. Add audio modules (e.g. audio_attn1.to_q) or use lora_preset: audio"
            )
        if model_path is not None and Path(model_path).is_file():
            from ltx_audio_reference.reliability.checkpoints import safetensors_shapes  # noqa: PLC0415

            modules = lora_targets.checkpoint_modules(safetensors_shapes(Path(model_path)))
            problems = lora_targets.custom_target_problems(targets, modules, str(model_path))
            if problems:
                raise ValueError("\n".join(problems))
        return
    # Only a list the user wrote is a conflict; the stock default (to_q/to_k/to_v/to_out.0) is replaced silently.
    if "target_modules" in lora.model_fields_set:
        video = [t for t in targets if "audio" not in t]
        if video:
            raise ValueError(
                f"lora.target_modules names modules outside the audio stack ({', '.join(video)}) but lora_preset is "
                f"{preset!r}, which sets the targets itself. Remove lora.target_modules, or set lora_preset: custom"
            )
        problem = lora_targets.preset_target_problem(preset, targets)
        if problem is not None:
            raise ValueError(problem)


@hookimpl
def configure_lora(context: LoraContext) -> None:
    """Expand the strategy's ``lora_preset`` into full module names over the model's blocks."""
    strategy = _audio_reference_config(context.config)
    if strategy is None:
        return
    from ltx_audio_reference.strategies.audio_reference.lora_targets import expand_lora_targets  # noqa: PLC0415

    context.target_modules[:] = expand_lora_targets(context.model, strategy.lora_preset, context.target_modules)


@hookimpl
def configure_model(context: ModelContext) -> None:
    """Refuse to train anything outside the preset (a base weight left trainable, LoRA on a video module)."""
    strategy = _audio_reference_config(context.config)
    if strategy is None:
        return
    from ltx_audio_reference.strategies.audio_reference.lora_targets import assert_only_allowed_trainable  # noqa: PLC0415

    custom = context.config.lora.target_modules if strategy.lora_preset == "custom" else ()
    context.notes["lora_trainable_tensors"] = assert_only_allowed_trainable(context.model, strategy.lora_preset, custom)


@hookimpl
def checkpoint_metadata(config: Any, strategy: Any, metadata: CheckpointMetadata) -> None:  # noqa: ANN401, ARG001
    """Record the LoRA preset, rank and alpha next to the strategy's own keys (DESIGN §5)."""
    strategy_config = _audio_reference_config(config)
    if strategy_config is None or config.lora is None:
        return
    metadata.add("lora_preset", strategy_config.lora_preset)
    metadata.add("lora_rank", config.lora.rank)
    metadata.add("lora_alpha", config.lora.alpha)
