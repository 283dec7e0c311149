"""The block-swap engine on CPU: same bits as residency, same state-dict keys, quanto inner tensors, frozen base.

The engine runs its exact logic on any device; on CPU the copies are synchronous. CUDA streams, the startup peak
and the full-width model are covered by ``tests/gpu/test_block_swap_cuda.py``.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ltx_audio_reference.blockswap.config import BlockSwapConfig, planned_reserve_bytes, spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.blockswap.plugin import setup_block_swap
from ltx_audio_reference.blockswap.tensors import (
    block_frozen_bytes,
    find_transformer,
    freeze_base_weights,
    is_quantized,
    tensor_bytes,
)
from ltx_audio_reference.quantization import memory as hostmem
from ltx_audio_reference.testing import swap_workload as workload

NUM_LAYERS = 4
STEPS = 2
HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
needs_quanto = pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto")
EXPORT_KEY = re.compile(r"^base_model\.model\.transformer_blocks\.\d+\.audio_(attn1|attn2|ff)\..*lora_[AB]\.weight$")

Run = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@functools.cache
def _float_model() -> nn.Module:
    model = workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.float32)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    return peft_model


def build(quantized: bool = False) -> nn.Module:
    """A tiny LoRA-wrapped LTX-2.3-class model, as the trainer holds it before ``accelerator.prepare``.

    Float models are deep copies of one cached build; quanto tensors cannot be deep-copied, so int8 ones are built
    in the stock trainer's order: quantize, freeze, LoRA.
    """
    if not quantized:
        return copy.deepcopy(_float_model())
    model = workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.float32)
    workload.quantize_blocks(model, "int8-quanto")
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    return peft_model


def lora_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights the trainer exports (before its ``diffusion_model.`` renaming)."""
    from peft import get_peft_model_state_dict  # noqa: PLC0415

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def train(model: nn.Module, steps: int = STEPS) -> Run:
    """AdamW steps on the LoRA parameters; returns the losses, each step's LoRA gradients and the final adapter."""
    named = [(n.removeprefix("module."), p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=1e-3)
    video, audio, video_target, audio_target = workload.make_batch("tiny", workload.TINY_WORKLOAD, dtype=torch.float32)
    losses, grads = [], []
    for _ in range(steps):
        video_pred, audio_pred = model(video=video, audio=audio, perturbations=None)
        loss = workload.loss_fn(video_pred, audio_pred, video_target, audio_target)
        loss.backward()
        losses.append(loss.detach().clone())
        grads.append({n: p.grad.detach().clone() for n, p in named})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peft_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return losses, grads, lora_state(peft_model)


@functools.cache
def resident_run(quantized: bool) -> Run:
    return train(build(quantized))


def swap(peft_model: nn.Module, blocks: list[int], prefetch: int = 1) -> BlockSwapEngine:
    engine = BlockSwapEngine(peft_model, blocks, device="cpu", prefetch=prefetch)
    engine.place(peft_model)
    return engine


def assert_same_run(expected: Run, actual: Run) -> None:
    for a, b in zip(expected[0], actual[0], strict=True):
        assert torch.equal(a, b), (a.item(), b.item())
    for step_a, step_b in zip(expected[1], actual[1], strict=True):
        assert step_a.keys() == step_b.keys()
        assert all(torch.equal(step_a[n], step_b[n]) for n in step_a)
    assert list(expected[2]) == list(actual[2])
    assert all(torch.equal(expected[2][k], actual[2][k]) for k in expected[2])


def _inside(tensor: torch.Tensor, buffers: list[torch.Tensor]) -> bool:
    ptr = tensor.data_ptr()
    return any(b.data_ptr() <= ptr < b.data_ptr() + b.numel() for b in buffers)


# --------------------------------------------------------------------------------------------------------------------
# Same bits, same keys
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("blocks_to_swap", "prefetch"), [(3, 1), (4, 2), (2, 1)])
def test_swap_trains_bit_for_bit_like_residency(blocks_to_swap: int, prefetch: int) -> None:
    peft_model = build()
    keys = list(peft_model.state_dict())
    modules = [name for name, _ in peft_model.named_modules()]
    engine = swap(peft_model, spread_blocks(NUM_LAYERS, blocks_to_swap), prefetch)
    assert [name for name, _ in peft_model.named_modules()] == modules  # no wrapper module

    run = train(peft_model)
    assert_same_run(resident_run(False), run)
    assert list(peft_model.state_dict()) == keys
    assert run[2]
    assert all(EXPORT_KEY.match(k) for k in run[2])
    if blocks_to_swap > engine.num_slots:
        assert engine.stats.loads > blocks_to_swap  # blocks really went back and forth
    engine.close()
    assert list(peft_model.state_dict()) == keys


@needs_quanto
def test_int8_quanto_swap_moves_inner_tensors_and_trains_bit_for_bit() -> None:
    peft_model = build(quantized=True)
    keys = list(peft_model.state_dict())
    engine = swap(peft_model, spread_blocks(NUM_LAYERS, 3))
    transformer = find_transformer(peft_model)
    linear = transformer.transformer_blocks[2].audio_ff.net[2].base_layer
    assert is_quantized(linear.weight)
    hosts = [block.host for block in engine._blocks.values()]
    assert _inside(linear.weight._data, hosts)
    assert _inside(linear.weight._scale, hosts)

    seen: dict[str, torch.Tensor] = {}

    def probe(module: nn.Module, args: object) -> None:
        seen["data"], seen["scale"] = linear.weight._data, linear.weight._scale

    handle = transformer.transformer_blocks[2].audio_ff.register_forward_pre_hook(probe)
    run = train(peft_model)
    handle.remove()
    assert _inside(seen["data"], engine._slots)
    assert _inside(seen["scale"], engine._slots)
    assert seen["data"].dtype == torch.int8
    assert_same_run(resident_run(True), run)
    assert list(peft_model.state_dict()) == keys


def test_swapped_tensor_names_name_only_frozen_tensors_of_swapped_blocks() -> None:
    peft_model = build()
    engine = swap(peft_model, [1, 3])
    names = engine.swapped_tensor_names(peft_model)
    params = dict(peft_model.named_parameters())
    assert names
    assert all(name in params for name in names)
    assert {int(re.search(r"transformer_blocks\.(\d+)\.", n).group(1)) for n in names} == {1, 3}
    assert not any("lora_" in n for n in names)
    trainable_in_swapped = [n for n, p in params.items() if p.requires_grad and "transformer_blocks.1." in n]
    assert trainable_in_swapped
    assert not set(trainable_in_swapped) & set(names)


def test_close_gives_the_weights_back() -> None:
    peft_model = build()
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    engine = swap(peft_model, spread_blocks(NUM_LAYERS, 4))
    with torch.no_grad():
        peft_model(*workload.make_batch("tiny", workload.TINY_WORKLOAD, dtype=torch.float32)[:2], None)
    engine.close()
    after = peft_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not find_transformer(peft_model).transformer_blocks[0]._forward_pre_hooks


def test_resident_parts_move_but_swapped_weights_stay_on_the_host() -> None:
    peft_model = build()
    engine = BlockSwapEngine(peft_model, [2], device="meta")
    engine.place(peft_model)  # "meta" stands in for the GPU: whatever moves there holds no storage
    transformer = find_transformer(peft_model)
    assert transformer.transformer_blocks[0].attn1.to_q.weight.device.type == "meta"
    assert transformer.patchify_proj.weight.device.type == "meta"
    swapped_block = transformer.transformer_blocks[2]
    assert swapped_block.attn1.to_q.weight.device.type == "cpu"
    assert swapped_block.audio_attn1.to_q.base_layer.weight.device.type == "cpu"
    assert swapped_block.audio_attn1.to_q.lora_A["default"].weight.device.type == "meta"
    assert all(slot.device.type == "meta" for slot in engine._slots)


# --------------------------------------------------------------------------------------------------------------------
# The frozen base stays frozen
# --------------------------------------------------------------------------------------------------------------------


@needs_quanto
def test_quantize_after_freezing_trains_the_base_unless_refrozen(caplog: pytest.LogCaptureFixture) -> None:
    """quanto's quantize()/freeze() after requires_grad_(False) (here after LoRA) create trainable base weights."""
    from optimum.quanto import freeze, qint8, quantize  # noqa: PLC0415

    model = workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.float32)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    for block in model.transformer_blocks:
        quantize(block, weights=qint8, exclude=["*norm*", "*lora_*"])
        freeze(block)
    base = {n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert base, "optimum-quanto no longer recreates trainable parameters; the guard below is moot"
    assert any(is_quantized(p) for n, p in peft_model.named_parameters() if n in base)

    caplog.set_level("WARNING")
    swap(peft_model, [1, 3])  # the engine re-freezes what it streams
    assert "re-froze" in caplog.text
    refrozen = freeze_base_weights(peft_model)  # and the setup re-freezes the resident rest
    assert refrozen
    assert all("transformer_blocks.1." not in n and "transformer_blocks.3." not in n for n in refrozen)
    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == {
        n for n, _ in peft_model.named_parameters() if "lora_" in n
    }
    train(peft_model, steps=1)
    assert all(p.grad is None for n, p in peft_model.named_parameters() if "lora_" not in n)


def test_setup_refreezes_and_keeps_lora_trainable() -> None:
    peft_model = build()
    for name, param in peft_model.named_parameters():
        if name.endswith("attn1.to_q.bias"):
            param.requires_grad_(True)  # what quantize-after-freeze leaves on biases
    lora = {n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n}
    engine = setup_block_swap(peft_model, BlockSwapConfig(blocks_to_swap=3), device="cpu")
    assert engine is not None
    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == lora


# --------------------------------------------------------------------------------------------------------------------
# Guards, sizing, DDP
# --------------------------------------------------------------------------------------------------------------------


def test_grad_without_checkpointing_is_refused_but_inference_works() -> None:
    video, audio, *_ = workload.make_batch("tiny", workload.TINY_WORKLOAD, dtype=torch.float32)
    reference = build()
    with torch.no_grad():
        expected = reference(video=video, audio=audio, perturbations=None)

    peft_model = build()
    find_transformer(peft_model).set_gradient_checkpointing(False)
    swap(peft_model, spread_blocks(NUM_LAYERS, 3))
    with pytest.raises(RuntimeError, match="gradient checkpointing"):
        peft_model(video=video, audio=audio, perturbations=None)
    with torch.no_grad():
        for _ in range(2):  # the ring wraps around to the next forward
            actual = peft_model(video=video, audio=audio, perturbations=None)
            assert all(torch.equal(a, b) for a, b in zip(expected, actual, strict=True))


def test_inference_mode_first_then_training() -> None:
    peft_model = build()
    swap(peft_model, spread_blocks(NUM_LAYERS, 4), prefetch=2)
    video, audio, *_ = workload.make_batch("tiny", workload.TINY_WORKLOAD, dtype=torch.float32)
    with torch.inference_mode():  # validation before the first step caches the slot views
        peft_model(video=video, audio=audio, perturbations=None)
    assert_same_run(resident_run(False), train(peft_model))


def test_setup_sizes_auto_from_the_measured_blocks() -> None:
    peft_model = build()
    block = block_frozen_bytes(find_transformer(peft_model).transformer_blocks[0])
    trainable = tensor_bytes([p for p in peft_model.parameters() if p.requires_grad])
    everything = tensor_bytes(list(peft_model.parameters()))
    # Half a block less than full residency: 1 or 2 swapped blocks save nothing (2 slots), 3 swapped save one block.
    budget_gb = (everything + 3 * trainable - 0.5 * block) / 1e9
    engine = setup_block_swap(
        peft_model, BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=budget_gb, reserve_gb=0), "cpu"
    )
    assert engine is not None
    assert engine.blocks == spread_blocks(NUM_LAYERS, 3)


def test_setup_returns_none_when_auto_needs_no_swap() -> None:
    peft_model = build()
    assert setup_block_swap(peft_model, BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=100), "cpu") is None


def test_auto_sizing_for_cuda_graphs_sets_their_reserve_aside() -> None:
    peft_model = build()
    trainable = tensor_bytes([p for p in peft_model.parameters() if p.requires_grad])
    everything = tensor_bytes(list(peft_model.parameters()))
    # Room for the whole tiny model plus half a graphs' reserve: eager needs no swap; the graphs' reserve (one share a
    # block) fits nowhere.
    graphs = planned_reserve_bytes(
        BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=1.0, reserve_gb=0), True, NUM_LAYERS
    )
    assert graphs > 0
    budget_gb = (everything + 3 * trainable + graphs / 2) / 1e9
    settings = BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=budget_gb, reserve_gb=0)
    assert setup_block_swap(peft_model, settings, "cpu") is None
    with pytest.raises(ValueError, match="too small"):
        setup_block_swap(build(), settings, "cpu", cuda_graphs=True)


def test_engine_rejects_bad_arguments() -> None:
    peft_model = build()
    with pytest.raises(ValueError, match="prefetch must be at least 1"):
        BlockSwapEngine(peft_model, [1], "cpu", prefetch=0)
    with pytest.raises(ValueError, match=r"Block indices must be in \[0, 4\)"):
        BlockSwapEngine(peft_model, [4], "cpu")
    with pytest.raises(TypeError, match="transformer_blocks"):
        BlockSwapEngine(nn.Linear(2, 2), [0], "cpu")


def test_ddp_trains_with_the_swapped_tensors_ignored(tmp_path: Path) -> None:
    import torch.distributed as dist  # noqa: PLC0415

    peft_model = build()
    engine = swap(peft_model, spread_blocks(NUM_LAYERS, 3))
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        peft_model, engine.swapped_tensor_names(peft_model)
    )
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        run = train(nn.parallel.DistributedDataParallel(peft_model))
    finally:
        dist.destroy_process_group()
    assert_same_run(resident_run(False), run)


# --------------------------------------------------------------------------------------------------------------------
# Pinned copies stay out of forked children (DataLoader workers)
# --------------------------------------------------------------------------------------------------------------------


def _child_anon_gb() -> float:
    """Fork a child that reports its ``RssAnon`` (GB) through a pipe; the child touches nothing else."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, str(hostmem.process_memory()["RssAnon"]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        anon = int(pipe.read())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    return anon / 1e9


@pytest.mark.skipif(sys.platform != "linux", reason="madvise(MADV_DONTFORK) is Linux's")
def test_large_host_copies_are_kept_out_of_forked_children_and_given_back_when_released() -> None:
    from ltx_audio_reference.blockswap.engine import (  # noqa: PLC0415
        DONTFORK_MIN_BYTES,
        MADV_DOFORK,
        _madvise,
        keep_out_of_forks,
    )

    nbytes = 4 * DONTFORK_MIN_BYTES  # 256 MiB, every page touched
    buffer = torch.ones(nbytes, dtype=torch.uint8)
    small = torch.ones(DONTFORK_MIN_BYTES // 2, dtype=torch.uint8)
    shared = _child_anon_gb()  # the child maps the buffer (shared copy-on-write), so its RSS counts it
    assert not keep_out_of_forks(small.data_ptr(), small.numel())  # small buffers may share pages: left alone
    assert keep_out_of_forks(buffer.data_ptr(), buffer.numel())
    kept_out = _child_anon_gb()
    assert shared - kept_out >= 0.95 * nbytes / 1e9, (shared, kept_out)  # the child no longer has it
    assert int(buffer.sum()) == nbytes  # the parent still has every byte
    assert _madvise(buffer.data_ptr(), buffer.numel(), MADV_DOFORK)  # what unregistering does
    assert _child_anon_gb() - kept_out >= 0.95 * nbytes / 1e9


def test_the_full_scale_benchmark_reads_the_plan_that_block_swap_logs(caplog: pytest.LogCaptureFixture) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "full_scale.py"
    spec = importlib.util.spec_from_file_location("full_scale", script)
    assert spec is not None
    assert spec.loader is not None
    full_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(full_scale)
    with caplog.at_level(logging.INFO, logger="ltx_audio_reference"):
        engine = setup_block_swap(build(), BlockSwapConfig(blocks_to_swap=3), "cpu")
    assert engine is not None
    assert full_scale.plan_columns(caplog.text)["planned_swapped"] == len(engine.blocks) == 3
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ltx_audio_reference"):
        assert setup_block_swap(build(), BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=100), "cpu") is None
    columns = full_scale.plan_columns(caplog.text)
    assert columns["planned_swapped"] == 0
    assert 0 < columns["planned_peak_gb"] <= 100
    assert full_scale.plan_columns("no plan here") == {}
