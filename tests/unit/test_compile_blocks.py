"""Tier 1: compiled transformer blocks with the block-swap engine on the CPU device, against eager training.

The blocks' ``forward`` is compiled and their hooks stay eager, so the swap engine's pre-hooks and the checkpoint
recompute run outside the graph. Lengths vary from step to step (as references and targets do between batches): the
graphs are counted to show that they do not recompile per length, nor per block.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import os

import pytest
import torch
from torch import nn

from ltx_audio_reference.blockswap.compile import (
    CompileUnavailableError,
    compile_blocks,
    compile_problem,
    compiled_record,
    uncompile_blocks,
)
from ltx_audio_reference.blockswap.config import spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.blockswap.tensors import find_transformer
from ltx_audio_reference.testing import swap_workload as workload

NUM_LAYERS = 4
LENGTHS = [
    workload.Workload(video_tokens=24, target_audio_tokens=12, reference_audio_tokens=5, context_tokens=8),
    workload.Workload(video_tokens=32, target_audio_tokens=15, reference_audio_tokens=7, context_tokens=8),
    workload.Workload(video_tokens=20, target_audio_tokens=9, reference_audio_tokens=4, context_tokens=8),
    workload.Workload(video_tokens=28, target_audio_tokens=20, reference_audio_tokens=6, context_tokens=8),
]
needs_quanto = pytest.mark.skipif(importlib.util.find_spec("optimum.quanto") is None, reason="needs optimum-quanto")


@functools.cache
def _float_model() -> nn.Module:
    model = workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.float32)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    return peft_model


def build(*, quantized: bool = False, swapped: list[int] | None = None) -> nn.Module:
    if quantized:  # quanto tensors cannot be deep-copied: the stock trainer's order, quantize, freeze, LoRA
        model = workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.float32)
        workload.quantize_blocks(model, "int8-quanto")
        model.requires_grad_(False)
        peft_model = workload.add_audio_lora(model, rank=4, seed=0)
        model.set_gradient_checkpointing(True)
    else:
        peft_model = copy.deepcopy(_float_model())
    if swapped:
        BlockSwapEngine(peft_model, swapped, device="cpu", prefetch=1).place(peft_model)
    return peft_model


def train(model: nn.Module, steps: int = len(LENGTHS)) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=1e-3)
    losses, grads = [], []
    for step in range(steps):
        video, audio, video_target, audio_target = workload.make_batch(
            "tiny", LENGTHS[step % len(LENGTHS)], dtype=torch.float32, seed=step
        )
        video_pred, audio_pred = model(video=video, audio=audio, perturbations=None)
        loss = workload.loss_fn(video_pred, audio_pred, video_target, audio_target)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.detach().clone() for n, p in named})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses, grads


def train_under_ddp(
    model: nn.Module, engine: BlockSwapEngine, store: object, steps: int
) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """:func:`train` inside ``DistributedDataParallel`` (gloo, a world of one), the swapped tensors left to each rank,
    as ``accelerator.prepare`` and the block-swap plugin set it up."""
    import torch.distributed as dist  # noqa: PLC0415

    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, engine.swapped_tensor_names(model)
    )
    dist.init_process_group("gloo", init_method=f"file://{store}/store", rank=0, world_size=1)
    try:
        return train(nn.parallel.DistributedDataParallel(model), steps=steps)
    finally:
        dist.destroy_process_group()


@functools.cache
def eager_run(quantized: bool) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    return train(build(quantized=quantized))


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


@pytest.mark.parametrize("quantized", [False, pytest.param(True, marks=needs_quanto)], ids=["float", "int8"])
def test_compiled_and_swapped_blocks_train_like_eager_with_one_graph_for_every_block_and_length(
    quantized: bool,
) -> None:
    """aot_eager runs Dynamo and AOTAutograd (the graph capture, the partition into forward and backward) without
    inductor's kernels, so the result must be bit-identical to eager training."""
    model = build(quantized=quantized, swapped=spread_blocks(NUM_LAYERS, 3))
    keys = list(model.state_dict())
    record = compile_blocks(find_transformer(model), backend="aot_eager")
    losses, grads = train(model)
    expected_losses, expected_grads = eager_run(quantized)
    assert losses == expected_losses
    for step_expected, step_actual in zip(expected_grads, grads, strict=True):
        assert all(torch.equal(step_expected[n], step_actual[n]) for n in step_expected)
    # Four lengths, four blocks, forward and checkpoint recompute: two graphs in all (the first block's input needs
    # no gradient, the others' do), never one per length or per block.
    assert _graphs() <= 2, torch._dynamo.utils.counters["stats"]
    assert record.compiled_calls > 0
    assert record.eager_calls == 0
    assert list(model.state_dict()) == keys  # no wrapper module: the export keeps its keys


def test_inductor_compiled_and_swapped_blocks_match_eager_within_float32_rounding() -> None:
    problem = compile_problem("cpu")
    if problem is not None:
        pytest.skip(problem)
    model = build(swapped=spread_blocks(NUM_LAYERS, 2))
    compile_blocks(find_transformer(model), backend="inductor")
    losses, grads = train(model, steps=2)
    expected_losses, expected_grads = eager_run(False)
    assert losses == pytest.approx(expected_losses[:2], rel=1e-5)
    for step_expected, step_actual in zip(expected_grads[:2], grads, strict=True):
        for name, grad in step_expected.items():
            torch.testing.assert_close(step_actual[name], grad, rtol=1e-3, atol=1e-6)
    assert _graphs() <= 2


def test_blocks_run_eagerly_without_gradients_and_uncompile_restores_the_class_forward() -> None:
    model = build()
    transformer = find_transformer(model)
    record = compile_blocks(transformer, backend="aot_eager")
    video, audio, *_ = workload.make_batch("tiny", LENGTHS[0], dtype=torch.float32)
    with torch.no_grad():
        out = model(video=video, audio=audio, perturbations=None)
    assert record.eager_calls == NUM_LAYERS
    assert record.compiled_calls == 0
    assert _graphs() == 0  # validation and probes add no graphs
    assert compiled_record(transformer) is record
    uncompile_blocks(transformer)
    assert compiled_record(transformer) is None
    assert all("forward" not in block.__dict__ for block in transformer.transformer_blocks)
    with torch.no_grad():
        again = model(video=video, audio=audio, perturbations=None)
    assert torch.equal(out[1], again[1])
    compile_blocks(transformer, backend="aot_eager")
    with pytest.raises(TypeError, match="already compiled"):
        compile_blocks(transformer, backend="aot_eager")


def _failing_backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> None:
    raise RuntimeError("this backend cannot compile")


def test_a_failing_compile_stops_with_the_fix_or_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    strict = build()
    compile_blocks(find_transformer(strict), backend=_failing_backend)
    with pytest.raises(CompileUnavailableError, match="compile_blocks: auto"):
        train(strict, steps=1)

    torch._dynamo.reset()
    lenient = build()
    record = compile_blocks(find_transformer(lenient), backend=_failing_backend, fallback=True)
    with caplog.at_level(logging.WARNING, logger="ltx_audio_reference.blockswap.compile"):
        losses, _ = train(lenient, steps=2)
    assert record.failed is not None
    assert "training them eagerly" in caplog.text
    assert losses == eager_run(False)[0][:2]


def test_compile_problem_names_a_missing_cpu_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "C++ compiler" in (compile_problem("cpu") or "")
    monkeypatch.setenv("PATH", os.defpath)
    assert compile_problem("cpu", backend="aot_eager") is None


def test_compiled_and_swapped_blocks_under_ddp_train_like_eager(tmp_path: object) -> None:
    """``accelerator.prepare`` wraps the model in DDP after the blocks are compiled (gloo, a world of one)."""
    model = build()
    engine = BlockSwapEngine(model, spread_blocks(NUM_LAYERS, 3), device="cpu", prefetch=1)
    engine.place(model)
    compile_blocks(find_transformer(model), backend="aot_eager")
    losses, grads = train_under_ddp(model, engine, tmp_path, steps=2)
    expected_losses, expected_grads = eager_run(False)
    assert losses == expected_losses[:2]
    for step_expected, step_actual in zip(expected_grads[:2], grads, strict=True):
        assert all(torch.equal(step_expected[n], step_actual[f"module.{n}"]) for n in step_expected)
    assert _graphs() <= 2


def test_int8_blocks_are_saved_to_aot_autograds_disk_cache(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """AOT autograd's on-disk cache refuses a graph that holds a ``torch.autograd.Function`` (the ``int8`` matmul is
    one) or a call it does not know (ltx-core 1.2's attention runs under ``sdpa_kernel``, whose graph calls two), and
    every start then retraced and repartitioned the blocks instead of loading them. ``compile_blocks`` lets both in,
    so the blocks' graphs are saved (and a second process loads them: ``benchmarks/compile_warm_start.py``)."""
    problem = compile_problem("cpu")
    if problem is not None:
        pytest.skip(problem)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # empty: a miss, then a save
    model = workload.build_model(2, "tiny", seed=0, dtype=torch.float32)
    workload.quantize_blocks(model, "int8")
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    compile_blocks(find_transformer(peft_model), backend="inductor")
    train(peft_model, steps=1)
    aot = torch._dynamo.utils.counters["aot_autograd"]
    assert aot["autograd_cache_bypass"] == 0, dict(aot)
    assert aot["autograd_cache_saved"] >= 1, dict(aot)
