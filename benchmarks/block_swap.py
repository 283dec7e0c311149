"""Block-swap benchmark on one CUDA GPU: resident vs swapped, bf16 and int8-quanto, extrapolated to 48 blocks.

Builds full-width LTX-2.3-class blocks with random weights (no download): 32 x 128 video heads, 32 x 64 audio heads,
gated attention, cross-attention AdaLN, about 387 M parameters per block, with LoRA r32 on the audio stack and
gradient checkpointing, on the seed workload (1024 video tokens, 121 target + 50 reference audio tokens, 256 context
tokens). For each dtype and each L in --layers it trains a few AdamW steps with N = 0, 25 %, 50 %, 75 % and L - 1
blocks swapped, all in this one process, and records:

- step time (median of --steps after --warmup), per-block compute (slope of the resident step time over L);
- peak VRAM at startup (after placing the model, before the first step) and at steady state (torch's allocator);
- achieved host-to-device bandwidth of the swap copies during training, and of a bare pinned/pageable copy.

Then it fits ``y = a + b * L`` per (dtype, family), shows the fit, and extrapolates to 48 blocks.

Run (GPU)::

    python benchmarks/block_swap.py --out results.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ltx_audio_reference.blockswap.config import slot_count, spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.blockswap.tensors import block_frozen_bytes
from ltx_audio_reference.testing import swap_workload as workload

logger = logging.getLogger("block_swap_benchmark")

GB = 1e9
TARGET_LAYERS = 48


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class Family:
    """A swap setting as a function of L."""

    name: str
    blocks: Callable[[int], int]
    fraction: float | None  # the swapped share, for the 48-block extrapolation (None: all but one)
    prefetch: int = 1


FAMILIES = (
    Family("resident", lambda _: 0, 0.0),
    Family("25%", lambda n: _half_up(n / 4), 0.25),
    Family("50%", lambda n: _half_up(n / 2), 0.5),
    Family("75%", lambda n: _half_up(3 * n / 4), 0.75),
    Family("all-but-one", lambda n: n - 1, None),
    Family("all-but-one p2", lambda n: n - 1, None, prefetch=2),
)


@dataclass
class Row:
    dtype: str
    family: str
    layers: int
    swapped: int
    prefetch: int
    slots: int
    step_ms: float
    step_ms_p25: float
    step_ms_p75: float
    graph_ms: float
    startup_peak_gb: float
    steady_peak_gb: float
    block_gb: float
    setup_s: float
    loads_per_step: float
    misses_per_step: float
    h2d_gbps: float


def _sync() -> None:
    torch.cuda.synchronize()


#: This benchmark's dtype names (its committed results say ``int8`` for optimum-quanto) -> ``build`` names.
QUANTO_NAMES = {"int8": "int8-quanto"}


def _torchao_int8(model: torch.nn.Module) -> None:
    """torchao's int8 weight-only tensors (``Int8WeightOnlyConfig``) on the Linear layers our backends quantize."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: PLC0415

    from ltx_audio_reference.quantization import quantizable_linears  # noqa: PLC0415

    for block in model.transformer_blocks:
        names = {name for name, _ in quantizable_linears(block)}
        quantize_(block, Int8WeightOnlyConfig(version=2), filter_fn=lambda _, fqn, names=names: fqn in names)


def build(dtype: str, layers: int) -> torch.nn.Module:
    """The model as the stock trainer holds it before ``accelerator.prepare``: quantized, frozen, LoRA, on CPU.

    ``dtype``: ``bf16``, a quantization backend (``int8-quanto``, ``int8``, ``int8-dynamic``) or ``torchao-int8``.
    """
    model = workload.build_model(layers, "full", seed=0, dtype=torch.bfloat16, device="cuda")
    if dtype == "torchao-int8":
        _torchao_int8(model)
    elif dtype != "bf16":
        workload.quantize_blocks(model, dtype)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=32, seed=0)
    model.set_gradient_checkpointing(True)
    peft_model.to("cpu")
    _sync()
    torch.cuda.empty_cache()
    return peft_model


def measure(
    peft_model: torch.nn.Module,
    dtype: str,
    family: Family,
    layers: int,
    batch: tuple,
    warmup: int,
    steps: int,
) -> Row:
    """Place the model for one setting, train ``warmup + steps`` eager steps, record peaks, and tear down."""
    swapped = family.blocks(layers)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    engine = None
    if swapped:
        engine = BlockSwapEngine(
            peft_model, spread_blocks(layers, swapped), device="cuda", prefetch=family.prefetch, profile=True
        )
        engine.place(peft_model)
    else:
        peft_model.to("cuda")
    _sync()
    setup_s = time.perf_counter() - start
    startup_peak = torch.cuda.max_memory_allocated()

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    video, audio, video_target, audio_target = batch

    def step() -> None:
        video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync()
    torch.cuda.reset_peak_memory_stats()
    if engine is not None:
        engine.reset_stats()
    times = _time_steps(step, steps)
    steady_peak = torch.cuda.max_memory_allocated()
    stats = engine.collect_profile() if engine is not None else None
    block_bytes = block_frozen_bytes(peft_model.get_base_model().transformer_blocks[0])

    if engine is not None:
        engine.close(device="cpu")
    peft_model.to("cpu")
    optimizer.state.clear()
    _sync()
    return Row(
        dtype=dtype,
        family=family.name,
        layers=layers,
        swapped=swapped,
        prefetch=family.prefetch,
        slots=slot_count(swapped, family.prefetch),
        step_ms=statistics.median(times) * 1e3,
        step_ms_p25=_quantile(times, 0.25) * 1e3,
        step_ms_p75=_quantile(times, 0.75) * 1e3,
        graph_ms=float("nan"),  # filled by the graph pass
        startup_peak_gb=startup_peak / GB,
        steady_peak_gb=steady_peak / GB,
        block_gb=block_bytes / GB,
        setup_s=setup_s,
        loads_per_step=stats.loads / steps if stats else 0.0,
        misses_per_step=stats.misses / steps if stats else 0.0,
        h2d_gbps=stats.gb_per_s if stats else 0.0,
    )


def measure_graph(peft_model: torch.nn.Module, family: Family, layers: int, batch: tuple, replays: int) -> float:
    """Place the model for one setting and time CUDA-graph replays of the blocks' forward + backward."""
    swapped = family.blocks(layers)
    gc.collect()
    torch.cuda.empty_cache()
    engine = None
    if swapped:
        engine = BlockSwapEngine(peft_model, spread_blocks(layers, swapped), device="cuda", prefetch=family.prefetch)
        engine.place(peft_model)
    else:
        peft_model.to("cuda")
    params = [p for p in peft_model.parameters() if p.requires_grad]
    try:
        return graph_step_ms(peft_model, engine, batch, params, replays)
    except Exception:
        logger.exception("CUDA-graph timing failed for %s L=%d", family.name, layers)
        return float("nan")
    finally:
        if engine is not None:
            engine.close(device="cpu")
        peft_model.to("cpu")
        _sync()


def _time_steps(step: Callable[[], None], steps: int) -> list[float]:
    """Wall seconds of each step, synchronized, with the garbage collector paused as ``timeit`` does."""
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            _sync()
            times.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return times


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextlib.contextmanager
def _checkpoint_without_rng_state() -> Iterator[None]:
    """ltx-core checkpoints blocks with ``preserve_rng_state=True``, which reads the RNG state, not allowed while a
    CUDA graph captures. The workload draws no random numbers inside the blocks, so dropping it changes nothing."""
    import torch.utils.checkpoint as checkpoint_module  # noqa: PLC0415

    original = checkpoint_module.checkpoint

    def patched(*args: object, **kwargs: object) -> object:
        kwargs["preserve_rng_state"] = False
        return original(*args, **kwargs)

    checkpoint_module.checkpoint = patched
    try:
        yield
    finally:
        checkpoint_module.checkpoint = original


def graph_step_ms(
    peft_model: torch.nn.Module,
    engine: BlockSwapEngine | None,
    batch: tuple,
    params: list[torch.Tensor],
    replays: int,
) -> float:
    """The transformer blocks' forward + backward (swap copies included) captured in one CUDA graph and replayed.

    Eager training on this host is bound by the CPU issuing kernels; the replay shows what the same blocks cost
    when the GPU is the bottleneck, i.e. whether the copies hide behind compute. The input preprocessing (patchify,
    AdaLN, RoPE) runs once, eagerly, before the capture: ltx-core builds RoPE indices on the CPU, which a capture
    cannot copy. The blocks, output projection, loss and backward are captured.
    """
    video, audio, video_target, audio_target = batch
    transformer = peft_model.get_base_model()
    video_args = transformer.video_args_preprocessor.prepare(video, audio)
    audio_args = transformer.audio_args_preprocessor.prepare(audio, video)

    def forward_backward() -> None:
        if engine is not None:
            engine.mark_forward()
        video_out, audio_out = transformer._process_transformer_blocks(video_args, audio_args, None)
        video_pred = transformer._process_output(
            transformer.scale_shift_table,
            transformer.norm_out,
            transformer.proj_out,
            video_out.x,
            video_out.embedded_timestep,
        )
        audio_pred = transformer._process_output(
            transformer.audio_scale_shift_table,
            transformer.audio_norm_out,
            transformer.audio_proj_out,
            audio_out.x,
            audio_out.embedded_timestep,
        )
        if engine is not None:
            engine.watch_backward((video_pred, audio_pred))
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()

    if engine is not None:
        engine.profile = False
    with _checkpoint_without_rng_state():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                for p in params:
                    p.grad = None
                forward_backward()
            if engine is not None:
                engine.join()
        torch.cuda.current_stream().wait_stream(side)
        _sync()
        if engine is not None:
            engine.synchronize()  # no wait on an event recorded before the capture
        for p in params:
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward_backward()
            if engine is not None:
                engine.join()
    _sync()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    for p in params:
        p.grad = None
    if engine is not None:
        engine.synchronize()
    _sync()
    torch.cuda.empty_cache()
    return statistics.median(times)


def bare_copy_bandwidth(nbytes: int, repeats: int = 5) -> dict[str, float]:
    """GB/s of one host-to-device copy of ``nbytes``, from cudaHostRegister'ed and from pageable memory."""
    device_buffer = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    result = {}
    for kind in ("pinned", "pageable"):
        host = torch.empty(nbytes, dtype=torch.uint8)
        host.fill_(1)
        if kind == "pinned":
            torch.cuda.cudart().cudaHostRegister(host.data_ptr(), nbytes, 0)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            device_buffer.copy_(host, non_blocking=kind == "pinned")
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        if kind == "pinned":
            torch.cuda.cudart().cudaHostUnregister(host.data_ptr())
        result[kind] = nbytes / statistics.median(times) / 1e6
    del device_buffer
    torch.cuda.empty_cache()
    return result


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``; returns ``(a, b, max |residual|)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    a = my - b * mx
    return a, b, max(abs(y - (a + b * x)) for x, y in zip(xs, ys, strict=True))


def fit_family(rows: list[Row], family: Family, metric: str) -> list[Row]:
    """The rows a family's fit of ``metric`` uses: measured ones, exact fractions where 3 L values have them."""
    rows = [r for r in rows if math.isfinite(getattr(r, metric))]
    if family.fraction:
        exact = [r for r in rows if abs(r.swapped - family.fraction * r.layers) < 1e-9]
        if len(exact) >= 3:
            return exact
    return rows


def extrapolate(rows: list[Row]) -> list[dict]:
    """Per (dtype, family): fits of eager step, graph step and peaks over L, and their values at 48 blocks."""
    out = []
    for dtype in sorted({r.dtype for r in rows}):
        resident: dict[str, float] = {}
        for family in FAMILIES:
            rows_f = [r for r in rows if r.dtype == dtype and r.family == family.name]
            metrics = {"eager_ms": "step_ms", "graph_ms": "graph_ms", "steady_gb": "steady_peak_gb"}
            metrics["startup_gb"] = "startup_peak_gb"
            chosen = {name: fit_family(rows_f, family, field) for name, field in metrics.items()}
            if len(chosen["eager_ms"]) < 2:
                continue
            fits = {}
            for name, field in metrics.items():
                xs = [float(r.layers) for r in chosen[name]]
                ys = [getattr(r, field) for r in chosen[name]]
                fits[name] = linear_fit(xs, ys) if len(xs) >= 2 else (math.nan, math.nan, math.nan)
            entry: dict = {
                "dtype": dtype,
                "family": family.name,
                "fit_layers": [r.layers for r in chosen["eager_ms"]],
                "graph_fit_layers": [r.layers for r in chosen["graph_ms"]],
                "swapped_at_48": TARGET_LAYERS - 1
                if family.fraction is None
                else _half_up(family.fraction * TARGET_LAYERS),
            }
            for name, (a, b, residual) in fits.items():
                entry[name] = {"a": a, "per_block": b, "max_residual": residual, "at_48": a + b * TARGET_LAYERS}
            if family.name == "resident":
                resident = {name: entry[name]["at_48"] for name in ("eager_ms", "graph_ms")}
            for name in ("eager_ms", "graph_ms"):
                base = resident.get(name)
                entry[name]["vs_resident_at_48"] = entry[name]["at_48"] / base if base else float("nan")
            out.append(entry)
    int8 = next((e for e in out if e["dtype"] == "int8" and e["family"] == "resident"), None)
    for e in out:
        for name in ("eager_ms", "graph_ms"):
            base = int8[name]["at_48"] if int8 else float("nan")
            e[name]["vs_int8_resident_at_48"] = e[name]["at_48"] / base
    return out


TARGETS = (("int8", "50%", 12.0, 1.10), ("bf16", "all-but-one", 6.0, 1.10), ("bf16", "all-but-one p2", 6.0, 1.10))


def print_report(rows: list[Row], fits: list[dict], bandwidth: dict[str, float], out: Path | None) -> None:
    """Plain tables on stdout (the benchmark's own report)."""
    lines: list[str] = []
    p = lines.append
    p(
        f"\nBare host-to-device copy of one bf16 block: pinned {bandwidth['pinned']:.1f} GB/s, "
        f"pageable {bandwidth['pageable']:.1f} GB/s"
    )
    p(
        "\nMeasured. eager: median [p25-p75] of the timed training steps (fwd+bwd+AdamW, CPU-issue bound on this "
        "host); graph: fwd+bwd replayed from one CUDA graph (GPU-bound); peaks: torch.cuda.max_memory_allocated."
    )
    header = (
        f"{'dtype':5} {'family':15} {'L':>2} {'N':>2} {'pf':>2} {'eager ms':>8} {'p25-p75':>11} {'x res':>6} "
        f"{'graph ms':>8} {'x res':>6} {'startup GB':>10} {'steady GB':>9} {'loads/st':>8} {'miss/st':>7} "
        f"{'H2D GB/s':>8}"
    )
    p(header)
    p("-" * len(header))
    base = {(r.dtype, r.layers): r for r in rows if r.swapped == 0}
    for r in rows:
        ref = base.get((r.dtype, r.layers))
        eager_ratio = r.step_ms / ref.step_ms if ref else float("nan")
        graph_ratio = r.graph_ms / ref.graph_ms if ref else float("nan")
        spread = f"{r.step_ms_p25:.0f}-{r.step_ms_p75:.0f}"
        p(
            f"{r.dtype:5} {r.family:15} {r.layers:2d} {r.swapped:2d} {r.prefetch:2d} {r.step_ms:8.1f} {spread:>11} "
            f"{eager_ratio:6.3f} {r.graph_ms:8.1f} {graph_ratio:6.3f} {r.startup_peak_gb:10.2f} "
            f"{r.steady_peak_gb:9.2f} {r.loads_per_step:8.1f} {r.misses_per_step:7.1f} {r.h2d_gbps:8.1f}"
        )
    p("\nFits y = a + b*L over the measured L (b = per block; res = largest |residual|), extrapolated to 48 blocks:")
    header = (
        f"{'dtype':5} {'family':15} {'fit L':10} {'N@48':>4} | {'eager b':>7} {'a':>6} {'res':>5} {'@48 s':>6} "
        f"{'x res':>5} | {'graph b':>7} {'a':>6} {'res':>5} {'@48 s':>6} {'x res':>5} {'x int8':>6} | "
        f"{'GB b':>5} {'a':>5} {'res':>4} {'steady@48':>9} {'startup@48':>10}"
    )
    p(header)
    p("-" * len(header))
    for e in fits:
        eager, graph, steady = e["eager_ms"], e["graph_ms"], e["steady_gb"]
        p(
            f"{e['dtype']:5} {e['family']:15} {','.join(map(str, e['fit_layers'])):10} {e['swapped_at_48']:4d} | "
            f"{eager['per_block']:7.1f} {eager['a']:6.0f} {eager['max_residual']:5.0f} {eager['at_48'] / 1e3:6.2f} "
            f"{eager['vs_resident_at_48']:5.2f} | {graph['per_block']:7.2f} {graph['a']:6.1f} "
            f"{graph['max_residual']:5.1f} {graph['at_48'] / 1e3:6.3f} {graph['vs_resident_at_48']:5.2f} "
            f"{graph['vs_int8_resident_at_48']:6.2f} | {steady['per_block']:5.3f} {steady['a']:5.2f} "
            f"{steady['max_residual']:4.2f} {steady['at_48']:9.2f} {e['startup_gb']['at_48']:10.2f}"
        )
    p("\nTargets at 48 blocks (peak <= GB, step <= x resident), eager (this host) and graph (GPU-bound):")
    for dtype, family, peak, ratio in TARGETS:
        e = next((x for x in fits if x["dtype"] == dtype and x["family"] == family), None)
        if e is None:
            continue
        ok_peak = max(e["steady_gb"]["at_48"], e["startup_gb"]["at_48"]) <= peak
        verdicts = []
        for name in ("eager_ms", "graph_ms"):
            r = e[name]["vs_resident_at_48"]
            verdicts.append(
                f"{name.split('_')[0]} {r:.3f}x resident {'OK' if r <= ratio else 'MISS'} "
                f"({e[name]['vs_int8_resident_at_48']:.2f}x int8 resident)"
            )
        p(
            f"  {dtype} {family} ({e['swapped_at_48']}/48): peak {e['steady_gb']['at_48']:.2f} GB "
            f"{'OK' if ok_peak else 'MISS'} (<= {peak}); " + "; ".join(verdicts)
        )
    if out:
        p(f"\nFull results: {out}")
    sys.stdout.write("\n".join(lines) + "\n")


def eager_pass(args: argparse.Namespace, families: list[Family], batch: tuple) -> list[Row]:
    """Pass 1, eager training: step times and peaks. Settings that coincide at an L are measured once."""
    rows: list[Row] = []
    for dtype in args.dtypes:
        for layers in args.layers:
            t0 = time.perf_counter()
            peft_model = build(QUANTO_NAMES.get(dtype, dtype), layers)
            measured: dict[tuple[int, int], Row] = {}
            for family in families:
                key = (family.blocks(layers), slot_count(family.blocks(layers), family.prefetch))
                if key not in measured:
                    measured[key] = measure(peft_model, dtype, family, layers, batch, args.warmup, args.steps)
                    logger.warning("%s", measured[key])
                rows.append(replace(measured[key], family=family.name, prefetch=family.prefetch))
            del peft_model
            gc.collect()
            torch.cuda.empty_cache()
            logger.warning("eager %s L=%d done in %.1f s", dtype, layers, time.perf_counter() - t0)
            if args.out:
                args.out.write_text(json.dumps({"rows": [asdict(r) for r in rows]}, indent=1))
    return rows


def graph_pass(args: argparse.Namespace, families: list[Family], batch: tuple, rows: list[Row]) -> list[Row]:
    """Pass 2, CUDA-graph replays; runs after pass 1 because capture pools would inflate the peaks measured there."""
    rows = list(rows)
    for dtype in args.dtypes:
        for layers in args.layers:
            t0 = time.perf_counter()
            peft_model = build(QUANTO_NAMES.get(dtype, dtype), layers)
            timed: dict[tuple[int, int], float] = {}
            for family in families:
                key = (family.blocks(layers), slot_count(family.blocks(layers), family.prefetch))
                if key not in timed:
                    timed[key] = measure_graph(peft_model, family, layers, batch, args.replays)
                for i, row in enumerate(rows):
                    if (row.dtype, row.layers, row.family) == (dtype, layers, family.name):
                        rows[i] = replace(row, graph_ms=timed[key])
            del peft_model
            gc.collect()
            torch.cuda.empty_cache()
            logger.warning("graph %s L=%d done in %.1f s", dtype, layers, time.perf_counter() - t0)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 5, 6, 7, 8])
    parser.add_argument("--dtypes", nargs="+", default=["int8", "bf16"], choices=["int8", "bf16"])
    parser.add_argument(
        "--families",
        nargs="+",
        default=[f.name for f in FAMILIES if f.prefetch == 1],
        choices=[f.name for f in FAMILIES],
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--replays", type=int, default=10, help="CUDA-graph replays per setting (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="write rows and fits as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        logger.error("This benchmark needs a CUDA GPU")
        return 2

    families = [f for f in FAMILIES if f.name in args.families]
    batch = workload.make_batch("full", device="cuda", seed=1)
    bandwidth = bare_copy_bandwidth(int(0.78 * GB))
    rows = eager_pass(args, families, batch)
    if args.replays:
        rows = graph_pass(args, families, batch, rows)

    fits = extrapolate(rows)
    if args.out:
        meta = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": " ".join(["python", *sys.argv]),
            "bare_copy_gbps": bandwidth,
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows], "fits": fits}, indent=1))
    print_report(rows, fits, bandwidth, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
