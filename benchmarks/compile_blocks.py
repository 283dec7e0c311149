"""Compiled transformer blocks with block swap on one CUDA GPU: eager vs compiled vs stock whole-model compile.

Full-width LTX-2.3-class blocks with random weights (as ``block_swap.py``), LoRA r32 on the audio stack, gradient
checkpointing, AdamW. For each dtype (bf16, int8-quanto), each workload (the seed's: 1024 video + 121 target + 50
reference audio + 256 text tokens; and 512x768x121: 6144 video tokens, 121 + 50 audio), each L in --layers and each
swap share (resident, 25 %, 50 %, all but one) it trains in this one process:

- ``eager``: the engine's hooks and the blocks run eagerly (today's default);
- ``compiled``: :func:`ltx_audio_reference.blockswap.compile.compile_blocks` (each block's forward compiled with
  inductor, hooks eager; one graph for every block, the sequence dims dynamic);
- ``stock_compile``: what stock ltx-trainer offers, a whole-model ``torch.compile(model, dynamic=True)``
  (accelerate's ``dynamo_config`` with ``dynamo_use_dynamic: true``), where it runs at all;
- ``cudagraphs``: the compiled blocks with ``mode="reduce-overhead"`` and the eager checkpoint around them (fails:
  the checkpoint's recompute frees the graphs' inputs);
- ``graphs``: ``compile_blocks(cuda_graphs=True)``: the checkpoint inside each block's graph, one forward and one
  backward CUDA graph per block, swapped blocks in fixed slots.

``--modes`` picks them (default ``eager compiled``). ``--dtypes`` names ``bf16`` or quantization backends
(``int8-quanto``, ``int8``, ``int8-dynamic``) and ``torchao-int8``: torchao's ``Int8WeightOnlyConfig`` on the same
Linear layers, measured beside ours (not a shipped backend).

Per setting: median step time over --steps after --warmup, GPU-busy time per step (the sum of the kernels' device
time on the compute work, from the profiler, copies excluded), steady peak VRAM, and the compile warm-up (the first
compiled steps' extra time, once per dtype: later settings reuse the graphs). Both sides of every ratio come from this
one run. Also per step: the CUDA kernels launched and the host time between them (step minus GPU-busy), which is
what bounds a step that the GPU does not fill.

With more than one L, it fits ``y = a + b * L`` per (dtype, workload, share, mode) over the measured L, as
``block_swap.py`` does, and gives the step, the GPU-busy share and the speed-up at 48 blocks (the share's swapped
count scaled to 48). Writes ``{"meta": ..., "rows": [...], "fits": [...]}`` after every setting (atomically), so a
run cut short keeps what it measured; ``--merge FILE`` keeps an earlier run's rows (each row names its ``run``).

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
from block_swap import _half_up, _time_steps, build, linear_fit

from ltx_audio_reference.blockswap.compile import compile_blocks, graph_stats, uncompile_blocks
from ltx_audio_reference.blockswap.config import spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.reliability.files import atomic_write_json
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
FRACTIONS = {"resident": 0.0, "25%": 0.25, "50%": 0.5, "all-but-one": None}
MODES = ("eager", "compiled", "stock_compile", "cudagraphs", "graphs")
TARGET_LAYERS = 48


def _gpu_busy_ms(step: object, steps: int = 2) -> tuple[float, float]:
    """Device time of the compute kernels per step (memcpy and memset excluded) and kernels per step, profiled."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    total_us, kernels = 0.0, 0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and not event.name.lower().startswith(
            ("memcpy", "memset")
        ):
            total_us += event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
            kernels += 1
    return total_us / 1e3 / steps, kernels / steps


def _host_ops(step: object, top: int = 10) -> list[dict]:
    """Where one step's host time goes: the ops and runtime calls with the most self CPU time (profiled, so slower).

    Each entry: name, calls, self CPU ms and its share of all self CPU time in the step. This names what bounds a
    step that the GPU does not fill (kernel launches, ops left outside the compiled graph, guard checks).
    """
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    averages = [a for a in prof.key_averages() if a.self_cpu_time_total > 0]
    total_us = sum(a.self_cpu_time_total for a in averages) or 1.0
    averages.sort(key=lambda a: a.self_cpu_time_total, reverse=True)
    return [
        {
            "name": a.key[:120],
            "calls": a.count,
            "self_cpu_ms": a.self_cpu_time_total / 1e3,
            "share": a.self_cpu_time_total / total_us,
        }
        for a in averages[:top]
    ]


def _tear_down(
    peft_model: torch.nn.Module, transformer: torch.nn.Module, optimizer: object, engine: object, mode: str
) -> None:
    """Undo one setting: optimizer state, compiled forwards, the engine's placement; the model back on the CPU."""
    optimizer.zero_grad(set_to_none=True)
    optimizer.state.clear()
    if mode in ("compiled", "cudagraphs", "graphs"):
        uncompile_blocks(transformer)
    if mode == "graphs":
        torch._dynamo.reset()  # the CUDA-graph trees hold this setting's static inputs
    if mode == "stock_compile":
        torch._dynamo.reset()  # the whole-model graphs hold the model; later settings must not reuse them
    if engine is not None:
        engine.close(device="cpu")
    peft_model.to("cpu")
    torch.cuda.synchronize()


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
    if mode in ("compiled", "cudagraphs", "graphs"):
        extra = {"mode": "reduce-overhead"} if mode == "cudagraphs" else {}
        compile_blocks(transformer, backend="inductor", cuda_graphs=mode == "graphs", **extra)
    elif mode == "stock_compile":
        model = torch.compile(peft_model, dynamic=True)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    video, audio, video_target, audio_target = batch

    def step() -> None:
        if mode == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        video_pred, audio_pred = model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    row: dict = {"step_ms": None, "gpu_busy_ms": None, "kernels_per_step": None, "steady_peak_gb": None}
    row.update(warmup_s=None, error=None)
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
        row["gpu_busy_ms"], row["kernels_per_step"] = _gpu_busy_ms(step)
        if mode == "graphs":
            row["graph_stats"] = graph_stats()
        if args.host_profile:
            row["host_ops"] = _host_ops(step)
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        logger.warning("%s L=%d swapped=%d: %s", mode, layers, swapped, row["error"])
    finally:
        _tear_down(peft_model, transformer, optimizer, engine, mode)
    return row


def derive(rows: list[dict]) -> None:
    """Per row: speed-up over eager of the same setting, GPU-busy share, host time per step."""
    eager = {_key(r): r for r in rows if r["mode"] == "eager"}
    for r in rows:
        base = eager.get(_key(r))
        ok = r["step_ms"] is not None
        r["speedup_vs_eager"] = base["step_ms"] / r["step_ms"] if base and base["step_ms"] and ok else None
        r["gpu_busy_fraction"] = r["gpu_busy_ms"] / r["step_ms"] if ok and r["gpu_busy_ms"] else None
        r["host_gap_ms"] = r["step_ms"] - r["gpu_busy_ms"] if ok and r["gpu_busy_ms"] else None


def _key(r: dict) -> tuple:
    return (r.get("run"), r["dtype"], r["layers"], r["swapped"], r["workload"])


def fits_to_48(rows: list[dict]) -> list[dict]:
    """Fit step and GPU-busy ms over L per (run, dtype, workload, share, mode); their values at 48 blocks.

    Each fit uses one run's rows only, so both sides of every speed-up at 48 blocks come from one run.
    """
    out = []
    groups: dict[tuple, dict[int, dict]] = {}  # (run, dtype, workload, share, mode) -> L -> the latest row
    for r in rows:
        if r["step_ms"] is not None:
            groups.setdefault((r.get("run", ""), r["dtype"], r["workload"], r["share"], r["mode"]), {})[r["layers"]] = r
    for run, dtype, name, share, mode in sorted(groups):
        by_layers = groups[(run, dtype, name, share, mode)]
        if len(by_layers) < 2:
            continue
        xs = sorted(by_layers)
        entry: dict = {"run": run, "dtype": dtype, "workload": name, "share": share, "mode": mode, "fit_layers": xs}
        fraction = FRACTIONS[share]
        entry["swapped_at_48"] = TARGET_LAYERS - 1 if fraction is None else _half_up(fraction * TARGET_LAYERS)
        for metric in ("step_ms", "gpu_busy_ms", "kernels_per_step"):
            ys = [by_layers[x][metric] for x in xs]
            if any(y is None for y in ys):
                continue
            a, b, residual = linear_fit([float(x) for x in xs], ys)
            entry[metric] = {"a": a, "per_block": b, "max_residual": residual, "at_48": a + b * TARGET_LAYERS}
        if "gpu_busy_ms" in entry:
            entry["gpu_busy_fraction_at_48"] = entry["gpu_busy_ms"]["at_48"] / entry["step_ms"]["at_48"]
        out.append(entry)
    eager = {(e["run"], e["dtype"], e["workload"], e["share"]): e for e in out if e["mode"] == "eager"}
    for e in out:
        base = eager.get((e["run"], e["dtype"], e["workload"], e["share"]))
        e["speedup_vs_eager_at_48"] = base["step_ms"]["at_48"] / e["step_ms"]["at_48"] if base else None
    return out


def print_report(rows: list[dict], fits: list[dict]) -> None:
    """The rows side by side, then the fits at 48 blocks."""
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    w = sys.stdout.write
    w(
        f"{'dtype':5} {'L':>2} {'swap':>4} {'workload':12} {'mode':14} {'step ms':>8} {'busy ms':>8} {'busy %':>6} "
        f"{'kernels':>7} {'peak GB':>7} {'warm s':>6} {'vs eager':>8}\n"
    )
    for r in rows:
        busy = None if r["gpu_busy_fraction"] is None else 100 * r["gpu_busy_fraction"]
        w(
            f"{r['dtype']:5} {r['layers']:>2} {r['swapped']:>4} {r['workload']:12} {r['mode']:14} "
            f"{fmt(r['step_ms'], '8.1f')} {fmt(r['gpu_busy_ms'], '8.1f')} {fmt(busy, '6.0f')} "
            f"{fmt(r['kernels_per_step'], '7.0f')} {fmt(r['steady_peak_gb'], '7.2f')} {fmt(r['warmup_s'], '6.1f')} "
            f"{fmt(r['speedup_vs_eager'], '8.2f')} {r['error'] or ''}\n"
        )
    if fits:
        w("\nFits y = a + b*L over the measured L, at 48 blocks:\n")
        w(f"{'dtype':5} {'workload':12} {'share':11} {'mode':14} {'N@48':>4} {'step s':>7} {'busy %':>6} ")
        w(f"{'vs eager':>8}\n")
        for e in fits:
            busy = e.get("gpu_busy_fraction_at_48")
            w(
                f"{e['dtype']:5} {e['workload']:12} {e['share']:11} {e['mode']:14} {e['swapped_at_48']:4d} "
                f"{e['step_ms']['at_48'] / 1e3:7.3f} {fmt(None if busy is None else 100 * busy, '6.0f')} "
                f"{fmt(e['speedup_vs_eager_at_48'], '8.2f')}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "int8-quanto", "int8"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--shares", nargs="+", default=list(SHARES))
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=MODES)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--host-profile", action="store_true", help="also record each setting's top host ops (one profiled step)"
    )
    parser.add_argument("--run", default="run", help="a name for this run, stored in its rows")
    parser.add_argument("--merge", type=Path, default=None, help="an earlier result file whose rows are kept")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch._dynamo.config.cache_size_limit = 16  # stock whole-model compile with dynamic shapes recompiles more
    earlier = json.loads(args.merge.read_text()) if args.merge else {"meta": {}, "rows": []}
    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "workloads": {k: dataclasses.asdict(v) for k, v in WORKLOADS.items()},
        "block": "full-width LTX-2.3-class (32x128 video heads, 32x64 audio heads), LoRA r32 audio, checkpointing",
        "runs": {**earlier["meta"].get("runs", {}), args.run: {"command": " ".join(sys.argv), "warmup": args.warmup}},
    }
    meta["runs"][args.run]["steps"] = args.steps
    rows: list[dict] = list(earlier["rows"])

    def save() -> None:
        derive(rows)
        if args.out:
            atomic_write_json(args.out, {"meta": meta, "rows": rows, "fits": fits_to_48(rows)})

    for dtype in args.dtypes:
        for layers in args.layers:
            peft_model = build(dtype, layers)
            for name in args.workloads:
                batch = workload.make_batch("full", WORKLOADS[name], device="cuda", seed=0)
                for share in args.shares:
                    swapped = SHARES[share](layers)
                    for mode in args.modes:
                        row = run_setting(peft_model, layers, swapped, batch, mode, args)
                        row.update(dtype=dtype, layers=layers, swapped=swapped, share=share, workload=name, mode=mode)
                        row["run"] = args.run
                        rows.append(row)
                        logger.info("%s", json.dumps(row))
                        save()
            del peft_model
            gc.collect()
            torch.cuda.empty_cache()
    save()
    print_report(rows, fits_to_48(rows))


if __name__ == "__main__":
    main()
