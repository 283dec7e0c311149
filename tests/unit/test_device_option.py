"""``--device`` is checked before anything loads or is written: a device torch does not know, or one this machine
lacks, is one line naming the option and the fix (it was a torch traceback once the models had loaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import write_wav
from ltx_audio_reference.reliability.preflight import device_problem
from ltx_audio_reference.testing.tiny_audio_vae import write_tiny_audio_vae_checkpoint

runner = CliRunner()
#: No machine this runs on has 100 GPUs, with or without CUDA.
ABSENT = "cuda:99"


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), ["audio-reference", *args])
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("gpu", "--device gpu: not a device torch knows; use cpu, cuda or cuda:N"),
        ("cuda:", "--device cuda:: not a device torch knows"),
        (ABSENT, "--device cuda:99: "),
    ],
)
def test_a_device_that_cannot_run_here_is_named_with_the_fix(device: str, expected: str) -> None:
    problem = device_problem(device)
    assert problem is not None
    assert problem.startswith(expected)


def test_the_cpu_is_always_fine() -> None:
    assert device_problem("cpu") is None


def test_precompute_with_an_absent_device_stops_before_writing(tmp_path: Path) -> None:
    references = tmp_path / "references"
    references.mkdir()
    write_wav(references / "a.wav", np.zeros((1, 16000), dtype=np.float32), 16000)
    checkpoint = write_tiny_audio_vae_checkpoint(tmp_path / "audio_vae.safetensors")
    output = tmp_path / "pre"
    code, text = _invoke(
        "precompute", str(references), "--model-path", str(checkpoint), "-o", str(output), "--device", ABSENT
    )
    assert code == 2, text
    assert "error: --device cuda:99:" in text
    assert "Traceback" not in text
    assert not output.exists()


def test_eval_with_an_unknown_device_stops_before_writing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model: {}\n")  # never read: the device is checked first
    out = tmp_path / "sweep"
    code, text = _invoke("eval", str(config), "--out", str(out), "--device", "gpu")
    assert code == 2, text
    assert "error: --device gpu: not a device torch knows" in text
    assert not out.exists()
