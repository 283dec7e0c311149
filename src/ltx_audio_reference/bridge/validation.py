"""Validation seam: where in-trainer validation and the eval sweep put a strategy's reference tokens.

The stock ``ValidationRunner`` appends an audio reference after the target at positions starting at 0. When a
strategy registers a reference conditioner, validation places the reference with it instead (for ``audio_reference``
the same function training uses) through ltx-core's ``AudioConditionByReferenceLatent``.

Which strategy's placement applies is said with :func:`reference_placement`, a public context manager: the bridge
opens it around the trainer's ``_run_validation`` with the run's own strategy config, and the eval sweep opens it
around each arm with the arm's config. Outside it, validation keeps the stock placement.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from ltx_audio_reference.bridge import state as bridge_state
from ltx_audio_reference.bridge.state import Installation, trainer_parts

logger = logging.getLogger(__name__)

_placement: ContextVar[Any] = ContextVar("ltx_audio_reference_reference_placement", default=None)


@contextlib.contextmanager
def reference_placement(strategy_config: Any) -> Iterator[None]:  # noqa: ANN401 - any strategy config
    """Within this block, validation places references as ``strategy_config``'s strategy does.

    Args:
        strategy_config: A strategy config (its ``name`` selects the registered conditioner, and the conditioner
            reads its settings, e.g. ``reference_positions``), or None for the stock placement.
    """
    token = _placement.set(strategy_config)
    try:
        yield
    finally:
        _placement.reset(token)


def current_placement() -> Any:  # noqa: ANN401
    """The strategy config of the innermost :func:`reference_placement`, or None."""
    return _placement.get()


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


def restore_validation_conditioning() -> None:
    """Put the stock ``_apply_audio_conditionings`` back."""
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    validation_module.ValidationRunner._apply_audio_conditionings = bridge_state.stock().apply_audio_conditionings
