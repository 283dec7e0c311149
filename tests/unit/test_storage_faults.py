"""Tier 1: a full disk, a read-only mount or a vanished folder is one message in every command that writes.

The disks are real: a small tmpfs mounted for the test (filled with a real file), or mounted read-only. Where a tmpfs
cannot be mounted (not root, a container without CAP_SYS_ADMIN) those tests skip with the reason. Each test checks
the message (path, errno in words, what is safe, how to go on), and that no partial or temporary file is left.
"""

from __future__ import annotations

import errno
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import fill, small_tmpfs
from safetensors.torch import save_file
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import write_wav
from ltx_audio_reference.data.precompute import REFERENCE_DIR, precompute_reference_latents
from ltx_audio_reference.errors import StorageError
from ltx_audio_reference.reliability.files import atomic_write, atomic_write_text, is_temp_name
from ltx_audio_reference.testing.demo import write_demo
from ltx_audio_reference.testing.tiny_audio_vae import write_tiny_audio_vae_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temp_name(p.name) or p.name.startswith(".incoming")]


# ---------------------------------------------------------------------------------------------------------------
# The atomic write
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["safetensors", "torch.save", "text"])
def test_a_full_disk_is_a_storage_error_naming_the_path_whatever_the_writer_raised(tmp_path: Path, writer: str) -> None:
    # safetensors raises SafetensorError, torch.save "unexpected pos" (no errno at all): both are named ENOSPC.
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        target = disk / "file.bin"
        target.write_bytes(b"old")
        big = torch.zeros(64 * 1024)
        write = {
            "safetensors": lambda tmp: save_file({"x": big}, str(tmp)),
            "torch.save": functools.partial(torch.save, {"x": big}),
            "text": lambda tmp: tmp.write_text("x" * 200_000),
        }[writer]
        with pytest.raises(StorageError) as raised:
            atomic_write(target, write)
        assert raised.value.errno == errno.ENOSPC
        assert str(raised.value) == f"Cannot write {target}: no space left on device (ENOSPC)."
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in disk.iterdir()) == ["file.bin"]  # no temporary file left


def test_a_read_only_mount_and_a_vanished_folder_are_named(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "ro", "64k", read_only=True) as disk:
        with pytest.raises(StorageError) as raised:
            atomic_write_text(disk / "sub" / "a.txt", "x")
        assert str(raised.value) == f"Cannot write {disk / 'sub' / 'a.txt'}: read-only file system (EROFS)."
    folder = tmp_path / "gone"

    def vanish(tmp: Path) -> None:
        tmp.write_text("partial")
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()  # deleted (or unmounted) while the file was being written
        tmp.write_text("x")

    folder.mkdir()
    with pytest.raises(StorageError) as raised:
        atomic_write(folder / "a.txt", vanish)
    assert str(raised.value) == f"Cannot write {folder / 'a.txt'}: no such file or directory (ENOENT)."


# ---------------------------------------------------------------------------------------------------------------
# precompute
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_audio_vae_checkpoint(tmp_path_factory.mktemp("vae") / "audio_vae.safetensors", seed=3)


def _references(folder: Path, count: int = 3, seconds: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * 16000)) / 16000
    for index in range(count):
        write_wav(folder / f"r{index}.wav", (0.3 * np.sin(2 * np.pi * (150 + 50 * index) * t))[None], 16000)
    return folder


def test_precompute_on_a_read_only_or_full_output_says_so_before_loading_anything(tmp_path: Path, vae: Path) -> None:
    references = _references(tmp_path / "refs")
    with small_tmpfs(tmp_path / "ro", "64k", read_only=True) as disk:
        code, output = _run(
            "audio-reference", "precompute", str(references), "--model-path", str(vae), "--output", str(disk)
        )
    assert code == 1, output
    assert (
        f"error: Cannot write {disk / REFERENCE_DIR}: read-only file system (EROFS). Safe on disk: nothing was "
        "written (checked before loading the encoder). Point --output at a folder this user can write, with free "
        "space." in output
    )
    assert "Traceback" not in output
    with small_tmpfs(tmp_path / "full", "64k") as disk:
        fill(disk)
        code, output = _run(
            "audio-reference", "precompute", str(references), "--model-path", str(vae), "--output", str(disk / "o")
        )
        assert code == 1, output
        assert f"error: Cannot write {disk / 'o' / REFERENCE_DIR}: no space left on device (ENOSPC)." in output
        assert not (disk / "o").exists()


def test_precompute_on_a_disk_that_fills_says_what_was_written_and_leaves_no_partial_file(
    tmp_path: Path, vae: Path
) -> None:
    references = _references(tmp_path / "refs")
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        filled: list[Path] = []

        def fill_after_the_first(done: int, total: int) -> None:
            if done == 1 and not filled:
                filled.append(fill(disk))

        with pytest.raises(StorageError) as raised:
            precompute_reference_latents(references, disk, model_path=vae, progress=fill_after_the_first)
        message = str(raised.value)
        out = disk / REFERENCE_DIR
        assert message.startswith(f"Cannot write {out / 'r1.pt'}: no space left on device (ENOSPC).")
        assert (
            f"Safe on disk: 1 of the 3 reference(s) to encode were written, each complete, under {out}; no partial "
            "file was left. Free space (or make the folder writable) and run the same command again: the references "
            "already encoded are skipped." in message
        )
        assert sorted(p.name for p in out.iterdir()) == ["r0.pt"]
        assert torch.load(out / "r0.pt", weights_only=True)["latents"].shape[0] == 8
        filled[0].unlink()
        result = precompute_reference_latents(references, disk, model_path=vae)  # the rerun finishes the rest
        assert [p.name for p in result.skipped] == ["r0.pt"]
        assert sorted(p.name for p in result.encoded) == ["r1.pt", "r2.pt"]


# ---------------------------------------------------------------------------------------------------------------
# demo, eval, build-dataset
# ---------------------------------------------------------------------------------------------------------------


def test_demo_on_a_full_disk_is_one_message_and_leaves_no_partial_file(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        code, output = _run("demo", str(disk / "demo"))
        assert code == 1, output
        assert f"error: Cannot write {disk / 'demo'}/" in output
        assert "no space left on device (ENOSPC). Safe on disk: " in output
        assert (
            "holds an incomplete demo: each file in it is complete, but config.yaml, written last, is not there"
            in output
        )
        assert f"run `ltx-trainer demo {disk / 'demo'}` again" in output
        assert "Traceback" not in output
        assert not (disk / "demo" / "config.yaml").exists()
        assert _temps(disk) == []


def test_eval_with_a_read_only_out_says_so_before_loading_any_model(tmp_path: Path) -> None:
    demo = write_demo(tmp_path / "demo", steps=2, num_samples=2).parent
    with small_tmpfs(tmp_path / "ro", "64k", read_only=True) as disk:
        code, output = _run(
            "audio-reference", "eval", str(demo / "config.yaml"), "--out", str(disk / "sweep"), "--arms", "base"
        )
    assert code == 1, output
    assert (
        f"error: Cannot write {disk / 'sweep'}: read-only file system (EROFS). Safe on disk: nothing was written "
        "(checked before loading any model). Point --out at a folder this user can write, with free space." in output
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("av", reason="build-dataset needs PyAV: pip install -e '.[recipes]'")
    pytest.importorskip("parselmouth", reason="build-dataset needs praat-parselmouth: pip install -e '.[recipes]'")
    from ltx_audio_reference.testing.synthetic_audio import synthetic_voice, write_clip  # noqa: PLC0415

    root = tmp_path_factory.mktemp("clips")
    for index, f0 in enumerate((110.0, 160.0, 220.0)):
        voice = synthetic_voice(f0, sample_rate=16000, duration_s=1.0, vowel="a", seed=index)
        write_clip(root / f"speaker_{index}.mp4", voice, 16000)
    return root


def test_build_dataset_on_a_read_only_output_is_one_message(tmp_path: Path, clips: Path) -> None:
    with small_tmpfs(tmp_path / "ro", "64k", read_only=True) as disk:
        code, output = _run(
            "audio-reference",
            "build-dataset",
            str(REPO / "recipes" / "helium" / "decorrelated.yaml"),
            "--input",
            str(clips),
            "--output",
            str(disk / "ds"),
        )
    assert code == 1, output
    assert (
        f"error: Cannot write {disk / 'ds'}: read-only file system (EROFS). Safe on disk: nothing was written "
        "(checked before processing any clip)." in output
    )


def test_build_dataset_on_a_disk_that_fills_keeps_committed_pairs_and_no_half_pair(tmp_path: Path, clips: Path) -> None:
    from ltx_audio_reference.data.build import RECORDS_DIR, build_dataset  # noqa: PLC0415
    from ltx_audio_reference.data.recipe import load_recipe  # noqa: PLC0415

    recipe = load_recipe(REPO / "recipes" / "helium" / "decorrelated.yaml")
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        output = disk / "ds"
        filled: list[Path] = []

        def fill_after_the_first(done: int, total: int, counts: dict[str, int]) -> None:
            if done == 1 and not filled:
                filled.append(fill(disk))

        with pytest.raises(StorageError) as raised:
            build_dataset(recipe, clips, output, workers=1, progress=fill_after_the_first)
        message = str(raised.value)
        assert message.startswith(f"Cannot write {output}/")
        assert ": no space left on device (ENOSPC). Safe on disk: 1 clip(s) are processed and committed" in message
        assert "no half pair or partial file was left" in message
        assert "run the same command again: committed clips are skipped." in message
        committed = sorted(p.stem for p in (output / RECORDS_DIR).glob("*.json"))
        assert committed == ["speaker_0"]
        on_disk = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
        pair = [p for p in on_disk if p.startswith(("clips/", "references/"))]
        assert all("speaker_0" in p for p in pair)  # the failed clip left neither file
        assert _temps(output) == []
        filled[0].unlink()
        result = build_dataset(recipe, clips, output, workers=1)
        assert result.resumed == 1
        assert result.processed == 2


def test_a_storage_error_survives_a_worker_process() -> None:
    import pickle  # noqa: PLC0415

    error = StorageError(errno.ENOSPC, "/x/y.wav", safe="s", next_step="n")
    copy = pickle.loads(pickle.dumps(error))  # build-dataset's workers send it back this way
    assert (copy.errno, copy.path, copy.safe, copy.next_step, str(copy)) == (
        errno.ENOSPC,
        Path("/x/y.wav"),
        "s",
        "n",
        str(error),
    )
