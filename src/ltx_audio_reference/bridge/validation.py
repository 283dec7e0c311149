"""Validation seam: where in-trainer validation and the eval sweep put a strategy's reference tokens.

The stock ``ValidationRunner`` appends an audio reference after the target at positions starting at 0. When a
strategy registers a reference conditioner, validation places the reference with it instead (for ``audio_reference``
the same function training uses) through ltx-core's ``AudioConditionByReferenceLatent``.

Which strategy's placement applies is said with :func:`reference_placement`, a public context manager: the bridge
opens it around the trainer's ``_run_validation`` with the run's own strategy config, and the eval sweep opens it
around each arm with the arm's config. Outside it, validation keeps the stock placement.

The same context manager says the reference-guidance scale of the sampler (:mod:`.guidance`): the strategy config's
``validation_reference_guidance`` (0 when it has none), or the ``reference_guidance`` argument, which overrides it
(the eval sweep's ``--reference-guidance`` arms).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from ltx_audio_reference.bridge import guidance
from ltx_audio_reference.bridge import state as bridge_state
from ltx_audio_reference.bridge.state import Installation, trainer_parts

logger = logging.getLogger(__name__)

#: Strategy-config field that sets validation's reference-guidance scale (read when the config has it).
GUIDANCE_FIELD = "validation_reference_guidance"


@dataclass(frozen=True)
class _Placement:
    strategy_config: Any
    reference_guidance: float | None


_placement: ContextVar[_Placement | None] = ContextVar("ltx_audio_reference_reference_placement", default=None)


@contextlib.contextmanager
def reference_placement(
    strategy_config: Any,  # noqa: ANN401 - any strategy config
    *,
    reference_guidance: float | None = None,
) -> Iterator[None]:
    """Within this block, validation places references as ``strategy_config``'s strategy does.

    Args:
        strategy_config: A strategy config (its ``name`` selects the registered conditioner, and the conditioner
            reads its settings, e.g. ``reference_positions``), or None for the stock placement.
        reference_guidance: Reference-guidance scale of the sampler (0 = off); None takes the config's
            ``validation_reference_guidance`` (0 when it has none). Applies only to references placed by a
            registered conditioner.

    Raises:
        ValueError: If ``reference_guidance`` is negative or not finite.
    """
    if reference_guidance is not None and not (math.isfinite(reference_guidance) and reference_guidance >= 0):
        raise ValueError(
            f"reference_guidance must be a finite number >= 0 (0 turns reference guidance off), got "
            f"{reference_guidance!r}"
        )
    token = _placement.set(_Placement(strategy_config, reference_guidance))
    try:
        yield
    finally:
        _placement.reset(token)


@contextlib.contextmanager
def sampling_progress() -> Iterator[Any]:
    """ltx-trainer's progress display for validation sampling alone (``Sampling k/N``, the denoising steps), without
    the training bar it starts with: pass the yielded object as ``ValidationRunner.run``'s ``progress``."""
    from ltx_trainer.progress import TrainingProgress  # noqa: PLC0415

    progress = TrainingProgress(enabled=True, total_steps=1)
    with progress:
        display, training = getattr(progress, "_progress", None), getattr(progress, "_train_task", None)
        if display is not None and training is not None:
            display.update(training, visible=False)
        yield progress


def current_placement() -> Any:  # noqa: ANN401
    """The strategy config of the innermost :func:`reference_placement`, or None."""
    placement = _placement.get()
    return None if placement is None else placement.strategy_config


def current_reference_guidance() -> float:
    """The reference-guidance scale of the innermost :func:`reference_placement` (0 outside one)."""
    placement = _placement.get()
    if placement is None:
        return 0.0
    if placement.reference_guidance is not None:
        return float(placement.reference_guidance)
    return float(getattr(placement.strategy_config, GUIDANCE_FIELD, 0.0) or 0.0)


def without_ddp(model: Any) -> Any:  # noqa: ANN401 - any model
    """The module inside DDP (also inside ``torch.compile`` around DDP); any other model unchanged.

    Validation runs without gradients, so DDP adds nothing there and breaks two things (upstream PR #263, issue #301):
    the stock runner reads ``transformer.num_blocks`` for STG and modality guidance (both on by default), which DDP
    does not forward, so the first validation dies with an ``AttributeError``; and a DDP forward broadcasts the model's
    buffers from rank 0, a collective that a rank without a validation sample (fewer samples than processes) never
    joins, so the run hangs. FSDP stays wrapped: its forwards gather shards, the stock runner pads every rank to the
    same number of forwards, and it forwards attribute access.
    """
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

    inner = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return inner.module if isinstance(inner, DistributedDataParallel) else model


def _is_audio_reference(cond: object) -> bool:
    return getattr(cond, "type", None) == "reference" and getattr(cond, "audio", None) is not None


def install_validation_conditioning(installation: Installation) -> None:
    """Route validation's audio references through the registered conditioner of the placement in effect."""
    import torch  # noqa: PLC0415

    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415
    from ltx_core.conditioning.types.reference_audio_cond import AudioConditionByReferenceLatent  # noqa: PLC0415

    stock_apply = bridge_state.stock().apply_audio_conditionings.__func__

    def _apply_audio_conditionings(
        state: Any,  # noqa: ANN401
        tools: Any,  # noqa: ANN401
        sample: Any,  # noqa: ANN401
        cached_media: Any,  # noqa: ANN401
        device: torch.device,
    ) -> Any:  # noqa: ANN401
        strategy_config = current_placement()
        name = getattr(strategy_config, "name", None)
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
        keep = state.latent.shape[1]  # tokens before the references (reference guidance strips the rest)
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
        guidance.record_reference_layout(state, keep)
        return state

    validation_module.ValidationRunner._apply_audio_conditionings = staticmethod(_apply_audio_conditionings)

    trainer_cls, stock = trainer_parts()

    @functools.wraps(stock["_run_validation"])
    def _run_validation(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        model = self._transformer
        self._transformer = without_ddp(model)  # the stock method hands it to ValidationRunner.run only
        try:
            with reference_placement(self._config.training_strategy):
                return stock["_run_validation"](self, *args, **kwargs)
        finally:
            self._transformer = model

    trainer_cls._run_validation = _run_validation
    guidance.install_reference_guidance(current_reference_guidance)


def restore_validation_conditioning() -> None:
    """Put the stock ``_apply_audio_conditionings`` and the stock sampler back."""
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    validation_module.ValidationRunner._apply_audio_conditionings = bridge_state.stock().apply_audio_conditionings
    guidance.restore_reference_guidance()
