"""The LTX-2 latent layout, written once: what every latent file, token and RoPE position of this package assumes.

These are properties of the LTX-2 / LTX-2.3 VAEs and the stock preprocessing (``process_dataset.py``), read from
ltx-core and ltx-trainer 1.2.0. Importing this module imports nothing but the standard library.
"""

from __future__ import annotations

#: The audio VAE's sample rate (Hz); references are resampled to it before encoding.
AUDIO_SAMPLE_RATE = 16000
#: Seconds covered by one audio latent: hop 160 samples x 4 (VAE downsampling) / 16 kHz.
AUDIO_LATENT_SECONDS = 0.04
#: Audio latents are ``[8, T, 16]`` per sample (``[B, 8, T, 16]`` batched).
AUDIO_LATENT_CHANNELS = 8
AUDIO_MEL_BINS = 16
#: The patchifier flattens channels x mel bins into this many features per audio token.
AUDIO_TOKEN_FEATURES = AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS
#: Video latents are ``[128, F, H, W]`` per sample; one token per latent pixel carries 128 features.
VIDEO_LATENT_CHANNELS = 128
#: Frame rate assumed when the video latents carry no ``fps`` (the stock trainer's default).
DEFAULT_FPS = 24.0
#: Prompt lengths are multiples of this: the text connectors tile 128 learnable registers over the padding.
PROMPT_LENGTH_MULTIPLE = 128
#: The stock dataset reads this sub-folder of ``preprocessed_data_root`` when it exists.
PRECOMPUTED_DIR_NAME = ".precomputed"
#: Default silence between the end of a reference and the start of the target: one audio latent, as in DubIt.
DEFAULT_REFERENCE_GAP_S = AUDIO_LATENT_SECONDS
#: Seconds that ltx-core's audio RoPE scales positions by (``audio_positional_embedding_max_pos``, default ``[20]``):
#: a position t enters the rotary angles as ``2 * t / 20 - 1``, so 0..20 s is the range the model is laid out for.
AUDIO_ROPE_MAX_POS_S = 20.0


def audio_duration_s(num_latents: int) -> float:
    """Seconds of audio that ``num_latents`` audio latents cover."""
    return num_latents * AUDIO_LATENT_SECONDS


__all__ = [
    "AUDIO_LATENT_CHANNELS",
    "AUDIO_LATENT_SECONDS",
    "AUDIO_MEL_BINS",
    "AUDIO_ROPE_MAX_POS_S",
    "AUDIO_SAMPLE_RATE",
    "AUDIO_TOKEN_FEATURES",
    "DEFAULT_FPS",
    "DEFAULT_REFERENCE_GAP_S",
    "PRECOMPUTED_DIR_NAME",
    "PROMPT_LENGTH_MULTIPLE",
    "VIDEO_LATENT_CHANNELS",
    "audio_duration_s",
]
