"""FSDP through ``accelerate launch`` on CUDA with the plugin: trains and exports without block swap, refuses swap.

Runs ``configs/accelerate/fsdp.yaml`` with as many processes as there are GPUs (one on a one-GPU machine: FSDP over a
world of 1 still wraps, casts and gathers the state dict through the FSDP code paths). Skips without CUDA, without
ltx-trainer or without accelerate's launcher.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from kill_resume import DRIVER
from safetensors.torch import load_file

from ltx_audio_reference.testing.demo import write_demo

ACCELERATE = shutil.which("accelerate", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
FSDP = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp.yaml"
EXPORT_KEY = re.compile(r"^diffusion_model\.transformer_blocks\.\d+\.audio_(attn1|attn2|ff)\..*lora_[AB]\.weight$")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher is not installed next to this Python"),
]


def _launch(config: Path, *, stock: bool = False) -> subprocess.CompletedProcess[str]:
    """``ltx-trainer train CONFIG`` under FSDP, or with ``stock`` the bare stock trainer (bridge not installed)."""
    launch = [str(ACCELERATE), "launch", "--config_file", str(FSDP), "--num_processes", str(torch.cuda.device_count())]
    if stock:
        command = [str(DRIVER), str(config), "--stock"]
    else:
        command = ["-m", "ltx_audio_reference.cli", "train", str(config), "--disable-progress-bars"]
    return subprocess.run(
        [*launch, *command],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
        timeout=600,
        check=False,
    )


def _tensor_count(path: Path) -> int | None:
    """How many tensors a safetensors file holds, or None when it cannot be read."""
    try:
        return len(load_file(str(path)))
    except Exception:  # any reader error means "unreadable" here
        return None


def test_fsdp_without_block_swap_trains_and_exports_the_audio_lora_which_stock_writes_empty(tmp_path: Path) -> None:
    config = write_demo(tmp_path / "demo", steps=2, num_samples=2)

    # Stock: peft finds no LoRA tensor in the FSDP-wrapped blocks, and the stock save writes that.
    stock_config = yaml.safe_load(config.read_text())
    stock_config["output_dir"] = str(tmp_path / "stock")
    stock_config["training_strategy"] = {"name": "text_to_video", "with_audio": True, "first_frame_conditioning_p": 0}
    stock_path = tmp_path / "stock.yaml"
    stock_path.write_text(yaml.safe_dump(stock_config))
    stock = _launch(stock_path, stock=True)
    assert stock.returncode == 0, (stock.stdout + stock.stderr)[-5000:]
    assert _tensor_count(tmp_path / "stock" / "checkpoints" / "lora_weights_step_00001.safetensors") in (0, None)

    result = _launch(config)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "FSDP" in output, output[-3000:]  # the stock trainer logs its FSDP casts and warnings
    assert "exporting all of them by name" in output
    exported = load_file(str(tmp_path / "demo" / "outputs" / "checkpoints" / "lora_weights_step_00002.safetensors"))
    assert len(exported) == 2 * 10 * 2  # 2 blocks x 10 audio modules x (A, B)
    assert all(EXPORT_KEY.match(k) for k in exported), sorted(exported)[:3]
    assert all(t.dtype == torch.bfloat16 and bool(torch.isfinite(t).all()) for t in exported.values())
    assert any(bool(t.abs().sum() > 0) for k, t in exported.items() if "lora_B" in k)  # it trained


def test_fsdp_with_block_swap_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    config_path = write_demo(tmp_path / "demo", steps=2, num_samples=2)
    config = yaml.safe_load(config_path.read_text())
    config["acceleration"]["block_swap_blocks"] = 1
    config["optimization"]["enable_gradient_checkpointing"] = True
    config_path.write_text(yaml.safe_dump(config))
    result = _launch(config_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Block swap cannot run with FSDP" in output, output[-3000:]
    assert not (tmp_path / "demo" / "outputs" / "checkpoints").exists()
