"""Determinism on any number of processes and across a resume: the data order and each sample's random draws are
functions of ``(seed, epoch)`` and ``(seed, epoch, sample index)``.

**Data order.** The loader gets its own generator, reseeded from ``(seed, epoch)`` every epoch, and a resumed run
starts at its position in the epoch (:class:`EpochSeededLoader`).

**Per-sample draws.** Each sample's sigma and noise are a function of ``(seed, epoch, sample index)``.

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
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import RandomSampler

logger = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------------------------------------------
# Data order: a function of (seed, epoch), so a resumed run continues mid-epoch exactly
# ---------------------------------------------------------------------------------------------------------------


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a fixed function of the run's seed and the epoch number."""
    return (seed * 1_000_003 + epoch) % (2**63)


def data_position(step: int, accumulation_steps: int, batches_per_epoch: int) -> tuple[int, int]:
    """Where the data stands after ``step`` optimization steps: ``(epoch, batches already drawn in it)``."""
    if batches_per_epoch <= 0:
        return 0, 0
    return divmod(max(step, 0) * accumulation_steps, batches_per_epoch)


def shuffling_sampler(loader: object) -> RandomSampler | None:
    """The ``RandomSampler`` behind a (possibly accelerate-prepared) data loader, or None."""
    node = getattr(loader, "batch_sampler", None)
    for _ in range(3):
        sampler = getattr(node, "sampler", None)
        if isinstance(sampler, RandomSampler):
            return sampler
        node = getattr(node, "batch_sampler", None)
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, RandomSampler) else None


def own_data_generator(loader: object) -> torch.Generator | None:
    """Give a shuffled data loader one private generator for its permutation and its iterator's base seed.

    A stock ``DataLoader`` draws each epoch's permutation, and each iterator's worker base seed, from the global RNG,
    which training also draws noise and timesteps from. With one generator of its own (reseeded per epoch by
    :class:`EpochSeededLoader`), the data order no longer moves the training RNG stream, or depends on it.

    Returns:
        The generator (the sampler's existing one where accelerate created it, for its cross-process sync), or None
        when the loader has no shuffling sampler.
    """
    sampler = shuffling_sampler(loader)
    if sampler is None or sampler.replacement:
        return None
    if sampler.generator is None:
        sampler.generator = torch.Generator()
    # accelerate's DataLoaderShard delegates to an inner DataLoader, whose attribute the iterator reads.
    getattr(loader, "base_dataloader", loader).generator = sampler.generator
    return sampler.generator


class EpochSeededLoader:
    """A shuffled data loader whose order is a function of ``(seed, epoch)`` and which can start mid-epoch.

    Every ``iter()`` reseeds the sampler's generator with :func:`epoch_seed` for the next epoch. The first
    iteration starts where ``consumed_batches()`` says the run stands (read lazily, on the first batch), skipping
    the batches already drawn without loading them. A run resumed from step N therefore sees the same batches as
    an uninterrupted run from step N + 1 on, whatever N is.

    Args:
        loader: The data loader (its sampler must draw from ``generator``).
        generator: The sampler's generator.
        seed: The run's seed.
        consumed_batches: Batches drawn before the first iteration (the resume step times gradient accumulation).
        skip: ``skip(loader, n)`` returns an iterable of ``loader`` without its first ``n`` batches.
    """

    def __init__(
        self,
        loader: Any,  # noqa: ANN401 - a torch or accelerate data loader
        generator: torch.Generator,
        seed: int,
        consumed_batches: Callable[[], int],
        skip: Callable[[Any, int], Iterable[Any]],
    ) -> None:
        self.loader = loader
        self.generator = generator
        self.seed = seed
        self.epoch: int | None = None
        self._consumed_batches = consumed_batches
        self._skip = skip

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def current_epoch(self) -> int | None:
        """The epoch of the batches being drawn (0-based), or None before the first ``iter()``."""
        return None if self.epoch is None else self.epoch - 1

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        if name == "loader":  # not yet set (copy, pickle)
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        offset = 0
        if self.epoch is None:
            self.epoch, offset = divmod(self._consumed_batches(), len(self.loader)) if len(self.loader) else (0, 0)
            if offset or self.epoch:
                logger.info("Data order restored: epoch %d, batch %d", self.epoch, offset)
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        yield from (self._skip(self.loader, offset) if offset else self.loader)


# ---------------------------------------------------------------------------------------------------------------
