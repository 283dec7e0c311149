"""The bridge: the ONLY module that touches ltx-trainer internals.

ltx-trainer 1.2.0 has no plugin seam: its strategy config is a closed pydantic union, its strategy factory is a
``match``, and model setup, checkpoint metadata and validation conditioning are private methods. :func:`install`
teaches the stock classes the registered strategies and routes those steps through the plugin hooks. It edits no
file and copies no upstream code: it rebuilds one pydantic field, rebinds one factory name and wraps five methods.

``install()`` is idempotent: every call rebuilds from the stock objects it saved on the first call, so installing
with another plugin manager (tests) replaces the previous installation instead of stacking on it.
"""

from __future__ import annotations

import functools
import logging
import typing
from dataclasses import dataclass, replace
from typing import Annotated, Any, Union

import pluggy
from torch.utils.data import default_collate

from ltx_audio_reference.datacheck import check_dataset
from ltx_audio_reference.plugins import (
    collect_conditioners,
    collect_config_fields,
    collect_strategies,
    get_plugin_manager,
)
from ltx_audio_reference.registry import (
    STOCK_STRATEGIES,
    CheckpointContext,
    CheckpointMetadata,
    ConditionerRegistry,
    ConfigurationError,
    LoraContext,
    ModelContext,
    StrategyRegistry,
)

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "ltx-trainer is not installed. It is not on PyPI; install ltx-core and ltx-trainer 1.2.0 from the LTX-2 "
    "repository (see the README's 'Install the trainer' section)."
)


def require_ltx_trainer() -> None:
    """Import ltx-trainer's config module or raise a ModuleNotFoundError that says how to install it."""
    try:
        import ltx_trainer.config  # noqa: F401, PLC0415
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "ltx_trainer":
            raise ModuleNotFoundError(INSTALL_HINT, name="ltx_trainer") from e
        raise


def ltx_trainer_available() -> bool:
    """Whether ltx-trainer can be imported here (it imports torchvision, wandb and friends)."""
    try:
        require_ltx_trainer()
    except ImportError:
        return False
    return True


@dataclass
class _Stock:
    """The stock objects, saved on the first install so that every install starts from them."""

    strategy_union_args: tuple[Any, ...]
    strategy_field: Any
    config_fields: dict[str, dict[str, Any]]
    factory: Any
    trainer_methods: dict[str, Any]
    apply_audio_conditionings: Any


@dataclass
class Installation:
    """What the current installation registered."""

    pm: pluggy.PluginManager
    strategies: StrategyRegistry
    conditioners: ConditionerRegistry
    active_strategy: str | None = None
    strategy_config: Any = None


_stock: _Stock | None = None
_current: Installation | None = None


def current() -> Installation | None:
    """The active installation, or None before :func:`install`."""
    return _current


def install(pm: pluggy.PluginManager | None = None) -> Installation:
    """Install the registered strategies and hooks into stock ltx-trainer.

    Args:
        pm: The plugin manager to take strategies and hooks from; the shared one by default.

    Returns:
        The installation (registries and plugin manager in use).

    Raises:
        ModuleNotFoundError: If ltx-trainer is not installed.
    """
    global _current  # noqa: PLW0603 - the bridge is process-wide by nature: it patches shared classes
    pm = pm or get_plugin_manager()
    if _current is not None and _current.pm is pm:
        return _current
    require_ltx_trainer()
    _save_stock()
    strategies = collect_strategies(pm)
    installation = Installation(pm=pm, strategies=strategies, conditioners=collect_conditioners(pm))
    _install_config(strategies, pm)
    _install_factory(installation)
    _install_trainer_hooks(installation)
    _install_checkpoint_hooks(installation)
    _install_validation_conditioning(installation)
    _current = installation
    logger.debug("ltx-trainer bridge installed: strategies %s", strategies.available())
    return installation


def uninstall() -> None:
    """Restore the stock ltx-trainer objects (for tests)."""
    global _current  # noqa: PLW0603
    if _stock is None:
        return
    import ltx_trainer.config as config_module  # noqa: PLC0415
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    import ltx_trainer.training_strategies as strategies_module  # noqa: PLC0415
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    _set_fields(config_module, _stock.config_fields, {})
    config_module.LtxTrainerConfig.model_fields["training_strategy"] = _stock.strategy_field
    _rebuild(config_module)
    trainer_module.get_training_strategy = _stock.factory
    strategies_module.get_training_strategy = _stock.factory
    for name, method in _stock.trainer_methods.items():
        setattr(trainer_module.LtxvTrainer, name, method)
    validation_module.ValidationRunner._apply_audio_conditionings = _stock.apply_audio_conditionings
    _current = None


_TRAINER_METHODS = (
    "__init__",
    "_setup_lora",
    "_prepare_models_for_training",
    "_save_checkpoint",
    "_build_checkpoint_metadata",
)


def _save_stock() -> None:
    global _stock  # noqa: PLW0603
    if _stock is not None:
        return
    import ltx_trainer.config as config_module  # noqa: PLC0415
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    field = config_module.LtxTrainerConfig.model_fields["training_strategy"]
    _stock = _Stock(
        strategy_union_args=typing.get_args(field.annotation),
        strategy_field=field,
        config_fields={
            "root": dict(config_module.LtxTrainerConfig.model_fields),
            "acceleration": dict(config_module.AccelerationConfig.model_fields),
        },
        factory=trainer_module.get_training_strategy,
        trainer_methods={name: trainer_module.LtxvTrainer.__dict__[name] for name in _TRAINER_METHODS},
        apply_audio_conditionings=validation_module.ValidationRunner.__dict__["_apply_audio_conditionings"],
    )


# ---------------------------------------------------------------------------------------------------------------
# Config: the closed strategy union and plugin config fields
# ---------------------------------------------------------------------------------------------------------------


def _strategy_name(value: object) -> str:
    # Same fallback as the stock discriminator: a section without a name is text_to_video.
    if isinstance(value, dict):
        return value.get("name", "text_to_video")
    return getattr(value, "name", "text_to_video")


def _set_fields(config_module: Any, stock_fields: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> None:  # noqa: ANN401
    owners = {"root": config_module.LtxTrainerConfig, "acceleration": config_module.AccelerationConfig}
    for owner, cls in owners.items():
        fields = dict(stock_fields[owner])
        fields.update(extra.get(owner, {}))
        cls.model_fields.clear()
        cls.model_fields.update(fields)


def _rebuild(config_module: Any) -> None:  # noqa: ANN401
    # Nested models are embedded in the parent's schema, so the parent is rebuilt after its children.
    config_module.AccelerationConfig.model_rebuild(force=True)
    config_module.LtxTrainerConfig.model_rebuild(force=True)


def _install_config(strategies: StrategyRegistry, pm: pluggy.PluginManager) -> None:
    from pydantic import Discriminator, Field, Tag  # noqa: PLC0415
    from pydantic.fields import FieldInfo  # noqa: PLC0415

    import ltx_trainer.config as config_module  # noqa: PLC0415

    assert _stock is not None
    extra: dict[str, dict[str, Any]] = {"root": {}, "acceleration": {}}
    for entry in collect_config_fields(pm):
        stock_names = _stock.config_fields[entry.owner]
        if entry.name in stock_names:
            raise ValueError(
                f"Plugin {entry.plugin!r} adds config field {entry.owner}.{entry.name}, which ltx-trainer already has"
            )
        extra[entry.owner][entry.name] = FieldInfo.from_annotated_attribute(entry.annotation, entry.field)
    _set_fields(config_module, _stock.config_fields, extra)

    members = [*_stock.strategy_union_args, *(Annotated[e.config_cls, Tag(e.name)] for e in strategies)]
    names = ", ".join(strategies.available())
    annotation = Annotated[
        Union[tuple(members)],
        Discriminator(
            _strategy_name,
            custom_error_type="unknown_training_strategy",
            custom_error_message=f"Unknown training strategy name. Registered strategies: {names}",
        ),
    ]
    stock_field = _stock.strategy_field
    config_module.LtxTrainerConfig.model_fields["training_strategy"] = FieldInfo.from_annotated_attribute(
        annotation, Field(default_factory=stock_field.default_factory, description=stock_field.description)
    )
    _rebuild(config_module)


# ---------------------------------------------------------------------------------------------------------------
# Strategy factory
# ---------------------------------------------------------------------------------------------------------------


def _install_factory(installation: Installation) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    import ltx_trainer.training_strategies as strategies_module  # noqa: PLC0415

    assert _stock is not None
    stock_factory = _stock.factory

    @functools.wraps(stock_factory)
    def get_training_strategy(config: Any) -> Any:  # noqa: ANN401
        entry = installation.strategies.for_config(config)
        installation.active_strategy = getattr(config, "name", None)
        installation.strategy_config = config
        if entry is None:
            return stock_factory(config)
        strategy = entry.strategy_cls(config)
        logger.debug("Using %s training strategy from plugin %s", type(strategy).__name__, entry.plugin)
        return strategy

    # trainer.py imported the factory by name, so the name bound there is the one the trainer calls.
    trainer_module.get_training_strategy = get_training_strategy
    strategies_module.get_training_strategy = get_training_strategy


# ---------------------------------------------------------------------------------------------------------------
# Trainer: config validation, LoRA targets, model preparation, checkpoint metadata
# ---------------------------------------------------------------------------------------------------------------


def _install_trainer_hooks(installation: Installation) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    assert _stock is not None
    stock = _stock.trainer_methods
    hook = installation.pm.hook
    trainer_cls = trainer_module.LtxvTrainer

    @functools.wraps(stock["__init__"])
    def __init__(self: Any, trainer_config: Any) -> None:  # noqa: N807, ANN401
        # Runs before any model is loaded, so bad values fail in seconds instead of after a 40 GB load.
        try:
            hook.validate_config(config=trainer_config)
        except ValueError as e:
            raise ConfigurationError(str(e)) from e
        check_training_data(trainer_config)
        stock["__init__"](self, trainer_config)

    @functools.wraps(stock["_setup_lora"])
    def _setup_lora(self: Any) -> None:  # noqa: ANN401
        context = LoraContext(
            config=self._config,
            strategy=self._training_strategy,
            model=self._transformer,
            target_modules=list(self._config.lora.target_modules),
        )
        hook.configure_lora(context=context)
        if context.target_modules != list(self._config.lora.target_modules):
            logger.info("LoRA targets: %d modules (set by plugins)", len(context.target_modules))
            self._config.lora = self._config.lora.model_copy(update={"target_modules": context.target_modules})
        stock["_setup_lora"](self)

    @functools.wraps(stock["_prepare_models_for_training"])
    def _prepare_models_for_training(self: Any) -> None:  # noqa: ANN401
        context = ModelContext(
            config=self._config,
            strategy=self._training_strategy,
            model=self._transformer,
            accelerator=self._accelerator,
            device=self._accelerator.device,
        )
        hook.configure_model(context=context)
        self._transformer = context.model
        placement = self._accelerator.device_placement
        self._accelerator.device_placement = context.device_placement
        try:
            stock["_prepare_models_for_training"](self)
        finally:
            self._accelerator.device_placement = placement

    trainer_cls.__init__ = __init__
    trainer_cls._setup_lora = _setup_lora
    trainer_cls._prepare_models_for_training = _prepare_models_for_training


def _install_checkpoint_hooks(installation: Installation) -> None:
    import torch  # noqa: PLC0415

    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    assert _stock is not None
    stock = _stock.trainer_methods
    hook = installation.pm.hook
    trainer_cls = trainer_module.LtxvTrainer

    @functools.wraps(stock["_save_checkpoint"])
    def _save_checkpoint(self: Any) -> Any:  # noqa: ANN401
        context = CheckpointContext(
            config=self._config,
            strategy=self._training_strategy,
            model=self._transformer,
            step=self._global_step,
            device=self._accelerator.device,
            dataset=self._dataset,
            loss_fn=functools.partial(_no_grad_loss, self),
            collate=default_collate,
        )
        # Plugins may sample noise or timesteps; the training RNG stream must not notice.
        devices = [self._accelerator.device] if self._accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            hook.on_checkpoint(context=context)
        self._plugin_checkpoint_metrics = dict(context.metrics)
        if context.metrics:
            logger.info(
                "Step %d: %s", self._global_step, ", ".join(f"{k} = {v:.4g}" for k, v in context.metrics.items())
            )
            if self._accelerator.is_main_process:
                self._log_metrics({f"train/{k}": v for k, v in context.metrics.items()})
        return stock["_save_checkpoint"](self)

    @functools.wraps(stock["_build_checkpoint_metadata"])
    def _build_checkpoint_metadata(self: Any) -> dict[str, str]:  # noqa: ANN401
        if installation.strategies.for_config(self._config.training_strategy) is None:
            metadata = CheckpointMetadata(stock["_build_checkpoint_metadata"](self))
        else:
            # Plugin strategies get JSON-encoded values (true, not Python's True).
            metadata = CheckpointMetadata(self._training_strategy.get_checkpoint_metadata())
        for key, value in getattr(self, "_plugin_checkpoint_metrics", {}).items():
            metadata.add(key, value)
        hook.checkpoint_metadata(config=self._config, strategy=self._training_strategy, metadata=metadata)
        result = metadata.to_dict()
        logger.debug("Checkpoint metadata: %s", result)
        return result

    trainer_cls._save_checkpoint = _save_checkpoint
    trainer_cls._build_checkpoint_metadata = _build_checkpoint_metadata


def _no_grad_loss(trainer: Any, batch: dict[str, Any]) -> Any:  # noqa: ANN401
    """The trainer's own step (connectors, strategy, forward, loss) without gradients; ``batch`` is not modified."""
    import torch  # noqa: PLC0415
    from accelerate.utils import send_to_device  # noqa: PLC0415

    # _training_step replaces batch["conditions"] entries with connector outputs, so it gets its own dicts.
    batch = {k: dict(v) if isinstance(v, dict) else v for k, v in batch.items()}
    batch = send_to_device(batch, trainer._accelerator.device)
    with torch.no_grad(), trainer._accelerator.autocast():
        return trainer._training_step(batch).loss.float()


MAX_LISTED_PROBLEMS = 20
# At training start, values are scanned only in tensors up to this size (references, audio and video latents);
# prompt embeddings can reach tens of GB over a dataset, and `ltx-trainer check` scans them all.
STARTUP_SCAN_LIMIT = 2**20


def check_training_data(config: Any) -> None:  # noqa: ANN401 - the stock LtxTrainerConfig
    """Check the strategy's data folders before the model loads (the stock dataset silently skips bad pairs).

    Raises:
        ConfigurationError: Listing each problem as ``file: expected ...; found ...``.
    """
    root = config.data.preprocessed_data_root
    sources = config.training_strategy.get_data_sources()
    problems = check_dataset(
        root, dict.fromkeys(sources), batch_size=config.optimization.batch_size, scan_limit=STARTUP_SCAN_LIMIT
    )
    if not problems:
        return
    lines = [str(p) for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more (`ltx-trainer check CONFIG` lists all)")
    raise ConfigurationError(f"{len(problems)} problem(s) in the training data under {root}:\n" + "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# Validation: reference audio through the strategy's conditioner
# ---------------------------------------------------------------------------------------------------------------


def _is_audio_reference(cond: object) -> bool:
    return getattr(cond, "type", None) == "reference" and getattr(cond, "audio", None) is not None


def _install_validation_conditioning(installation: Installation) -> None:
    import torch  # noqa: PLC0415

    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415
    from ltx_core.conditioning.types.reference_audio_cond import AudioConditionByReferenceLatent  # noqa: PLC0415

    assert _stock is not None
    stock_apply = _stock.apply_audio_conditionings.__func__

    def _apply_audio_conditionings(
        state: Any,  # noqa: ANN401
        tools: Any,  # noqa: ANN401
        sample: Any,  # noqa: ANN401
        cached_media: Any,  # noqa: ANN401
        device: torch.device,
    ) -> Any:  # noqa: ANN401
        name = installation.active_strategy
        conditioner = installation.conditioners.get(name, "audio") if name else None
        if conditioner is None:
            return stock_apply(state, tools, sample, cached_media, device)

        ref_indices = [i for i, cond in enumerate(sample.conditions) if _is_audio_reference(cond)]
        # The stock code skips a condition whose media is missing, so hiding the references from it leaves every
        # other condition (prefix, suffix, mask) to the stock path, in order.
        others = replace(
            cached_media,
            conditions={i: m for i, m in cached_media.conditions.items() if i not in ref_indices},
        )
        state = stock_apply(state, tools, sample, others, device)
        strategy_config = installation.strategy_config
        for i in ref_indices:
            media = cached_media.conditions.get(i)
            if media is None:
                continue
            tokens = tools.patchifier.patchify(media.latent.to(device=device, dtype=torch.bfloat16))
            target_positions = state.positions[:, :, : tools.target_shape.token_count()]
            positions, denoise_value = conditioner(tokens, target_positions, strategy_config)
            # ltx-core's inference twin appends [target | reference] with denoise mask 1 - strength.
            item = AudioConditionByReferenceLatent(tokens, positions.to(device), strength=1.0 - denoise_value)
            state = item.apply_to(state, tools)
        return state

    validation_module.ValidationRunner._apply_audio_conditionings = staticmethod(_apply_audio_conditionings)


def available_strategies(pm: pluggy.PluginManager | None = None) -> list[str]:
    """Stock and registered strategy names (no ltx-trainer import needed)."""
    return collect_strategies(pm or get_plugin_manager()).available()


__all__ = [
    "INSTALL_HINT",
    "STOCK_STRATEGIES",
    "Installation",
    "available_strategies",
    "current",
    "install",
    "ltx_trainer_available",
    "require_ltx_trainer",
    "uninstall",
]
