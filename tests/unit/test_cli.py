"""The CLI through typer's CliRunner: help, strategies, check on each bad input, demo, plugin commands."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from ltx_audio_reference.cli import apply_strategy_override, build_app
from ltx_audio_reference.testing.demo import write_demo

runner = CliRunner()
AVAILABLE = ["text_to_video", "video_to_video", "flexible", "audio_reference"]


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A fresh demo (checkpoint, text encoder, data, config) in a private folder."""
    target = tmp_path / "demo"
    write_demo(target, steps=2, num_samples=3)
    return target


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), list(args))
    # Rich wraps long lines in boxes; compare on whitespace-normalized text.
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def _edit_config(demo_dir: Path, **changes: object) -> Path:
    path = demo_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_lists_the_builtin_commands(fresh_pm: pluggy.PluginManager) -> None:
    code, out = _invoke("--help")
    assert code == 0
    for command in ("train", "strategies", "check", "demo"):
        assert command in out


def test_strategies_lists_stock_and_registered(fresh_pm: pluggy.PluginManager) -> None:
    code, out = _invoke("strategies")
    assert code == 0
    for name in AVAILABLE:
        assert name in out
    assert "plugin audio_reference" in out


def test_third_party_plugin_strategy_and_command(example_plugin: pluggy.PluginManager) -> None:
    code, out = _invoke("strategies")
    assert code == 0
    assert "example_t2v" in out
    assert "plugin example" in out
    code, out = _invoke("example-hello", "--name", "ltx")
    assert code == 0
    assert out.strip() == "hello ltx from the example plugin"


def test_demo_writes_checkpoint_text_encoder_dataset_and_config(tmp_path: Path, fresh_pm: pluggy.PluginManager) -> None:
    code, out = _invoke("demo", str(tmp_path / "d"), "--steps", "3")
    assert code == 0, out
    root = tmp_path / "d"
    assert (root / "tiny_ltx2.safetensors").is_file()
    assert (root / "text_encoder" / "config.json").is_file()
    for folder in ("conditions", "latents", "audio_latents", "reference_audio_latents"):
        assert len(list((root / "data" / folder).glob("*.pt"))) == 4
    config = yaml.safe_load((root / "config.yaml").read_text())
    assert config["training_strategy"]["name"] == "audio_reference"
    assert config["optimization"]["steps"] == 3
    assert config["lora"]["rank"] == config["lora"]["alpha"]


def test_write_demo_builds_the_requested_block_count_and_refuses_an_unknown_width(tmp_path: Path) -> None:
    from safetensors.torch import load_file  # noqa: PLC0415

    write_demo(tmp_path / "d", steps=1, num_samples=2, num_layers=3)
    keys = load_file(str(tmp_path / "d" / "tiny_ltx2.safetensors"))
    blocks = {int(k.split("transformer_blocks.")[1].split(".")[0]) for k in keys if "transformer_blocks." in k}
    assert blocks == {0, 1, 2}
    with pytest.raises(ValueError, match="width must be 'tiny' or 'full'"):
        write_demo(tmp_path / "e", width="wide")  # type: ignore[arg-type]


def test_check_accepts_the_demo_and_writes_nothing(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    before = _snapshot(demo_dir)
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 0, out
    assert "OK" in out
    assert "reference_audio_latents" in out
    assert _snapshot(demo_dir) == before


def test_check_missing_folder(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    folder = demo_dir / "data" / "audio_latents"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert "audio_latents/: expected a folder required by the training strategy; found no such folder" in out


def test_check_missing_paired_file(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    (demo_dir / "data" / "reference_audio_latents" / "sample_002.pt").unlink()
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert "reference_audio_latents/sample_002.pt: expected a file paired with" in out
    assert "found missing" in out


def test_check_wrong_latent_channels(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    path = demo_dir / "data" / "latents" / "sample_001.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(96, 2, 2, 2)
    torch.save(data, path)
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert "sample_001.pt [latents]: expected [128, F, H, W] video latents; found shape [96, 2, 2, 2]" in out


def test_check_nan_latent(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    path = demo_dir / "data" / "reference_audio_latents" / "sample_000.pt"
    data = torch.load(path, weights_only=True)
    data["latents"][:, 0] = float("nan")
    torch.save(data, path)
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert "sample_000.pt [latents]: expected finite values; found 128 NaN/Inf" in out


def test_check_unknown_strategy_name_lists_registered(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    config = _edit_config(demo_dir, training_strategy={"name": "audio_refrence"})
    code, out = _invoke("check", str(config))
    assert code == 1
    assert "'audio_refrence'" in out
    for name in AVAILABLE:
        assert name in out


def test_check_unknown_key_in_strategy_section(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    config = _edit_config(demo_dir, training_strategy__reference_gap=0.04)
    code, out = _invoke("check", str(config))
    assert code == 1
    assert "reference_gap" in out
    assert "Extra inputs are not permitted" in out


def test_check_missing_config_file(tmp_path: Path, fresh_pm: pluggy.PluginManager) -> None:
    code, out = _invoke("check", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "does not exist" in out


def test_strategy_override_uses_defaults_without_a_section() -> None:
    assert apply_strategy_override({"a": 1}, "audio_reference", AVAILABLE) == {
        "a": 1,
        "training_strategy": {"name": "audio_reference"},
    }


def test_strategy_override_keeps_a_matching_section() -> None:
    data = {"training_strategy": {"name": "audio_reference", "reference_gap_s": 0.08}}
    assert apply_strategy_override(data, "audio_reference", AVAILABLE) == data


def test_strategy_override_wins_over_the_yaml_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = {"training_strategy": {"name": "flexible", "video": {}}}
    result = apply_strategy_override(data, "audio_reference", AVAILABLE)
    assert result["training_strategy"] == {"name": "audio_reference"}
    assert data["training_strategy"]["name"] == "flexible"  # the input is not modified
    assert any("overrides training_strategy.name 'flexible'" in r.getMessage() for r in caplog.records)


def test_strategy_override_rejects_unknown_names() -> None:
    with pytest.raises(typer.BadParameter, match="Available: text_to_video, video_to_video, flexible, audio_reference"):
        apply_strategy_override({}, "nope", AVAILABLE)


@pytest.mark.parametrize(("value", "message"), [("0,-1", "finite and >= 0"), ("0,nan", "finite"), ("0,x", "0,0.5,1,3")])
def test_eval_refuses_a_bad_reference_guidance_scale_and_writes_nothing(
    demo_dir: Path, fresh_pm: pluggy.PluginManager, value: str, message: str
) -> None:
    out_dir = demo_dir / "sweep"
    code, out = _invoke(
        "audio-reference", "eval", str(demo_dir / "config.yaml"), "--out", str(out_dir), "--reference-guidance", value
    )
    assert code == 2
    assert message in out
    assert not out_dir.exists()


def test_sweep_arm_names_keep_the_plain_name_at_scale_zero() -> None:
    from ltx_audio_reference.evaluation.sweep import arm_label, guidance_scales  # noqa: PLC0415

    assert [arm_label("lora", s) for s in guidance_scales([0, 0.5, 1, 3, 3.0])] == [
        "lora",
        "lora_rg0.5",
        "lora_rg1",
        "lora_rg3",
    ]
    with pytest.raises(ValueError, match="same arm names"):
        guidance_scales([0.1234567, 0.1234568])
    with pytest.raises(ValueError, match=">= 0"):
        guidance_scales([-1])
