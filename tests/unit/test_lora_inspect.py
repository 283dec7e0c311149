"""``audio-reference inspect``: key convention, preset detection, problems that exit non-zero, and the distance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.evaluation.lora_inspect import detect_preset, inspect_lora, lora_distance
from ltx_audio_reference.strategies.audio_reference.lora_targets import expand_lora_targets
from ltx_audio_reference.testing.tiny_model import build_tiny_model

runner = CliRunner()
RANK = 4


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return build_tiny_model()


def _lora_tensors(model: torch.nn.Module, preset: str, seed: int) -> dict[str, torch.Tensor]:
    """LoRA factors with the real shapes of the tiny model's preset modules, keyed as the trainer exports them."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    tensors = {}
    for name in expand_lora_targets(model, preset):
        linear = modules[name]
        tensors[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(RANK, linear.in_features, generator=generator)
        tensors[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(linear.out_features, RANK, generator=generator)
    return tensors


def _save(path: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16) -> Path:
    metadata = {"strategy": "audio_reference", "lora_rank": "4", "reference_gap_s": "0.04"}
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), ["audio-reference", "inspect", *args], terminal_width=250)
    return result.exit_code, result.output


def test_clean_export_reports_count_dtype_preset_and_metadata(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    path = _save(tmp_path / "lora.safetensors", _lora_tensors(tiny_model, "audio", seed=0))
    report = inspect_lora(path)
    assert report.ok, report.problems
    assert report.num_tensors == 40  # 2 blocks x 10 audio Linear layers x (A, B)
    assert report.dtypes == {"bfloat16": 40}
    assert (report.preset, report.num_blocks, report.ranks) == ("audio", 2, [RANK])
    assert report.metadata == {"strategy": "audio_reference", "lora_rank": 4, "reference_gap_s": 0.04}

    code, out = _invoke(str(path))
    assert code == 0, out
    assert "audio (2 blocks, 20 modules)" in out
    assert "audio_ff.net.0.proj" in out


def test_norms_are_those_of_b_times_a(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    tensors = _lora_tensors(tiny_model, "audio", seed=1)
    path = _save(tmp_path / "lora.safetensors", tensors, dtype=torch.float32)
    report = inspect_lora(path)
    total = 0.0
    for m in report.modules:
        a = tensors[f"diffusion_model.{m.module}.lora_A.weight"].double()
        b = tensors[f"diffusion_model.{m.module}.lora_B.weight"].double()
        expected = float(torch.linalg.matrix_norm(b @ a))
        assert m.norm_delta == pytest.approx(expected, rel=1e-9)
        assert m.norm_a == pytest.approx(float(a.norm()), rel=1e-9)
        total += expected**2
    assert report.total_delta_norm == pytest.approx(math.sqrt(total), rel=1e-9)


def test_audio_plus_bridges_and_other_presets(tiny_model: torch.nn.Module) -> None:
    bridges = [
        key.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0]
        for key in _lora_tensors(tiny_model, "audio+bridges", 0)
    ]
    assert detect_preset(bridges) == ("audio+bridges", 2)
    audio = expand_lora_targets(tiny_model, "audio")
    assert detect_preset(audio) == ("audio", 2)
    assert detect_preset(audio[1:]) == ("other", 2)  # block 0 lacks one module
    assert detect_preset([*audio, "transformer_blocks.0.attn1.to_q"]) == ("other", 2)
    assert detect_preset([*audio, "audio_proj_out"]) == ("other", 2)


def test_nan_tensor_exits_non_zero_naming_it(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    tensors = _lora_tensors(tiny_model, "audio", seed=0)
    bad = "diffusion_model.transformer_blocks.1.audio_attn2.to_v.lora_B.weight"
    tensors[bad][3, 1] = float("nan")
    tensors[bad][0, 0] = float("inf")
    path = _save(tmp_path / "nan.safetensors", tensors)
    code, out = _invoke(str(path))
    assert code == 1
    assert f"{bad}: 1 NaN and 1 Inf" in out
    assert inspect_lora(path).non_finite_tensors == [bad]


def test_alpha_and_unknown_keys_exit_non_zero_naming_them(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    tensors = _lora_tensors(tiny_model, "audio", seed=0)
    tensors["diffusion_model.transformer_blocks.0.audio_attn1.to_q.alpha"] = torch.tensor(4.0)
    tensors["base_model.model.transformer_blocks.0.audio_attn1.to_k.lora_A.default.weight"] = torch.zeros(RANK, 16)
    tensors["audio_scale_shift_table.weight"] = torch.zeros(4, 16)
    path = _save(tmp_path / "alpha.safetensors", tensors)
    code, out = _invoke(str(path))
    assert code == 1
    assert "diffusion_model.transformer_blocks.0.audio_attn1.to_q.alpha: alpha key" in out
    assert "1 key(s) in peft format" in out
    assert "e.g. base_model.model.transformer_blocks.0.audio_attn1.to_k.lora_A.default.weight" in out
    assert "audio_scale_shift_table.weight: unknown key" in out
    assert inspect_lora(path).key_format == "mixed"

    code, out = _invoke(str(path), "--json")
    assert code == 1
    document = json.loads(out)
    assert len(document["files"][0]["bad_keys"]) == 3


def test_lone_factor_is_a_problem(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    tensors = _lora_tensors(tiny_model, "audio", seed=0)
    del tensors["diffusion_model.transformer_blocks.0.audio_ff.net.2.lora_B.weight"]
    report = inspect_lora(_save(tmp_path / "lone.safetensors", tensors))
    assert report.problems == ["diffusion_model.transformer_blocks.0.audio_ff.net.2.lora_A.weight: no matching lora_B"]
    assert report.preset == "other"


def test_distance_matches_a_hand_computation(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    first = _lora_tensors(tiny_model, "audio", seed=0)
    # The second file: the first plus a small perturbation, as two checkpoints of one run are.
    generator = torch.Generator().manual_seed(7)
    second = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in first.items()}
    p = _save(tmp_path / "p.safetensors", first, dtype=torch.float32)
    q = _save(tmp_path / "q.safetensors", second, dtype=torch.float32)

    diff_sq = ref_sq = raw_diff_sq = raw_ref_sq = 0.0
    for key in first:
        raw_diff_sq += float((second[key].double() - first[key].double()).pow(2).sum())
        raw_ref_sq += float(first[key].double().pow(2).sum())
        if key.endswith("lora_A.weight"):
            b_key = key.replace("lora_A", "lora_B")
            dw_p = first[b_key].double() @ first[key].double()
            dw_q = second[b_key].double() @ second[key].double()
            diff_sq += float((dw_q - dw_p).pow(2).sum())
            ref_sq += float(dw_p.pow(2).sum())

    distance = lora_distance(p, q)
    assert distance.relative_delta_distance == pytest.approx(math.sqrt(diff_sq / ref_sq), rel=1e-9)
    assert distance.relative_raw_distance == pytest.approx(math.sqrt(raw_diff_sq / raw_ref_sq), rel=1e-9)
    assert distance.modules_compared == 20
    assert lora_distance(p, p).relative_delta_distance == pytest.approx(0.0, abs=1e-7)

    code, out = _invoke(str(p), str(q), "--json")
    assert code == 0, out
    assert json.loads(out)["distance"]["relative_delta_distance"] == pytest.approx(math.sqrt(diff_sq / ref_sq))


def test_delta_distance_ignores_the_factorisation(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    first = _lora_tensors(tiny_model, "audio", seed=3)
    gauge = torch.eye(RANK, dtype=torch.float64) + 0.5 * torch.ones(RANK, RANK, dtype=torch.float64).triu(1)
    second = {}
    for key, value in first.items():
        if key.endswith("lora_A.weight"):
            second[key] = torch.linalg.inv(gauge) @ value.double()  # A -> G^-1 A
        else:
            second[key] = value.double() @ gauge  # B -> B G
    p = _save(tmp_path / "p.safetensors", first, dtype=torch.float64)
    q = _save(tmp_path / "q.safetensors", second, dtype=torch.float64)
    distance = lora_distance(p, q)
    assert distance.relative_delta_distance == pytest.approx(0.0, abs=1e-6)
    assert distance.relative_raw_distance > 0.1


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    code, out = _invoke(str(bad))
    assert code == 2
    assert "not a readable safetensors file" in out


def _strict_loads(text: str) -> object:
    """json.loads that refuses NaN and Infinity, as RFC 8259 and most parsers do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_valid_json_and_names_each_non_finite_value(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    tensors = _lora_tensors(tiny_model, "audio", seed=0)
    nan_key = "diffusion_model.transformer_blocks.1.audio_attn2.to_v.lora_B.weight"
    inf_key = "diffusion_model.transformer_blocks.0.audio_ff.net.2.lora_A.weight"
    tensors[nan_key][3, 1] = float("nan")
    tensors[inf_key][0, 0] = float("inf")
    path = _save(tmp_path / "nan.safetensors", tensors, dtype=torch.float32)
    code, out = _invoke(str(path), "--json")
    assert code == 1
    document = _strict_loads(out)  # stock json.dumps wrote bare NaN here, which this refuses
    report = document["files"][0]
    modules = {m["module"]: (i, m) for i, m in enumerate(report["modules"])}
    nan_index, nan_module = modules["transformer_blocks.1.audio_attn2.to_v"]
    inf_index, inf_module = modules["transformer_blocks.0.audio_ff.net.2"]
    assert nan_module["norm_b"] is None
    assert nan_module["norm_delta"] is None
    assert inf_module["norm_a"] is None
    assert report["total_delta_norm"] is None
    assert document["non_finite_values"] == {
        f"/files/0/modules/{inf_index}/norm_a": "Infinity",
        f"/files/0/modules/{inf_index}/norm_delta": "NaN",  # Inf * 0 in the Gram product
        f"/files/0/modules/{nan_index}/norm_b": "NaN",
        f"/files/0/modules/{nan_index}/norm_delta": "NaN",
        "/files/0/total_delta_norm": "NaN",
    }
    assert report["non_finite_tensors"] == sorted([nan_key, inf_key])
    assert (
        _strict_loads(
            _invoke(str(_save(tmp_path / "ok.safetensors", _lora_tensors(tiny_model, "audio", 1))), "--json")[1]
        )["non_finite_values"]
        == {}
    )


def _kohya_tensors(blocks: int, modules: tuple[str, ...], rank: int = RANK) -> dict[str, torch.Tensor]:
    """A kohya-ss (musubi-tuner style) LoRA: lora_unet_<path with _>.lora_down / .lora_up and a scalar alpha."""
    tensors = {}
    for block in range(blocks):
        for module in modules:
            stem = f"lora_unet_transformer_blocks_{block}_{module.replace('.', '_')}"
            tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, 16)
            tensors[f"{stem}.lora_up.weight"] = torch.randn(16, rank)
            tensors[f"{stem}.alpha"] = torch.tensor(float(rank))
    return tensors


def test_a_kohya_lora_is_named_in_one_line_not_one_per_tensor(tmp_path: Path) -> None:
    from ltx_audio_reference.strategies.audio_reference.lora_targets import PRESETS  # noqa: PLC0415

    tensors = _kohya_tensors(48, PRESETS["audio"])  # the 22B's 48 blocks x 10 audio modules x 3 tensors
    assert len(tensors) == 1440
    path = _save(tmp_path / "kohya.safetensors", tensors)
    report = inspect_lora(path)
    assert report.key_format == "kohya"
    assert len(report.bad_keys) == 1440
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert problem.startswith("1440 key(s) in kohya format (lora_unet_<module path with _>.lora_down.weight")
    assert "ComfyUI and ltx-core read diffusion_model.<module>.lora_A.weight / .lora_B.weight with no alpha" in problem
    assert "e.g. lora_unet_transformer_blocks_0_audio_attn1_to_k.lora_down.weight" in problem
    assert "rename lora_down to lora_A and lora_up to lora_B" in problem

    code, out = _invoke(str(path))
    assert code == 1
    assert out.count("problem:") == 1
    assert "unknown key" not in out
    assert "alpha key" not in out
    assert "kohya" in out


def test_a_diffusers_lora_is_named_with_the_prefix_to_change(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    tensors = {
        "transformer." + k.removeprefix("diffusion_model."): v for k, v in _lora_tensors(tiny_model, "audio", 0).items()
    }
    report = inspect_lora(_save(tmp_path / "diffusers.safetensors", tensors))
    assert report.key_format == "diffusers"
    assert report.problems == [
        "40 key(s) in diffusers format (transformer.<module>.lora_A.weight / .lora_B.weight), e.g. "
        "transformer.transformer_blocks.0.audio_attn1.to_k.lora_A.weight: ComfyUI and ltx-core read "
        "diffusion_model.<module>.lora_A.weight / .lora_B.weight with no alpha (ltx-core fuses only lora_A/lora_B "
        "pairs, so these keys would be skipped); to use this file, replace the transformer. prefix with "
        "diffusion_model."
    ]
    assert inspect_lora(_save(tmp_path / "ours.safetensors", _lora_tensors(tiny_model, "audio", 0))).key_format == (
        "comfyui"
    )


def test_a_training_state_or_config_is_named_as_not_a_lora(tmp_path: Path) -> None:
    state = tmp_path / "training_state_step_00004.pt"
    torch.save({"step": 4}, state)
    code, out = _invoke(str(state))
    assert code == 2
    assert "a training state or latent (.pt), not a LoRA: pass checkpoints/lora_weights_step_NNNNN.safetensors" in out
    config = tmp_path / "config.yaml"
    config.write_text("model: {}\n")
    code, out = _invoke(str(config))
    assert code == 2
    assert "a config, not a LoRA" in out
