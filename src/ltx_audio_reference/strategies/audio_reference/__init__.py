"""The ``audio_reference`` IC-LoRA strategy: a clean reference audio clip conditions joint audio+video generation.

:mod:`.config` holds :class:`~.config.AudioReferenceConfig` (importable without ltx-trainer); :mod:`.strategy` holds
the ltx-trainer ``TrainingStrategy`` adapter. The math lives in :mod:`ltx_audio_reference.conditioning`.
"""

from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig

__all__ = ["AudioReferenceConfig"]
