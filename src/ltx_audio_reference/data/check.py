"""Checks on a preprocessed dataset, without loading any model. Pure torch: no ltx-trainer import.

Each problem is one :class:`Problem` (file, expected, found), so the CLI prints one clear line per problem.
Files are read with ``torch.load(weights_only=True)``, so a pickled object is reported, never executed.

:func:`check_sources` is what training start and ``ltx-trainer check`` call: it takes a strategy's
``get_data_sources()`` (folder -> batch key), so each folder is checked as the kind of data its batch key holds, and
each reference is compared with its target.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference.layout import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_LATENT_SECONDS,
    AUDIO_MEL_BINS,
    AUDIO_ROPE_MAX_POS_S,
    DEFAULT_REFERENCE_GAP_S,
    PRECOMPUTED_DIR_NAME,
    VIDEO_LATENT_CHANNELS,
)
from ltx_audio_reference.reliability import checkpoints

logger = logging.getLogger(__name__)

#: macOS writes a resource fork ``._NAME`` next to files copied to a non-HFS disk; it is not a sample.
APPLE_DOUBLE_PREFIX = "._"
#: What each batch key of the stock strategies (and ``audio_reference``, which reuses their names) holds. Other keys
#: (the ``flexible`` strategy's reference and mask folders, named by folder) are classified by content.
KIND_OF_BATCH_KEY: dict[str, str] = {
    "latents": "video",
    "video_latents": "video",
    "ref_latents": "video",
    "conditions": "conditions",
    "audio_latents": "audio",
    "ref_audio_latents": "audio",
}
#: Reference batch keys and the target batch key each reference stands beside.
TARGET_OF_REFERENCE: dict[str, str] = {"ref_audio_latents": "audio_latents"}
#: A reference whose latents differ from its target's by at most this relative (Frobenius) norm is the target itself
#: (0.1 %: the same audio through another mel front end or dtype still counts).
IDENTICAL_RTOL = 1e-3
#: A reference gap longer than this (seconds) reads as a milliseconds slip where references overrun the RoPE range.
LONG_REFERENCE_GAP_S = 1.0

#: The text connector (modality) each prompt-embedding key of a conditions file goes through; the legacy
#: ``prompt_embeds`` goes through both.
CONNECTORS_OF_EMBED_KEY: dict[str, tuple[str, ...]] = {
    "video_prompt_embeds": ("video",),
    "audio_prompt_embeds": ("audio",),
    "prompt_embeds": ("video", "audio"),
}
_SHOWN_SAMPLES = 3

_KIND_DESCRIPTION = {
    "video": f"latents [{VIDEO_LATENT_CHANNELS}, F, H, W]",
    "audio": f"latents [{AUDIO_LATENT_CHANNELS}, T, {AUDIO_MEL_BINS}]",
    "conditions": "prompt embeddings",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data."""

    path: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.path}: expected {self.expected}; found {self.found}"


def resolve_data_root(root: Path) -> Path:
    """The folder the stock dataset reads: ``root/.precomputed`` when it exists, else ``root``."""
    return root / PRECOMPUTED_DIR_NAME if (root / PRECOMPUTED_DIR_NAME).is_dir() else root


def _paired_name(dir_name: str, rel: Path) -> Path:
    # The stock dataset maps legacy latents/latent_X.pt to conditions/condition_X.pt.
    if dir_name == "conditions" and rel.name.startswith("latent_"):
        return rel.with_name(f"condition_{rel.name[len('latent_') :]}")
    return rel


def _sample_key(dir_name: str, rel: Path) -> Path:
    if dir_name == "conditions" and rel.name.startswith("condition_"):
        return rel.with_name(f"latent_{rel.name[len('condition_') :]}")
    return rel


def _describe(t: torch.Tensor) -> str:
    return f"shape {list(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def _finite(path: str, key: str, t: torch.Tensor, scan_limit: int | None) -> Iterator[Problem]:
    if scan_limit is not None and t.numel() > scan_limit:
        return  # reading every value of large tensors is left to `ltx-trainer check`
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        yield Problem(f"{path} [{key}]", "finite values", f"{bad} NaN/Inf of {t.numel()}")


def _tensor(data: Mapping[str, Any], key: str) -> torch.Tensor | None:
    value = data.get(key)
    return value if isinstance(value, torch.Tensor) else None


def check_video_latents(path: str, data: Mapping[str, Any], scan_limit: int | None = None) -> Iterator[Problem]:
    """A ``latents/`` file: ``latents [128, F, H, W]`` (or legacy ``[F*H*W, 128]``) plus its geometry."""
    lat = _tensor(data, "latents")
    if lat is None:
        yield Problem(path, "a tensor under key 'latents'", f"keys {sorted(data)}")
        return
    if not lat.is_floating_point():
        yield Problem(f"{path} [latents]", "a floating-point tensor", _describe(lat))
        return
    if lat.dim() == 4:
        if lat.shape[0] != VIDEO_LATENT_CHANNELS:
            yield Problem(f"{path} [latents]", f"[{VIDEO_LATENT_CHANNELS}, F, H, W] video latents", _describe(lat))
        geometry = {"num_frames": lat.shape[1], "height": lat.shape[2], "width": lat.shape[3]}
        missing = [name for name in geometry if name not in data]
        if missing:
            # Every strategy reads them to place the video tokens; ltx-trainer's process_dataset.py writes them.
            yield Problem(path, "num_frames, height and width next to the latents", f"missing {missing}")
        for name, size in geometry.items():
            if name in data and int(data[name]) != size:
                yield Problem(f"{path} [{name}]", f"{size} (from the latents' shape)", str(int(data[name])))
    elif lat.dim() == 2:
        if lat.shape[1] != VIDEO_LATENT_CHANNELS:
            yield Problem(f"{path} [latents]", f"[F*H*W, {VIDEO_LATENT_CHANNELS}] legacy latents", _describe(lat))
        missing = [k for k in ("num_frames", "height", "width") if k not in data]
        if missing:
            yield Problem(path, "num_frames, height and width for legacy [seq, C] latents", f"missing {missing}")
    else:
        yield Problem(f"{path} [latents]", f"[{VIDEO_LATENT_CHANNELS}, F, H, W] video latents", _describe(lat))
    yield from _finite(path, "latents", lat, scan_limit)


def check_audio_latents(path: str, data: Mapping[str, Any], scan_limit: int | None = None) -> Iterator[Problem]:
    """An ``audio_latents/`` or ``reference_audio_latents/`` file: ``latents [8, T, 16]``."""
    lat = _tensor(data, "latents")
    if lat is None:
        yield Problem(
            path,
            f"a tensor under key 'latents' (audio latents [{AUDIO_LATENT_CHANNELS}, T, {AUDIO_MEL_BINS}], as "
            "ltx-trainer's process_dataset.py and `ltx-trainer audio-reference precompute` write them)",
            f"keys {sorted(data)}",
        )
        return
    expected = f"[{AUDIO_LATENT_CHANNELS}, T, {AUDIO_MEL_BINS}] audio latents"
    if not lat.is_floating_point():
        yield Problem(f"{path} [latents]", "a floating-point tensor", _describe(lat))
        return
    if lat.dim() != 3 or lat.shape[0] != AUDIO_LATENT_CHANNELS or lat.shape[2] != AUDIO_MEL_BINS:
        yield Problem(f"{path} [latents]", expected, _describe(lat))
    elif lat.shape[1] < 1:
        yield Problem(f"{path} [latents]", "at least one time step", _describe(lat))
    elif "num_time_steps" in data and int(data["num_time_steps"]) != lat.shape[1]:
        yield Problem(
            f"{path} [num_time_steps]", f"{lat.shape[1]} (from the latents' shape)", str(data["num_time_steps"])
        )
    yield from _finite(path, "latents", lat, scan_limit)


def check_conditions(path: str, data: Mapping[str, Any], scan_limit: int | None = None) -> Iterator[Problem]:
    """A ``conditions/`` file: prompt embeddings ``[L, D]`` and ``prompt_attention_mask [L]``."""
    embed_keys = [k for k in ("video_prompt_embeds", "audio_prompt_embeds", "prompt_embeds") if k in data]
    if not embed_keys:
        yield Problem(
            path, "'video_prompt_embeds' (and 'audio_prompt_embeds') or legacy 'prompt_embeds'", f"keys {sorted(data)}"
        )
        return
    mask = _tensor(data, "prompt_attention_mask")
    if mask is None:
        yield Problem(path, "a tensor under key 'prompt_attention_mask'", f"keys {sorted(data)}")
    elif mask.dim() != 1:
        yield Problem(f"{path} [prompt_attention_mask]", "shape [L]", _describe(mask))
    for key in embed_keys:
        emb = _tensor(data, key)
        if emb is None or emb.dim() != 2 or not emb.is_floating_point():
            found = _describe(emb) if emb is not None else type(data[key]).__name__
            yield Problem(f"{path} [{key}]", "a floating-point tensor of shape [L, D]", found)
            continue
        if mask is not None and mask.dim() == 1 and mask.shape[0] != emb.shape[0]:
            yield Problem(f"{path} [{key}]", f"length {mask.shape[0]} (the attention mask's)", _describe(emb))
        yield from _finite(path, key, emb, scan_limit)


def classify(data: Mapping[str, Any]) -> str:
    """Guess a file's kind from its content: ``video``, ``audio``, ``conditions`` or ``unknown``."""
    if any(k in data for k in ("video_prompt_embeds", "audio_prompt_embeds", "prompt_embeds")):
        return "conditions"
    lat = data.get("latents")
    if "num_time_steps" in data or "frequency_bins" in data:
        return "audio"
    if isinstance(lat, torch.Tensor):
        return "audio" if lat.dim() == 3 else "video"
    return "unknown"


CHECKS = {"video": check_video_latents, "audio": check_audio_latents, "conditions": check_conditions}


def load_sample_file(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load one ``.pt`` file the way training does (``weights_only=True``).

    With ``mmap`` the zip structure is validated (a truncated file still fails) but tensor data is read lazily; a
    file in torch's legacy (non-zip) format, which cannot be memory-mapped, is read whole, so ``check`` and training
    start say the same thing about every file.

    Raises:
        ValueError: If the file is empty, unreadable, truncated, holds a pickled object or is not a dict; the message
            says which, and how to fix it.
    """
    import pickle  # noqa: PLC0415 - only for its exception type

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ValueError(f"unreadable ({e.strerror or e})") from e
    if size == 0:
        raise ValueError(
            "unreadable: an empty file (0 bytes; a preprocessing run that died while writing it, or a full disk). "
            "Re-run the preprocessing for this sample, or remove it from every folder"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"a pickled {found[1]} object" if found else "a pickled Python object"
        numpy = " (torch.from_numpy(array) for a numpy array)" if found and found[1].startswith("numpy") else ""
        raise ValueError(
            f"unreadable: it holds {what}, which weights_only=True refuses to load (nothing in it was executed). "
            f"Save tensors and plain numbers only{numpy}, and re-run the preprocessing for this sample"
        ) from e
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first_sentence = first_line.split(". ", 1)[0]
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"unreadable (truncated: {size} bytes with no zip directory at the end; {first_sentence}). Re-run "
                "the preprocessing for this sample"
            ) from e
        raise ValueError(f"unreadable ({type(e).__name__}: {first_sentence})") from e
    if not isinstance(data, dict):
        raise ValueError(f"a {type(data).__name__}, not a dict of tensors")
    return data


def folder_kinds(sources: Mapping[str, str]) -> dict[str, str | None]:
    """Folder -> the kind of data it must hold, from a strategy's ``get_data_sources()`` (folder -> batch key).

    Folders whose batch key is not in :data:`KIND_OF_BATCH_KEY` map to None: their kind is read from each file.
    """
    return {folder: KIND_OF_BATCH_KEY.get(key) for folder, key in sources.items()}


def reference_folders(sources: Mapping[str, str]) -> dict[str, str]:
    """Reference folder -> the folder of the targets it pairs with, from ``get_data_sources()``."""
    folder_of = {key: folder for folder, key in sources.items()}
    return {
        folder_of[ref]: folder_of[target]
        for ref, target in TARGET_OF_REFERENCE.items()
        if ref in folder_of and target in folder_of
    }


def _reference_gap_of(strategy_config: Any) -> float | None:  # noqa: ANN401 - any strategy config
    """Seconds between a reference's end and its target's start, for strategies that place references before the
    target (``reference_positions: negative`` and ``reference_gap_s``, as ``audio_reference`` does); else None."""
    if getattr(strategy_config, "reference_positions", None) != "negative":
        return None
    return float(getattr(strategy_config, "reference_gap_s", DEFAULT_REFERENCE_GAP_S))


def _check_file(
    path: Path, dir_name: str, kind: str | None, scan_limit: int | None
) -> tuple[list[Problem], Mapping[str, Any] | None]:
    """Check one file; returns its problems and, when it holds the folder's kind of data, its content."""
    try:
        data = load_sample_file(path, mmap=scan_limit is not None)
    except ValueError as e:
        return [Problem(str(path), "a .pt dict of tensors readable with weights_only=True", str(e))], None
    found_kind = classify(data)
    if kind is None and found_kind == "unknown":
        return [], None  # e.g. a stock strategy's mask folder: loadable is all we can say
    if kind is not None and found_kind not in (kind, "unknown"):
        return [
            Problem(
                str(path),
                f"{kind} data ({_KIND_DESCRIPTION[kind]}) as in every file of {dir_name}/",
                f"{found_kind} data ({_KIND_DESCRIPTION[found_kind]}); this file belongs in another folder: "
                "re-run the preprocessing for this sample or remove it from every folder",
            )
        ], None
    check = CHECKS.get(kind or found_kind)
    if check is None:
        return [Problem(str(path), "video latents, audio latents or text conditions", f"keys {sorted(data)}")], None
    problems = list(check(str(path), data, scan_limit))
    return problems, (None if problems else data)


def _pairing_problems(data_root: Path, present: Mapping[str, set[Path]]) -> list[Problem]:
    problems = []
    for sample in sorted(set().union(*present.values())):
        first = next(d for d, samples in present.items() if sample in samples)
        for dir_name, samples in present.items():
            if sample not in samples:
                problems.append(
                    Problem(
                        f"{data_root / dir_name / _paired_name(dir_name, sample)}",
                        f"a file paired with {first}/{_paired_name(first, sample)}",
                        "missing",
                    )
                )
    return problems


@dataclass
class DatasetReport:
    """What a dataset check found: problems (training cannot start) and notes (it trains, but read this)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: int = 0


@dataclass
class _SampleRecord:
    """What the cross-sample checks need of one checked sample."""

    name: Path
    shapes: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)  # folder -> tensor key -> shape
    kinds: dict[str, str] = field(default_factory=dict)  # folder -> kind of this sample's file
    # Reference folder -> whether its file equals the target's (only where both were compared).
    equal_to_target: dict[str, bool] = field(default_factory=dict)

    def audio_length_s(self, dir_name: str) -> float | None:
        """Seconds of this sample's audio latents in ``dir_name``, or None."""
        shape = self.shapes.get(dir_name, {}).get("latents")
        if self.kinds.get(dir_name) != "audio" or shape is None or len(shape) != 3:
            return None
        return shape[1] * AUDIO_LATENT_SECONDS


def _same_audio(ref: torch.Tensor, target: torch.Tensor) -> bool:
    if ref.shape != target.shape:
        return False
    ref64, target64 = ref.double(), target.double()
    return float((ref64 - target64).norm()) <= IDENTICAL_RTOL * max(float(target64.norm()), 1e-12)


def _describe_shape(kind: str | None, shape: tuple[int, ...]) -> str:
    if kind == "audio" and len(shape) == 3:
        return f"{shape[1]} time steps ({shape[1] * AUDIO_LATENT_SECONDS:.2f} s)"
    return f"shape {list(shape)}"


def _batch_shape_problems(
    data_root: Path,
    records: list[_SampleRecord],
    folders: Iterable[str],
    batch_size: int,
    reported: Collection[tuple[str, str]] = (),
) -> list[Problem]:
    """One problem per folder and tensor key whose shape differs between samples (a batch stacks them), except the
    ``(folder, key)`` pairs in ``reported`` (their shapes are wrong for the model, a problem of their own)."""
    problems = []
    for dir_name in folders:
        kind = next((r.kinds[dir_name] for r in records if dir_name in r.kinds), None)
        keys = sorted(
            {k for r in records for k in r.shapes.get(dir_name, {})} - {k for d, k in reported if d == dir_name}
        )
        for key in keys:
            first_of: dict[tuple[int, ...], Path] = {}
            for r in records:
                shape = r.shapes.get(dir_name, {}).get(key)
                if shape is not None:
                    first_of.setdefault(shape, r.name)
            if len(first_of) < 2:
                continue
            shown = ", ".join(
                f"{_describe_shape(kind, shape)} in {name}" for shape, name in sorted(first_of.items())[:4]
            )
            more = f" and {len(first_of) - 4} more" if len(first_of) > 4 else ""
            length = kind == "audio" and key == "latents"
            what, unit = ("length", "length") if length else (f"shape of '{key}'", "shape")
            problems.append(
                Problem(
                    f"{data_root / dir_name}/",
                    f"one {what} in every sample for batch_size {batch_size} (the loader stacks the samples of a "
                    "batch into one tensor)",
                    f"{len(first_of)} {unit}s: {shown}{more}; trim or pad them to one {unit}, or set "
                    "optimization.batch_size: 1",
                )
            )
    return problems


def _identical_reference_problems(
    data_root: Path, records: list[_SampleRecord], references: Mapping[str, str]
) -> list[Problem]:
    problems = []
    for ref_dir, target_dir in references.items():
        compared = [r for r in records if ref_dir in r.equal_to_target]
        same = [r.name for r in compared if r.equal_to_target[ref_dir]]
        if same:
            shown = ", ".join(str(name) for name in same[:3]) + (f" and {len(same) - 3} more" if len(same) > 3 else "")
            problems.append(
                Problem(
                    f"{data_root / ref_dir}/",
                    f"references that differ from their target in {target_dir}/ (a reference equal to its target "
                    "gives the answer away: the LoRA learns to copy it)",
                    f"{len(same)} of {len(compared)} equal to their target ({shown}); make each reference from another "
                    "clip than its target (e.g. `ltx-trainer audio-reference precompute` with a reference_audio "
                    "column), or remove those samples",
                )
            )
    return problems


def _reference_length_notes(
    data_root: Path,
    records: list[_SampleRecord],
    references: Mapping[str, str],
    reference_gap_s: float | None,
    rope_max_pos_s: float,
) -> list[str]:
    notes = []
    for ref_dir, target_dir in references.items():
        lengths = [(r.name, r.audio_length_s(ref_dir), r.audio_length_s(target_dir)) for r in records]
        pairs = [(name, ref, target) for name, ref, target in lengths if ref is not None and target is not None]
        longer = [(name, ref, target) for name, ref, target in pairs if ref > target + 1e-9]
        if longer:
            name, ref, target = max(longer, key=lambda item: item[1] - item[2])
            notes.append(
                f"{len(longer)} of {len(pairs)} references in {data_root / ref_dir}/ are longer than their target "
                f"(most: {name}, {ref:.2f} s of reference for {target:.2f} s of target). That trains; each reference "
                "costs one token per 0.04 s every step"
            )
        if reference_gap_s is None or reference_gap_s >= rope_max_pos_s:
            continue  # a gap past the range is a problem of its own (_reference_gap_problem)
        past = [(name, ref) for name, ref, _ in pairs if ref + reference_gap_s > rope_max_pos_s + 1e-9]
        if past:
            name, ref = max(past, key=lambda item: item[1])
            if reference_gap_s > LONG_REFERENCE_GAP_S:
                fix = (
                    f"The {reference_gap_s:g} s gap takes most of that: reference_gap_s is in seconds (0.04 is one "
                    f"audio latent); if {reference_gap_s:g} was meant in milliseconds, write "
                    f"{reference_gap_s / 1000:g}. Else trim references to at most "
                    f"{rope_max_pos_s - reference_gap_s:.2f} s"
                )
            else:
                fix = f"Trim references to at most {rope_max_pos_s - reference_gap_s:.2f} s"
            notes.append(
                f"{len(past)} of {len(pairs)} references in {data_root / ref_dir}/ reach past the audio RoPE range: "
                f"{name} ({ref:.2f} s) starts {ref + reference_gap_s:.2f} s before the target (with the "
                f"{reference_gap_s:g} s gap), more than the {rope_max_pos_s:g} s that ltx-core scales audio "
                f"positions by (audio_positional_embedding_max_pos). {fix}"
            )
    return notes


def _embed_width_problems(
    data_root: Path, records: list[_SampleRecord], embed_widths: Mapping[str, int], model_path: Path | str | None
) -> list[tuple[str, str, Problem]]:
    """One problem per conditions folder and embedding key whose width (last dimension) differs from the width the
    model's text connector takes: the trainer's connectors would fail at the first step that draws such a sample.

    Returns:
        ``(folder, key, problem)`` triples.
    """
    problems = []
    model = f" of {model_path}" if model_path is not None else ""
    folders = sorted({d for r in records for d, kind in r.kinds.items() if kind == "conditions"})
    for dir_name in folders:
        for key, modalities in CONNECTORS_OF_EMBED_KEY.items():
            for modality in modalities:
                expected = embed_widths.get(modality)
                if expected is None:
                    continue
                shapes = [(r.name, r.shapes.get(dir_name, {}).get(key)) for r in records]
                checked = [(name, shape[-1]) for name, shape in shapes if shape is not None and len(shape) == 2]
                wrong: dict[int, list[Path]] = {}
                for name, width in checked:
                    if width != expected:
                        wrong.setdefault(width, []).append(_paired_name(dir_name, name))
                if not wrong:
                    continue
                found = "; ".join(
                    f"width {width} in {len(names)} of {len(checked)} samples ("
                    + ", ".join(str(n) for n in names[:_SHOWN_SAMPLES])
                    + (f" and {len(names) - _SHOWN_SAMPLES} more" if len(names) > _SHOWN_SAMPLES else "")
                    + ")"
                    for width, names in sorted(wrong.items())
                )
                problems.append(
                    (
                        dir_name,
                        key,
                        Problem(
                            f"{data_root / dir_name}/ [{key}]",
                            f"prompt embeddings [L, {expected}]: {expected} is the width the {modality} text connector"
                            f"{model} takes",
                            f"{found}. These captions were encoded for another model: preprocess them again with this "
                            "model's text encoder and checkpoint (model.text_encoder_path, model.model_path), or point "
                            "model.model_path at the model they were made for",
                        ),
                    )
                )
    return problems


def _reference_gap_problem(reference_gap_s: float | None, rope_max_pos_s: float) -> Problem | None:
    """A gap that alone reaches past the audio RoPE range puts every reference where the model has no positions."""
    if reference_gap_s is None or reference_gap_s < rope_max_pos_s:
        return None
    return Problem(
        "config training_strategy.reference_gap_s",
        f"seconds between a reference's end and its target's start, well inside the {rope_max_pos_s:g} s audio RoPE "
        "range (0.04 s is one audio latent)",
        f"{reference_gap_s:g} s, which alone reaches past that range, so every reference would sit outside the "
        f"positions the model knows. It is in seconds: for {reference_gap_s:g} ms write "
        f"reference_gap_s: {reference_gap_s / 1000:g}",
    )


def check_sources(
    root: Path,
    sources: Mapping[str, str],
    *,
    batch_size: int = 1,
    num_processes: int = 1,
    max_files: int | None = None,
    scan_limit: int | None = None,
    reference_gap_s: float | None = DEFAULT_REFERENCE_GAP_S,
    rope_max_pos_s: float = AUDIO_ROPE_MAX_POS_S,
    embed_widths: Mapping[str, int] | None = None,
    model_path: Path | str | None = None,
) -> DatasetReport:
    """Check the data a strategy reads: every folder of ``get_data_sources()``, as the kind its batch key holds.

    Args:
        root: ``data.preprocessed_data_root``.
        sources: The strategy's ``get_data_sources()``: folder (relative to the root) -> batch key.
        batch_size: The training batch size per process.
        num_processes: Training processes; each takes its own batches, so the dataset needs
            ``batch_size * num_processes`` samples.
        max_files: Check at most this many samples' contents (pairing is always checked for all).
        scan_limit: Look for NaN/Inf only in tensors of at most this many elements, and memory-map files.
        reference_gap_s: Seconds between a reference's end and its target's start, for the RoPE-range note; None
            where references do not sit before the target (no such note).
        rope_max_pos_s: The model's ``audio_positional_embedding_max_pos`` in seconds.
        embed_widths: The prompt-embedding width each text connector of the model takes (``{"video": D, "audio":
            D}``, :func:`~ltx_audio_reference.reliability.checkpoints.prompt_embed_widths`); every checked sample's
            embeddings are compared with it. None or empty: not compared.
        model_path: The checkpoint those widths were read from, for the messages.

    Returns:
        Problems (training would fail or learn nothing useful) and notes (it trains; worth knowing).
    """
    return _scan(
        Path(root),
        folder_kinds(sources),
        references=reference_folders(sources),
        batch_size=batch_size,
        num_processes=num_processes,
        max_files=max_files,
        scan_limit=scan_limit,
        reference_gap_s=reference_gap_s,
        rope_max_pos_s=rope_max_pos_s,
        embed_widths=embed_widths,
        model_path=model_path,
    )


def check_strategy_data(
    root: Path,
    strategy_config: Any,  # noqa: ANN401 - any registered or stock strategy config
    *,
    batch_size: int = 1,
    num_processes: int = 1,
    max_files: int | None = None,
    scan_limit: int | None = None,
    model_path: Path | str | None = None,
) -> DatasetReport:
    """:func:`check_sources` for a strategy config: its ``get_data_sources()``, its reference gap, and the RoPE range
    and text-connector widths of the checkpoint at ``model_path`` (read from its header; without one, ltx-core's
    default range and no width comparison). Training start and ``check`` call this."""
    rope = AUDIO_ROPE_MAX_POS_S
    widths: dict[str, int] = {}
    if model_path is not None:
        rope = checkpoints.audio_rope_max_pos_s(model_path, AUDIO_ROPE_MAX_POS_S)
        widths = checkpoints.prompt_embed_widths(model_path)
    return check_sources(
        Path(root).expanduser(),
        strategy_config.get_data_sources(),
        batch_size=batch_size,
        num_processes=num_processes,
        max_files=max_files,
        scan_limit=scan_limit,
        reference_gap_s=_reference_gap_of(strategy_config),
        rope_max_pos_s=rope,
        embed_widths=widths,
        model_path=model_path,
    )


def check_dataset(
    root: Path,
    dirs: Mapping[str, str | None],
    *,
    batch_size: int = 1,
    max_files: int | None = None,
    scan_limit: int | None = None,
) -> list[Problem]:
    """Check a preprocessed dataset.

    Args:
        root: ``data.preprocessed_data_root``.
        dirs: Folder name (relative to the root) -> expected kind (``video``, ``audio``, ``conditions``), or None to
            infer the kind from each file's content.
        batch_size: The training batch size; with more than one, tensors of unequal shape in a folder are a
            problem, and so are fewer complete samples than one batch.
        max_files: Check at most this many samples' contents (pairing is always checked for all).
        scan_limit: Look for NaN/Inf only in tensors of at most this many elements, and memory-map files (None: scan
            everything). Shapes, dtypes and file integrity are always checked.

    Returns:
        Every problem found, in a stable order. Empty when the data is fine.
    """
    return _scan(Path(root), dirs, batch_size=batch_size, max_files=max_files, scan_limit=scan_limit).problems


def _present_samples(data_root: Path, dirs: Mapping[str, str | None], problems: list[Problem]) -> dict[str, set[Path]]:
    """Each folder's samples (AppleDouble resource forks left out), with the folder, pairing and fork problems."""
    present: dict[str, set[Path]] = {}
    apple_double: dict[str, set[Path]] = {}
    for dir_name in dirs:
        folder = data_root / dir_name
        if not folder.is_dir():
            problems.append(Problem(f"{folder}/", "a folder required by the training strategy", "no such folder"))
            continue
        files = list(folder.rglob("*.pt"))
        forks = {p.relative_to(folder) for p in files if p.name.startswith(APPLE_DOUBLE_PREFIX)}
        if forks:
            logger.debug("Ignoring %d macOS AppleDouble file(s) (._*) in %s", len(forks), folder)
        apple_double[dir_name] = forks
        present[dir_name] = {_sample_key(dir_name, p.relative_to(folder)) for p in files} - forks
    if present and not any(present.values()):
        problems.append(Problem(str(data_root), "at least one sample (*.pt files)", "none"))
    problems.extend(_pairing_problems(data_root, present) if present else [])
    # Unpaired resource forks are skipped by the stock dataset too; forks paired in every folder it loads as samples.
    forks_everywhere = apple_double and len(apple_double) == len(dirs)
    loaded_forks = sorted(set.intersection(*apple_double.values())) if forks_everywhere else []
    if loaded_forks:
        problems.append(
            Problem(
                f"{data_root}/",
                "no macOS AppleDouble (._*) file in every folder: the stock dataset loads such a set as a sample",
                f"{len(loaded_forks)}, e.g. {loaded_forks[0]}; delete them: find {data_root} -name '._*' -delete",
            )
        )
    return present


def _scan(  # noqa: PLR0913 - check_sources' settings, passed on
    root: Path,
    dirs: Mapping[str, str | None],
    *,
    references: Mapping[str, str] | None = None,
    batch_size: int = 1,
    num_processes: int = 1,
    max_files: int | None = None,
    scan_limit: int | None = None,
    reference_gap_s: float | None = DEFAULT_REFERENCE_GAP_S,
    rope_max_pos_s: float = AUDIO_ROPE_MAX_POS_S,
    embed_widths: Mapping[str, int] | None = None,
    model_path: Path | str | None = None,
) -> DatasetReport:
    report = DatasetReport()
    data_root = resolve_data_root(root)
    if not data_root.is_dir():
        report.problems.append(Problem(str(root), "an existing folder (data.preprocessed_data_root)", "no such folder"))
        return report

    problems = report.problems
    present = _present_samples(data_root, dirs, problems)

    complete = sorted(set.intersection(*present.values())) if present else []
    report.samples = len(complete)
    needed = batch_size * num_processes
    if 0 < len(complete) < needed:
        per = f"batch_size {batch_size}" + (f" x {num_processes} processes" if num_processes > 1 else "")
        fits = max(1, len(complete) // num_processes)
        problems.append(
            Problem(
                str(data_root),
                f"at least {needed} complete samples for {per} (the loader drops an incomplete last batch, so fewer "
                "samples give no batch at all)",
                f"{len(complete)}; add samples or set optimization.batch_size: {fits}",
            )
        )

    references = {ref: target for ref, target in (references or {}).items() if ref in present and target in present}
    records: list[_SampleRecord] = []
    for sample in complete[:max_files]:
        record = _SampleRecord(sample)
        audio: dict[str, torch.Tensor] = {}  # this sample's audio latents, for the reference comparison only
        for dir_name in present:
            path = data_root / dir_name / _paired_name(dir_name, sample)
            file_problems, data = _check_file(path, dir_name, dirs[dir_name], scan_limit)
            problems.extend(file_problems)
            if data is None:
                continue
            record.shapes[dir_name] = {k: tuple(v.shape) for k, v in data.items() if isinstance(v, torch.Tensor)}
            record.kinds[dir_name] = dirs[dir_name] or classify(data)
            lat = data.get("latents")
            small = scan_limit is None or (isinstance(lat, torch.Tensor) and lat.numel() <= scan_limit)
            if record.kinds[dir_name] == "audio" and isinstance(lat, torch.Tensor) and small:
                audio[dir_name] = lat
        for ref_dir, target_dir in references.items():
            if ref_dir in audio and target_dir in audio:
                record.equal_to_target[ref_dir] = _same_audio(audio[ref_dir], audio[target_dir])
        records.append(record)

    widths = _embed_width_problems(data_root, records, embed_widths, model_path) if embed_widths else []
    if batch_size > 1:
        reported = {(dir_name, key) for dir_name, key, _ in widths}
        problems.extend(_batch_shape_problems(data_root, records, present, batch_size, reported))
    problems.extend(problem for _, _, problem in widths)
    problems.extend(_identical_reference_problems(data_root, records, references))
    if references and (gap := _reference_gap_problem(reference_gap_s, rope_max_pos_s)) is not None:
        problems.append(gap)
    report.notes.extend(_reference_length_notes(data_root, records, references, reference_gap_s, rope_max_pos_s))
    return report
