"""Tier 2: a run on the stock runner survives faults, and never leaves a bad checkpoint as the newest.

Each fault is also shown on the stock runner (bridge uninstalled, stock ``text_to_video`` strategy on the same demo
data) where the stock runner falls short: it trains on and saves NaN, writes checkpoints in place, deletes its final
checkpoint with ``keep_last_n: 1``, and executes pickled code in a training-state file.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
import torch
import yaml
from kill_resume import (
    Chain,
    assert_on_disk_only_complete_files,
    demo_config,
    finish,
    kill_once,
    losses,
    spawn,
    step_of,
)
from peft import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from ltx_audio_reference import bridge, hookimpl
from ltx_audio_reference.bridge.state import TRAINER_METHODS
from ltx_audio_reference.cli import build_app
from ltx_audio_reference.errors import CheckpointError, ConfigurationError, NonFiniteError
from ltx_audio_reference.registry import CheckpointContext, TrainStepContext
from ltx_audio_reference.reliability import checkpoints, files
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration

STOCK_STRATEGY = {"name": "text_to_video", "with_audio": True, "first_frame_conditioning_p": 0.0}
EXACT = {"checkpoints.save_training_state": "full", "checkpoints.precision": "float32"}
NUM_SAMPLES = 6


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model, text encoder and 6-sample dataset (3 batches of 2 per epoch) for the whole module.

    With checkpoints every 2 steps, resume points fall at the start, middle and end of epochs.
    """
    return write_demo(tmp_path_factory.mktemp("reliability") / "demo", steps=4, num_samples=NUM_SAMPLES).parent


def _own_data(demo_root: Path, tmp_path: Path) -> Path:
    return shutil.copytree(demo_root / "data", tmp_path / "data")


@contextlib.contextmanager
def _ours(pm: pluggy.PluginManager) -> Iterator[None]:
    bridge.uninstall()
    bridge.install(pm)
    try:
        yield
    finally:
        bridge.uninstall()


@contextlib.contextmanager
def _stock() -> Iterator[None]:
    bridge.uninstall()
    yield


def _trainer(config: dict) -> Any:  # noqa: ANN401
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    return LtxvTrainer(LtxTrainerConfig(**config))


def _train(config: dict) -> Path | None:
    saved, _ = _trainer(config).train(disable_progress_bars=True)
    return saved


def _checkpoints(out: Path) -> dict[int, Path]:
    folder = out / "checkpoints"
    found = {}
    for path in folder.glob("*_weights_step_*.safetensors") if folder.is_dir() else ():
        found[int(re.search(r"step_(\d+)", path.name)[1])] = path
    return dict(sorted(found.items()))


def _finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(path)).values())


class _Steps:
    """Records each training batch: step, per-sample losses and sample names (the on_train_step hook)."""

    def __init__(self) -> None:
        self.batches: dict[int, tuple[list[float], list[str]]] = {}

    @hookimpl
    def on_train_step(self, context: TrainStepContext) -> None:
        assert not context.loss.requires_grad
        assert context.sigma.shape == context.loss.shape
        self.batches[context.step] = (context.loss.tolist(), [files[0].name for files in context.sample_files])


def test_uninstall_restores_every_wrapped_method_and_save_file(fresh_pm: pluggy.PluginManager) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    bridge.uninstall()
    stock = {name: trainer_module.LtxvTrainer.__dict__[name] for name in TRAINER_METHODS}
    stock_probe = trainer_module.get_gpu_memory_gb
    with _ours(fresh_pm):
        assert trainer_module.save_file is not save_file
        assert trainer_module.get_peft_model_state_dict is not get_peft_model_state_dict
        assert trainer_module.get_gpu_memory_gb is not stock_probe
        for name, method in stock.items():
            assert trainer_module.LtxvTrainer.__dict__[name] is not method, name
        assert isinstance(trainer_module.LtxvTrainer.__dict__["_find_checkpoint"], staticmethod)
    assert trainer_module.save_file is save_file
    assert trainer_module.get_peft_model_state_dict is get_peft_model_state_dict
    assert trainer_module.get_gpu_memory_gb is stock_probe
    for name, method in stock.items():
        assert trainer_module.LtxvTrainer.__dict__[name] is method, name


def test_the_main_process_flag_is_the_global_rank_while_installed(
    fresh_pm: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second machine's first process (``RANK`` 1, ``LOCAL_RANK`` 0) is not the main one; uninstall restores
    stock's flag. ``RANK`` wins over ``LOCAL_RANK``, and without either (one plain process) it is the main one."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_audio_reference.bridge import is_global_main_process  # noqa: PLC0415

    bridge.uninstall()
    stock_flag = trainer_module.IS_MAIN_PROCESS
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with _ours(fresh_pm):
        assert trainer_module.IS_MAIN_PROCESS is False
    assert trainer_module.IS_MAIN_PROCESS is stock_flag
    assert is_global_main_process({"RANK": "0", "LOCAL_RANK": "1"})
    assert not is_global_main_process({"LOCAL_RANK": "1"})
    assert is_global_main_process({})


# ---------------------------------------------------------------------------------------------------------------
# 1. Non-finite guard
# ---------------------------------------------------------------------------------------------------------------


def test_a_huge_sample_stops_the_run_at_its_step_while_stock_trains_on_and_saves_nan(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    steps = _Steps()
    fresh_pm.register(steps, name="steps")
    # The order of a seeded run does not depend on data values: a clean run shows which samples step 2 draws.
    with _ours(fresh_pm):
        _train(demo_config(demo_root, tmp_path / "clean", {"optimization.steps": 2}))
    victim = steps.batches[2][1][0]
    assert victim not in steps.batches[1][1]

    data = _own_data(demo_root, tmp_path)
    path = data / "audio_latents" / victim
    record = torch.load(path, weights_only=True)
    record["latents"] = record["latents"] * 1e20  # finite, so the training-start data check passes
    torch.save(record, path)

    fault = {"optimization.steps": 4, "checkpoints.interval": 1}
    with _ours(fresh_pm), pytest.raises(NonFiniteError) as raised:
        _train(demo_config(demo_root, tmp_path / "ours", fault, data=data))
    message = str(raised.value)
    assert message.startswith("Non-finite loss (")
    assert " at step 2: " in message
    assert str(path) in message
    assert re.search(rf"sample \d: sigma 0\.\d{{4}}, loss (inf|nan); files .*{victim}", message)
    ours = _checkpoints(tmp_path / "ours")
    assert list(ours) == [1]
    assert _finite(ours[1])

    with _stock():
        saved = _train(
            demo_config(demo_root, tmp_path / "stock", {**fault, "training_strategy": STOCK_STRATEGY}, data=data)
        )
    stock = _checkpoints(tmp_path / "stock")
    assert list(stock) == [1, 2, 3, 4]
    assert not _finite(saved)  # stock trained through the fault and saved NaN as its final checkpoint


def test_a_runaway_learning_rate_stops_the_run_while_stock_saves_nan(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    fault = {"optimization.steps": 4, "checkpoints.interval": 1, "optimization.learning_rate": 1e30}
    config = tmp_path / "ours.yaml"
    config.write_text(yaml.safe_dump(demo_config(demo_root, tmp_path / "ours", fault)))
    bridge.uninstall()
    result = CliRunner().invoke(build_app(), ["train", str(config), "--disable-progress-bars"], env={"COLUMNS": "300"})
    bridge.uninstall()
    assert result.exit_code == 1, result.output
    assert "Non-finite loss (nan) at step 2: training stopped" in result.output
    assert "Traceback" not in result.output
    assert list(_checkpoints(tmp_path / "ours")) == [1]

    with _stock():
        _train(demo_config(demo_root, tmp_path / "stock", {**fault, "training_strategy": STOCK_STRATEGY}))
    stock = _checkpoints(tmp_path / "stock")
    assert [_finite(p) for p in stock.values()] == [True, False, False, False]


class _InfGradient:
    """Makes one LoRA gradient infinite at step 2, while the loss stays finite."""

    @hookimpl
    def on_train_step(self, context: TrainStepContext) -> None:
        if context.step == 2:
            param = next(p for n, p in context.model.named_parameters() if "lora_B" in n)
            param.register_hook(lambda grad: torch.full_like(grad, float("inf")))


def test_a_nonfinite_gradient_norm_stops_the_run(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    fresh_pm.register(_InfGradient(), name="inf_gradient")
    config = demo_config(demo_root, tmp_path / "out", {"optimization.steps": 4, "checkpoints.interval": 1})
    with _ours(fresh_pm), pytest.raises(NonFiniteError) as raised:
        _train(config)
    message = str(raised.value)
    assert re.match(r"Non-finite gradient norm \((inf|nan)\) at step 2: ", message)
    assert re.search(r"sample 1: sigma 0\.\d{4}, loss \d", message)  # the loss itself was finite
    assert list(_checkpoints(tmp_path / "out")) == [1]


class _NanWeight:
    """Sets one LoRA weight to NaN right before the step-2 checkpoint (after the step guard passed)."""

    @hookimpl
    def on_checkpoint(self, context: CheckpointContext) -> None:
        if context.step == 2:
            with torch.no_grad():
                next(p for n, p in context.model.named_parameters() if "lora_A" in n)[0, 0] = float("nan")


def test_a_checkpoint_holding_nan_is_never_written(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    fresh_pm.register(_NanWeight(), name="nan_weight")
    config = demo_config(demo_root, tmp_path / "out", {"optimization.steps": 4, "checkpoints.interval": 1})
    with _ours(fresh_pm):
        with pytest.raises(NonFiniteError, match=r"^Step 2: checkpoint not written: 1 trainable tensors hold NaN/Inf"):
            _train(config)
        import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

        # The save itself is guarded too: the name the stock _save_checkpoint calls refuses non-finite tensors.
        with pytest.raises(NonFiniteError, match="not written: 1 tensors hold NaN/Inf"):
            trainer_module.save_file({"w": torch.tensor([float("inf")])}, str(tmp_path / "x.safetensors"))
    assert list(_checkpoints(tmp_path / "out")) == [1]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == [
        "lora_weights_step_00001.safetensors",
        "training_state_step_00001.pt",
    ]
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# 2. Checkpoint files: keep_last_n, atomic writes, complete pairs
# ---------------------------------------------------------------------------------------------------------------


def test_keep_last_n_1_keeps_the_final_checkpoint_which_stock_deletes(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    edits = {"optimization.steps": 4, "checkpoints.interval": 2, "checkpoints.keep_last_n": 1}
    with _ours(fresh_pm):
        saved = _train(demo_config(demo_root, tmp_path / "ours", edits))
    assert saved == tmp_path / "ours" / "checkpoints" / "lora_weights_step_00004.safetensors"
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name, "training_state_step_00004.pt"]

    with _stock():
        saved = _train(demo_config(demo_root, tmp_path / "stock", {**edits, "training_strategy": STOCK_STRATEGY}))
    # Stock saved step 4 twice (interval, then final) and its keep_last_n cleanup deleted the path it returns.
    assert not saved.exists()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["training_state_step_00004.pt"]


def test_stock_leaves_a_partial_newest_checkpoint_or_an_unpaired_one_after_a_kill(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    edits = {"optimization.steps": 3, "checkpoints.interval": 1, "checkpoints.keep_last_n": 1, **EXACT}
    edits["training_strategy"] = STOCK_STRATEGY
    runs = {}
    for fault in ("write", "state"):
        config = demo_config(demo_root, tmp_path / fault, edits)
        marker = tmp_path / f"{fault}.marker"
        runs[fault] = (
            config,
            marker,
            *spawn(config, tmp_path, fault, "--stock", "--fault", f"{fault}:2", "--marker", str(marker)),
        )
    for _, marker, proc, log in runs.values():
        kill_once(proc, log, marker.exists)

    # Killed inside the weights write: stock wrote to the final name, so the newest checkpoint is a partial file.
    config, *_ = runs["write"]
    folder = tmp_path / "write" / "checkpoints"
    partial = folder / "lora_weights_step_00002.safetensors"
    assert "truncated" in checkpoints.safetensors_problem(partial)
    resume = {**config, "model": {**config["model"], "load_checkpoint": str(folder)}}
    with _stock():
        from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

        assert LtxvTrainer._find_checkpoint(folder) == partial
        with pytest.raises(Exception, match=r"(?i)incomplete|header|metadata|deserializ"):
            _trainer(resume)  # stock resume dies on the partial file
    with _ours(fresh_pm):
        assert _trainer(resume)._resume_state[0] == 1  # ours skips it and resumes from the complete pair
        # Passed by name, the partial file is refused before any model loads.
        with pytest.raises(ConfigurationError, match=f"load_checkpoint: {partial} is an incomplete checkpoint"):
            _trainer({**config, "model": {**config["model"], "load_checkpoint": str(partial)}})

    # Killed between the weights and the training state: stock had already deleted the previous weights, so no
    # pair is left, and its resume silently restarts the schedule at step 0 on the step-2 weights.
    config, *_ = runs["state"]
    folder = tmp_path / "state" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "lora_weights_step_00002.safetensors",
        "training_state_step_00001.pt",
    ]
    with _stock():
        assert _trainer({**config, "model": {**config["model"], "load_checkpoint": str(folder)}})._resume_state == (
            0,
            None,
        )


# ---------------------------------------------------------------------------------------------------------------
# 3 and 4. Kill and resume, determinism (separate processes)
# ---------------------------------------------------------------------------------------------------------------

KILL_STEPS = 10  # 3 epochs and a third of 3 batches; a checkpoint pair every 2 steps


@pytest.fixture(scope="module")
def reference(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two uninterrupted runs with the same seed, in two processes at once."""
    folder = tmp_path_factory.mktemp("reference")
    edits = {"optimization.steps": KILL_STEPS, "checkpoints.interval": 2, "checkpoints.keep_last_n": 1, **EXACT}
    runs = [
        spawn(demo_config(demo_root, folder / name, edits), folder, name, "--loss-log", str(folder / f"{name}.losses"))
        for name in ("a", "b")
    ]
    for proc, log in runs:
        finish(proc, log)
    final = f"lora_weights_step_{KILL_STEPS:05d}.safetensors"
    return {
        "edits": edits,
        "losses": [losses(folder / f"{name}.losses") for name in ("a", "b")],
        "weights": [load_file(str(folder / name / "checkpoints" / final)) for name in ("a", "b")],
    }


def test_two_processes_with_the_same_seed_give_identical_losses_and_lora(reference: dict[str, Any]) -> None:
    first, second = reference["losses"]
    assert sorted(first) == list(range(1, KILL_STEPS + 1))
    assert first == second  # float.hex of every per-sample loss
    assert reference["weights"][0].keys() == reference["weights"][1].keys()
    for key, tensor in reference["weights"][0].items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, reference["weights"][1][key]), key


def test_killed_three_times_at_different_moments_the_resumed_run_equals_the_uninterrupted_one(
    demo_root: Path, tmp_path: Path, reference: dict[str, Any]
) -> None:
    out = tmp_path / "run"
    folder = out / "checkpoints"
    config = demo_config(demo_root, out, reference["edits"])
    resume = demo_config(demo_root, out, {**reference["edits"], "model.load_checkpoint": str(folder)})
    chain = Chain(tmp_path)

    # Kill 1: at a random step, between saves or inside one, wherever the signal lands.
    kill_step, resumed_at = chain.kill_at_random_step(config, folder, 3, 5)
    assert resumed_at >= 2

    # Kill 2: inside the weights write of the next save: a partial temporary file; the old pair is untouched.
    stalled = folder / f"lora_weights_step_{resumed_at + 2:05d}.safetensors"
    existed = stalled.exists()  # kill 1 may have landed between this step's weights and state
    text = chain.kill_inside_weights_write("second", resume, resumed_at + 2)
    assert f"Resuming training from step {resumed_at}" in text
    assert existed or not stalled.exists()
    assert step_of(checkpoints.select_checkpoint(folder).weights) == resumed_at
    assert [p for p in folder.iterdir() if files.is_temp_name(p.name)] != []
    assert_on_disk_only_complete_files(folder)

    # Kill 3: between the new weights and their training state: complete weights, but unpaired.
    unpaired = resumed_at + 4
    marker = tmp_path / "third.marker"
    text = chain.run(
        "third", resume, "--fault", f"state:{unpaired}", "--marker", str(marker), kill_when=lambda _: marker.exists()
    )
    assert f"Resuming training from step {resumed_at}" in text
    assert (folder / f"lora_weights_step_{unpaired:05d}.safetensors").exists()
    assert not (folder / f"training_state_step_{unpaired:05d}.pt").exists()
    assert [p for p in folder.iterdir() if files.is_temp_name(p.name)] == []  # kill 2's temp cleared
    assert_on_disk_only_complete_files(folder)

    # Resume to the end, from the newest complete pair.
    text = chain.run("last", resume)
    assert f"Resuming training from step {unpaired - 2}" in text
    assert "Not resuming from" in text
    assert f"lora_weights_step_{unpaired:05d}.safetensors" in text

    expected = reference["losses"][0]
    for index, (segment, first) in enumerate(
        zip(chain.segments, [1, resumed_at + 1, resumed_at + 1, unpaired - 1], strict=True)
    ):
        assert min(segment) == first, (index, sorted(segment))
        for step, values in segment.items():
            assert values == expected[step], f"segment {index}, step {step} (kill step {kill_step})"
    assert max(chain.segments[-1]) == KILL_STEPS
    final = load_file(str(folder / f"lora_weights_step_{KILL_STEPS:05d}.safetensors"))
    for key, tensor in reference["weights"][0].items():
        assert torch.equal(final[key], tensor), key


# ---------------------------------------------------------------------------------------------------------------
# 5. Untrusted files
# ---------------------------------------------------------------------------------------------------------------


class _Payload:
    """Creates a file when unpickled: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("fault", ["pickled object", "truncated file"])
def test_a_pickled_or_truncated_latent_is_refused_at_training_start(
    demo_root: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager, fault: str
) -> None:
    data = _own_data(demo_root, tmp_path)
    path = data / "latents" / "sample_002.pt"
    marker = tmp_path / "executed"
    if fault == "pickled object":
        record = torch.load(path, weights_only=True)
        record["fps"] = _Payload(marker)
        torch.save(record, path)
    else:
        path.write_bytes(path.read_bytes()[:300])
    with _ours(fresh_pm), pytest.raises(ConfigurationError) as raised:
        _trainer(demo_config(demo_root, tmp_path / "out", data=data))
    assert f"{path}: expected a .pt dict of tensors readable with weights_only=True; found unreadable" in str(
        raised.value
    )
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-step run's checkpoint folder (weights + full training state)."""
    from ltx_audio_reference import plugins  # noqa: PLC0415

    out = tmp_path_factory.mktemp("trained")
    with _ours(plugins.build_plugin_manager()):
        saved = _train(demo_config(demo_root, out, {"optimization.steps": 1, "checkpoints.interval": 1, **EXACT}))
    return saved.parent


def test_a_training_state_with_pickled_code_is_refused_which_stock_executes(
    demo_root: Path, trained: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    folder = shutil.copytree(trained, tmp_path / "checkpoints")
    state = folder / "training_state_step_00001.pt"
    raw = torch.load(state, weights_only=True)
    marker = tmp_path / "executed"
    raw["wandb_run_id"] = _Payload(marker)
    torch.save(raw, state)
    config = demo_config(demo_root, tmp_path / "out", {"optimization.steps": 2, "model.load_checkpoint": str(folder)})

    with _ours(fresh_pm), pytest.raises(CheckpointError) as raised:
        _trainer(config)
    assert str(raised.value).startswith(f"{state}: refused: this training state holds pickled objects")
    assert "nothing in it was executed" in str(raised.value)
    assert not marker.exists()

    with _stock():
        from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

        LtxvTrainer._load_training_state(folder / "lora_weights_step_00001.safetensors")
    assert marker.exists()  # the stock loader (weights_only=False) ran the payload


def test_a_lora_of_another_model_is_refused_with_the_matched_count_which_stock_ignores(
    demo_root: Path, trained: Path, tmp_path: Path, fresh_pm: pluggy.PluginManager
) -> None:
    foreign = tmp_path / "flux_lora.safetensors"
    save_file(
        {
            "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.randn(4, 32),
            "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.randn(96, 4),
        },
        str(foreign),
    )
    # Refused before the model loads, from the two headers (issue 25; it used to be after the load, by key count).
    with _ours(fresh_pm), pytest.raises(ConfigurationError) as raised:
        _trainer(demo_config(demo_root, tmp_path / "ours", {"model.load_checkpoint": str(foreign)}))
    message = str(raised.value)
    assert (
        f"config model.load_checkpoint: {foreign} does not fit the model in {demo_root / 'tiny_ltx2.safetensors'}: 1 "
        "adapted module(s) of the LoRA are not Linear layers of this model (the first is "
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight): it was trained for another model" in message
    )
    assert not (tmp_path / "ours").exists()

    # Same keys, another rank: refused too, before peft would fail on the shapes.
    rank8 = tmp_path / "rank8.safetensors"
    ours = load_file(str(trained / "lora_weights_step_00001.safetensors"))
    save_file(
        {k: torch.zeros(8, v.shape[1]) if "lora_A" in k else torch.zeros(v.shape[0], 8) for k, v in ours.items()},
        str(rank8),
    )
    with (
        _ours(fresh_pm),
        pytest.raises(ConfigurationError, match=r"is rank 8, while lora.rank is 4: it was trained with another LoRA"),
    ):
        _trainer(demo_config(demo_root, tmp_path / "ours", {"model.load_checkpoint": str(rank8)}))

    with _stock():
        trainer = _trainer(
            demo_config(
                demo_root,
                tmp_path / "stock",
                {"model.load_checkpoint": str(foreign), "training_strategy": STOCK_STRATEGY},
            )
        )
    lora_b = [p for n, p in trainer._transformer.named_parameters() if "lora_B" in n]
    assert lora_b
    assert all(bool((p == 0).all()) for p in lora_b)  # stock "loaded" it: nothing changed, nothing said
