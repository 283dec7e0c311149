"""The traceable int8 runtime and per-block CUDA graphs with block swap, on a CUDA GPU.

4 full-width LTX-2.3-class blocks with random weights, LoRA r32 on the audio stack, the seed workload, deterministic
kernels. Skips without CUDA.

- ``int8`` quantizes onto optimum-quanto's grid: the same integers and scales, the same forward within bf16
  rounding, and training losses within 1e-3 relative of ``int8-quanto`` over 20 steps;
- CUDA graphs (the checkpoint inside each block's graph, swapped blocks in fixed slots): swapped equals resident bit
  for bit, graphs equal compiled-without-graphs within bf16 tolerance, and the graphs are recorded once (no
  re-records in steady state, one recording per block, direction and length).
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import functools
import importlib.util
from collections.abc import Iterator

import pytest
import torch
from cuda_swap import LENGTHS, Run, assert_bitwise, deterministic_kernels, finish_build, train

from ltx_audio_reference.quantization import Int8Linear
from ltx_audio_reference.testing import swap_workload as workload

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

NUM_LAYERS = 4
HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
needs_quanto = pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto")
BACKENDS = ["bf16", "int8", "int8-dynamic", pytest.param("int8-quanto", marks=needs_quanto)]


@pytest.fixture(autouse=True)
def deterministic() -> Iterator[None]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with deterministic_kernels():
        yield


def _prepare(dtype: str) -> torch.nn.Module:
    model = workload.build_model(NUM_LAYERS, "full", seed=0, dtype=torch.bfloat16, device="cuda")
    return finish_build(model, dtype)


def _train(dtype: str, blocks_to_swap: int, steps: int = 3, **options: bool) -> Run:
    return train(functools.partial(_prepare, dtype), NUM_LAYERS, blocks_to_swap, steps=steps, **options)


@needs_quanto
def test_int8_holds_quantos_integers_and_scales_and_matches_its_forward_within_bf16() -> None:
    quanto_model = _prepare("int8-quanto").get_base_model().to("cuda")
    ours = _prepare("int8").get_base_model().to("cuda")
    pairs = 0
    for (name, theirs), (_, mine) in zip(quanto_model.named_modules(), ours.named_modules(), strict=True):
        base = getattr(mine, "base_layer", mine)
        if isinstance(base, Int8Linear):
            weight = getattr(theirs, "base_layer", theirs).weight
            assert torch.equal(base.weight, weight._data), name
            assert torch.equal(base.weight_scale, weight._scale), name
            pairs += 1
    assert pairs > 20 * NUM_LAYERS
    video, audio, *_ = workload.make_batch("full", device="cuda", seed=1)
    with torch.no_grad():
        expected = quanto_model(video=video, audio=audio, perturbations=None)
        actual = ours(video=video, audio=audio, perturbations=None)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.float(), e.float(), rtol=1.6e-2, atol=2e-2)


@needs_quanto
def test_int8_training_losses_stay_within_1e_3_of_int8_quanto_over_20_steps() -> None:
    quanto_run = _train("int8-quanto", 0, steps=20)
    ours = _train("int8", 0, steps=20)
    relative = [abs(a.item() - b.item()) / abs(b.item()) for a, b in zip(ours.losses, quanto_run.losses, strict=True)]
    assert max(relative) <= 1e-3, relative


@pytest.mark.parametrize("dtype", BACKENDS)
def test_graphs_swapped_equal_graphs_resident_bitwise_and_compiled_within_bf16(dtype: str) -> None:
    resident = _train(dtype, 0, steps=4, graphs=True)
    # Warm-up, recording, then replays: one forward and one backward graph per block, never recorded again.
    assert resident.graph_stats["recorded"] == 2 * NUM_LAYERS, resident.graph_stats
    assert resident.graph_stats["rerecords"] == 0
    assert resident.graph_stats["skips"] == 0
    for blocks_to_swap in (NUM_LAYERS // 2, NUM_LAYERS - 1):
        torch._dynamo.reset()
        swapped = _train(dtype, blocks_to_swap, steps=4, graphs=True)
        assert_bitwise(resident, swapped, f"{dtype} graphs, {blocks_to_swap}/{NUM_LAYERS} swapped")
        assert swapped.graph_stats["rerecords"] == 0, swapped.graph_stats
        if blocks_to_swap > 2:  # two slots (prefetch 1): swapping 2 of 4 blocks saves nothing, the ring holds both
            assert swapped.steady_peak < resident.steady_peak
    torch._dynamo.reset()
    compiled = _train(dtype, NUM_LAYERS // 2, steps=4, compiled=True)
    for step, (a, b) in enumerate(zip(compiled.losses, resident.losses, strict=True)):
        torch.testing.assert_close(b, a, rtol=1.6e-2, atol=1e-3, msg=f"{dtype} graphs vs compiled loss, step {step}")


def test_graphs_record_once_per_length_and_replay_when_a_length_returns() -> None:
    run = _train("int8", NUM_LAYERS // 2, steps=2 * len(LENGTHS) + 2, graphs=True, varying=True)
    assert run.graph_stats["rerecords"] == 0, run.graph_stats
    assert run.graph_stats["skips"] == 0
    # Each length: one forward and one backward graph per block (the first visit of a length warms up).
    assert run.graph_stats["recorded"] == 2 * NUM_LAYERS * len(LENGTHS), run.graph_stats
