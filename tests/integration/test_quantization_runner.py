"""Tier 2: quantization through the stock runner: every backend is a config value, ``int8-quanto`` quantizes exactly
as ltx-trainer's own function, and ``int8`` / ``int8-dynamic`` train and export the preset's keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import run_cli
from safetensors import safe_open

from ltx_audio_reference import quantization
from ltx_audio_reference.strategies.audio_reference.lora_targets import preset_block_modules
from ltx_audio_reference.testing import swap_workload as workload
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return write_demo(tmp_path / "demo", steps=2, num_samples=2).parent


def _config(demo: Path, name: str, **acceleration: object) -> Path:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["acceleration"].update(acceleration)
    config["checkpoints"]["interval"] = 2
    path = demo / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("backend", ["int8", "int8-dynamic"])
def test_int8_backends_train_through_the_stock_runner_and_export_the_preset(demo: Path, backend: str) -> None:
    result = run_cli("train", str(_config(demo, f"{backend}.yaml", quantization=backend)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"with {backend} on cpu in" in output  # the quantization pass and how long it took
    with safe_open(str(demo / "outputs" / "checkpoints" / "lora_weights_step_00002.safetensors"), "pt") as f:
        keys = set(f.keys())
        tensors = [f.get_tensor(k) for k in keys]
    expected = {
        f"diffusion_model.transformer_blocks.{i}.{module}.lora_{ab}.weight"
        for i in range(2)
        for module in preset_block_modules("audio")
        for ab in "AB"
    }
    assert keys == expected
    assert all(t.dtype == torch.bfloat16 and bool(torch.isfinite(t).all()) for t in tensors)


def test_an_unknown_quantization_is_refused_before_loading_with_every_value(demo: Path) -> None:
    result = run_cli("check", str(_config(demo, "int9.yaml", quantization="int9")))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "int9" in output
    for name in ("int8-quanto", "int8", "int8-dynamic"):
        assert f"'{name}'" in output, output
    assert "Traceback" not in output


def test_the_routed_int8_quanto_equals_ltx_trainers_own_quantization() -> None:
    from ltx_trainer import quantization as stock  # noqa: PLC0415

    assert list(quantization.EXCLUDE_PATTERNS) == stock.EXCLUDE_PATTERNS
    assert set(quantization.SKIP_ROOT_MODULES) == stock.SKIP_ROOT_MODULES
    theirs = workload.build_model(2, "tiny", seed=0, dtype=torch.bfloat16)
    ours = workload.build_model(2, "tiny", seed=0, dtype=torch.bfloat16)
    stock.quantize_model(theirs, "int8-quanto", device="cpu")
    quantization.quantize_model(ours, "int8-quanto", device="cpu", progress=False)
    their_modules = {n: type(m) for n, m in theirs.named_modules()}
    assert {n: type(m) for n, m in ours.named_modules()} == their_modules
    assert sum("QLinear" in t.__name__ for t in their_modules.values()) > 20
    mine = ours.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert type(mine[name]) is type(tensor), name
        assert torch.equal(_plain(mine[name]), _plain(tensor)), name


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A quanto tensor's dequantized values (its int8 data times its scale), a plain tensor as it is."""
    return tensor.dequantize() if hasattr(tensor, "_data") else tensor


def test_a_run_on_int8_resumed_at_step_2_ends_with_the_uninterrupted_runs_lora(tmp_path: Path) -> None:
    demo = write_demo(tmp_path / "demo", steps=4, num_samples=2).parent
    exact = {"save_training_state": "full", "precision": "float32", "interval": 2, "keep_last_n": -1}

    def write(name: str, output: Path, **model: object) -> Path:
        config = yaml.safe_load((demo / "config.yaml").read_text())
        config["acceleration"]["quantization"] = "int8"
        config["checkpoints"].update(exact)
        config["model"].update(model)
        config["output_dir"] = str(output)
        path = demo / name
        path.write_text(yaml.safe_dump(config))
        return path

    straight = run_cli("train", str(write("straight.yaml", tmp_path / "straight")))
    assert straight.returncode == 0, straight.stdout + straight.stderr
    first = yaml.safe_load((demo / "straight.yaml").read_text())
    first["optimization"]["steps"] = 2
    (demo / "first.yaml").write_text(yaml.safe_dump({**first, "output_dir": str(tmp_path / "resumed")}))
    assert run_cli("train", str(demo / "first.yaml")).returncode == 0
    checkpoints = tmp_path / "resumed" / "checkpoints"
    resumed = run_cli("train", str(write("resume.yaml", tmp_path / "resumed", load_checkpoint=str(checkpoints))))
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert "Resuming training from step 2" in output
    final = "lora_weights_step_00004.safetensors"
    with (
        safe_open(str(tmp_path / "straight" / "checkpoints" / final), "pt") as a,
        safe_open(str(checkpoints / final), "pt") as b,
    ):
        assert set(a.keys()) == set(b.keys())
        for key in a.keys():  # noqa: SIM118 - safe_open has no __iter__
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
