"""Tier 1: the pure reliability logic (atomic writes, complete-pair choice, finiteness, data order, untrusted files)."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pluggy
import pytest
import torch
import yaml
from accelerate import skip_first_batches
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.errors import CheckpointError
from ltx_audio_reference.reliability import checkpoints, determinism, files, guards
from ltx_audio_reference.testing.demo import write_demo

# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------


def test_atomic_write_goes_through_a_hidden_temp_in_the_same_folder(tmp_path: Path) -> None:
    target = tmp_path / "lora_weights_step_00002.safetensors"
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"new")

    assert files.atomic_write(target, write) == target
    assert target.read_bytes() == b"new"
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".")
    assert files.is_temp_name(seen[0].name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        files.atomic_write(target, write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_sigkill_inside_an_atomic_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "lora_weights_step_00004.safetensors"
    target.write_bytes(b"old complete file")
    marker = tmp_path / "marker"
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from ltx_audio_reference.reliability.files import atomic_write

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(b"half of the new")
                f.flush()
                Path({str(marker)!r}).write_text("in write")
                time.sleep(60)

        atomic_write(Path({str(target)!r}), write)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, "the writer exited before it reached the write"
        assert time.monotonic() < deadline, "the writer never reached the write"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert target.read_bytes() == b"old complete file"
    stray = [p for p in tmp_path.iterdir() if files.is_temp_name(p.name)]
    assert len(stray) == 1
    assert files.remove_stale_temps(tmp_path) == stray


def test_stale_temps_of_other_processes_and_staging_files_are_removed(tmp_path: Path) -> None:
    mine = files.temp_path_for(tmp_path / "a.safetensors")
    other = tmp_path / ".a.safetensors.1.tmp"
    staged = tmp_path / files.STAGING_DIR_NAME / "training_state_step_00002.pt.tmp"
    keep = tmp_path / "lora_weights_step_00002.safetensors"
    for path in (mine, other, staged, keep):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    assert sorted(files.remove_stale_temps(tmp_path)) == sorted([other, staged])
    assert mine.exists()
    assert keep.exists()


def test_atomic_move_renames_a_flushed_file(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()
    src = tmp_path / "staging" / "training_state_step_00002.pt"
    src.write_bytes(b"state")
    dst = files.atomic_move(src, tmp_path / src.name)
    assert dst.read_bytes() == b"state"
    assert not src.exists()


# ---------------------------------------------------------------------------------------------------------------
# Completeness and the pair to resume from
# ---------------------------------------------------------------------------------------------------------------


def _weights(folder: Path, step: int, *, truncate: bool = False) -> Path:
    path = folder / f"lora_weights_step_{step:05d}.safetensors"
    save_file(
        {"diffusion_model.a.lora_A.weight": torch.ones(4, 8), "diffusion_model.a.lora_B.weight": torch.ones(8, 4)}, path
    )
    if truncate:
        path.write_bytes(path.read_bytes()[:-10])
    return path


def _state(folder: Path, step: int, *, truncate: bool = False) -> Path:
    path = folder / f"training_state_step_{step:05d}.pt"
    torch.save({"global_step": step, "rng_states": {"torch_state": torch.random.get_rng_state()}}, path)
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_safetensors_completeness_is_read_from_the_header(tmp_path: Path) -> None:
    path = _weights(tmp_path, 2)
    assert checkpoints.safetensors_problem(path) is None
    assert checkpoints.safetensors_shapes(path) == {
        "diffusion_model.a.lora_A.weight": (4, 8),
        "diffusion_model.a.lora_B.weight": (8, 4),
    }
    data = path.read_bytes()
    for cut in (4, 20, len(data) - 1):
        path.write_bytes(data[:cut])
        assert "truncated" in checkpoints.safetensors_problem(path)
    path.write_bytes(data + b"\0")
    assert "truncated" in checkpoints.safetensors_problem(path)  # the header describes fewer bytes
    path.write_bytes(b"\x10" + b"\0" * 7 + b"not json at all!")
    assert "not safetensors" in checkpoints.safetensors_problem(path)
    with pytest.raises(CheckpointError, match=r"not a complete \.safetensors file"):
        checkpoints.safetensors_shapes(path)


def test_torch_file_completeness(tmp_path: Path) -> None:
    assert checkpoints.torch_file_problem(_state(tmp_path, 2)) is None
    assert "incomplete" in checkpoints.torch_file_problem(_state(tmp_path, 4, truncate=True))


def _choice(folder: Path) -> tuple[str | None, str | None, list[str]]:
    choice = checkpoints.select_checkpoint(folder)
    if choice is None:
        return None, None, []
    return choice.weights.name, choice.state.name if choice.state else None, [p.name for p, _ in choice.skipped]


def test_resume_picks_the_newest_complete_pair(tmp_path: Path) -> None:
    for step in (2, 4):
        _weights(tmp_path, step)
        _state(tmp_path, step)
    assert _choice(tmp_path) == ("lora_weights_step_00004.safetensors", "training_state_step_00004.pt", [])


@pytest.mark.parametrize(
    "newest",
    ["weights without state", "truncated weights", "truncated state"],
)
def test_an_incomplete_newest_checkpoint_is_skipped(tmp_path: Path, newest: str) -> None:
    _weights(tmp_path, 2)
    _state(tmp_path, 2)
    _weights(tmp_path, 4, truncate=newest == "truncated weights")
    if newest != "weights without state":
        _state(tmp_path, 4, truncate=newest == "truncated state")
    assert _choice(tmp_path) == (
        "lora_weights_step_00002.safetensors",
        "training_state_step_00002.pt",
        ["lora_weights_step_00004.safetensors"],
    )


def test_temporary_and_staged_files_are_ignored(tmp_path: Path) -> None:
    _weights(tmp_path, 2)
    _state(tmp_path, 2)
    newer = _weights(tmp_path, 6)
    newer.rename(tmp_path / f".{newer.name}.123.tmp")
    (tmp_path / files.STAGING_DIR_NAME).mkdir()
    _state(tmp_path / files.STAGING_DIR_NAME, 6)
    _weights(tmp_path / files.STAGING_DIR_NAME, 8)
    assert _choice(tmp_path) == ("lora_weights_step_00002.safetensors", "training_state_step_00002.pt", [])


def test_without_training_states_the_newest_complete_weights_are_chosen(tmp_path: Path) -> None:
    _weights(tmp_path, 2)
    _weights(tmp_path, 4)
    _weights(tmp_path, 6, truncate=True)
    assert _choice(tmp_path) == ("lora_weights_step_00004.safetensors", None, ["lora_weights_step_00006.safetensors"])


def test_without_any_pair_the_newest_weights_come_with_a_note(tmp_path: Path) -> None:
    _weights(tmp_path, 4)
    _state(tmp_path, 2)  # what the stock cleanup leaves when a save dies between its two files
    choice = checkpoints.select_checkpoint(tmp_path)
    assert choice is not None
    assert choice.weights.name == "lora_weights_step_00004.safetensors"
    assert choice.state is None
    assert "no complete weights + training state pair" in choice.note
    assert checkpoints.select_checkpoint(tmp_path / "nothing_here") is None


def test_state_path_pairs_by_step_digits(tmp_path: Path) -> None:
    assert checkpoints.state_path_for(tmp_path / "lora_weights_step_00012.safetensors") == (
        tmp_path / "training_state_step_00012.pt"
    )
    assert checkpoints.state_path_for(tmp_path / "my_lora.safetensors") is None


# ---------------------------------------------------------------------------------------------------------------
# Finiteness
# ---------------------------------------------------------------------------------------------------------------


def test_nonfinite_tensors_are_counted_and_named() -> None:
    tensors = {"ok": torch.ones(3), "nan": torch.tensor([1.0, float("nan")]), "int": torch.ones(2, dtype=torch.int64)}
    tensors["inf"] = torch.full((2, 2), float("inf"), dtype=torch.bfloat16)
    bad = guards.nonfinite_tensors(tensors)
    assert bad == [("nan", 1, 2), ("inf", 4, 4)]
    assert guards.describe_nonfinite_tensors(bad, "tensors") == "2 tensors hold NaN/Inf: nan (1 of 2), inf (4 of 4)"


def test_grad_norm_is_the_clipping_norm_and_sees_inf() -> None:
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))
    assert guards.grad_norm([a, b]) is None
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 2.0)
    assert guards.grad_norm([a, b]) == pytest.approx((27 + 16) ** 0.5)
    b.grad[0] = float("inf")
    assert guards.grad_norm([a, b]) == float("inf")
    assert not guards.is_finite(float("nan"))
    assert guards.is_finite(torch.ones(2))


def test_sample_files_and_the_message_name_step_files_sigma_and_loss(tmp_path: Path) -> None:
    dataset = SimpleNamespace(
        data_sources={"latents": "latents", "audio_latents": "audio_latents"},
        source_paths={"latents": tmp_path / "latents", "audio_latents": tmp_path / "audio_latents"},
        sample_files={"latents": [Path("a.pt"), Path("b.pt")], "audio_latents": [Path("a.pt"), Path("b.pt")]},
    )
    files = guards.sample_files(dataset, torch.tensor([1, 0]))
    assert files == [
        [tmp_path / "latents/b.pt", tmp_path / "audio_latents/b.pt"],
        [tmp_path / "latents/a.pt", tmp_path / "audio_latents/a.pt"],
    ]
    assert guards.sample_files(object(), torch.tensor([0])) == []
    record = guards.BatchRecord(files, torch.tensor([0.25, 0.5]), torch.tensor([float("inf"), 1.0]))
    message = guards.describe_nonfinite_step("loss", float("inf"), 7, [record])
    assert message.startswith("Non-finite loss (inf) at step 7:")
    assert (
        f"sample 0: sigma 0.2500, loss inf; files {tmp_path / 'latents/b.pt'}, {tmp_path / 'audio_latents/b.pt'}"
        in message
    )
    assert "sample 1: sigma 0.5000, loss 1;" in message


# ---------------------------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------------------------


def _loader(consumed: int) -> determinism.EpochSeededLoader:
    loader = DataLoader(list(range(10)), batch_size=3, shuffle=True, drop_last=True)
    generator = determinism.own_data_generator(loader)
    assert generator is not None
    return determinism.EpochSeededLoader(loader, generator, 42, lambda: consumed, skip_first_batches)


def _batches(loader: determinism.EpochSeededLoader, epochs: int) -> list[list[int]]:
    return [batch.tolist() for _ in range(epochs) for batch in loader]


def test_the_data_order_resumes_exactly_at_every_position() -> None:
    full = _batches(_loader(0), 4)
    assert len(full) == 12
    assert len({tuple(b) for b in full}) > 3
    for consumed in range(1, 10):
        resumed = _loader(consumed)
        assert _batches(resumed, 4 - consumed // 3)[: 12 - consumed] == full[consumed:], consumed


def test_current_epoch_follows_the_batches_being_drawn_also_after_a_resume() -> None:
    loader = _loader(0)
    assert loader.current_epoch is None
    seen = [loader.current_epoch for _ in range(2) for _batch in loader]
    assert seen == [0, 0, 0, 1, 1, 1]
    resumed = _loader(4)  # 3 batches per epoch: the 5th batch is the 2nd of epoch 1
    assert [resumed.current_epoch for _batch in resumed] == [1, 1]


def test_the_data_order_neither_reads_nor_moves_the_global_rng() -> None:
    torch.manual_seed(0)
    first = _batches(_loader(0), 2)
    state = torch.random.get_rng_state()
    torch.manual_seed(1)
    assert _batches(_loader(0), 2) == first
    torch.manual_seed(0)
    _batches(_loader(0), 2)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_data_position_and_epoch_seed() -> None:
    assert determinism.data_position(5, 2, 4) == (2, 2)
    assert determinism.data_position(0, 1, 4) == (0, 0)
    assert determinism.data_position(3, 1, 0) == (0, 0)
    assert determinism.epoch_seed(42, 1) != determinism.epoch_seed(42, 0) != determinism.epoch_seed(43, 0)
    assert determinism.shuffling_sampler(DataLoader(list(range(4)))) is None


# ---------------------------------------------------------------------------------------------------------------
# Untrusted files
# ---------------------------------------------------------------------------------------------------------------


class _Payload:
    """Creates a file when unpickled: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_state_file_with_pickled_code_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "training_state_step_00002.pt"
    torch.save({"global_step": 2, "wandb_run_id": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="holds pickled objects that weights_only=True does not load"):
        checkpoints.load_weights_only(path, "training state")
    assert not marker.exists()
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="unreadable training state"):
        checkpoints.load_weights_only(path, "training state")


def test_a_real_training_state_shape_loads_with_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, total_iters=4)
    raw = {
        "global_step": 3,
        "config_fingerprint": {"optimizer_type": "adamw", "scheduler_type": "linear", "training_mode": "lora"},
        "rng_states": {"torch_state": torch.random.get_rng_state()},
        "lr_scheduler_state_dict": scheduler.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "wandb_run_id": "abc",
    }
    torch.save(raw, tmp_path / "state.pt")
    loaded = checkpoints.load_weights_only(
        tmp_path / "state.pt", "training state", checkpoints.TRAINING_STATE_SAFE_GLOBALS
    )
    assert loaded["optimizer_state_dict"]["param_groups"] == raw["optimizer_state_dict"]["param_groups"]


def test_lora_key_matching_counts_and_explains() -> None:
    model = {"diffusion_model.b.0.q.lora_A.weight": (4, 32), "diffusion_model.b.0.q.lora_B.weight": (32, 4)}
    same = checkpoints.match_lora_keys(model, model)
    assert same.ok
    assert same.matched == 2
    assert not same.missing

    other = checkpoints.match_lora_keys({"diffusion_model.double_blocks.0.qkv.lora_A.weight": (4, 96)}, model)
    assert not other.ok
    assert other.matched == 0
    assert other.describe(Path("x.safetensors")).startswith("x.safetensors: 0 of the model's 2 LoRA tensors match")

    rank8 = checkpoints.match_lora_keys({k: (8, s[1]) if "lora_A" in k else (s[0], 8) for k, s in model.items()}, model)
    assert not rank8.ok
    assert rank8.matched == 0
    assert len(rank8.wrong_shape) == 2
    assert "another shape (e.g. diffusion_model.b.0.q.lora_A.weight: [8, 32], model [4, 32])" in rank8.describe(
        Path("x")
    )

    subset = checkpoints.match_lora_keys({"diffusion_model.b.0.q.lora_A.weight": (4, 32)}, model)
    assert subset.ok
    assert subset.missing == ["diffusion_model.b.0.q.lora_B.weight"]

    extra = checkpoints.match_lora_keys({**model, "diffusion_model.c.lora_A.weight": (4, 4)}, model)
    assert not extra.ok
    assert extra.matched == 2
    assert extra.unexpected == ["diffusion_model.c.lora_A.weight"]


# ---------------------------------------------------------------------------------------------------------------
# `ltx-trainer check` names a truncated or pickled latent file
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("reliability_cli") / "demo", steps=2, num_samples=2).parent


@pytest.mark.parametrize("fault", ["truncated", "pickled"])
def test_check_names_a_truncated_or_pickled_latent(
    demo_template: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    data = shutil.copytree(demo_template / "data", tmp_path / "data")
    config = yaml.safe_load((demo_template / "config.yaml").read_text())
    config["data"]["preprocessed_data_root"] = str(data)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    path = data / "audio_latents" / "sample_001.pt"
    marker = tmp_path / "executed"
    if fault == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        torch.save({"latents": torch.zeros(8, 4, 16), "num_time_steps": _Payload(marker)}, path)
    result = CliRunner().invoke(build_app(), ["check", str(tmp_path / "config.yaml")], env={"COLUMNS": "300"})
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert f"{path}: expected a .pt dict of tensors readable with weights_only=True; found unreadable" in output
    assert not marker.exists()
