"""Tier 2: the bridge on the real, unedited ltx-trainer 1.2.0."""

from __future__ import annotations

from collections.abc import Iterator

import pluggy
import pytest
import torch
from pydantic import Field, ValidationError

from ltx_audio_reference import bridge, hookimpl, layout
from ltx_audio_reference.registry import ConfigFieldRegistry
from ltx_audio_reference.testing.demo import write_demo

pytestmark = pytest.mark.integration


@pytest.fixture
def installed(fresh_pm: pluggy.PluginManager) -> Iterator[bridge.Installation]:
    bridge.uninstall()
    yield bridge.install(fresh_pm)
    bridge.uninstall()


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import yaml  # noqa: PLC0415

    path = write_demo(tmp_path_factory.mktemp("bridge_demo"), steps=2, num_samples=2)
    return yaml.safe_load(path.read_text())


def test_importing_the_package_changes_nothing() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import ltx_trainer.trainer as t, ltx_trainer.config as c\n"
        "state = lambda: (t.get_training_strategy, t.LtxvTrainer._setup_lora, c.LtxTrainerConfig.model_fields.copy())\n"
        "before = state()\n"
        "import ltx_audio_reference, ltx_audio_reference.cli\n"
        "after = state()\n"
        "assert before == after, 'import patched ltx-trainer'\n"
        "ltx_audio_reference.install()\n"
        "assert t.get_training_strategy is not before[0]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_install_is_idempotent(installed: bridge.Installation) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    factory = trainer_module.get_training_strategy
    assert bridge.install(installed.pm) is installed
    assert trainer_module.get_training_strategy is factory


def test_stock_config_parses_the_registered_strategy(installed: bridge.Installation, demo_config: dict) -> None:
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    config = LtxTrainerConfig(**demo_config)
    assert isinstance(config.training_strategy, AudioReferenceConfig)
    assert config.training_strategy.reference_positions == "negative"
    # A stock strategy still parses, and a section without a name still means text_to_video.
    stock = LtxTrainerConfig(**{**demo_config, "training_strategy": {"name": "text_to_video", "with_audio": True}})
    assert type(stock.training_strategy).__name__ == "TextToVideoConfig"


def test_unknown_strategy_name_lists_registered_names(installed: bridge.Installation, demo_config: dict) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    with pytest.raises(ValidationError) as info:
        LtxTrainerConfig(**{**demo_config, "training_strategy": {"name": "nope"}})
    message = str(info.value)
    assert "Registered strategies: text_to_video, video_to_video, flexible, audio_reference" in message


def test_stock_factory_builds_the_registered_strategy(installed: bridge.Installation, demo_config: dict) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.strategy import AudioReferenceStrategy  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    config = LtxTrainerConfig(**demo_config)
    strategy = trainer_module.get_training_strategy(config.training_strategy)
    assert isinstance(strategy, AudioReferenceStrategy)
    flexible = LtxTrainerConfig(**{**demo_config, "training_strategy": {"name": "text_to_video"}})
    assert type(trainer_module.get_training_strategy(flexible.training_strategy)).__name__ == "TextToVideoStrategy"


class _FieldsPlugin:
    """A plugin that adds one field to each stock config class."""

    @hookimpl
    def register_config_fields(self, register: ConfigFieldRegistry) -> None:
        register("acceleration", "test_knob", int | None, Field(default=None, ge=0, description="A test knob."))
        register("root", "test_section", dict[str, int] | None, Field(default=None, description="A test section."))


def test_plugin_config_fields_parse(fresh_pm: pluggy.PluginManager, demo_config: dict) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    bridge.uninstall()
    fresh_pm.register(_FieldsPlugin(), name="fields")
    try:
        bridge.install(fresh_pm)
        acceleration = {"mixed_precision_mode": "bf16", "test_knob": 3}
        config = LtxTrainerConfig(**{**demo_config, "acceleration": acceleration, "test_section": {"a": 1}})
        assert config.acceleration.test_knob == 3
        assert config.test_section == {"a": 1}
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            LtxTrainerConfig(**{**demo_config, "acceleration": {"test_knob": -1}})
        with pytest.raises(ValidationError, match="bogus_key"):
            LtxTrainerConfig(**{**demo_config, "acceleration": {"bogus_key": 1}})
    finally:
        bridge.uninstall()
    with pytest.raises(ValidationError, match="test_knob"):
        LtxTrainerConfig(**{**demo_config, "acceleration": {"test_knob": 1}})


def test_uninstall_restores_the_stock_objects(fresh_pm: pluggy.PluginManager, demo_config: dict) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    bridge.uninstall()
    stock_factory = trainer_module.get_training_strategy
    bridge.install(fresh_pm)
    assert trainer_module.get_training_strategy is not stock_factory
    bridge.uninstall()
    assert trainer_module.get_training_strategy is stock_factory
    with pytest.raises(ValidationError):
        LtxTrainerConfig(**demo_config)  # audio_reference is unknown to the stock union again


def test_uninstall_restores_the_stock_sampler(fresh_pm: pluggy.PluginManager) -> None:
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    bridge.uninstall()
    runner = validation_module.ValidationRunner
    stock = (validation_module.X0Model, validation_module.MultiModalGuider, runner.__dict__["_run_denoising"])
    bridge.install(fresh_pm)
    # Reference guidance: subclasses of the stock classes the runner instantiates, and a wrapped denoising loop.
    assert validation_module.X0Model is not stock[0]
    assert issubclass(validation_module.X0Model, stock[0])
    assert validation_module.MultiModalGuider is not stock[1]
    assert issubclass(validation_module.MultiModalGuider, stock[1])
    assert runner.__dict__["_run_denoising"] is not stock[2]
    assert runner.__dict__["_run_denoising"].__wrapped__ is stock[2]
    bridge.uninstall()
    assert (validation_module.X0Model, validation_module.MultiModalGuider, runner.__dict__["_run_denoising"]) == stock


def test_third_party_strategy_parses(example_plugin: pluggy.PluginManager, demo_config: dict) -> None:
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    bridge.uninstall()
    try:
        bridge.install(example_plugin)
        config = LtxTrainerConfig(**{**demo_config, "training_strategy": {"name": "example_t2v", "with_audio": True}})
        assert type(config.training_strategy).__name__ == "ExampleConfig"
    finally:
        bridge.uninstall()


def test_validation_places_the_reference_at_negative_positions(
    installed: bridge.Installation, demo_config: dict
) -> None:
    """The stock validation runner's audio conditioning goes through the plugin conditioner."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.positions import audio_reference_conditioner  # noqa: PLC0415
    from ltx_core.components.patchifiers import AudioPatchifier  # noqa: PLC0415
    from ltx_core.tools import AudioLatentTools  # noqa: PLC0415
    from ltx_core.types import AudioLatentShape  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig, ReferenceConditionConfig, ValidationSample  # noqa: PLC0415
    from ltx_trainer.validation_runner import (  # noqa: PLC0415
        CachedConditionMedia,
        CachedSampleMedia,
        ValidationRunner,
    )

    config = LtxTrainerConfig(**demo_config)
    trainer_module.get_training_strategy(config.training_strategy)  # what the trainer does at init

    target_tokens, ref_tokens = 10, 6
    shape = AudioLatentShape(batch=1, channels=8, frames=target_tokens, mel_bins=16)
    tools = AudioLatentTools(patchifier=AudioPatchifier(patch_size=1), target_shape=shape)
    state = tools.create_initial_state(device=torch.device("cpu"), dtype=torch.bfloat16)
    ref_latent = torch.randn(1, 8, ref_tokens, 16)
    media = CachedSampleMedia(conditions={0: CachedConditionMedia(latent=ref_latent)})
    sample = ValidationSample(prompt="x", conditions=[ReferenceConditionConfig(audio="ref.wav")])

    # Outside a placement (no strategy's validation running), the stock placement applies: positions from 0.
    stock = ValidationRunner._apply_audio_conditionings(state, tools, sample, media, torch.device("cpu"))
    assert float(stock.positions[:, :, target_tokens:].min()) == 0.0
    # The trainer's _run_validation opens this placement with its strategy config; eval opens it per arm.
    with bridge.reference_placement(config.training_strategy):
        out = ValidationRunner._apply_audio_conditionings(state, tools, sample, media, torch.device("cpu"))

    assert out.latent.shape[1] == target_tokens + ref_tokens
    ref_positions = out.positions[:, :, target_tokens:]
    assert bool((ref_positions < 0).all())
    expected, denoise = audio_reference_conditioner(
        tools.patchifier.patchify(ref_latent), state.positions, config.training_strategy
    )
    assert torch.equal(ref_positions.float(), expected.float())
    assert float(out.denoise_mask[:, target_tokens:].max()) == denoise == 0.0
    assert torch.equal(
        out.clean_latent[:, target_tokens:].float(), tools.patchifier.patchify(ref_latent).bfloat16().float()
    )
    # The last reference token ends one audio latent (0.04 s) before the target starts.
    assert float(ref_positions[0, 0, -1, 1]) == pytest.approx(-layout.AUDIO_LATENT_SECONDS)


def test_validation_keeps_stock_placement_for_stock_strategies(
    installed: bridge.Installation, demo_config: dict
) -> None:
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_core.components.patchifiers import AudioPatchifier  # noqa: PLC0415
    from ltx_core.tools import AudioLatentTools  # noqa: PLC0415
    from ltx_core.types import AudioLatentShape  # noqa: PLC0415
    from ltx_trainer.config import LtxTrainerConfig, ReferenceConditionConfig, ValidationSample  # noqa: PLC0415
    from ltx_trainer.validation_runner import (  # noqa: PLC0415
        CachedConditionMedia,
        CachedSampleMedia,
        ValidationRunner,
    )

    config = LtxTrainerConfig(**{**demo_config, "training_strategy": {"name": "text_to_video", "with_audio": True}})
    trainer_module.get_training_strategy(config.training_strategy)
    shape = AudioLatentShape(batch=1, channels=8, frames=10, mel_bins=16)
    tools = AudioLatentTools(patchifier=AudioPatchifier(patch_size=1), target_shape=shape)
    state = tools.create_initial_state(device=torch.device("cpu"), dtype=torch.bfloat16)
    media = CachedSampleMedia(conditions={0: CachedConditionMedia(latent=torch.randn(1, 8, 6, 16))})
    sample = ValidationSample(prompt="x", conditions=[ReferenceConditionConfig(audio="ref.wav")])
    # A stock strategy registers no conditioner: even inside its placement, upstream's placement applies.
    with bridge.reference_placement(config.training_strategy):
        out = ValidationRunner._apply_audio_conditionings(state, tools, sample, media, torch.device("cpu"))
    assert float(out.positions[:, :, 10:].min()) == 0.0  # upstream appends the reference at t >= 0
