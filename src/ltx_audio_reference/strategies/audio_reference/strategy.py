"""The ``audio_reference`` strategy: an ltx-trainer ``TrainingStrategy`` adapter over :mod:`.inputs` and :mod:`.loss`.

Only ltx-trainer's public strategy API is used here (``TrainingStrategy``, ``ModelInputs``, ``TimestepSampler``);
all of the math is in :mod:`.positions`, :mod:`.inputs` and :mod:`.loss`, which the tier-1 tests cover without
ltx-trainer.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

import ltx_audio_reference
from ltx_audio_reference.reliability import determinism
from ltx_audio_reference.strategies.audio_reference import inputs as step_inputs
from ltx_audio_reference.strategies.audio_reference.config import (
    AUDIO_LATENTS_KEY,
    CONDITIONS_KEY,
    REFERENCE_AUDIO_LATENTS_KEY,
    VIDEO_LATENTS_KEY,
    AudioReferenceConfig,
)
from ltx_audio_reference.strategies.audio_reference.loss import audio_reference_loss
from ltx_audio_reference.strategies.audio_reference.positions import patchify_audio, patchify_video
from ltx_trainer.timestep_samplers import TimestepSampler
from ltx_trainer.training_strategies import ModelInputs, TrainingStrategy


class AudioReferenceStrategy(TrainingStrategy):
    """Audio-reference IC-LoRA training.

    Each step generates the target audio (and, by default, the video) while a clean reference audio clip sits after
    the target audio tokens at negative RoPE times, with timestep 0 and no loss. Inside a training step of the
    bridge, each sample's sigma and noise come from its own seeds
    (:mod:`ltx_audio_reference.reliability.determinism`) unless
    ``per_sample_noise`` is false.
    """

    config: AudioReferenceConfig

    def __init__(self, config: AudioReferenceConfig) -> None:
        """Create the strategy.

        Args:
            config: The validated strategy config.
        """
        super().__init__(config)
        self.config = config

    def prepare_training_inputs(self, batch: dict[str, Any], timestep_sampler: TimestepSampler) -> ModelInputs:
        """Build the video and ``[target | reference]`` audio modalities of one training step.

        Args:
            batch: A collated batch with the keys of :meth:`AudioReferenceConfig.get_data_sources`; ``conditions``
                already went through the trainer's embedding connectors.
            timestep_sampler: The trainer's sigma sampler.

        Returns:
            ``ModelInputs`` whose audio targets and loss mask span the whole audio sequence (reference masked out).

        Raises:
            ValueError: If the reference (or target) clips in the batch have different lengths.
        """
        video = batch[VIDEO_LATENTS_KEY]
        audio = batch[AUDIO_LATENTS_KEY]
        reference = batch[REFERENCE_AUDIO_LATENTS_KEY]
        text = batch[CONDITIONS_KEY]

        video_tokens = patchify_video(video["latents"])
        grid = step_inputs.VideoGrid(
            frames=_first_int(video["num_frames"]),
            height=_first_int(video["height"]),
            width=_first_int(video["width"]),
            fps=step_inputs.resolve_fps(video.get("fps")),
        )
        audio_latents = step_inputs.stack_audio_latents(
            audio["latents"], what="target audio", lengths=audio.get("num_time_steps")
        )
        reference_latents = step_inputs.stack_audio_latents(
            reference["latents"], what="reference audio", lengths=reference.get("num_time_steps")
        )

        sample_sigmas, generator = timestep_sampler.sample_for, None
        key = determinism.current_key() if self.config.per_sample_noise else None
        if key is not None and batch.get("idx") is not None:
            draws = determinism.SampleDraws(key, batch["idx"], device=audio_latents.device)
            sample_sigmas = functools.partial(draws.sigmas, timestep_sampler.sample_for)
            generator = draws.generators()

        prepared = step_inputs.prepare_audio_reference_inputs(
            video_tokens=video_tokens,
            video_grid=grid,
            audio_tokens=patchify_audio(audio_latents),
            reference_tokens=patchify_audio(reference_latents),
            video_context=text["video_prompt_embeds"],
            audio_context=text["audio_prompt_embeds"],
            context_mask=text["prompt_attention_mask"],
            sample_sigmas=sample_sigmas,
            options=self.config,
            generator=generator,
        )
        return ModelInputs(
            video=prepared.video,
            audio=prepared.audio,
            video_targets=prepared.video_targets,
            audio_targets=prepared.audio_targets,
            video_loss_mask=prepared.video_loss_mask,
            audio_loss_mask=prepared.audio_loss_mask,
        )

    def compute_loss(self, video_pred: Tensor | None, audio_pred: Tensor | None, inputs: ModelInputs) -> Tensor:
        """Weighted masked MSE on the target audio and the generated video.

        Returns:
            ``[B]`` per-sample loss (the trainer reduces it).
        """
        return audio_reference_loss(
            video_pred=video_pred,
            audio_pred=audio_pred,
            video_targets=inputs.video_targets,
            video_loss_mask=inputs.video_loss_mask,
            audio_targets=inputs.audio_targets,
            audio_loss_mask=inputs.audio_loss_mask,
            video_loss_weight=self.config.video_loss_weight,
            audio_loss_weight=self.config.audio_loss_weight,
        )

    def get_checkpoint_metadata(self) -> dict[str, Any]:
        """What an inference pipeline needs to place the reference and guide the sampler the way training did.

        ``lora_preset``, ``lora_rank`` and ``lora_alpha`` are added by the plugin's ``checkpoint_metadata`` hook,
        which sees the LoRA config.
        """
        return {
            "strategy": self.config.name,
            "reference_modality": "audio",
            "reference_positions": self.config.reference_positions,
            "reference_gap_s": self.config.reference_gap_s,
            "reference_strength": self.config.reference_strength,
            "reference_downscale_factor": 1,
            # The reference-guidance scale validation sampled with (ComfyUI LTXVReferenceAudio's
            # identity_guidance_scale); 0 means validation ran without it.
            "reference_guidance_scale": self.config.validation_reference_guidance,
            "ltx_audio_reference_version": ltx_audio_reference.__version__,
        }


def _first_int(value: Tensor | list | int) -> int:
    """The first sample's value of a collated scalar field."""
    if isinstance(value, Tensor):
        return int(value.flatten()[0].item())
    if isinstance(value, list | tuple):
        return int(value[0])
    return int(value)
