"""Tier 2: the stock ltx-trainer runner end to end, driven by the `ltx-trainer` CLI in subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli
from safetensors import safe_open

from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

AUDIO_PRESET_MODULES_PER_BLOCK = 10  # audio_attn1/2 q,k,v,out.0 + audio_ff net.0.proj, net.2


def _checkpoints(root: Path) -> list[Path]:
    return sorted((root / "outputs" / "checkpoints").glob("lora_weights_step_*.safetensors"))


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return write_demo(tmp_path / "demo", steps=4, num_samples=4).parent


def test_demo_trains_through_the_stock_runner(demo: Path) -> None:
    result = run_cli("train", str(demo / "config.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    checkpoints = _checkpoints(demo)
    assert [p.name for p in checkpoints] == [
        "lora_weights_step_00002.safetensors",
        "lora_weights_step_00004.safetensors",
    ]
    with safe_open(str(checkpoints[-1]), "pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    assert len(keys) == 2 * AUDIO_PRESET_MODULES_PER_BLOCK * 2  # 2 blocks, lora_A + lora_B
    assert all(k.startswith("diffusion_model.transformer_blocks.") for k in keys)
    assert {k.split(".")[3] for k in keys} == {"audio_attn1", "audio_attn2", "audio_ff"}
    assert not any(".alpha" in k for k in keys)
    assert metadata["strategy"] == "audio_reference"
    assert metadata["reference_positions"] == "negative"
    assert metadata["reference_gap_s"] == "0.04"
    assert metadata["reference_modality"] == "audio"
    assert metadata["reference_downscale_factor"] == "1"
    assert (metadata["lora_preset"], metadata["lora_rank"], metadata["lora_alpha"]) == ("audio", "4", "4")


def test_strategy_flag_selects_the_strategy_with_its_defaults(demo: Path) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["training_strategy"] = {"name": "text_to_video", "with_audio": True}
    config["optimization"]["steps"] = 2
    (demo / "t2v.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("train", str(demo / "t2v.yaml"), "--strategy", "audio_reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "overrides training_strategy.name 'text_to_video'" in result.stdout + result.stderr
    with safe_open(str(_checkpoints(demo)[-1]), "pt") as f:
        assert f.metadata()["strategy"] == "audio_reference"


def test_alpha_must_equal_rank_fails_before_loading(demo: Path) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["lora"]["alpha"] = 8
    (demo / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("train", str(demo / "bad.yaml"))
    assert result.returncode != 0
    assert "lora.alpha (8) must equal lora.rank (4)" in result.stdout + result.stderr
    assert not (demo / "outputs").exists()


def test_check_reports_an_unknown_top_level_key(demo: Path) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["optimisation"] = {"steps": 3}
    (demo / "typo.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("check", str(demo / "typo.yaml"))
    assert result.returncode == 1
    assert "config optimisation: Extra inputs are not permitted" in result.stdout


def test_train_reports_an_unknown_top_level_key_like_check(demo: Path) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["optimisation"] = {"steps": 3}
    (demo / "typo.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("train", str(demo / "typo.yaml"))
    assert result.returncode == 1
    assert "config optimisation: Extra inputs are not permitted" in result.stdout
    assert not (demo / "outputs").exists()


def test_check_reports_alpha_not_equal_rank(demo: Path) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["lora"]["alpha"] = 16
    (demo / "alpha.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("check", str(demo / "alpha.yaml"))
    assert result.returncode == 1
    assert "Set lora.alpha: 4" in result.stdout


def test_third_party_plugin_trains(demo: Path, example_plugin_site: Path) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["training_strategy"] = {"name": "example_t2v", "with_audio": True}
    config["optimization"]["steps"] = 2
    (demo / "example.yaml").write_text(yaml.safe_dump(config))
    env = {"PYTHONPATH": os.pathsep.join([str(example_plugin_site), os.environ.get("PYTHONPATH", "")])}
    listing = run_cli("strategies", env=env)
    assert "example_t2v" in listing.stdout
    result = run_cli("train", str(demo / "example.yaml"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with safe_open(str(_checkpoints(demo)[-1]), "pt") as f:
        metadata = f.metadata()
    assert metadata["example_strategy"] == "true"
    assert metadata["example_plugin"] == '{"trained_with": "example_t2v"}'


ACCELERATE = shutil.which("accelerate", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher is not installed next to this Python or on PATH")
def test_runs_under_accelerate_launch(demo: Path) -> None:
    result = subprocess.run(
        [
            str(ACCELERATE),
            "launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "ltx_audio_reference.cli",
            "train",
            str(demo / "config.yaml"),
            "--disable-progress-bars",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(_checkpoints(demo)) == 2
