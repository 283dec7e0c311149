"""Data checks on real files written by the kit, then broken one way at a time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ltx_audio_reference.data.check import check_dataset, classify, load_sample_file
from ltx_audio_reference.testing import tiny_model

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
    assert "lengths [5, 7] time steps; trim the references or set batch_size: 1" in lines[0]


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
