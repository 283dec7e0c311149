"""Kill and resume on a CUDA GPU with block swap on, through the stock runner (reliability, point 3 on GPU).

A 4-block demo model trains 8 steps with 3 blocks swapped, bf16 mixed precision, full training state and float32
checkpoints, at two widths: the demo's tiny one, and LTX-2.3-class blocks with data of the seed workload's size (so
the GPU picks the kernels it would pick for the 22B). The run is SIGKILLed at a random step, then again inside a
checkpoint write, and resumed after each; every resumed segment's per-sample losses must match an uninterrupted
run's within bf16 tolerance, and so must the final LoRA. Two uninterrupted runs are compared too, to show how far
apart the GPU puts two identical runs.

Skips without CUDA or without ltx-trainer. The figures go to pytest's ``record_property`` (``--junitxml`` keeps them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kill_resume import (
    Chain,
    assert_on_disk_only_complete_files,
    demo_config,
    finish,
    losses,
    relative_norm_differences,
    spawn,
    step_of,
)
from safetensors.torch import load_file

from ltx_audio_reference.reliability import checkpoints
from ltx_audio_reference.testing.demo import write_demo

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

STEPS = 8
BLOCKS = 4
SWAPPED = 3
# torch.testing's default tolerance for bfloat16.
RTOL, ATOL = 1.6e-2, 1e-5
EDITS = {
    "optimization.steps": STEPS,
    "optimization.enable_gradient_checkpointing": True,
    "checkpoints.interval": 2,
    "checkpoints.keep_last_n": 1,
    "checkpoints.save_training_state": "full",
    "checkpoints.precision": "float32",
    "acceleration.block_swap_blocks": SWAPPED,
}


def _as_tensor(segment: dict[int, list[str]], steps: list[int]) -> torch.Tensor:
    return torch.tensor([[float.fromhex(v) for v in segment[step]] for step in steps], dtype=torch.float64)


def _max_rel_norm(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    return max(relative_norm_differences(actual, expected).values())


def _max_rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((actual - expected).abs() / expected.abs().clamp_min(ATOL)).max())


@pytest.fixture(scope="module", params=["tiny", "full"])
def demo_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo folder with 4 blocks (so that 3 can swap) and 6 samples (3 batches per epoch), at each width."""
    root = tmp_path_factory.mktemp(f"gpu_kill_{request.param}") / "demo"
    write_demo(root, steps=STEPS, num_samples=6, num_layers=BLOCKS, width=request.param)
    return root


@pytest.fixture(scope="module")
def reference(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two uninterrupted runs with the same seed, one after the other (one GPU)."""
    folder = tmp_path_factory.mktemp("gpu_reference")
    result: dict[str, Any] = {"losses": [], "weights": [], "logs": []}
    for name in ("a", "b"):
        proc, log = spawn(
            demo_config(demo_root, folder / name, EDITS), folder, name, "--loss-log", str(folder / f"{name}.losses")
        )
        result["logs"].append(finish(proc, log))
        result["losses"].append(losses(folder / f"{name}.losses"))
        result["weights"].append(
            load_file(str(folder / name / "checkpoints" / f"lora_weights_step_{STEPS:05d}.safetensors"))
        )
    return result


def test_block_swap_is_on_in_the_gpu_runs(reference: dict[str, Any]) -> None:
    for text in reference["logs"]:
        assert f"Block swap: {SWAPPED} of {BLOCKS} blocks swapped" in text, text[-3000:]
        assert "GB allocated after placement" in text  # logged only when the device is CUDA


def test_two_uninterrupted_gpu_runs_agree_within_bf16_tolerance(
    reference: dict[str, Any], record_property: pytest.RecordProperty
) -> None:
    first, second = reference["losses"]
    assert sorted(first) == sorted(second) == list(range(1, STEPS + 1))
    steps = sorted(first)
    a, b = _as_tensor(first, steps), _as_tensor(second, steps)
    record_property("rerun_max_rel_loss_diff", _max_rel(b, a))
    record_property("rerun_losses_bitwise_equal", first == second)
    record_property("rerun_final_lora_max_rel_norm_diff", _max_rel_norm(*reference["weights"]))
    torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL)


def test_killed_twice_with_block_swap_the_resumed_gpu_run_matches_the_uninterrupted_one(
    demo_root: Path, tmp_path: Path, reference: dict[str, Any], record_property: pytest.RecordProperty
) -> None:
    out = tmp_path / "run"
    folder = out / "checkpoints"
    config = demo_config(demo_root, out, EDITS)
    resume = demo_config(demo_root, out, {**EDITS, "model.load_checkpoint": str(folder)})
    chain = Chain(tmp_path)

    # Kill 1: at a random step, wherever the signal lands (between steps, in backward, inside a save).
    kill_step, resumed_at = chain.kill_at_random_step(config, folder, 3, 5)
    assert resumed_at >= 2

    # Kill 2: inside the weights write of the next save; the previous pair stays the newest complete one.
    text = chain.kill_inside_weights_write("second", resume, resumed_at + 2)
    assert f"Resuming training from step {resumed_at}" in text
    assert step_of(checkpoints.select_checkpoint(folder).weights) == resumed_at
    assert_on_disk_only_complete_files(folder)

    # Resume to the end.
    text = chain.run("last", resume)
    assert f"Resuming training from step {resumed_at}" in text
    assert "GB allocated after placement" in text

    expected = reference["losses"][0]
    record_property("kill_step", kill_step)
    record_property("resumed_at", resumed_at)
    bitwise = all(values == expected[step] for segment in chain.segments for step, values in segment.items())
    record_property("resumed_losses_bitwise_equal", bitwise)
    compared = []
    for index, (segment, first) in enumerate(zip(chain.segments, [1, resumed_at + 1, resumed_at + 1], strict=True)):
        assert min(segment) == first, (index, sorted(segment))
        steps = sorted(segment)
        compared.append((index, _as_tensor(segment, steps), _as_tensor(expected, steps)))
    record_property("resumed_max_rel_loss_diff", max(_max_rel(actual, wanted) for _, actual, wanted in compared))
    assert max(chain.segments[-1]) == STEPS

    # The final LoRA: as close to the uninterrupted run's as bf16 rounding, or as a second uninterrupted run is (GPU
    # atomics reorder sums, and Adam turns tiny gradient differences into step-sized ones on the near-zero entries).
    final = load_file(str(folder / f"lora_weights_step_{STEPS:05d}.safetensors"))
    error = _max_rel_norm(final, reference["weights"][0])
    noise = _max_rel_norm(*reference["weights"])
    record_property("final_lora_max_rel_norm_diff", error)

    for index, actual, wanted in compared:
        torch.testing.assert_close(actual, wanted, rtol=RTOL, atol=ATOL, msg=lambda m, i=index: f"segment {i}: {m}")
    assert error <= max(RTOL, 2 * noise), f"resumed LoRA differs by {error:.3g}; two uninterrupted runs by {noise:.3g}"
