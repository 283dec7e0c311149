"""Compiled transformer blocks with block swap on one CUDA GPU: eager vs compiled vs stock whole-model compile.

Full-width LTX-2.3-class blocks with random weights (as ``block_swap.py``), LoRA r32 on the audio stack, gradient
checkpointing, AdamW. For each dtype (bf16, int8-quanto), each workload (the seed's: 1024 video + 121 target + 50
reference audio + 256 text tokens; and 512x768x121: 6144 video tokens, 121 + 50 audio), each L in --layers and each
swap share (resident, 25 %, 50 %, all but one) it trains in this one process:

- ``eager``: the engine's hooks and the blocks run eagerly (today's default);
- ``compiled``: :func:`ltx_audio_reference.blockswap.compile.compile_blocks` (each block's forward compiled with
  inductor, hooks eager; one graph for every block, the sequence dims dynamic);
- ``stock_compile`` (``--stock``): what stock ltx-trainer offers, a whole-model ``torch.compile(model, dynamic=True)``
  (accelerate's ``dynamo_config`` with ``dynamo_use_dynamic: true``), where it runs at all.

Per setting: median step time over --steps after --warmup, GPU-busy time per step (the sum of the kernels' device
time on the compute work, from the profiler, copies excluded), steady peak VRAM, and the compile warm-up (the first
compiled steps' extra time, once per dtype: later settings reuse the graphs). Both sides of every ratio come from this
one run. Writes ``{"meta": ..., "rows": [...]}``.

    python benchmarks/compile_blocks.py --out benchmarks/results/compile_h200.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from block_swap import _half_up, _time_steps, build

from ltx_audio_reference.blockswap.compile import compile_blocks, uncompile_blocks
from ltx_audio_reference.blockswap.config import spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.testing import swap_workload as workload

logger = logging.getLogger("compile_blocks_benchmark")

GB = 1e9
WORKLOADS = {
    "seed": workload.SEED_WORKLOAD,
    # 512 x 768 x 121 @ 25 fps -> 16 x 16 x 24 latents; the audio stays the seed's.
    "512x768x121": workload.Workload(video_tokens=6144, target_audio_tokens=121, reference_audio_tokens=50),
}
SHARES = {"resident": lambda _: 0, "25%": lambda n: _half_up(n / 4), "50%": lambda n: _half_up(n / 2)}
SHARES["all-but-one"] = lambda n: n - 1


def _gpu_busy_ms(step: object, steps: int = 2) -> float:
    """Device time of the compute kernels per step (memcpy and memset excluded), from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    total_us = 0.0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and not event.name.lower().startswith(
            ("memcpy", "memset")
        ):
            total_us += event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
    return total_us / 1e3 / steps


def run_setting(peft_model: torch.nn.Module, layers: int, swapped: int, batch: tuple, mode: str, args: object) -> dict:
    """Place, optionally compile, train warmup + steps, measure, tear down."""
    gc.collect()
    torch.cuda.empty_cache()
    engine = None
    if swapped:
        engine = BlockSwapEngine(peft_model, spread_blocks(layers, swapped), device="cuda", prefetch=1)
        engine.place(peft_model)
    else:
        peft_model.to("cuda")
    transformer = peft_model.get_base_model()
    model = peft_model
    if mode == "compiled":
        compile_blocks(transformer, backend="inductor")
    elif mode == "stock_compile":
        model = torch.compile(peft_model, dynamic=True)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    video, audio, video_target, audio_target = batch

    def step() -> None:
        video_pred, audio_pred = model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    row: dict = {"step_ms": None, "gpu_busy_ms": None, "steady_peak_gb": None, "warmup_s": None, "error": None}
    try:
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        row["warmup_s"] = time.perf_counter() - start
        torch.cuda.reset_peak_memory_stats()
        times = _time_steps(step, args.steps)
        row["step_ms"] = statistics.median(times) * 1e3
        row["steady_peak_gb"] = torch.cuda.max_memory_allocated() / GB
        row["gpu_busy_ms"] = _gpu_busy_ms(step)
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        logger.warning("%s L=%d swapped=%d: %s", mode, layers, swapped, row["error"])
    finally:
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()
        if mode == "compiled":
            uncompile_blocks(transformer)
        if engine is not None:
            engine.close(device="cpu")
        peft_model.to("cpu")
        torch.cuda.synchronize()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--shares", nargs="+", default=list(SHARES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--stock", action="store_true", help="also stock whole-model compile (bf16, seed workload)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch._dynamo.config.cache_size_limit = 16  # stock whole-model compile with dynamic shapes recompiles more
    rows = []
    for dtype in args.dtypes:
        for layers in args.layers:
            peft_model = build(dtype, layers)
            for name in args.workloads:
                batch = workload.make_batch("full", WORKLOADS[name], device="cuda", seed=0)
                for share in args.shares:
                    swapped = SHARES[share](layers)
                    modes = ["eager", "compiled"]
                    if args.stock and dtype == "bf16" and name == "seed" and share in ("resident", "50%"):
                        modes.append("stock_compile")
                    for mode in modes:
                        row = run_setting(peft_model, layers, swapped, batch, mode, args)
                        row.update(dtype=dtype, layers=layers, swapped=swapped, share=share, workload=name, mode=mode)
                        rows.append(row)
                        logger.info("%s", json.dumps(row))
            del peft_model
            gc.collect()
            torch.cuda.empty_cache()
    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "warmup": args.warmup,
        "steps": args.steps,
        "workloads": {k: dataclasses.asdict(v) for k, v in WORKLOADS.items()},
        "block": "full-width LTX-2.3-class (32x128 video heads, 32x64 audio heads), LoRA r32 audio, checkpointing",
    }
    sys.stdout.write(
        f"{'dtype':5} {'L':>2} {'swap':>4} {'workload':12} {'mode':14} {'step ms':>8} {'busy ms':>8} {'busy %':>6} "
        f"{'peak GB':>7} {'vs eager':>8}\n"
    )
    eager = {(r["dtype"], r["layers"], r["swapped"], r["workload"]): r for r in rows if r["mode"] == "eager"}
    for r in rows:
        base = eager.get((r["dtype"], r["layers"], r["swapped"], r["workload"]))
        ratio = base["step_ms"] / r["step_ms"] if base and base["step_ms"] and r["step_ms"] else None
        r["speedup_vs_eager"] = ratio
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        busy = 100 * r["gpu_busy_ms"] / r["step_ms"] if r["gpu_busy_ms"] and r["step_ms"] else None
        r["gpu_busy_fraction"] = None if busy is None else busy / 100
        sys.stdout.write(
            f"{r['dtype']:5} {r['layers']:>2} {r['swapped']:>4} {r['workload']:12} {r['mode']:14} "
            f"{fmt(r['step_ms'], '8.1f')} {fmt(r['gpu_busy_ms'], '8.1f')} {fmt(busy, '6.0f')} "
            f"{fmt(r['steady_peak_gb'], '7.2f')} {fmt(ratio, '8.2f')} {r['error'] or ''}\n"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
