"""Step rate of the ``audio_reference`` strategy against stock ``flexible`` (audio-to-audio IC-LoRA), in one process.

Both arms are stock ``LtxvTrainer`` instances (after ``ltx_audio_reference.install()``), built from two configs that
differ only in their ``training_strategy`` section:

- ``audio_reference``: the plugin's defaults (video and target audio generated, reference audio clean at negative
  RoPE times, ``lora_preset: audio``).
- ``flexible``: upstream's ``configs/a2a_ic_lora.yaml`` strategy (target audio generated, reference audio appended
  through flexible's ``reference`` condition from ``reference_audio_latents/``) plus ``video: {is_generated: true}``.
  Upstream's a2a config has no video modality, but ``audio_reference`` always runs the video stream (it generates the
  video with the audio), so the like-for-like stock run generates the video too. Both arms then send the transformer
  the same video tokens and the same ``target + reference`` audio tokens, and both put a loss on video and audio.

Everything else is shared: the checkpoint file (a real ltx-core ``LTXModel``, wider and deeper than the kit's tiny one),
the dataset (``tiny_model.write_synthetic_dataset`` with ``reference_audio_latents/``, the folder names upstream's a2a
config reads), the LoRA section (upstream a2a's audio ``target_modules``, rank = alpha; the ``audio`` preset expands to
the same modules, which the script checks), batch size, seed, bf16 autocast and gradient checkpointing (both upstream
a2a and our Helium config enable it). The script also checks that both arms feed the model the same token counts.

Each trainer's own ``__init__`` loads the model, sets up LoRA (through the plugin hooks) and prepares it; its own
``_init_optimizer``, ``_init_dataloader`` and ``_init_timestep_sampler`` set up training. A step is the body of
``LtxvTrainer.train()``'s loop in ltx-trainer 1.2.0 without validation, checkpoints and logging (all off or
identical in both arms): the next batch, the trainer's ``_training_step`` (text connectors, the strategy's
``prepare_training_inputs``, forward, ``compute_loss``), backward, gradient clipping, optimizer and scheduler steps,
and reading the loss. Driving the steps here, instead of calling ``train()``, lets the arms alternate step by step:
after a warm-up, every round runs ``--steps`` steps per arm as A, B, A, B, ..., and the leading arm flips every round.
Each arm keeps its own torch RNG stream, seeded as ``train()`` seeds it, so the alternation changes nothing either arm
draws.

The step-rate ratio is the median over pairs of back-to-back steps of ``t_flexible / t_audio_reference``: load from
other processes hits both steps of a pair alike and cancels. The ratio of the arms' median step times and a paired
CPU-time ratio are printed too. Parts are timed by wrapping the strategy's two methods and hooking the transformer's
forward; ``text`` is the rest of ``_training_step`` (the trainer's text connectors).

Run (2-core CPU, a few minutes):

    venv-int/bin/python benchmarks/strategy_overhead.py
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

from ltx_audio_reference.testing import tiny_model

logger = logging.getLogger(__name__)

#: Upstream ``configs/a2a_ic_lora.yaml``'s LoRA targets (the audio stack), written into both configs.
A2A_TARGET_MODULES = [
    "audio_attn1.to_k",
    "audio_attn1.to_q",
    "audio_attn1.to_v",
    "audio_attn1.to_out.0",
    "audio_attn2.to_k",
    "audio_attn2.to_q",
    "audio_attn2.to_v",
    "audio_attn2.to_out.0",
    "audio_ff.net.0.proj",
    "audio_ff.net.2",
]
PARTS = ("data", "text", "prepare", "forward", "loss", "backward", "optimizer")
ARMS = ("audio_reference", "flexible")


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint, text encoder, data and configs
# ---------------------------------------------------------------------------------------------------------------------


def write_checkpoint(path: Path, *, blocks: int, heads: int, video_head_dim: int, audio_head_dim: int) -> int:
    """Write a stock-loadable LTX-2 checkpoint with a wider, deeper transformer than the kit's tiny one.

    The text parts (feature extractor and connectors) come from the kit's checkpoint unchanged: they only depend on
    the caption width, and this transformer's caption projections map that width to its own. Weights are seeded.

    Returns:
        The transformer's parameter count.
    """
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator  # noqa: PLC0415

    kit_path = tiny_model.write_tiny_checkpoint(path.with_name("kit_text_parts.safetensors"), num_layers=1)
    connectors = (tiny_model.VIDEO_CONNECTOR_PREFIX, tiny_model.AUDIO_CONNECTOR_PREFIX)
    text_parts = {
        key: value
        for key, value in load_file(str(kit_path)).items()
        if key.startswith(connectors) or not key.startswith(tiny_model.TRANSFORMER_PREFIX)
    }
    kit_path.unlink()

    config = tiny_model.tiny_checkpoint_config(blocks)
    config["transformer"].update(
        num_attention_heads=heads,
        audio_num_attention_heads=heads,
        attention_head_dim=video_head_dim,
        audio_attention_head_dim=audio_head_dim,
        cross_attention_dim=heads * video_head_dim,
        audio_cross_attention_dim=heads * audio_head_dim,
    )
    with torch.device("meta"):
        model = LTXModelConfigurator.from_metadata({"config": config})
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    tensors = dict(text_parts)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                value = noise * (0.02 if name.endswith("proj_out.weight") else param.shape[-1] ** -0.5)
            else:
                value = (1.0 if "norm" in name else 0.0) + 0.02 * noise
            tensors[f"{tiny_model.TRANSFORMER_PREFIX}{name}"] = value.to(torch.bfloat16)
    save_file(tensors, str(path), metadata={"format": "pt", "config": json.dumps(config)})
    return sum(p.numel() for p in model.parameters())


def strategy_sections() -> dict[str, dict[str, Any]]:
    """The two ``training_strategy`` sections: the only difference between the arms' configs."""
    return {
        "audio_reference": {
            "name": "audio_reference",
            "lora_preset": "audio",
            "reference_positions": "negative",
            "first_frame_conditioning_p": 0.0,
            "generate_video": True,
        },
        "flexible": {
            "name": "flexible",
            "video": {"is_generated": True, "latents_dir": "latents"},
            "audio": {
                "is_generated": True,
                "latents_dir": "audio_latents",
                "conditions": [{"type": "reference", "latents_dir": "reference_audio_latents", "probability": 1.0}],
            },
        },
    }


def trainer_config(
    root: Path, arm: str, *, steps: int, batch_size: int, rank: int, checkpointing: bool, seed: int
) -> Any:  # noqa: ANN401
    """One arm's ``LtxTrainerConfig`` (validated by the stock model with the bridge installed)."""
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    return LtxTrainerConfig.model_validate(
        {
            "model": {
                "model_path": str(root / "model.safetensors"),
                "text_encoder_path": str(root / "text_encoder"),
                "training_mode": "lora",
            },
            "lora": {"rank": rank, "alpha": rank, "dropout": 0.0, "target_modules": A2A_TARGET_MODULES},
            "training_strategy": strategy_sections()[arm],
            "optimization": {
                "learning_rate": 2e-4,
                "steps": steps,
                "batch_size": batch_size,
                "gradient_accumulation_steps": 1,
                "max_grad_norm": 1.0,
                "optimizer_type": "adamw",
                "scheduler_type": "constant",
                "enable_gradient_checkpointing": checkpointing,
            },
            "acceleration": {"mixed_precision_mode": "bf16", "quantization": None},
            "data": {"preprocessed_data_root": str(root / "data"), "num_dataloader_workers": 0},
            "validation": {"interval": None, "generate_video": False, "generate_audio": False},
            "checkpoints": {"interval": None, "keep_last_n": 1, "save_training_state": "off"},
            "output_dir": str(root / "outputs" / arm),
            "seed": seed,
        }
    )


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Arm:
    """One arm: its stock trainer, its own RNG stream, and the timings of its counted steps."""

    name: str
    trainer: Any
    rng_state: torch.Tensor
    data_iter: Iterator[Any] | None = None
    steps: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=lambda: {part: [] for part in PARTS})
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _current: dict[str, float] = field(default_factory=dict)
    _forward_start: float = 0.0

    def start(self) -> None:
        """What ``LtxvTrainer.train()`` sets up before its loop: optimizer, data loader, timestep sampler."""
        with self._own_rng():
            self.trainer._init_optimizer()
            self.trainer._init_dataloader()
            self.trainer._init_timestep_sampler()
            self.trainer._transformer.train()
            self.data_iter = iter(self.trainer._dataloader)
        self._instrument()

    def step(self, *, record: bool) -> None:
        """One iteration of ``LtxvTrainer.train()``'s loop body (1.2.0), without validation, checkpoints and logging.

        Timed: fetching the batch, ``_training_step`` (text connectors, strategy inputs, forward, loss), backward,
        gradient clipping, optimizer and scheduler steps, and reading the loss back as the stock loop does.
        """
        trainer, accelerator = self.trainer, self.trainer._accelerator
        max_grad_norm = trainer._config.optimization.max_grad_norm
        self._current = {}
        with self._own_rng():
            cpu_start = time.process_time()
            start = time.perf_counter()
            try:
                batch = next(self.data_iter)
            except StopIteration:
                self.data_iter = iter(trainer._dataloader)
                batch = next(self.data_iter)
            fetched = time.perf_counter()
            with accelerator.accumulate(trainer._transformer):
                output = trainer._training_step(batch)
                stepped = time.perf_counter()
                accelerator.backward(output.loss.mean())
                backward = time.perf_counter()
                if accelerator.sync_gradients and max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainer._trainable_params, max_grad_norm)
                trainer._optimizer.step()
                trainer._optimizer.zero_grad()
                if trainer._lr_scheduler is not None:
                    trainer._lr_scheduler.step()
            output.loss.detach().mean().item()
            end = time.perf_counter()
            cpu_end = time.process_time()
        if not record:
            return
        self.steps.append(end - start)
        self.cpu.append(cpu_end - cpu_start)
        inside = {part: self._current.get(part, 0.0) for part in ("prepare", "forward", "loss")}
        timed = {
            "data": fetched - start,
            "text": stepped - fetched - sum(inside.values()),
            **inside,
            "backward": backward - stepped,
            "optimizer": end - backward,
        }
        for part in PARTS:
            self.parts[part].append(timed[part])

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        # Each arm draws from its own stream seeded like the stock loop (set_seed(seed)), so alternating the arms
        # step by step does not change what either of them samples.
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(outer)

    def _instrument(self) -> None:
        strategy = self.trainer._training_strategy
        prepare, compute_loss = strategy.prepare_training_inputs, strategy.compute_loss

        def timed_prepare(batch: dict[str, Any], sampler: Any) -> Any:  # noqa: ANN401
            start = time.perf_counter()
            inputs = prepare(batch, sampler)
            self._current["prepare"] = time.perf_counter() - start
            if not self.shapes:
                self.shapes = {"video": tuple(inputs.video.latent.shape), "audio": tuple(inputs.audio.latent.shape)}
            return inputs

        def timed_loss(*args: Any) -> Any:  # noqa: ANN401
            start = time.perf_counter()
            loss = compute_loss(*args)
            self._current["loss"] = time.perf_counter() - start
            return loss

        strategy.prepare_training_inputs = timed_prepare
        strategy.compute_loss = timed_loss
        # With gradient checkpointing the recompute runs per block inside backward, so the model-level hooks fire
        # once per step, around the forward only.
        transformer = self.trainer._transformer
        transformer.register_forward_pre_hook(self._forward_started)
        transformer.register_forward_hook(self._forward_done)

    def _forward_started(self, *_: Any) -> None:  # noqa: ANN401
        self._forward_start = time.perf_counter()

    def _forward_done(self, *_: Any) -> None:  # noqa: ANN401
        self._current["forward"] = time.perf_counter() - self._forward_start


def build_arm(name: str, root: Path, seed: int, **config: Any) -> Arm:  # noqa: ANN401
    """Build one arm's stock trainer (loads the checkpoint, sets up LoRA through the hooks, prepares the model)."""
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    with contextlib.redirect_stdout(io.StringIO()):  # the stock trainer prints its config table
        trainer = LtxvTrainer(trainer_config(root, name, seed=seed, **config))
    generator = torch.Generator().manual_seed(seed)
    arm = Arm(name=name, trainer=trainer, rng_state=generator.get_state())
    arm.start()
    return arm


def lora_names(arm: Arm) -> set[str]:
    """Trainable parameter names, without the peft wrapper's prefix."""
    named = arm.trainer._transformer.named_parameters()
    return {name.removeprefix("base_model.model.") for name, param in named if param.requires_grad}


# ---------------------------------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------------------------------


def main(  # noqa: PLR0913
    *,
    steps: Annotated[int, typer.Option(min=1, help="Counted steps per arm per round.")] = 12,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; the arms alternate step by step, leader flips.")] = 6,
    warmup: Annotated[int, typer.Option(min=0, help="Uncounted steps per arm before the rounds.")] = 3,
    blocks: Annotated[int, typer.Option(min=1, help="Transformer blocks.")] = 4,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads (video and audio).")] = 16,
    video_head_dim: Annotated[int, typer.Option(min=1, help="Video head dim (width = heads x this).")] = 64,
    audio_head_dim: Annotated[int, typer.Option(min=1, help="Audio head dim (width = heads x this).")] = 32,
    video_frames: Annotated[int, typer.Option(min=1, help="Video latent frames.")] = 4,
    video_size: Annotated[int, typer.Option(min=1, help="Video latent height and width.")] = 8,
    audio_steps: Annotated[int, typer.Option(min=1, help="Target audio latent steps (0.04 s each).")] = 26,
    reference_steps: Annotated[int, typer.Option(min=1, help="Reference audio latent steps.")] = 11,
    samples: Annotated[int, typer.Option(min=1, help="Samples in the synthetic dataset.")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 1,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank (= alpha).")] = 32,
    checkpointing: Annotated[bool, typer.Option(help="Gradient checkpointing, as upstream a2a enables.")] = True,
    seed: Annotated[int, typer.Option(help="Training seed of both arms.")] = 42,
    threads: Annotated[int | None, typer.Option(min=1, help="torch intra-op threads (default: torch's).")] = None,
    threshold: Annotated[float, typer.Option(help="Exit 1 if the paired step-rate ratio is below this.")] = 0.98,
    workdir: Annotated[Path | None, typer.Option(help="Keep the files here (default: a temporary folder).")] = None,
) -> None:
    """Compare training step rates of audio_reference and stock flexible (a2a IC-LoRA) on one model and dataset."""
    import ltx_audio_reference  # noqa: PLC0415

    console = Console(width=160)
    if threads is not None:
        torch.set_num_threads(threads)
    ltx_audio_reference.install()
    # ltx_trainer's import configures the root logger at INFO; keep the output to the figures.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ltxv_trainer").setLevel(logging.ERROR)
    started, load_before = time.perf_counter(), os.getloadavg()[0]

    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strategy_overhead_")))
        root.mkdir(parents=True, exist_ok=True)
        with console.status("Writing checkpoint, text encoder and dataset..."):
            params = write_checkpoint(
                root / "model.safetensors",
                blocks=blocks,
                heads=heads,
                video_head_dim=video_head_dim,
                audio_head_dim=audio_head_dim,
            )
            tiny_model.write_text_encoder_dir(root / "text_encoder")
            tiny_model.write_synthetic_dataset(
                root / "data",
                num_samples=samples,
                video_frames=video_frames,
                video_height=video_size,
                video_width=video_size,
                audio_steps=audio_steps,
                reference_steps=reference_steps,
            )
        config = {"steps": warmup + rounds * steps, "batch_size": batch_size, "rank": rank}
        with console.status("Building both stock trainers..."):
            arms = [build_arm(name, root, seed, checkpointing=checkpointing, **config) for name in ARMS]
        if lora_names(arms[0]) != lora_names(arms[1]):
            raise RuntimeError("The arms train different LoRA parameters; the comparison would not be like-for-like")
        round_ratios = alternate(arms, steps=steps, rounds=rounds, warmup=warmup, console=console)

    ours, stock = arms
    if ours.shapes != stock.shapes:
        raise RuntimeError(f"Token counts differ: audio_reference {ours.shapes}, flexible {stock.shapes}")
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs (load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after); transformer {params / 1e6:.1f} M params "
        f"({blocks} blocks, video width {heads * video_head_dim}, audio width {heads * audio_head_dim}); "
        f"LoRA r{rank} on {len(lora_names(ours)) // 2} audio modules; batch {batch_size}; bf16 autocast; "
        f"gradient checkpointing {'on' if checkpointing else 'off'}"
    )
    console.print(
        f"tokens per sample: video {ours.shapes['video'][1]}, audio {ours.shapes['audio'][1]} "
        f"({audio_steps} target + {reference_steps} reference); {len(ours.steps)} counted steps per arm "
        f"({rounds} rounds x {steps}, after {warmup} warm-up); total {time.perf_counter() - started:.0f} s"
    )
    table = Table("arm", "steps/s", "step ms", "cpu ms", *(f"{part} ms" for part in PARTS), box=box.MARKDOWN)
    for arm in arms:
        table.add_row(
            arm.name,
            f"{1 / statistics.median(arm.steps):.3f}",
            *(f"{1000 * statistics.median(values):.1f}" for values in (arm.steps, arm.cpu)),
            *(f"{1000 * statistics.median(arm.parts[part]):.2f}" for part in PARTS),
        )
    console.print(table)
    ratio = paired_ratio(stock.steps, ours.steps)
    of_medians = statistics.median(stock.steps) / statistics.median(ours.steps)
    cpu = paired_ratio(stock.cpu, ours.cpu)
    console.print(
        f"step-rate ratio audio_reference / flexible: {ratio:.4f} (median of paired steps); {of_medians:.4f} (ratio "
        f"of median step times); {cpu:.4f} (paired CPU time); per round {', '.join(f'{r:.3f}' for r in round_ratios)}"
    )
    if ratio < threshold:
        console.print(f"[red]ratio {ratio:.4f} is below {threshold}[/red]")
        raise typer.Exit(1)


def alternate(arms: list[Arm], *, steps: int, rounds: int, warmup: int, console: Console) -> list[float]:
    """Warm up, then run the rounds, alternating the arms step by step; the leading arm flips every round.

    Returns:
        Each round's step-rate ratio (:func:`paired_ratio`).
    """
    with console.status("Warming up..."):
        for _ in range(warmup):
            for arm in arms:
                arm.step(record=False)
    ratios = []
    for index in range(rounds):
        order = arms if index % 2 == 0 else arms[::-1]
        with console.status(f"Round {index + 1}/{rounds} ({order[0].name} leads)..."):
            for _ in range(steps):
                for arm in order:
                    arm.step(record=True)
        ratios.append(paired_ratio(arms[1].steps[-steps:], arms[0].steps[-steps:]))
    return ratios


def paired_ratio(stock: list[float], ours: list[float]) -> float:
    """Median over paired steps of ``stock / ours`` (the two steps of a pair ran back to back).

    Load from other processes changes both steps of a pair alike, so it cancels here, where it does not in a ratio
    of the two arms' separate medians.
    """
    return statistics.median(s / o for s, o in zip(stock, ours, strict=True))


def _run() -> None:
    typer.run(main)


if __name__ == "__main__":
    _run()
