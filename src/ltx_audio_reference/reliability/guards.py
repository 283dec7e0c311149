"""Finiteness guards: a non-finite loss, gradient norm or weight stops the run before it reaches a checkpoint."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """The floating-point tensors holding NaN or Inf, as ``(name, non-finite count, numel)``."""
    bad = []
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            count = int((~torch.isfinite(tensor.detach())).sum())
            if count:
                bad.append((name, count, tensor.numel()))
    return bad


def describe_nonfinite_tensors(bad: Sequence[tuple[str, int, int]], what: str, limit: int = 5) -> str:
    """One line naming up to ``limit`` non-finite tensors."""
    listed = ", ".join(f"{name} ({count} of {numel})" for name, count, numel in bad[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} {what} hold NaN/Inf: {listed}{more}"


def grad_norm(params: Iterable[torch.Tensor]) -> float | None:
    """The total L2 norm of the gradients (what gradient clipping computes), or None when there are none."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))


def is_finite(value: float | torch.Tensor) -> bool:
    """Whether a number, or every element of a tensor, is finite."""
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(value)


def sample_files(dataset: object, indices: object) -> list[list[Path]]:
    """The files of each sample in a batch, from the stock ``PrecomputedDataset`` and the batch's ``idx``.

    Args:
        dataset: An object with ``data_sources`` (folder -> output key), ``source_paths`` (folder -> path) and
            ``sample_files`` (output key -> relative paths), as the stock dataset has.
        indices: The batch's ``idx`` (a tensor, a list or an int).

    Returns:
        Per sample, its file in every data folder; empty when the dataset does not say.
    """
    if isinstance(indices, torch.Tensor):
        indices = indices.flatten().tolist()
    elif isinstance(indices, int):
        indices = [indices]
    sources = getattr(dataset, "data_sources", None)
    roots = getattr(dataset, "source_paths", None)
    files = getattr(dataset, "sample_files", None)
    if not isinstance(indices, list) or sources is None or roots is None or files is None:
        return []
    return [[Path(roots[d]) / files[key][int(i)] for d, key in sources.items()] for i in indices]


@dataclass
class BatchRecord:
    """What the guard remembers of a training batch, for the message if the step goes non-finite."""

    files: list[list[Path]]
    sigma: torch.Tensor
    loss: torch.Tensor


def _values(tensor: torch.Tensor) -> list[float]:
    return [float(v) for v in tensor.detach().float().flatten().cpu().tolist()]


def describe_nonfinite_step(what: str, value: object, step: int, batches: Sequence[BatchRecord]) -> str:
    """The message of a non-finite step: the step, each sample's files, sigma and loss.

    Args:
        what: ``"loss"`` or ``"gradient norm"``.
        value: The offending value (shown as is).
        step: The optimization step.
        batches: The batches of that step (several under gradient accumulation).
    """
    lines = [
        f"Non-finite {what} ({value}) at step {step}: training stopped before this step changed the weights, so the "
        "newest checkpoint on disk is the last good one."
    ]
    for batch in batches:
        sigmas, losses = _values(batch.sigma), _values(batch.loss)
        for i, sigma in enumerate(sigmas):
            files = batch.files[i] if i < len(batch.files) else []
            loss = f", loss {losses[i]:.4g}" if i < len(losses) else ""
            names = ", ".join(str(p) for p in files) or "(files unknown)"
            lines.append(f"  sample {i}: sigma {sigma:.4f}{loss}; files {names}")
    lines.append("Check these samples (`ltx-trainer check CONFIG`), or lower optimization.learning_rate.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
