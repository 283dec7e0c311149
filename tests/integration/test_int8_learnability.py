"""Tier 2: the learnability task of ``test_ref_gap_training.py`` on each traceable int8 backend, through the stock
runner: the reference gap still grows, and ``int8-dynamic`` (W8A8) learns as well as ``int8`` (W8A16).

The per-step loss curves of both are in ``benchmarks/results/int8_learnability_cpu.json`` and
``docs/int8_learnability.png`` (``python benchmarks/int8_learnability.py``).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_ref_gap_training import _train, _write_task

pytestmark = pytest.mark.integration

STEPS = 100
BACKENDS = ("int8", "int8-dynamic")


def learn(root: Path, backend: str | None, steps: int = STEPS) -> dict[str, Any]:
    """The informative task trained ``steps`` steps with ``backend`` quantizing the base (None: bf16)."""
    _, config = _write_task(root, informative=True)
    config["acceleration"]["quantization"] = backend
    return _train(config, steps=steps, interval=steps // 2, ref_gap_samples=16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return {backend: learn(tmp_path_factory.mktemp(backend), backend) for backend in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_reference_gap_grows_on_each_int8_backend(runs: dict[str, dict[str, Any]], backend: str) -> None:
    gaps = runs[backend]["gaps"]
    assert len(gaps) >= 2
    assert gaps[-1] > gaps[0]
    assert gaps[-1] > 0.05
    assert runs[backend]["metadata"]["strategy"] == "audio_reference"


def test_int8_dynamic_mean_loss_is_within_2_percent_of_weight_only_over_100_steps(
    runs: dict[str, dict[str, Any]],
) -> None:
    weight_only, dynamic = runs["int8"]["losses"], runs["int8-dynamic"]["losses"]
    assert len(weight_only) == len(dynamic) == STEPS
    assert weight_only != dynamic  # W8A8 really rounds the activations
    mean_w, mean_d = statistics.fmean(weight_only), statistics.fmean(dynamic)
    assert abs(mean_d - mean_w) <= 0.02 * mean_w, (mean_w, mean_d)
