"""The bridge: the ONLY module that touches ltx-trainer internals.

ltx-trainer 1.2.0 has no plugin seam: its strategy config is a closed pydantic union, its strategy factory is a
``match``, and model setup, checkpoint metadata and validation conditioning are private methods. :func:`install`
teaches the stock classes the registered strategies and routes those steps through the plugin hooks. It edits no
file and copies no upstream code: it rebuilds one pydantic field, rebinds the factory and ``save_file`` names that
``ltx_trainer.trainer`` calls, and wraps the trainer's methods listed in ``_TRAINER_METHODS``.

``install()`` is idempotent: every call rebuilds from the stock objects it saved on the first call, so installing
with another plugin manager (tests) replaces the previous installation instead of stacking on it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Union

import pluggy
from torch.utils.data import default_collate

from ltx_audio_reference import lora_export, randomness, reliability
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
    TrainStepContext,
)
from ltx_audio_reference.reliability import CheckpointError, NonFiniteError

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
    save_file: Any
    get_peft_model_state_dict: Any
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
    _install_step_guard(installation)
    _install_atomic_checkpoints()
    _install_resume()
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
    trainer_module.save_file = _stock.save_file
    trainer_module.get_peft_model_state_dict = _stock.get_peft_model_state_dict
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
    "_training_step",
    "_init_optimizer",
    "_init_dataloader",
    "_save_training_state",
    "_cleanup_checkpoints",
    "_cleanup_training_states",
    "_find_checkpoint",
    "_load_lora_checkpoint",
    "_load_training_state",
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
        save_file=trainer_module.save_file,
        get_peft_model_state_dict=trainer_module.get_peft_model_state_dict,
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


def _trainer_parts() -> tuple[Any, dict[str, Any]]:
    """The stock ``LtxvTrainer`` class and its methods as saved before any wrapping."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    assert _stock is not None
    return trainer_module.LtxvTrainer, _stock.trainer_methods


def _install_trainer_hooks(installation: Installation) -> None:
    import torch  # noqa: PLC0415

    trainer_cls, stock = _trainer_parts()
    hook = installation.pm.hook

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
        # peft draws lora_A from the global RNG long before train() seeds it, so the initial LoRA would depend on
        # whatever ran first in the process. Seed it from config.seed, in a forked stream that training never sees.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._config.seed)
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

    trainer_cls, stock = _trainer_parts()
    hook = installation.pm.hook

    @functools.wraps(stock["_save_checkpoint"])
    def _save_checkpoint(self: Any) -> Any:  # noqa: ANN401
        saved = getattr(self, "_bridge_saved", None)
        if saved is not None and saved[0] == self._global_step:
            # The final save after an interval save of the same step: the stock runner writes the same path again
            # and keep_last_n then deletes it. The step and the save history are the same on every process, so all
            # of them skip the collective get_state_dict together.
            logger.info("Step %d is already saved; the final save keeps that checkpoint", self._global_step)
            return saved[1]
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
        path = _save_reliably(self, stock)
        self._bridge_saved = (self._global_step, path)
        return path

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

    assert _stock is not None

    # _training_step replaces batch["conditions"] entries with connector outputs, so it gets its own dicts.
    batch = {k: dict(v) if isinstance(v, dict) else v for k, v in batch.items()}
    batch = send_to_device(batch, trainer._accelerator.device)
    with torch.no_grad(), trainer._accelerator.autocast():
        # The stock step: a measurement is neither guarded nor reported to on_train_step.
        return _stock.trainer_methods["_training_step"](trainer, batch).loss.float()


# ---------------------------------------------------------------------------------------------------------------
# Reliability: non-finite guard, atomic checkpoints, complete-pair resume, exact data order, untrusted files
# ---------------------------------------------------------------------------------------------------------------

CHECKPOINTS_DIR_NAME = "checkpoints"  # where the stock _save_checkpoint writes, under output_dir


def _install_step_guard(installation: Installation) -> None:
    """Stop at the first non-finite loss or gradient norm, naming the step, the batch's files and sigma."""
    trainer_cls, stock = _trainer_parts()
    hook = installation.pm.hook

    @functools.wraps(stock["_training_step"])
    def _training_step(self: Any, batch: dict[str, Any]) -> Any:  # noqa: ANN401
        # Per-sample draws (for strategies that use them) are keyed by the epoch that drew the batch; without the
        # bridge's epoch-seeded loader there is no epoch to key them by, and the global stream is used.
        epoch = getattr(self._dataloader, "current_epoch", None)
        draws = contextlib.nullcontext() if epoch is None else randomness.per_sample_draws(self._config.seed, epoch)
        with draws:
            output = stock["_training_step"](self, batch)
        # Inside accelerate's accumulate(), global_step already counts the step this batch completes.
        step = self._global_step if self._accelerator.sync_gradients else self._global_step + 1
        record = reliability.BatchRecord(
            files=reliability.sample_files(self._dataset, batch.get("idx")),
            sigma=output.sigma.detach(),
            loss=output.loss.detach(),
        )
        current = getattr(self, "_bridge_step_batches", None)
        if current is None or current[0] != step:
            current = (step, [])
            self._bridge_step_batches = current
        current[1].append(record)
        if not reliability.is_finite(record.loss):
            value = float(record.loss.float().mean())
            raise NonFiniteError(reliability.describe_nonfinite_step("loss", value, step, current[1]))
        hook.on_train_step(
            context=TrainStepContext(
                config=self._config,
                strategy=self._training_strategy,
                model=self._transformer,
                step=step,
                loss=record.loss,
                sigma=record.sigma,
                sample_files=record.files,
            )
        )
        return output

    @functools.wraps(stock["_init_optimizer"])
    def _init_optimizer(self: Any) -> None:  # noqa: ANN401
        stock["_init_optimizer"](self)
        # A pre-step hook runs only when accelerate really steps (after the last micro-batch, gradients synced, and
        # with fp16 only once the scaler found them finite), right before the weights change.
        optimizer = getattr(self._optimizer, "optimizer", self._optimizer)
        optimizer.register_step_pre_hook(functools.partial(_gradient_guard, self))

    trainer_cls._training_step = _training_step
    trainer_cls._init_optimizer = _init_optimizer


def _gradient_guard(trainer: Any, optimizer: Any, args: Any, kwargs: Any) -> None:  # noqa: ANN401, ARG001
    norm = reliability.grad_norm(p for group in optimizer.param_groups for p in group["params"])
    if norm is None or math.isfinite(norm):
        return
    step, batches = getattr(trainer, "_bridge_step_batches", None) or (trainer._global_step, [])
    raise NonFiniteError(reliability.describe_nonfinite_step("gradient norm", norm, step, batches))


def _guard_parameters(trainer: Any) -> None:  # noqa: ANN401
    model = trainer._accelerator.unwrap_model(trainer._transformer)
    bad = reliability.nonfinite_tensors({n: p for n, p in model.named_parameters() if p.requires_grad})
    if bad:
        raise NonFiniteError(
            f"Step {trainer._global_step}: checkpoint not written: "
            f"{reliability.describe_nonfinite_tensors(bad, 'trainable tensors')}. The newest checkpoint on disk is "
            "the last good one."
        )


def _save_reliably(trainer: Any, stock: dict[str, Any]) -> Any:  # noqa: ANN401
    """Run the stock save with the old checkpoints kept until the new weights and training state are both on disk."""
    if trainer._accelerator.is_main_process:
        reliability.remove_stale_temps(Path(trainer._config.output_dir) / CHECKPOINTS_DIR_NAME)
    _guard_parameters(trainer)
    trainer._bridge_defer_cleanup = True
    try:
        path = stock["_save_checkpoint"](trainer)
    finally:
        trainer._bridge_defer_cleanup = False
    stock["_cleanup_checkpoints"](trainer)
    stock["_cleanup_training_states"](trainer)
    return path


def _install_atomic_checkpoints() -> None:
    """Weights and training state go to a temporary name, are flushed, then renamed; cleanup waits for both."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    assert _stock is not None
    stock = _stock.trainer_methods
    stock_save_file = _stock.save_file
    trainer_cls = trainer_module.LtxvTrainer

    @functools.wraps(stock_save_file)
    def save_file(tensors: dict[str, Any], filename: Any, metadata: dict[str, str] | None = None) -> None:  # noqa: ANN401
        bad = reliability.nonfinite_tensors(tensors)
        if bad:
            raise NonFiniteError(
                f"{filename}: not written: {reliability.describe_nonfinite_tensors(bad, 'tensors')}. The newest "
                "checkpoint on disk is the last good one."
            )
        reliability.atomic_write(Path(filename), lambda tmp: stock_save_file(tensors, str(tmp), metadata=metadata))

    @functools.wraps(stock["_save_training_state"])
    def _save_training_state(self: Any, save_dir: Path) -> None:  # noqa: ANN401
        # The stock method writes <dir>/training_state_step_N.pt via its own .pt.tmp + rename, without fsync.
        # Given a staging folder, its file is flushed and moved up only once complete.
        save_dir = Path(save_dir)
        staging = save_dir / reliability.STAGING_DIR_NAME
        staging.mkdir(parents=True, exist_ok=True)
        try:
            stock["_save_training_state"](self, staging)
            paths = self._training_state_paths
            if paths and Path(paths[-1]).parent == staging:
                paths[-1] = reliability.atomic_move(Path(paths[-1]), save_dir / Path(paths[-1]).name)
                logger.debug("Training state flushed and moved to %s", paths[-1])
        finally:
            with contextlib.suppress(OSError):
                staging.rmdir()

    @functools.wraps(stock["_cleanup_checkpoints"])
    def _cleanup_checkpoints(self: Any) -> None:  # noqa: ANN401
        if not getattr(self, "_bridge_defer_cleanup", False):
            stock["_cleanup_checkpoints"](self)

    @functools.wraps(stock["_cleanup_training_states"])
    def _cleanup_training_states(self: Any) -> None:  # noqa: ANN401
        if not getattr(self, "_bridge_defer_cleanup", False):
            stock["_cleanup_training_states"](self)

    trainer_module.save_file = save_file
    # The stock save exports the LoRA with peft, which finds no tensor in FSDP-wrapped blocks (lora_export).
    trainer_module.get_peft_model_state_dict = functools.partial(
        lora_export.adapter_state_dict, peft_state_dict=_stock.get_peft_model_state_dict
    )
    trainer_cls._save_training_state = _save_training_state
    trainer_cls._cleanup_checkpoints = _cleanup_checkpoints
    trainer_cls._cleanup_training_states = _cleanup_training_states


def _install_resume() -> None:
    """Resume from the newest complete pair, load training state with weights_only, check LoRA keys, keep data order."""
    trainer_cls, stock = _trainer_parts()
    stock_find = stock["_find_checkpoint"].__func__

    @functools.wraps(stock_find)
    def _find_checkpoint(checkpoint_path: str | Path) -> Path | None:
        path = Path(checkpoint_path)
        if path.is_file() and path.suffix == ".safetensors":
            problem = reliability.safetensors_problem(path)
            if problem is not None:
                raise CheckpointError(
                    f"{path}: incomplete checkpoint ({problem}). Pass its folder to resume from the newest complete one"
                )
        if not path.is_dir():
            return stock_find(checkpoint_path)
        choice = reliability.select_checkpoint(path)
        if choice is None:
            return None
        for skipped, why in choice.skipped:
            logger.warning("Not resuming from %s: %s", skipped, why)
        if choice.note:
            logger.warning("%s: %s; loading %s without a training state", path, choice.note, choice.weights.name)
        return choice.weights

    @functools.wraps(stock["_load_lora_checkpoint"])
    def _load_lora_checkpoint(self: Any, checkpoint_path: Path) -> None:  # noqa: ANN401
        path = Path(checkpoint_path)
        found = reliability.safetensors_shapes(path)
        match = reliability.match_lora_keys(found, _exported_lora_shapes(self._transformer))
        if not match.ok:
            raise CheckpointError(match.describe(path))
        if match.missing:
            logger.warning(
                "%s holds %d of the model's %d LoRA tensors; the other %d keep their initial values",
                path,
                match.matched,
                match.expected,
                len(match.missing),
            )
        if "BF16" in reliability.safetensors_dtypes(path) and not self._config.checkpoints.no_resume:
            logger.info("%s holds bf16 weights: training resumes from rounded values (float32 is exact)", path)
        stock["_load_lora_checkpoint"](self, checkpoint_path)

    trainer_cls._find_checkpoint = staticmethod(_find_checkpoint)
    trainer_cls._load_training_state = staticmethod(_load_training_state)
    trainer_cls._load_lora_checkpoint = _load_lora_checkpoint
    trainer_cls._init_dataloader = _exact_resume_dataloader(stock["_init_dataloader"])


def _load_training_state(checkpoint_path: Path) -> Any:  # noqa: ANN401 - the stock TrainingState
    """The stock loader with ``weights_only=True``: a state file holding pickled objects is refused, not executed."""
    from ltx_trainer.training_state import TrainingState  # noqa: PLC0415

    state_path = reliability.state_path_for(Path(checkpoint_path))
    if state_path is None or not state_path.exists():
        return None
    raw = reliability.load_weights_only(state_path, "training state", reliability.TRAINING_STATE_SAFE_GLOBALS)
    try:
        state = TrainingState.from_save_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{state_path}: not an ltx-trainer training state ({type(e).__name__}: {e}). Delete it, or set "
            "checkpoints.no_resume: true"
        ) from e
    logger.info("Loaded training state from %s (weights_only)", state_path)
    return state


def _exported_lora_shapes(model: Any) -> dict[str, tuple[int, ...]]:  # noqa: ANN401 - a peft model
    """The model's LoRA tensors under the names the stock runner exports them with (``diffusion_model.`` ...)."""
    state = lora_export.adapter_state_dict(model)
    return {f"diffusion_model.{k.replace('base_model.model.', '', 1)}": tuple(v.shape) for k, v in state.items()}


def _exact_resume_dataloader(stock_init: Any) -> Any:  # noqa: ANN401
    @functools.wraps(stock_init)
    def _init_dataloader(self: Any) -> None:  # noqa: ANN401
        stock_init(self)
        # The stock loader draws each epoch's permutation from the global RNG, so a run resumed mid-epoch gets a new
        # order. Seeding the sampler per epoch makes the order a function of (seed, epoch), and the first iteration
        # starts at the resumed step's position without loading the skipped batches.
        generator = reliability.own_data_generator(self._dataloader)
        if generator is None:
            logger.debug("No shuffling sampler found: data order left to the stock loader")
            return
        accumulation = self._config.optimization.gradient_accumulation_steps
        self._dataloader = reliability.EpochSeededLoader(
            self._dataloader,
            generator,
            self._config.seed,
            consumed_batches=lambda: max(self._global_step, 0) * accumulation,
            skip=self._accelerator.skip_first_batches,
        )

    return _init_dataloader


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
