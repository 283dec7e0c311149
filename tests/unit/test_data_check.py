"""Data checks on real files written by the kit, then broken one way at a time."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from ltx_audio_reference.data.check import (
    check_dataset,
    check_sources,
    check_strategy_data,
    classify,
    folder_kinds,
    load_sample_file,
)
from ltx_audio_reference.reliability.checkpoints import prompt_embed_widths
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig
from ltx_audio_reference.testing import tiny_ltx25, tiny_model

DIRS = dict.fromkeys(tiny_model.DATASET_FOLDERS)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return tiny_model.write_synthetic_dataset(tmp_path / "data", num_samples=3)


def _lines(root: Path, **kwargs: object) -> list[str]:
    return [str(p) for p in check_dataset(root, DIRS, **kwargs)]


def test_a_clean_dataset_has_no_problems(dataset: Path) -> None:
    assert _lines(dataset, batch_size=2) == []


def test_missing_folder(dataset: Path) -> None:
    for f in (dataset / "reference_audio_latents").iterdir():
        f.unlink()
    (dataset / "reference_audio_latents").rmdir()
    lines = _lines(dataset)
    assert len(lines) == 1
    assert (
        "reference_audio_latents/: expected a folder required by the training strategy; found no such folder"
        in lines[0]
    )


def test_missing_paired_file(dataset: Path) -> None:
    (dataset / "audio_latents" / "sample_001.pt").unlink()
    lines = _lines(dataset)
    assert lines == [
        f"{dataset}/audio_latents/sample_001.pt: expected a file paired with conditions/sample_001.pt; found missing"
    ]


def test_wrong_video_latent_channels(dataset: Path) -> None:
    path = dataset / "latents" / "sample_002.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(64, 2, 2, 2)
    torch.save(data, path)
    lines = _lines(dataset)
    assert lines == [f"{path} [latents]: expected [128, F, H, W] video latents; found shape [64, 2, 2, 2] float32"]


def test_wrong_audio_latent_shape(dataset: Path) -> None:
    path = dataset / "reference_audio_latents" / "sample_000.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(4, 5, 16)
    torch.save(data, path)
    assert any("expected [8, T, 16] audio latents; found shape [4, 5, 16]" in line for line in _lines(dataset))


def test_nan_latent(dataset: Path) -> None:
    path = dataset / "audio_latents" / "sample_000.pt"
    data = torch.load(path, weights_only=True)
    data["latents"][0, 0, 0] = float("nan")
    data["latents"][1, 0, 0] = float("inf")
    torch.save(data, path)
    assert _lines(dataset) == [
        f"{path} [latents]: expected finite values; found 2 NaN/Inf of {data['latents'].numel()}"
    ]


def test_nan_prompt_embedding(dataset: Path) -> None:
    path = dataset / "conditions" / "sample_001.pt"
    data = torch.load(path, weights_only=True)
    data["video_prompt_embeds"][3, 3] = float("nan")
    torch.save(data, path)
    assert _lines(dataset) == [f"{path} [video_prompt_embeds]: expected finite values; found 1 NaN/Inf of 8192"]


def test_truncated_file_is_named(dataset: Path) -> None:
    path = dataset / "latents" / "sample_000.pt"
    path.write_bytes(path.read_bytes()[:100])
    lines = _lines(dataset)
    assert len(lines) == 1
    assert lines[0].startswith(
        f"{path}: expected a .pt dict of tensors readable with weights_only=True; found unreadable"
    )


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_pickled_object_is_refused_not_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"latents": torch.zeros(1), "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="unreadable"):
        load_sample_file(path)
    assert "pwned" not in capsys.readouterr().out


def test_unequal_reference_lengths_matter_only_for_batches(tmp_path: Path) -> None:
    root = tiny_model.write_synthetic_dataset(tmp_path / "a", num_samples=2, reference_steps=5)
    path = root / "reference_audio_latents" / "sample_001.pt"
    data = torch.load(path, weights_only=True)
    data["latents"] = torch.randn(8, 7, 16)
    data["num_time_steps"] = 7
    torch.save(data, path)
    assert _lines(root, batch_size=1) == []
    lines = _lines(root, batch_size=2)
    assert len(lines) == 1
    assert lines[0] == (
        f"{root}/reference_audio_latents/: expected one length in every sample for batch_size 2 (the loader stacks "
        "the samples of a batch into one tensor); found 2 lengths: 5 time steps (0.20 s) in sample_000.pt, 7 time "
        "steps (0.28 s) in sample_001.pt; trim or pad them to one length, or set optimization.batch_size: 1"
    )


def test_geometry_fields_must_match_the_latents(dataset: Path) -> None:
    path = dataset / "latents" / "sample_000.pt"
    data = torch.load(path, weights_only=True)
    data["num_frames"] = 9
    torch.save(data, path)
    assert _lines(dataset) == [f"{path} [num_frames]: expected 2 (from the latents' shape); found 9"]


def test_precomputed_subfolder_is_used_like_the_stock_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tiny_model.write_synthetic_dataset(root / ".precomputed", num_samples=2)
    assert _lines(root) == []


def test_classify_by_content() -> None:
    assert classify({"latents": torch.zeros(128, 1, 1, 1)}) == "video"
    assert classify({"latents": torch.zeros(8, 3, 16)}) == "audio"
    assert classify({"video_prompt_embeds": torch.zeros(1, 1)}) == "conditions"
    assert classify({"something": 1}) == "unknown"


def test_scan_limit_skips_value_scans_of_large_tensors_only(dataset: Path) -> None:
    cond = dataset / "conditions" / "sample_000.pt"
    data = torch.load(cond, weights_only=True)
    data["video_prompt_embeds"][0, 0] = float("nan")  # 8192 elements
    torch.save(data, cond)
    ref = dataset / "reference_audio_latents" / "sample_001.pt"
    data = torch.load(ref, weights_only=True)
    data["latents"][0, 0, 0] = float("inf")  # 640 elements
    torch.save(data, ref)
    assert len(_lines(dataset)) == 2
    limited = _lines(dataset, scan_limit=1000)
    assert limited == [f"{ref} [latents]: expected finite values; found 1 NaN/Inf of 640"]


def test_scan_limit_still_names_truncated_files(dataset: Path) -> None:
    path = dataset / "conditions" / "sample_002.pt"
    path.write_bytes(path.read_bytes()[:-50])
    lines = _lines(dataset, scan_limit=1000)
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: expected a .pt dict of tensors readable with weights_only=True")


# What macOS writes next to sample_000.pt on a non-HFS disk: an AppleDouble header, not a torch file.
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64


def test_an_apple_double_file_is_ignored_not_reported_as_a_missing_pair(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (dataset / "latents" / "._sample_000.pt").write_bytes(APPLE_DOUBLE)
    with caplog.at_level(logging.DEBUG, logger="ltx_audio_reference.data.check"):
        assert _lines(dataset) == []
    assert f"Ignoring 1 macOS AppleDouble file(s) (._*) in {dataset / 'latents'}" in caplog.text


def test_apple_double_files_in_every_folder_are_one_problem_since_stock_would_load_them(dataset: Path) -> None:
    # The stock dataset pairs ._sample_000.pt across the folders and fails when it draws it (checked on 1.2.0).
    for folder in DIRS:
        (dataset / folder / "._sample_000.pt").write_bytes(APPLE_DOUBLE)
    lines = _lines(dataset)
    assert len(lines) == 1, lines
    assert "expected no macOS AppleDouble (._*) file in every folder" in lines[0]
    assert f"found 1, e.g. ._sample_000.pt; delete them: find {dataset} -name '._*' -delete" in lines[0]


# ---------------------------------------------------------------------------------------------------------------
# check_sources: each folder as its strategy's batch key says, references against their targets
# ---------------------------------------------------------------------------------------------------------------

SOURCES = AudioReferenceConfig().get_data_sources()


def _report(root: Path, **kwargs: object) -> tuple[list[str], list[str]]:
    report = check_sources(root, SOURCES, **kwargs)
    return [str(p) for p in report.problems], report.notes


def _rewrite(path: Path, **changes: object) -> None:
    data = torch.load(path, weights_only=True)
    data.update(changes)
    torch.save(data, path)


def test_the_strategy_sources_name_each_folder_kind() -> None:
    assert folder_kinds(SOURCES) == {
        "latents": "video",
        "conditions": "conditions",
        "audio_latents": "audio",
        "reference_audio_latents": "audio",
    }


@pytest.mark.parametrize(
    ("intruder", "found"),
    [("latents", "video data (latents [128, F, H, W])"), ("conditions", "conditions data (prompt embeddings)")],
)
def test_a_video_or_conditions_file_in_an_audio_folder_is_refused(dataset: Path, intruder: str, found: str) -> None:
    target = dataset / "audio_latents" / "sample_001.pt"
    shutil.copy(dataset / intruder / "sample_001.pt", target)
    assert check_dataset(dataset, DIRS) == []  # by content alone, a video file is a fine video file
    problems, _ = _report(dataset)
    assert problems == [
        f"{target}: expected audio data (latents [8, T, 16]) as in every file of audio_latents/; found {found}; this "
        "file belongs in another folder: re-run the preprocessing for this sample or remove it from every folder"
    ]


def test_an_audio_file_without_its_latents_key_is_refused(dataset: Path) -> None:
    path = dataset / "reference_audio_latents" / "sample_002.pt"
    torch.save({"audio": torch.randn(8, 5, 16)}, path)
    assert check_dataset(dataset, DIRS) == []  # unknown content is skipped when the kind is not known
    problems, _ = _report(dataset)
    assert problems == [
        f"{path}: expected a tensor under key 'latents' (audio latents [8, T, 16], as ltx-trainer's "
        "process_dataset.py and `ltx-trainer audio-reference precompute` write them); found keys ['audio']"
    ]


def test_video_latents_without_their_geometry_are_refused(dataset: Path) -> None:
    path = dataset / "latents" / "sample_000.pt"
    data = torch.load(path, weights_only=True)
    del data["num_frames"], data["width"]
    torch.save(data, path)
    assert _report(dataset)[0] == [
        f"{path}: expected num_frames, height and width next to the latents; found missing ['num_frames', 'width']"
    ]


@pytest.mark.parametrize("folder", ["audio_latents", "latents"])
def test_targets_of_unequal_length_are_refused_for_batches_only(dataset: Path, folder: str) -> None:
    path = dataset / folder / "sample_001.pt"
    if folder == "audio_latents":
        _rewrite(path, latents=torch.randn(8, 11, 16), num_time_steps=11)
        found = "found 2 lengths: 8 time steps (0.32 s) in sample_000.pt, 11 time steps (0.44 s) in sample_001.pt"
        what = "one length"
    else:
        _rewrite(path, latents=torch.randn(128, 3, 2, 2, dtype=torch.bfloat16), num_frames=3)
        found = "found 2 shapes: shape [128, 2, 2, 2] in sample_000.pt, shape [128, 3, 2, 2] in sample_001.pt"
        what = "one shape of 'latents'"
    assert _report(dataset, batch_size=1)[0] == []
    assert _report(dataset, batch_size=2)[0] == [
        f"{dataset / folder}/: expected {what} in every sample for batch_size 2 (the loader stacks the samples of a "
        f"batch into one tensor); {found}; trim or pad them to one {what.split()[1]}, or set optimization.batch_size: 1"
    ]


def test_fewer_complete_samples_than_one_batch_are_refused(tmp_path: Path) -> None:
    root = tiny_model.write_synthetic_dataset(tmp_path / "one", num_samples=1)
    assert _report(root, batch_size=1)[0] == []
    assert _report(root, batch_size=2)[0] == [
        f"{root}: expected at least 2 complete samples for batch_size 2 (the loader drops an incomplete last batch, so "
        "fewer samples give no batch at all); found 1; add samples or set optimization.batch_size: 1"
    ]
    root = tiny_model.write_synthetic_dataset(tmp_path / "three", num_samples=3)
    (problem,) = _report(root, batch_size=2, num_processes=2)[0]
    assert "at least 4 complete samples for batch_size 2 x 2 processes" in problem


def test_a_reference_identical_to_its_target_is_refused(dataset: Path) -> None:
    target = dataset / "audio_latents" / "sample_001.pt"
    shutil.copy(target, dataset / "reference_audio_latents" / "sample_001.pt")
    problems, _ = _report(dataset)
    assert problems == [
        f"{dataset / 'reference_audio_latents'}/: expected references that differ from their target in audio_latents/ "
        "(a reference equal to its target gives the answer away: the LoRA learns to copy it); found 1 of 3 equal to "
        "their target (sample_001.pt); make each reference from another clip than its target (e.g. `ltx-trainer "
        "audio-reference precompute` with a reference_audio column), or remove those samples"
    ]
    # The same audio through another front end or dtype is still the target; a different clip of that length is not.
    latents = torch.load(target, weights_only=True)["latents"]
    _rewrite(dataset / "reference_audio_latents" / "sample_001.pt", latents=latents * (1 + 1e-4))
    assert len(_report(dataset)[0]) == 1
    _rewrite(dataset / "reference_audio_latents" / "sample_001.pt", latents=torch.randn_like(latents))
    assert _report(dataset)[0] == []


def test_long_references_are_noted_in_seconds_and_past_the_rope_range(tmp_path: Path) -> None:
    root = tiny_model.write_synthetic_dataset(tmp_path / "d", num_samples=2, audio_steps=8, reference_steps=5)
    assert _report(root) == ([], [])
    _rewrite(root / "reference_audio_latents" / "sample_001.pt", latents=torch.randn(8, 12, 16), num_time_steps=12)
    problems, notes = _report(root, batch_size=1)
    assert problems == []
    assert notes == [
        f"1 of 2 references in {root / 'reference_audio_latents'}/ are longer than their target (most: sample_001.pt, "
        "0.48 s of reference for 0.32 s of target). That trains; each reference costs one token per 0.04 s every step"
    ]
    _rewrite(root / "reference_audio_latents" / "sample_000.pt", latents=torch.randn(8, 500, 16), num_time_steps=500)
    _, notes = _report(root, batch_size=1)
    assert notes[1] == (
        f"1 of 2 references in {root / 'reference_audio_latents'}/ reach past the audio RoPE range: sample_000.pt "
        "(20.00 s) starts 20.04 s before the target (with the 0.04 s gap), more than the 20 s that ltx-core scales "
        "audio positions by (audio_positional_embedding_max_pos). Trim references to at most 19.96 s"
    )
    assert check_strategy_data(root, AudioReferenceConfig(reference_positions="overlap")).notes == notes[:1]


@pytest.mark.skipif(tiny_ltx25.ltx25_supported() is not None, reason="LTX-2.5 transformer files need ltx-core >= 1.2.0")
def test_the_prompt_embedding_widths_are_read_from_the_checkpoint_header(tmp_path: Path) -> None:
    monolithic = tiny_model.write_tiny_checkpoint(tmp_path / "tiny.safetensors", header_only=True)
    assert prompt_embed_widths(monolithic) == {"video": 64, "audio": 64}
    split = tiny_ltx25.write_tiny_ltx25_transformer(tmp_path / "transformer.safetensors")
    video, audio = tiny_ltx25.prompt_widths(tiny_ltx25.ltx25_transformer_config())
    assert prompt_embed_widths(split) == {"video": video, "audio": audio} != {"video": 64, "audio": 64}
    (tmp_path / "cut.safetensors").write_bytes(monolithic.read_bytes()[:1000])
    assert prompt_embed_widths(tmp_path / "cut.safetensors") == {}  # unreadable: not compared (preflight names it)


def test_prompt_embeddings_of_another_width_than_the_models_connectors_are_refused(tmp_path: Path) -> None:
    model = tiny_model.write_tiny_checkpoint(tmp_path / "tiny.safetensors", header_only=True)
    root = tiny_model.write_synthetic_dataset(tmp_path / "d", num_samples=3)
    strategy = AudioReferenceConfig()
    assert [str(p) for p in check_strategy_data(root, strategy, model_path=model).problems] == []
    # One sample encoded by another text encoder: batch_size 1 never stacks it, the connector fails at its step.
    path = root / "conditions" / "sample_001.pt"
    _rewrite(path, audio_prompt_embeds=torch.randn(128, 96, dtype=torch.bfloat16))
    problems = [str(p) for p in check_strategy_data(root, strategy, batch_size=1, model_path=model).problems]
    assert problems == [
        f"{root / 'conditions'}/ [audio_prompt_embeds]: expected prompt embeddings [L, 64]: 64 is the width the audio "
        f"text connector of {model} takes; found width 96 in 1 of 3 samples (sample_001.pt). These captions were "
        "encoded for another model: preprocess them again with this model's text encoder and checkpoint "
        "(model.text_encoder_path, model.model_path), or point model.model_path at the model they were made for"
    ]
    # With batches, that one line, not a second one about unequal shapes; without a model, no width to compare.
    assert [str(p) for p in check_strategy_data(root, strategy, batch_size=2, model_path=model).problems] == problems
    assert check_strategy_data(root, strategy, batch_size=1).problems == []
