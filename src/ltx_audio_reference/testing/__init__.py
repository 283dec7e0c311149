"""Fixtures that generate everything a test, a benchmark or ``ltx-trainer demo`` needs, with no download.

- :mod:`.tiny_model`: a real tiny LTX-2 checkpoint (2 blocks by default), a Gemma-3 folder and a synthetic dataset;
- :mod:`.tiny_ltx25`: a tiny LTX-2.5 split pack (transformer, packed Gemma-4 text encoder, video and audio VAE);
- :mod:`.tiny_assets`: tiny random VAEs, vocoder and Gemma weights, so the tiny pack preprocesses clips and generates;
- :mod:`.tiny_audio_vae`: a tiny audio VAE encoder checkpoint;
- :mod:`.synthetic_audio`: synthetic voices and clips for the pitch tools and dataset recipes;
- :mod:`.swap_workload`: LTX-2.3-class blocks and the seed workload, for block-swap and compile tests and benchmarks;
- :mod:`.demo`: the demo folder (an LTX-2.3-style monolith or an LTX-2.5 split pack, dataset, config).

It ships with the package because ``ltx-trainer demo`` uses it.
"""
