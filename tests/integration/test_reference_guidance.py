"""Tier 2: reference guidance in ltx-trainer's own validation sampler, on the tiny model (CPU).

A real ``ValidationRunner`` (tiny Gemma weights, audio VAE encoder, decoders) encodes the prompt, the negative prompt
and a reference tone, and its ``run()`` denoises through the stock loop with the bridge installed. The transformer is
the real 2-block LTX-2 model behind a recorder that keeps every forward pass's inputs; the runner's own
``_run_denoising`` call is recorded at the instance, so the test sees the latents the sampler produced. Every
expected value is recomputed from the recorded inputs with the real model and ltx-core's stock guider.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from ltx_audio_reference import bridge
from ltx_audio_reference.data.audio_io import write_wav
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig
from ltx_audio_reference.strategies.audio_reference.positions import audio_reference_conditioner
from ltx_audio_reference.testing.demo import write_demo
from ltx_audio_reference.testing.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration

SCALE = 3.0
TARGET_TOKENS = 25  # 1 s at 25 fps: 25 audio latents of 0.04 s
REFERENCE_S = 0.4  # 10 reference tokens
STG_BLOCK = 1  # the tiny model has 2 blocks (the stock default STG block is 28)
PLAIN = {
    "video_cfg_scale": 1.0,
    "audio_cfg_scale": 1.0,
    "video_stg_scale": 0.0,
    "audio_stg_scale": 0.0,
    "guidance_rescale": 0.0,
    "video_modality_guidance_scale": 1.0,
    "audio_modality_guidance_scale": 1.0,
}
FULL = {  # the stock defaults, with the STG block moved into the tiny model
    "video_cfg_scale": 3.0,
    "audio_cfg_scale": 7.0,
    "video_stg_scale": 1.0,
    "audio_stg_scale": 1.0,
    "stg_blocks": [STG_BLOCK],
    "guidance_rescale": 0.7,
    "video_modality_guidance_scale": 3.0,
    "audio_modality_guidance_scale": 3.0,
}


class Recorder(torch.nn.Module):
    """The real transformer, keeping each forward pass's ``(video, audio, perturbations)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[Any, Any, Any]] = []

    @property
    def num_blocks(self) -> int:
        return self.model.num_blocks

    def forward(self, video: Any, audio: Any, perturbations: Any) -> Any:  # noqa: ANN401
        self.calls.append((video, audio, perturbations))
        return self.model(video, audio, perturbations)


@dataclasses.dataclass
class Sampled:
    """One sample through ``runner.run()``: the transformer passes and the denoising loop's inputs and outputs."""

    calls: list[tuple[Any, Any, Any]]
    inputs: dict[str, Any]
    video: Any
    audio: Any


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ltx_trainer.config import ReferenceConditionConfig, ValidationConfig, ValidationSample  # noqa: PLC0415
    from ltx_trainer.validation_runner import ValidationRunner  # noqa: PLC0415

    root = tmp_path_factory.mktemp("guidance")
    demo = write_demo(root / "demo", steps=1, num_samples=2).parent
    time = np.arange(int(16000 * REFERENCE_S)) / 16000
    tone = 0.4 * np.sin(2 * np.pi * 180.0 * time)
    reference = write_wav(root / "tone.wav", np.stack([tone, tone]), 16000)
    samples = [
        ValidationSample(prompt="a voice holds a note", conditions=[ReferenceConditionConfig(audio=str(reference))]),
        ValidationSample(prompt="a voice holds a note"),  # no reference
    ]
    runners = {}
    bridge.uninstall()
    bridge.install()
    try:
        for name, guidance in (("plain", PLAIN), ("full", FULL)):
            for steps in (1, 2):
                config = ValidationConfig(
                    samples=samples, video_dims=(32, 32, 25), frame_rate=25.0, inference_steps=steps, seed=5, **guidance
                )
                runners[name, steps] = ValidationRunner(
                    config=config,
                    model_path=demo / "tiny_ltx2.safetensors",
                    text_encoder_path=demo / "text_encoder",
                )
        model = build_tiny_model(num_layers=2, seed=0, dtype=torch.bfloat16).eval().requires_grad_(False)
        yield {"runners": runners, "model": model, "out": root / "out"}
    finally:
        bridge.uninstall()


def sample(
    setup: dict[str, Any],
    guidance: str,
    steps: int,
    *,
    scale: float | None,
    config: AudioReferenceConfig | None = None,
    index: int = 0,
) -> Sampled:
    """Generate validation sample ``index`` through the runner's ``run()`` with reference guidance ``scale``."""
    from ltx_trainer.progress import TrainingProgress  # noqa: PLC0415

    runner = setup["runners"][guidance, steps]
    recorder = Recorder(setup["model"])
    recorded: dict[str, Any] = {}
    stock_bound = runner._run_denoising

    def record(**kwargs: Any) -> Any:  # noqa: ANN401
        recorded["inputs"] = kwargs
        recorded["outputs"] = stock_bound(**kwargs)
        return recorded["outputs"]

    runner._run_denoising = record  # this instance only: the bridge's class-level wrapper still runs inside
    try:
        with bridge.reference_placement(config or AudioReferenceConfig(), reference_guidance=scale):
            runner.run(
                transformer=recorder,
                step=0,
                output_dir=setup["out"],
                device=torch.device("cpu"),
                progress=TrainingProgress(enabled=False, total_steps=1),
                work_items=[(index, True)],
            )
    finally:
        del runner._run_denoising
    video, audio = recorded["outputs"]
    return Sampled(recorder.calls, recorded["inputs"], video, audio)


def x0(setup: dict[str, Any], video: Any, audio: Any, perturbations: Any = None) -> tuple[Any, Any]:  # noqa: ANN401
    from ltx_core.model.transformer.model import X0Model  # noqa: PLC0415

    return X0Model(setup["model"])(video, audio, perturbations)


def without_reference(audio: Any, keep: int) -> Any:  # noqa: ANN401
    """The audio modality cut to its first ``keep`` tokens, written out here rather than taken from the bridge."""
    return dataclasses.replace(
        audio,
        latent=audio.latent[:, :keep],
        timesteps=audio.timesteps[:, :keep],
        positions=audio.positions[:, :, :keep],
    )


def one_step(inputs: dict[str, Any], denoised_video: Any, denoised_audio: Any, steps: int) -> tuple[Any, Any]:  # noqa: ANN401
    """The stock loop's post-processing and Euler step, from ltx-core and the runner's static helper."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep  # noqa: PLC0415
    from ltx_core.components.schedulers import LTX2Scheduler  # noqa: PLC0415
    from ltx_trainer.validation_runner import ValidationRunner  # noqa: PLC0415

    sigmas = LTX2Scheduler().execute(steps=steps).float()
    outputs = []
    for state, clean, prediction in (
        (inputs["video_state"], inputs["video_clean"], denoised_video),
        (inputs["audio_state"], inputs["audio_clean"], denoised_audio),
    ):
        denoised = ValidationRunner._post_process_latent(prediction, state.denoise_mask, clean.clean_latent)
        outputs.append(EulerDiffusionStep().step(state.latent, denoised, sigmas, 0))
    return outputs[0], outputs[1]


def add_reference_term(guided: torch.Tensor, positive: torch.Tensor, noref: torch.Tensor) -> torch.Tensor:
    out = guided.float().clone()
    out[:, : noref.shape[1]] += SCALE * (positive[:, : noref.shape[1]].float() - noref.float())
    return out.to(guided.dtype)


def test_guided_step_equals_the_formula_from_two_real_passes(setup: dict[str, Any]) -> None:
    run = sample(setup, "plain", 1, scale=SCALE)
    # CFG, STG and modality guidance off: the positive pass and the pass without the reference, nothing else.
    assert len(run.calls) == 2
    (video, audio, ptb), (noref_video, noref_audio, noref_ptb) = run.calls
    assert ptb is None
    assert noref_ptb is None
    assert audio.latent.shape[1] > TARGET_TOKENS
    assert noref_audio.latent.shape[1] == TARGET_TOKENS
    assert noref_audio.context is audio.context is run.inputs["a_ctx_pos"]
    assert torch.equal(noref_audio.positions, audio.positions[:, :, :TARGET_TOKENS])
    assert torch.equal(noref_audio.latent, audio.latent[:, :TARGET_TOKENS])
    assert noref_video is video  # the video modality is unchanged; only the audio loses the reference

    pos_video, pos_audio = x0(setup, video, audio)
    cut_video, cut_audio = x0(setup, video, without_reference(audio, TARGET_TOKENS))
    assert not torch.equal(pos_audio[:, :TARGET_TOKENS], cut_audio)  # the reference changes the prediction
    assert not torch.equal(pos_video, cut_video)  # the video too: it cross-attends to every audio token
    expected_video, expected_audio = one_step(
        run.inputs,
        add_reference_term(pos_video, pos_video, cut_video),
        add_reference_term(pos_audio, pos_audio, cut_audio),
        steps=1,
    )
    assert torch.equal(run.video.latent, expected_video)
    assert torch.equal(run.audio.latent, expected_audio)
    # The reference tokens stay clean (the stock loop pins them; the term is zero there).
    clean = run.inputs["audio_clean"].clean_latent[:, TARGET_TOKENS:]
    assert torch.equal(run.audio.latent[:, TARGET_TOKENS:], clean)


def test_guided_step_with_cfg_stg_and_modality_guidance_equals_the_formula(setup: dict[str, Any]) -> None:
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams  # noqa: PLC0415

    run = sample(setup, "full", 1, scale=SCALE)
    assert len(run.calls) == 5  # positive, without reference, negative, STG, modality
    (video, audio, _), (_, noref_audio, _), negative, perturbed, isolated = run.calls
    assert noref_audio.latent.shape[1] == TARGET_TOKENS
    assert negative[1].context is run.inputs["a_ctx_neg"]
    assert negative[2] is None
    assert perturbed[2] is not None
    assert isolated[2] is not None

    pos = x0(setup, video, audio)
    noref = x0(setup, video, without_reference(audio, TARGET_TOKENS))
    neg = x0(setup, negative[0], negative[1])
    ptb = x0(setup, perturbed[0], perturbed[1], perturbed[2])
    mod = x0(setup, isolated[0], isolated[1], isolated[2])
    cfg = {"stg_blocks": [STG_BLOCK], "rescale_scale": FULL["guidance_rescale"]}
    video_guider = MultiModalGuider(MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, modality_scale=3.0, **cfg))
    audio_guider = MultiModalGuider(MultiModalGuiderParams(cfg_scale=7.0, stg_scale=1.0, modality_scale=3.0, **cfg))
    # The reference term comes after the stock combination, guidance_rescale included.
    guided = [
        add_reference_term(guider.calculate(pos[m], neg[m], ptb[m], mod[m]), pos[m], noref[m])
        for m, guider in ((0, video_guider), (1, audio_guider))
    ]
    expected_video, expected_audio = one_step(run.inputs, *guided, steps=1)
    assert torch.equal(run.video.latent, expected_video)
    assert torch.equal(run.audio.latent, expected_audio)


@pytest.fixture
def stock_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stock ``_run_denoising``, ``X0Model`` and ``MultiModalGuider`` (the bridge's placement still applies)."""
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415
    from ltx_audio_reference.bridge import state  # noqa: PLC0415

    stock = state.stock()
    monkeypatch.setattr(validation_module, "X0Model", stock.x0_model)
    monkeypatch.setattr(validation_module, "MultiModalGuider", stock.multimodal_guider)
    monkeypatch.setattr(validation_module.ValidationRunner, "_run_denoising", stock.run_denoising)


def test_scale_zero_is_the_stock_sampler_bit_for_bit(setup: dict[str, Any], request: pytest.FixtureRequest) -> None:
    zero = sample(setup, "full", 2, scale=0.0)
    from_config = sample(setup, "full", 2, scale=None, config=AudioReferenceConfig(validation_reference_guidance=0.0))
    guided = sample(setup, "full", 2, scale=SCALE)
    request.getfixturevalue("stock_sampler")
    stock = sample(setup, "full", 2, scale=SCALE)  # the scale is ignored: no guidance hooks
    assert len(stock.calls) == len(zero.calls) == len(from_config.calls) == 8  # 4 passes per step
    for run in (zero, from_config):
        assert torch.equal(run.video.latent, stock.video.latent)
        assert torch.equal(run.audio.latent, stock.audio.latent)
    assert len(guided.calls) == 10  # one more per step
    assert not torch.equal(guided.audio.latent, stock.audio.latent)
    assert not torch.equal(guided.video.latent, stock.video.latent)


def test_the_config_field_sets_the_scale_and_the_argument_overrides_it(setup: dict[str, Any]) -> None:
    configured = AudioReferenceConfig(validation_reference_guidance=SCALE)
    from_config = sample(setup, "plain", 1, scale=None, config=configured)
    override = sample(setup, "plain", 1, scale=SCALE)
    switched_off = sample(setup, "plain", 1, scale=0.0, config=configured)
    assert len(from_config.calls) == len(override.calls) == 2
    assert torch.equal(from_config.audio.latent, override.audio.latent)
    assert len(switched_off.calls) == 1


@pytest.mark.parametrize("scale", [0.0, SCALE])
def test_negative_pass_carries_the_reference_at_the_positive_positions(setup: dict[str, Any], scale: float) -> None:
    run = sample(setup, "full", 2, scale=scale)
    per_step = 5 if scale else 4
    assert len(run.calls) == 2 * per_step
    clean = run.inputs["audio_clean"]
    references = clean.latent.shape[1] - TARGET_TOKENS
    expected_positions, _ = audio_reference_conditioner(
        clean.clean_latent[:, TARGET_TOKENS:], clean.positions[:, :, :TARGET_TOKENS], AudioReferenceConfig()
    )
    for step in range(2):
        calls = run.calls[step * per_step : (step + 1) * per_step]
        positive = calls[0][1]
        others = [c for c in calls[1:] if c[1].latent.shape[1] != TARGET_TOKENS]
        assert len(others) == 3  # negative, STG, modality; the only shorter pass is the one without the reference
        negative = next(c for c in others if c[1].context is run.inputs["a_ctx_neg"])
        assert negative[2] is None
        assert negative[0].context is run.inputs["v_ctx_neg"]
        for video, audio, _ in others:
            assert audio.latent.shape[1] == TARGET_TOKENS + references
            assert audio.latent is positive.latent  # the positive pass's tokens, reference included
            assert torch.equal(audio.positions, positive.positions)
            assert torch.equal(audio.positions[:, :, TARGET_TOKENS:].float(), expected_positions.float())
            assert bool((audio.positions[:, :, TARGET_TOKENS:] < 0).all())
            assert float(audio.timesteps[:, TARGET_TOKENS:].abs().max()) == 0.0  # clean, timestep 0
            assert video.latent is calls[0][0].latent
    # A real forward: the negative prediction depends on the reference tokens it carries.
    _, audio, _ = negative
    _, with_reference = x0(setup, negative[0], audio)
    _, cut = x0(setup, negative[0], without_reference(audio, TARGET_TOKENS))
    assert not torch.equal(with_reference[:, :TARGET_TOKENS], cut)


def test_a_sample_without_a_reference_is_not_guided(setup: dict[str, Any], request: pytest.FixtureRequest) -> None:
    guided = sample(setup, "full", 1, scale=SCALE, index=1)
    request.getfixturevalue("stock_sampler")
    stock = sample(setup, "full", 1, scale=SCALE, index=1)
    assert guided.inputs["audio_state"].latent.shape[1] == TARGET_TOKENS
    assert len(guided.calls) == len(stock.calls) == 4
    assert torch.equal(guided.audio.latent, stock.audio.latent)
    assert torch.equal(guided.video.latent, stock.video.latent)


def test_a_negative_or_nan_override_is_refused() -> None:
    for value in (-0.5, float("nan"), float("inf")):
        with (
            pytest.raises(ValueError, match="finite number >= 0"),
            bridge.reference_placement(AudioReferenceConfig(), reference_guidance=value),
        ):
            pass
