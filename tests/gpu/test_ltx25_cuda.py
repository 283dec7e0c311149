"""LTX-2.5 block swap on a CUDA GPU: bitwise equal to residency, in the engine and through the stock runner.

Two levels, as ``test_block_swap_cuda.py`` does for LTX-2.3:

1. **Engine**: a 4-block LTX-2.5 transformer at the real block width (32 x 128 video and 32 x 64 audio heads, gated
   attention, cross-attention AdaLN, a bias-free video feed-forward, the keyframe marker), random weights, the seed
   workload (1024 video tokens, 121 + 50 audio tokens), LoRA r32 on the audio stack, 3 optimizer steps, bf16 and
   int8-quanto. Two resident runs must agree bit for bit (the kernels are deterministic), and runs with 3, 4 (prefetch
   2) and 2 of the 4 blocks swapped must equal them bit for bit: every loss, every LoRA gradient, the exported LoRA.
2. **Stock runner**: ``ltx-trainer``'s ``LtxvTrainer`` (bridge installed) trains the kit's tiny 4-block LTX-2.5 split
   pack with the ``audio_reference`` strategy, resident and with ``acceleration.block_swap_blocks: 3``; the two
   exported LoRAs are bit-identical, hold the 20 tensors a block in ComfyUI's keys, and ltx-core's LoRA fusion on the
   2.5 transformer (on the GPU) moves exactly those modules' weights.

Self-contained: everything is generated here, nothing is downloaded. Level 2 writes the pack's text encoder without
Gemma weights (training with validation off reads only its config, tokenizer, sidecars and text projection), so it
needs transformers' ``gemma4_unified`` config but never builds the Gemma-4 model: ltx-core 1.2.0 cannot build that
model with transformers >= 5.15 (``AmbiguousGlobalPerLayerAttributeError`` on ``config.head_dim``; its pin is
``<5.15``), while training from the config alone was seen to work with transformers 5.24.

Attention is pinned to SDPA's math backend on every attention module (ltx-core 1.2.0 otherwise picks cuDNN first,
whose backward is not deterministic), through a ``configure_model`` plugin in level 2.

Skips without CUDA; level 2 also without ltx-trainer, and both without ltx-core 1.2.0.

    CUBLAS_WORKSPACE_CONFIG=:4096:8 python -m pytest -q -p no:cacheprovider tests/gpu/test_ltx25_cuda.py
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import functools
import gc
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cuda_swap import Run, assert_bitwise, deterministic_kernels, finish_build, pin_math_attention, train

from ltx_audio_reference import hookimpl
from ltx_audio_reference.testing import swap_workload as workload
from ltx_audio_reference.testing import tiny_ltx25

LTX25_REASON = tiny_ltx25.ltx25_supported()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(LTX25_REASON is not None, reason=LTX25_REASON or ""),
]

NUM_LAYERS = 4
STEPS = 3
HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
HAS_TRAINER = importlib.util.find_spec("ltx_trainer") is not None
DTYPES = ["bf16", pytest.param("int8-quanto", marks=pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto"))]
EXPORT_KEY = re.compile(r"^diffusion_model\.transformer_blocks\.\d+\.audio_(attn1|attn2|ff)\..*lora_[AB]\.weight$")
AUDIO_TENSORS_PER_BLOCK = 20  # 10 Linear layers (audio_attn1/2 q, k, v, out; audio_ff in, out), lora_A + lora_B


@pytest.fixture(autouse=True)
def deterministic() -> Iterator[None]:
    """Deterministic kernels, so that two resident runs agree bit for bit and swap can be compared with them."""
    with deterministic_kernels():
        yield


# ----- 1. the engine on full-width LTX-2.5 blocks ---------------------------------------------------------------------


def _build_ltx25(dtype: str) -> torch.nn.Module:
    """The model as the stock trainer holds it before ``accelerator.prepare``: quantized, frozen, LoRA, on CPU."""
    from ltx_core.model.transformer.model import LTXModel  # noqa: PLC0415

    kwargs = {**workload.model_kwargs(NUM_LAYERS, "full"), **tiny_ltx25.LTX25_MODEL_KWARGS}
    with torch.device("meta"):
        model = LTXModel(**kwargs)
    model = model.to_empty(device="cuda").to(torch.bfloat16)
    workload.init_parameters(model, seed=0)
    block = model.transformer_blocks[0]
    assert block.ff.net[0].proj.bias is None  # what makes it 2.5: no video feed-forward biases ...
    assert block.audio_ff.net[0].proj.bias is not None  # ... the audio feed-forward keeps them
    assert model.keyframes_abs_pos_embedding.shape == (1, 4096)
    return finish_build(model, dtype)


def _train(dtype: str, blocks_to_swap: int, prefetch: int = 1) -> Run:
    return train(functools.partial(_build_ltx25, dtype), NUM_LAYERS, blocks_to_swap, steps=STEPS, prefetch=prefetch)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ltx25_swap_is_bitwise_equal_to_resident(dtype: str) -> None:
    resident = _train(dtype, 0)
    assert_bitwise(resident, _train(dtype, 0), f"{dtype} resident vs resident (kernel determinism)")
    assert len(resident.export) == AUDIO_TENSORS_PER_BLOCK * NUM_LAYERS
    assert all(EXPORT_KEY.match(k) for k in resident.export), list(resident.export)[:3]
    assert all(bool(torch.isfinite(t).all()) for t in resident.export.values())
    for blocks_to_swap, prefetch in ((NUM_LAYERS - 1, 1), (NUM_LAYERS, 2), (NUM_LAYERS // 2, 1)):
        swapped = _train(dtype, blocks_to_swap, prefetch)
        assert_bitwise(resident, swapped, f"{dtype} {blocks_to_swap}/{NUM_LAYERS} swapped, prefetch {prefetch}")
        assert swapped.base_grads == 0


# ----- 2. the stock runner on the tiny LTX-2.5 split pack -------------------------------------------------------------


class _MathAttentionPlugin:
    """A ``configure_model`` plugin that pins the trainer's transformer to SDPA's math backend."""

    @hookimpl
    def configure_model(self, context: Any) -> None:  # noqa: ANN401
        pin_math_attention(context.model)


@pytest.fixture
def stock_runner() -> Iterator[None]:
    """The bridge installed on the shared plugin manager, with the math-attention plugin registered beside it."""
    if not HAS_TRAINER:
        pytest.skip("needs ltx-trainer 1.2.0")
    if (reason := tiny_ltx25.gemma4_supported()) is not None:
        pytest.skip(reason)
    from ltx_audio_reference import bridge, plugins  # noqa: PLC0415

    pm = plugins.get_plugin_manager()
    plugin = _MathAttentionPlugin()
    pm.register(plugin, name="test_ltx25_math_attention")
    bridge.install()
    try:
        yield
    finally:
        pm.unregister(plugin)


def _train_stock(demo: Path, out: Path, swap: int) -> Path:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["optimization"].update(steps=4, batch_size=1, enable_gradient_checkpointing=True, learning_rate=0.01)
    config["acceleration"] = {"mixed_precision_mode": "bf16"}
    if swap:
        config["acceleration"]["block_swap_blocks"] = swap
    config["checkpoints"] = {"interval": 4, "keep_last_n": -1, "precision": "float32"}
    config["output_dir"] = str(out)
    torch.manual_seed(0)
    saved, _ = LtxvTrainer(LtxTrainerConfig(**config)).train(disable_progress_bars=True)
    gc.collect()
    torch.cuda.empty_cache()
    return Path(saved)


def _block_weights(model_path: Path, lora: Path | None) -> dict[str, torch.Tensor]:
    """The 2.5 transformer's block weights as ltx-core builds them on the GPU (bf16), ``lora`` fused at strength 1."""
    from ltx_audio_reference.evaluation.sweep import load_transformer  # noqa: PLC0415

    model = load_transformer(model_path, lora, torch.device("cuda"))
    tiny_ltx25.assert_materialized(model, model_path)
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if "transformer_blocks" in n}
    del model
    torch.cuda.empty_cache()
    return weights


def test_ltx25_pack_trains_through_the_stock_runner_with_block_swap_like_resident(
    tmp_path: Path, stock_runner: None
) -> None:
    from safetensors.torch import load_file  # noqa: PLC0415

    from ltx_audio_reference.testing.demo import write_demo  # noqa: PLC0415

    demo = write_demo(
        tmp_path / "demo", steps=4, num_samples=2, num_layers=NUM_LAYERS, model="ltx-2.5", complete=False
    ).parent
    resident = load_file(str(_train_stock(demo, tmp_path / "resident", 0)))
    resident_again = load_file(str(_train_stock(demo, tmp_path / "resident_again", 0)))
    swapped_path = _train_stock(demo, tmp_path / "swapped", NUM_LAYERS - 1)
    swapped = load_file(str(swapped_path))

    assert resident.keys() == resident_again.keys() == swapped.keys()
    assert len(resident) == AUDIO_TENSORS_PER_BLOCK * NUM_LAYERS
    assert all(EXPORT_KEY.match(k) for k in resident)
    # Saved in float32 (checkpoints.precision above), so that bit-for-bit equality is not hidden by bf16 rounding;
    # the default bf16 export is tier 2's
    # test_strategy_flag_trains_the_25_pack_and_exports_the_comfy_lora.
    assert all(t.dtype == torch.float32 for t in resident.values())
    assert all(torch.equal(resident[k], resident_again[k]) for k in resident), "resident vs resident (determinism)"
    differing = [k for k in resident if not torch.equal(resident[k], swapped[k])]
    assert not differing, f"{len(differing)} of {len(resident)} exported tensors differ with 3 blocks swapped"
    assert any(bool(t.abs().sum() > 0) for k, t in swapped.items() if ".lora_B." in k)

    model_path = demo / tiny_ltx25.TRANSFORMER_FILE
    base, fused = _block_weights(model_path, None), _block_weights(model_path, swapped_path)
    changed = {name.removesuffix(".weight") for name in base if not torch.equal(base[name], fused[name])}
    assert changed == {k.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0] for k in swapped}
