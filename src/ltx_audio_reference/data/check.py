"""Checks on a preprocessed dataset, without loading any model. Pure torch: no ltx-trainer import.

Each problem is one :class:`Problem` (file, expected, found), so the CLI prints one clear line per problem.
Files are read with ``torch.load(weights_only=True)``, so a pickled object is reported, never executed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference.layout import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_MEL_BINS,
    PRECOMPUTED_DIR_NAME,
    VIDEO_LATENT_CHANNELS,
)

logger = logging.getLogger(__name__)

#: macOS writes a resource fork ``._NAME`` next to files copied to a non-HFS disk; it is not a sample.
APPLE_DOUBLE_PREFIX = "._"


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
        yield Problem(path, "a tensor under key 'latents'", f"keys {sorted(data)}")
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

    With ``mmap`` the zip structure is validated (a truncated file still fails) but tensor data is read lazily.

    Raises:
        ValueError: If the file is unreadable, truncated, holds a pickled object or is not a dict.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"unreadable ({type(e).__name__}: {first_line})") from e
    if not isinstance(data, dict):
        raise ValueError(f"a {type(data).__name__}, not a dict of tensors")
    return data


def _check_file(
    path: Path, dir_name: str, kind: str | None, scan_limit: int | None
) -> tuple[list[Problem], int | None]:
    """Check one file; returns its problems and, for audio, its length in time steps."""
    try:
        data = load_sample_file(path, mmap=scan_limit is not None)
    except ValueError as e:
        return [Problem(str(path), "a .pt dict of tensors readable with weights_only=True", str(e))], None
    found_kind = classify(data)
    if kind is None and found_kind == "unknown":
        return [], None  # e.g. a stock strategy's mask folder: loadable is all we can say
    if kind is not None and found_kind not in (kind, "unknown"):
        return [Problem(str(path), f"{kind} data for folder {dir_name}/", f"{found_kind} data")], None
    check = CHECKS.get(kind or found_kind)
    if check is None:
        return [Problem(str(path), "video latents, audio latents or text conditions", f"keys {sorted(data)}")], None
    lat = data.get("latents")
    length = int(lat.shape[1]) if (kind or found_kind) == "audio" and isinstance(lat, torch.Tensor) else None
    return list(check(str(path), data, scan_limit)), length


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
        batch_size: The training batch size; with more than one, references of unequal length are a problem.
        max_files: Check at most this many samples' contents (pairing is always checked for all).
        scan_limit: Look for NaN/Inf only in tensors of at most this many elements, and memory-map files (None: scan
            everything). Shapes, dtypes and file integrity are always checked.

    Returns:
        Every problem found, in a stable order. Empty when the data is fine.
    """
    data_root = resolve_data_root(Path(root))
    if not data_root.is_dir():
        return [Problem(str(root), "an existing folder (data.preprocessed_data_root)", "no such folder")]

    problems: list[Problem] = []
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

    complete = sorted(set.intersection(*present.values())) if present else []
    audio_lengths: dict[str, set[int]] = {}
    for sample in complete[:max_files]:
        for dir_name in present:
            path = data_root / dir_name / _paired_name(dir_name, sample)
            file_problems, length = _check_file(path, dir_name, dirs[dir_name], scan_limit)
            problems.extend(file_problems)
            if length is not None:
                audio_lengths.setdefault(dir_name, set()).add(length)

    if batch_size > 1:
        for dir_name, lengths in audio_lengths.items():
            if "reference" in dir_name and len(lengths) > 1:
                problems.append(
                    Problem(
                        f"{data_root / dir_name}/",
                        f"one reference length for batch_size {batch_size} (references in a batch are stacked)",
                        f"lengths {sorted(lengths)} time steps; trim the references or set batch_size: 1",
                    )
                )
    return problems
