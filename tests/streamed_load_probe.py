"""Subprocess driver for the streamed-load tests: peak host memory of one load, and a cache write killed mid-way.

Usage::

    python streamed_load_probe.py memory stock|streamed CHECKPOINT BACKEND
    python streamed_load_probe.py stall CHECKPOINT BACKEND CACHE_ROOT MARKER PART

``memory`` loads the checkpoint once, the stock way (ltx-core's ``SingleGPUModelBuilder``, as ltx-trainer's
``load_transformer`` calls it, then ``quantize_model``) or streamed, and prints one JSON line: the peak resident set
during the load above the resident set before it (``VmHWM`` reset through ``/proc/self/clear_refs``, or the
process's ``ru_maxrss`` where that is refused), the resident set after it, and the quantized model's bytes. Run it
with ``MALLOC_MMAP_THRESHOLD_`` set low, so that freed buffers go back to the kernel at once and the resident set
follows the live bytes.

``stall`` starts a streamed load that writes the quantized-weight cache; when it reaches part file ``PART`` it
writes half of it under the temporary name the atomic write uses, writes ``MARKER`` and sleeps, for the test to
SIGKILL it there.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from ltx_audio_reference.quantization import cache as qcache
from ltx_audio_reference.quantization import get_backend, quantize_model
from ltx_audio_reference.quantization.stream import LoadPlan, load_transformer_streamed, meta_transformer
from ltx_audio_reference.reliability.files import atomic_file

STALL_SECONDS = 600


def stock_build(checkpoint: Path, backend: str) -> torch.nn.Module:
    """ltx-trainer's load (ltx-core's builder, bf16 on the CPU, the trainer's cast) and the quantization pass."""
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: PLC0415
    from ltx_core.model.transformer.model_configurator import (  # noqa: PLC0415
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )

    model = SingleGPUModelBuilder(
        model_path=str(checkpoint),
        model_class_configurator=LTXModelConfigurator,
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
    ).build(device=torch.device("cpu"), dtype=torch.bfloat16)
    model = model.to(dtype=torch.bfloat16)
    return quantize_model(model, backend, device="cpu", progress=False)


def _status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def memory(mode: str, checkpoint: Path, backend: str) -> None:
    # Outside the measured window: the imports, the plugins' entry points, ltx-core's first model build.
    meta_transformer(checkpoint)
    quantizer = get_backend(backend)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    before = _status()["VmRSS"]
    if mode == "stock":
        model = stock_build(checkpoint, backend)
    else:
        model = load_transformer_streamed(checkpoint, quantizer, LoadPlan(torch.device("cpu")), progress=False)
    after = _status()
    peak = after["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    quantized = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    result = {
        "peak_bytes": peak - before,
        "after_bytes": after["VmRSS"] - before,
        "quantized_bytes": quantized,
        "peak_reset": reset,
    }
    sys.stdout.write(json.dumps(result) + "\n")


def stall(checkpoint: Path, backend: str, root: Path, marker: Path, part: str) -> None:
    real = qcache.write_tensors

    def write_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
        if part in Path(path).name:
            with atomic_file(Path(path)) as tmp:
                tmp.write_bytes(b"\0" * 4096)  # a part file half written when the kill lands
                marker.write_text(f"stalled writing {path}\n")
                time.sleep(STALL_SECONDS)
        return real(path, tensors, metadata)

    qcache.write_tensors = write_tensors
    load_transformer_streamed(
        checkpoint, get_backend(backend), LoadPlan(torch.device("cpu")), cache_root=root, progress=False
    )


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "memory":
        memory(args[0], Path(args[1]), args[2])
    elif mode == "stall":
        stall(Path(args[0]), args[1], Path(args[2]), Path(args[3]), args[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
