"""Tier 2: two processes (DDP over gloo on CPU) through `accelerate launch`, with the plugin installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltx_audio_reference.demo import write_demo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DDP_CPU = REPO / "configs" / "accelerate" / "ddp_cpu.yaml"
ACCELERATE = shutil.which("accelerate", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def _lora_name(name: str) -> str:
    """`module.base_model.model.transformer_blocks.0.x.lora_A.default.weight` -> the exported key."""
    name = name[name.index("transformer_blocks.") :].replace(".default.", ".")
    return f"diffusion_model.{name}"


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher is not installed next to this Python or on PATH")
def test_two_cpu_processes_train_and_export_what_every_rank_holds(tmp_path: Path, example_plugin_site: Path) -> None:
    demo = write_demo(tmp_path / "demo", steps=4, num_samples=4).parent
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "COLUMNS": "400",  # keep rich from wrapping log lines
        "EXAMPLE_PLUGIN_DUMP_DIR": str(dumps),
        "PYTHONPATH": os.pathsep.join([str(example_plugin_site), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [
            str(ACCELERATE),
            "launch",
            "--config_file",
            str(DDP_CPU),
            "-m",
            "ltx_audio_reference.cli",
            "train",
            str(demo / "config.yaml"),
            "--disable-progress-bars",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "distributed training enabled with 2 processes" in output
    assert "global batch size: 4" in output

    checkpoints = sorted((demo / "outputs" / "checkpoints").glob("lora_weights_step_*.safetensors"))
    assert [p.name for p in checkpoints] == [
        "lora_weights_step_00002.safetensors",
        "lora_weights_step_00004.safetensors",
    ]
    assert not list((demo / "outputs" / "checkpoints").glob("*.tmp*"))

    for checkpoint in checkpoints:
        step = re.search(r"step_(\d+)", checkpoint.name).group(1)
        exported = load_file(str(checkpoint))
        ranks = [load_file(str(dumps / f"rank{r}_step{step}.safetensors")) for r in (0, 1)]
        for name, tensor in ranks[0].items():
            assert torch.equal(tensor, ranks[1][name]), f"ranks disagree on {name} at step {step}"
        held = {_lora_name(n): t for n, t in ranks[0].items()}
        assert held.keys() == exported.keys()
        for key, tensor in exported.items():
            assert torch.equal(tensor, held[key].to(torch.bfloat16)), key
