"""The CLI through typer's CliRunner: help, strategies, check on each bad input, demo, plugin commands."""

from __future__ import annotations

import logging
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


def test_quantization_lists_every_backend_with_what_the_compiler_sees(fresh_pm: pluggy.PluginManager) -> None:
    code, out = _invoke("quantization")
    assert code == 0
    for name in ("int8-quanto", "int4-quanto", "fp8uz-quanto", "int8", "int8-dynamic"):
        assert f" {name} " in out
    assert out.count("opaque") == 5  # the five optimum-quanto values
    assert "checked for cpu" in out


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


# ---------------------------------------------------------------------------------------------------------------
# Faults around training start: `check` names each, with its fix, and writes nothing
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"optimization__steps": 0}, "config optimization.steps: expected an integer >= 1; found 0. Set it to"),
        ({"optimization__batch_size": 0}, "config optimization.batch_size: expected an integer >= 1; found 0."),
        (
            {"model__text_encoder_path": None},
            "config model.text_encoder_path: required; found nothing. Set it to the Gemma-3 folder",
        ),
        ({"output_dir": "/proc/ltx_run"}, "config output_dir: /proc/ltx_run cannot be created in /proc ("),
        (
            {"model__load_checkpoint": "/nonexistent/checkpoints"},
            "config model.load_checkpoint: /nonexistent/checkpoints does not exist. Point it at a checkpoints folder",
        ),
    ],
    ids=["steps-0", "batch-0", "no-text-encoder", "output-under-proc", "missing-checkpoint"],
)
def test_check_names_run_settings_that_cannot_train(
    demo_dir: Path, fresh_pm: pluggy.PluginManager, changes: dict, expected: str
) -> None:
    config = _edit_config(demo_dir, **changes)
    if changes.get("model__text_encoder_path", "") is None:
        data = yaml.safe_load(config.read_text())
        del data["model"]["text_encoder_path"]
        config.write_text(yaml.safe_dump(data))
    before = _snapshot(demo_dir)
    code, out = _invoke("check", str(config))
    assert code == 1, out
    assert expected in out
    assert "1 problem(s)" in out
    assert _snapshot(demo_dir) == before


def test_check_names_an_output_dir_that_is_a_file(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    (demo_dir / "outputs").write_text("not a folder")
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert f"config output_dir: expected a folder; found the file {demo_dir / 'outputs'}. Point output_dir at" in out


def test_check_refuses_references_equal_to_their_targets(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    data = demo_dir / "data"
    for path in (data / "audio_latents").glob("*.pt"):
        path.write_bytes(path.read_bytes())
        (data / "reference_audio_latents" / path.name).write_bytes(path.read_bytes())
    before = _snapshot(demo_dir)
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert "reference_audio_latents/: expected references that differ from their target in audio_latents/" in out
    assert "found 3 of 3 equal to their target" in out
    assert "make each reference from another clip than its target" in out
    assert _snapshot(demo_dir) == before


def test_check_refuses_a_video_file_in_the_audio_folder(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    data = demo_dir / "data"
    (data / "audio_latents" / "sample_001.pt").write_bytes((data / "latents" / "sample_001.pt").read_bytes())
    code, out = _invoke("check", str(demo_dir / "config.yaml"))
    assert code == 1
    assert "audio_latents/sample_001.pt: expected audio data (latents [8, T, 16]) as in every file of" in out
    assert "found video data (latents [128, F, H, W]); this file belongs in another folder" in out


def test_check_refuses_unequal_targets_and_too_few_samples_for_the_batch(
    demo_dir: Path, fresh_pm: pluggy.PluginManager
) -> None:
    path = demo_dir / "data" / "audio_latents" / "sample_001.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(8, 11, 16)
    data["num_time_steps"] = 11
    torch.save(data, path)
    code, out = _invoke("check", str(_edit_config(demo_dir, optimization__batch_size=4)))
    assert code == 1
    assert "audio_latents/: expected one length in every sample for batch_size 4" in out
    assert "11 time steps (0.44 s) in sample_001.pt; trim or pad them to one length, or set" in out
    assert "expected at least 4 complete samples for batch_size 4" in out
    assert "found 3; add samples or set optimization.batch_size: 3" in out


def test_check_notes_long_references_in_seconds_and_passes(demo_dir: Path, fresh_pm: pluggy.PluginManager) -> None:
    config = _edit_config(demo_dir, optimization__batch_size=1)
    path = demo_dir / "data" / "reference_audio_latents" / "sample_002.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(8, 600, 16)
    data["num_time_steps"] = 600
    torch.save(data, path)
    code, out = _invoke("check", str(config))
    assert code == 0, out
    assert "are longer than their target (most: sample_002.pt, 24.00 s of reference for 0.32 s of target)" in out
    assert "sample_002.pt (24.00 s) starts 24.04 s before the target (with the 0.04 s gap), more than the 20 s" in out
    assert "Trim references to at most 19.96 s" in out


def test_stop_signals_raise_a_stop_and_leave_ignored_signals_ignored() -> None:
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from ltx_audio_reference.cli.interrupt import TrainingStopped, stop_signals  # noqa: PLC0415

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as raised, stop_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert (raised.value.name, raised.value.exit_code) == ("SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is before
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGINT)  # ignored, as the caller (nohup, a background job) asked
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_stop_message_names_the_newest_complete_pair_and_the_resume_line(tmp_path: Path) -> None:
    import signal  # noqa: PLC0415

    from safetensors.torch import save_file  # noqa: PLC0415

    from ltx_audio_reference.cli.interrupt import TrainingStopped, stopped_message  # noqa: PLC0415

    folder = tmp_path / "out" / "checkpoints"
    folder.mkdir(parents=True)
    stop = TrainingStopped(signal.SIGINT)
    assert stopped_message(stop, tmp_path / "out", "c.yaml") == [
        "Training stopped by SIGINT.",
        f"No complete checkpoint was saved under {folder}: running again starts at step 0.",
    ]
    for step in (2, 4):
        save_file({"w": torch.zeros(1)}, str(folder / f"lora_weights_step_{step:05d}.safetensors"))
    torch.save({"step": 2}, folder / "training_state_step_00002.pt")  # step 4's state never made it
    assert stopped_message(stop, tmp_path / "out", "c.yaml") == [
        "Training stopped by SIGINT.",
        f"The last complete checkpoint is {folder / 'lora_weights_step_00002.safetensors'} (with its training state).",
        "To resume from it, set in c.yaml:",
        "  model:",
        f"    load_checkpoint: {folder}",
        "and run `ltx-trainer train c.yaml` again.",
    ]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_drops_bitsandbytes_hub_kernel_warning_and_keeps_its_other_messages(
    verbose: bool, fresh_pm: pluggy.PluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    bnb_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    saved = list(bnb_logger.filters)
    bnb_logger.filters.clear()  # earlier CLI invocations in this process installed the filter
    try:
        code, _ = _invoke(*(["-v"] if verbose else []), "strategies")
        assert code == 0
        with caplog.at_level(logging.WARNING, logger=bnb_logger.name):
            # The message exactly as bitsandbytes 0.50 logs it, with its %s argument.
            bnb_logger.warning(
                "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                "`pip install kernels` and the kernels >= 0.11.1",
                ModuleNotFoundError("No module named 'kernels'"),
            )
            bnb_logger.warning("some other bitsandbytes warning")
        messages = [r.getMessage() for r in caplog.records if r.name == bnb_logger.name]
        assert "some other bitsandbytes warning" in messages
        assert any("gemm_4bit_forward" in m for m in messages) == verbose, messages
    finally:
        bnb_logger.filters[:] = saved


def test_demo_over_a_trained_demo_is_refused_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "d"
    code, out = _invoke("demo", str(root), "--steps", "2")
    assert code == 0, out
    checkpoints = root / "outputs" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "lora_weights_step_00002.safetensors").write_bytes(b"trained")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    code, out = _invoke("demo", str(root), "--steps", "2")
    assert code == 1, out
    assert f"error: {root} holds a demo that was trained" in " ".join(out.split())
    assert "Nothing was written" in out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("logger_name", "noise"),
    [
        (
            "transformers.modeling_rope_utils",
            "Unrecognized keys in `rope_parameters` for 'rope_type'='default': {'full_attention', 'sliding_attention'}",
        ),
        ("ltx_core.model.transformer.model", "Building transformer with attention backends -- self: %s, masked: %s"),
    ],
)
@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_drops_two_noisy_third_party_lines_and_keeps_their_loggers_other_messages(
    verbose: bool, logger_name: str, noise: str, fresh_pm: pluggy.PluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    noisy = logging.getLogger(logger_name)
    saved = list(noisy.filters)
    noisy.filters.clear()  # earlier CLI invocations in this process installed the filter
    try:
        code, _ = _invoke(*(["-v"] if verbose else []), "strategies")
        assert code == 0
        with caplog.at_level(logging.INFO, logger=logger_name):
            noisy.warning(noise, *(["SDPA", "SDPA"] if "%s" in noise else []))
            noisy.warning("another message of this logger")
        messages = [r.getMessage() for r in caplog.records if r.name == logger_name]
        assert "another message of this logger" in messages
        assert any(m.startswith(noise[:30]) for m in messages) == verbose, messages
    finally:
        noisy.filters[:] = saved
