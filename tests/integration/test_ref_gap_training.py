"""Tier 2: the reference gap measured by the ``on_checkpoint`` hook inside the stock LtxvTrainer.

A tiny model learns a synthetic task in a few dozen CPU steps. In the informative task every sample's target audio is
a function of its reference; in the shuffled control it is drawn independently of the reference. Two choices make
the task learnable by a 2-block model with an audio-only LoRA in that time:

- The target is ``s * d`` for every audio token, where ``s`` is the reference's mean token read along the first
  row of the (frozen) audio input projection, so the model can see it, and ``d`` is a fixed direction in the span of
  the audio output projection, so the model can write it.
- The kit initialises the output projections at 0.02 (predictions start near zero). The test scales the audio one up
  so that O(1) targets are reachable; every other weight is the kit's.

Prompt embeddings and video latents are the same for every sample, so the only per-sample signal is the reference.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx_audio_reference import bridge, layout, plugins
from ltx_audio_reference.testing import tiny_model
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

NUM_SAMPLES = 32
OUTPUT_SCALE = 12.0
AUDIO_IN = "model.diffusion_model.audio_patchify_proj.weight"
AUDIO_OUT = "model.diffusion_model.audio_proj_out.weight"


def _write_task(root: Path, *, informative: bool) -> tuple[Path, dict[str, Any]]:
    """The demo checkpoint (audio output scaled), a synthetic dataset and a config dict."""
    config_path = write_demo(root, steps=1, num_samples=2)
    checkpoint = root / "tiny_ltx2.safetensors"
    with safe_open(str(checkpoint), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(checkpoint))
    tensors[AUDIO_OUT] = tensors[AUDIO_OUT] * OUTPUT_SCALE
    save_file(tensors, str(checkpoint), metadata=metadata)

    read_along = tensors[AUDIO_IN][0].float()  # [128]: what the first input feature sees of a token
    direction = tensors[AUDIO_OUT][:, 0].float()
    direction = direction / direction.norm() * math.sqrt(direction.numel())  # unit variance per element

    def target(scale: float, steps: int) -> torch.Tensor:
        return (scale * direction).reshape(layout.AUDIO_LATENT_CHANNELS, 1, layout.AUDIO_MEL_BINS).expand(-1, steps, -1)

    def informative_fn(reference: torch.Tensor, steps: int) -> torch.Tensor:
        tokens = reference.permute(1, 0, 2).reshape(reference.shape[1], -1)  # [T_ref, 128], as patchified
        scale = float(tokens.mean(0) @ read_along) / (float(read_along.norm()) / math.sqrt(tokens.shape[0]))
        return target(scale, steps).clone()

    generator = torch.Generator().manual_seed(123)

    def shuffled_fn(reference: torch.Tensor, steps: int) -> torch.Tensor:  # the reference is ignored on purpose
        return target(float(torch.randn(1, generator=generator)), steps).clone()

    data = root / "task"
    fn: Callable[[torch.Tensor, int], torch.Tensor] = informative_fn if informative else shuffled_fn
    tiny_model.write_synthetic_dataset(data, num_samples=NUM_SAMPLES, reference_fn=fn)
    for folder in ("conditions", "latents"):
        for index in range(1, NUM_SAMPLES):
            shutil.copy(data / folder / "sample_000.pt", data / folder / f"sample_{index:03d}.pt")

    config = yaml.safe_load(config_path.read_text())
    config["data"]["preprocessed_data_root"] = str(data)
    config["optimization"].update(batch_size=4, learning_rate=0.01)
    return checkpoint, config


def _train(config: dict[str, Any], *, steps: int, interval: int, ref_gap_samples: int) -> dict[str, Any]:
    """Train in-process through the stock runner; return the per-step losses, ref_gap values and final weights."""
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    config = {**config, "checkpoints": {**config["checkpoints"], "interval": interval}}
    config["optimization"] = {**config["optimization"], "steps": steps}
    config["training_strategy"] = {**config["training_strategy"], "ref_gap_samples": ref_gap_samples}
    bridge.uninstall()
    bridge.install(plugins.build_plugin_manager())  # the entry points, ref_gap among them
    try:
        torch.manual_seed(0)  # peft draws lora_A before the trainer seeds; in-process runs need the same start
        trainer = LtxvTrainer(LtxTrainerConfig(**config))
        logged: list[dict[str, float]] = []
        stock_log = trainer._log_metrics

        def spy(metrics: dict[str, float]) -> None:  # records, then logs as usual
            logged.append(dict(metrics))
            stock_log(metrics)

        trainer._log_metrics = spy
        saved, _ = trainer.train(disable_progress_bars=True)
    finally:
        bridge.uninstall()
    with safe_open(str(saved), "pt") as f:
        weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        metadata = f.metadata()
    return {
        "losses": [m["train/loss"] for m in logged if "train/loss" in m],
        "gaps": [m["train/ref_gap"] for m in logged if "train/ref_gap" in m],
        "weights": weights,
        "metadata": metadata,
    }


@pytest.fixture(scope="module")
def informative_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _, config = _write_task(tmp_path_factory.mktemp("informative"), informative=True)
    return _train(config, steps=40, interval=20, ref_gap_samples=16)


@pytest.fixture(scope="module")
def shuffled_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _, config = _write_task(tmp_path_factory.mktemp("shuffled"), informative=False)
    return _train(config, steps=40, interval=20, ref_gap_samples=16)


def test_gap_grows_clearly_above_zero_when_the_target_depends_on_the_reference(
    informative_run: dict[str, Any], shuffled_run: dict[str, Any]
) -> None:
    gaps = informative_run["gaps"]
    assert len(gaps) >= 2  # steps 20 and 40 (and the final save, where the bridge does not skip it)
    assert gaps[-1] > gaps[0]
    assert gaps[-1] > 0.05
    assert gaps[-1] > 5 * abs(shuffled_run["gaps"][-1])
    # Written into the checkpoint metadata with the two losses it is the difference of.
    metadata = informative_run["metadata"]
    assert float(metadata["ref_gap"]) == pytest.approx(gaps[-1])
    wrong, right = float(metadata["ref_gap_wrong_loss"]), float(metadata["ref_gap_right_loss"])
    assert wrong - right == pytest.approx(gaps[-1], rel=1e-6)


def test_gap_stays_near_zero_when_references_are_shuffled(
    informative_run: dict[str, Any], shuffled_run: dict[str, Any]
) -> None:
    gaps = shuffled_run["gaps"]
    assert len(gaps) >= 2
    assert all(abs(g) < 0.2 * informative_run["gaps"][-1] for g in gaps), gaps
    # The shuffled model still learned: its loss went down, it just has nothing to read in the reference.
    losses = shuffled_run["losses"]
    assert sum(losses[-8:]) < sum(losses[:8])


def test_training_loss_curve_is_identical_with_the_probe_on_and_off(tmp_path: Path) -> None:
    _, config = _write_task(tmp_path / "task", informative=True)
    # Two runs, two output folders: a second run into the first one's folder is refused (it would overwrite it).
    probed = _train({**config, "output_dir": str(tmp_path / "probed")}, steps=12, interval=4, ref_gap_samples=8)
    plain = _train({**config, "output_dir": str(tmp_path / "plain")}, steps=12, interval=4, ref_gap_samples=0)

    assert len(probed["gaps"]) >= 3  # steps 4, 8 and 12 (and the final save, where the bridge does not skip it)
    assert plain["gaps"] == []
    assert "ref_gap" not in plain["metadata"]
    assert len(probed["losses"]) == len(plain["losses"]) == 12
    assert probed["losses"] == plain["losses"]  # exactly: the probe never touches the training RNG stream
    for key, tensor in plain["weights"].items():
        assert torch.equal(tensor, probed["weights"][key]), key
