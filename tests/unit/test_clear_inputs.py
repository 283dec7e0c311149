"""Tier 1: inputs mean what they say, and messages say what is wrong.

A key written twice in a YAML config, recipe or manifest is refused naming both lines (PyYAML keeps the last); a
relative path that does not exist says where it was looked for; a 0-byte or pickled ``.pt`` reads the same in
``check`` and at training start and says how to fix it; a reference gap in milliseconds is named as such;
``inspect`` names a model checkpoint and a folder; ``build-dataset`` refuses a folder without clips and an empty
result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import write_wav
from ltx_audio_reference.data.check import load_sample_file
from ltx_audio_reference.reliability.parsing import DuplicateKeyError, load_yaml, read_yaml
from ltx_audio_reference.testing.demo import write_demo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("inputs") / "demo", steps=2, num_samples=2).parent


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def _line_of(text: str, needle: str, start: int = 0) -> int:
    return text.splitlines().index(needle, start) + 1


# ---------------------------------------------------------------------------------------------------------------
# Duplicate keys
# ---------------------------------------------------------------------------------------------------------------


def test_a_second_optimization_block_is_refused_naming_both_lines(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    text = (demo / "config.yaml").read_text()
    text += "\noptimization:\n  learning_rate: 0.0001\n  steps: 1\n  scheduler_type: linear\n"
    config = tmp_path / "config.yaml"
    config.write_text(text)
    first = _line_of(text, "optimization:")
    second = _line_of(text, "optimization:", first)
    code, output = _run("check", str(config))
    assert code == 2, output  # typer's bad-parameter exit: the file cannot be read as meant
    assert (
        f"{config}: key 'optimization' is written twice (lines {first} and {second}); YAML keeps only the last, so "
        f"the settings at line {first} would be ignored without a word. Keep one 'optimization' (merge the two)"
        in output
    )
    assert "OK" not in output


def test_a_config_that_is_not_utf8_is_named_with_its_line_not_a_traceback(demo: Path, tmp_path: Path) -> None:
    text = (demo / "config.yaml").read_text()
    config = tmp_path / "config.yaml"
    config.write_bytes(text.encode() + "# r\u00e9glage\n".encode("latin-1"))  # one Latin-1 byte in a comment
    line = text.count("\n") + 1
    code, output = _run("check", str(config))
    assert code == 2, output
    assert f"{config}: not UTF-8 text (byte 0xe9 on line {line}); save it as UTF-8" in output
    assert "Traceback" not in output  # train reads the file through the same reader (tier 2 has the trainer)


def test_a_folder_given_as_the_config_is_named_as_a_folder(tmp_path: Path) -> None:
    code, output = _run("check", str(tmp_path))
    assert code == 2, output
    assert f"{tmp_path} is a folder: pass the training config's .yaml file" in output


def test_duplicates_are_found_at_any_depth_and_merge_keys_still_override() -> None:
    with pytest.raises(DuplicateKeyError) as raised:
        load_yaml("lora:\n  rank: 4\n  alpha: 4\n  rank: 8\nsamples:\n  - {prompt: a, prompt: b}\n", "c.yaml")
    assert str(raised.value).splitlines() == [
        "c.yaml: key 'lora.rank' is written twice (lines 2 and 4); YAML keeps only the last, so the settings at line 2 "
        "would be ignored without a word. Keep one 'lora.rank' (merge the two)",
        "c.yaml: key 'samples[0].prompt' is written twice (lines 6 and 6); YAML keeps only the last, so the settings "
        "at line 6 would be ignored without a word. Keep one 'samples[0].prompt' (merge the two)",
    ]
    merged = load_yaml("base: &b {lr: 1, steps: 2}\nrun:\n  <<: *b\n  lr: 3\nother: *b\n")
    assert merged == {"base": {"lr": 1, "steps": 2}, "run": {"lr": 3, "steps": 2}, "other": {"lr": 1, "steps": 2}}


@pytest.mark.parametrize(
    "path",
    sorted([*(REPO / "configs").rglob("*.yaml"), *(REPO / "recipes").rglob("*.yaml")]),
    ids=lambda p: p.name,
)
def test_every_shipped_config_and_recipe_reads_with_no_key_written_twice(path: Path) -> None:
    assert isinstance(read_yaml(path), dict)


def test_a_recipe_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    text = (REPO / "recipes" / "helium" / "bounded.yaml").read_text() + "\nseed: 7\n"
    recipe.write_text(text)
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("seed:"))
    code, output = _run(
        "audio-reference", "build-dataset", str(recipe), "--input", str(tmp_path), "--output", str(tmp_path / "o")
    )
    assert code == 1, output
    assert f"{recipe}: key 'seed' is written twice (lines {first} and {len(text.splitlines())})" in output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_a_manifest_with_a_repeated_key_or_column_is_refused(tmp_path: Path, kind: str) -> None:
    write_wav(tmp_path / "a.wav", np.zeros((1, 16000), dtype=np.float32), 16000)
    if kind == "json":
        manifest = tmp_path / "m.json"
        manifest.write_text('[{"video": "a.mp4", "reference_audio": "a.wav", "reference_audio": "b.wav"}]')
        expected = f"{manifest}: key 'reference_audio' is written twice in one object"
    else:
        manifest = tmp_path / "m.csv"
        manifest.write_text("video,reference_audio,reference_audio\na.mp4,a.wav,b.wav\n")
        expected = f"{manifest}: column 'reference_audio' is written twice in the header"
    code, output = _run("audio-reference", "precompute", str(manifest), "--model-path", str(tmp_path / "x"))
    assert code == 1, output
    assert expected in output


def test_a_validation_override_with_a_repeated_key_is_refused(demo: Path, tmp_path: Path) -> None:
    code, output = _run(
        "audio-reference",
        "eval",
        str(demo / "config.yaml"),
        "--out",
        str(tmp_path / "o"),
        "--arms",
        "base",
        "--validation",
        "video_dims={a: 1, a: 2}",
    )
    assert code == 2, output
    assert "key 'a' is written twice" in output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------


def test_a_relative_path_says_it_resolves_against_the_current_folder(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pm: pluggy.PluginManager
) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["model"]["text_encoder_path"] = "text_encoder"  # next to the config, as a user would write it
    config["output_dir"] = str(tmp_path / "out")
    path = demo / "relative.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    code, output = _run("check", str(path))
    path.unlink()
    assert code == 1, output
    assert (
        "config model.text_encoder_path: expected an existing folder or file; found 'text_encoder' (no such file or "
        f"folder) ('text_encoder' is a relative path, resolved against the current folder {tmp_path}, not the "
        f"config's; {demo / 'text_encoder'} exists: write that absolute path, or run from {demo})" in output
    )


@pytest.mark.parametrize("fault", ["empty", "numpy"])
def test_an_empty_or_pickled_latent_reads_the_same_in_check_and_at_training_start(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    data = shutil.copytree(demo / "data", tmp_path / "data")
    path = data / "audio_latents" / "sample_001.pt"
    if fault == "empty":
        path.write_bytes(b"")
        expected = "unreadable: an empty file (0 bytes; a preprocessing run that died while writing it, or a full disk)"
    else:
        torch.save({"latents": np.zeros((8, 4, 16), dtype=np.float32)}, path)
        expected = "which weights_only=True refuses to load (nothing in it was executed). Save tensors and plain "
        expected += "numbers only (torch.from_numpy(array) for a numpy array)"
    # check reads whole files; training start memory-maps them (the stock "mmap can only be used ..." came from there)
    messages = []
    for mmap in (False, True):
        with pytest.raises(ValueError, match="unreadable") as raised:
            load_sample_file(path, mmap=mmap)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert expected in messages[0]
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["data"]["preprocessed_data_root"] = str(data)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    code, output = _run("check", str(tmp_path / "c.yaml"))
    assert code == 1, output
    assert f"{path}: expected a .pt dict of tensors readable with weights_only=True; found unreadable" in output
    assert expected in output


def test_a_reference_gap_in_milliseconds_is_named_as_such(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    config["training_strategy"]["reference_gap_s"] = 40
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    code, output = _run("check", str(tmp_path / "c.yaml"))
    assert code == 1, output
    assert (
        "config training_strategy.reference_gap_s: expected seconds between a reference's end and its target's start, "
        "well inside the 20 s audio RoPE range (0.04 s is one audio latent); found 40 s, which alone reaches past "
        "that range, so every reference would sit outside the positions the model knows. It is in seconds: for 40 ms "
        "write reference_gap_s: 0.04" in output
    )
    assert "Trim references" not in output


def test_inspect_names_a_model_checkpoint_in_one_line_and_a_folder(demo: Path) -> None:
    model = demo / "tiny_ltx2.safetensors"
    code, output = _run("audio-reference", "inspect", str(model))
    assert code == 1, output
    assert "this file is a model checkpoint (its weights and biases), not a LoRA: none of its" in output
    assert "Pass an exported LoRA, such as output_dir/checkpoints/lora_weights_step_N.safetensors" in output
    assert "unknown key" not in output
    code, output = _run("audio-reference", "inspect", str(demo))
    assert code == 2, output
    assert f"{demo} is a folder, not a LoRA file: pass one of its .safetensors files, such as {model}" in output
    assert "no such file" not in output


av = pytest.importorskip("av", reason="build-dataset needs PyAV: pip install -e '.[recipes]'")


def test_build_dataset_refuses_a_folder_without_clips(tmp_path: Path) -> None:
    pytest.importorskip("parselmouth", reason="build-dataset needs praat-parselmouth")
    (tmp_path / "in").mkdir()
    write_wav(tmp_path / "in" / "voice.wav", np.zeros((1, 1600), dtype=np.float32), 16000)
    code, output = _run(
        "audio-reference",
        "build-dataset",
        str(REPO / "recipes" / "helium" / "bounded.yaml"),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
    )
    assert code == 1, output
    assert f"{tmp_path / 'in'}: no video clips (looked for .avi, .m4v, .mkv, .mov, .mp4, .webm" in output
    assert "it holds 1 other file(s), such as voice.wav" in output
    assert not (tmp_path / "out").exists()


def test_build_dataset_that_keeps_no_pair_fails(tmp_path: Path) -> None:
    pytest.importorskip("parselmouth", reason="build-dataset needs praat-parselmouth")
    from ltx_audio_reference.testing.synthetic_audio import write_clip  # noqa: PLC0415

    rng = np.random.default_rng(0)
    write_clip(tmp_path / "in" / "breathing.mp4", (0.05 * rng.standard_normal(16000)).astype(np.float32), 16000)
    write_clip(tmp_path / "in" / "silent_film.mkv", None, 16000, duration_s=0.5)
    code, output = _run(
        "audio-reference",
        "build-dataset",
        str(REPO / "recipes" / "helium" / "bounded.yaml"),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--workers",
        "1",
    )
    assert code == 1, output
    assert f"no pair was kept, so the dataset in {tmp_path / 'out'} is empty and nothing could train on it" in output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["kept"] == 0


def test_a_misspelt_key_gets_the_closest_key_and_no_union_tag() -> None:
    from pydantic import BaseModel, ConfigDict, ValidationError  # noqa: PLC0415

    from ltx_audio_reference.cli.check import field_names, validation_lines  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415

    class Optimization(BaseModel):
        model_config = ConfigDict(extra="forbid")
        learning_rate: float = 1e-4

    class Root(BaseModel):
        model_config = ConfigDict(extra="forbid")
        optimization: Optimization = Optimization()
        output_dir: str = "out"

    known = field_names(Root) | field_names(AudioReferenceConfig)
    assert {"learning_rate", "output_dir", "reference_strength"} <= known
    with pytest.raises(ValidationError) as root:
        Root(optimization={"learning_rat": 1e-3}, outptu_dir="x")
    lines = validation_lines(root.value, known=known)
    assert (
        "config optimization.learning_rat: Extra inputs are not permitted; found 0.001; did you mean learning_rate?"
        in (lines)
    )
    assert "config outptu_dir: Extra inputs are not permitted; found 'x'; did you mean output_dir?" in lines
    with pytest.raises(ValidationError) as strategy:
        AudioReferenceConfig(name="audio_reference", refrence_strength=0.5)
    assert validation_lines(strategy.value, prefix="training_strategy", known=known) == [
        "config training_strategy.refrence_strength: Extra inputs are not permitted; found 0.5; "
        "did you mean reference_strength?"
    ]
    with pytest.raises(ValidationError) as far:
        Root(zzz=1)
    assert validation_lines(far.value, known=known) == ["config zzz: Extra inputs are not permitted; found 1"]
