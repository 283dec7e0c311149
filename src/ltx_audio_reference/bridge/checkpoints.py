"""Checkpoint seam: the ``on_checkpoint`` and ``checkpoint_metadata`` hooks, atomic finite-only saves that keep the
previous pair until the new one is complete, resume from the newest complete pair, and untrusted-file refusals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any

from torch.utils.data import default_collate

from ltx_audio_reference.bridge import run_folder, state
from ltx_audio_reference.bridge.state import Installation, trainer_parts
from ltx_audio_reference.errors import CheckpointError, NonFiniteError
from ltx_audio_reference.registry import CheckpointContext, CheckpointMetadata
from ltx_audio_reference.reliability import checkpoints, export, files, guards

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR_NAME = "checkpoints"  # where the stock _save_checkpoint writes, under output_dir


def install_checkpoint_hooks(installation: Installation) -> None:
    """Run ``on_checkpoint`` (in a forked RNG stream) and ``checkpoint_metadata`` around every save."""
    import torch  # noqa: PLC0415

    trainer_cls, stock = trainer_parts()
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

    # _training_step replaces batch["conditions"] entries with connector outputs, so it gets its own dicts.
    batch = {k: dict(v) if isinstance(v, dict) else v for k, v in batch.items()}
    batch = send_to_device(batch, trainer._accelerator.device)
    with torch.no_grad(), trainer._accelerator.autocast():
        # The stock step: a measurement is neither guarded nor reported to on_train_step.
        return state.stock().trainer_methods["_training_step"](trainer, batch).loss.float()


def _guard_parameters(trainer: Any) -> None:  # noqa: ANN401
    model = trainer._accelerator.unwrap_model(trainer._transformer)
    bad = guards.nonfinite_tensors({n: p for n, p in model.named_parameters() if p.requires_grad})
    if bad:
        raise NonFiniteError(
            f"Step {trainer._global_step}: checkpoint not written: "
            f"{guards.describe_nonfinite_tensors(bad, 'trainable tensors')}. The newest checkpoint on disk is "
            "the last good one."
        )


def _save_reliably(trainer: Any, stock: dict[str, Any]) -> Any:  # noqa: ANN401
    """Run the stock save with the old checkpoints kept until the new weights and training state are both on disk."""
    if trainer._accelerator.is_main_process:
        run_folder.check_still_there(trainer)
        files.remove_stale_temps(Path(trainer._config.output_dir) / CHECKPOINTS_DIR_NAME)
    _guard_parameters(trainer)
    trainer._bridge_defer_cleanup = True
    try:
        path = stock["_save_checkpoint"](trainer)
    finally:
        trainer._bridge_defer_cleanup = False
    stock["_cleanup_checkpoints"](trainer)
    stock["_cleanup_training_states"](trainer)
    return path


def install_atomic_checkpoints() -> None:
    """Weights and training state go to a temporary name, are flushed, then renamed; cleanup waits for both."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    saved = state.stock()
    stock = saved.trainer_methods
    stock_save_file = saved.save_file
    trainer_cls = trainer_module.LtxvTrainer

    @functools.wraps(stock_save_file)
    def save_file(tensors: dict[str, Any], filename: Any, metadata: dict[str, str] | None = None) -> None:  # noqa: ANN401
        bad = guards.nonfinite_tensors(tensors)
        if bad:
            raise NonFiniteError(
                f"{filename}: not written: {guards.describe_nonfinite_tensors(bad, 'tensors')}. The newest "
                "checkpoint on disk is the last good one."
            )
        files.atomic_write(Path(filename), lambda tmp: stock_save_file(tensors, str(tmp), metadata=metadata))

    @functools.wraps(stock["_save_training_state"])
    def _save_training_state(self: Any, save_dir: Path) -> None:  # noqa: ANN401
        # The stock method writes <dir>/training_state_step_N.pt via its own .pt.tmp + rename, without fsync.
        # Given a staging folder, its file is flushed and moved up only once complete.
        save_dir = Path(save_dir)
        staging = save_dir / files.STAGING_DIR_NAME
        name = checkpoints.STATE_NAME.format(step=f"{self._global_step:05d}")
        # torch.save on a full disk raises "unexpected pos" (no errno), and the stock method deletes its partial
        # .pt.tmp before re-raising, which frees the space that would show the disk is full. A second link to the
        # same file keeps that space taken until the failure is diagnosed.
        partial, hold = staging / f"{name}.tmp", staging / ".hold"
        try:
            staging.mkdir(parents=True, exist_ok=True)
            partial.touch()
            os.link(partial, hold)
            stock["_save_training_state"](self, staging)
            paths = self._training_state_paths
            if paths and Path(paths[-1]).parent == staging:
                paths[-1] = files.atomic_move(Path(paths[-1]), save_dir / Path(paths[-1]).name)
                logger.debug("Training state flushed and moved to %s", paths[-1])
        except Exception as e:
            diagnosed = files.storage_error(e, save_dir / name)
            if diagnosed is None or diagnosed is e:
                raise
            raise diagnosed from e
        finally:
            for leftover in (hold, partial):  # the partial file is already gone after a success (renamed)
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
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
        export.adapter_state_dict, peft_state_dict=saved.get_peft_model_state_dict
    )
    trainer_cls._save_training_state = _save_training_state
    trainer_cls._cleanup_checkpoints = _cleanup_checkpoints
    trainer_cls._cleanup_training_states = _cleanup_training_states


def install_resume() -> None:
    """Resume from the newest complete pair, load training state with weights_only, check LoRA keys."""
    trainer_cls, stock = trainer_parts()
    stock_find = stock["_find_checkpoint"].__func__

    @functools.wraps(stock_find)
    def _find_checkpoint(checkpoint_path: str | Path) -> Path | None:
        path = Path(checkpoint_path)
        if path.is_file() and path.suffix == ".safetensors":
            problem = checkpoints.safetensors_problem(path)
            if problem is not None:
                raise CheckpointError(
                    f"{path}: incomplete checkpoint ({problem}). Pass its folder to resume from the newest complete one"
                )
        if not path.is_dir():
            return stock_find(checkpoint_path)
        choice = checkpoints.select_checkpoint(path)
        if choice is None:
            # The stock runner then starts a new run; say why at the default level, not only at -v.
            logger.warning(
                "Not resuming from %s: %s. Training starts at step 0 with new LoRA weights",
                path,
                checkpoints.no_checkpoint_reason(path),
            )
            return None
        for skipped, why in choice.skipped:
            logger.warning("Not resuming from %s: %s", skipped, why)
        if choice.note:
            logger.warning("%s: %s; loading %s without a training state", path, choice.note, choice.weights.name)
        return choice.weights

    @functools.wraps(stock["_load_lora_checkpoint"])
    def _load_lora_checkpoint(self: Any, checkpoint_path: Path) -> None:  # noqa: ANN401
        path = Path(checkpoint_path)
        found = checkpoints.safetensors_shapes(path)
        match = checkpoints.match_lora_keys(found, _exported_lora_shapes(self._transformer))
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
        if "BF16" in checkpoints.safetensors_dtypes(path) and not self._config.checkpoints.no_resume:
            logger.info("%s holds bf16 weights: training resumes from rounded values (float32 is exact)", path)
        stock["_load_lora_checkpoint"](self, checkpoint_path)

    trainer_cls._find_checkpoint = staticmethod(_find_checkpoint)
    trainer_cls._load_training_state = staticmethod(_load_training_state)
    trainer_cls._load_lora_checkpoint = _load_lora_checkpoint


def _load_training_state(checkpoint_path: Path) -> Any:  # noqa: ANN401 - the stock TrainingState
    """The stock loader with ``weights_only=True``: a state file holding pickled objects is refused, not executed."""
    from ltx_trainer.training_state import TrainingState  # noqa: PLC0415

    state_path = checkpoints.state_path_for(Path(checkpoint_path))
    if state_path is None or not state_path.exists():
        return None
    raw = checkpoints.load_weights_only(state_path, "training state", checkpoints.TRAINING_STATE_SAFE_GLOBALS)
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
    state = export.adapter_state_dict(model)
    return {f"diffusion_model.{k.replace('base_model.model.', '', 1)}": tuple(v.shape) for k, v in state.items()}
