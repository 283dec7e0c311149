"""Tier 1: the ``audio_reference`` strategy config validates with or without ltx-trainer installed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ltx_audio_reference.strategies.audio_reference import AudioReferenceConfig


def test_data_sources_map_folders_to_batch_keys() -> None:
    assert AudioReferenceConfig().get_data_sources() == {
        "latents": "latents",
        "conditions": "conditions",
        "audio_latents": "audio_latents",
        "reference_audio_latents": "ref_audio_latents",
    }


def test_data_sources_follow_renamed_folders() -> None:
    config = AudioReferenceConfig(
        video_latents_dir="v", audio_latents_dir="a", reference_audio_latents_dir="speaker_refs"
    )
    assert config.get_data_sources() == {
        "v": "latents",
        "conditions": "conditions",
        "a": "audio_latents",
        "speaker_refs": "ref_audio_latents",
    }


def test_parses_from_a_yaml_like_dict() -> None:
    config = AudioReferenceConfig.model_validate(
        {"name": "audio_reference", "reference_gap_s": 0.08, "lora_preset": "audio+bridges"}
    )
    assert config.reference_gap_s == 0.08
    assert config.lora_preset == "audio+bridges"


def test_other_strategy_name_is_rejected() -> None:
    with pytest.raises(ValidationError, match="audio_reference"):
        AudioReferenceConfig.model_validate({"name": "flexible"})


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="reference_strenght"):
        AudioReferenceConfig.model_validate({"reference_strenght": 0.5})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_frame_conditioning_p", 1.5),
        ("reference_strength", -0.1),
        ("reference_strength", 1.01),
        ("reference_gap_s", -0.04),
        ("video_loss_weight", -1.0),
        ("audio_loss_weight", -1.0),
        ("reference_positions", "before"),
        ("lora_preset", "video"),
        ("validation_reference_guidance", -0.5),
        ("validation_reference_guidance", float("nan")),
        ("validation_reference_guidance", float("inf")),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        AudioReferenceConfig.model_validate({field: value})


def test_both_loss_weights_zero_says_how_to_fix() -> None:
    with pytest.raises(ValidationError, match="Set audio_loss_weight > 0"):
        AudioReferenceConfig(audio_loss_weight=0.0, video_loss_weight=0.0)


def test_audio_weight_zero_without_generated_video_is_rejected() -> None:
    with pytest.raises(ValidationError, match="Nothing to train"):
        AudioReferenceConfig(audio_loss_weight=0.0, generate_video=False)


def test_video_only_loss_is_allowed() -> None:
    assert AudioReferenceConfig(audio_loss_weight=0.0).video_loss_weight == 1.0


def test_condition_only_video_with_explicit_video_weight_is_rejected() -> None:
    with pytest.raises(ValidationError, match="video_loss_weight: 0 or generate_video: true"):
        AudioReferenceConfig(generate_video=False, video_loss_weight=0.5)
    AudioReferenceConfig(generate_video=False)  # the default weight is no explicit request: accepted
    assert AudioReferenceConfig(generate_video=False, video_loss_weight=0.0).video_loss_weight == 0.0


def test_first_frame_conditioning_needs_generated_video() -> None:
    with pytest.raises(ValidationError, match="first_frame_conditioning_p: 0 or generate_video: true"):
        AudioReferenceConfig(generate_video=False, first_frame_conditioning_p=0.1)


def test_data_folders_must_be_distinct() -> None:
    with pytest.raises(ValidationError, match="three different directories"):
        AudioReferenceConfig(reference_audio_latents_dir="audio_latents")
    with pytest.raises(ValidationError, match="text embeddings"):
        AudioReferenceConfig(audio_latents_dir="conditions")


def test_gap_with_overlap_positions_is_rejected() -> None:
    with pytest.raises(ValidationError, match="reference_positions: negative"):
        AudioReferenceConfig(reference_positions="overlap", reference_gap_s=0.2)
    assert AudioReferenceConfig(reference_positions="overlap").reference_positions == "overlap"


def test_reference_guidance_is_off_by_default() -> None:
    # 0 keeps validation the stock sampler bit for bit (no extra pass) and lets samples without a reference validate.
    assert AudioReferenceConfig().validation_reference_guidance == 0.0
