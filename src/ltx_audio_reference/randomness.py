"""Per-sample random draws: each sample's sigma and noise are a function of ``(seed, epoch, sample index)``.

The stock strategies draw a batch's sigmas and noise from the process's global RNG stream. What a sample gets then
depends on how many processes share the global batch, how the batch is split, which samples came before it, and
whether the RNG state was restored on resume (the stock runner skips that restore with more than one process).

Here each sample gets its own seeds, derived from the run's seed, the epoch that drew it and its dataset index. The
same sample in the same epoch therefore gets the same sigma and noise on 1 or N processes, with any per-process batch
size, and after a resume. Within an epoch every sample is drawn once, so no two draws share a seed.

The bridge opens :func:`per_sample_draws` around each training step; a strategy asks :func:`current_key` and, when
one is set, builds :class:`SampleDraws` from the batch's ``idx``. Outside a step (direct calls, tests) the key is None
and strategies keep the global stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DrawKey:
    """What, besides the sample index, a sample's seeds depend on."""

    seed: int
    epoch: int


_current: ContextVar[DrawKey | None] = ContextVar("ltx_audio_reference_draw_key", default=None)


@contextlib.contextmanager
def per_sample_draws(seed: int, epoch: int) -> Iterator[DrawKey]:
    """Within this block, strategies that support it draw per-sample from ``(seed, epoch, index)``."""
    key = DrawKey(seed=int(seed), epoch=int(epoch))
    token = _current.set(key)
    try:
        yield key
    finally:
        _current.reset(token)


def current_key() -> DrawKey | None:
    """The key of the training step in progress, or None outside one."""
    return _current.get()


def sample_seed(key: DrawKey, index: int, stream: str) -> int:
    """A 63-bit seed for one sample and one stream (``"sigma"``, ``"noise"``), stable across platforms and versions.

    Distinct streams get unrelated seeds, so a sample's sigma and its noise are not drawn from the same sequence.
    """
    digest = hashlib.blake2b(f"{key.seed}:{key.epoch}:{int(index)}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _indices(idx: Tensor | Sequence[int] | int) -> list[int]:
    if isinstance(idx, Tensor):
        return [int(i) for i in idx.flatten().tolist()]
    if isinstance(idx, int):
        return [idx]
    return [int(i) for i in idx]


class SampleDraws:
    """The random draws of one batch, sample by sample.

    Args:
        key: The step's key (:func:`current_key`).
        idx: The batch's dataset indices (the stock ``PrecomputedDataset`` puts them in ``batch["idx"]``).
        device: Where the draws are made (a CUDA generator on a GPU, so the noise is drawn in place).
    """

    def __init__(self, key: DrawKey, idx: Tensor | Sequence[int] | int, device: torch.device | str) -> None:
        self.key = key
        self.indices = _indices(idx)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.indices)

    def generators(self) -> list[torch.Generator]:
        """One generator per sample for the noise and first-frame draws, seeded from its ``"noise"`` stream."""
        return [
            torch.Generator(device=self.device).manual_seed(sample_seed(self.key, index, "noise"))
            for index in self.indices
        ]

    def sigmas(self, sample_sigmas: Callable[[Tensor], Tensor], tokens: Tensor) -> Tensor:
        """Each sample's sigma from ``sample_sigmas`` (a trainer ``TimestepSampler.sample_for``) on its own tokens.

        Samplers draw from the global RNG, so each call runs in a forked RNG state seeded from the sample's
        ``"sigma"`` stream; the caller's global RNG state is left as it was.

        Raises:
            ValueError: If ``tokens`` does not have one row per sample.
        """
        if tokens.shape[0] != len(self.indices):
            raise ValueError(f"{tokens.shape[0]} token rows for {len(self.indices)} sample indices")
        devices = [self.device] if self.device.type == "cuda" else []
        out = []
        for row, index in enumerate(self.indices):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(sample_seed(self.key, index, "sigma"))
                out.append(sample_sigmas(tokens[row : row + 1]).reshape(-1)[:1])
        return torch.cat([s.to(tokens.device) for s in out])
