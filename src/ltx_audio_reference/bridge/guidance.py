"""Validation seam, sampling side: reference guidance in the stock ``ValidationRunner`` denoising loop.

With a reference-guidance scale ``s > 0`` (from :func:`~ltx_audio_reference.bridge.validation.reference_placement`),
every denoising step runs one more transformer pass: the positive pass again, with the audio reference tokens
removed. Each modality's prediction then becomes

    pred = G(pos, neg, ptb, mod) + s * (pos - pos_without_reference)

where ``G`` is the stock ``MultiModalGuider.calculate`` (CFG, STG and modality guidance, then ``guidance_rescale``),
so the reference term is added **after** the rescale, as ComfyUI's ``LTXVReferenceAudio`` adds it after CFG (a
post-CFG function). The term is applied to the video prediction too: video tokens cross-attend to every audio token,
the reference included, so removing the reference changes both (ComfyUI guides both as well). It is zero on the
reference tokens themselves (the stock loop pins them to their clean value anyway).

Three small hooks, all inert unless a guided sample is being denoised, and no upstream code copied:

- ``ValidationRunner._run_denoising`` is wrapped: per sample it decides whether guidance is on (``s > 0``, the audio
  state carries reference tokens the bridge appended, audio not frozen); if not, it calls the stock method and
  nothing else changes, so ``s == 0`` is the stock sampler bit for bit;
- the ``X0Model`` name the runner instantiates is rebound to a subclass whose positive pass (no perturbation, both
  positive contexts) also runs the pass without the reference;
- the ``MultiModalGuider`` name is rebound to a subclass that adds the term to the stock combination of the
  modality whose positive prediction it receives (matched by object identity).

The negative (CFG), STG and modality passes are untouched: the stock loop hands them the positive ``Modality``
objects with only the context or the perturbations changed, so they carry the reference tokens at the positive
pass's positions, with or without guidance.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ltx_audio_reference.bridge import state as bridge_state

# The audio state the bridge's conditioning returned and how many of its tokens precede the references. Set by the
# conditioning (which the runner calls just before ``_run_denoising``), read and cleared by ``_run_denoising``, which
# only trusts it for the very state object it receives as ``audio_clean``.
_layout: ContextVar[tuple[Any, int] | None] = ContextVar("ltx_audio_reference_reference_layout", default=None)


@dataclass
class GuidedRun:
    """One guided sample's denoising: what the hooks share while the stock loop runs."""

    scale: float
    keep: int  # audio tokens before the references (the target, plus anything a stock condition appended)
    v_ctx_pos: Any
    a_ctx_pos: Any
    pairs: list[tuple[Any, Any]] = field(default_factory=list)  # (positive x0, x0 without reference), this step
    last_latent: Any = None  # the positive audio latent of this step (a new object every Euler step)
    extra_passes: int = 0


_run: ContextVar[GuidedRun | None] = ContextVar("ltx_audio_reference_guided_run", default=None)


def record_reference_layout(audio_state: Any, keep: int) -> None:  # noqa: ANN401 - ltx-core LatentState
    """Remember that ``audio_state``'s tokens from index ``keep`` on are appended reference tokens."""
    _layout.set((audio_state, keep))


def strip_reference(audio: Any, keep: int) -> Any:  # noqa: ANN401 - ltx-core Modality
    """The same audio ``Modality`` without its trailing reference tokens (views; nothing is copied or changed)."""
    changes: dict[str, Any] = {
        "latent": audio.latent[:, :keep],
        "timesteps": audio.timesteps[:, :keep],
        "positions": audio.positions[:, :, :keep],
    }
    if audio.keyframes_mask is not None:
        changes["keyframes_mask"] = audio.keyframes_mask[:, :keep]
    if audio.attention_mask is not None:
        changes["attention_mask"] = audio.attention_mask[:, :keep, :keep]
    return dataclasses.replace(audio, **changes)


def _is_positive_pass(run: GuidedRun, video: Any, audio: Any, perturbations: Any) -> bool:  # noqa: ANN401
    if perturbations is not None or audio is None:
        return False
    if audio.context is not run.a_ctx_pos or (video is not None and video.context is not run.v_ctx_pos):
        return False  # the negative (CFG) pass
    # Without negative audio embeddings and without video CFG, the "negative" pass repeats the positive one with
    # the same latent object: guide once per step.
    return audio.latent is not run.last_latent


@functools.cache
def _hooked_classes(x0_model: type, guider: type) -> tuple[type, type]:
    """Subclasses of the stock ``X0Model`` and ``MultiModalGuider`` that add reference guidance inside a run."""

    class ReferenceGuidedX0Model(x0_model):
        """``X0Model`` whose positive pass also runs the pass without the reference, inside a guided run."""

        def forward(self, video: Any, audio: Any, perturbations: Any) -> tuple[Any, Any]:  # noqa: ANN401
            out_video, out_audio = super().forward(video, audio, perturbations)
            run = _run.get()
            if run is None or not _is_positive_pass(run, video, audio, perturbations):
                return out_video, out_audio
            run.last_latent = audio.latent
            noref_video, noref_audio = super().forward(video, strip_reference(audio, run.keep), None)
            run.extra_passes += 1
            run.pairs = [(out_audio, noref_audio)]
            if out_video is not None and noref_video is not None:
                run.pairs.append((out_video, noref_video))
            return out_video, out_audio

    @dataclass(frozen=True)
    class ReferenceGuidedMultiModalGuider(guider):
        """``MultiModalGuider`` that adds ``s * (pos - pos_without_reference)`` after the stock combination."""

        def calculate(self, cond: Any, uncond_text: Any, uncond_perturbed: Any, uncond_modality: Any) -> Any:  # noqa: ANN401
            pred = super().calculate(cond, uncond_text, uncond_perturbed, uncond_modality)
            run = _run.get()
            if run is None:
                return pred
            for positive, noref in run.pairs:
                if positive is cond:
                    tokens = noref.shape[1]
                    guided = pred.float()
                    guided[:, :tokens] += run.scale * (cond[:, :tokens].float() - noref.float())
                    return guided.to(pred.dtype)
            return pred

    return ReferenceGuidedX0Model, ReferenceGuidedMultiModalGuider


def install_reference_guidance(scale_in_effect: Any) -> None:  # noqa: ANN401 - a zero-argument callable
    """Rebind the runner's ``X0Model`` and ``MultiModalGuider`` names and wrap ``_run_denoising``.

    Args:
        scale_in_effect: Returns the reference-guidance scale of the placement in effect (0 = off).
    """
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    stock = bridge_state.stock()
    stock_run = stock.run_denoising
    signature = inspect.signature(stock_run)
    x0_model, guider = _hooked_classes(stock.x0_model, stock.multimodal_guider)

    @functools.wraps(stock_run)
    def _run_denoising(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        layout, _ = _layout.get(), _layout.set(None)
        arguments = signature.bind(self, *args, **kwargs).arguments
        audio_state, audio_clean = arguments.get("audio_state"), arguments.get("audio_clean")
        scale = float(scale_in_effect())
        keep = layout[1] if layout is not None and audio_clean is not None and layout[0] is audio_clean else None
        if (
            scale == 0.0
            or keep is None
            or audio_state is None
            or keep >= audio_state.latent.shape[1]
            or arguments.get("audio_frozen")
        ):
            return stock_run(self, *args, **kwargs)
        run = GuidedRun(scale, keep, arguments.get("v_ctx_pos"), arguments.get("a_ctx_pos"))
        token = _run.set(run)
        try:
            return stock_run(self, *args, **kwargs)
        finally:
            _run.reset(token)

    validation_module.X0Model = x0_model
    validation_module.MultiModalGuider = guider
    validation_module.ValidationRunner._run_denoising = _run_denoising


def restore_reference_guidance() -> None:
    """Put the stock ``X0Model``, ``MultiModalGuider`` and ``_run_denoising`` back."""
    import ltx_trainer.validation_runner as validation_module  # noqa: PLC0415

    stock = bridge_state.stock()
    validation_module.X0Model = stock.x0_model
    validation_module.MultiModalGuider = stock.multimodal_guider
    validation_module.ValidationRunner._run_denoising = stock.run_denoising
