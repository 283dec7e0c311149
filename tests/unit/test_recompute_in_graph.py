"""Tier 1: compiled blocks that checkpoint inside their graphs (what CUDA graphs need), with block swap, on the CPU.

``compile_blocks(recompute_in_graph=True)`` turns the model's eager checkpoint off and partitions each block's graph
with ``activation_memory_budget=0`` (``aot_eager_decomp_partition`` runs that partitioner without inductor's
kernels). No forward pre-hook fires in the backward pass any more, so the swap engine loads each block for its
backward from a hook on the block's outputs, into the block's fixed slot. CUDA graphs themselves need a GPU
(``tests/gpu/test_int8_graphs_cuda.py``).
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ltx_audio_reference.blockswap import plugin as block_swap_plugin
from ltx_audio_reference.blockswap.compile import blocks_owner, compile_blocks, recomputes_in_graph, uncompile_blocks
from ltx_audio_reference.blockswap.config import spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.blockswap.tensors import find_transformer
from ltx_audio_reference.testing import swap_workload as workload

sys.path.insert(0, str(Path(__file__).parent))
from test_compile_blocks import LENGTHS, NUM_LAYERS, eager_run, train, train_under_ddp

BACKEND = "aot_eager_decomp_partition"


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


@functools.cache
def _model(backend: str | None) -> nn.Module:
    model = workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.float32)
    if backend is not None:
        workload.quantize_blocks(model, backend)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    return peft_model


def build(backend: str | None = None, swapped: int = 0) -> tuple[nn.Module, BlockSwapEngine | None]:
    peft_model = copy.deepcopy(_model(backend))
    engine = None
    if swapped:
        engine = BlockSwapEngine(peft_model, spread_blocks(NUM_LAYERS, swapped), device="cpu", prefetch=1)
        engine.place(peft_model)
    return peft_model, engine


def _close(grads: list[dict], expected: list[dict], rtol: float) -> None:
    for step_expected, step_actual in zip(expected, grads, strict=True):
        for name, grad in step_expected.items():
            torch.testing.assert_close(step_actual[name], grad, rtol=rtol, atol=1e-7)


def test_blocks_recomputing_inside_their_graphs_and_swapped_train_like_eager() -> None:
    model, _engine = build(swapped=3)
    record = compile_blocks(find_transformer(model), backend=BACKEND, recompute_in_graph=True)
    losses, grads = train(model)
    expected_losses, expected_grads = eager_run(False)
    # The partitioner's decompositions may reorder float32 sums: equal on torch 2.13, one rounding apart on 2.9.
    assert losses == pytest.approx(expected_losses, rel=1e-6, abs=0)
    _close(grads, expected_grads, rtol=1e-4)
    assert record.compiled_calls == NUM_LAYERS * len(LENGTHS)  # one call per block and step: no recompute call
    assert int(torch._dynamo.utils.counters["stats"]["unique_graphs"]) <= 2


def test_each_swapped_block_is_back_in_its_fixed_slot_when_its_backward_runs() -> None:
    model, engine = build(swapped=3)
    transformer = find_transformer(model)
    compile_blocks(transformer, backend=BACKEND, recompute_in_graph=True)
    seen: dict[int, list[bool]] = {}

    def check(index: int, block: nn.Module, args: object, output: object) -> None:
        if not torch.is_grad_enabled():
            return
        slot = engine._slots[engine._slot_of[index]]

        def in_slot(grad: torch.Tensor) -> None:  # runs after the engine's own hook: registered later
            weights = [p for n, p in block.named_parameters() if "lora_" not in n]
            inside = all(slot.data_ptr() <= p.data_ptr() < slot.data_ptr() + slot.numel() for p in weights)
            seen.setdefault(index, []).append(inside)

        output[1].x.register_hook(in_slot)

    for index in engine.blocks:
        transformer.transformer_blocks[index].register_forward_hook(functools.partial(check, index))
    train(model, steps=2)
    assert sorted(seen) == engine.blocks
    assert all(all(flags) for flags in seen.values()), seen
    # The same copies as with the eager checkpoint, whose recompute reloads the blocks (3 blocks, 2 slots).
    eager_model, eager_engine = build(swapped=3)
    train(eager_model, steps=2)
    assert engine.stats.loads == eager_engine.stats.loads
    assert engine.stats.misses == eager_engine.stats.misses


def _loads_with_trainable_context(model: nn.Module, engine: BlockSwapEngine, steps: int = 2) -> list[int]:
    """Blocks loaded per step when the text context requires grad, as in ltx-trainer (its connectors stay
    trainable): ``context`` then passes through every block's output with a gradient."""
    loads = []
    for step in range(steps):
        before = engine.stats.loads
        video, audio, video_target, audio_target = workload.make_batch(
            "tiny", LENGTHS[0], dtype=torch.float32, seed=step
        )
        for modality in (video, audio):
            modality.context.requires_grad_(True)
        video_pred, audio_pred = model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        assert video.context.grad is not None  # the pass-through really carried a gradient
        loads.append(engine.stats.loads - before)
    return loads


def test_an_input_passed_through_every_block_with_a_gradient_loads_no_block_again() -> None:
    # A hook on the pass-through context would fire for every block after the last backward: one more load of every
    # swapped block per modality and step (on the 48-block stock run: 35.6 instead of 17.1 GB over the link a step).
    model, engine = build(swapped=3)
    compile_blocks(find_transformer(model), backend=BACKEND, recompute_in_graph=True)
    eager_model, eager_engine = build(swapped=3)
    assert _loads_with_trainable_context(model, engine) == _loads_with_trainable_context(eager_model, eager_engine)


def _saved_bytes(model: nn.Module) -> int:
    """Bytes of the tensors autograd saves in one forward that are not parameters (activations)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    video, audio, *_ = workload.make_batch("tiny", LENGTHS[0], dtype=torch.float32, seed=0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(video=video, audio=audio, perturbations=None)
    return sum(saved.values())


def test_recompute_in_graph_saves_the_block_inputs_not_the_activations() -> None:
    # Dynamo caches one graph per code object and does not guard on the partitioner's budget: each setting is compiled
    # from scratch (in training, one process has one setting).
    no_checkpoint, _ = build()
    blocks_owner(no_checkpoint).set_gradient_checkpointing(False)
    compile_blocks(find_transformer(no_checkpoint), backend=BACKEND)
    activations = _saved_bytes(no_checkpoint)
    torch._dynamo.reset()
    inside, _ = build()
    compile_blocks(find_transformer(inside), backend=BACKEND, recompute_in_graph=True)
    inputs = _saved_bytes(inside)
    # What is left is what a checkpoint keeps: each block's hidden-state inputs, plus the per-step tensors every block
    # reads (RoPE tables, context, timesteps), saved once.
    assert 0 < inputs < 0.25 * activations


def test_the_models_own_checkpoint_stays_off_and_uncompile_restores_it() -> None:
    model, _ = build()
    transformer = find_transformer(model)
    owner = blocks_owner(model)
    assert owner is not model
    assert "transformer_blocks" in owner._modules
    compile_blocks(transformer, backend=BACKEND, recompute_in_graph=True)
    assert recomputes_in_graph(model)
    assert owner._enable_gradient_checkpointing is False
    owner.set_gradient_checkpointing(True)  # what the stock trainer calls after the model hooks ran
    assert owner._enable_gradient_checkpointing is False
    assert recomputes_in_graph(model)
    owner.set_gradient_checkpointing(False)
    assert not recomputes_in_graph(model)
    owner.set_gradient_checkpointing(True)
    uncompile_blocks(transformer)
    assert not recomputes_in_graph(model)
    assert owner._enable_gradient_checkpointing is True
    assert "set_gradient_checkpointing" not in owner.__dict__


def test_swap_without_any_checkpointing_is_still_refused_with_the_fix() -> None:
    model, _ = build(swapped=2)
    blocks_owner(model).set_gradient_checkpointing(False)
    compile_blocks(find_transformer(model), backend=BACKEND, recompute_in_graph=True)
    with pytest.raises(RuntimeError, match="enable_gradient_checkpointing: true"):
        train(model, steps=1)


@pytest.mark.parametrize("backend", ["int8", "int8-dynamic"])
def test_int8_blocks_recomputing_inside_their_graphs_and_swapped_train_like_eager_int8(backend: str) -> None:
    expected_losses, expected_grads = train(build(backend)[0], steps=2)
    model, _ = build(backend, swapped=3)
    compile_blocks(find_transformer(model), backend=BACKEND, recompute_in_graph=True)
    losses, grads = train(model, steps=2)
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    _close(grads, expected_grads, rtol=1e-3)


def _config(**acceleration: object) -> SimpleNamespace:
    return SimpleNamespace(
        acceleration=SimpleNamespace(**{"compile_blocks": False, "cuda_graphs": False, **acceleration}),
        optimization=SimpleNamespace(gradient_accumulation_steps=1),
        block_swap=None,
        model=SimpleNamespace(model_path=None),
    )


def test_cuda_graphs_settings_are_checked_before_the_model_loads(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"set acceleration\.compile_blocks: auto"):
        block_swap_plugin.validate_config(_config(cuda_graphs=True))
    with pytest.raises(ValueError, match=r"CUDA graphs need a CUDA GPU\."):  # this machine has none
        block_swap_plugin.validate_config(_config(compile_blocks="auto", cuda_graphs=True))
    block_swap_plugin.validate_config(_config(compile_blocks="auto", cuda_graphs="auto"))
    assert "the blocks run compiled without graphs" in caplog.text
    accumulating = _config(compile_blocks=True, cuda_graphs=True)
    accumulating.optimization.gradient_accumulation_steps = 4
    problem = block_swap_plugin.cuda_graphs_problem(accumulating, cuda_available=True)
    assert problem is not None
    assert "gradient_accumulation_steps is 4" in problem
    assert block_swap_plugin.cuda_graphs_problem(_config(), cuda_available=True) is None


def test_recompute_in_graph_with_swap_under_ddp_trains_like_eager(tmp_path: Path) -> None:
    """``accelerator.prepare`` wraps the model in DDP after the blocks are compiled (gloo, a world of one)."""
    model, engine = build(swapped=3)
    compile_blocks(find_transformer(model), backend=BACKEND, recompute_in_graph=True)
    losses, grads = train_under_ddp(model, engine, tmp_path, steps=2)
    expected_losses, expected_grads = eager_run(False)
    assert losses == expected_losses[:2]
    _close([{n.removeprefix("module."): g for n, g in step.items()} for step in grads], expected_grads[:2], 1e-4)


def test_a_graph_torch_cannot_record_stops_with_the_fix_or_runs_compiled_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CPU tensors are a real reason for inductor to skip CUDA graphs: strict stops, lenient warns and trains."""
    from ltx_audio_reference.blockswap.compile import CompileUnavailableError, compile_problem  # noqa: PLC0415

    problem = compile_problem("cpu")
    if problem is not None:
        pytest.skip(problem)
    strict, _ = build()
    compile_blocks(find_transformer(strict), backend="inductor", cuda_graphs=True)
    assert recomputes_in_graph(strict)
    with pytest.raises(CompileUnavailableError, match=r"acceleration\.cuda_graphs: auto"):
        train(strict, steps=1)

    torch._dynamo.reset()
    lenient, _ = build()
    record = compile_blocks(find_transformer(lenient), backend="inductor", cuda_graphs=True, graphs_fallback=True)
    with caplog.at_level("WARNING"):
        losses, _ = train(lenient, steps=1)
    assert record.graphs_failed is not None
    assert "the blocks run compiled without graphs" in caplog.text
    assert losses == pytest.approx(eager_run(False)[0][:1], rel=1e-5)
