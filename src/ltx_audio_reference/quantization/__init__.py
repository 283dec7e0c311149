"""Weight quantization: one module per backend, chosen by name from the registered backends.

- :mod:`.base`: what a backend is (:class:`QuantizationBackend`) and which modules every backend quantizes;
- :mod:`.quanto`: ltx-trainer's own optimum-quanto values (``int8-quanto``, ...), unchanged;
- :mod:`.int8`: this package's traceable int8 runtime, ``int8`` (W8A16) and ``int8-dynamic`` (W8A8);
- :mod:`.model`: :func:`quantize_model`, block by block with any backend (the bridge routes the stock trainer's
  quantization call here);
- :mod:`.plugin`: registers the built-in backends through the ``register_quantization_backends`` hook, the same hook
  a plugin uses to add one (``register(MyBackend())``), and the load settings;
- :mod:`.stream`: the streamed load (the transformer built part by part, each part quantized and placed where it
  trains), :mod:`.cache`: the quantized-weight cache, :mod:`.tensorfile`: safetensors read and written part by part,
  :mod:`.memory`: the host- and GPU-memory estimates of a config.

The modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ltx_audio_reference.quantization.base import (
        EXCLUDE_PATTERNS,
        QuantizationBackend,
        excluded,
        quantizable_linears,
    )
    from ltx_audio_reference.quantization.int8 import Int8Backend, Int8Linear
    from ltx_audio_reference.quantization.model import (
        SKIP_ROOT_MODULES,
        QuantizationReport,
        get_backend,
        quantization_report,
        quantize_model,
        registered_backends,
    )
    from ltx_audio_reference.quantization.quanto import QuantoBackend
    from ltx_audio_reference.quantization.stream import LoadPlan, load_transformer_streamed

# Imported on first use, so that loading the plugin (``ltx-trainer --help``) does not import torch.
_LAZY = {
    "EXCLUDE_PATTERNS": "base",
    "QuantizationBackend": "base",
    "excluded": "base",
    "quantizable_linears": "base",
    "Int8Backend": "int8",
    "Int8Linear": "int8",
    "SKIP_ROOT_MODULES": "model",
    "QuantizationReport": "model",
    "get_backend": "model",
    "quantization_report": "model",
    "quantize_model": "model",
    "registered_backends": "model",
    "QuantoBackend": "quanto",
    "LoadPlan": "stream",
    "load_transformer_streamed": "stream",
}

__all__ = [
    "EXCLUDE_PATTERNS",
    "SKIP_ROOT_MODULES",
    "Int8Backend",
    "Int8Linear",
    "LoadPlan",
    "QuantizationBackend",
    "QuantizationReport",
    "QuantoBackend",
    "excluded",
    "get_backend",
    "load_transformer_streamed",
    "quantizable_linears",
    "quantization_report",
    "quantize_model",
    "registered_backends",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - lazily re-exported objects
    if name in _LAZY:
        return getattr(importlib.import_module(f"ltx_audio_reference.quantization.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
