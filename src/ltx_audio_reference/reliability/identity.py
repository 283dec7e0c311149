"""A run's identity: what a run is, recorded in its ``output_dir``, so that another run cannot overwrite it unnoticed.

Each run writes ``output_dir/run_identity.json`` beside the stock ``training_config.yaml``: its resolved config, the
SHA-256 of its settings, when, where and from what it started. A new run in a folder that holds another run's
checkpoints (a ``lora_weights_step_N.safetensors`` or training state) would overwrite them step by step: the stock
runner saves under the same names. It is refused before the model loads, saying which settings differ from the run
there and how to go on: another ``output_dir``, a ``model.load_checkpoint`` that resumes that run, or
``overwrite_output_dir: true`` (the previous run's checkpoints are then set aside, and deleted at the new run's first
step: :mod:`.run_start`). Resuming the run, with any settings, goes on as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ltx_audio_reference import __version__
from ltx_audio_reference.reliability.checkpoints import STATE_NAME, WEIGHTS_NAME
from ltx_audio_reference.reliability.files import atomic_write_json, is_temp_name
from ltx_audio_reference.reliability.parsing import read_yaml

logger = logging.getLogger(__name__)

RECORD_NAME = "run_identity.json"
STOCK_CONFIG_NAME = "training_config.yaml"
CHECKPOINTS_DIR_NAME = "checkpoints"
OVERWRITE_KEY = "overwrite_output_dir"
#: Settings that say how a run starts rather than what it trains; a resume may change them.
START_KEYS = frozenset({"model.load_checkpoint", "checkpoints.no_resume", OVERWRITE_KEY})
_SHOWN = 6
_MISSING = object()
_STATE_PREFIX = STATE_NAME.split("{", 1)[0]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def settings_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of a resolved config's settings (``START_KEYS`` left out), as canonical JSON."""
    settings = {k: v for k, v in flatten(config).items() if k not in START_KEYS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def differences(old: Mapping[str, Any], new: Mapping[str, Any], *, partial: bool = False) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs (``START_KEYS`` left out): the keys whose
    values changed first, then those only one side has (None on the other).

    Args:
        old: The recorded config.
        new: This run's config.
        partial: ``new`` is a raw YAML without the defaults (``check`` without ltx-trainer): keys it does not
            write are not compared.
    """
    flat_old, flat_new = flatten(old), flatten(new)
    keys = flat_new if partial else sorted(set(flat_old) | set(flat_new))
    changed, one_side = [], []
    for key in keys:
        if key in START_KEYS or flat_old.get(key, _MISSING) == flat_new.get(key, _MISSING):
            continue
        both = key in flat_old and key in flat_new
        (changed if both else one_side).append((key, flat_old.get(key), flat_new.get(key)))
    by_key = operator.itemgetter(0)
    return sorted(changed, key=by_key) + sorted(one_side, key=by_key)  # a key only one side has says less


def _shown(value: Any) -> str:  # noqa: ANN401 - any config value
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_differences(found: list[tuple[str, Any, Any]]) -> str:
    """``optimization.learning_rate 0.001 -> 0.01; seed 42 -> 2`` (the first few, then a count)."""
    listed = "; ".join(f"{key} {_shown(old)} -> {_shown(new)}" for key, old, new in found[:_SHOWN])
    more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    return listed + more


def read_record(output_dir: Path) -> dict[str, Any] | None:
    """The run identity recorded in ``output_dir``, or None (none, or unreadable)."""
    try:
        record = json.loads((Path(output_dir) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("config"), dict) else None


def _recorded_config(output_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The previous run's config and where it was read from: our record, else the stock ``training_config.yaml``."""
    record = read_record(output_dir)
    if record is not None:
        return record["config"], f"{RECORD_NAME}, started {record.get('started', '?')} on {record.get('host', '?')}"
    stock = Path(output_dir) / STOCK_CONFIG_NAME
    try:
        config = read_yaml(stock)
    except Exception:  # any unreadable file (a Python tag, a repeated key): no comparison
        return None, ""
    return (config, STOCK_CONFIG_NAME) if isinstance(config, dict) else (None, "")


def write_record(output_dir: Path, config: Mapping[str, Any], resumed_from: str | Path | None = None) -> Path:
    """Record this run's identity in ``output_dir`` (atomically).

    Args:
        output_dir: The run's folder.
        config: The resolved config (``LtxTrainerConfig.model_dump(mode="json")``).
        resumed_from: The checkpoint this run resumes, if any.
    """
    record = {
        "config_sha256": settings_hash(config),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "ltx_audio_reference": __version__,
        "config": dict(config),
    }
    return atomic_write_json(Path(output_dir) / RECORD_NAME, record)


def checkpoint_files(output_dir: Path) -> list[Path]:
    """The checkpoint files (weights and training states) a run left in ``output_dir/checkpoints``, newest step first.

    Temporary files of interrupted saves are not counted.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIR_NAME
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and not is_temp_name(p.name)
        and (WEIGHTS_NAME.match(p.name) or (p.name.startswith(_STATE_PREFIX) and p.suffix == ".pt"))
    ]
    return sorted(found, key=lambda p: (p.name.rsplit("_", 1)[-1], p.name), reverse=True)


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def resumes(output_dir: Path, load_checkpoint: str | Path | None, no_resume: bool) -> bool:
    """Whether ``model.load_checkpoint`` resumes the run in ``output_dir``: it names that folder, its
    ``checkpoints/`` or a file in it, and ``checkpoints.no_resume`` is off."""
    if no_resume or load_checkpoint is None or str(load_checkpoint).strip() == "":
        return False
    target, out = _resolved(load_checkpoint), _resolved(output_dir)
    ckpt = out / CHECKPOINTS_DIR_NAME
    return target in (out, ckpt) or ckpt in target.parents


def folder_problem(
    output_dir: str | Path | None,
    config: Mapping[str, Any] | None,
    *,
    load_checkpoint: str | Path | None,
    no_resume: bool,
    overwrite: bool,
    partial: bool = False,
) -> str | None:
    """Why a run cannot start in ``output_dir`` without overwriting another run's checkpoints, or None.

    Args:
        output_dir: The config's ``output_dir``.
        config: This run's config (resolved, or raw with ``partial``), to say what differs; None skips that.
        load_checkpoint: ``model.load_checkpoint``.
        no_resume: ``checkpoints.no_resume``.
        overwrite: ``overwrite_output_dir``.
        partial: ``config`` is raw YAML without the defaults.
    """
    if output_dir is None or overwrite:
        return None
    out = Path(output_dir).expanduser()
    found = checkpoint_files(out)
    if not found or resumes(out, load_checkpoint, no_resume):
        return None
    weights = [p for p in found if WEIGHTS_NAME.match(p.name)]
    newest = (weights or found)[0]
    held = f"{newest.name}" + (f" and {len(found) - 1} more file(s)" if len(found) > 1 else "")
    previous, source = _recorded_config(out)
    if previous is None or config is None:
        differ = "Its settings are not recorded (it ran before run identities were recorded), so none are compared"
    else:
        found_diff = differences(previous, config, partial=partial)
        listed = describe_differences(found_diff)
        differ = (
            f"This config differs from it ({source}) in {len(found_diff)} setting(s): {listed}"
            if found_diff
            else f"This config has the same settings as that run ({source})"
        )
    how = "it would overwrite that run's checkpoints step by step"
    if no_resume and load_checkpoint is not None and resumes(out, load_checkpoint, False):
        how = (
            "checkpoints.no_resume: true starts a new schedule at step 0, whose checkpoints would overwrite that run's"
        )
    ckpt = out / CHECKPOINTS_DIR_NAME
    return (
        f"config output_dir: {out} holds the checkpoints of another run ({held} in {ckpt}), and this run does not "
        f"resume it: {how}. {differ}. To go on, set another output_dir for a new run; or set model.load_checkpoint: "
        f"{ckpt} (and checkpoints.no_resume: false) to resume that run; or set {OVERWRITE_KEY}: true to delete its "
        "checkpoints and start over"
    )
