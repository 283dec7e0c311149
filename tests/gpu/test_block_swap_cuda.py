"""Block swap on a CUDA GPU: bitwise equality with residency, exported LoRA keys, startup peak, DDP, auto sizing.

Skips without CUDA. Uses a 4-block full-width LTX-2.3-class model with random weights and the seed workload.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import gc
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

from ltx_audio_reference.blockswap.config import BlockSwapConfig, slot_count, spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.blockswap.plugin import setup_block_swap
from ltx_audio_reference.testing import swap_workload as workload

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

NUM_LAYERS = 4
STEPS = 3
HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
DTYPES = ["bf16", pytest.param("int8", marks=pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto"))]
EXPORT_KEY = re.compile(r"^diffusion_model\.transformer_blocks\.\d+\.audio_(attn1|attn2|ff)\..*lora_[AB]\.weight$")


@pytest.fixture(autouse=True)
def deterministic() -> Iterator[None]:
    """Deterministic kernels, so that two resident runs agree bit for bit and swap can be compared with them.

    cuDNN's and the flash/memory-efficient attention backwards accumulate in a varying order, so attention runs on
    the math backend here (see :func:`_pin_math_attention` for ltx-core 1.2.0); the engine itself adds no arithmetic.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    with sdpa_kernel([SDPBackend.MATH]):
        yield
    torch.use_deterministic_algorithms(previous)
    gc.collect()
    torch.cuda.empty_cache()


def _pin_math_attention(model: torch.nn.Module) -> None:
    """Make every attention module use SDPA's math backend.

    ltx-core 1.0.0 calls SDPA bare, so the fixture's ``sdpa_kernel`` context decides. ltx-core 1.2.0 wraps each call
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


@dataclass
class Run:
    losses: list[torch.Tensor] = field(default_factory=list)
    grads: list[dict[str, torch.Tensor]] = field(default_factory=list)
    export: dict[str, torch.Tensor] = field(default_factory=dict)
    startup_peak: int = 0
    steady_peak: int = 0
    base_grads: int = 0


def _prepare(dtype: str) -> torch.nn.Module:
    """The model as the stock trainer holds it before ``accelerator.prepare``: quantized, frozen, LoRA, on CPU."""
    model = workload.build_model(NUM_LAYERS, "full", seed=0, dtype=torch.bfloat16, device="cuda")
    _pin_math_attention(model)
    if dtype == "int8":
        workload.quantize_int8(model)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=32, seed=0)
    model.set_gradient_checkpointing(True)
    peft_model.to("cpu")
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    return peft_model


def _export(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainer's LoRA export: peft adapter weights, ``base_model.model.`` -> ``diffusion_model.``, bf16."""
    from peft import get_peft_model_state_dict  # noqa: PLC0415

    state = get_peft_model_state_dict(peft_model)
    return {
        "diffusion_model." + k.replace("base_model.model.", "", 1): v.detach().to(torch.bfloat16).cpu()
        for k, v in state.items()
    }


# Per-step lengths for the compiled runs: references and targets change length between batches.
LENGTHS = [
    workload.SEED_WORKLOAD,
    workload.Workload(video_tokens=768, target_audio_tokens=100, reference_audio_tokens=40),
    workload.Workload(video_tokens=896, target_audio_tokens=150, reference_audio_tokens=60),
]


def _train(
    dtype: str, blocks_to_swap: int, prefetch: int = 1, ddp: bool = False, compiled: bool = False, varying: bool = False
) -> Run:
    peft_model = _prepare(dtype)
    run = Run()
    torch.cuda.reset_peak_memory_stats()
    engine = None
    if blocks_to_swap:
        engine = BlockSwapEngine(
            peft_model, spread_blocks(NUM_LAYERS, blocks_to_swap), device="cuda", prefetch=prefetch
        )
        engine.place(peft_model)
    else:
        peft_model.to("cuda")
    torch.cuda.synchronize()
    run.startup_peak = torch.cuda.max_memory_allocated()

    if compiled:
        from ltx_audio_reference.blockswap.compile import compile_blocks  # noqa: PLC0415
        from ltx_audio_reference.blockswap.tensors import find_transformer  # noqa: PLC0415

        compile_blocks(find_transformer(peft_model), backend="inductor")
    model = peft_model
    if ddp:
        if blocks_to_swap:
            assert engine is not None
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                peft_model, engine.swapped_tensor_names(peft_model)
            )
        model = torch.nn.parallel.DistributedDataParallel(peft_model, device_ids=[torch.cuda.current_device()])

    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=1e-4)
    torch.cuda.reset_peak_memory_stats()
    for step in range(STEPS):
        shape = LENGTHS[step % len(LENGTHS)] if varying else workload.SEED_WORKLOAD
        video, audio, video_target, audio_target = workload.make_batch("full", shape, device="cuda", seed=1)
        video_pred, audio_pred = model(video=video, audio=audio, perturbations=None)
        loss = workload.loss_fn(video_pred, audio_pred, video_target, audio_target)
        loss.backward()
        run.losses.append(loss.detach().cpu())
        run.grads.append({n: p.grad.detach().cpu().clone() for n, p in named})
        run.base_grads += sum(
            1 for n, p in peft_model.named_parameters() if "lora_" not in n and getattr(p, "grad", None) is not None
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    run.steady_peak = torch.cuda.max_memory_allocated()
    run.export = _export(peft_model)
    if engine is not None:
        engine.close(device="cpu")
    del model, optimizer, peft_model
    gc.collect()  # peft and checkpointing leave reference cycles; free the model now, not at some later collection
    torch.cuda.empty_cache()
    return run


def _assert_bitwise(reference: Run, other: Run, what: str) -> None:
    for step, (a, b) in enumerate(zip(reference.losses, other.losses, strict=True)):
        assert torch.equal(a, b), f"{what}: loss differs at step {step}: {a.item()!r} vs {b.item()!r}"
    for step, (ga, gb) in enumerate(zip(reference.grads, other.grads, strict=True)):
        assert ga.keys() == gb.keys()
        differing = [n for n in ga if not torch.equal(ga[n], gb[n])]
        assert not differing, f"{what}: {len(differing)} LoRA grads differ at step {step}, e.g. {differing[0]}"
    assert list(reference.export) == list(other.export), f"{what}: exported keys differ"
    differing = [k for k in reference.export if not torch.equal(reference.export[k], other.export[k])]
    assert not differing, f"{what}: {len(differing)} exported LoRA tensors differ, e.g. {differing[0]}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_swap_is_bitwise_equal_to_resident(dtype: str) -> None:
    resident = _train(dtype, 0)
    _assert_bitwise(resident, _train(dtype, 0), f"{dtype} resident vs resident (kernel determinism)")
    assert resident.export
    assert all(EXPORT_KEY.match(k) for k in resident.export), list(resident.export)[:3]

    for blocks_to_swap, prefetch in ((NUM_LAYERS - 1, 1), (NUM_LAYERS, 2), (NUM_LAYERS // 2, 1)):
        swapped = _train(dtype, blocks_to_swap, prefetch)
        _assert_bitwise(resident, swapped, f"{dtype} {blocks_to_swap}/{NUM_LAYERS} swapped, prefetch {prefetch}")
        assert swapped.base_grads == 0
        assert swapped.startup_peak <= swapped.steady_peak, (swapped.startup_peak, swapped.steady_peak)
        if NUM_LAYERS - blocks_to_swap + slot_count(blocks_to_swap, prefetch) < NUM_LAYERS:
            assert swapped.steady_peak < resident.steady_peak


def test_ddp_each_rank_streams_its_own_copy(tmp_path: object) -> None:
    import torch.distributed as dist  # noqa: PLC0415

    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        resident = _train("bf16", 0)
        swapped = _train("bf16", NUM_LAYERS - 1, ddp=True)
    finally:
        dist.destroy_process_group()
    assert [x.item() for x in swapped.losses] == [x.item() for x in resident.losses]
    assert swapped.export.keys() == resident.export.keys()


def test_auto_sizing_stays_under_budget() -> None:
    peft_model = _prepare("bf16")
    budget_gb = 4.5
    torch.cuda.reset_peak_memory_stats()
    engine = setup_block_swap(peft_model, BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=budget_gb), "cuda")
    assert engine is not None
    assert len(engine.blocks) >= 2
    named = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(named, lr=1e-4)
    video, audio, video_target, audio_target = workload.make_batch("full", device="cuda", seed=1)
    for _ in range(2):
        video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    engine.close(device="cpu")
    assert peak <= budget_gb * 1e9, f"{len(engine.blocks)} blocks swapped, peak {peak / 1e9:.2f} GB"


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_blocks_with_swap_match_compiled_resident_bitwise_and_eager_within_bf16(dtype: str) -> None:
    """Each block's forward compiled (inductor), its hooks eager: the swap engine's streams and events stay outside
    the graph and add no arithmetic, so compiled + swapped equals compiled + resident bit for bit; compiled and eager
    differ only by kernel fusion, within bf16 rounding. Lengths change every step; the graphs do not."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    resident = _train(dtype, 0, compiled=True, varying=True)
    graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs <= 2, torch._dynamo.utils.counters["stats"]
    for blocks_to_swap in (NUM_LAYERS // 2, NUM_LAYERS - 1):
        swapped = _train(dtype, blocks_to_swap, compiled=True, varying=True)
        _assert_bitwise(resident, swapped, f"{dtype} compiled, {blocks_to_swap}/{NUM_LAYERS} swapped")
    assert int(torch._dynamo.utils.counters["stats"]["unique_graphs"]) == graphs  # swapping adds no graph
    eager = _train(dtype, NUM_LAYERS // 2, varying=True)
    for step, (a, b) in enumerate(zip(eager.losses, resident.losses, strict=True)):
        torch.testing.assert_close(b, a, rtol=1.6e-2, atol=1e-3, msg=f"{dtype} compiled vs eager loss, step {step}")
    assert list(eager.export) == list(resident.export)
    assert all(EXPORT_KEY.match(k) for k in resident.export)
