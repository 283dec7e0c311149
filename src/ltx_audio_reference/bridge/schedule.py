"""Schedule seam: ``optimization.steps`` counts optimizer steps, and the LR at optimizer step k is the same on any
number of processes, with gradient accumulation, and across a resume.

ltx-trainer 1.2.0 prepares its scheduler with accelerate's defaults, and accelerate's ``AcceleratedScheduler.step``
then steps the torch scheduler ``num_processes`` times per optimizer step (it assumes a schedule sized in
per-process batches): on N processes the schedule runs N times too fast (the linear default reaches its floor at
``steps / N``; cosine reaches its minimum at ``steps / 2`` on two processes and climbs back). Upstream PR #263's remedy,
``step_scheduler_with_optimizer=False``, steps on every micro-batch instead, which runs the schedule
``gradient_accumulation_steps`` times too fast. Here the prepared scheduler keeps stepping through accelerate (a no-op
while gradients accumulate, and after an fp16 step the scaler skipped) but once per optimizer step
(``split_batches``). Two more stock defects are mended on the way:

- accelerate also forces an optimizer step at the last batch of each epoch (``sync_with_dataloader``), which the stock
  loop does not count as a step: with an epoch length that is not a multiple of ``gradient_accumulation_steps``,
  ``steps: 8`` took 9 optimizer steps. Turned off, so steps are counted as the stock loop counts them.
- on resume, torch's ``load_state_dict`` restores ``last_epoch`` but not the optimizer's LR, and the chained stock
  schedulers carry on from whatever LR the optimizer holds: with ``save_training_state: minimal`` (the default) the
  schedule restarted from the initial LR. The schedule is replayed from its fresh state to the resumed step instead.

A scheduler state written with the fix carries :data:`SCHEDULE_MARK`, so its ``last_epoch`` is known to count optimizer
steps; an unmarked state from a stock multi-process run, whose ``last_epoch`` ran ahead, is realigned with a warning.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from typing import Any

from ltx_audio_reference.bridge.state import trainer_parts

logger = logging.getLogger(__name__)

#: Saved inside the scheduler's state dict (a torch scheduler's ``state_dict`` is its ``__dict__`` minus the
#: optimizer, so the stock training state carries it and stock ltx-trainer ignores it).
SCHEDULE_MARK = "ltx_audio_reference_schedule"
SCHEDULE_VERSION = 1
# The schedule's shape in the stock schedulers' state dicts; everything else there is position.
SHAPE_KEYS = (
    "base_lrs",
    "start_factor",
    "end_factor",
    "total_iters",
    "T_max",
    "eta_min",
    "T_0",
    "T_mult",
    "power",
    "step_size",
    "gamma",
)


def torch_scheduler(lr_scheduler: Any) -> Any:  # noqa: ANN401
    """The torch scheduler inside accelerate's ``AcceleratedScheduler`` (or the scheduler itself)."""
    return getattr(lr_scheduler, "scheduler", lr_scheduler)


def after_init_optimizer(trainer: Any, stock_init: Any) -> None:  # noqa: ANN401 - the stock LtxvTrainer
    """Run the stock ``_init_optimizer``, then make the schedule advance once per optimizer step."""
    # The stock _create_scheduler pops its parameters out of config.optimization.scheduler_params, so the
    # training_config.yaml and the W&B config written afterwards lose them: give them back.
    params = trainer._config.optimization.scheduler_params
    kept = dict(params) if params else None
    try:
        stock_init(trainer)
    finally:
        if kept is not None:
            params.clear()
            params.update(kept)
    trainer._accelerator.gradient_state.plugin_kwargs["sync_with_dataloader"] = False
    trainer._bridge_fresh_schedule = None
    scheduler = trainer._lr_scheduler
    if scheduler is None:  # scheduler_type: constant
        return
    if hasattr(scheduler, "split_batches"):  # AcceleratedScheduler: one torch step per optimizer step
        scheduler.split_batches = True
    raw = torch_scheduler(scheduler)
    setattr(raw, SCHEDULE_MARK, SCHEDULE_VERSION)
    trainer._bridge_fresh_schedule = (
        copy.deepcopy(raw.state_dict()),
        [group["lr"] for group in raw.optimizer.param_groups],
    )


def _replay(trainer: Any, steps: int) -> None:  # noqa: ANN401
    """Put the scheduler and the optimizer's LR where this config's schedule stands after ``steps`` optimizer steps."""
    fresh_state, fresh_lrs = trainer._bridge_fresh_schedule
    raw = torch_scheduler(trainer._lr_scheduler)
    raw.load_state_dict(copy.deepcopy(fresh_state))
    for group, lr in zip(raw.optimizer.param_groups, fresh_lrs, strict=True):
        group["lr"] = lr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
        for _ in range(steps):
            raw.step()


def after_restore_training_state(trainer: Any, stock_restore: Any, training_state: Any) -> bool:  # noqa: ANN401
    """Run the stock ``_restore_training_state``, then put the schedule where an uninterrupted run stands."""
    restored = stock_restore(trainer, training_state)
    if trainer._lr_scheduler is None or getattr(trainer, "_bridge_fresh_schedule", None) is None:
        return restored
    if not restored:  # the run starts from step 0
        _replay(trainer, 0)
        return restored
    step = int(training_state.global_step)
    saved = training_state.lr_scheduler_state_dict or {}
    taken = int(saved.get("last_epoch", step))
    if saved.get(SCHEDULE_MARK) is None and taken > step:
        logger.warning(
            "The training state of step %d was saved by a stock multi-process run, whose LR schedule had advanced "
            "%d times (%.3g per optimizer step). Resuming on the schedule counted in optimizer steps: the LR jumps "
            "from %s to the value an uninterrupted run has at step %d.",
            step,
            taken,
            taken / max(step, 1),
            saved.get("_last_lr"),
            step,
        )
    # A marked state's last_epoch counts the optimizer steps that stepped the schedule (fewer than global_step only
    # when fp16 skipped steps); an unmarked one's is trusted only up to global_step.
    target = min(taken, step)
    fresh_state = trainer._bridge_fresh_schedule[0]
    changed = [
        f"{k}: {saved[k]} -> {fresh_state.get(k)}" for k in SHAPE_KEYS if k in saved and saved[k] != fresh_state.get(k)
    ]
    if changed:
        logger.warning(
            "The LR schedule differs from the saved one (%s): resuming on this config's schedule at step %d",
            ", ".join(changed),
            target,
        )
    _replay(trainer, target)
    logger.info("LR schedule resumed at optimizer step %d (lr %.4g)", target, trainer._optimizer.param_groups[0]["lr"])
    return restored


def install_schedule() -> None:
    """Wrap the stock ``_restore_training_state`` (the step guard's ``_init_optimizer`` calls
    :func:`after_init_optimizer`)."""
    trainer_cls, stock = trainer_parts()
    stock_restore = stock["_restore_training_state"]

    @functools.wraps(stock_restore)
    def _restore_training_state(self: Any, training_state: Any) -> bool:  # noqa: ANN401
        return after_restore_training_state(self, stock_restore, training_state)

    trainer_cls._restore_training_state = _restore_training_state
