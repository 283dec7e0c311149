"""Helpers the GPU block-swap tests share (``tests/gpu/test_block_swap_cuda.py``, ``test_ltx25_cuda.py``).

Deterministic kernels so that two resident runs agree bit for bit; a training run of a LoRA-wrapped model, resident
or swapped (optionally compiled, under DDP, with varying lengths); the trainer's LoRA export; and the bit-for-bit
comparison of two runs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ltx_audio_reference.blockswap.config import spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.testing import swap_workload as workload
from ltx_audio_reference.testing.determinism import deterministic_kernels, pin_math_attention  # noqa: F401 - for the GPU tests

#: Per-step lengths for the varying-length runs: references and targets change length between batches.
LENGTHS = [
    workload.SEED_WORKLOAD,
    workload.Workload(video_tokens=768, target_audio_tokens=100, reference_audio_tokens=40),
    workload.Workload(video_tokens=896, target_audio_tokens=150, reference_audio_tokens=60),
]


def finish_build(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """The model as the stock trainer holds it before ``accelerator.prepare``: quantized, frozen, LoRA r32, on CPU.

    ``dtype`` is ``bf16`` or a quantization backend (``int8-quanto``, ``int8``, ``int8-dynamic``).
    """
    pin_math_attention(model)
    if dtype != "bf16":
        workload.quantize_blocks(model, dtype)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=32, seed=0)
    model.set_gradient_checkpointing(True)
    peft_model.to("cpu")
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    return peft_model


@dataclass
class Run:
    """What one training run produced."""

    losses: list[torch.Tensor] = field(default_factory=list)
    grads: list[dict[str, torch.Tensor]] = field(default_factory=list)
    export: dict[str, torch.Tensor] = field(default_factory=dict)
    startup_peak: int = 0
    steady_peak: int = 0
    base_grads: int = 0
    graph_stats: dict[str, int] = field(default_factory=dict)


def export_lora(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainer's LoRA export: peft adapter weights, ``base_model.model.`` -> ``diffusion_model.``, bf16."""
    from peft import get_peft_model_state_dict  # noqa: PLC0415

    state = get_peft_model_state_dict(peft_model)
    return {
        "diffusion_model." + k.replace("base_model.model.", "", 1): v.detach().to(torch.bfloat16).cpu()
        for k, v in state.items()
    }


def train(
    build: Callable[[], torch.nn.Module],
    num_layers: int,
    blocks_to_swap: int,
    *,
    steps: int,
    prefetch: int = 1,
    ddp: bool = False,
    compiled: bool = False,
    graphs: bool = False,
    varying: bool = False,
) -> Run:
    """Build, place (resident or ``blocks_to_swap`` swapped), optionally compile (``graphs``: with CUDA graphs and the
    checkpoint inside them) and wrap in DDP, train ``steps``."""
    peft_model = build()
    run = Run()
    torch.cuda.reset_peak_memory_stats()
    engine = None
    if blocks_to_swap:
        engine = BlockSwapEngine(
            peft_model, spread_blocks(num_layers, blocks_to_swap), device="cuda", prefetch=prefetch
        )
        engine.place(peft_model)
    else:
        peft_model.to("cuda")
    torch.cuda.synchronize()
    run.startup_peak = torch.cuda.max_memory_allocated()
    if compiled or graphs:
        from ltx_audio_reference.blockswap.compile import compile_blocks  # noqa: PLC0415
        from ltx_audio_reference.blockswap.tensors import find_transformer  # noqa: PLC0415

        compile_blocks(find_transformer(peft_model), backend="inductor", cuda_graphs=graphs)
    model = peft_model
    if ddp:
        if engine is not None:
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                peft_model, engine.swapped_tensor_names(peft_model)
            )
        model = torch.nn.parallel.DistributedDataParallel(peft_model, device_ids=[torch.cuda.current_device()])

    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=1e-4)
    torch.cuda.reset_peak_memory_stats()
    for step in range(steps):
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
    run.export = export_lora(peft_model)
    if graphs:
        from ltx_audio_reference.blockswap.compile import graph_stats  # noqa: PLC0415

        run.graph_stats = graph_stats()
    if engine is not None:
        engine.close(device="cpu")
    del model, optimizer, peft_model
    gc.collect()  # peft and checkpointing leave reference cycles; free the model now, not at some later collection
    torch.cuda.empty_cache()
    return run


def assert_bitwise(reference: Run, other: Run, what: str) -> None:
    """Losses, LoRA gradients and exports of two runs are equal bit for bit."""
    for step, (a, b) in enumerate(zip(reference.losses, other.losses, strict=True)):
        assert torch.equal(a, b), f"{what}: loss differs at step {step}: {a.item()!r} vs {b.item()!r}"
    for step, (ga, gb) in enumerate(zip(reference.grads, other.grads, strict=True)):
        assert ga.keys() == gb.keys()
        differing = [n for n in ga if not torch.equal(ga[n], gb[n])]
        assert not differing, f"{what}: {len(differing)} LoRA grads differ at step {step}, e.g. {differing[0]}"
    assert list(reference.export) == list(other.export), f"{what}: exported keys differ"
    differing = [k for k in reference.export if not torch.equal(reference.export[k], other.export[k])]
    assert not differing, f"{what}: {len(differing)} exported LoRA tensors differ, e.g. {differing[0]}"
