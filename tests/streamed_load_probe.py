"""Subprocess driver for the streamed-load tests: peak host memory of one load, and a cache write killed mid-way.

Usage::

    python streamed_load_probe.py memory stock|streamed CHECKPOINT BACKEND
    python streamed_load_probe.py stall CHECKPOINT BACKEND CACHE_ROOT MARKER PART
    python streamed_load_probe.py cuda stock|streamed CHECKPOINT BACKEND CACHE_ROOT|- HOST_BLOCKS STEPS
    python streamed_load_probe.py pinned GB

``memory`` loads the checkpoint once, the stock way (ltx-core's ``SingleGPUModelBuilder``, as ltx-trainer's
``load_transformer`` calls it, then ``quantize_model``) or streamed, and prints one JSON line: the peak resident set
during the load above the resident set before it (``VmHWM`` reset through ``/proc/self/clear_refs``, or the
process's ``ru_maxrss`` where that is refused), the resident set after it, and the quantized model's bytes. Run it
with ``MALLOC_MMAP_THRESHOLD_`` set low, so that freed buffers go back to the kernel at once and the resident set
follows the live bytes.

``cuda`` (GPU tests) loads on ``cuda:0``, the stock way (ltx-trainer's own ``quantize_model``) or streamed (with the
cache in ``CACHE_ROOT``, or none for ``-``), the blocks ``HOST_BLOCKS`` (``1,3``) left in host memory; it samples the
process's ``RssAnon``, ``RssShmem`` and ``RssFile`` every few milliseconds during the load, then digests the model's
tensors and, for ``STEPS`` > 0, trains LoRA on it with block swap streaming ``HOST_BLOCKS`` (deterministic kernels),
and prints one JSON line. ``pinned`` measures where page-locked host memory shows up: ``GB`` copied from the GPU with
``non_blocking=True`` (torch's host caching allocator), freed, the allocator emptied; the same copied blocking; the
same registered with ``cudaHostRegister`` (what block swap does).

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
from ltx_audio_reference.quantization import memory as hostmem
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


def memory(mode: str, checkpoint: Path, backend: str) -> None:
    # Outside the measured window: the imports, the plugins' entry points, ltx-core's first model build.
    meta_transformer(checkpoint)
    quantizer = get_backend(backend)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    before = hostmem.process_memory()["VmRSS"]
    if mode == "stock":
        model = stock_build(checkpoint, backend)
    else:
        model = load_transformer_streamed(checkpoint, quantizer, LoadPlan(torch.device("cpu")), progress=False)
    after = hostmem.process_memory()
    peak = after["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    quantized = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    result = {
        "peak_bytes": peak - before,
        "after_bytes": after["VmRSS"] - before,
        "quantized_bytes": quantized,
        "peak_reset": reset,
    }
    sys.stdout.write(json.dumps(result) + "\n")


GB = 1e9
_COUNTERS = ("RssAnon", "RssShmem", "RssFile")


def _counters() -> dict[str, int]:
    found = hostmem.process_memory()
    return {key: found[key] for key in (*_COUNTERS, "NonReclaimable")}


class _Sampler:
    """Peaks of the process's memory counters, sampled every 2 ms in a thread."""

    def __init__(self) -> None:
        import threading  # noqa: PLC0415

        self.peaks = _counters()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in _counters().items():
                self.peaks[key] = max(self.peaks[key], value)
            time.sleep(0.002)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in _counters().items():
            self.peaks[key] = max(self.peaks[key], value)


def _digest(model: torch.nn.Module) -> str:
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        plain = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}:{plain.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(plain.view(torch.uint8).numpy().tobytes() if plain.numel() else b"")
    return digest.hexdigest()


def cuda_load(mode: str, checkpoint: Path, backend: str, root: str, host_blocks: str, steps: int) -> None:
    """See the module docstring (``cuda``)."""
    blocks = frozenset(int(b) for b in host_blocks.split(",") if b)
    meta_transformer(checkpoint)
    quantizer = get_backend(backend)
    torch.zeros(1, device="cuda")  # the CUDA context, outside the measured window
    if mode == "stock":
        try:
            from ltx_trainer.quantization import quantize_model as stock_quantize  # noqa: PLC0415
        except ImportError as e:
            sys.stdout.write(json.dumps({"skipped": f"ltx-trainer is not importable: {e}"}) + "\n")
            return
    before = _counters()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with _Sampler() as sampler:
        if mode == "stock":  # ltx-trainer's _load_models: bf16 on the CPU, the trainer's cast, its quantization pass
            model = _ltx_core_build(checkpoint)
            model = stock_quantize(model, backend)
        else:
            plan = LoadPlan(torch.device("cuda", 0), blocks)
            cache = None if root == "-" else Path(root)
            model = load_transformer_streamed(checkpoint, quantizer, plan, cache_root=cache, progress=False)
        torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    after = _counters()
    result: dict = {
        "load_s": load_s,
        "peak_gb": {k: (v - before[k]) / GB for k, v in sampler.peaks.items()},
        "after_gb": {k: (v - before[k]) / GB for k, v in after.items()},
        "gpu_peak_gb": torch.cuda.max_memory_allocated() / GB,
        "placement": {
            str(i): ",".join(sorted({p.device.type for p in block.parameters()}))
            for i, block in enumerate(model.transformer_blocks)
        },
        "quantized_gb": sum(t.numel() * t.element_size() for t in model.state_dict().values()) / GB,
        "digest": _digest(model),
    }
    if steps:
        result.update(_train(model, blocks, steps, before))
    sys.stdout.write(json.dumps(result) + "\n")


def _ltx_core_build(checkpoint: Path) -> torch.nn.Module:
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
    return model.to(dtype=torch.bfloat16)


def _train(model: torch.nn.Module, blocks: frozenset[int], steps: int, before: dict[str, int]) -> dict:
    """LoRA r32 on the audio stack, block swap streaming ``blocks``, ``steps`` steps of the seed workload."""
    from cuda_swap import deterministic_kernels, export_lora, pin_math_attention  # noqa: PLC0415

    from ltx_audio_reference.blockswap.engine import BlockSwapEngine  # noqa: PLC0415
    from ltx_audio_reference.testing import swap_workload as workload  # noqa: PLC0415

    with deterministic_kernels():
        pin_math_attention(model)
        model.requires_grad_(False)
        peft_model = workload.add_audio_lora(model, rank=32, seed=0)
        _redraw_on_the_cpu(peft_model)
        model.set_gradient_checkpointing(True)
        engine = BlockSwapEngine(peft_model, sorted(blocks), device="cuda", prefetch=1)
        engine.place(peft_model)
        placed = _counters()
        named = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(named, lr=1e-4)
        losses = []
        widths = workload.context_widths(model)
        for _ in range(steps):
            video, audio, video_target, audio_target = workload.make_batch(
                "full", device="cuda", seed=1, context_widths=widths
            )
            video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
            loss = workload.loss_fn(video_pred, audio_pred, video_target, audio_target)
            loss.backward()
            losses.append(float.hex(loss.item()))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        export = export_lora(peft_model)
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    for key in sorted(export):
        digest.update(key.encode() + export[key].view(torch.uint8).numpy().tobytes())
    return {
        "losses": losses,
        "export_digest": digest.hexdigest(),
        "engine_host_gb": engine.host_bytes / GB,
        "engine_pinned": engine.pin_memory,
        "placed_gb": {k: (v - before[k]) / GB for k, v in placed.items()},
    }


@torch.no_grad()
def _redraw_on_the_cpu(peft_model: torch.nn.Module, seed: int = 0) -> None:
    """LoRA factors drawn from CPU generators, wherever the layers are (``add_audio_lora`` draws on each layer's
    device, and the loads compared here put the resident layers on the GPU or leave them on the CPU)."""
    import math  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    for name, param in peft_model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            scale = 0.01 if "lora_B" in name else 1.0 / math.sqrt(param.shape[1])
            param.copy_((scale * torch.randn(param.shape, generator=generator)).to(param.device))


def pinned(gb: float) -> None:
    """See the module docstring (``pinned``)."""
    import gc  # noqa: PLC0415

    torch.zeros(1, device="cuda")
    count = 16
    sources = [torch.full((int(gb * GB) // count,), 1, dtype=torch.uint8, device="cuda") for _ in range(count)]
    torch.cuda.synchronize()
    stages = {"start": _counters()}
    host = [t.to("cpu", non_blocking=True) for t in sources]
    torch.cuda.synchronize()
    stages["non_blocking copies"] = _counters()
    is_pinned = all(h.is_pinned() for h in host)
    del host
    gc.collect()
    stages["freed"] = _counters()
    torch._C._host_emptyCache()
    stages["host cache emptied"] = _counters()
    blocking = [t.to("cpu") for t in sources]
    stages["blocking copies"] = _counters()
    del blocking
    gc.collect()
    stages["blocking freed"] = _counters()
    buffer = torch.ones(int(gb * GB), dtype=torch.uint8)
    stages["pageable buffer"] = _counters()
    status = int(torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0))
    stages["registered"] = _counters()
    if status == 0:
        torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())
    start = stages["start"]
    result = {
        "non_blocking_is_pinned": is_pinned,
        "register_status": status,
        "gb": {stage: {k: (v - start[k]) / GB for k, v in values.items()} for stage, values in stages.items()},
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
    elif mode == "cuda":
        cuda_load(args[0], Path(args[1]), args[2], args[3], args[4], int(args[5]))
    elif mode == "pinned":
        pinned(float(args[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
