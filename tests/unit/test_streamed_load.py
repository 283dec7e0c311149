"""Tier 1: the streamed load and the quantized-weight cache on tiny real checkpoints (ltx-core's loader, real files).

The streamed build equals the stock build (ltx-core's ``SingleGPUModelBuilder`` as ltx-trainer's ``load_transformer``
calls it, then ``quantize_model``) bit for bit, from the checkpoint and from the cache; the host never holds a bf16
copy of the model; the cache key, its atomic write, and the refusal of stale, foreign, incomplete or damaged entries
with the reason logged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from streamed_load_probe import stock_build
from torch import nn

from ltx_audio_reference.blockswap.config import BlockSwapConfig, spread_blocks
from ltx_audio_reference.quantization import Int8Backend, get_backend, memory, quantize_model, tensorfile
from ltx_audio_reference.quantization import cache as qcache
from ltx_audio_reference.quantization.stream import LoadPlan, Part, load_transformer_streamed, meta_transformer
from ltx_audio_reference.testing.tiny_model import write_tiny_checkpoint

HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
BACKENDS = [
    "int8",
    "int8-dynamic",
    pytest.param("int8-quanto", marks=pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto")),
]
PROBE = Path(__file__).resolve().parents[1] / "streamed_load_probe.py"
NUM_LAYERS = 3
CPU = LoadPlan(torch.device("cpu"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-block tiny LTX-2 checkpoint stored in float32 (every tensor is cast on load, as for an fp32 file)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", num_layers=NUM_LAYERS)


@pytest.fixture
def own_checkpoint(checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the checkpoint this test may touch."""
    return Path(shutil.copy2(checkpoint, tmp_path / "tiny.safetensors"))


def _signature(model: nn.Module) -> list[tuple]:
    params = [(n, type(p), type(p.data), p.dtype, p.device, p.requires_grad) for n, p in model.named_parameters()]
    return [(n, type(m)) for n, m in model.named_modules()] + params


def assert_same_model(expected: nn.Module, actual: nn.Module) -> None:
    """The same module types, parameter types and tensors, bit for bit (quanto weights through their inner tensors)."""
    assert _signature(actual) == _signature(expected)
    mine, theirs = actual.state_dict(), expected.state_dict()
    assert list(mine) == list(theirs)
    for key, tensor in theirs.items():
        assert mine[key].dtype == tensor.dtype, key
        assert torch.equal(mine[key], tensor), key
    assert not [n for n, t in [*actual.named_parameters(), *actual.named_buffers()] if t.is_meta]


def _load(checkpoint: Path, backend: str, root: Path | None = None, backend_obj: object = None) -> nn.Module:
    return load_transformer_streamed(
        checkpoint, backend_obj or get_backend(backend), CPU, cache_root=root, progress=False
    )


# --------------------------------------------------------------------------------------------------------------------
# The streamed build equals the stock build
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_streamed_build_equals_the_stock_build_from_the_checkpoint_and_from_the_cache(
    checkpoint: Path, tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    stock = stock_build(checkpoint, backend)
    assert sum(type(m).__name__ in ("QLinear", "Int8Linear") for m in stock.modules()) > 50
    with caplog.at_level(logging.INFO):
        streamed = _load(checkpoint, backend)
        cold = _load(checkpoint, backend, tmp_path)
        warm = _load(checkpoint, backend, tmp_path)
        for model in (streamed, cold, warm):
            assert_same_model(stock, model)
            # What the trainer does next leaves it as it is: the cast, and the routed quantization pass.
            before = {k: v.clone() for k, v in model.state_dict().items()}
            assert quantize_model(model.to(dtype=torch.bfloat16), backend, device="cpu", progress=False) is model
            assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    text = caplog.text
    assert "not used: there is none yet; quantizing from the checkpoint and writing it" in text
    assert f"Quantized-weight cache hit: loaded {backend}" in text
    assert text.count("Quantized-weight cache hit") == 1
    assert f"quantized with {backend} while it loaded; nothing left to quantize" in text


def test_each_part_lives_in_one_host_buffer_of_its_own(checkpoint: Path, tmp_path: Path) -> None:
    for model in (_load(checkpoint, "int8"), _load(checkpoint, "int8", tmp_path), _load(checkpoint, "int8", tmp_path)):
        for block in model.transformer_blocks:
            storages = {t.untyped_storage().data_ptr() for t in block.state_dict().values()}
            assert len(storages) == 1


def test_a_checkpoint_missing_a_tensor_is_refused_by_name(checkpoint: Path, tmp_path: Path) -> None:
    header = tensorfile.read_header(checkpoint)
    dropped = "model.diffusion_model.transformer_blocks.1.attn1.to_q.weight"
    with safe_open(str(checkpoint), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in header.tensors if k != dropped}
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=header.metadata)
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\).*transformer_blocks\.1\.attn1\.to_q\.weight"):
        _load(broken, "int8")


def test_a_backend_that_cannot_save_its_layers_streams_without_a_cache(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Unsaved(Int8Backend):
        """An int8 backend that does not save its layers (as a third-party backend may not)."""

        @property
        def caches(self) -> bool:
            return False

    backend = Unsaved(dynamic=False)
    with caplog.at_level(logging.INFO):
        model = _load(checkpoint, "int8", tmp_path, backend_obj=backend)
    assert "cannot save its quantized layers: no quantized-weight cache" in caplog.text
    assert_same_model(stock_build(checkpoint, "int8"), model)
    assert not any(tmp_path.iterdir())


def test_parts_go_where_they_train() -> None:
    plan = LoadPlan(torch.device("cuda", 1), frozenset({1, 3}))
    assert plan.destination(Part("transformer_blocks.1", 1, True)) == torch.device("cpu")
    assert plan.destination(Part("transformer_blocks.2", 2, True)) == torch.device("cuda", 1)
    assert plan.destination(Part("adaln_single", None, True)) == torch.device("cuda", 1)
    assert (
        LoadPlan(torch.device("cpu"), frozenset({1})).destination(Part("transformer_blocks.2", 2, True)).type == "cpu"
    )


# --------------------------------------------------------------------------------------------------------------------
# No bf16 copy of the model in host memory
# --------------------------------------------------------------------------------------------------------------------


def _probe(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    proc = subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_streamed_load_never_holds_a_bf16_copy_of_the_model(tmp_path: Path) -> None:
    # 16 blocks at 4 x 64 heads: about 52 MB in bf16, each block a sixteenth of it.
    overrides = {
        "num_attention_heads": 4,
        "attention_head_dim": 64,
        "audio_num_attention_heads": 4,
        "audio_attention_head_dim": 32,
        "cross_attention_dim": 256,
        "audio_cross_attention_dim": 128,
    }
    path = write_tiny_checkpoint(tmp_path / "wide.safetensors", 16, overrides=overrides, dtype=torch.bfloat16)
    sizes = memory.checkpoint_sizes(path, get_backend("int8"))
    bf16 = sum(s.loaded_bytes for s in sizes)
    largest = max(s.source_bytes for s in sizes)
    # Freed buffers go back to the kernel at once, so the resident set follows the live bytes.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    stock = _probe("memory", "stock", str(path), "int8", env=env)
    streamed = _probe("memory", "streamed", str(path), "int8", env=env)
    if not (stock["peak_reset"] and streamed["peak_reset"]):
        pytest.skip("this kernel refuses to reset the peak resident set (/proc/self/clear_refs)")
    assert streamed["quantized_bytes"] == stock["quantized_bytes"] == sum(s.trained_bytes for s in sizes)
    assert stock["peak_bytes"] >= bf16, stock  # the meter sees the stock load's bf16 model
    # The streamed load never holds as many bytes as one bf16 copy of the model, the quantized model included ...
    assert streamed["peak_bytes"] < bf16, (streamed, bf16)
    # ... and beyond what it keeps, only a few parts are in flight at a time.
    assert streamed["peak_bytes"] - streamed["after_bytes"] <= 3 * largest + 4 * 2**20, (streamed, largest)


# --------------------------------------------------------------------------------------------------------------------
# The cache key, the atomic write, refusing stale, foreign, incomplete and damaged entries
# --------------------------------------------------------------------------------------------------------------------


def _key(checkpoint: Path, backend: object = None, **changes: object) -> dict:
    options = {"dtype": torch.bfloat16, "quantized_on": "cpu", "skip_root_modules": {"proj_out"}, **changes}
    return qcache.cache_key(checkpoint, backend or get_backend("int8"), **options)


class _NewerInt8(Int8Backend):
    def version(self) -> str:
        return super().version() + "+next"


def test_the_cache_key_names_the_checkpoint_the_backend_its_version_and_what_stays_unquantized(
    own_checkpoint: Path,
) -> None:
    key = _key(own_checkpoint)
    stat = own_checkpoint.stat()
    assert key["checkpoint"] == {
        "path": str(own_checkpoint.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "header_sha256": tensorfile.read_header(own_checkpoint).digest,
    }
    assert (key["backend"], key["backend_version"]) == ("int8", "ltx-audio-reference-int8/1")
    assert key["unquantized"]["skip_root_modules"] == ["proj_out"]
    assert "*norm*" in key["unquantized"]["exclude_patterns"]
    assert (key["dtype"], key["quantized_on"], key["format"]) == ("bfloat16", "cpu", qcache.CACHE_FORMAT)
    assert qcache.key_digest(key) == qcache.key_digest(json.loads(json.dumps(key)))

    changed = {
        "backend_version": _key(own_checkpoint, _NewerInt8(dynamic=False)),
        "backend": _key(own_checkpoint, get_backend("int8-dynamic")),
        "unquantized.skip_root_modules": _key(own_checkpoint, skip_root_modules={"proj_out", "patchify_proj"}),
        "dtype": _key(own_checkpoint, dtype=torch.float16),
        "quantized_on": _key(own_checkpoint, quantized_on="cuda"),
    }
    os.utime(own_checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed["checkpoint.mtime_ns"] = _key(own_checkpoint)
    header = tensorfile.read_header(own_checkpoint)
    with safe_open(str(own_checkpoint), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in header.tensors}
    save_file(tensors, str(own_checkpoint), metadata={**header.metadata, "note": "edited"})
    changed["checkpoint.header_sha256"] = _key(own_checkpoint)
    for field, other in changed.items():
        assert qcache.key_digest(other) != qcache.key_digest(key), field
        assert any(line.startswith(f"{field}:") for line in qcache.key_differences(key, other)), field


def _entry(root: Path, checkpoint: Path, backend: str = "int8") -> Path:
    return qcache.entry_folder(root, checkpoint, backend)


def test_a_write_killed_mid_way_is_never_used_and_is_rebuilt(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, marker = tmp_path / "cache", tmp_path / "stalled"
    proc = subprocess.Popen(
        [sys.executable, str(PROBE), "stall", str(checkpoint), "int8", str(root), str(marker), "part-002-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    folder = _entry(root, checkpoint)
    left = sorted(p.name for p in folder.iterdir())
    assert left[:2] == [
        f".part-002-transformer_blocks.2.{proc.pid}.tmp.safetensors",
        "part-000-transformer_blocks.0.safetensors",
    ]
    assert qcache.MANIFEST not in left

    with caplog.at_level(logging.INFO):
        rebuilt = _load(checkpoint, "int8", root)
        again = _load(checkpoint, "int8", root)
    assert "not used: it is incomplete (no manifest: an earlier write was interrupted)" in caplog.text
    assert "Quantized-weight cache hit" in caplog.text
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # the killed write's temporary file is gone
    expected = stock_build(checkpoint, "int8")
    assert_same_model(expected, rebuilt)
    assert_same_model(expected, again)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("touch the checkpoint", r"it is stale: checkpoint\.mtime_ns: \d+ -> \d+;"),
        ("a new backend version", r"it is stale: backend_version: 'ltx-audio-reference-int8/1' -> '.*\+next'"),
        ("another checkpoint's entry", r"it is foreign: .*checkpoint\.path: '.*/other/tiny\.safetensors' -> "),
        ("a truncated part file", r"part file part-001-\S+ has 100 bytes, not \d+"),
        ("a part file from another write", r"part file part-001-\S+ belongs to another cache write"),
        ("an unreadable manifest", r"its manifest cannot be read"),
    ],
)
def test_a_stale_foreign_or_damaged_entry_is_rebuilt_with_the_reason_logged(
    own_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str, reason: str
) -> None:
    root = tmp_path / "cache"
    backend = get_backend("int8")
    _load(own_checkpoint, "int8", root)
    folder = _entry(root, own_checkpoint)
    parts = sorted(folder.glob("part-*.safetensors"))
    if change == "touch the checkpoint":
        stat = own_checkpoint.stat()
        os.utime(own_checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    elif change == "a new backend version":
        backend = _NewerInt8(dynamic=False)
    elif change == "another checkpoint's entry":
        other = write_tiny_checkpoint(tmp_path / "other" / "tiny.safetensors", NUM_LAYERS, seed=1)
        _load(other, "int8", root)
        shutil.rmtree(folder)
        shutil.copytree(_entry(root, other), folder)
    elif change == "a truncated part file":
        with open(parts[1], "r+b") as f:
            f.truncate(100)
    elif change == "a part file from another write":
        second = tmp_path / "second"
        _load(own_checkpoint, "int8-dynamic", second)  # same parts, another key
        shutil.copy2(sorted(_entry(second, own_checkpoint, "int8-dynamic").glob("part-001-*"))[0], parts[1])
        manifest = json.loads((folder / qcache.MANIFEST).read_text())
        manifest["parts"][1]["bytes"] = parts[1].stat().st_size  # a manifest that agrees on sizes: caught on read
        (folder / qcache.MANIFEST).write_text(json.dumps(manifest))
    elif change == "an unreadable manifest":
        (folder / qcache.MANIFEST).write_text("{not json")

    caplog.clear()
    with caplog.at_level(logging.INFO):
        rebuilt = _load(own_checkpoint, "int8", root, backend_obj=backend)
    assert re.search(reason, caplog.text), caplog.text
    assert "Quantized-weight cache hit" not in caplog.text
    assert "Quantized-weight cache written" in caplog.text
    assert_same_model(stock_build(own_checkpoint, "int8"), rebuilt)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _load(own_checkpoint, "int8", root, backend_obj=backend)
    assert "Quantized-weight cache hit" in caplog.text  # rebuilt in place


def test_files_of_others_in_the_entry_folder_are_left_alone(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    folder = _entry(root, checkpoint)
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with caplog.at_level(logging.INFO):
        model = _load(checkpoint, "int8", root)
    assert "holds files that are not the cache's (notes.txt)" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert_same_model(stock_build(checkpoint, "int8"), model)


def test_the_cache_files_are_safetensors_and_the_reader_reads_safetensors(tmp_path: Path) -> None:
    tensors = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "int8": torch.randint(-128, 127, (4, 7), dtype=torch.int8),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "flags": torch.tensor([True, False, True]),
    }
    ours = tensorfile.write_tensors(tmp_path / "ours.safetensors", tensors, {"k": "v"})
    with safe_open(str(ours), "pt") as f:
        assert f.metadata() == {"k": "v"}
        assert all(torch.equal(f.get_tensor(k), v) and f.get_tensor(k).dtype == v.dtype for k, v in tensors.items())
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    header = tensorfile.read_header(tmp_path / "theirs.safetensors")
    read = tensorfile.read_tensors(header, header.tensors)
    assert header.metadata == {"k": "v"}
    assert all(torch.equal(read[k], v) and read[k].dtype == v.dtype for k, v in tensors.items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((tmp_path / "theirs.safetensors").read_bytes()[:-10])
    with pytest.raises(ValueError, match="is truncated"):
        tensorfile.read_header(truncated)


# --------------------------------------------------------------------------------------------------------------------
# Memory estimates
# --------------------------------------------------------------------------------------------------------------------


def test_the_sizes_from_the_header_are_the_bytes_of_the_built_model(checkpoint: Path) -> None:
    sizes = memory.checkpoint_sizes(checkpoint, get_backend("int8"))
    built = stock_build(checkpoint, "int8")
    plain, _ = meta_transformer(checkpoint)
    for size in sizes:
        part = built.get_submodule(size.part.name) if size.part.name else None
        state = dict(built.named_parameters(recurse=False)) if part is None else part.state_dict()
        assert size.trained_bytes == sum(t.numel() * t.element_size() for t in state.values()), size.part
        # Loaded: every tensor at bf16; stored: float32 in this checkpoint.
        meta = (
            plain.get_submodule(size.part.name).state_dict()
            if size.part.name
            else dict(plain.named_parameters(recurse=False))
        )
        assert size.loaded_bytes == 2 * sum(t.numel() for t in meta.values())
        assert size.source_bytes == 2 * size.loaded_bytes
    assert [s.part.block for s in sizes[:NUM_LAYERS]] == list(range(NUM_LAYERS))


def _config(**acceleration: object) -> SimpleNamespace:
    swap = acceleration.pop("block_swap", None)
    return SimpleNamespace(
        model=SimpleNamespace(training_mode="lora"),
        acceleration=SimpleNamespace(
            **{"quantization": "int8", "block_swap_blocks": None, "streamed_load": True, **acceleration}
        ),
        block_swap=swap,
    )


def test_the_swap_plan_and_the_host_blocks_follow_the_config(checkpoint: Path) -> None:
    backend = get_backend("int8")
    sizes = memory.checkpoint_sizes(checkpoint, backend)
    assert memory.estimate_swap(_config(), sizes) is None
    fixed = memory.estimate_swap(_config(block_swap_blocks=2), sizes)
    assert fixed is not None
    assert fixed.blocks == spread_blocks(NUM_LAYERS, 2)
    assert memory.planned_host_blocks(_config(block_swap_blocks=2), checkpoint, backend) == set(fixed.blocks)
    blocks = [s.trained_bytes for s in sizes if s.part.block is not None]
    non_block = sum(s.trained_bytes for s in sizes if s.part.block is None)
    # auto: the smallest count whose estimate fits; a budget between the 1- and 2-swapped estimates gives 2.
    from ltx_audio_reference.blockswap.config import estimate_peak  # noqa: PLC0415

    one, two = (estimate_peak(blocks, n, non_block, 1, 0).estimated_peak_bytes for n in (1, 2))
    budget_gb = (one + two) / 2 / 1e9 if two < one else two / 1e9
    auto = BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=budget_gb, reserve_gb=0)
    plan = memory.estimate_swap(_config(block_swap=auto), sizes)
    assert plan is not None
    assert plan.plan.estimated_peak_bytes <= budget_gb * 1e9
    assert plan.problem is None
    tight = memory.estimate_swap(_config(block_swap=BlockSwapConfig(max_vram_gb=1e-6, reserve_gb=0)), sizes)
    assert tight is not None
    assert tight.blocks == list(range(NUM_LAYERS))
    assert "is too small" in (tight.problem or "")


def test_the_plan_counts_lora_as_peft_makes_it_and_the_connectors_as_ltx_core_builds_them(checkpoint: Path) -> None:
    """The engine plans with LoRA (x4: gradients, AdamW's moments) and the text connectors already on the GPU; the
    estimate before loading (``check``, the streamed load's host blocks) must count the same bytes."""
    import functools  # noqa: PLC0415

    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    from ltx_audio_reference.blockswap.config import TRAINABLE_OVERHEAD  # noqa: PLC0415
    from ltx_audio_reference.plugins import get_plugin_manager  # noqa: PLC0415
    from ltx_audio_reference.registry import lora_target_modules  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415
    from ltx_audio_reference.testing.tiny_model import (  # noqa: PLC0415
        _instantiate,
        build_tiny_model,
        tiny_checkpoint_config,
    )
    from ltx_core.text_encoders.gemma.embeddings_connector import (  # noqa: PLC0415
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    hook = get_plugin_manager().hook
    config = _config(block_swap_blocks=2)
    config.lora = SimpleNamespace(rank=4, target_modules=["to_q"])  # the preset replaces the stock targets
    config.training_strategy = AudioReferenceConfig(name="audio_reference", lora_preset="audio")
    backend = get_backend("int8")
    counted = memory.estimate_config(
        config, checkpoint, backend, cuda=True, lora_targets=functools.partial(lora_target_modules, hook, config)
    )
    bare = memory.estimate_config(config, checkpoint, backend, cuda=True)
    assert counted.swap is not None
    assert bare.swap is not None

    # LoRA: what peft really adds to the model, with the targets the strategy's configure_lora hook sets.
    model = build_tiny_model(NUM_LAYERS, dtype=torch.bfloat16)
    targets = lora_target_modules(hook, config, model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    extras = counted.swap.extras
    assert extras.lora_modules == 10 * NUM_LAYERS  # the audio preset: 10 Linear layers a block
    assert extras.lora_bytes == sum(p.numel() * p.element_size() for p in trainable)
    # The connectors: ltx-core's own modules for the checkpoint's config, at bf16 as ltx-trainer loads them.
    expected = sum(
        t.numel() * 2
        for configurator in (Embeddings1DConnectorConfigurator, AudioEmbeddings1DConnectorConfigurator)
        for t in _instantiate(configurator, tiny_checkpoint_config(NUM_LAYERS)).state_dict().values()
    )
    assert extras.connector_bytes == expected > 0

    # Both go into the plan's fixed bytes, and the check line names them.
    neither = memory.estimate_swap(config, memory.checkpoint_sizes(checkpoint, backend))
    assert neither is not None
    added = counted.swap.plan.estimated_peak_bytes - neither.plan.estimated_peak_bytes
    assert added == TRAINABLE_OVERHEAD * extras.lora_bytes + extras.connector_bytes
    assert bare.swap.extras == memory.TrainingExtras(connector_bytes=extras.connector_bytes)  # LoRA unknown
    assert f"counting LoRA ({10 * NUM_LAYERS} modules:" in counted.lines()[1]
    assert "but not LoRA (its targets are unknown here)" in bare.lines()[1]


def test_a_lora_target_hook_that_fails_leaves_lora_out_of_the_estimate_with_a_warning(
    checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The streamed load plans its host blocks with this estimate: a hook that cannot answer on the meta model must
    not stop the load (the engine plans again from measured bytes)."""
    config = _config(block_swap_blocks=2)
    config.lora = SimpleNamespace(rank=4, target_modules=["to_q"])

    def broken(model: nn.Module) -> list[str]:
        raise RuntimeError(f"needs real weights, got {next(model.parameters()).device}")

    with caplog.at_level(logging.WARNING, logger=memory.__name__):
        blocks = memory.planned_host_blocks(config, checkpoint, get_backend("int8"), broken)
    assert blocks == set(spread_blocks(NUM_LAYERS, 2))
    assert (
        "leaves LoRA out: its targets could not be resolved (RuntimeError: needs real weights, got meta)" in caplog.text
    )


def test_auto_sizing_sets_more_vram_aside_for_cuda_graphs_and_a_fixed_count_does_not() -> None:
    from ltx_audio_reference.blockswap.config import GB, planned_reserve_bytes  # noqa: PLC0415

    probe = BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=1.0, reserve_gb=0)
    block = planned_reserve_bytes(probe, cuda_graphs=True, num_blocks=8) // 2  # two blocks make up the graphs' reserve
    sizes = _sizes([(2 * block, block, block)] * 8, (2 * block, block, block))
    auto = BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=7.5 * block / GB, reserve_gb=0)
    eager = memory.estimate_swap(_config(block_swap=auto, compile_blocks=True), sizes)
    graphs = memory.estimate_swap(_config(block_swap=auto, compile_blocks=True, cuda_graphs=True), sizes)
    assert eager is not None
    assert graphs is not None
    # Peak with n swapped (n >= 2, two slots): (11 - n) blocks + the reserve; 7.5 blocks fit from n = 4, and with the
    # graphs' reserve of two blocks from n = 6.
    assert (len(eager.blocks), len(graphs.blocks)) == (4, 6)
    assert graphs.plan.estimated_peak_bytes <= 7.5 * block
    # cuda_graphs without compiled blocks records nothing; a fixed count sets nothing more aside.
    uncompiled = memory.estimate_swap(_config(block_swap=auto, cuda_graphs=True), sizes)
    assert uncompiled is not None
    assert uncompiled.blocks == eager.blocks
    fixed = [
        memory.estimate_swap(_config(block_swap_blocks=3, compile_blocks=True, cuda_graphs=graphs), sizes)
        for graphs in (False, True)
    ]
    assert fixed[0] is not None
    assert fixed[1] is not None
    assert fixed[0].plan.estimated_peak_bytes == fixed[1].plan.estimated_peak_bytes


def _sizes(blocks: list[tuple[int, int, int]], rest: tuple[int, int, int]) -> list[memory.PartSize]:
    parts = [memory.PartSize(Part(f"transformer_blocks.{i}", i, True), *b) for i, b in enumerate(blocks)]
    return [*parts, memory.PartSize(Part("proj_out", None, False), *rest)]


def test_the_host_estimate_adds_the_process_the_swapped_blocks_and_the_load() -> None:
    gb = 10**9
    # (stored, loaded bf16, trained int8) per block; four blocks, two swapped.
    sizes = _sizes([(2 * gb, 2 * gb, gb)] * 4, (gb, gb, gb))
    swap = memory.SwapEstimate([1, 3], True, plan=None)  # type: ignore[arg-type]
    streamed = memory.estimate_host_memory(sizes, quantized=True, streamed=True, cuda=True, swap=swap)
    assert streamed.model_bytes == 2 * gb  # the swapped blocks at their int8 size
    assert streamed.load_bytes == 2 * 2 * gb + gb  # two parts read ahead, one quantized part
    assert streamed.total_bytes == memory.BASELINE_BYTES + 7 * gb
    assert streamed.pinned
    assert streamed.page_cache_bytes == 9 * gb
    stock = memory.estimate_host_memory(sizes, quantized=True, streamed=False, cuda=True, swap=swap)
    assert stock.load_bytes == (5 * gb - 2 * gb) + gb  # the quantized model back on the host, then one block copy
    cpu = memory.estimate_host_memory(sizes, quantized=True, streamed=True, cuda=False, swap=swap)
    assert cpu.model_bytes == 5 * gb  # training on the CPU: the whole model lives in host memory


def test_the_estimate_warns_when_the_machine_has_less(checkpoint: Path) -> None:
    estimate = memory.estimate_config(_config(block_swap_blocks=2), checkpoint, get_backend("int8"), cuda=True)
    lines = estimate.lines()
    assert lines[0].startswith("host memory: ~3.0 GB at the peak (process ~3.0 + swapped blocks <0.1 (pinned)")
    assert "GPU memory: block swap 2 of 3 blocks swapped; estimated peak" in lines[1]
    assert not any(line.startswith("WARNING") for line in lines) or estimate.limit_bytes < estimate.host.total_bytes
    small = memory.ConfigMemory(estimate.host, estimate.swap, 0, limit_bytes=2 * 10**9, limit_origin="MemTotal")
    assert small.lines()[-1].startswith("WARNING: this machine has 2.0 GB (MemTotal), less than the ~3.0 GB")
    assert "swap fewer blocks" in small.lines()[-1]
    limit, origin = memory.host_memory_limit()
    assert limit is None or (limit > 0 and origin in ("MemTotal", "cgroup memory.max"))


def test_the_load_settings_are_config_fields_with_messages_that_say_what_to_write(tmp_path: Path) -> None:
    from pydantic import TypeAdapter, ValidationError  # noqa: PLC0415

    from ltx_audio_reference.quantization import plugin  # noqa: PLC0415
    from ltx_audio_reference.registry import ConfigFieldRegistry  # noqa: PLC0415

    registry = ConfigFieldRegistry()
    plugin.register_config_fields(registry)
    fields = {entry.name: entry for entry in registry}
    assert set(fields) == {"streamed_load", "quantized_cache"}
    assert fields["quantized_cache"].field.default is True
    assert fields["streamed_load"].field.default is False  # opt-in until the GPU measurements are taken
    adapter = TypeAdapter(plugin.QuantizedCacheSetting)
    assert adapter.validate_python(False) is False
    assert adapter.validate_python("~/qcache") == "~/qcache"
    with pytest.raises(ValidationError, match="write false without quotes"):
        adapter.validate_python("false")
    with pytest.raises(ValidationError, match=r"must be true .*, false .* or a folder"):
        adapter.validate_python(" ")
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = SimpleNamespace(
        acceleration=SimpleNamespace(quantization="int8", streamed_load=True, quantized_cache=str(blocker / "cache"))
    )
    with pytest.raises(ValueError, match=r"acceleration.quantized_cache: .* is not a folder .*; give a folder"):
        plugin.validate_config(config)
    config.acceleration.streamed_load = False
    plugin.validate_config(config)  # the cache is used only by the streamed load: nothing to check
    config.acceleration.streamed_load = True
    config.acceleration.quantized_cache = str(tmp_path / "new" / "cache")
    plugin.validate_config(config)
    assert not (tmp_path / "new").exists()  # probed, not created
    assert qcache.cache_root(True) == qcache.default_cache_root()
    assert qcache.cache_root(False) is None
    assert qcache.cache_root("~/x") == Path("~/x").expanduser()


# --------------------------------------------------------------------------------------------------------------------
# Block swap takes each streamed part's buffer as its host copy
# --------------------------------------------------------------------------------------------------------------------


def _train_once(
    model: nn.Module, swapped: list[int]
) -> tuple[object, dict[int, int], torch.Tensor, list[torch.Tensor]]:
    """LoRA on ``model``, ``swapped`` blocks streamed by block swap (on the CPU), one forward and backward."""
    from ltx_audio_reference.blockswap.engine import BlockSwapEngine  # noqa: PLC0415
    from ltx_audio_reference.testing import swap_workload as workload  # noqa: PLC0415

    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    storages = {i: next(iter(model.transformer_blocks[i].state_dict().values())).untyped_storage() for i in swapped}
    buffers = {i: s.data_ptr() for i, s in storages.items()}
    engine = BlockSwapEngine(peft_model, swapped, device="cpu")
    engine.place(peft_model)
    # The checkpoint's caption projections take the text encoder's width for both contexts.
    widths = workload.context_widths(model)
    assert widths == (64, 64)
    video, audio, video_target, audio_target = workload.make_batch(
        "tiny", workload.TINY_WORKLOAD, context_widths=widths
    )
    video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
    loss = workload.loss_fn(video_pred, audio_pred, video_target, audio_target)
    loss.backward()
    grads = [p.grad.detach().clone() for p in peft_model.parameters() if p.requires_grad]
    return engine, buffers, loss.detach(), grads


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-block tiny LTX-2.3-class checkpoint (gated attention, cross-attention AdaLN): the block swap workload's."""
    overrides = {"apply_gated_attention": True, "cross_attention_adaln": True}
    path = tmp_path_factory.mktemp("gated") / "tiny.safetensors"
    return write_tiny_checkpoint(path, num_layers=NUM_LAYERS, overrides=overrides)


@pytest.mark.parametrize("backend", BACKENDS)
def test_block_swap_takes_each_streamed_part_as_its_host_copy_and_trains_the_same(
    gated_checkpoint: Path, tmp_path: Path, backend: str
) -> None:
    checkpoint = gated_checkpoint
    _load(checkpoint, backend, tmp_path)  # writes the cache
    swapped = [0, 2]
    _, _, expected_loss, expected_grads = _train_once(stock_build(checkpoint, backend), [])
    stock_engine, _, stock_loss, _ = _train_once(stock_build(checkpoint, backend), swapped)
    assert stock_engine.adopted == 0  # the stock build's tensors each have their own storage: copied
    assert torch.equal(stock_loss, expected_loss)
    for model in (_load(checkpoint, backend), _load(checkpoint, backend, tmp_path)):  # streamed; from the cache
        engine, buffers, loss, grads = _train_once(model, swapped)
        assert engine.adopted == len(swapped)
        for index in swapped:  # no copy: the part's own buffer is the host copy, and nothing but the block is in it
            block = engine._blocks[index]
            assert block.host.data_ptr() == buffers[index]
            assert block.nbytes == block.host.numel()
        assert engine.stats.loads > 0
        assert torch.equal(loss, expected_loss)
        assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads, strict=True))


@pytest.mark.parametrize(
    ("row", "quantization", "settings"),
    [
        ("int8w_auto22_graphs_cold@r101", "int8", {"compile_blocks": True, "cuda_graphs": True}),
        ("int8_swap24_compiled_stockload@r101", "int8-quanto", {"compile_blocks": True, "block_swap_blocks": 24}),
    ],
)
def test_check_plans_the_full_scale_seed_recipe_as_training_logged_it_on_an_h100(
    tmp_path: Path, row: str, quantization: str, settings: dict[str, object]
) -> None:
    """``check``'s view of the seed recipe on the 48-block full-width checkpoint (header only: the estimate reads no
    tensor) gives the plan that block swap logged when the same run trained (benchmarks/results, round 10)."""
    import yaml  # noqa: PLC0415

    from ltx_audio_reference.cli.check import _config_view  # noqa: PLC0415
    from ltx_audio_reference.plugins import get_plugin_manager  # noqa: PLC0415
    from ltx_audio_reference.registry import lora_target_modules  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415
    from ltx_audio_reference.testing.tiny_model import FULL_WIDTH_OVERRIDES  # noqa: PLC0415

    repo = Path(__file__).resolve().parents[2]
    logged = next(
        r
        for r in json.loads((repo / "benchmarks/results/full_scale_h100.json").read_text())["rows"]
        if r["name"] == row
    )
    checkpoint = write_tiny_checkpoint(
        tmp_path / "full.safetensors", 48, overrides=FULL_WIDTH_OVERRIDES, dtype=torch.bfloat16, header_only=True
    )
    assert checkpoint.stat().st_blocks * 512 < 10**7  # a hole, not 38 GB
    data = yaml.safe_load((repo / "configs/helium_audio_reference.yaml").read_text())
    data["model"]["model_path"] = str(checkpoint)
    data["acceleration"] = {"mixed_precision_mode": "bf16", "quantization": quantization, **settings}  # as the runs
    if "block_swap_blocks" not in settings:  # the auto22 arms (benchmarks/full_scale.py)
        data["block_swap"] = {"blocks_to_swap": "auto", "max_vram_gb": 22}
    view = _config_view(data, AudioReferenceConfig.model_validate(data["training_strategy"]))
    hook = get_plugin_manager().hook
    estimate = memory.estimate_config(
        view,
        checkpoint,
        get_backend(quantization),
        cuda=True,
        lora_targets=lambda model: lora_target_modules(hook, view, model),
    )
    assert estimate.swap is not None
    assert estimate.swap.extras.lora_modules == 480  # 960 tensors
    assert estimate.swap.plan.blocks_to_swap == logged["planned_swapped"]
    assert round(estimate.swap.plan.estimated_peak_bytes / 1e9, 2) == logged["planned_peak_gb"]
