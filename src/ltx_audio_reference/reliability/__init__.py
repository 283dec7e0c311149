"""Reliability, one module per concern; torch and the standard library only (the bridge wires them into the runner).

- :mod:`.files`: the one atomic write (checkpoints, latents, dataset pairs, reports);
- :mod:`.checkpoints`: complete checkpoint pairs, resume choice, untrusted training states, LoRA key matching;
- :mod:`.guards`: non-finite losses, gradient norms and weights;
- :mod:`.determinism`: the data order and per-sample draws as functions of the seed, epoch and sample index;
- :mod:`.export`: the complete LoRA export (also under FSDP);
- :mod:`.preflight`: a run's settings checked before any model loads (counts, text encoder, output folders, resume).
- :mod:`.run_start`: a run's start in its folder, undone if the run ends before its first step.
"""
