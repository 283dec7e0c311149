"""Encode reference audio files through the LTX-2 audio VAE encoder into ``reference_audio_latents/``.

Each file becomes ``reference_audio_latents/<relative path>.pt`` holding ``latents`` ``[8, T, 16]`` float32,
``num_time_steps``, ``frequency_bins`` and ``duration`` (seconds of the input), the format ltx-trainer's
``process_dataset.py`` writes to ``audio_latents/``, so a sample's reference pairs with its target by relative path.

Sources:

- a folder: every audio file under it, named by its path relative to the folder;
- a manifest (CSV, JSON or JSONL, ltx-trainer's preprocessing format): the ``reference_audio`` column's files,
  named like upstream names every latent, by the ``video`` column's path relative to the manifest's folder (falling
  back to the reference path where there is no ``video`` column).

Audio is widened to stereo (mono duplicated; more channels averaged, then duplicated), resampled to the encoder's
rate and turned into a log-mel spectrogram by ltx-core's ``AudioProcessor`` or its plain-torch twin
(:mod:`ltx_audio_reference.data.mel`). Finished files are skipped, so a rerun only encodes what is missing;
each file is written to a temporary name and renamed, so a crash never leaves a truncated ``.pt``.

Before anything is loaded or written, the run checks:

- the checkpoint, from its safetensors header: that it holds an audio VAE (a split pack's transformer file does not;
  its audio VAE file does), and every weight of the encoder the config describes (ltx-core's loader builds an
  encoder with missing weights anyway, after logging "Uninitialized parameters", and it encodes garbage);
- every reference still to encode: that it reads and is long enough. All bad files are reported at once;
- PyAV, where some reference is not WAV, FLAC or OGG.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ltx_audio_reference.data.audio_io import AUDIO_EXTENSIONS, AudioReadError, needs_pyav, read_audio, wav_shortfall
from ltx_audio_reference.data.check import check_audio_latents
from ltx_audio_reference.data.manifest import MANIFEST_SUFFIXES, ManifestError, read_manifest
from ltx_audio_reference.data.media_tools import missing_pyav, require
from ltx_audio_reference.data.mel import FrontEnd, FrontEndChoice, front_end_for, import_audio_vae
from ltx_audio_reference.errors import StorageError
from ltx_audio_reference.reliability import checkpoints
from ltx_audio_reference.reliability.files import atomic_write, require_writable

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

REFERENCE_DIR = "reference_audio_latents"
TARGET_AUDIO_DIR = "audio_latents"
#: Config sections that only a full checkpoint or a component file carries (a split pack's transformer has none).
_COMPONENT_SECTIONS = frozenset({"vae", "audio_vae", "vocoder"})
_SHOWN = 10  # names listed in one message before "and N more"


class PrecomputeError(RuntimeError):
    """A reference could not be encoded; the message names the file."""


@dataclass(frozen=True)
class ReferenceItem:
    """One reference audio file and the relative name of its latent file."""

    audio_path: Path
    relative: Path  # e.g. clips/speaker_01.pt


@dataclass
class PrecomputeResult:
    """What a precompute run did."""

    output_dir: Path
    encoded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    unpaired: list[Path] = field(default_factory=list)  # no audio_latents/ twin, where that folder exists
    front_end: str | None = None
    #: References that encode but may not be what was meant (clipping, a file shorter than its header).
    warnings: list[str] = field(default_factory=list)


def relative_name(path: Path, root: Path) -> Path:
    """``path`` relative to ``root``; a path outside ``root`` keeps its own structure (as upstream names it)."""
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(*path.parts[1:]) if path.is_absolute() else path


def find_references(
    source: Path, *, reference_column: str = "reference_audio", media_column: str = "video"
) -> list[ReferenceItem]:
    """List the reference files of a folder or manifest, with the relative names their latents get.

    Args:
        source: A folder of audio files, or a ``.csv``/``.json``/``.jsonl`` manifest.
        reference_column: The manifest column naming the reference audio.
        media_column: The manifest column whose path names each sample (upstream's main media column).

    Returns:
        Items in a stable order (sorted paths for a folder, row order for a manifest).

    Raises:
        PrecomputeError: If ``source`` is missing, is an unsupported file, or the manifest lacks
            ``reference_column``.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        return [ReferenceItem(p, relative_name(p, source).with_suffix(".pt")) for p in files]
    if not source.is_file():
        raise PrecomputeError(f"{source}: no such folder or manifest")
    if source.suffix.lower() not in MANIFEST_SUFFIXES:
        raise PrecomputeError(
            f"{source}: expected a folder of audio files or a manifest ({', '.join(MANIFEST_SUFFIXES)})"
        )
    root = source.parent
    items = []
    try:
        rows = read_manifest(source)
    except ManifestError as e:
        raise PrecomputeError(str(e)) from e
    for index, row in enumerate(rows):
        reference = str(row.get(reference_column) or "").strip()
        if not reference:
            raise PrecomputeError(
                f"{source}: row {index + 1} has no {reference_column!r} value; pass --reference-column to name "
                "the column holding the reference audio"
            )
        audio_path = root / reference
        naming = str(row.get(media_column) or "").strip()
        relative = relative_name(root / naming if naming else audio_path, root).with_suffix(".pt")
        items.append(ReferenceItem(audio_path, relative))
    return items


def build_meta_audio_encoder(config: dict[str, Any]) -> torch.nn.Module:
    """The ``AudioEncoder`` a checkpoint's ``config`` describes, on the meta device (no weights, no memory).

    Args:
        config: The checkpoint's JSON ``config`` metadata entry (``{"audio_vae": ...}``).

    Returns:
        The encoder with every parameter and buffer on the meta device; its rate, FFT size and state-dict keys are
        those the real one gets. Works with ltx-core 1.0 (``from_config``) and 1.2 (``from_metadata``).
    """
    configurator = import_audio_vae().AudioEncoderConfigurator
    with torch.device("meta"):
        if hasattr(configurator, "from_metadata"):  # ltx-core 1.2
            return configurator.from_metadata({"config": config})
        return configurator.from_config(config)  # ltx-core 1.0


def _checkpoint_key(name: str) -> str:
    """A name in the encoder's state dict as a checkpoint stores it (ltx-core's encoder key filter, inverted)."""
    if name.startswith("per_channel_statistics."):
        return f"audio_vae.{name}"
    return f"audio_vae.encoder.{name}"


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


@dataclass(frozen=True)
class AudioVaeFile:
    """A checkpoint that holds a complete audio VAE encoder (what :func:`check_audio_vae_file` found)."""

    path: Path
    sample_rate: int
    n_fft: int


def check_audio_vae_file(model_path: Path, option: str = "--model-path") -> AudioVaeFile:
    """Check, from the safetensors header alone, that a checkpoint holds a complete audio VAE encoder.

    Args:
        model_path: A full LTX-2 checkpoint, or the audio VAE file of a split pack.
        option: The command-line option that named the file, for the messages.

    Returns:
        The file and its encoder's sample rate and FFT size.

    Raises:
        PrecomputeError: If the file is missing or not safetensors, carries no LTX-2 config, holds no audio VAE (a
            split pack's transformer file is named as such), or lacks any weight of the encoder its config
            describes (the missing keys are named).
    """
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    path = Path(model_path)
    if not path.is_file():
        raise PrecomputeError(f"{path}: no such checkpoint file ({option})")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise PrecomputeError(f"{path}: not a readable safetensors checkpoint ({e})") from e
    try:
        config = checkpoints.metadata_config(metadata)
    except ValueError as e:
        raise PrecomputeError(f"{path}: {e}: not an LTX-2 checkpoint") from e
    if not isinstance(config, dict):
        raise PrecomputeError(
            f"{path}: no 'config' metadata, so not an LTX-2 checkpoint: pass a full LTX-2 checkpoint or a split "
            f"pack's audio VAE file to {option}"
        )
    sections = sorted(config)
    if "audio_vae" not in config:
        if "transformer" in config and not _COMPONENT_SECTIONS & set(config):
            raise PrecomputeError(
                f"{path} is the transformer file of a split checkpoint pack and holds no audio VAE: pass the "
                f"pack's audio VAE file (what a training config's model.audio_vae_path names) to {option}"
            )
        raise PrecomputeError(
            f"no audio VAE in this file: {path} (its config has {', '.join(sections) or 'no sections'}): pass a "
            f"full LTX-2 checkpoint or a split pack's audio VAE file to {option}"
        )
    encoder = build_meta_audio_encoder(config)
    key_filter = import_audio_vae().AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER
    present = {key_filter.apply_to_key(key) for key in keys} - {None}
    expected = list(encoder.state_dict())
    missing = [_checkpoint_key(name) for name in expected if name not in present]
    if missing:
        raise PrecomputeError(
            f"{path}: the audio VAE encoder is incomplete: {len(missing)} of its {len(expected)} weights are not in "
            f"the file ({_listed(missing)}). ltx-core would build it anyway and encode garbage: re-download or "
            "re-export the checkpoint"
        )
    return AudioVaeFile(path=path, sample_rate=int(encoder.sample_rate), n_fft=int(encoder.n_fft))


def load_audio_encoder(
    model_path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """Load the LTX-2 audio VAE encoder from a checkpoint with ltx-core's loader (as ltx-trainer does).

    The file's metadata must declare an ``audio_vae`` section, and every encoder tensor must be in the file:
    ltx-core only logs a warning for missing tensors and returns the encoder on the meta device, which would fail
    later with an unrelated error.

    Args:
        model_path: A full LTX-2 checkpoint, or the audio VAE file of a split pack (LTX-2.5).
        device: Where to put the encoder.
        dtype: Weight dtype; float32 (the default) is what ltx-trainer uses for preprocessing.

    Returns:
        The ``AudioEncoder`` in eval mode.

    Raises:
        PrecomputeError: If the file holds no complete audio VAE encoder (:func:`check_audio_vae_file`), or the
            loader left any weight uninitialised.
    """
    from ltx_core.loader import SingleGPUModelBuilder  # noqa: PLC0415

    check_audio_vae_file(model_path)
    audio_vae = import_audio_vae()
    encoder = SingleGPUModelBuilder(
        model_path=str(model_path),
        model_class_configurator=audio_vae.AudioEncoderConfigurator,
        model_sd_ops=audio_vae.AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
    ).build(device=torch.device(device), dtype=dtype)
    tensors = [*encoder.named_parameters(), *encoder.named_buffers()]
    uninitialised = [_checkpoint_key(name) for name, tensor in tensors if tensor.is_meta]
    if uninitialised:  # e.g. a key the file holds under a name the filter does not map
        raise PrecomputeError(
            f"{model_path}: the loader left {len(uninitialised)} audio VAE encoder weight(s) uninitialised "
            f"({_listed(uninitialised)}): re-download or re-export the checkpoint"
        )
    return encoder.eval()


def to_stereo(waveform: torch.Tensor) -> torch.Tensor:
    """``[channels, samples]`` to ``[2, samples]``: mono duplicated, more than two channels averaged and duplicated."""
    channels = waveform.shape[0]
    if channels == 2:
        return waveform
    if channels > 2:
        logger.debug("Averaging %d channels to mono before widening to stereo", channels)
        waveform = waveform.mean(dim=0, keepdim=True)
    return waveform.expand(2, -1).contiguous()


@torch.inference_mode()
def encode_waveform(
    encoder: torch.nn.Module, front_end: FrontEnd, waveform: torch.Tensor, sample_rate: int
) -> dict[str, Any]:
    """Encode one waveform into an ``audio_latents``-format record.

    Args:
        encoder: An ltx-core ``AudioEncoder``.
        front_end: Its front end (:func:`ltx_audio_reference.data.mel.front_end_for`).
        waveform: ``[channels, samples]`` at ``sample_rate``.
        sample_rate: In Hz.

    Returns:
        ``{"latents": [8, T, 16] float32 CPU, "num_time_steps": T, "frequency_bins": 16, "duration": seconds}``.
    """
    parameter = next(encoder.parameters())
    stereo = to_stereo(waveform.to(torch.float32))
    mel = front_end(stereo[None].to(device=parameter.device, dtype=parameter.dtype), sample_rate)
    latents = encoder(mel.to(parameter.dtype))[0]
    return {
        "latents": latents.to(device="cpu", dtype=torch.float32).contiguous(),
        "num_time_steps": int(latents.shape[1]),
        "frequency_bins": int(latents.shape[2]),
        "duration": waveform.shape[-1] / sample_rate,
    }


def _read_trimmed(item: ReferenceItem, max_duration: float | None) -> tuple[np.ndarray, int]:
    samples, sample_rate = read_audio(item.audio_path)
    if max_duration is not None:
        samples = samples[:, : round(max_duration * sample_rate)]
    return samples, sample_rate


def _measure(item: ReferenceItem, samples: np.ndarray, warnings: list[str]) -> str | None:
    """A problem (non-finite samples) or warnings (clipping, a file shorter than its header) about one reference."""
    import numpy as np  # noqa: PLC0415

    finite = np.isfinite(samples)
    if not finite.all():
        bad = int((~finite).sum())
        return (
            f"{item.audio_path}: {bad} of {samples.size} samples are NaN or Inf; the encoder would turn them into "
            "non-finite latents. Re-export the file (a float WAV written from a failed computation, say)"
        )
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:
        warnings.append(
            f"{item.audio_path}: peaks at {peak:.3g} ({20 * math.log10(peak):+.1f} dB over full scale): a float file "
            "louder than [-1, 1], which the audio VAE never saw in training (it encodes clipped audio as loud "
            "distortion). Normalize it (divide by its peak) or check the export gain"
        )
    short = wav_shortfall(item.audio_path)
    if short is not None:
        declared, present = short
        warnings.append(
            f"{item.audio_path}: ends after {present:.2f} s, while its header says {declared:.2f} s (cut short by an "
            "interrupted copy or export?): only the part present is encoded"
        )
    return None


def _check_references(
    items: list[ReferenceItem], encoder_rate: int, n_fft: int, max_duration: float | None
) -> list[str]:
    """Read and measure every reference once; raise naming each one that cannot be encoded (all at once).

    Returns:
        Warnings: references that encode but may not be what was meant (clipping, cut short).

    Raises:
        PrecomputeError: Naming every file that is unreadable, too short, or holds NaN or Inf samples.
    """
    problems: list[str] = []
    warnings: list[str] = []
    for item in items:
        try:
            samples, sample_rate = _read_trimmed(item, max_duration)
        except AudioReadError as e:
            problems.append(str(e))
            continue
        if (problem := _measure(item, samples, warnings)) is not None:
            problems.append(problem)
            continue
        # The centred STFT reflect-pads n_fft // 2 samples, which needs a longer signal at the encoder's rate.
        min_samples = math.ceil((n_fft // 2 + 1) * sample_rate / encoder_rate)
        if samples.shape[-1] < min_samples:
            problems.append(
                f"{item.audio_path}: too short to encode ({samples.shape[-1]} samples at {sample_rate} Hz; "
                f"need at least {min_samples})"
            )
    if problems:
        raise PrecomputeError(
            "\n".join(
                [
                    f"{len(problems)} of {len(items)} reference file(s) cannot be encoded; nothing was written:",
                    *(f"  {problem}" for problem in problems),
                ]
            )
        )
    return warnings


def _written_so_far(result: PrecomputeResult, todo: list[ReferenceItem]) -> str:
    return (
        f"{len(result.encoded)} of the {len(todo)} reference(s) to encode were written, each complete, under "
        f"{result.output_dir}"
    )


def _write_checked(
    item: ReferenceItem, record: dict[str, Any], result: PrecomputeResult, todo: list[ReferenceItem]
) -> None:
    """Write one record, only if it passes the data check ``ltx-trainer check`` runs (an encoder that produced NaN).

    Raises:
        PrecomputeError: If the record fails the check (not written).
        StorageError: If the write failed, saying what was written and how to go on.
    """
    target = result.output_dir / item.relative
    bad = [str(problem) for problem in check_audio_latents(str(target), record)]
    if bad:
        raise PrecomputeError(
            f"{item.audio_path}: its latents fail the data check, so they were not written: {'; '.join(bad)}. "
            f"{_written_so_far(result, todo)}"
        )
    try:
        atomic_write(target, functools.partial(torch.save, record))
    except StorageError as e:
        raise e.with_context(
            safe=_written_so_far(result, todo) + "; no partial file was left",
            next_step="Free space (or make the folder writable) and run the same command again: the references "
            "already encoded are skipped.",
        ) from e
    result.encoded.append(item.relative)


@dataclass
class ReferencePlan:
    """What a precompute run will do, checked before anything loads or is written (:func:`plan_reference_latents`)."""

    items: list[ReferenceItem]
    todo: list[ReferenceItem]
    skipped: list[Path]
    output_dir: Path
    warnings: list[str] = field(default_factory=list)


def plan_reference_latents(
    source: Path,
    output_root: Path,
    *,
    model_path: Path | None = None,
    encoder: torch.nn.Module | None = None,
    max_duration: float | None = None,
    overwrite: bool = False,
    reference_column: str = "reference_audio",
    media_column: str = "video",
    model_option: str = "--model-path",
    redo: Collection[Path] = (),
) -> ReferencePlan:
    """List the references to encode and check everything that could stop the encoding, loading and writing nothing.

    Checks the checkpoint's audio VAE encoder (from its header), PyAV where a reference needs it, and every reference
    still to encode (readable, long enough). Files whose latents exist are skipped unless ``overwrite``.

    Args:
        source: A folder of audio files or a manifest (see :func:`find_references`).
        output_root: The preprocessed dataset root.
        model_path: Checkpoint holding the audio VAE; needed unless ``encoder`` is given or nothing is left to do.
        encoder: An already-loaded ``AudioEncoder``.
        max_duration: Trim each reference to at most this many seconds.
        overwrite: Re-encode files that already exist.
        reference_column: Manifest column with the reference audio.
        media_column: Manifest column naming each sample.
        model_option: The command-line option that names ``model_path``, for messages.
        redo: Names (``item.relative``) to encode again although their latents exist (their inputs changed).

    Returns:
        The items, those still to encode and those skipped.

    Raises:
        PrecomputeError: Naming every unreadable or too-short file, a bad source, no model, or a checkpoint without
            a complete audio VAE encoder.
        MissingToolError: If some reference needs PyAV and it is not installed.
    """
    items = find_references(source, reference_column=reference_column, media_column=media_column)
    out_dir = Path(output_root) / REFERENCE_DIR
    if max_duration is not None and max_duration <= 0:
        raise PrecomputeError(f"max_duration must be positive, got {max_duration}")
    todo, skipped, warnings = [], [], []
    for item in items:
        if (out_dir / item.relative).is_file() and not overwrite and item.relative not in redo:
            skipped.append(item.relative)
        else:
            todo.append(item)
    if todo:
        if encoder is not None:
            sample_rate, n_fft = int(encoder.sample_rate), int(encoder.n_fft)
        elif model_path is None:
            raise PrecomputeError(f"precompute needs a model checkpoint ({model_option}) holding the audio VAE")
        else:
            checked = check_audio_vae_file(model_path, model_option)
            sample_rate, n_fft = checked.sample_rate, checked.n_fft
        pyav_files = [item.audio_path for item in todo if needs_pyav(item.audio_path)]
        if pyav_files:
            require(
                f"precompute ({len(pyav_files)} reference(s) such as {pyav_files[0]} are not WAV, FLAC or OGG)",
                missing_pyav(),
            )
        warnings = _check_references(todo, sample_rate, n_fft, max_duration)
    return ReferencePlan(items=items, todo=todo, skipped=skipped, output_dir=out_dir, warnings=warnings)


def precompute_reference_latents(  # noqa: PLR0913
    source: Path,
    output_root: Path,
    *,
    model_path: Path | None = None,
    encoder: torch.nn.Module | None = None,
    device: str = "cpu",
    front_end: FrontEndChoice = "auto",
    max_duration: float | None = None,
    overwrite: bool = False,
    reference_column: str = "reference_audio",
    media_column: str = "video",
    progress: Callable[[int, int], None] | None = None,
    model_option: str = "--model-path",
) -> PrecomputeResult:
    """Encode every reference of ``source`` into ``output_root/reference_audio_latents/``.

    The encoder is loaded only if some file still needs encoding, so a rerun over a finished dataset is instant.

    Args:
        source: A folder of audio files or a manifest (see :func:`find_references`).
        output_root: The preprocessed dataset root (``data.preprocessed_data_root``, e.g. ``.precomputed``).
        model_path: Checkpoint holding the audio VAE; needed unless ``encoder`` is given.
        encoder: An already-loaded ``AudioEncoder`` (tests, notebooks).
        device: Device for the encoder when loading it.
        front_end: ``auto``, ``ltx-core`` or ``torch`` (see :func:`~ltx_audio_reference.data.mel.front_end_for`).
        max_duration: Trim each reference to at most this many seconds.
        overwrite: Re-encode files that already exist.
        reference_column: Manifest column with the reference audio.
        media_column: Manifest column naming each sample.
        progress: Called as ``progress(done, total)`` before the first file and after each one (the CLI draws its
            progress bar from it).
        model_option: The command-line option that names ``model_path``, for messages.

    Returns:
        The encoded, skipped and unpaired relative paths.

    Raises:
        PrecomputeError: Before anything loads or is written: naming every unreadable, too-short or non-finite
            file, a bad source, no model, or a checkpoint without a complete audio VAE encoder. During the run: a
            file whose latents fail the data check (not written).
        StorageError: The output folder cannot be written (before the encoder loads), or the disk fills or the
            folder vanishes during the run; the message says what was written and how to go on.
        MissingToolError: If some reference needs PyAV and it is not installed.
    """
    # Everything that can fail is checked before the model loads and before the first file is written.
    plan = plan_reference_latents(
        source,
        output_root,
        model_path=model_path,
        encoder=encoder,
        max_duration=max_duration,
        overwrite=overwrite,
        reference_column=reference_column,
        media_column=media_column,
        model_option=model_option,
    )
    items, todo, out_dir = plan.items, plan.todo, plan.output_dir
    result = PrecomputeResult(output_dir=out_dir, skipped=list(plan.skipped))
    if not items:
        logger.warning("No reference audio found in %s", source)
        return result
    result.warnings = list(plan.warnings)
    for warning in result.warnings:
        logger.warning("%s", warning)
    if todo:
        require_writable(
            out_dir,
            safe="nothing was written (checked before loading the encoder)",
            next_step="Point --output at a folder this user can write, with free space.",
        )

    if progress is not None:
        progress(len(result.skipped), len(items))
    fe: FrontEnd | None = None
    for done, item in enumerate(todo, start=len(result.skipped) + 1):
        if encoder is None:
            logger.info("Loading the audio VAE encoder from %s", model_path)
            encoder = load_audio_encoder(model_path, device=device)
        if fe is None:
            fe = front_end_for(encoder, front_end)
            result.front_end = fe.name
            logger.info("Front end: %s", fe.name)
        samples, sample_rate = _read_trimmed(item, max_duration)
        _write_checked(item, encode_waveform(encoder, fe, torch.from_numpy(samples), sample_rate), result, todo)
        if progress is not None:
            progress(done, len(items))

    targets = Path(output_root) / TARGET_AUDIO_DIR
    if targets.is_dir():
        result.unpaired = [item.relative for item in items if not (targets / item.relative).is_file()]
        if result.unpaired:
            shown = ", ".join(str(p) for p in result.unpaired[:5])
            logger.warning(
                "%d reference(s) have no %s/ twin (e.g. %s): check that references and targets are named alike",
                len(result.unpaired),
                TARGET_AUDIO_DIR,
                shown,
            )
    logger.info(
        "Reference latents: %d encoded, %d already done, in %s", len(result.encoded), len(result.skipped), out_dir
    )
    return result
