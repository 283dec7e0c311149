"""Configuration of the ``audio_reference`` strategy (``training_strategy: {name: audio_reference, ...}``)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ltx_audio_reference.layout import DEFAULT_REFERENCE_GAP_S
from ltx_audio_reference.strategies.audio_reference import STRATEGY_NAME
from ltx_audio_reference.strategies.audio_reference.lora_targets import LoraPreset

# With ltx-trainer installed the config must subclass its base, so the stock config union and the trainer's
# isinstance checks accept it. Without it (CI, `ltx-trainer check` on a laptop) a stand-in with the same contract lets
# the config validate anyway. A broken ltx-trainer install (one of *its* imports missing) still raises.
try:
    from ltx_trainer.training_strategies import TrainingStrategyConfigBase as _StrategyConfigBase

    TRAINER_BASE_AVAILABLE = True
except ModuleNotFoundError as _err:
    if _err.name != "ltx_trainer":
        raise
    TRAINER_BASE_AVAILABLE = False

    class _StrategyConfigBase(BaseModel):
        """Stand-in for ltx-trainer's ``TrainingStrategyConfigBase`` when ltx-trainer is not installed."""

        model_config = ConfigDict(extra="forbid")

        name: str = Field(description="Unique name identifying the training strategy type")

        @abstractmethod
        def get_data_sources(self) -> dict[str, str]:
            """Directory under ``preprocessed_data_root`` -> key of that source in a training batch."""


#: Batch keys of the data sources (the stock strategies' names where one exists).
VIDEO_LATENTS_KEY = "latents"
CONDITIONS_KEY = "conditions"
AUDIO_LATENTS_KEY = "audio_latents"
REFERENCE_AUDIO_LATENTS_KEY = "ref_audio_latents"
CONDITIONS_DIR = "conditions"


class AudioReferenceConfig(_StrategyConfigBase):
    """Audio-reference IC-LoRA: a clean reference audio clip steers joint audio+video generation.

    The reference tokens follow the target audio tokens at negative RoPE times (see
    :mod:`.positions`), carry no loss and, by default, timestep 0.
    """

    name: Literal["audio_reference"] = STRATEGY_NAME

    video_latents_dir: str = Field(
        default="latents",
        description="Directory (under preprocessed_data_root) of the target video latents",
    )
    audio_latents_dir: str = Field(
        default="audio_latents",
        description="Directory of the target audio latents",
    )
    reference_audio_latents_dir: str = Field(
        default="reference_audio_latents",
        description="Directory of the reference audio latents (matched to targets by relative path)",
    )
    first_frame_conditioning_p: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Probability per sample of keeping the first video latent frame clean (0 = never)",
    )
    reference_strength: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Conditioning strength of the reference: 1.0 = clean (timestep 0); lower values noise it to "
        "(1 - strength) * sigma, as inference does with denoise mask 1 - strength",
    )
    reference_positions: Literal["negative", "overlap"] = Field(
        default="negative",
        description="'negative': the reference ends reference_gap_s seconds before the target starts (DubIt "
        "layout); 'overlap': the reference starts at 0 and overlaps the target (stock flexible layout, for ablations)",
    )
    reference_gap_s: float = Field(
        default=DEFAULT_REFERENCE_GAP_S,
        ge=0.0,
        description="Seconds between the end of the reference and the start of the target ('negative' positions); "
        "0.04 is one audio latent",
    )
    per_sample_noise: bool = Field(
        default=True,
        description="Draw each sample's sigma and noise from seeds of (seed, epoch, sample index) instead of the "
        "global RNG stream, so that a sample gets the same draws on 1 or N processes, with any per-process batch "
        "size, and after a resume (the stock runner does not restore the RNG with more than one process). Set "
        "false for the stock strategies' global stream",
    )
    generate_video: bool = Field(
        default=True,
        description="Generate (noise and train on) the video together with the audio. False keeps the video "
        "clean as a condition",
    )
    video_loss_weight: float = Field(
        default=1.0,
        ge=0.0,
        description="Weight of the video loss (only when generate_video is true)",
    )
    audio_loss_weight: float = Field(
        default=1.0,
        ge=0.0,
        description="Weight of the target-audio loss",
    )
    lora_preset: LoraPreset = Field(
        default="audio",
        description="LoRA target modules: 'audio' (audio attention + feed-forward of every block), "
        "'audio+bridges' (adds the audio<->video cross-attentions), 'custom' (lora.target_modules as written)",
    )
    validation_reference_guidance: float = Field(
        default=0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Reference guidance scale s of validation sampling (0 = off, no extra pass): at every denoising "
        "step one more forward pass without the reference tokens, and the audio and video predictions become "
        "guided(...) + s * (with_reference - without_reference), after the stock CFG/STG/modality guidance and its "
        "guidance_rescale (ComfyUI's LTXVReferenceAudio identity_guidance_scale). Recorded in the checkpoint "
        "metadata as reference_guidance_scale. With s > 0 every validation sample needs an audio reference",
    )
    ref_gap_samples: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="Reference-attribution gap at checkpoint cadence (0 = off): on this many fixed dataset samples, "
        "the loss with another sample's reference minus the loss with the sample's own, under paired noise. Logged as "
        "train/ref_gap and written into the checkpoint metadata; > 0 means the reference is used",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> AudioReferenceConfig:
        dirs = {
            "video_latents_dir": self.video_latents_dir,
            "audio_latents_dir": self.audio_latents_dir,
            "reference_audio_latents_dir": self.reference_audio_latents_dir,
        }
        for field, value in dirs.items():
            if value == CONDITIONS_DIR:
                raise ValueError(f"{field} may not be '{CONDITIONS_DIR}', which holds the text embeddings")
        if len(set(dirs.values())) != len(dirs):
            raise ValueError(
                f"video_latents_dir, audio_latents_dir and reference_audio_latents_dir must be three different "
                f"directories, got {dirs}"
            )
        if not self.generate_video:
            if self.first_frame_conditioning_p > 0:
                raise ValueError(
                    "first_frame_conditioning_p > 0 needs generate_video: true (a video that is not generated is "
                    "clean everywhere). Set first_frame_conditioning_p: 0 or generate_video: true."
                )
            if "video_loss_weight" in self.model_fields_set and self.video_loss_weight > 0:
                raise ValueError(
                    "video_loss_weight > 0 has no effect with generate_video: false. Set video_loss_weight: 0 or "
                    "generate_video: true."
                )
        video_weight = self.video_loss_weight if self.generate_video else 0.0
        if self.audio_loss_weight == 0 and video_weight == 0:
            raise ValueError(
                "Nothing to train: audio_loss_weight is 0 and no video loss is active. Set audio_loss_weight > 0 "
                "(or generate_video: true with video_loss_weight > 0)."
            )
        if self.ref_gap_samples == 1:
            raise ValueError(
                "ref_gap_samples: 1 cannot measure the reference gap: each sample borrows another sample's reference. "
                "Set ref_gap_samples: 0 (off) or at least 2."
            )
        if (
            self.reference_positions == "overlap"
            and "reference_gap_s" in self.model_fields_set
            and self.reference_gap_s != DEFAULT_REFERENCE_GAP_S
        ):
            raise ValueError(
                "reference_gap_s only applies to reference_positions: negative. Remove it or set "
                "reference_positions: negative."
            )
        return self

    def get_data_sources(self) -> dict[str, str]:
        """Directory (under ``preprocessed_data_root``) -> batch key; the single source of truth for data folders."""
        return {
            self.video_latents_dir: VIDEO_LATENTS_KEY,
            CONDITIONS_DIR: CONDITIONS_KEY,
            self.audio_latents_dir: AUDIO_LATENTS_KEY,
            self.reference_audio_latents_dir: REFERENCE_AUDIO_LATENTS_KEY,
        }
