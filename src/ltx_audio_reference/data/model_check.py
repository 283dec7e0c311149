"""Check, from safetensors headers alone, that a model pack holds every weight that preprocessing loads.

ltx-core's loader builds a model on the meta device, loads what the files hold and, for any tensor a file lacks,
only logs "Uninitialized parameters or buffers" and hands the model back with those tensors still on the meta
device. Preprocessing then dies minutes later, deep in upstream code (``NotImplementedError: Cannot copy out of meta
tensor; no data!`` for a Gemma folder without weights). :func:`check_preprocessing_pack` runs the same key mapping on
the files' headers instead (no tensor is read, a 12B Gemma included) and names what is missing before anything
loads.

The components are those ltx-trainer 1.2.0's preprocessing loads, each through the configurator and state-dict ops
its ``model_loader`` uses: the Gemma text encoder, the embeddings processor (the text projection, from the
transformer checkpoint or a split pack's text-encoder file), the video VAE encoder and the audio VAE encoder. Needs
ltx-core >= 1.2.0 (what ltx-trainer 1.2.0 installs).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference.reliability import checkpoints

logger = logging.getLogger(__name__)

#: Config sections that only a monolithic checkpoint or a component file carries (a split pack's transformer has none).
COMPONENT_SECTIONS = frozenset({"vae", "audio_vae", "vocoder"})
_SHOWN = 5


@dataclass(frozen=True)
class PackPaths:
    """The files preprocessing reads: each component resolved as ltx-trainer resolves it."""

    model_path: Path
    text_encoder_path: Path
    video_vae_path: Path
    audio_vae_path: Path
    split: bool  # model_path is the transformer of a split pack (LTX-2.5)


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def read_config(path: Path) -> dict[str, Any]:
    """The JSON ``config`` entry of a safetensors file's metadata.

    Raises:
        ValueError: If the file is missing, is not safetensors, or carries no LTX ``config`` (the message says which).
    """
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable .safetensors file ({e})") from e
    try:
        config = checkpoints.metadata_config(metadata)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: no 'config' metadata, so not an LTX-2 checkpoint file")
    return config


def is_split_transformer(config: dict[str, Any]) -> bool:
    """Whether a checkpoint ``config`` is that of a split pack's transformer (ltx-trainer's own test)."""
    return "transformer" in config and not COMPONENT_SECTIONS & set(config)


def resolve_pack(
    model_path: Path,
    text_encoder_path: Path,
    video_vae_path: Path | None = None,
    audio_vae_path: Path | None = None,
) -> tuple[PackPaths | None, list[str]]:
    """Resolve the component files the way ltx-trainer does, naming every option that is missing or wrong.

    A monolithic checkpoint holds the VAEs itself; a split pack's transformer needs ``--video-vae-path`` and
    ``--audio-vae-path`` and a packed text-encoder ``.safetensors``.

    Returns:
        ``(paths, problems)``; ``paths`` is None when the model file itself is unusable.
    """
    problems: list[str] = []
    try:
        config = read_config(model_path)
    except ValueError as e:
        return None, [f"--model-path {e}"]
    if "transformer" not in config:
        problems.append(
            f"--model-path {model_path}: holds no transformer (its config has {', '.join(sorted(config))}): pass the "
            "LTX-2 checkpoint, or a split pack's transformer file"
        )
    split = is_split_transformer(config)
    if split:
        for option, value, kind in (
            ("--video-vae-path", video_vae_path, "video"),
            ("--audio-vae-path", audio_vae_path, "audio"),
        ):
            if value is None:
                problems.append(
                    f"{option}: required: {model_path} is the transformer of a split checkpoint pack (LTX-2.5), whose "
                    f"{kind} VAE is a file of its own (the pack's vae/ folder; what a training config's "
                    f"model.{option[2:].replace('-', '_')} names)"
                )
        if not _is_safetensors_file(text_encoder_path):
            problems.append(
                f"--text-encoder-path {text_encoder_path}: a split pack's text encoder is the packed .safetensors file "
                "(Gemma with LTX's text projection, in the pack's text_encoders/ folder), not a Gemma folder"
            )
    paths = PackPaths(
        model_path=model_path,
        text_encoder_path=text_encoder_path,
        video_vae_path=video_vae_path or model_path,
        audio_vae_path=audio_vae_path or model_path,
        split=split,
    )
    return paths, problems


def _is_safetensors_file(path: Path) -> bool:
    return path.suffix == ".safetensors" and path.is_file()


def missing_weights(
    paths: str | Sequence[str],
    configurator: Any,  # noqa: ANN401 - an ltx-core ModelConfigurator
    sd_ops: Any,  # noqa: ANN401 - ltx-core SDOps or None
    module_ops: tuple[Any, ...] = (),
) -> tuple[list[str], int]:
    """The tensors ltx-core's loader would leave on the meta device, from the files' headers alone.

    The model is built on the meta device exactly as ``SingleGPUModelBuilder.build`` builds it (same configurator,
    metadata and module ops); each header key goes through the same ``sd_ops`` key mapping and key/value operations
    (on a meta tensor of the stored shape), and whatever the model expects that no key supplies is missing.

    Args:
        paths: One safetensors file or several (shards).
        configurator: The ltx-core configurator the loader uses.
        sd_ops: The state-dict ops the loader uses (None: keys as stored).
        module_ops: The module ops the loader applies to the meta model.

    Returns:
        ``(missing tensor names, number of tensors the model expects from the files)``.
    """
    from safetensors import safe_open  # noqa: PLC0415

    from ltx_core.loader import SingleGPUModelBuilder  # noqa: PLC0415

    files = [paths] if isinstance(paths, str) else list(paths)
    builder = SingleGPUModelBuilder(
        model_path=paths if isinstance(paths, str) else tuple(files),
        model_class_configurator=configurator,
        model_sd_ops=sd_ops,
        module_ops=module_ops,
    )
    model = builder.meta_model(builder.model_metadata(), builder.module_ops)
    present: set[str] = set()
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                key = sd_ops.apply_to_key(name) if sd_ops is not None else name
                if key is None:
                    continue
                value = torch.empty(f.get_slice(name).get_shape(), device="meta")
                pairs = sd_ops.apply_to_key_value(key, value) if sd_ops is not None else [(key, value)]
                present.update(pair[0] for pair in pairs)
    expected = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    return [n for n in expected if n not in present], len(expected)


def _component_problem(option: str, path: Path, what: str, missing: list[str], expected: int) -> str | None:
    if not missing:
        return None
    count = f"none of the {expected}" if len(missing) == expected else f"{len(missing)} of the {expected}"
    return (
        f"{option} {path}: {what} is incomplete: {count} weights its loader needs are in the file(s) (missing: "
        f"{_listed(missing)}); ltx-core would leave them on the meta device and preprocessing would fail later. "
        "Re-download or re-export it"
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings off while a model is built on the meta device (upstream prints them when it loads)."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _check_text_encoder(pack: PackPaths) -> list[str]:
    from ltx_core.text_encoders.gemma import (  # noqa: PLC0415
        EMBEDDINGS_PROCESSOR_KEY_OPS,
        EmbeddingsProcessorConfigurator,
        GemmaTextEncoderConfigurator,
        get_gemma_ops,
    )
    from ltx_core.text_encoders.gemma.gemma_assets import resolve_gemma_weight_paths  # noqa: PLC0415

    path = pack.text_encoder_path
    if not path.exists():
        return [f"--text-encoder-path {path}: no such file or folder"]
    if path.is_dir() and not (path / "config.json").is_file():
        return [f"--text-encoder-path {path}: not a Gemma folder (no config.json); pass the Gemma folder or file"]
    text = str(path)
    problems: list[str] = []
    try:
        with _quiet_transformers():
            sd_ops, module_ops = get_gemma_ops(text)
            weights = tuple(resolve_gemma_weight_paths(text))
            missing, expected = missing_weights(
                weights, GemmaTextEncoderConfigurator.with_gemma_model_path(text), sd_ops, module_ops
            )
    except Exception as e:  # any failure to read it is a problem of the user's file, named here
        return [f"--text-encoder-path {path}: cannot be read as a Gemma text encoder ({type(e).__name__}: {e})"]
    problem = _component_problem("--text-encoder-path", path, "the Gemma text encoder", missing, expected)
    problems.extend([problem] if problem else [])

    embedding_paths = (str(pack.model_path), text) if _is_safetensors_file(path) else str(pack.model_path)
    try:
        with _quiet_transformers():
            missing, expected = missing_weights(
                embedding_paths,
                EmbeddingsProcessorConfigurator.with_gemma_model_path(text),
                EMBEDDINGS_PROCESSOR_KEY_OPS,
            )
    except Exception as e:  # as above
        return [*problems, f"--model-path {pack.model_path}: its text projection cannot be read ({e})"]
    if missing:
        problems.append(
            f"--model-path {pack.model_path}: the text projection and connectors are incomplete: {len(missing)} of "
            f"{expected} weights missing ({_listed(missing)}); check that --model-path and --text-encoder-path "
            "belong to the same LTX version"
        )
    return problems


def _check_video_vae(pack: PackPaths) -> list[str]:
    from ltx_core.model.video_vae import VAE_ENCODER_COMFY_KEYS_FILTER, VideoEncoderConfigurator  # noqa: PLC0415

    path = pack.video_vae_path
    option = "--video-vae-path" if path != pack.model_path else "--model-path"
    try:
        config = read_config(path)
    except ValueError as e:
        return [f"{option} {e}"]
    if "vae" not in config:
        return [f"{option} {path}: holds no video VAE (its config has {', '.join(sorted(config))})"]
    missing, expected = missing_weights(str(path), VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER)
    problem = _component_problem(option, path, "the video VAE encoder", missing, expected)
    return [problem] if problem else []


def _check_audio_vae(pack: PackPaths) -> list[str]:
    from ltx_audio_reference.data.precompute import PrecomputeError, check_audio_vae_file  # noqa: PLC0415

    option = "--audio-vae-path" if pack.audio_vae_path != pack.model_path else "--model-path"
    try:
        check_audio_vae_file(pack.audio_vae_path, option)
    except PrecomputeError as e:
        return [str(e)]
    return []


def check_preprocessing_pack(
    model_path: Path,
    text_encoder_path: Path,
    video_vae_path: Path | None = None,
    audio_vae_path: Path | None = None,
) -> tuple[PackPaths | None, list[str]]:
    """Check every file ltx-trainer's preprocessing loads, from headers only: each problem on one line, with its fix.

    Args:
        model_path: The LTX-2 checkpoint, or a split pack's transformer.
        text_encoder_path: The Gemma folder, or a split pack's packed text-encoder file.
        video_vae_path: A split pack's video VAE file (default: ``model_path``).
        audio_vae_path: A split pack's audio VAE file (default: ``model_path``).

    Returns:
        ``(paths, problems)``: the resolved files (None if the model file is unusable) and every problem found.
    """
    pack, problems = resolve_pack(Path(model_path), Path(text_encoder_path), video_vae_path, audio_vae_path)
    if pack is None:  # the other files' contents depend on the model file's kind; their existence does not
        for option, path in (
            ("--text-encoder-path", text_encoder_path),
            ("--video-vae-path", video_vae_path),
            ("--audio-vae-path", audio_vae_path),
        ):
            if path is not None and not Path(path).exists():
                problems.append(f"{option} {path}: no such file or folder")
        return None, problems
    if not problems:
        problems.extend(_check_text_encoder(pack))
        problems.extend(_check_video_vae(pack))
        problems.extend(_check_audio_vae(pack))
    return pack, problems
