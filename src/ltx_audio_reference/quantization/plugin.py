"""Built-in quantization backends, registered through the same hook a third-party backend uses, and the load settings.

Registered as the ``quantization`` entry point of the ``ltx_trainer`` group. The order is the order users see:
ltx-trainer's own optimum-quanto values first (unchanged), then this package's traceable int8 runtime. It also adds
``acceleration.streamed_load`` and ``acceleration.quantized_cache`` (:mod:`.stream`, :mod:`.cache`,
``docs/memory.md``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

from ltx_audio_reference.hookspecs import hookimpl

if TYPE_CHECKING:
    from ltx_audio_reference.registry import ConfigFieldRegistry, QuantizationRegistry

PLUGIN_NAME = "quantization"

_BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off")


def _check_cache_setting(value: bool | str) -> bool | str:
    if isinstance(value, bool):
        return value
    if not value.strip():
        raise ValueError("must be true (the user cache folder), false (no cache) or a folder; got an empty string")
    if value.strip().lower() in _BOOLEAN_WORDS:
        raise ValueError(f"write {value.strip().lower()} without quotes (a boolean), or give a folder")
    return value


QuantizedCacheSetting = Annotated[bool | str, AfterValidator(_check_cache_setting)]
"""``acceleration.quantized_cache``: true, false, or a folder."""


@hookimpl
def register_config_fields(register: ConfigFieldRegistry) -> None:
    """Add ``acceleration.streamed_load`` and ``acceleration.quantized_cache``."""
    register(
        "acceleration",
        "streamed_load",
        bool,
        Field(
            default=False,
            description=(
                "With quantization: build the transformer part by part from the checkpoint (or the quantized-weight "
                "cache), quantizing each block on the GPU and placing it where it trains, so the host never holds a "
                "bf16 copy of the model (48 blocks, int8: 12.5 GB of host memory kept, against 20.5 GB). false "
                "(default, as stock): ltx-trainer's own load (the whole model in bf16 on the CPU first)."
            ),
        ),
    )
    register(
        "acceleration",
        "quantized_cache",
        QuantizedCacheSetting,
        Field(
            default=True,
            description=(
                "With quantization and streamed_load: keep the quantized transformer on disk after the first run and "
                "load it from there (no bf16 pass). true: in $XDG_CACHE_HOME/ltx-audio-reference/quantized (or "
                "~/.cache/...); a folder: there; false: no cache. About half the checkpoint's size for int8."
            ),
        ),
    )


@hookimpl
def register_quantization_backends(register: QuantizationRegistry) -> None:
    """``int8-quanto`` ... ``fp8uz-quanto`` (optimum-quanto), then ``int8`` and ``int8-dynamic``."""
    # Imported here: loading the plugin (``ltx-trainer --help``, ``strategies``) must not import torch.
    from ltx_audio_reference.quantization.int8 import Int8Backend  # noqa: PLC0415
    from ltx_audio_reference.quantization.quanto import QUANTO_TYPES, QuantoBackend  # noqa: PLC0415

    for name in QUANTO_TYPES:
        register(QuantoBackend(name))
    register(Int8Backend(dynamic=False))
    register(Int8Backend(dynamic=True))


@hookimpl
def validate_config(config: object) -> None:
    """A backend that cannot run here (optimum-quanto missing, no int8 tensor cores) stops before the model loads."""
    name = getattr(getattr(config, "acceleration", None), "quantization", None)
    if name is None:
        return
    import torch  # noqa: PLC0415

    from ltx_audio_reference.quantization.model import get_backend  # noqa: PLC0415

    problem = get_backend(name).problem("cuda" if torch.cuda.is_available() else "cpu")
    if problem is not None:
        raise ValueError(f"acceleration.quantization: {problem}")
    setting = getattr(config.acceleration, "quantized_cache", True)  # type: ignore[attr-defined]
    if isinstance(setting, str) and getattr(config.acceleration, "streamed_load", False):  # type: ignore[attr-defined]
        problem = _unwritable(Path(setting).expanduser())
        if problem is not None:
            raise ValueError(
                f"acceleration.quantized_cache: {setting} {problem}; give a folder this user can write, true (the "
                "user cache folder) or false"
            )


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written (probed without writing), or None."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return "cannot be created"
        existing = existing.parent
    if not existing.is_dir():
        return f"is not a folder ({existing} is a file)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"is not writable ({existing} is read-only for this user)"
    return None


__all__ = [
    "PLUGIN_NAME",
    "QuantizedCacheSetting",
    "register_config_fields",
    "register_quantization_backends",
    "validate_config",
]
