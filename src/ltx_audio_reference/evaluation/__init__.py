"""Evaluation: is the reference load-bearing?

- :mod:`.lora_inspect`: ``ltx-trainer audio-reference inspect``, a LoRA file's keys, finiteness, preset and norms,
  and the relative distance between two files.
- :mod:`ltx_audio_reference.strategies.audio_reference.ref_gap`: the reference-attribution gap, measured at checkpoint
  cadence through the ``on_checkpoint`` hook.
- :mod:`.sweep_stats`: F0 and voiced fraction of generated audio (Praat, through
  :mod:`ltx_audio_reference.data.pitch`), and the slope of output F0 on reference F0 with a bootstrap CI.
- :mod:`.sweep`: ``ltx-trainer audio-reference eval``, the pitch sweep through ltx-trainer's validation sampler.
- :mod:`ltx_audio_reference.testing.tiny_assets`: tiny random VAEs, vocoder and Gemma weights, so the tiny pack
  generates on CPU.

Nothing here imports ltx-trainer at import time.
"""
