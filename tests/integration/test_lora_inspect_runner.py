"""Tier 2: ``audio-reference inspect`` on checkpoints written by the stock runner."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli
from safetensors.torch import load_file

from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration


_cli = functools.partial(run_cli, timeout=600)


def _train(root: Path, *, preset: str, steps: int, interval: int) -> Path:
    config_path = write_demo(root, steps=steps, num_samples=4)
    config = yaml.safe_load(config_path.read_text())
    config["training_strategy"]["lora_preset"] = preset
    config["checkpoints"]["interval"] = interval
    config_path.write_text(yaml.safe_dump(config))
    result = _cli("train", str(config_path), "--disable-progress-bars")
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "outputs" / "checkpoints"


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("audio"), preset="audio", steps=4, interval=2)


def test_reports_the_count_and_preset_of_a_stock_checkpoint(audio_run: Path) -> None:
    result = _cli("audio-reference", "inspect", str(audio_run / "lora_weights_step_00004.safetensors"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)["files"][0]
    assert report["num_tensors"] == 40  # 2 blocks x 10 audio Linear layers x (A, B)
    assert report["preset"] == "audio"
    assert report["dtypes"] == {"bfloat16": 40}
    assert report["problems"] == []
    assert report["metadata"]["lora_preset"] == "audio"
    assert report["metadata"]["reference_positions"] == "negative"


def test_reports_audio_plus_bridges(tmp_path: Path) -> None:
    checkpoints = _train(tmp_path, preset="audio+bridges", steps=1, interval=1)
    result = _cli("audio-reference", "inspect", str(checkpoints / "lora_weights_step_00001.safetensors"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audio+bridges (2 blocks, 36 modules)" in result.stdout
    assert "72" in result.stdout


def test_distance_of_two_checkpoints_of_one_run_matches_a_hand_computation(audio_run: Path) -> None:
    first = audio_run / "lora_weights_step_00002.safetensors"
    second = audio_run / "lora_weights_step_00004.safetensors"
    p, q = load_file(str(first)), load_file(str(second))
    diff_sq = ref_sq = 0.0
    for key in p:
        if key.endswith("lora_A.weight"):
            b_key = key.replace("lora_A", "lora_B")
            dw_p = p[b_key].double() @ p[key].double()
            dw_q = q[b_key].double() @ q[key].double()
            diff_sq += float((dw_q - dw_p).pow(2).sum())
            ref_sq += float(dw_p.pow(2).sum())
    expected = math.sqrt(diff_sq / ref_sq)
    raw = math.sqrt(
        sum(float((q[k].double() - p[k].double()).pow(2).sum()) for k in p)
        / sum(float(p[k].double().pow(2).sum()) for k in p)
    )

    result = _cli("audio-reference", "inspect", str(first), str(second), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    distance = json.loads(result.stdout)["distance"]
    assert distance["relative_delta_distance"] == pytest.approx(expected, rel=1e-9)
    assert distance["relative_raw_distance"] == pytest.approx(raw, rel=1e-9)
    assert distance["modules_compared"] == 20
    assert 0 < expected < 10
