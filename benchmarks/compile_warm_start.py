"""The compiled blocks' warm start: a second process loading their graphs from disk, with and without AOT autograd's
cache.

Each case compiles the transformer blocks of a tiny ``LTXModel`` (``compile_blocks``, inductor) and trains one step in
a fresh process, twice: *cold* with an empty cache folder, then *warm* with the folder the cold run filled. It prints
the time to the end of the first step and what the two on-disk caches did in the warm run: inductor's FX-graph cache
(the kernels) and AOT autograd's cache (the traced and partitioned forward and backward graphs).

Both sides run in one invocation, each backend with its own pair of cache folders:

- ``torch default``: torch's own cache settings (this script swaps ``compile_blocks``' cache settings out of the
  child). AOT autograd then bypasses its cache for a graph that holds a ``torch.autograd.Function``, which the
  ``int8`` backends' matmul is, or a call it does not know, as ltx-core 1.2's ``sdpa_kernel`` attention makes;
- ``compile_blocks``: this package's settings, which let both into the cache.

Run on the CPU (a C++ compiler) or a CUDA GPU::

    python benchmarks/compile_warm_start.py --backends bf16 int8 --layers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("compile_warm_start")

SIDES = ("torch default", "compile_blocks")


def child(backend: str, layers: int, device: str, side: str) -> dict:
    """Compile the blocks, train one step; the seconds to the step's end and the cache counters."""
    start = time.perf_counter()
    import contextlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from ltx_audio_reference.blockswap import compile as blocks_compile  # noqa: PLC0415
    from ltx_audio_reference.blockswap.compile import compile_blocks  # noqa: PLC0415

    if side == "torch default":  # the activation budget only, as before the cache settings

        def settings(budget: float | None) -> contextlib.AbstractContextManager:
            if budget is None:
                return contextlib.nullcontext()
            return torch._functorch.config.patch(activation_memory_budget=budget)

        blocks_compile._compile_settings = settings
    from ltx_audio_reference.blockswap.tensors import find_transformer  # noqa: PLC0415
    from ltx_audio_reference.testing import swap_workload as workload  # noqa: PLC0415

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = workload.build_model(layers, "tiny", seed=0, dtype=dtype).to(device)
    if backend != "bf16":
        workload.quantize_blocks(model, backend)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0).to(device)
    model.set_gradient_checkpointing(True)
    compile_blocks(find_transformer(peft_model), backend="inductor")
    shape = workload.Workload(video_tokens=24, target_audio_tokens=12, reference_audio_tokens=5, context_tokens=8)
    video, audio, video_target, audio_target = workload.make_batch("tiny", shape, device=device, dtype=dtype)
    ready = time.perf_counter()
    video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
    workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
    if device == "cuda":
        torch.cuda.synchronize()
    counters = torch._dynamo.utils.counters
    return {
        "first_step_s": round(time.perf_counter() - ready, 2),
        "process_s": round(time.perf_counter() - start, 2),
        "fxgraph": {k.removeprefix("fxgraph_cache_"): v for k, v in counters["inductor"].items() if "fxgraph" in k},
        "aot": {k.removeprefix("autograd_cache_"): v for k, v in counters["aot_autograd"].items() if "cache" in k},
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    found = {}
    for name in ("torch", "ltx-core"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def run(backend: str, layers: int, device: str, side: str, cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    command = [sys.executable, __file__, "--child", backend, "--layers", str(layers), "--device", device]
    command += ["--side", side]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} ({side}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", default="compile_blocks", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.stdout.write("RESULT " + json.dumps(child(args.child, args.layers, args.device, args.side)) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ltx_audio_reference.blockswap.compile import compile_problem  # noqa: PLC0415

    problem = compile_problem(args.device)
    if problem is not None:
        parser.exit(2, f"compile_warm_start.py cannot compile here: {problem}\n")
    rows = []
    for backend in args.backends:
        for side in SIDES:
            with tempfile.TemporaryDirectory(prefix="warm_start_") as folder:
                cold = run(backend, args.layers, args.device, side, Path(folder))
                warm = run(backend, args.layers, args.device, side, Path(folder))
            rows.append({"backend": backend, "side": side, "cold": cold, "warm": warm})
            logger.info(
                "%-12s %-15s cold %6.1f s   warm %6.1f s   warm caches: fx-graph %s, AOT autograd %s",
                backend,
                side,
                cold["first_step_s"],
                warm["first_step_s"],
                warm["fxgraph"],
                warm["aot"],
            )
    if args.out:
        meta = {"device": args.device, "layers": args.layers, "cpus": os.cpu_count(), **_versions()}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
