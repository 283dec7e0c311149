"""Checkpoint files: completeness, the pair to resume from, untrusted training states and LoRA key matching.

A checkpoint is a *pair* written by the stock runner into ``output_dir/checkpoints``:
``lora_weights_step_NNNNN.safetensors`` (or ``model_weights_...``) and ``training_state_step_NNNNN.pt``. Torch and the
standard library only: the bridge wires these into the stock runner, and the tier-1 tests cover them without it.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference.errors import CheckpointError
from ltx_audio_reference.reliability.files import is_temp_name

logger = logging.getLogger(__name__)

WEIGHTS_NAME = re.compile(r"^(?:lora|model)_weights_step_(?P<step>\d+)\.safetensors$")
STATE_NAME = "training_state_step_{step}.pt"
_SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own limit on the JSON header

# Training state holds tensors and builtin containers only (step, config fingerprint, RNG bytes, scheduler and
# optimizer state dicts), all of which torch.load(weights_only=True) accepts: nothing needs allow-listing.
TRAINING_STATE_SAFE_GLOBALS: tuple[Any, ...] = ()


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


def no_checkpoint_reason(folder: Path) -> str:
    """Why :func:`select_checkpoint` found nothing under ``folder``, for the user."""
    candidates = _candidates(Path(folder))
    if not candidates:
        return "it holds no lora_weights_step_N.safetensors (or model_weights_...) file"
    shown = "; ".join(f"{path.name}: {safetensors_problem(path)}" for _, path in candidates[:3])
    more = f"; and {len(candidates) - 3} more" if len(candidates) > 3 else ""
    return f"no weights file there is complete ({shown}{more})"


def metadata_config(metadata: Mapping[str, Any] | None) -> Any:  # noqa: ANN401 - any JSON value
    """The JSON ``config`` entry of a safetensors file's metadata (what LTX-2 checkpoints carry), parsed; None when
    there is none (absent or empty). Callers decide what a value other than an object means for them.

    Raises:
        ValueError: If the entry is not JSON (``its 'config' metadata is not JSON (...)``).
    """
    raw = metadata.get("config") if isinstance(metadata, Mapping) else None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"its 'config' metadata is not JSON ({e})") from e


def header_config(header: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON ``config`` entry of a safetensors header's metadata (:func:`metadata_config`), or None.

    Raises:
        ValueError: If the entry is there but is not a JSON object.
    """
    config = metadata_config(header.get("__metadata__"))
    if config is not None and not isinstance(config, dict):
        raise ValueError("its 'config' metadata is not a JSON object")
    return config


def audio_rope_max_pos_s(model_path: Path | str, default: float) -> float:
    """``audio_positional_embedding_max_pos`` (seconds) from a checkpoint's ``config`` metadata, or ``default``.

    Only the safetensors header is read.
    """
    try:
        transformer = (header_config(read_safetensors_header(Path(model_path))) or {}).get("transformer", {})
        return float(transformer.get("audio_positional_embedding_max_pos", [default])[0])
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return default


#: The text connectors of an LTX-2 transformer checkpoint: modality -> the module's name in the header.
_CONNECTORS = {"video": "video_embeddings_connector", "audio": "audio_embeddings_connector"}
#: Tensors whose last dimension is a connector's width (the width of the prompt embeddings it takes).
_CONNECTOR_WIDTH_TENSORS = ("learnable_registers", "transformer_1d_blocks.0.attn1.to_q.weight")


def prompt_embed_widths(model_path: Path | str) -> dict[str, int]:
    """The last dimension of the prompt embeddings each text connector of a checkpoint takes, from its header alone.

    The trainer feeds a sample's ``video_prompt_embeds`` and ``audio_prompt_embeds`` (a legacy ``prompt_embeds`` to
    both) through the checkpoint's video and audio connectors; embeddings of another width fail at the first step
    that draws them. The width is read from the connectors' weights (their registers, or the first block's query
    projection); where the header holds no connector weights, from the ``config`` metadata as ltx-core's connector
    configurators read it (heads x head width; the audio connector falls back to the video connector's settings).

    Returns:
        ``{"video": D, "audio": D}``, with only the widths that could be read (empty for an unreadable file).
    """
    try:
        header = read_safetensors_header(Path(model_path))
        transformer = (header_config(header) or {}).get("transformer")
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}
    shapes = {k: e.get("shape") for k, e in header.items() if k != "__metadata__" and isinstance(e, Mapping)}
    widths: dict[str, int] = {}
    for modality, connector in _CONNECTORS.items():
        for suffix in _CONNECTOR_WIDTH_TENSORS:
            shape = next((shape for key, shape in shapes.items() if key.endswith(f"{connector}.{suffix}")), None)
            if isinstance(shape, list) and shape and isinstance(shape[-1], int):
                widths[modality] = shape[-1]
                break
    if isinstance(transformer, Mapping) and "connector_num_attention_heads" in transformer:
        heads = transformer.get("connector_num_attention_heads")
        head_dim = transformer.get("connector_attention_head_dim", 128)
        configured = {
            "video": (heads, head_dim),
            "audio": (
                transformer.get("audio_connector_num_attention_heads", heads),
                transformer.get("audio_connector_attention_head_dim", head_dim),
            ),
        }
        for modality, (h, d) in configured.items():
            if modality not in widths and isinstance(h, int) and isinstance(d, int):
                widths[modality] = h * d
    return widths


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
