"""Hook specifications of the ltx-trainer plugin host.

The marker pair is named after the host project (``ltx_trainer``), so a plugin written against this host reads the
same as one written for a future upstream plugin seam. Plugins import only :data:`hookimpl`.

Every hook receives a registry object or a mutable context instead of returning values; that keeps the call order
irrelevant and lets the host reject duplicates with a message that names both plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from ltx_audio_reference.registry import (
        CheckpointContext,
        CheckpointMetadata,
        ConditionerRegistry,
        ConfigFieldRegistry,
        LoraContext,
        ModelContext,
        QuantizationRegistry,
        StrategyRegistry,
        TrainStepContext,
    )

PROJECT_NAME = "ltx_trainer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "hookimpl"]


@hookspec
def register_strategies(register: StrategyRegistry) -> None:
    """Register training strategies by name.

    :param register: call ``register(name, config_cls, strategy_cls)``; classes may be given as ``"module:attr"``
        strings so that listing strategies never imports ltx-trainer.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands or sub-command groups to the ``ltx-trainer`` CLI.

    :param cli: the root typer application.
    """


@hookspec
def register_config_fields(register: ConfigFieldRegistry) -> None:
    """Add fields to the stock trainer config (for example a ``block_swap`` section).

    :param register: call ``register(owner, name, annotation, field)`` with owner ``"root"`` or ``"acceleration"``.
    """


@hookspec
def register_quantization_backends(register: QuantizationRegistry) -> None:
    """Register weight-quantization backends, the values ``acceleration.quantization`` accepts.

    :param register: call ``register(backend)`` with a
        :class:`~ltx_audio_reference.quantization.QuantizationBackend`; its ``name`` becomes a config value, and the
        registration order is the order ``ltx-trainer quantization`` and the config's error messages list them in.
    """


@hookspec
def validate_config(config: object) -> None:
    """Check the parsed trainer config before any model is loaded; raise ``ValueError`` saying how to fix it.

    Called by ``ltx-trainer check`` and at the start of the stock trainer's ``__init__``.

    :param config: the stock ``LtxTrainerConfig`` (with plugin fields).
    """


@hookspec
def configure_lora(context: LoraContext) -> None:
    """Adjust the LoRA target modules before peft wraps the model.

    :param context: the trainer config, the strategy, the unwrapped model and the mutable ``target_modules`` list.
        The memory estimates (``check``, the streamed load's plan) also call it, on the transformer built on the meta
        device and with ``strategy`` None: read the config, not the strategy object.
    """


@hookspec
def configure_model(context: ModelContext) -> None:
    """Prepare the LoRA-wrapped model right before ``accelerator.prepare`` (block swap plugs in here).

    :param context: the trainer config, the strategy, the model, the accelerator and ``device_placement``, which a
        plugin sets to ``False`` when it places the model's parts on the device itself.
    """


@hookspec
def register_reference_conditioners(register: ConditionerRegistry) -> None:
    """Register the function that places a strategy's reference tokens in validation and inference.

    :param register: call ``register(strategy_name, modality, conditioner)``; see
        :class:`ltx_audio_reference.registry.ReferenceConditioner` for the call signature.
    """


@hookspec
def on_checkpoint(context: CheckpointContext) -> None:
    """Measure the model at checkpoint cadence, right before each checkpoint is written.

    Values put in ``context.metrics`` are logged beside the stock metrics (``train/<name>``) and written into that
    checkpoint's metadata.

    :param context: the config, strategy, model, step, dataset, a no-grad per-sample ``loss_fn(batch)`` that runs the
        trainer's own step, and the ``metrics`` dict to fill.
    """


@hookspec
def on_train_step(context: TrainStepContext) -> None:
    """Watch every training batch right after its forward pass, before backward (a loss log, a spike detector).

    Runs once per batch (per micro-batch under gradient accumulation), on every process, after the bridge has checked
    that the loss is finite. Raising stops the run before this batch changes the weights.

    :param context: the config, strategy and model, the optimization ``step`` the batch counts toward, the
        per-sample ``loss`` and ``sigma`` (detached), and ``sample_files`` (per sample, its file in each data folder).
    """


@hookspec
def checkpoint_metadata(config: object, strategy: object, metadata: CheckpointMetadata) -> None:
    """Add entries to the safetensors metadata of every exported checkpoint.

    :param config: the trainer config.
    :param strategy: the training strategy instance.
    :param metadata: call ``metadata.add(key, value)``; values are stored JSON-encoded (strings as-is).
    """
