"""Data tools: the reference-audio precompute, the Helium dataset recipes and the pitch tools they share.

Nothing here imports ltx-trainer. The recipe tools need the ``recipes`` extra (praat-parselmouth, numpy, soundfile,
PyAV, matplotlib), imported lazily so the CLI builds without it.
"""
