"""Tier 1: one run per output folder (a real ``flock`` between real processes) and a run's identity recorded there.

The lock tests start real Python processes that take the lock, and kill them with ``SIGKILL``; the identity tests
use real checkpoint files and the real ``check`` command.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.errors import RunFolderError
from ltx_audio_reference.reliability import checkpoints, identity, run_start, runlock
from ltx_audio_reference.testing.demo import write_demo

HOLD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from ltx_audio_reference.reliability import runlock
    lock = runlock.acquire(Path(sys.argv[1]))
    if sys.argv[2] == "fork":
        child = os.fork()
        if child == 0:  # a data-loader worker, say: it shares the lock and outlives its killed parent
            time.sleep(600)
            os._exit(0)
        print("child", child, flush=True)
    print("held", flush=True)
    time.sleep(600)
    """
)


def _hold(folder: Path, mode: str = "plain") -> tuple[subprocess.Popen, int | None]:
    """A process holding ``folder``'s lock (and, with ``fork``, a child sharing it); returns it and the child's PID."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), mode], stdout=subprocess.PIPE, text=True, stderr=subprocess.PIPE
    )
    child = None
    deadline = time.monotonic() + 60
    while True:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        if line.startswith("child"):
            child = int(line.split()[1])
        if line.strip() == "held":
            return proc, child


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    out = tmp_path / "out"
    proc, _ = _hold(out)
    yield out, proc
    if proc.poll() is None:
        _kill(proc)


def test_a_second_run_finds_the_folder_locked_naming_pid_and_host(holder: tuple[Path, subprocess.Popen]) -> None:
    out, proc = holder
    with pytest.raises(RunFolderError) as raised:
        runlock.acquire(out)
    message = str(raised.value)
    host = socket.gethostname()
    assert message.startswith(
        f"config output_dir: {out} is in use by another training run: PID {proc.pid} on host {host}"
    )
    assert "Two runs in one output_dir overwrite each other's checkpoints" in message
    assert f"stop it (`kill {proc.pid}` on {host})" in message
    locked, record = runlock.holder(out)
    assert locked
    assert record is not None
    assert record.pid == proc.pid


def test_a_killed_holder_releases_the_lock_and_the_next_run_reports_it_as_stale(
    holder: tuple[Path, subprocess.Popen],
) -> None:
    out, proc = holder
    _kill(proc)
    assert runlock.holder(out)[0] is False
    lock = runlock.acquire(out)
    try:
        assert lock.stale is not None
        assert lock.stale.pid == proc.pid
        assert lock.stale.alive() is False
        assert json.loads(runlock.lock_path(out).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert runlock.lock_path(out).read_text() == ""  # a clean release leaves no record
    again = runlock.acquire(out)
    try:
        assert again.stale is None
    finally:
        again.release()


def test_a_lock_kept_by_a_child_of_a_killed_run_is_reported_not_broken(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, child = _hold(out, "fork")
    assert child is not None
    try:
        _kill(proc)
        with pytest.raises(RunFolderError) as raised:
            runlock.acquire(out)
        message = str(raised.value)
        assert f"PID {proc.pid} on host {socket.gethostname()}" in message
        assert "that process is no longer running, but a process it started" in message
        assert f"fuser -v {runlock.lock_path(out)}" in message
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while runlock.holder(out)[0]:  # the child is gone: the kernel drops the lock
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runlock.acquire(out).release()


def test_release_is_idempotent_and_the_lock_follows_the_folder(tmp_path: Path) -> None:
    lock = runlock.acquire(tmp_path / "out")
    assert lock.in_place()
    (tmp_path / "out").rename(tmp_path / "moved")
    assert not lock.in_place()  # the folder the run locked is gone from its path
    lock.release()
    lock.release()
    assert not lock.held


# ---------------------------------------------------------------------------------------------------------------
# Run identity
# ---------------------------------------------------------------------------------------------------------------

CONFIG = {
    "model": {"model_path": "/m.safetensors", "load_checkpoint": None},
    "optimization": {"learning_rate": 0.001, "steps": 4},
    "checkpoints": {"no_resume": False},
    "seed": 42,
}


def _checkpoints(out: Path, steps: tuple[int, ...] = (1, 2)) -> list[Path]:
    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for step in steps:
        weights = folder / f"lora_weights_step_{step:05d}.safetensors"
        save_file({"diffusion_model.a.lora_A.weight": torch.zeros(4, 8)}, str(weights))
        state = folder / f"training_state_step_{step:05d}.pt"
        torch.save({"global_step": step}, state)
        written += [weights, state]
    return written


def _edited(**changes: object) -> dict:
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def test_another_runs_checkpoints_are_refused_naming_what_differs_and_how_to_go_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _checkpoints(out)
    identity.write_record(out, CONFIG)
    problem = identity.folder_problem(
        out,
        _edited(optimization__learning_rate=0.01, seed=2),
        load_checkpoint=None,
        no_resume=False,
        overwrite=False,
    )
    assert problem is not None
    assert problem.startswith(
        f"config output_dir: {out} holds the checkpoints of another run (lora_weights_step_00002.safetensors and 3 "
        f"more file(s) in {out / 'checkpoints'}), and this run does not resume it: it would overwrite that run's "
        "checkpoints step by step."
    )
    assert "in 2 setting(s): optimization.learning_rate 0.001 -> 0.01; seed 42 -> 2." in problem
    assert f"set another output_dir for a new run; or set model.load_checkpoint: {out / 'checkpoints'}" in problem
    assert "or set overwrite_output_dir: true to delete its checkpoints and start over" in problem
    same = identity.folder_problem(out, CONFIG, load_checkpoint=None, no_resume=False, overwrite=False)
    assert same is not None
    assert "This config has the same settings as that run" in same


@pytest.mark.parametrize(
    "load", ["folder", "checkpoints", "file"], ids=["output_dir", "checkpoints folder", "a file in it"]
)
def test_resuming_the_run_there_is_no_problem_whatever_changed(tmp_path: Path, load: str) -> None:
    out = tmp_path / "out"
    files = _checkpoints(out)
    identity.write_record(out, CONFIG)
    target = {"folder": out, "checkpoints": out / "checkpoints", "file": files[-2]}[load]
    changed = _edited(optimization__steps=8)
    assert identity.folder_problem(out, changed, load_checkpoint=target, no_resume=False, overwrite=False) is None
    # A fresh schedule from those weights would write step 1, 2, ... over the run's own files.
    problem = identity.folder_problem(out, changed, load_checkpoint=target, no_resume=True, overwrite=False)
    assert problem is not None
    assert "checkpoints.no_resume: true starts a new schedule at step 0" in problem


def test_overwrite_and_an_empty_folder_pass_and_overwrite_deletes_only_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert identity.folder_problem(out, CONFIG, load_checkpoint=None, no_resume=False, overwrite=False) is None
    files = _checkpoints(out)
    partial = out / "checkpoints" / ".lora_weights_step_00003.123.tmp.safetensors"
    partial.write_bytes(b"partial")
    (out / "notes.txt").write_text("mine")
    assert identity.folder_problem(out, CONFIG, load_checkpoint=None, no_resume=False, overwrite=True) is None
    lock = runlock.acquire(out)
    start = run_start.RunStart.begin(out, run_start.FolderBefore(created=[], lock_existed=False))
    aside = start.set_aside()
    assert sorted(p.name for p in aside) == sorted(p.name for p in files)
    assert identity.checkpoint_files(out) == []  # the hidden folder is not read as checkpoints
    assert checkpoints.select_checkpoint(out / "checkpoints") is None
    start.commit(CONFIG, None)
    lock.release()
    assert not run_start.aside_dir(out).exists()
    assert not (out / "checkpoints" / run_start.DISCARD_DIR_NAME).exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert partial.exists()
    assert identity.checkpoint_files(out) == []
    assert identity.read_record(out)["config"] == CONFIG


def test_a_start_that_stops_before_its_first_step_puts_the_folder_back_as_it_was(tmp_path: Path) -> None:
    # Before: overwrite_output_dir deleted the previous run's checkpoints at start, and any later failure (a truncated
    # model file) lost them for nothing; a failed start also left the lock file, run_identity.json and the folder.
    out = tmp_path / "out"
    files = _checkpoints(out)
    contents = {p: p.read_bytes() for p in files}
    (out / identity.RECORD_NAME).write_text('{"config": {"seed": 1}}')
    record = (out / identity.RECORD_NAME).read_bytes()
    before = run_start.FolderBefore.look(out)
    lock = runlock.acquire(out)
    start = run_start.RunStart.begin(out, before)
    assert len(start.set_aside()) == 4
    (out / identity.RECORD_NAME).write_text("{}")  # what the failed start wrote over
    (out / identity.STOCK_CONFIG_NAME).write_text("seed: 2\n")
    start.rollback(lock)
    assert not lock.held
    assert {p: p.read_bytes() for p in files} == contents
    assert (out / identity.RECORD_NAME).read_bytes() == record
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", identity.RECORD_NAME]  # no lock file, no config
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(p.name for p in files)

    fresh = tmp_path / "new" / "deep" / "out"
    before = run_start.FolderBefore.look(fresh)
    assert before.created == [tmp_path / "new", tmp_path / "new" / "deep", fresh]
    lock = runlock.acquire(fresh)
    start = run_start.RunStart.begin(fresh, before)
    (fresh / identity.STOCK_CONFIG_NAME).write_text("seed: 2\n")
    (fresh / "checkpoints").mkdir()
    start.rollback(lock)
    assert not (tmp_path / "new").exists()


def test_checkpoints_set_aside_by_a_killed_start_are_moved_back_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = _checkpoints(out)
    lock = runlock.acquire(out)
    run_start.RunStart.begin(out, run_start.FolderBefore.look(out)).set_aside()
    lock.release()  # killed: neither committed nor rolled back
    assert identity.folder_problem(out, CONFIG, load_checkpoint=None, no_resume=False, overwrite=False) is None
    (out / "checkpoints" / run_start.DISCARD_DIR_NAME).mkdir()  # a commit killed while deleting
    assert sorted(run_start.recover(out)) == sorted(files)
    assert sorted(identity.checkpoint_files(out)) == sorted(files)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(p.name for p in files)
    assert identity.folder_problem(out, CONFIG, load_checkpoint=None, no_resume=False, overwrite=False) is not None


def test_a_lock_file_removed_by_a_failed_start_still_keeps_later_runs_apart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock = runlock.acquire(out)
    late = os.open(runlock.lock_path(out), os.O_RDWR)  # a second run opened the file, then found it held
    try:
        lock.release(remove=True)
        assert not runlock.lock_path(out).exists()
        proc, _ = _hold(out)  # a third run takes a new lock file at the path
        try:
            with pytest.raises(RunFolderError):
                runlock.acquire(out)  # the path's file is held, whatever the late opener's file is
        finally:
            _kill(proc)
    finally:
        os.close(late)
    again = runlock.acquire(out)
    assert again.in_place()
    again.release()


def test_a_folder_without_a_record_is_compared_with_the_stock_training_config(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _checkpoints(out)
    (out / "training_config.yaml").write_text(yaml.dump(CONFIG))
    problem = identity.folder_problem(out, _edited(seed=7), load_checkpoint=None, no_resume=False, overwrite=False)
    assert problem is not None
    assert "differs from it (training_config.yaml) in 1 setting(s): seed 42 -> 7" in problem
    (out / "training_config.yaml").unlink()
    problem = identity.folder_problem(out, _edited(seed=7), load_checkpoint=None, no_resume=False, overwrite=False)
    assert problem is not None
    assert "Its settings are not recorded" in problem


def test_the_record_hashes_what_the_run_trains_not_how_it_starts(tmp_path: Path) -> None:
    record = json.loads(identity.write_record(tmp_path, CONFIG).read_text())
    assert record["config"] == CONFIG
    assert record["pid"] == os.getpid()
    resumed = _edited(model__load_checkpoint="/x", checkpoints__no_resume=True)
    assert identity.settings_hash(resumed) == record["config_sha256"]
    assert identity.settings_hash(_edited(seed=1)) != record["config_sha256"]
    raw = {"optimization": {"learning_rate": 0.01}}  # check without ltx-trainer: only the keys it writes
    assert identity.differences(CONFIG, raw, partial=True) == [("optimization.learning_rate", 0.001, 0.01)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo(tmp_path_factory.mktemp("identity") / "demo", steps=2, num_samples=2).parent


def _check(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["check", str(config)], env={"COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.split())


def test_check_refuses_a_config_that_would_overwrite_another_run(
    demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    out = tmp_path / "out"
    config["output_dir"] = str(out)
    _checkpoints(out)
    identity.write_record(out, config)
    config["optimization"]["learning_rate"] = 0.01
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(config))
    code, text = _check(path)
    assert code == 1, text
    assert f"config output_dir: {out} holds the checkpoints of another run" in text
    assert "optimization.learning_rate 0.001 -> 0.01" in text
    config["model"]["load_checkpoint"] = str(out / "checkpoints")
    config["optimization"]["steps"] = 8
    path.write_text(yaml.safe_dump(config))
    code, text = _check(path)
    assert "holds the checkpoints of another run" not in text  # resuming it is fine


def test_check_names_a_run_holding_the_output_dir(demo: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager) -> None:
    config = yaml.safe_load((demo / "config.yaml").read_text())
    out = tmp_path / "out"
    config["output_dir"] = str(out)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, _ = _hold(out)
    try:
        code, text = _check(path)
    finally:
        _kill(proc)
    assert code == 1, text
    assert f"config output_dir: {out} is in use by another training run: PID {proc.pid}" in text
    code, text = _check(path)
    assert code == 0, text


def test_a_lock_of_this_process_that_is_garbage_is_given_back(tmp_path: Path) -> None:
    # A trainer built and dropped without train() (peft and the optimizer hooks make reference cycles) must not keep
    # the next trainer of the same process out of its folder.
    class Holder:
        def __init__(self) -> None:
            self.lock = runlock.acquire(tmp_path / "out")
            self.cycle = self

    gc.disable()  # only the lock's own collection may free the dropped holders
    try:
        Holder()
        locked, record = runlock.holder(tmp_path / "out")
        assert not locked
        assert record is None  # the collected holder released it cleanly
        Holder()
        lock = runlock.acquire(tmp_path / "out")
    finally:
        gc.enable()
    try:
        assert lock.stale is None
    finally:
        lock.release()
