"""The 48-block LTX-2.3 22B shape through the stock runner within a 24 GB budget, measured (no extrapolation).

1. Writes a full-scale checkpoint with the kit: 48 full-width blocks (``tiny_model.FULL_WIDTH_OVERRIDES``), the real
   non-block parts at their real size, random weights drawn on the GPU, stored in bf16 and streamed to disk one
   tensor at a time (no fp32 copy, never two copies of the model in host memory), plus the tiny text side and the seed
   workload's data (256x256x121 @ 25 fps: 1024 video tokens, 121 target + 50 reference audio tokens, 256 text tokens).
2. Trains each run in its own process through the stock ``LtxvTrainer`` (bridge installed) with the seed's recipe
   (``configs/helium_audio_reference.yaml``: rank 32 / alpha 32, audio preset, adamw8bit, linear schedule, bf16,
   batch 1, gradient checkpointing) and the run's acceleration settings, under a GPU memory cap
   (``torch.cuda.set_per_process_memory_fraction``) where the run has one.
3. Checks every exported LoRA with ltx-core's own fusion (``apply_loras`` on the checkpoint's state dict, the ComfyUI
   key map): every audio weight moves, by ``B @ A``, and nothing else does.

Per run: startup peak (loading and the int8 quantization included: the peak when the trainer is built), steady peak
(training steps after the warm-up), host memory (peak RSS split into anonymous, shared and file-backed pages, and
their non-reclaimable sum; pinned bytes), seconds per step (median over the steps after the warm-up), time to the
first step, the exported LoRA's tensor count and the fusion check. Writes ``{"meta": ..., "rows": [...]}``.

A run name is one of :data:`RUNS`, optionally followed by a load suffix (``docs/memory.md``):

- none: the streamed load with no quantized-weight cache (``cache: none``);
- ``_stockload``: ltx-trainer's own load and quantization pass (``acceleration.streamed_load: false``);
- ``_cold``: the cache folder ``--root/quantized_cache`` is cleared, then written (``cache: cold``);
- ``_warm``: the cache is read (run it after ``_cold``; ``cache: warm``).

``--host-limit-gb N`` runs each process under a hard host-memory limit: ``systemd-run --scope -p MemoryMax=``, else a
cgroup v2 child with ``memory.max``; where neither works, the run goes on without one and the row says why.

    python benchmarks/full_scale.py --out benchmarks/results/full_scale_h200.json
    python benchmarks/full_scale.py --runs int8w_swap24_stockload int8w_swap24_cold int8w_swap24_warm --no-fusion \
        --out benchmarks/results/full_scale_h200.json --merge benchmarks/results/full_scale_h200.json
"""

from __future__ import annotations

import time

START = time.perf_counter()  # a child's "time to first step" counts from here (imports included)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from ltx_audio_reference.quantization import memory as hostmem  # noqa: E402

logger = logging.getLogger("full_scale")

GB = 1e9
BLOCKS = 48
REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "helium_audio_reference.yaml"

#: name -> (quantization, acceleration/block_swap settings, GPU cap in GB or None)
RUNS: dict[str, tuple[str | None, dict[str, Any], float | None]] = {
    "int8_swap24": ("int8-quanto", {"block_swap_blocks": 24}, 24.0),
    "int8_resident": ("int8-quanto", {}, None),
    "int8_auto12": ("int8-quanto", {"block_swap": {"blocks_to_swap": "auto", "max_vram_gb": 12}}, 24.0),
    "int8_auto22": ("int8-quanto", {"block_swap": {"blocks_to_swap": "auto", "max_vram_gb": 22}}, 24.0),
    "bf16_auto22": (None, {"block_swap": {"blocks_to_swap": "auto", "max_vram_gb": 22}}, 24.0),
}
RUNS.update(
    {
        f"{name}_compiled": (quant, {**settings, "compile_blocks": True}, cap)
        for name, (quant, settings, cap) in list(RUNS.items())
    }
)
# This package's traceable int8 runtime (``int8`` W8A16, ``int8-dynamic`` W8A8), compiled, with and without CUDA graphs.
for _backend, _tag in (("int8", "int8w"), ("int8-dynamic", "int8d")):
    for _swap, _settings in (("swap24", {"block_swap_blocks": 24}), ("auto22", RUNS["int8_auto22"][1])):
        RUNS[f"{_tag}_{_swap}"] = (_backend, dict(_settings), 24.0)
        RUNS[f"{_tag}_{_swap}_compiled"] = (_backend, {**_settings, "compile_blocks": True}, 24.0)
        RUNS[f"{_tag}_{_swap}_graphs"] = (_backend, {**_settings, "compile_blocks": True, "cuda_graphs": True}, 24.0)


#: Run-name suffix -> (cache column, acceleration.streamed_load, acceleration.quantized_cache uses --root's folder).
LOAD_VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "_stockload": ("none", False, False),
    "_cold": ("cold", True, True),
    "_warm": ("warm", True, True),
}
CACHE_DIR = "quantized_cache"


def parse_run(name: str) -> tuple[str, str, bool, bool]:
    """``(base run, cache column, streamed load, cache on)`` of a run name (see the module docstring).

    Raises:
        KeyError: If the base run is not in :data:`RUNS`.
    """
    for suffix, (cache, streamed, cached) in LOAD_VARIANTS.items():
        if name.endswith(suffix) and name.removesuffix(suffix) in RUNS:
            return name.removesuffix(suffix), cache, streamed, cached
    if name not in RUNS:
        raise KeyError(f"unknown run {name!r}: one of {', '.join(RUNS)}, optionally + {', '.join(LOAD_VARIANTS)}")
    return name, "none", True, False


#: Row columns from the sampled /proc status peaks (GB).
HOST_COLUMNS = {
    "host_anon_gb": "RssAnon",
    "host_shmem_gb": "RssShmem",
    "host_file_gb": "RssFile",
    "host_nonreclaimable_gb": "NonReclaimable",
    "host_tree_nonreclaimable_gb": "TreeNonReclaimable",  # with the DataLoader's workers
}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # Linux reports kB


def _graph_pool_gb() -> dict[str, float]:
    """What CUDA graphs' private memory pools hold now: the reserved and allocated bytes of the allocator's segments
    that belong to a pool other than the default one (``memory_snapshot``'s ``segment_pool_id``)."""
    import torch  # noqa: PLC0415

    reserved = allocated = 0
    for segment in torch.cuda.memory_snapshot():
        if tuple(segment.get("segment_pool_id", (0, 0))) != (0, 0):
            reserved += segment["total_size"]
            allocated += segment["allocated_size"]
    return {"graph_pool_reserved_gb": reserved / GB, "graph_pool_allocated_gb": allocated / GB}


def _pinned_h2d_gb_per_s(nbytes: int = 1 << 30) -> float:
    """This host's pinned host-to-device copy speed (GB/s): the median of 5 copies of 1 GiB."""
    import torch  # noqa: PLC0415

    host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    device = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        device.copy_(host, non_blocking=True)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del host, device
    return nbytes / statistics.median(times) / GB


def write_checkpoint(root: Path, steps: int) -> dict[str, Any]:
    """The full-scale demo folder; returns what writing it cost."""
    import torch  # noqa: PLC0415

    from ltx_audio_reference.testing.demo import write_demo  # noqa: PLC0415

    start = time.perf_counter()
    config = write_demo(
        root, steps=steps, num_samples=4, num_layers=BLOCKS, width="full", dtype=torch.bfloat16, device="cuda"
    )
    checkpoint = config.parent / "tiny_ltx2.safetensors"
    return {
        "write_s": time.perf_counter() - start,
        "checkpoint_gb": checkpoint.stat().st_size / GB,
        "write_host_rss_gb": _rss_gb(),
        "config": str(config),
    }


class HostLimit:
    """A hard host-memory limit for one run's process tree, and what it measured.

    The first that works: ``systemd-run --scope -p MemoryMax=`` (a transient scope; ``--user`` when not root); a
    cgroup v2 child of this process's cgroup with ``memory.max`` (the process moves in before it starts); or, where
    the group may not hand its memory controller to a child (a container's own group answers ``EBUSY``), ``memory.max``
    on this process's own group for the length of the run. The last limits everything in the group, this benchmark's
    parent process included, which makes it stricter, not looser; the old limit is put back afterwards. Swap is
    turned off for the run in all three, so the limit cannot be met by swapping. Where none works, :attr:`problem`
    says why and the run goes on without a limit.
    """

    _systemd: tuple[list[str], str | None] | None = None  # probed once: (prefix, problem)

    def __init__(self, gb: float, name: str) -> None:
        self.gb = gb
        self.name = name
        self.method: str | None = None
        self.problem: str | None = None
        self.cgroup: Path | None = None
        self.moved = 0  # processes moved out of this process's group so that it could hand out the memory controller
        self.restore: dict[Path, str] = {}  # own-group limit files -> the values to put back after the run
        self.oom_before = 0  # the own group's OOM kills before the run

    @property
    def on_own_group(self) -> bool:
        """Whether the limit sits on this process's own group, which lived before the run (so its peak is older)."""
        return bool(self.restore)

    @classmethod
    def _probe_systemd(cls) -> tuple[list[str], str | None]:
        if cls._systemd is None:
            exe = shutil.which("systemd-run")
            if exe is None:
                cls._systemd = ([], "systemd-run is not installed")
            else:
                prefix = [exe, *([] if os.geteuid() == 0 else ["--user"]), "--scope", "--quiet"]
                probe = subprocess.run(
                    [*prefix, "-p", "MemoryMax=1G", "true"], capture_output=True, text=True, timeout=60, check=False
                )
                problem = None if probe.returncode == 0 else f"systemd-run failed: {' '.join(probe.stderr.split())}"
                cls._systemd = (prefix, problem)
        return cls._systemd

    def _cgroup_child(self) -> Path:
        root = Path("/sys/fs/cgroup")
        if not (root / "cgroup.controllers").is_file():
            raise OSError("no cgroup v2 hierarchy at /sys/fs/cgroup")
        parent = hostmem.cgroup_dir(os.getpid())
        if parent is None:
            raise OSError("this process has no cgroup v2 group")
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            try:
                (parent / "cgroup.subtree_control").write_text("+memory")
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                # cgroup v2 lets a group hand controllers to its children only while it holds no process itself (a
                # container's own group holds them all): move them into a leaf group beside the limited one first.
                self.moved = _move_processes(parent, parent / "full_scale_rest")
                try:
                    (parent / "cgroup.subtree_control").write_text("+memory")
                except OSError as again:
                    left = (parent / "cgroup.procs").read_text().split()
                    kind = (parent / "cgroup.type").read_text().strip() if (parent / "cgroup.type").exists() else "?"
                    raise OSError(
                        again.errno,
                        f"{again.strerror} after moving {self.moved} processes to a leaf group ({len(left)} left in "
                        f"{parent}, cgroup.type {kind})",
                    ) from again
        child = parent / f"full_scale_{os.getpid()}_{self.name}"
        child.mkdir(exist_ok=True)
        (child / "memory.max").write_text(str(int(self.gb * GB)))
        if (child / "memory.swap.max").exists():
            (child / "memory.swap.max").write_text("0")
        return child

    def _own_group(self) -> Path:
        """Set ``memory.max`` (and no swap) on this process's own cgroup, keeping the old values to put back."""
        group = hostmem.cgroup_dir(os.getpid())
        if group is None:
            raise OSError("this process has no cgroup v2 group")
        if not (group / "memory.max").is_file():
            raise OSError(f"{group} has no memory.max (its parent does not hand it the memory controller)")
        for name, value in (("memory.max", str(int(self.gb * GB))), ("memory.swap.max", "0")):
            if (group / name).is_file():
                old = (group / name).read_text().strip()
                (group / name).write_text(value)
                self.restore[group / name] = old
        self.oom_before = int(_cgroup_figures(group, since_start=False).get("oom_kills", 0))
        return group

    def wrap(self, command: list[str]) -> list[str]:
        """The command to run under the limit (it keeps its process id, so its /proc status can be sampled)."""
        prefix, problem = self._probe_systemd()
        if problem is None:
            self.method = f"systemd-run MemoryMax={self.gb:g}G"
            return [*prefix, "-p", f"MemoryMax={int(self.gb * GB)}", "-p", "MemorySwapMax=0", "--", *command]
        try:
            self.cgroup = self._cgroup_child()
        except OSError as e:
            try:
                self.cgroup = self._own_group()
            except OSError as own:
                self.problem = f"no limit: {problem}; cgroup v2 child: {e}; own group: {own}"
                print(f"--host-limit-gb {self.gb:g} not applied to {self.name}: {self.problem}", flush=True)  # noqa: T201
                return command
            self.method = f"cgroup memory.max={self.gb:g}G on this process's own group (a child was refused: {e})"
            return command
        self.method = f"cgroup memory.max={self.gb:g}G"
        if self.moved:
            self.method += f" ({self.moved} processes of the parent group moved to a leaf group first)"
        # The shell moves itself into the group, then becomes the command (same process id).
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroup), *command]

    def columns(self, sampled: dict[str, float]) -> dict[str, Any]:
        """The row's columns: the limit, how it was set (or why not), the group's peak and its OOM kills."""
        if self.cgroup is not None:
            last = _cgroup_figures(self.cgroup, since_start=not self.on_own_group)
            if self.on_own_group:  # the sampled maximum of the current use, and the OOM kills counted during the run
                last["cgroup_peak_gb"] = max(last.get("cgroup_peak_gb", 0.0), sampled.get("cgroup_peak_gb", 0.0))
                last["oom_kills"] = last.get("oom_kills", 0) - self.oom_before
            sampled = {**sampled, **last}
            for path, value in self.restore.items():
                path.write_text(value)
            if not self.on_own_group:
                with contextlib.suppress(OSError):
                    self.cgroup.rmdir()
        return {
            "host_limit_gb": self.gb if self.method else None,
            "host_limit": self.method or self.problem,
            "cgroup_peak_gb": sampled.get("cgroup_peak_gb"),
            "oom_kills": sampled.get("oom_kills"),
        }


def _move_processes(group: Path, leaf: Path) -> int:
    """Move every process of cgroup ``group`` that can be moved into its child ``leaf``; returns how many moved."""
    leaf.mkdir(exist_ok=True)
    moved = 0
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            (leaf / "cgroup.procs").write_text(pid)
            moved += 1
        except OSError:  # gone meanwhile, or a process this one may not move
            continue
    return moved


def _cgroup_figures(folder: Path, since_start: bool = True) -> dict[str, float]:
    """``memory.peak`` (or the current use where the kernel has no peak) and ``oom_kill`` of a cgroup.

    ``since_start=False`` (a group that lived before the run: its ``memory.peak`` holds older use) reads only the
    current use; the caller keeps the maximum of its samples.
    """
    figures: dict[str, float] = {}
    for name in ("memory.peak", "memory.current") if since_start else ("memory.current",):
        with contextlib.suppress(OSError, ValueError):
            figures["cgroup_peak_gb"] = round(int((folder / name).read_text().split()[0]) / GB, 2)
            break
    with contextlib.suppress(OSError, ValueError):
        events = dict(line.split() for line in (folder / "memory.events").read_text().splitlines())
        figures["oom_kills"] = int(events.get("oom_kill", 0))
    return figures


def _run_sampling_memory(
    command: list[str], timeout: float, limit: HostLimit | None = None
) -> tuple[subprocess.CompletedProcess, dict[str, float]]:
    """Run ``command``, sampling its /proc status: peak RSS split into anonymous memory and file-backed pages.

    File-backed pages are the mmapped checkpoint (the stock loader reads safetensors through mmap): the kernel drops
    them under memory pressure and rereads them from disk, so on a smaller machine only the anonymous part must fit.
    Under a host limit, the limited cgroup's peak (the whole process tree, page cache included) is sampled too.
    """
    if limit is not None:
        command = limit.wrap(command)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    group: Path | None = None
    peaks: dict[str, float] = {}
    cgroup: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    out_chunks: list[str] = []
    import threading  # noqa: PLC0415

    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    err_chunks: list[str] = []
    err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    err_reader.start()
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            reader.join(timeout=10)
            err_reader.join(timeout=10)
            raise subprocess.TimeoutExpired(command, timeout, output="".join(out_chunks), stderr="".join(err_chunks))
        now = _status_gb(proc.pid)
        if not now:
            break
        if "NonReclaimable" in now:
            # With its children (the DataLoader's workers): what a machine must hold for the run. Shared pages are
            # counted in each process, so this is an upper bound.
            children = (_status_gb(c).get("NonReclaimable", 0.0) for c in _children(proc.pid))
            now["TreeNonReclaimable"] = now["NonReclaimable"] + sum(children)
        for key, value in now.items():
            peaks[key] = max(peaks.get(key, 0.0), value)
        if limit is not None and limit.method is not None:
            group = group or hostmem.cgroup_dir(proc.pid)
            figures = _cgroup_figures(group, since_start=not limit.on_own_group) if group is not None else {}
            for key, value in figures.items():
                cgroup[key] = max(cgroup.get(key, 0.0), value)
        time.sleep(0.2)
    proc.wait()
    reader.join()
    err_reader.join()
    return subprocess.CompletedProcess(command, proc.returncode, "".join(out_chunks), "".join(err_chunks)), {
        **{f"peak_{k}": round(v, 2) for k, v in peaks.items()},
        **cgroup,
    }


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from ``/proc/<pid>/task/<tid>/children``)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                pending += kids
    return found


def _status_gb(pid: int) -> dict[str, float]:
    """`quantization.memory.process_memory` of a process, in GB; empty once the process is gone."""
    return {key: value / GB for key, value in hostmem.process_memory(pid).items() if key != "VmHWM"}


def run_config(demo: Path, name: str, steps: int, out: Path) -> dict[str, Any]:
    """The seed's recipe on the full-scale checkpoint, with run ``name``'s acceleration and load settings."""
    base, _, streamed, cached = parse_run(name)
    quantization, settings, _ = RUNS[base]
    config = yaml.safe_load(RECIPE.read_text())
    config["model"].update(model_path=str(demo / "tiny_ltx2.safetensors"), text_encoder_path=str(demo / "text_encoder"))
    config["data"] = {"preprocessed_data_root": str(demo / "data"), "num_dataloader_workers": 2}
    config["optimization"]["steps"] = steps
    config["acceleration"] = {"mixed_precision_mode": "bf16", "quantization": quantization}
    config["acceleration"].update(
        streamed_load=streamed, quantized_cache=str(demo.parent / CACHE_DIR) if cached else False
    )
    config["acceleration"].update({k: v for k, v in settings.items() if k != "block_swap"})
    if "block_swap" in settings:
        config["block_swap"] = settings["block_swap"]
    config["validation"] = {"interval": None, "generate_video": False, "generate_audio": False}
    config["checkpoints"] = {"interval": steps, "keep_last_n": -1}
    config["output_dir"] = str(out)
    config["overwrite_output_dir"] = True  # a rerun into the same --root replaces that run's checkpoints
    return config


def child(args: argparse.Namespace) -> None:  # noqa: PLR0915 - one linear run
    """One run in this process: cap, build the stock trainer, train, report one RESULT line."""
    import torch  # noqa: PLC0415

    base, cache, streamed, _ = parse_run(args.child)
    quantization, settings, cap = RUNS[base]
    if cap is not None:
        torch.cuda.set_per_process_memory_fraction(cap * GB / torch.cuda.get_device_properties(0).total_memory)
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from ltx_audio_reference import bridge, hookimpl  # noqa: PLC0415
    from ltx_audio_reference.plugins import get_plugin_manager  # noqa: PLC0415

    profile_at = args.warmup + args.steps - 1  # the window between the last two hook calls: one whole step

    class Probe:
        """Times every training step, resets the peak after the warm-up, and profiles the kernels of one step."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[str] = []
            self.engine: Any = None
            self.compiled: Any = None
            self.profiler: Any = None
            self.kernel_ms: float | None = None
            self.kernels: int | None = None
            self.warmup_memory: dict[str, float] = {}

        @hookimpl(trylast=True)
        def configure_model(self, context: Any) -> None:  # noqa: ANN401
            self.engine = context.notes.get("block_swap")
            self.compiled = context.notes.get("compile_blocks")
            if args.deterministic:  # before the blocks' first (compiling) call
                from ltx_audio_reference.testing.determinism import pin_math_attention  # noqa: PLC0415

                pin_math_attention(context.model)

        @hookimpl
        def on_train_step(self, context: Any) -> None:  # noqa: ANN401
            torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            if len(self.times) == 1:
                timeline.mark("first step done")
            self.losses.append(" ".join(float.hex(v) for v in context.loss.float().tolist()))
            if len(self.times) == args.warmup:  # the warm-up's peaks (compiling, recording graphs), then steady ones
                self.warmup_memory = {
                    "warmup_peak_gb": torch.cuda.max_memory_allocated() / GB,
                    "warmup_reserved_gb": torch.cuda.max_memory_reserved() / GB,
                }
                torch.cuda.reset_peak_memory_stats()
            if len(self.times) == profile_at:
                self.profiler = profile(activities=[ProfilerActivity.CUDA])
                self.profiler.__enter__()
            elif len(self.times) == profile_at + 1 and self.profiler is not None:
                self.profiler.__exit__(None, None, None)
                kernels = [
                    e
                    for e in self.profiler.events()
                    if e.device_type == torch.autograd.DeviceType.CUDA
                    and not e.name.lower().startswith(("memcpy", "memset"))
                ]
                self.kernel_ms = sum(e.device_time_total for e in kernels) / 1e3
                self.kernels = len(kernels)

    probe = Probe()
    timeline = _Timeline()
    logging.getLogger().addHandler(timeline)
    pm = get_plugin_manager()
    pm.register(probe, name="full_scale_probe")
    bridge.install(pm)
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    config = run_config(Path(args.root) / "demo", args.child, args.warmup + args.steps, Path(args.root) / args.child)
    torch.cuda.reset_peak_memory_stats()
    kernels = contextlib.ExitStack()
    if args.deterministic:
        from ltx_audio_reference.testing.determinism import deterministic_kernels  # noqa: PLC0415

        kernels.enter_context(deterministic_kernels())
    timeline.mark("imports done")
    init_start = time.perf_counter()
    trainer = LtxvTrainer(LtxTrainerConfig(**config))
    torch.cuda.synchronize()
    init_s = time.perf_counter() - init_start
    timeline.mark("trainer built")

    from ltx_audio_reference.quantization.model import quantization_report  # noqa: PLC0415

    report = quantization_report(trainer._transformer)
    startup_peak = torch.cuda.max_memory_allocated() / GB
    startup_reserved = torch.cuda.max_memory_reserved() / GB
    torch.cuda.reset_peak_memory_stats()
    timeline.mark("train() called")
    with kernels, _CompileWatch() as watch:
        saved, _ = trainer.train(disable_progress_bars=True)
    loads_per_step = None
    if probe.engine is not None:
        # Bytes the engine copied per step, and what that costs at this host's pinned link speed: the bound on a
        # step whose swapped blocks cannot hide their copies behind compute.
        loads_per_step = probe.engine.stats.bytes / max(len(probe.times), 1) / GB
    torch.cuda.synchronize()
    durations = [b - a for a, b in zip(probe.times, probe.times[1:], strict=False)]
    # Timed: after the warm-up, and not the profiled step.
    timed = [d for i, d in enumerate(durations) if args.warmup <= i < profile_at - 1]
    engine = probe.engine
    median = statistics.median(timed) if timed else None
    from ltx_audio_reference.blockswap.compile import graph_stats  # noqa: PLC0415

    graphs = graph_stats() if settings.get("cuda_graphs") else {"recorded": 0, "rerecords": 0, "skips": 0}
    h2d = _pinned_h2d_gb_per_s()
    result = {
        "name": args.child,
        "blocks": BLOCKS,
        "quantization": "int8" if quantization else "bf16",
        "backend": quantization or "bf16",
        "graphs": bool(settings.get("cuda_graphs")),
        "deterministic": args.deterministic,
        "gpu_busy_frac": probe.kernel_ms / 1e3 / median if probe.kernel_ms is not None and median else None,
        "gpu_busy_ms": probe.kernel_ms,
        "kernels_per_step": probe.kernels,
        "rerecords": graphs["rerecords"],
        "graphs_recorded": graphs["recorded"],
        "graph_skips": graphs["skips"],
        "warmup_s": sum(durations[: args.warmup]) - args.warmup * median if median else None,
        "cache": cache if quantization else "none",
        "load": "streamed" if streamed and quantization else "stock",
        "loaded_from": report.source if report is not None else None,
        "load_s": report.seconds if report is not None else None,
        "trainer_init_s": init_s,
        "swapped": len(engine.blocks) if engine is not None else 0,
        "swap_setting": settings.get("block_swap", settings.get("block_swap_blocks")),
        "cap_gb": cap,
        "compiled": bool(settings.get("compile_blocks")),
        "compile_first_call_s": getattr(probe.compiled, "first_call_s", None),
        "compile_caches": watch.last,
        "startup_peak_gb": startup_peak,
        "startup_reserved_gb": startup_reserved,
        "steady_peak_gb": torch.cuda.max_memory_allocated() / GB,
        "steady_reserved_gb": torch.cuda.max_memory_reserved() / GB,
        **probe.warmup_memory,
        **_graph_pool_gb(),
        "host_rss_gb": _rss_gb(),
        "pinned_gb": engine.host_bytes / GB if engine is not None and engine.pin_memory else 0.0,
        "swap_gb_per_step": loads_per_step,
        "h2d_gb_per_s": h2d,
        "link_s_per_step": loads_per_step / h2d if loads_per_step else None,
        "s_per_step": median,
        "steps_timed": len(timed),
        "time_to_first_step_s": probe.times[0] - START if probe.times else None,
        "startup_timeline": timeline.events,
        "export": str(saved),
        "export_sha256": _tensors_digest(Path(saved)) if saved else None,
        "losses": probe.losses,
    }
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


class _CompileWatch:
    """Logs torch's compile-cache counters whenever they change (every 5 s at most), from a thread.

    Inductor's FX-graph cache and AOT autograd's cache either serve a compile from disk (hit) or not (miss, bypass).
    A warm start that is slow shows here which of them missed, and a run that times out leaves the counters in its
    last log lines. :attr:`last` is the final count (the row's ``compile_caches``).
    """

    def __init__(self, every_s: float = 5.0) -> None:
        import threading  # noqa: PLC0415

        self.every_s = every_s
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="compile-watch")

    @staticmethod
    def counts() -> dict[str, int]:
        import torch  # noqa: PLC0415

        counters = torch._dynamo.utils.counters
        found: dict[str, int] = {}
        for group, prefix in (("inductor", "fxgraph_cache_"), ("aot_autograd", "autograd_cache_")):
            with contextlib.suppress(RuntimeError):  # the compiling thread added a key meanwhile: next time
                found.update({k: int(v) for k, v in list(counters[group].items()) if k.startswith(prefix)})
        with contextlib.suppress(RuntimeError):
            found["unique_graphs"] = int(counters["stats"]["unique_graphs"])
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._log()

    def _log(self) -> None:
        now = self.counts()
        if now != self.last:
            self.last = now
            logger.info("compile caches: %s", ", ".join(f"{k} {v}" for k, v in sorted(now.items())) or "none yet")

    def __enter__(self) -> _CompileWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._log()


class _Timeline(logging.Handler):
    """Seconds since the process started at every log record (and mark) up to the end of the first step: where the
    time to the first step goes (imports, load, trainer set-up, block swap, compile, the first step)."""

    LIMIT = 120

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.events: list[tuple[float, str, str]] = []
        self.done = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.done and len(self.events) < self.LIMIT:
            self.events.append((round(time.perf_counter() - START, 2), record.name, record.getMessage()[:160]))

    def mark(self, what: str) -> None:
        """A point of the run's own, in the same list; the first step's end closes the list."""
        self.events.append((round(time.perf_counter() - START, 2), "full_scale", what))
        self.done = self.done or what == "first step done"


def _tensors_digest(path: Path) -> str:
    """SHA-256 of a safetensors file's tensors (names, dtypes, bytes), whatever its metadata."""
    import hashlib  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    digest = hashlib.sha256()
    for key, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{key}:{tensor.dtype}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: The plan line block swap logs before the model is placed (``SwapPlan.describe`` behind "Block swap:" or "Block swap
#: auto:").
_PLAN_LINE = re.compile(r"Block swap(?: auto)?: (\d+) of (\d+) blocks swapped; estimated peak ([\d.]+) GB")


def plan_columns(log: str) -> dict[str, Any]:
    """The swap plan a run logged: ``planned_swapped`` and ``planned_peak_gb`` (block swap's own estimate), so that a
    row shows what ``auto`` chose and how far its estimate was from the measured peak, also for a run that failed."""
    found = _PLAN_LINE.findall(log)
    if not found:
        return {}
    swapped, _, peak = found[-1]
    return {"planned_swapped": int(swapped), "planned_peak_gb": float(peak)}


def same_training(rows: list[dict[str, Any]]) -> None:
    """Mark each row with the other runs of its base run (any load, cache) whose per-sample losses and exported LoRA
    are identical to its own, bit for bit (``same_losses_as``, ``same_export_as``)."""

    def base(name: str) -> str | None:
        try:
            return parse_run(name)[0]
        except KeyError:  # a row of a run this version no longer has
            return None

    for row in rows:
        if not row.get("losses") or base(row["name"]) is None:
            continue
        others = [r for r in rows if r is not row and r.get("losses") and base(r["name"]) == base(row["name"])]
        row["same_losses_as"] = sorted(r["name"] for r in others if r["losses"] == row["losses"])
        row["same_export_as"] = sorted(
            r["name"] for r in others if r.get("export_sha256") and r["export_sha256"] == row.get("export_sha256")
        )


def fusion_check(model_path: Path, loras: list[Path], device: str = "cuda") -> dict[str, dict[str, Any]]:
    """ltx-core's own LoRA fusion of each export into the checkpoint's weights (on the GPU, uncapped)."""
    import torch  # noqa: PLC0415
    from safetensors import safe_open  # noqa: PLC0415

    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP  # noqa: PLC0415
    from ltx_core.loader.fuse_loras import apply_loras  # noqa: PLC0415
    from ltx_core.loader.helpers import load_state_dict  # noqa: PLC0415
    from ltx_core.loader.primitives import LoraStateDictWithStrength  # noqa: PLC0415
    from ltx_core.loader.registry import DummyRegistry  # noqa: PLC0415
    from ltx_core.loader.sft_loader import SafetensorsModelStateDictLoader  # noqa: PLC0415
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP  # noqa: PLC0415

    device = torch.device(device)
    loader, registry = SafetensorsModelStateDictLoader(), DummyRegistry()
    base = load_state_dict([str(model_path)], loader, registry, device, LTXV_MODEL_COMFY_RENAMING_MAP)
    results = {}
    for lora in loras:
        with safe_open(str(lora), framework="pt") as f:
            keys = list(f.keys())
            dtypes = {str(f.get_slice(k).get_dtype()) for k in keys}
            finite = all(bool(torch.isfinite(f.get_tensor(k)).all()) for k in keys)
        lora_sd = load_state_dict([str(lora)], loader, registry, device, LTXV_LORA_COMFY_RENAMING_MAP)
        fused = apply_loras(base, [LoraStateDictWithStrength(lora_sd, 1.0)])
        targets = {k.removesuffix(".lora_A.weight") + ".weight" for k in lora_sd.sd if k.endswith(".lora_A.weight")}
        changed = {k for k, v in fused.sd.items() if v is not base.sd[k] and not torch.equal(v, base.sd[k])}
        worst = 0.0
        for key in targets & set(base.sd):
            prefix = key.removesuffix(".weight")
            delta = lora_sd.sd[f"{prefix}.lora_B.weight"].float() @ lora_sd.sd[f"{prefix}.lora_A.weight"].float()
            expected = base.sd[key].float() + delta
            # ltx-core rounds B @ A and the sum to bf16 (8 significant bits): one unit of rounding of each operand
            ulp = (base.sd[key].float().abs() + delta.abs()).clamp(min=1e-30) * 2**-8
            worst = max(worst, float(((fused.sd[key].float() - expected).abs() / ulp).max()))
        results[str(lora)] = {
            "lora_tensors": len(keys),
            "dtypes": sorted(dtypes),
            "finite": finite,
            "targets_in_model": len(targets & set(base.sd)),
            "changed_weights": len(changed),
            "only_lora_targets_changed": changed <= targets,
            "every_target_changed": targets <= changed,
            "worst_error_in_bf16_ulps": worst,
            "fused_exactly": changed == targets and targets <= set(base.sd) and worst <= 2.0,
        }
        del fused, lora_sd
        torch.cuda.empty_cache()
    return results


def main() -> None:  # noqa: PLR0915 - one linear driver
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/full_scale"))
    parser.add_argument("--runs", nargs="+", default=["int8_swap24", "int8_resident", "int8_auto12", "bf16_auto22"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--merge", type=Path, default=None, help="a previous result file whose rows are kept")
    parser.add_argument("--no-fusion", action="store_true", help="skip ltx-core's fusion check of the exports")
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=420,
        help="seconds one run may take (compiled runs with empty inductor caches took over 160 s on an H100)",
    )
    parser.add_argument(
        "--host-limit-gb",
        type=float,
        default=None,
        help="run each process under this hard host-memory limit (systemd-run MemoryMax, else a cgroup v2 memory.max)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels and SDPA's math attention (slower), so that runs of one configuration that load "
        "the same weights (stock, streamed, cache written or read) train bit for bit alike",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child:
        child(args)
        return
    if args.deterministic:  # the children inherit it: set before CUDA starts in them
        from ltx_audio_reference.testing.determinism import CUBLAS_WORKSPACE  # noqa: PLC0415

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    demo = args.root / "demo"
    if args.write_only:
        sys.stdout.write("RESULT " + json.dumps(write_checkpoint(demo, args.warmup + args.steps)) + "\n")
        return

    def spawn(*extra: str, limit: HostLimit | None = None) -> dict[str, Any] | None:
        command = [sys.executable, __file__, "--root", str(args.root), "--warmup", str(args.warmup)]
        command += ["--steps", str(args.steps), *(["--deterministic"] if args.deterministic else []), *extra]
        try:
            proc, memory = _run_sampling_memory(command, args.run_timeout, limit)
        except subprocess.TimeoutExpired as e:
            log = str(e.stderr or "")
            columns = limit.columns({}) if limit is not None else {}  # puts an own-group limit back
            columns.update(plan_columns(log))
            last = [line for line in log.splitlines() if line.strip()][-4:]
            logger.error("%s timed out after %s s; its last log lines:\n%s", " ".join(extra), args.run_timeout, last)
            return {
                "error": f"timed out after {args.run_timeout} s; last log lines: {' | '.join(last)[-600:]}",
                **columns,
            }
        columns = limit.columns(memory) if limit is not None else {}
        columns.update(plan_columns(proc.stderr))
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stdout + proc.stderr)[-3000:]
            logger.error("%s failed (rc %d):\n%s", " ".join(extra), proc.returncode, tail)
            error = tail.strip().splitlines()[-1] if tail.strip() else f"rc {proc.returncode}"
            if columns.get("oom_kills") or (limit is not None and proc.returncode in (-9, 137)):
                error = f"killed by the host-memory limit (oom_kill {columns.get('oom_kills')}): {error}"
            return {"error": error, **columns}
        row = {**json.loads(lines[-1].removeprefix("RESULT ")), "host_memory_gb": memory, **columns}
        for column, key in HOST_COLUMNS.items():
            row[column] = memory.get(f"peak_{key}")
        return row

    meta: dict[str, Any] = {}
    if not (demo / "tiny_ltx2.safetensors").is_file():
        meta["checkpoint"] = spawn("--write-only")
        logger.info("checkpoint: %s", meta["checkpoint"])
    rows = json.loads(args.merge.read_text())["rows"] if args.merge and args.merge.is_file() else []
    for name in args.runs:
        if parse_run(name)[1] == "cold":  # a cold run starts from no cache
            shutil.rmtree(args.root / CACHE_DIR, ignore_errors=True)
        limit = HostLimit(args.host_limit_gb, name) if args.host_limit_gb else None
        row = spawn("--child", name, limit=limit) or {}
        row.setdefault("name", name)
        logger.info("%s: %s", name, json.dumps(row))
        rows = [r for r in rows if r.get("name") != name] + [row]
        if args.out:  # after every run: a later run that times out loses nothing measured before it
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    same_training(rows)
    exports = [Path(r["export"]) for r in rows if r.get("export") and Path(r["export"]).is_file()]
    if exports and not args.no_fusion:
        fusion = fusion_check(demo / "tiny_ltx2.safetensors", exports)
        for r in rows:
            check = fusion.get(r.get("export", ""))
            if check:
                r.update(lora_tensors=check["lora_tensors"], fused_exactly=check["fused_exactly"], fusion=check)
    import torch  # noqa: PLC0415

    meta.update(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        python=platform.python_version(),
        recipe=str(RECIPE.relative_to(REPO)),
        warmup=args.warmup,
        steps=args.steps,
        blocks=BLOCKS,
    )
    resident = next((r for r in rows if r.get("name") == "int8_resident" and r.get("s_per_step")), None)
    header = f"{'run':32} {'swap':>4} {'cap':>4} {'startup':>7} {'steady':>7} {'RSS':>6} {'nonrcl':>6} {'pinned':>6} "
    header += f"{'cache':>5} {'s/step':>7} "
    lines = [header + f"{'x res':>6} {'busy%':>5} {'kernels':>7} {'rerec':>5} {'first':>6} {'LoRA':>5} fused"]
    for r in rows:
        ratio = r["s_per_step"] / resident["s_per_step"] if resident and r.get("s_per_step") else None
        r["step_vs_int8_resident"] = ratio

        def f(key: str, spec: str, row: dict = r) -> str:
            value = row.get(key)
            return "-" if value is None else format(value, spec)

        lines.append(
            f"{r['name']:32} {f('swapped', '4d')} {f('cap_gb', '4.0f')} {f('startup_peak_gb', '7.2f')} "
            f"{f('steady_peak_gb', '7.2f')} {f('host_rss_gb', '6.1f')} {f('host_nonreclaimable_gb', '6.1f')} "
            f"{f('pinned_gb', '6.1f')} {r.get('cache', '-'):>5} "
            f"{f('s_per_step', '7.3f')} {'-' if ratio is None else format(ratio, '6.2f')} "
            f"{'-' if r.get('gpu_busy_frac') is None else format(100 * r['gpu_busy_frac'], '5.0f')} "
            f"{f('kernels_per_step', '7d')} {f('rerecords', '5d')} "
            f"{f('time_to_first_step_s', '6.0f')} {f('lora_tensors', '5d')} {r.get('fused_exactly', '-')} "
            f"{r.get('error', '')}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
