"""``audio-reference preprocess``'s checks, each before anything loads or is written: resolution buckets, clips, the
upstream checkout, the output folder's recorded settings, and (ltx-core 1.2) model files read from their headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx_audio_reference.data import preprocess
from ltx_audio_reference.data.preprocess import (
    Bucket,
    PreprocessError,
    check_clips,
    find_ltx2_checkout,
    parse_buckets,
)
from ltx_audio_reference.testing import tiny_ltx25
from ltx_audio_reference.testing.synthetic_audio import synthetic_voice, write_clip

pytest.importorskip("av")

FACTORS = (8, 32, 32)  # time, height, width: the default video VAE


def test_valid_buckets_parse_in_order() -> None:
    buckets, problems = parse_buckets("768x512x121; 64x64x25", FACTORS)
    assert problems == []
    assert buckets == [Bucket(768, 512, 121), Bucket(64, 64, 25)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "60x64x24",
            "width and height must be positive multiples of 32 and 32 and frames must be a multiple of 8 plus 1",
        ),
        ("64x64x24", "the nearest valid bucket is 64x64x25"),
        ("100x64x25", "the nearest valid bucket is 96x64x25"),
        ("768x512", "expected WIDTHxHEIGHTxFRAMES such as 768x512x121"),
        ("a x b x c", "found 'a x b x c'"),
    ],
)
def test_a_bucket_upstream_would_refuse_is_named_with_the_nearest_valid_one(text: str, expected: str) -> None:
    buckets, problems = parse_buckets(text, FACTORS)
    assert buckets == []
    assert len(problems) == 1
    assert expected in problems[0]


def test_buckets_follow_the_vaes_compression() -> None:
    # A 16 x 16 x 4 VAE takes buckets the default one refuses.
    assert parse_buckets("48x48x13", (4, 16, 16)) == ([Bucket(48, 48, 13)], [])
    assert parse_buckets("48x48x13", FACTORS)[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    voice = synthetic_voice(150.0, sample_rate=16000, duration_s=1.2)
    write_clip(root / "good.mp4", voice, 16000)  # 30 frames at 25 fps
    write_clip(root / "short.mp4", voice[:8000], 16000)  # 0.5 s: 13 frames
    write_clip(root / "silent.mp4", None, 16000, duration_s=1.2)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    return root


def test_every_bad_clip_is_named_in_one_list(clips: Path) -> None:
    rows = [{"video": name} for name in ("good.mp4", "short.mp4", "silent.mp4", "broken.mp4", "gone.mp4")]
    problems, checked = check_clips(rows, clips, "video", min_frames=25)
    assert checked == 5
    assert len(problems) == 4
    assert problems[0].startswith("row 2 (short.mp4): 13 frames (0.52 s at 25 fps), fewer than the 25")
    assert problems[1] == (
        "row 3 (silent.mp4): no sound track (the target audio, audio_latents/, comes from each clip's sound)"
    )
    assert problems[2].startswith("row 4 (broken.mp4): cannot be decoded (InvalidDataError")
    assert problems[3] == f"row 5 (gone.mp4): no such file {clips / 'gone.mp4'}"


def test_a_good_clip_passes_and_its_frames_are_counted(clips: Path) -> None:
    info = preprocess.probe_clip(clips / "good.mp4")
    assert info.frames == 30
    assert info.fps == pytest.approx(25.0)
    assert info.has_audio
    assert check_clips([{"video": "good.mp4"}], clips, "video", min_frames=25) == ([], 1)


def _fake_checkout(root: Path, version: str = "1.2.0") -> Path:
    scripts = root / "packages" / "ltx-trainer" / "scripts"
    scripts.mkdir(parents=True)
    for name in preprocess.UPSTREAM_SCRIPTS:
        (scripts / name).write_text("# upstream\n")
    (root / "packages" / "ltx-trainer" / "pyproject.toml").write_text(
        f'[project]\nname = "ltx-trainer"\nversion = "{version}"\n'
    )
    return root


def test_the_checkout_is_found_from_its_root_its_package_or_its_scripts_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocess, "installed_trainer_version", lambda: "1.2.0")
    root = _fake_checkout(tmp_path / "LTX-2")
    for given in (root, root / "packages" / "ltx-trainer", root / "packages" / "ltx-trainer" / "scripts"):
        checkout = find_ltx2_checkout(given)
        assert checkout.root == root.resolve()
        assert checkout.process_dataset == root.resolve() / "packages/ltx-trainer/scripts/process_dataset.py"
        assert checkout.version == "1.2.0"
    monkeypatch.setenv(preprocess.CHECKOUT_ENV, str(root))
    assert find_ltx2_checkout().found_by == "$LTX2_CHECKOUT"


def test_a_missing_checkout_says_where_it_looked_and_how_to_get_the_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(preprocess.CHECKOUT_ENV, raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreprocessError) as error:
        find_ltx2_checkout(tmp_path / "empty")
    message = str(error.value)
    assert "not in the ltx_trainer package" in message
    assert f"{tmp_path / 'empty'} (--ltx2): no process_dataset.py" in message
    assert "git clone --depth 1 --branch v1.2.0 https://github.com/Lightricks/LTX-2.git" in message
    assert "bash scripts/setup.sh --trainer keeps such a checkout in .venv/src/LTX-2" in message


def test_a_checkout_of_another_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "installed_trainer_version", lambda: "1.2.0")
    root = _fake_checkout(tmp_path / "LTX-2", version="1.3.0")
    with pytest.raises(PreprocessError, match=r"holds ltx-trainer 1\.3\.0's scripts, but ltx-trainer 1\.2\.0 is"):
        find_ltx2_checkout(root)


def test_an_output_made_with_other_settings_is_refused_unless_overwrite(tmp_path: Path) -> None:
    output = tmp_path / ".precomputed"
    (output / "latents").mkdir(parents=True)
    (output / "latents" / "a.pt").write_bytes(b"x")
    before = {"resolution_buckets": "64x64x25", "model_path": "/m"}
    (output / preprocess.STATE_FILE).write_text(json.dumps({"status": "complete", "settings": before}))
    state = preprocess._recorded_state(output)
    refusal, resumed = preprocess._state_problem(output, state, {**before, "resolution_buckets": "64x64x33"}, False)
    assert resumed
    assert refusal is not None
    assert "resolution_buckets: 64x64x25 then, 64x64x33 now" in refusal
    assert "Pass --overwrite to redo it, or --output another folder" in refusal
    assert preprocess._state_problem(output, state, before, False) == (None, True)  # the same settings resume
    assert preprocess._state_problem(output, state, {**before, "resolution_buckets": "64x64x33"}, True) == (
        None,
        False,
    )


needs_ltx_core_12 = pytest.mark.skipif(
    tiny_ltx25.ltx25_supported() is not None, reason="the header checks use ltx-core 1.2's loaders (ltx-trainer's)"
)


@needs_ltx_core_12
def test_a_complete_demo_pack_passes_the_header_checks(tmp_path: Path) -> None:
    from ltx_audio_reference.data.model_check import check_preprocessing_pack  # noqa: PLC0415
    from ltx_audio_reference.testing.demo import write_demo  # noqa: PLC0415

    root = write_demo(tmp_path / "demo", steps=1, num_samples=2).parent
    pack, problems = check_preprocessing_pack(root / "tiny_ltx2.safetensors", root / "text_encoder")
    assert problems == []
    assert pack is not None
    assert pack.video_vae_path == pack.audio_vae_path == root / "tiny_ltx2.safetensors"
    assert not pack.split


@needs_ltx_core_12
def test_missing_weights_are_named_from_the_headers_as_the_loader_would_leave_them(tmp_path: Path) -> None:
    from ltx_audio_reference.data.model_check import check_preprocessing_pack  # noqa: PLC0415
    from ltx_audio_reference.testing import tiny_model  # noqa: PLC0415

    # The old demo: a Gemma folder with a placeholder file, and a checkpoint with neither VAE.
    checkpoint = tiny_model.write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    folder = tiny_model.write_text_encoder_dir(tmp_path / "text_encoder")
    _, problems = check_preprocessing_pack(checkpoint, folder)
    assert len(problems) == 3
    assert problems[0].startswith(
        f"--text-encoder-path {folder}: the Gemma text encoder is incomplete: none of the 49 weights its loader needs"
    )
    assert "model.model.vision_tower.embeddings.patch_embedding.weight" in problems[0]
    assert problems[1].startswith(f"--model-path {checkpoint}: the video VAE encoder is incomplete: none of the 6")
    assert problems[2].startswith(f"no audio VAE in this file: {checkpoint}")


@needs_ltx_core_12
def test_a_split_pack_needs_its_vae_files_and_packed_text_encoder(tmp_path: Path) -> None:
    from ltx_audio_reference.data.model_check import check_preprocessing_pack  # noqa: PLC0415

    pack = tiny_ltx25.write_tiny_ltx25_pack(tmp_path / "pack", vocoder="plain")
    _, problems = check_preprocessing_pack(pack.transformer, tmp_path / "pack" / "text_encoders")
    assert [p.split(":")[0] for p in problems] == [
        "--video-vae-path",
        "--audio-vae-path",
        "--text-encoder-path " + str(tmp_path / "pack" / "text_encoders"),
    ]
    assert "is the transformer of a split checkpoint pack (LTX-2.5)" in problems[0]
    resolved, problems = check_preprocessing_pack(pack.transformer, pack.text_encoder, pack.video_vae, pack.audio_vae)
    assert problems == []
    assert resolved is not None
    assert resolved.split


@needs_ltx_core_12
def test_a_video_vae_without_its_encoder_weights_is_named(tmp_path: Path) -> None:
    from safetensors import safe_open  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    from ltx_audio_reference.data.model_check import check_preprocessing_pack  # noqa: PLC0415

    pack = tiny_ltx25.write_tiny_ltx25_pack(tmp_path / "pack", vocoder="plain")
    with safe_open(str(pack.video_vae), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "encoder.conv_out.conv.weight"}  # noqa: SIM118
        metadata = f.metadata()
    partial = tmp_path / "partial.safetensors"
    save_file(tensors, str(partial), metadata=metadata)
    _, problems = check_preprocessing_pack(pack.transformer, pack.text_encoder, partial, pack.audio_vae)
    assert len(problems) == 1
    assert problems[0].startswith(f"--video-vae-path {partial}: the video VAE encoder is incomplete: 1 of the 12")
    assert "conv_out.conv.weight" in problems[0]


@pytest.mark.skipif(preprocess.installed_trainer_version() is not None, reason="ltx-trainer is installed here")
def test_without_ltx_trainer_preprocess_says_how_to_install_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from ltx_audio_reference.cli import build_app  # noqa: PLC0415

    manifest = tmp_path / "dataset.json"
    manifest.write_text("[]")
    args = ["--model-path", "m.safetensors", "--text-encoder-path", "g", "--resolution-buckets", "64x64x25"]
    result = CliRunner().invoke(build_app(), ["audio-reference", "preprocess", str(manifest), *args])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "ltx-trainer is not installed. It is not on PyPI: run bash scripts/setup.sh --trainer" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json"]
