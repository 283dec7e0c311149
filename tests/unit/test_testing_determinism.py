"""Tier 1: the deterministic-kernel helpers that the GPU tests and ``full_scale.py --deterministic`` share."""

from __future__ import annotations

import torch

from ltx_audio_reference.testing import swap_workload as workload
from ltx_audio_reference.testing.determinism import deterministic_kernels, pin_math_attention


def test_deterministic_kernels_are_on_inside_and_restored_after() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_pin_math_attention_gives_every_attention_the_math_backend_where_ltx_core_picks_its_own() -> None:
    from ltx_core.model.transformer import attention  # noqa: PLC0415

    model = workload.build_model(2, "tiny", seed=0, dtype=torch.float32)
    modules = [m for m in model.modules() if isinstance(m, attention.Attention)]
    assert modules
    before = [m.attention_function for m in modules]
    pin_math_attention(model)
    try:
        attention.PytorchAttention(priority=[])
    except TypeError:  # ltx-core 1.0.0 calls SDPA bare: the outer context decides, nothing to pin
        assert [m.attention_function for m in modules] == before
        return
    functions = {id(m.attention_function) for m in modules} | {id(m.masked_attention_function) for m in modules}
    assert len(functions) == 1  # one math-only callable everywhere
    video, audio, *_ = workload.make_batch("tiny", workload.TINY_WORKLOAD, dtype=torch.float32)
    with torch.no_grad():
        model(video=video, audio=audio, perturbations=None)  # and the model still runs with it
