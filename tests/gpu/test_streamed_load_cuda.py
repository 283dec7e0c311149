"""The streamed load and the quantized-weight cache on a CUDA GPU, with full-width LTX-2.3-class blocks; peak host
memory measured in each load's own process.

Skips without CUDA. Writes a 6-block full-width checkpoint (about 4.7 GB in bf16) into the test's temporary folder;
every load runs in a fresh process (``tests/streamed_load_probe.py cuda``), which samples its ``RssAnon``,
``RssShmem`` and ``RssFile`` every 2 ms. The figures are attached to the test report (``record_property``; run with
``--junitxml`` to keep them) and printed.

- ``test_pinned_copies_from_the_gpu_stay_in_host_memory_until_the_cache_is_emptied``: where page-locked memory shows
  up and how long it stays (the explanation in ``docs/memory.md`` of the full-scale run's 19.2 GB of ``RssShmem``);
- ``test_the_streamed_load_of_full_width_blocks``: ltx-trainer's own load and quantization pass against the streamed
  load without a cache, writing it, and reading it: the same tensors, bit for bit; the same losses and LoRA export
  with block swap streaming the blocks left in host memory; host memory bounded by the quantized blocks kept there and
  a few parts in flight (never a bf16 copy of the model), and no page-locked memory left behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltx_audio_reference.quantization import get_backend
from ltx_audio_reference.quantization.memory import checkpoint_sizes
from ltx_audio_reference.quantization.stream import CACHE_READ_AHEAD

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

PROBE = Path(__file__).resolve().parents[1] / "streamed_load_probe.py"
NUM_LAYERS = 6
HOST_BLOCKS = (1, 3, 5)  # spread_blocks(6, 3): what block_swap_blocks: 3 streams
STEPS = 2
SLACK_GB = 1.0  # allocator and Python objects beside the model
HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
HAS_LTX_TRAINER = importlib.util.find_spec("ltx_trainer") is not None


def _probe(*args: str, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ltx_audio_reference.testing.tiny_model import FULL_WIDTH_OVERRIDES, write_tiny_checkpoint  # noqa: PLC0415

    path = tmp_path_factory.mktemp("full_width") / "full_width.safetensors"
    return write_tiny_checkpoint(path, NUM_LAYERS, overrides=FULL_WIDTH_OVERRIDES, dtype=torch.bfloat16, device="cuda")


def test_pinned_copies_from_the_gpu_stay_in_host_memory_until_the_cache_is_emptied(
    record_property: pytest.RecordProperty,
) -> None:
    gb = 2.0
    result = _probe("pinned", str(gb))
    record_property("pinned", json.dumps(result))
    print(json.dumps(result, indent=1))  # noqa: T201 - the figures, for the lead's notes
    stages = result["gb"]
    assert result["non_blocking_is_pinned"]  # a non_blocking copy from the GPU lands in page-locked memory
    assert stages["non_blocking copies"]["NonReclaimable"] >= 0.9 * gb
    assert stages["freed"]["NonReclaimable"] >= 0.9 * gb  # freed, but kept by torch's host caching allocator
    assert stages["host cache emptied"]["NonReclaimable"] <= 0.2 * gb
    assert stages["blocking freed"]["NonReclaimable"] <= 0.2 * gb  # pageable copies go back to the system
    kept = stages["freed"]
    record_property("pinned_cache_counter", "RssShmem" if kept["RssShmem"] > kept["RssAnon"] else "RssAnon")
    registered = stages["registered"]
    record_property("registered_counter", "RssShmem" if registered["RssShmem"] > registered["RssAnon"] else "RssAnon")


def _load(checkpoint: Path, mode: str, backend: str, cache: str = "-", steps: int = STEPS) -> dict:
    host = ",".join(map(str, HOST_BLOCKS))
    return _probe("cuda", mode, str(checkpoint), backend, cache, host, str(steps))


@pytest.mark.parametrize(
    "backend",
    [pytest.param("int8-quanto", marks=pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto")), "int8"],
)
def test_the_streamed_load_of_full_width_blocks(
    checkpoint: Path, tmp_path: Path, backend: str, record_property: pytest.RecordProperty
) -> None:
    sizes = checkpoint_sizes(checkpoint, get_backend(backend))
    blocks = [s for s in sizes if s.part.block is not None]
    bf16_gb = sum(s.loaded_bytes for s in sizes) / 1e9
    swapped_gb = sum(s.trained_bytes for s in blocks if s.part.block in HOST_BLOCKS) / 1e9
    block_bf16_gb = max(s.source_bytes for s in sizes) / 1e9
    block_q_gb = max(s.trained_bytes for s in sizes) / 1e9
    cache = str(tmp_path / "qcache")

    runs = {
        "streamed": _load(checkpoint, "streamed", backend),
        "cold": _load(checkpoint, "streamed", backend, cache),
        "warm": _load(checkpoint, "streamed", backend, cache),
    }
    if backend == "int8-quanto" and HAS_LTX_TRAINER:  # ltx-trainer's own load and quantization pass
        stock = _load(checkpoint, "stock", backend)
        if "skipped" not in stock:
            runs["stock"] = stock
    for name, run in runs.items():
        record_property(f"{backend}_{name}", json.dumps({k: v for k, v in run.items() if k != "digest"}))
        print(name, json.dumps({k: v for k, v in run.items() if k not in ("digest", "losses")}))  # noqa: T201

    reference = runs.get("stock", runs["streamed"])
    for name, run in runs.items():
        assert run["digest"] == reference["digest"], name  # the same tensors, bit for bit
        assert run["losses"] == reference["losses"], name  # and the same training, with block swap
        assert run["export_digest"] == reference["export_digest"], name
        assert run["engine_host_gb"] == pytest.approx(swapped_gb, rel=0.01), name

    for name in ("streamed", "cold", "warm"):
        run = runs[name]
        expected = {str(i): ("cpu" if i in HOST_BLOCKS else "cuda") for i in range(NUM_LAYERS)}
        assert run["placement"] == expected, name
        peak = run["peak_gb"]["NonReclaimable"]
        # Kept in host memory: the swapped blocks at their quantized size. In flight: two bf16 parts read ahead and one
        # quantized part (the warm load reads quantized parts only, CACHE_READ_AHEAD of them ahead of the one placed).
        in_flight = block_q_gb * (CACHE_READ_AHEAD + 1) if name == "warm" else 2 * block_bf16_gb + block_q_gb
        assert peak <= swapped_gb + in_flight + SLACK_GB, (name, peak, swapped_gb, in_flight)
        assert peak < bf16_gb, (name, peak, bf16_gb)  # never a bf16 copy of the model
        assert run["after_gb"]["RssShmem"] <= 0.25, name  # no page-locked memory left behind by the load
        assert run["after_gb"]["NonReclaimable"] <= swapped_gb + SLACK_GB, name
    assert runs["warm"]["load_s"] < runs["cold"]["load_s"]
    if "stock" in runs:
        record_property(f"{backend}_stock_shmem_after_gb", runs["stock"]["after_gb"]["RssShmem"])
