"""Block swap on a CUDA GPU: bitwise equality with residency, exported LoRA keys, startup peak, DDP, auto sizing.

Skips without CUDA. Uses a 4-block full-width LTX-2.3-class model with random weights and the seed workload.
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import functools
import importlib.util
import re
from collections.abc import Iterator

import pytest
import torch
from cuda_swap import Run, assert_bitwise, deterministic_kernels, finish_build, train

from ltx_audio_reference.blockswap.config import BlockSwapConfig, slot_count
from ltx_audio_reference.blockswap.plugin import setup_block_swap
from ltx_audio_reference.quantization import memory as hostmem
from ltx_audio_reference.testing import swap_workload as workload

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

NUM_LAYERS = 4
STEPS = 3
HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
DTYPES = ["bf16", pytest.param("int8-quanto", marks=pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto"))]
EXPORT_KEY = re.compile(r"^diffusion_model\.transformer_blocks\.\d+\.audio_(attn1|attn2|ff)\..*lora_[AB]\.weight$")


@pytest.fixture(autouse=True)
def deterministic() -> Iterator[None]:
    """Deterministic kernels, so that two resident runs agree bit for bit and swap can be compared with them."""
    with deterministic_kernels():
        yield


def _prepare(dtype: str) -> torch.nn.Module:
    model = workload.build_model(NUM_LAYERS, "full", seed=0, dtype=torch.bfloat16, device="cuda")
    return finish_build(model, dtype)


def _train(dtype: str, blocks_to_swap: int, prefetch: int = 1, **options: bool) -> Run:
    return train(
        functools.partial(_prepare, dtype), NUM_LAYERS, blocks_to_swap, steps=STEPS, prefetch=prefetch, **options
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_swap_is_bitwise_equal_to_resident(dtype: str) -> None:
    resident = _train(dtype, 0)
    assert_bitwise(resident, _train(dtype, 0), f"{dtype} resident vs resident (kernel determinism)")
    assert resident.export
    assert all(EXPORT_KEY.match(k) for k in resident.export), list(resident.export)[:3]

    for blocks_to_swap, prefetch in ((NUM_LAYERS - 1, 1), (NUM_LAYERS, 2), (NUM_LAYERS // 2, 1)):
        swapped = _train(dtype, blocks_to_swap, prefetch)
        assert_bitwise(resident, swapped, f"{dtype} {blocks_to_swap}/{NUM_LAYERS} swapped, prefetch {prefetch}")
        assert swapped.base_grads == 0
        assert swapped.startup_peak <= swapped.steady_peak, (swapped.startup_peak, swapped.steady_peak)
        if NUM_LAYERS - blocks_to_swap + slot_count(blocks_to_swap, prefetch) < NUM_LAYERS:
            assert swapped.steady_peak < resident.steady_peak


def test_ddp_each_rank_streams_its_own_copy(tmp_path: object) -> None:
    import torch.distributed as dist  # noqa: PLC0415

    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        resident = _train("bf16", 0)
        swapped = _train("bf16", NUM_LAYERS - 1, ddp=True)
    finally:
        dist.destroy_process_group()
    assert [x.item() for x in swapped.losses] == [x.item() for x in resident.losses]
    assert swapped.export.keys() == resident.export.keys()


def test_auto_sizing_stays_under_budget() -> None:
    peft_model = _prepare("bf16")
    budget_gb = 4.5
    torch.cuda.reset_peak_memory_stats()
    engine = setup_block_swap(peft_model, BlockSwapConfig(blocks_to_swap="auto", max_vram_gb=budget_gb), "cuda")
    assert engine is not None
    assert len(engine.blocks) >= 2
    named = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(named, lr=1e-4)
    video, audio, video_target, audio_target = workload.make_batch("full", device="cuda", seed=1)
    for _ in range(2):
        video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    engine.close(device="cpu")
    assert peak <= budget_gb * 1e9, f"{len(engine.blocks)} blocks swapped, peak {peak / 1e9:.2f} GB"


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_blocks_with_swap_match_compiled_resident_bitwise_and_eager_within_bf16(dtype: str) -> None:
    """Each block's forward compiled (inductor), its hooks eager: the swap engine's streams and events stay outside
    the graph and add no arithmetic, so compiled + swapped equals compiled + resident bit for bit; compiled and eager
    differ only by kernel fusion, within bf16 rounding. Lengths change every step; the graphs do not."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    resident = _train(dtype, 0, compiled=True, varying=True)
    graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs <= 2, torch._dynamo.utils.counters["stats"]
    for blocks_to_swap in (NUM_LAYERS // 2, NUM_LAYERS - 1):
        swapped = _train(dtype, blocks_to_swap, compiled=True, varying=True)
        assert_bitwise(resident, swapped, f"{dtype} compiled, {blocks_to_swap}/{NUM_LAYERS} swapped")
    assert int(torch._dynamo.utils.counters["stats"]["unique_graphs"]) == graphs  # swapping adds no graph
    eager = _train(dtype, NUM_LAYERS // 2, varying=True)
    for step, (a, b) in enumerate(zip(eager.losses, resident.losses, strict=True)):
        torch.testing.assert_close(b, a, rtol=1.6e-2, atol=1e-3, msg=f"{dtype} compiled vs eager loss, step {step}")
    assert list(eager.export) == list(resident.export)
    assert all(EXPORT_KEY.match(k) for k in resident.export)


class _PrivateMemory(torch.utils.data.Dataset):
    """Each item: the worker's own pages (``Private_Clean + Private_Dirty``, bytes) and its process id."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([hostmem.private_bytes(), os.getpid()])


def test_dataloader_workers_forked_after_pinning_do_not_copy_the_swapped_blocks() -> None:
    from ltx_audio_reference.blockswap.engine import BlockSwapEngine  # noqa: PLC0415

    peft_model = _prepare("bf16")  # full-width blocks: about 0.77 GB each in bf16
    engine = BlockSwapEngine(peft_model, [1, 3], device="cuda")
    engine.place(peft_model)
    assert engine.pin_memory
    assert all(kept_out for _, _, kept_out in engine._registered)  # every host copy is kept out of forks
    loader = torch.utils.data.DataLoader(_PrivateMemory(), batch_size=1, num_workers=2)
    items = [item[0].tolist() for item in loader]
    private, pids = [i[0] for i in items], {i[1] for i in items}
    assert len(pids) == 2  # two forked workers
    assert os.getpid() not in pids
    assert max(private) < 0.5 * engine.host_bytes, (private, engine.host_bytes)  # a copy would be all of it
    video, audio, *_ = workload.make_batch("full", workload.SEED_WORKLOAD, device="cuda")
    with torch.no_grad():
        peft_model(video=video, audio=audio, perturbations=None)  # the parent still reads its host copies
    engine.close()
    assert not engine._finalizer.alive  # unregistered, the advice taken back
