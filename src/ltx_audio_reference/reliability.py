"""Reliability: atomic checkpoint files, complete-pair selection on resume, finiteness guards, an exact-resume data
order and checks on untrusted files. Torch and the standard library only: no ltx-trainer import (the bridge wires
these into the stock runner, and the tier-1 tests cover them without it).

A checkpoint is a *pair* written by the stock runner into ``output_dir/checkpoints``:
``lora_weights_step_NNNNN.safetensors`` (or ``model_weights_...``) and ``training_state_step_NNNNN.pt``. Each file
is written to a temporary name in the same filesystem, flushed to disk, then renamed, so a ``SIGKILL`` at any moment
leaves either the previous complete file or the new complete one under the final name, never a partial one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import RandomSampler

from ltx_audio_reference.registry import ConfigurationError

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# Stock's _save_training_state writes into the folder it is given; the bridge gives it this sub-folder and moves the
# finished file up, so its own ``.pt.tmp`` name never appears next to the checkpoints.
STAGING_DIR_NAME = ".incoming"
WEIGHTS_NAME = re.compile(r"^(?:lora|model)_weights_step_(?P<step>\d+)\.safetensors$")
STATE_NAME = "training_state_step_{step}.pt"
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)" + re.escape(TEMP_SUFFIX) + "$")
_SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own limit on the JSON header

# Training state holds tensors and builtin containers only (step, config fingerprint, RNG bytes, scheduler and
# optimizer state dicts), all of which torch.load(weights_only=True) accepts: nothing needs allow-listing.
TRAINING_STATE_SAFE_GLOBALS: tuple[Any, ...] = ()


class NonFiniteError(RuntimeError):
    """A loss, gradient norm or parameter became NaN or Inf; training stopped before it reached a checkpoint."""


class CheckpointError(ConfigurationError):
    """A checkpoint or training-state file cannot be used (incomplete, untrusted, or of another model)."""


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk.

    Folders cannot be opened on Windows; there the rename itself is the only guarantee.
    """
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """The temporary name ``path`` is written under: hidden, in the same folder, tagged with this process id."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`temp_path_for`'s temporary names."""
    return _TEMP_NAME.match(name) is not None


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Write a file so that ``path`` holds either its old content or the complete new one, never a partial file.

    ``write(tmp)`` writes to a temporary name in the same folder; the file is then flushed to disk (fsync), renamed
    over ``path`` (``os.replace``, atomic within a filesystem) and the folder is flushed so the rename is durable.

    Args:
        path: The final file name.
        write: Writes the complete content to the path it is given.

    Returns:
        ``path``.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        fsync_path(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_move(src: Path, dst: Path) -> Path:
    """Flush ``src`` to disk, rename it to ``dst`` (same filesystem) and flush ``dst``'s folder.

    Returns:
        ``dst``.
    """
    fsync_path(src)
    Path(src).replace(dst)
    fsync_path(dst.parent)
    return dst


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete what an interrupted save left in ``folder``: other processes' temporary files and the staging folder.

    Call it only where one process writes checkpoints (the main process), before it writes.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file() and int(match["pid"]) != os.getpid():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    staging = folder / STAGING_DIR_NAME
    if staging.is_dir():
        for entry in staging.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    for path in removed:
        logger.info("Removed %s, left by an interrupted save", path)
    return removed


# ---------------------------------------------------------------------------------------------------------------
# Completeness of checkpoint files and choice of the pair to resume from
# ---------------------------------------------------------------------------------------------------------------


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file (tensor names to dtype, shape and data offsets), without the data.

    Raises:
        ValueError: If the header is unreadable or the file is shorter or longer than the header says.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"truncated: {size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", raw)
        if length > min(_SAFETENSORS_HEADER_LIMIT, size - 8):
            raise ValueError(f"truncated or not safetensors: header length {length} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"not safetensors: unreadable header ({e})") from e
    if not isinstance(header, dict):
        raise ValueError("not safetensors: the header is not a JSON object")
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        raise ValueError(f"truncated: {size} bytes, the header describes {expected}")
    return header


def safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is not complete, or None when it is."""
    try:
        read_safetensors_header(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        return str(e)
    return None


def torch_file_problem(path: Path) -> str | None:
    """Why a ``torch.save`` file is not complete, or None when it is.

    ``torch.save`` writes a zip archive whose central directory comes last, so a file cut short cannot open.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        return f"incomplete ({e})"
    return None


def state_path_for(weights: Path) -> Path | None:
    """The training-state file the stock runner writes next to a weights file (same step digits), or None."""
    match = re.search(r"step_(\d+)", Path(weights).name)
    return Path(weights).with_name(STATE_NAME.format(step=match[1])) if match else None


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint to resume from, and the newer files that were passed over, with why."""

    weights: Path
    state: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    note: str | None = None


def _candidates(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.rglob("*step_*.safetensors"):
        match = WEIGHTS_NAME.match(path.name)
        if match and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            found.append((int(match["step"]), path))
    return sorted(found, key=lambda item: (item[0], str(item[1])), reverse=True)


def select_checkpoint(folder: Path) -> CheckpointChoice | None:
    """Choose the newest complete checkpoint under ``folder`` (searched recursively, like the stock runner).

    Where training states exist, a checkpoint is complete only as a pair: complete weights plus a complete
    training state of the same step. Newer weights without their state (a save interrupted between the two files)
    are skipped. Temporary files and hidden folders are ignored. Where no pair exists (states off, or a folder the
    stock runner left half-cleaned), the newest complete weights are chosen, without a state.

    Returns:
        The choice, or None when no complete weights file exists.
    """
    folder = Path(folder)
    candidates = _candidates(folder)
    states_exist = any(
        not is_temp_name(p.name) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        for p in folder.rglob("training_state_step_*.pt")
    )
    skipped: list[tuple[Path, str]] = []
    complete: list[Path] = []
    for _, weights in candidates:
        problem = safetensors_problem(weights)
        if problem is not None:
            skipped.append((weights, problem))
            continue
        complete.append(weights)
        state = state_path_for(weights)
        if state is not None and state.is_file():
            state_problem = torch_file_problem(state)
            if state_problem is None:
                return CheckpointChoice(weights, state, skipped)
            skipped.append((weights, f"its training state {state.name} is {state_problem}"))
        elif states_exist:
            skipped.append((weights, "no training state was saved with it (an interrupted save)"))
        else:
            return CheckpointChoice(weights, None, skipped)
    if complete:
        newest = complete[0]
        others = [(p, why) for p, why in skipped if p != newest]
        return CheckpointChoice(newest, None, others, note="no complete weights + training state pair exists")
    logger.debug("No complete checkpoint under %s", folder)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Finiteness
# ---------------------------------------------------------------------------------------------------------------


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
# Untrusted files
# ---------------------------------------------------------------------------------------------------------------


def load_weights_only(path: Path, what: str, safe_globals: Sequence[Any] = ()) -> Any:  # noqa: ANN401
    """``torch.load`` with ``weights_only=True``: tensors and builtin containers only, never pickled code.

    Args:
        path: The file.
        what: What the file is, for the message (``"training state"``).
        safe_globals: Extra classes to allow, if any.

    Raises:
        CheckpointError: If the file holds anything else (it is not executed) or cannot be read.
    """
    import pickle  # noqa: PLC0415 - only for its exception type

    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), type(e).__name__)
        raise CheckpointError(
            f"{path}: refused: this {what} holds pickled objects that weights_only=True does not load ({detail}); "
            "nothing in it was executed. Delete it, or set checkpoints.no_resume: true to load the weights only"
        ) from e
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: unreadable {what} ({type(e).__name__}: {first}). Delete it, or set checkpoints.no_resume: true"
        ) from e


@dataclass(frozen=True)
class KeyMatch:
    """How a LoRA file's tensors line up with the LoRA tensors the model has."""

    expected: int
    matched: int
    unexpected: list[str]
    missing: list[str]
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        """Every tensor in the file has a place of the same shape in the model, and at least one matched."""
        return self.matched > 0 and not self.unexpected and not self.wrong_shape

    def describe(self, path: Path) -> str:
        """Why the file is refused, with the count of keys that matched."""
        parts = [f"{path}: {self.matched} of the model's {self.expected} LoRA tensors match this file"]
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} tensor(s) in the file have no place in the model (e.g. {self.unexpected[0]})"
            )
        if self.wrong_shape:
            key, found, want = self.wrong_shape[0]
            parts.append(f"{len(self.wrong_shape)} have another shape (e.g. {key}: {list(found)}, model {list(want)})")
        parts.append(
            "it was trained for another model, LoRA rank or target set. Pass a LoRA of this model and preset to "
            "model.load_checkpoint"
        )
        return "; ".join(parts)


def match_lora_keys(found: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]]) -> KeyMatch:
    """Compare a LoRA file's tensor shapes with the model's, key by key (both in the exported naming)."""
    wrong = [
        (k, tuple(found[k]), tuple(expected[k]))
        for k in found
        if k in expected and tuple(found[k]) != tuple(expected[k])
    ]
    return KeyMatch(
        expected=len(expected),
        matched=sum(1 for k in found if k in expected) - len(wrong),
        unexpected=sorted(k for k in found if k not in expected),
        missing=sorted(k for k in expected if k not in found),
        wrong_shape=wrong,
    )


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a ``.safetensors`` file, read from its header.

    Raises:
        CheckpointError: If the file is incomplete or not safetensors.
    """
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise CheckpointError(f"{path}: not a complete .safetensors file ({e})") from e
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def safetensors_dtypes(path: Path) -> set[str]:
    """The dtypes (``F32``, ``BF16``, ...) stored in a complete ``.safetensors`` file."""
    return {v["dtype"] for k, v in read_safetensors_header(path).items() if k != "__metadata__"}
