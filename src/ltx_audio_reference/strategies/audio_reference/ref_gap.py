"""The reference-attribution gap: does the model use the reference, or is it decorative?

At every checkpoint (through the ``on_checkpoint`` hook, when ``training_strategy.ref_gap_samples > 0``), a fixed
set of dataset samples goes through the trainer's own no-grad step twice per batch:

- with each sample's own reference (the *right* loss);
- with the reference of the next sample of the set (the *wrong* loss; the set is rolled by one).

Both forwards of a batch start from the same seed, so they draw the same sigmas and the same noise (*paired*
noise): the only difference between them is the reference. ``ref_gap = mean(wrong - right)`` over the samples. It
is well above 0 when the prediction depends on the reference, and about 0 when the reference is decorative (a
model can also learn to ignore it). It is logged as ``train/ref_gap`` beside the stock metrics and written into the
checkpoint metadata, with the two mean losses as ``ref_gap_right_loss`` and ``ref_gap_wrong_loss``.

The bridge runs the hook inside ``torch.random.fork_rng``, so seeding here leaves the training RNG stream, and hence
the training loss curve, untouched.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ltx_audio_reference.hookspecs import hookimpl
from ltx_audio_reference.strategies.audio_reference import STRATEGY_NAME

if TYPE_CHECKING:  # an entry point: loading the plugin manager must not import torch
    import torch

    from ltx_audio_reference.registry import CheckpointContext

logger = logging.getLogger(__name__)

#: Base seed of the paired forwards; batch ``b`` uses ``REF_GAP_SEED + b`` for both of its forwards.
REF_GAP_SEED = 1_234_567


@dataclass(frozen=True)
class RefGap:
    """One measurement of the reference-attribution gap."""

    gap: float
    right_loss: float
    wrong_loss: float
    per_sample_gap: list[float]
    indices: list[int]

    def metrics(self) -> dict[str, float]:
        """The values logged and written into the checkpoint metadata."""
        return {"ref_gap": self.gap, "ref_gap_right_loss": self.right_loss, "ref_gap_wrong_loss": self.wrong_loss}


def probe_indices(dataset_size: int, num_samples: int) -> list[int]:
    """``num_samples`` fixed dataset indices spread evenly over the dataset (all of it when it is smaller).

    Raises:
        ValueError: If fewer than two samples would be used.
    """
    count = min(num_samples, dataset_size)
    if count < 2:
        raise ValueError(
            f"The reference gap needs at least 2 samples (one borrows the other's reference); the dataset has "
            f"{dataset_size} and ref_gap_samples is {num_samples}"
        )
    if count == dataset_size:
        return list(range(dataset_size))
    step = (dataset_size - 1) / (count - 1)
    return sorted({round(i * step) for i in range(count)})


def measure_ref_gap(
    dataset: Sequence[dict[str, Any]],
    collate: Callable[[list[Any]], dict[str, Any]],
    loss_fn: Callable[[dict[str, Any]], torch.Tensor],
    *,
    num_samples: int,
    batch_size: int,
    reference_key: str,
    seed: int = REF_GAP_SEED,
) -> RefGap:
    """Measure the reference-attribution gap on fixed samples of ``dataset``.

    Args:
        dataset: Indexable training samples (dicts keyed by data source, as ltx-trainer's ``PrecomputedDataset``).
        collate: Builds a batch from a list of samples (the trainer's collate function).
        loss_fn: The trainer's no-grad step; returns the per-sample loss ``[B]``.
        num_samples: How many samples to use (capped at the dataset size; at least 2).
        batch_size: Samples per forward.
        reference_key: The batch key of the reference (``ref_audio_latents`` for ``audio_reference``).
        seed: Base seed of the paired forwards. It reseeds the global RNG, so call this inside
            ``torch.random.fork_rng`` (the bridge does) when a training stream must not notice.

    Returns:
        The gap, the mean right and wrong losses, and the per-sample gaps in the order of ``indices``.

    Raises:
        ValueError: If fewer than two samples are available, or a sample has no ``reference_key``.
    """
    import torch  # noqa: PLC0415

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    indices = probe_indices(len(dataset), num_samples)
    samples = [dataset[i] for i in indices]
    missing = [i for i, s in zip(indices, samples, strict=True) if reference_key not in s]
    if missing:
        raise ValueError(f"Samples {missing} have no {reference_key!r} entry; the reference gap needs a reference")
    # The wrong reference of sample j is the reference of sample j + 1 (mod n): never its own.
    wrong = [{**s, reference_key: samples[(j + 1) % len(samples)][reference_key]} for j, s in enumerate(samples)]

    right_losses: list[float] = []
    wrong_losses: list[float] = []
    for batch_index, start in enumerate(range(0, len(samples), batch_size)):
        stop = start + batch_size
        torch.manual_seed(seed + batch_index)
        right_losses += _per_sample(loss_fn(collate(samples[start:stop])))
        torch.manual_seed(seed + batch_index)  # the same sigmas and noise: only the reference differs
        wrong_losses += _per_sample(loss_fn(collate(wrong[start:stop])))

    per_sample = [w - r for w, r in zip(wrong_losses, right_losses, strict=True)]
    return RefGap(
        gap=statistics.fmean(per_sample),
        right_loss=statistics.fmean(right_losses),
        wrong_loss=statistics.fmean(wrong_losses),
        per_sample_gap=per_sample,
        indices=indices,
    )


def _per_sample(loss: torch.Tensor) -> list[float]:
    return [float(v) for v in loss.detach().float().reshape(-1).cpu()]


@hookimpl
def on_checkpoint(context: CheckpointContext) -> None:
    """Add ``ref_gap`` (and the right and wrong losses) to the checkpoint metrics when ``ref_gap_samples > 0``."""
    strategy_config = getattr(context.config, "training_strategy", None)
    if getattr(strategy_config, "name", None) != STRATEGY_NAME:
        return
    num_samples = getattr(strategy_config, "ref_gap_samples", 0)
    if not num_samples:
        return
    from ltx_audio_reference.strategies.audio_reference.config import REFERENCE_AUDIO_LATENTS_KEY  # noqa: PLC0415

    result = measure_ref_gap(
        context.dataset,
        context.collate,
        context.loss_fn,
        num_samples=num_samples,
        batch_size=context.config.optimization.batch_size,
        reference_key=REFERENCE_AUDIO_LATENTS_KEY,
    )
    logger.debug("Step %d reference gap per sample: %s", context.step, result.per_sample_gap)
    context.metrics.update(result.metrics())
