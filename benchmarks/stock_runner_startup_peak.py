"""Startup VRAM of the stock runner with block swap, stage by stage, in a fresh process (GPU).

Prints the peak and current allocation after each ``LtxvTrainer.__init__`` stage and the engine's placement, for the
full-width checkpoint that ``stock_runner_block_swap.py`` writes (bf16, then int8-quanto; 3 of 4 blocks swapped).
Run it in its own process: a previous trainer in the same process leaves tensors allocated.

    python benchmarks/stock_runner_startup_peak.py
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference import bridge
from ltx_audio_reference.blockswap import engine as swap_engine

logger = logging.getLogger("stock_runner_startup_peak")
STAGES = ("_load_models", "_setup_accelerator", "_collect_trainable_params", "_load_checkpoint")


def _measured(owner: type, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = original(self, *args, **kwargs)
        torch.cuda.synchronize()
        logger.info(
            "%s.%s: peak %.2f GB, now %.2f GB",
            owner.__name__,
            name,
            torch.cuda.max_memory_allocated() / 1e9,
            torch.cuda.memory_allocated() / 1e9,
        )
        return result

    setattr(owner, name, wrapper)


def main() -> None:
    import stock_runner_block_swap as runner  # noqa: PLC0415 - the sibling benchmark script

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/stock_runner_block_swap"))
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--swap", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    base = args.root / "full" / "config.yaml"
    if not base.exists():
        runner._write_full_width(base.parent, args.blocks)
    bridge.install()
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    for stage in (*STAGES, "_prepare_models_for_training"):
        _measured(trainer_module.LtxvTrainer, stage)
    _measured(swap_engine.BlockSwapEngine, "place")
    for quantization in (None, "int8-quanto"):
        logger.info("quantization: %s, %d of %d blocks swapped", quantization, args.swap, args.blocks)
        config = runner._config(base, 2, quantization, args.swap, args.root / f"startup_{quantization}")
        trainer = trainer_module.LtxvTrainer(LtxTrainerConfig(**config))
        del trainer
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
