"""Block swap through the stock ltx-trainer runner on a GPU: resident vs swapped, bf16 and int8-quanto, one process.

For each checkpoint (the demo's tiny one, and a generated full-width LTX-2.3-class one) and each precision it trains
the same seeded run twice through the stock ``LtxvTrainer`` (bridge installed), once resident and once with
``acceleration.block_swap_blocks``, and reports startup and steady peak VRAM, step time, and whether the exported
LoRAs match: same keys, value difference, and whether ltx-core's LoRA fusion applies every key to the same modules.

    python benchmarks/stock_runner_block_swap.py --out results.json

Needs CUDA, ltx-core 1.2.0 and ltx-trainer 1.2.0.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from ltx_audio_reference import bridge
from ltx_audio_reference.testing.demo import write_demo

logger = logging.getLogger("stock_runner_block_swap")


def _write_full_width(root: Path, blocks: int) -> Path:
    """A demo folder whose checkpoint has full-width blocks and whose data is the seed workload's size."""
    return write_demo(root, steps=1, num_samples=2, num_layers=blocks, width="full")


def _config(base: Path, steps: int, quantization: str | None, swap: int, out: Path) -> dict[str, Any]:
    config = yaml.safe_load(base.read_text())
    config["optimization"].update(steps=steps, batch_size=1, enable_gradient_checkpointing=True)
    config["acceleration"] = {"mixed_precision_mode": "bf16", "quantization": quantization}
    if swap:
        config["acceleration"]["block_swap_blocks"] = swap
    config["checkpoints"] = {"interval": steps, "keep_last_n": -1, "precision": "float32"}
    config["output_dir"] = str(out)
    config["overwrite_output_dir"] = True  # a rerun into the same --root replaces that run's checkpoints
    return config


def _run(config: dict[str, Any]) -> dict[str, Any]:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    start = time.perf_counter()
    trainer = LtxvTrainer(LtxTrainerConfig(**config))
    torch.cuda.synchronize()
    startup_peak = torch.cuda.max_memory_allocated()
    init_s = time.perf_counter() - start
    torch.cuda.reset_peak_memory_stats()
    saved, stats = trainer.train(disable_progress_bars=True)
    torch.cuda.synchronize()
    steady_peak = torch.cuda.max_memory_allocated()
    del trainer
    return {
        "startup_peak_gb": startup_peak / 1e9,
        "steady_peak_gb": steady_peak / 1e9,
        "init_s": init_s,
        "steps_per_s": stats.steps_per_second,
        "export": str(saved),
    }


@functools.cache
def _block_weights(model_path: Path, lora: Path | None) -> dict[str, torch.Tensor]:
    """Transformer-block weights as ltx-core builds them, with ``lora`` fused at strength 1 (ComfyUI key map)."""
    from ltx_audio_reference.evaluation.sweep import load_transformer  # noqa: PLC0415

    model = load_transformer(model_path, lora, torch.device("cuda"))
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if "transformer_blocks" in n}
    del model
    torch.cuda.empty_cache()
    return weights


def _fused_modules(model_path: Path, lora: Path) -> set[str]:
    """Module names whose weights ltx-core's LoRA fusion changes."""
    base, fused = _block_weights(model_path, None), _block_weights(model_path, lora)
    return {name.removesuffix(".weight") for name in base if not torch.equal(base[name], fused[name])}


def _compare(resident: dict[str, Any], swapped: dict[str, Any], model_path: Path) -> dict[str, Any]:
    a, b = load_file(resident["export"]), load_file(swapped["export"])
    lora_modules = {k.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0] for k in a}
    return {
        "same_keys": a.keys() == b.keys(),
        "num_keys": len(a),
        "bitwise_equal": all(torch.equal(a[k], b[k]) for k in a),
        "max_abs_diff": max(float((a[k] - b[k]).abs().max()) for k in a),
        # The swapped export fuses into exactly the modules the resident export names.
        "fusion_applies_every_key": _fused_modules(model_path, Path(swapped["export"])) == lora_modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/stock_runner_block_swap"))
    parser.add_argument("--blocks", type=int, default=4, help="full-width blocks in the generated checkpoint")
    parser.add_argument("--swap", type=int, default=2, help="blocks swapped in the full-width runs")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-demo", action="store_true", help="only the full-width checkpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    # Deterministic attention kernels, so resident and swapped runs can be compared value for value.
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_cudnn_sdp(False)
    bridge.install()

    cases = (
        {} if args.skip_demo else {"demo (2 tiny blocks)": (write_demo(args.root / "demo", steps=1, num_samples=2), 1)}
    )
    cases[f"full width ({args.blocks} blocks)"] = (_write_full_width(args.root / "full", args.blocks), args.swap)
    results: dict[str, Any] = {}
    for case, (base, swap) in cases.items():
        model_path = base.parent / "tiny_ltx2.safetensors"
        for precision, quantization in (("bf16", None), ("int8-quanto", "int8-quanto")):
            runs = {}
            for n in (0, swap):
                out = args.root / "runs" / f"{case.split()[0]}_{precision}_{n}"
                runs[n] = _run(_config(base, args.steps, quantization, n, out))
            comparison = _compare(runs[0], runs[swap], model_path)
            results[f"{case} {precision}"] = {"swap": swap, "resident": runs[0], "swapped": runs[swap], **comparison}
            r, s = runs[0], runs[swap]
            logger.info(
                "%-28s %-11s swap %d/%s | peak GB resident %.2f/%.2f (startup/steady) swapped %.2f/%.2f | "
                "steps/s %.2f vs %.2f | keys %s (%d) bitwise %s max|diff| %.2e | fusion ok %s",
                case,
                precision,
                swap,
                args.blocks if "full" in case else 2,
                r["startup_peak_gb"],
                r["steady_peak_gb"],
                s["startup_peak_gb"],
                s["steady_peak_gb"],
                r["steps_per_s"],
                s["steps_per_s"],
                comparison["same_keys"],
                comparison["num_keys"],
                comparison["bitwise_equal"],
                comparison["max_abs_diff"],
                comparison["fusion_applies_every_key"],
            )
    results["device"] = torch.cuda.get_device_name()
    results["torch"] = torch.__version__
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
