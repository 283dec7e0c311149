"""Deterministic GPU kernels, for runs that must agree bit for bit (the GPU tests, ``full_scale.py --deterministic``).

cuDNN's and flash attention's backward passes accumulate in a varying order, so two identical GPU runs drift apart
in the last digits after their first step. Under :func:`deterministic_kernels` (deterministic algorithms and SDPA's
math backend) and :func:`pin_math_attention` (for ltx-core versions that pick their own SDPA backend), they do not.
Set ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before CUDA starts as well (:data:`CUBLAS_WORKSPACE`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch

#: The ``CUBLAS_WORKSPACE_CONFIG`` value that makes cuBLAS deterministic (set before CUDA initializes).
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Deterministic kernels and SDPA's math backend (cuDNN's and flash attention's backwards accumulate in a varying
    order; ltx-core 1.2.0 sets its own backend priority inside, see :func:`pin_math_attention`)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.use_deterministic_algorithms(previous)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def pin_math_attention(model: torch.nn.Module) -> None:
    """Make every attention module use SDPA's math backend.

    ltx-core 1.0.0 calls SDPA bare, so :func:`deterministic_kernels`' context decides. ltx-core 1.2.0 wraps each call
    in its own ``sdpa_kernel(priority, set_priority=True)`` (cuDNN first), which overrides any outer context; there
    the module's callable is swapped for a math-only one.
    """
    from torch.nn.attention import SDPBackend  # noqa: PLC0415

    from ltx_core.model.transformer import attention  # noqa: PLC0415

    try:
        math = attention.PytorchAttention(priority=[SDPBackend.MATH])
    except TypeError:  # ltx-core 1.0.0: no priority, no inner context
        return
    for module in model.modules():
        if isinstance(module, attention.Attention):
            module.attention_function = math
            module.masked_attention_function = math


__all__ = ["CUBLAS_WORKSPACE", "deterministic_kernels", "pin_math_attention"]
