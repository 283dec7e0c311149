"""``ltx-trainer audio-reference eval``: does the reference control the generated pitch?

The sweep keeps the prompt and the seed fixed and changes only the reference: K voiced tones (default 8,
log-spaced from 90 to 300 Hz). It generates audio (and, by default, video) for each tone in three arms:

- ``lora``: the base checkpoint with the LoRA fused at strength 1, the reference at negative positions;
- ``base``: the base checkpoint alone, the same reference placement (what the base model leaks from a reference);
- ``overlap``: the LoRA with the reference at ``overlap`` positions (stock flexible placement), as an ablation.

Generation is ltx-trainer's own validation sampler: one ``ValidationRunner`` encodes the prompt and the reference
tones once (text encoder, audio VAE encoder), and its ``run()`` denoises (Euler, CFG, STG and modality guidance as
the config's ``validation`` section sets them) and decodes through the audio VAE decoder, vocoder and video decoder.
The reference reaches the model through the bridge's validation conditioning, i.e. the same placement function
training uses. The transformer is built by ltx-core's ``SingleGPUModelBuilder`` with the LoRA fused
(``LTXV_LORA_COMFY_RENAMING_MAP``, strength 1), as ltx-pipelines and ComfyUI apply it.

Each output's F0 and voiced fraction are measured with Praat (:mod:`.sweep_stats`), and each arm gets the slope of
output F0 on reference F0 with a bootstrap 95% CI. The result is ``sweep.json`` and ``sweep.png`` in the output
folder, next to the references and the generated files.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from ltx_audio_reference.evaluation.sweep_stats import ArmResult, PitchMeasurement, measure_pitch, plot_sweep

logger = logging.getLogger(__name__)

ARMS = ("lora", "base", "overlap")
#: arm -> (fuse the LoRA, reference placement)
ARM_SPECS: dict[str, tuple[bool, str]] = {
    "lora": (True, "negative"),
    "base": (False, "negative"),
    "overlap": (True, "overlap"),
}
REFERENCE_SAMPLE_RATE = 16000  # the audio VAE's rate (the runner resamples anything else)
STRATEGY_NAME = "audio_reference"


@dataclass
class SweepSettings:
    """What one sweep generates and measures."""

    config: Path
    out: Path
    lora: Path | None = None
    arms: Sequence[str] = ARMS
    prompt: str | None = None
    seed: int | None = None
    num_seeds: int = 1
    num_tones: int = 8
    f0_min_hz: float = 90.0
    f0_max_hz: float = 300.0
    inference_steps: int | None = None
    video_dims: tuple[int, int, int] | None = None
    generate_video: bool = True
    bootstrap: int = 2000
    device: str | None = None
    validation_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    """The measured arms and where the JSON and the plot were written."""

    arms: dict[str, ArmResult]
    json_path: Path
    plot_path: Path
    document: dict[str, Any]


def tone_frequencies(num_tones: int, f0_min_hz: float, f0_max_hz: float) -> list[float]:
    """``num_tones`` log-spaced F0s from ``f0_min_hz`` to ``f0_max_hz``.

    Raises:
        ValueError: On fewer than 2 tones or a range that is not increasing and positive.
    """
    if num_tones < 2:
        raise ValueError(f"A slope needs at least 2 reference tones, got {num_tones}")
    if not 0 < f0_min_hz < f0_max_hz:
        raise ValueError(f"Need 0 < f0_min_hz < f0_max_hz, got {f0_min_hz} and {f0_max_hz}")
    return [float(f) for f in np.geomspace(f0_min_hz, f0_max_hz, num_tones)]


def write_reference_tones(folder: Path, frequencies: Sequence[float], duration_s: float) -> list[tuple[Path, float]]:
    """Write one stereo 16 kHz voiced tone per frequency (one fixed timbre, so only the pitch changes).

    Returns:
        ``(path, measured F0)`` per tone; the nominal F0 where Praat finds none.
    """
    from ltx_audio_reference.data.audio_io import write_wav  # noqa: PLC0415
    from ltx_audio_reference.data.pitch import Timbre, synthesize_tone  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    tones = []
    for index, f0 in enumerate(frequencies):
        tone = synthesize_tone(
            f0, Timbre(), sample_rate=REFERENCE_SAMPLE_RATE, duration_s=duration_s, rng=np.random.default_rng(index)
        )
        path = write_wav(folder / f"tone_{index:02d}_{f0:.1f}hz.wav", np.stack([tone, tone]), REFERENCE_SAMPLE_RATE)
        measured = measure_pitch(tone, REFERENCE_SAMPLE_RATE).f0_hz
        tones.append((path, float(measured) if measured is not None else f0))
    return tones


def _load_transformer(model_path: Path, lora: Path | None, device: torch.device) -> torch.nn.Module:
    """The LTX-2 transformer in bf16, with ``lora`` fused at strength 1 as ltx-pipelines applies it."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps  # noqa: PLC0415
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: PLC0415
    from ltx_core.model.transformer.model_configurator import (  # noqa: PLC0415
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )

    loras = () if lora is None else (LoraPathStrengthAndSDOps(str(lora), 1.0, LTXV_LORA_COMFY_RENAMING_MAP),)
    model = SingleGPUModelBuilder(
        model_path=str(model_path),
        model_class_configurator=LTXModelConfigurator,
        model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
        loras=loras,
    ).build(device=device, dtype=torch.bfloat16)
    return model.eval().requires_grad_(False)


def _load_config_sections(path: Path) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The stock ``ModelConfig``, the strategy config, the raw ``validation`` dict and ``acceleration`` dict."""
    from ltx_audio_reference.cli import load_yaml  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415
    from ltx_trainer.config import ModelConfig  # noqa: PLC0415

    data = load_yaml(path)
    if "model" not in data:
        raise ValueError(f"{path} has no model section (model_path, text_encoder_path)")
    strategy = dict(data.get("training_strategy") or {"name": STRATEGY_NAME})
    if strategy.get("name") != STRATEGY_NAME:
        raise ValueError(f"{path} trains {strategy.get('name')!r}; the pitch sweep evaluates {STRATEGY_NAME!r} LoRAs")
    return (
        ModelConfig(**data["model"]),
        AudioReferenceConfig(**strategy),
        dict(data.get("validation") or {}),
        dict(data.get("acceleration") or {}),
    )


def _default_prompt(validation: dict[str, Any]) -> str | None:
    samples = validation.get("samples") or []
    if samples and isinstance(samples[0], dict) and samples[0].get("prompt"):
        return str(samples[0]["prompt"])
    prompts = validation.get("prompts") or []
    return str(prompts[0]) if prompts else None


def _check_lora(lora: Path, strategy_config: Any) -> None:  # noqa: ANN401
    from ltx_audio_reference.evaluation.lora_inspect import inspect_lora  # noqa: PLC0415

    report = inspect_lora(lora)
    if not report.ok:
        raise ValueError(f"{lora} is not a clean LoRA export:\n" + "\n".join(report.problems))
    trained_gap = report.metadata.get("reference_gap_s")
    if isinstance(trained_gap, int | float) and not math.isclose(trained_gap, strategy_config.reference_gap_s):
        logger.warning(
            "%s was trained with reference_gap_s %s but the config says %s; the sweep uses the config's",
            lora,
            trained_gap,
            strategy_config.reference_gap_s,
        )


def run_sweep(settings: SweepSettings) -> SweepResult:  # noqa: PLR0915 - one linear pipeline, easiest read in order
    """Generate and measure every arm of the pitch sweep.

    Args:
        settings: Paths, arms, tones and overrides.

    Returns:
        The measured arms, and the paths of ``sweep.json`` and ``sweep.png``.

    Raises:
        ValueError: On an unknown arm, a LoRA arm without a LoRA (or with a broken one), a config that does not train
            ``audio_reference``, or no prompt.
        ModuleNotFoundError: If ltx-trainer is not installed.
    """
    from ltx_audio_reference import bridge  # noqa: PLC0415

    unknown = [arm for arm in settings.arms if arm not in ARM_SPECS]
    if unknown or not settings.arms:
        raise ValueError(f"Unknown arms {unknown}; choose from {', '.join(ARMS)}")
    if settings.lora is None and any(ARM_SPECS[arm][0] for arm in settings.arms):
        raise ValueError("The lora and overlap arms need --lora; run only --arms base without one")

    installation = bridge.install()
    from ltx_trainer.config import ReferenceConditionConfig, ValidationConfig, ValidationSample  # noqa: PLC0415
    from ltx_trainer.progress import TrainingProgress  # noqa: PLC0415
    from ltx_trainer.validation_runner import ValidationRunner  # noqa: PLC0415

    model, strategy_config, validation, acceleration = _load_config_sections(settings.config)
    if settings.lora is not None:
        _check_lora(settings.lora, strategy_config)
    prompt = settings.prompt or _default_prompt(validation)
    if not prompt:
        raise ValueError("No prompt: pass --prompt or give the config's validation section a sample prompt")

    overrides: dict[str, Any] = {"generate_audio": True, "generate_video": settings.generate_video}
    if settings.inference_steps is not None:
        overrides["inference_steps"] = settings.inference_steps
    if settings.video_dims is not None:
        overrides["video_dims"] = settings.video_dims
    overrides.update(settings.validation_overrides)
    legacy = ("samples", "prompts", "images", "reference_videos")
    base_validation = ValidationConfig(**{**{k: v for k, v in validation.items() if k not in legacy}, **overrides})
    width, height, frames = base_validation.video_dims
    duration_s = frames / base_validation.frame_rate
    seed = settings.seed if settings.seed is not None else base_validation.seed
    seeds = [seed + i for i in range(settings.num_seeds)]

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    nominal = tone_frequencies(settings.num_tones, settings.f0_min_hz, settings.f0_max_hz)
    tones = write_reference_tones(out / "references", nominal, duration_s)
    samples = [
        ValidationSample(prompt=prompt, conditions=[ReferenceConditionConfig(audio=str(path))], seed=s)
        for path, _ in tones
        for s in seeds
    ]
    reference_hz = [f0 for _, f0 in tones for _ in seeds]
    labels = [
        {"tone": k, "nominal_f0_hz": nominal[k], "seed": s, "reference_file": str(path)}
        for k, (path, _) in enumerate(tones)
        for s in seeds
    ]
    validation_config = base_validation.model_copy(update={"samples": samples})

    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    logger.info(
        "Pitch sweep: %d tones x %d seeds, %dx%dx%d at %.3g fps, %d steps, arms %s",
        len(tones),
        len(seeds),
        width,
        height,
        frames,
        base_validation.frame_rate,
        base_validation.inference_steps,
        ", ".join(settings.arms),
    )
    runner = ValidationRunner(
        config=validation_config,
        model_path=model.model_path,
        text_encoder_path=model.text_encoder_path,
        video_vae_path=model.video_vae_path,
        audio_vae_path=model.audio_vae_path,
        load_text_encoder_in_8bit=bool(acceleration.get("load_text_encoder_in_8bit", False)),
    )

    measured: dict[str, list[tuple[PitchMeasurement, str]]] = {}
    previous = (installation.active_strategy, installation.strategy_config)
    try:
        for fuse in (False, True):  # one transformer in memory at a time
            arms_here = [arm for arm in settings.arms if ARM_SPECS[arm][0] == fuse]
            if not arms_here:
                continue
            transformer = _load_transformer(Path(model.model_path), settings.lora if fuse else None, device)
            for arm in arms_here:
                placement = ARM_SPECS[arm][1]
                installation.active_strategy = STRATEGY_NAME
                installation.strategy_config = strategy_config.model_copy(update={"reference_positions": placement})
                logger.info("Arm %s: generating %d samples (reference at %s positions)", arm, len(samples), placement)
                results = runner.run(
                    transformer=transformer,
                    step=0,
                    output_dir=out / arm,
                    device=device,
                    progress=TrainingProgress(enabled=False, total_steps=1),
                )
                measured[arm] = [_measure_file(path) for _, path in sorted(results)]
            del transformer
    finally:
        installation.active_strategy, installation.strategy_config = previous

    from ltx_audio_reference.evaluation.sweep_stats import summarize_arm  # noqa: PLC0415

    arms: dict[str, ArmResult] = {}
    for arm in settings.arms:
        rows = [{**label, "file": file} for label, (_, file) in zip(labels, measured[arm], strict=True)]
        arms[arm] = summarize_arm(
            arm, reference_hz, [m for m, _ in measured[arm]], labels=rows, bootstrap=settings.bootstrap
        )
    document = {
        "config": str(settings.config),
        "lora": str(settings.lora) if settings.lora else None,
        "prompt": prompt,
        "seeds": seeds,
        "nominal_f0_hz": nominal,
        "reference_f0_hz": [f0 for _, f0 in tones],
        "video_dims": [width, height, frames],
        "frame_rate": base_validation.frame_rate,
        "inference_steps": base_validation.inference_steps,
        "generate_video": settings.generate_video,
        "reference_gap_s": strategy_config.reference_gap_s,
        "slope": "OLS of output F0 on reference F0, both in semitones; percentile bootstrap over the pairs",
        "arms": {arm: result.to_dict() for arm, result in arms.items()},
    }
    json_path = out / "sweep.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    title = f"Pitch sweep: {settings.lora.name if settings.lora else 'base only'}"
    plot_path = plot_sweep(list(arms.values()), out / "sweep.png", title=title)
    return SweepResult(arms=arms, json_path=json_path, plot_path=plot_path, document=document)


def _measure_file(path: Path) -> tuple[PitchMeasurement, str]:
    from ltx_audio_reference.data.audio_io import read_audio  # noqa: PLC0415

    waveform, sample_rate = read_audio(path)
    return measure_pitch(waveform, sample_rate), str(path)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def _parse_dims(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        width, height, frames = (int(v) for v in value.replace("x", ",").split(","))
    except ValueError as e:
        raise typer.BadParameter(f"expected WIDTH,HEIGHT,FRAMES such as 512,512,121, got {value!r}") from e
    return width, height, frames


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--validation")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def eval_command(  # noqa: PLR0913, PLR0917 - every option is a CLI flag
    config: Annotated[
        Path,
        typer.Argument(help="The training YAML: model paths, validation (guidance, dims, steps), strategy placement."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for references, outputs, sweep.json, sweep.png.")],
    lora: Annotated[Path | None, typer.Option("--lora", help="The LoRA to evaluate (lora and overlap arms).")] = None,
    arms: Annotated[str, typer.Option("--arms", help="Comma-separated arms: lora, base, overlap.")] = ",".join(ARMS),
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Fixed prompt (default: the config's first validation prompt).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Fixed seed (default: validation.seed).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Consecutive seeds per tone (more points).")] = 1,
    tones: Annotated[int, typer.Option("--tones", min=2, help="Reference tones, log-spaced.")] = 8,
    f0_min: Annotated[float, typer.Option("--f0-min", help="Lowest reference F0 (Hz).")] = 90.0,
    f0_max: Annotated[float, typer.Option("--f0-max", help="Highest reference F0 (Hz).")] = 300.0,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Denoising steps (default: validation's).")
    ] = None,
    video_dims: Annotated[
        str | None, typer.Option("--video-dims", help="WIDTH,HEIGHT,FRAMES (default: validation.video_dims).")
    ] = None,
    audio_only: Annotated[
        bool, typer.Option("--audio-only", help="Generate audio alone (no video stream, no video decoder).")
    ] = False,
    validation: Annotated[
        list[str] | None,
        typer.Option(
            "--validation",
            help="Override a validation setting, KEY=VALUE with a YAML value (repeatable), e.g. audio_cfg_scale=5.",
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the CI.")] = 2000,
    device: Annotated[str | None, typer.Option("--device", help="Torch device (default: cuda if available).")] = None,
) -> None:
    """Pitch sweep: output F0 against reference F0 for the LoRA, the base model and the overlap ablation."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    settings = SweepSettings(
        config=config,
        out=out,
        lora=lora,
        arms=[a.strip() for a in arms.split(",") if a.strip()],
        prompt=prompt,
        seed=seed,
        num_seeds=seeds,
        num_tones=tones,
        f0_min_hz=f0_min,
        f0_max_hz=f0_max,
        inference_steps=steps,
        video_dims=_parse_dims(video_dims),
        generate_video=not audio_only,
        bootstrap=bootstrap,
        device=device,
        validation_overrides=_parse_overrides(validation or []),
    )
    console = Console()
    try:
        result = run_sweep(settings)
    except (ValueError, ModuleNotFoundError) as e:
        console.print(f"[red]{e}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from e

    table = Table(title="Pitch sweep: slope of output F0 on reference F0 (semitones)")
    for column in ("arm", "slope", "95% CI", "voiced fraction", "voiced outputs"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in result.arms.values():
        fit = arm.fit
        slope = "-" if fit.slope is None else f"{fit.slope:.3f}"
        ci = "-" if fit.ci_low is None else f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}]"
        table.add_row(arm.arm, slope, ci, f"{arm.voiced_fraction:.0%}", f"{arm.voiced_outputs}/{len(arm.outputs)}")
    console.print(table)
    console.print(f"Wrote {result.json_path} and {result.plot_path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``audio-reference`` command group."""
    app.command("eval")(eval_command)
