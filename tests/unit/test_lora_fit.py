"""Tier 1: a LoRA's header against the model's, before anything loads: ``eval --lora`` and ``check`` (resume).

The LoRAs are real safetensors files shaped from the demo's real 2-block checkpoint header (48 blocks of the same
widths; another width; another rank), so only what the headers say decides.
"""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.reliability.checkpoints import safetensors_shapes
from ltx_audio_reference.reliability.lora_fit import lora_fit, target_problems, transformer_weight_shapes
from ltx_audio_reference.strategies.audio_reference.lora_targets import AUDIO_MODULES, BRIDGE_MODULES
from ltx_audio_reference.testing.demo import write_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("fit") / "demo", steps=2, num_samples=2).parent


def _write_lora(
    path: Path, model: Path, *, blocks: int, rank: int = 4, modules: tuple[str, ...] = AUDIO_MODULES, widen: int = 0
) -> Path:
    """A LoRA of ``rank`` on ``modules`` of ``blocks`` blocks, with block 0's widths (``widen`` added to each)."""
    weights = transformer_weight_shapes(safetensors_shapes(model))
    tensors = {}
    for block in range(blocks):
        for module in modules:
            out_features, in_features = weights[f"transformer_blocks.0.{module}"]
            key = f"diffusion_model.transformer_blocks.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.zeros(rank, in_features + widen)
            tensors[f"{key}.lora_B.weight"] = torch.zeros(out_features + widen, rank)
    save_file(tensors, str(path))
    return path


def _eval(demo: Path, lora: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        build_app(),
        ["audio-reference", "eval", str(demo / "config.yaml"), "--out", str(out), "--lora", str(lora)],
        env={"COLUMNS": "400"},
    )
    return result.exit_code, " ".join(result.output.split())


def test_eval_refuses_a_lora_of_48_blocks_on_a_2_block_model_before_anything_loads(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    lora = _write_lora(tmp_path / "big.safetensors", demo / "tiny_ltx2.safetensors", blocks=48)
    code, text = _eval(demo, lora, tmp_path / "sweep")
    assert code == 1, text
    assert (
        f"--lora {lora} does not fit the model in {demo / 'tiny_ltx2.safetensors'}: the LoRA covers 48 transformer "
        "blocks (0-47), the model has 2 (0-1): blocks 2-47 of the LoRA have no place and would be dropped without a "
        "word (the first is diffusion_model.transformer_blocks.2.audio_attn1.to_k.lora_A.weight)" in text
    )
    assert not (tmp_path / "sweep").exists()  # no references, nothing loaded


def test_eval_refuses_a_lora_of_another_width_naming_the_first_differing_tensor(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    model = demo / "tiny_ltx2.safetensors"
    lora = _write_lora(tmp_path / "wide.safetensors", model, blocks=2, widen=16)
    code, text = _eval(demo, lora, tmp_path / "sweep")
    assert code == 1, text
    weights = transformer_weight_shapes(safetensors_shapes(model))
    out_features, in_features = weights["transformer_blocks.0.audio_attn1.to_k"]
    assert (
        "the first differing tensor is diffusion_model.transformer_blocks.0.audio_attn1.to_k.lora_A.weight: "
        f"[4, {in_features + 16}], while the model's transformer_blocks.0.audio_attn1.to_k.weight is "
        f"[{out_features}, {in_features}] (out x in), so it must be [4, {in_features}]: it was trained for a model of "
        "another width" in text
    )
    assert not (tmp_path / "sweep").exists()


def test_a_lora_of_a_smaller_model_is_refused_and_a_partial_custom_one_noted(demo: Path, tmp_path: Path) -> None:
    # A 4-block "model" header: the demo's 2 blocks twice.
    shapes = safetensors_shapes(demo / "tiny_ltx2.safetensors")
    four = dict(shapes)
    for key, shape in shapes.items():
        if ".transformer_blocks.0." in key or ".transformer_blocks.1." in key:
            four[
                key.replace(".transformer_blocks.0.", ".transformer_blocks.2.").replace(
                    ".transformer_blocks.1.", ".transformer_blocks.3."
                )
            ] = shape
    lora = _write_lora(tmp_path / "two.safetensors", demo / "tiny_ltx2.safetensors", blocks=2)
    fit = lora_fit(safetensors_shapes(lora), four, lora_path=lora, model_path="four-blocks")
    assert fit.problems == [
        f"{lora} does not fit the model in four-blocks: the LoRA covers 2 transformer blocks (0-1), the model has 4: "
        "blocks 2-3 would get no LoRA. It was trained for a smaller model (the first block without it is 2): pass a "
        "LoRA of this model"
    ]
    partial = {
        k: v for k, v in safetensors_shapes(lora).items() if ".transformer_blocks.1." not in k or "audio_ff" in k
    }
    fit = lora_fit(partial, four, lora_path=lora, model_path="four-blocks")
    assert fit.ok
    assert fit.notes == [f"{lora} adapts 2 of the model's 4 transformer blocks (0-1)"]


def test_the_target_set_is_compared_per_block() -> None:
    weights = {f"transformer_blocks.0.{m}": (16, 16) for m in (*AUDIO_MODULES, *BRIDGE_MODULES)}
    lora = {f"transformer_blocks.0.{m}": {"A": (4, 16), "B": (16, 4)} for m in AUDIO_MODULES}
    assert target_problems(lora, weights, AUDIO_MODULES, head="x", targets_label="lora_preset 'audio'") == []
    wider = target_problems(
        lora, weights, (*AUDIO_MODULES, *BRIDGE_MODULES), head="x", targets_label="lora_preset 'audio+bridges'"
    )
    assert wider == [
        "x: it lacks 8 module(s) that lora_preset 'audio+bridges' adapts (the first is "
        "diffusion_model.transformer_blocks.0.audio_to_video_attn.to_k.lora_A.weight): it was trained with another "
        "LoRA preset or target list"
    ]


def _check(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["check", str(config)], env={"COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.split())


def test_check_refuses_a_resume_from_a_lora_of_another_rank_before_anything_loads(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    lora = _write_lora(tmp_path / "lora_weights_step_00001.safetensors", demo / "tiny_ltx2.safetensors", blocks=2)
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["output_dir"] = str(tmp_path / "out")
    config["model"]["load_checkpoint"] = str(lora)
    config["lora"] = {"rank": 8, "alpha": 8}
    path = tmp_path / "rank8.yaml"
    path.write_text(yaml.safe_dump(config))
    code, text = _check(path)
    assert code == 1, text
    assert (
        f"config model.load_checkpoint: {lora} does not fit the model in {demo / 'tiny_ltx2.safetensors'}: the first "
        "differing tensor is diffusion_model.transformer_blocks.0.audio_attn1.to_k.lora_A.weight: [4, " in text
    )
    assert "is rank 4, while lora.rank is 8: it was trained with another LoRA rank" in text
    config["lora"] = {"rank": 4, "alpha": 4}
    path.write_text(yaml.safe_dump(config))
    code, text = _check(path)
    assert code == 0, text
