"""Tier 2: the streamed load and the quantized-weight cache through the stock runner.

Three runs of the demo with ``int8-quanto``, each in its own process: ltx-trainer's own load
(``acceleration.streamed_load: false``), the streamed load writing the cache (cold), and one reading it (warm).
Their per-sample losses (``float.hex``) and exported LoRAs are identical, and the logs say which load ran. ``check``
prints the host-memory estimate.
"""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest
import torch
from cli_helpers import run_cli
from kill_resume import demo_config, finish, losses, spawn
from safetensors.torch import load_file

from ltx_audio_reference import bridge
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

STEPS = 3
FLOAT32_EXPORT = {"checkpoints.precision": "float32", "checkpoints.interval": STEPS}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("qcache") / "demo", steps=STEPS, num_samples=4).parent


def _run(demo_root: Path, folder: Path, name: str, edits: dict[str, object]) -> tuple:
    config = demo_config(
        demo_root, folder / name, {"acceleration.quantization": "int8-quanto", **FLOAT32_EXPORT, **edits}
    )
    return spawn(config, folder, name, "--loss-log", str(folder / f"{name}.losses"))


def _export(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(folder / name / "checkpoints" / f"lora_weights_step_{STEPS:05d}.safetensors"))


def test_a_cached_run_equals_an_uncached_one_and_the_stock_load(demo_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "qcache"
    stock = _run(demo_root, tmp_path, "stock", {"acceleration.streamed_load": False})
    streamed = {"acceleration.streamed_load": True, "acceleration.quantized_cache": str(cache)}
    cold = _run(demo_root, tmp_path, "cold", streamed)
    logs = {"stock": finish(*stock), "cold": finish(*cold)}
    logs["warm"] = finish(*_run(demo_root, tmp_path, "warm", streamed))

    assert "Loaded the transformer part by part" not in logs["stock"]
    assert "Quantized 76 layers (2 blocks) with int8-quanto" in logs["stock"]
    assert "not used: there is none yet; quantizing from the checkpoint and writing it" in logs["cold"]
    assert "Quantized-weight cache written" in logs["cold"]
    assert "Quantized-weight cache hit: loaded int8-quanto" in logs["warm"]
    for name in ("cold", "warm"):
        assert "quantized with int8-quanto while it loaded; nothing left to quantize" in logs[name], name
        assert "Quantized 76 layers" not in logs[name]

    expected = losses(tmp_path / "stock.losses")
    assert sorted(expected) == list(range(1, STEPS + 1))
    export = _export(tmp_path, "stock")
    assert export
    for name in ("cold", "warm"):
        assert losses(tmp_path / f"{name}.losses") == expected, name  # every per-sample loss, bit for bit
        mine = _export(tmp_path, name)
        assert mine.keys() == export.keys()
        for key, tensor in export.items():
            assert torch.equal(mine[key], tensor), (name, key)


def test_check_prints_the_host_memory_estimate(demo_root: Path, tmp_path: Path) -> None:
    import yaml  # noqa: PLC0415

    config = demo_config(
        demo_root, tmp_path / "out", {"acceleration.quantization": "int8-quanto", "acceleration.streamed_load": True}
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("check", str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "note: host memory: ~3.0 GB at the peak (process ~3.0 + the model <0.1 (training on the CPU)" in output
    assert "streamed load <0.1 GB), plus up to <0.1 GB of page cache for the checkpoint (reclaimable)" in output
    assert "this machine has" in output


def test_the_bridge_routes_load_transformer_and_uninstall_restores_it(fresh_pm: pluggy.PluginManager) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_trainer import model_loader  # noqa: PLC0415

    bridge.uninstall()
    assert trainer_module.load_transformer is model_loader.load_transformer
    bridge.install(fresh_pm)
    try:
        assert trainer_module.load_transformer is not model_loader.load_transformer
        assert trainer_module.load_transformer.__wrapped__ is model_loader.load_transformer
        assert hasattr(trainer_module.LtxvTrainer._load_models, "__wrapped__")
    finally:
        bridge.uninstall()
    assert trainer_module.load_transformer is model_loader.load_transformer
    assert not hasattr(trainer_module.LtxvTrainer._load_models, "__wrapped__")
