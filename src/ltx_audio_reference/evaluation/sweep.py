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

**Reference guidance.** Each arm can also be sampled with reference guidance (``--reference-guidance 0,0.5,1,3``):
at every denoising step one more pass without the reference, and ``pred = G(...) + s * (pred_ref - pred_no_ref)``
for audio and video after the stock guidance (:mod:`ltx_audio_reference.bridge.guidance`). Scale 0 is the stock
sampler and keeps the arm's plain name (``lora``); another scale adds an arm named ``lora_rg<s>`` (``lora_rg0.5``).
Without the option the config's ``training_strategy.validation_reference_guidance`` applies, as in validation.

Each output's F0 and voiced fraction are measured with Praat (:mod:`.sweep_stats`), and each arm gets the slope of
output F0 on reference F0 with a bootstrap 95% CI. The result is ``sweep.json`` and ``sweep.png`` in the output
folder, next to the references and the generated files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from ltx_audio_reference.data.media_tools import missing_ffmpeg, missing_torchcodec, require
from ltx_audio_reference.evaluation.sweep_stats import ArmResult, PitchMeasurement, measure_pitch, plot_sweep
from ltx_audio_reference.layout import AUDIO_SAMPLE_RATE
from ltx_audio_reference.reliability.files import atomic_write, atomic_write_json, require_writable, storage_error
from ltx_audio_reference.strategies.audio_reference import STRATEGY_NAME

logger = logging.getLogger(__name__)

ARMS = ("lora", "base", "overlap")
#: arm -> (fuse the LoRA, reference placement)
ARM_SPECS: dict[str, tuple[bool, str]] = {
    "lora": (True, "negative"),
    "base": (False, "negative"),
    "overlap": (True, "overlap"),
}
REFERENCE_SAMPLE_RATE = AUDIO_SAMPLE_RATE  # the audio VAE's rate (the runner resamples anything else)
#: Width x height x frames x steps above which sampling on the CPU gets a hint to shrink the sweep.
CPU_HINT_VOXEL_STEPS = 256 * 256 * 25 * 8


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
    #: Reference-guidance scales to sample every arm with; None: the config's ``validation_reference_guidance``.
    reference_guidance: Sequence[float] | None = None


@dataclass
class SweepResult:
    """The measured arms and where the JSON and the plot were written."""

    arms: dict[str, ArmResult]
    json_path: Path
    plot_path: Path
    document: dict[str, Any]


def arm_label(arm: str, reference_guidance: float) -> str:
    """The name of ``arm`` sampled with reference guidance ``reference_guidance``: the plain arm name at 0."""
    return arm if reference_guidance == 0 else f"{arm}_rg{reference_guidance:g}"


def guidance_scales(scales: Sequence[float]) -> list[float]:
    """``scales`` as floats, duplicates dropped (order kept).

    Raises:
        ValueError: On no scale, a negative or non-finite one, or two whose arm names coincide.
    """
    values: list[float] = []
    for scale in scales:
        value = float(scale)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"Reference-guidance scales must be finite numbers >= 0 (0 = off), got {scale!r}")
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError("Give at least one reference-guidance scale, e.g. 0")
    labels = [arm_label("arm", v) for v in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Reference-guidance scales {values} give the same arm names {labels}; round them")
    return values


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

    tones = []
    for index, f0 in enumerate(frequencies):
        tone = synthesize_tone(
            f0, Timbre(), sample_rate=REFERENCE_SAMPLE_RATE, duration_s=duration_s, rng=np.random.default_rng(index)
        )
        path = atomic_write(
            folder / f"tone_{index:02d}_{f0:.1f}hz.wav",
            lambda tmp, tone=tone: write_wav(tmp, np.stack([tone, tone]), REFERENCE_SAMPLE_RATE),
        )
        measured = measure_pitch(tone, REFERENCE_SAMPLE_RATE).f0_hz
        tones.append((path, float(measured) if measured is not None else f0))
    return tones


def load_transformer(model_path: Path, lora: Path | None, device: torch.device) -> torch.nn.Module:
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
    from ltx_audio_reference.bridge.config import read_config_file  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415
    from ltx_trainer.config import ModelConfig  # noqa: PLC0415

    data = read_config_file(path)
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


def check_lora_fits(lora: Path, config: Path) -> None:
    """Compare the LoRA's header with the config's model checkpoint's header: widths and blocks (nothing loads).

    Raises:
        ValueError: Naming the first differing tensor, or the blocks the LoRA covers beyond (or short of) the model.
    """
    from ltx_audio_reference.bridge.config import read_config_file  # noqa: PLC0415
    from ltx_audio_reference.reliability.checkpoints import CheckpointError, safetensors_shapes  # noqa: PLC0415
    from ltx_audio_reference.reliability.lora_fit import lora_fit  # noqa: PLC0415

    model = read_config_file(config).get("model") or {}
    model_path = Path(str(model.get("model_path") or "")).expanduser() if isinstance(model, dict) else None
    lora = Path(lora)
    if not lora.is_file():
        raise ValueError(
            f"--lora {lora}: no such file" + (" (a folder: pass a .safetensors file)" if lora.is_dir() else "")
        )
    if model_path is None or not model_path.is_file():
        return  # the config's own check names a missing model
    try:
        fit = lora_fit(safetensors_shapes(lora), safetensors_shapes(model_path), lora_path=lora, model_path=model_path)
    except CheckpointError as e:
        raise ValueError(f"--lora: {e}") from e
    if fit.problems:
        raise ValueError(f"--lora {fit.problems[0]}")
    for note in fit.notes:
        logger.warning("%s", note)


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


def _check_before_loading(settings: SweepSettings) -> None:
    """The arms, the LoRA against the model (headers only) and the output folder, before anything loads or is written.

    Raises:
        ValueError: On an unknown arm, a LoRA arm without a LoRA, or a LoRA that does not fit the model.
        StorageError: If ``--out`` cannot be written.
    """
    unknown = [arm for arm in settings.arms if arm not in ARM_SPECS]
    if unknown or not settings.arms:
        raise ValueError(f"Unknown arms {unknown}; choose from {', '.join(ARMS)}")
    if settings.lora is None and any(ARM_SPECS[arm][0] for arm in settings.arms):
        raise ValueError("The lora and overlap arms need --lora; run only --arms base without one")
    # A LoRA of another width would fail inside ltx-core's fusion after every model loaded; one of more blocks would
    # lose them without a word.
    if settings.lora is not None:
        check_lora_fits(settings.lora, settings.config)
    require_writable(
        Path(settings.out),
        safe="nothing was written (checked before loading any model)",
        next_step="Point --out at a folder this user can write, with free space.",
    )


def _check_geometry(dims: tuple[int, int, int], video_vae: Path, settings: SweepSettings) -> None:
    """Refuse video dimensions the video VAE cannot produce (the runner would refuse them after the tones are written),
    naming ``--video-dims`` (or the config's ``validation.video_dims``) and the nearest valid size."""
    from ltx_audio_reference.data.preprocess import parse_buckets, video_scale_factors  # noqa: PLC0415

    option = "--video-dims" if settings.video_dims is not None else "validation.video_dims"
    _, problems = parse_buckets("x".join(str(d) for d in dims), video_scale_factors(video_vae), option, noun="size")
    if problems:
        raise ValueError("\n".join(problems))


def _forget_earlier_sweep(out: Path) -> None:
    """An earlier sweep in ``out`` is replaced: say so, and remove its reference tones (another tone count or range
    would leave old tones next to the new ones)."""
    earlier = out / "sweep.json"
    tones = sorted((out / "references").glob("tone_*.wav"))
    if earlier.is_file() or tones:
        logger.warning("%s holds an earlier sweep: it is replaced (its arm folders as each arm finishes)", out)
    for tone in tones:
        tone.unlink(missing_ok=True)


def run_sweep(settings: SweepSettings) -> SweepResult:  # noqa: PLR0915 - one linear pipeline, easiest read in order
    """Generate and measure every arm of the pitch sweep.

    Args:
        settings: Paths, arms, tones and overrides.

    Returns:
        The measured arms, and the paths of ``sweep.json`` and ``sweep.png``.

    Raises:
        ValueError: On an unknown arm, a LoRA arm without a LoRA (or with a broken one, or one that does not fit the
            model), a negative reference-guidance scale, a config that does not train ``audio_reference``, or no
            prompt; all before any model loads.
        StorageError: If ``out`` cannot be written (before any model loads), or the disk fills or the folder
            vanishes during the sweep; no half-written file is left (each arm's outputs are staged).
        ModuleNotFoundError: If ltx-trainer is not installed.
        MissingToolError: If FFmpeg or torchcodec is missing (checked before any model loads).
    """
    from ltx_audio_reference import bridge  # noqa: PLC0415

    _check_before_loading(settings)
    # ltx-trainer's validation runner reads the reference tones with torchaudio.load (torchcodec, FFmpeg): without
    # them the sweep would die in a torchcodec traceback after loading every model.
    require(
        "eval (ltx-trainer's validation runner decodes the reference tones)", missing_ffmpeg(), missing_torchcodec()
    )
    requested_scales = None if settings.reference_guidance is None else guidance_scales(settings.reference_guidance)

    bridge.install()
    from ltx_trainer.config import ReferenceConditionConfig, ValidationConfig, ValidationSample  # noqa: PLC0415
    from ltx_trainer.validation_runner import ValidationRunner  # noqa: PLC0415

    model, strategy_config, validation, acceleration = _load_config_sections(settings.config)
    scales = requested_scales or [strategy_config.validation_reference_guidance]
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
    try:
        base_validation = ValidationConfig(**{**{k: v for k, v in validation.items() if k not in legacy}, **overrides})
    except ValidationError as e:
        lines = [f"validation.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ValueError(
            "The sweep's validation settings (the config's validation section with --validation, --video-dims and "
            "--steps) are refused:\n" + "\n".join(lines)
        ) from None
    width, height, frames = base_validation.video_dims
    _check_geometry((width, height, frames), Path(model.video_vae_path or model.model_path), settings)
    duration_s = frames / base_validation.frame_rate
    seed = settings.seed if settings.seed is not None else base_validation.seed
    seeds = [seed + i for i in range(settings.num_seeds)]

    out = Path(settings.out)
    _forget_earlier_sweep(out)
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
    if device.type == "cpu" and width * height * frames * base_validation.inference_steps > CPU_HINT_VOXEL_STEPS:
        logger.warning(
            "Sampling %dx%dx%d for %d steps on the CPU takes minutes per sample on the 22B (and on the demo's tiny "
            "model too): for a quick look pass --video-dims 32,32,25 --steps 4, or --audio-only",
            width,
            height,
            frames,
            base_validation.inference_steps,
        )
    logger.info(
        "Pitch sweep: %d tones x %d seeds, %dx%dx%d at %.3g fps, %d steps, arms %s, reference guidance %s",
        len(tones),
        len(seeds),
        width,
        height,
        frames,
        base_validation.frame_rate,
        base_validation.inference_steps,
        ", ".join(settings.arms),
        ", ".join(f"{s:g}" for s in scales),
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
    for fuse in (False, True):  # one transformer in memory at a time
        arms_here = [arm for arm in settings.arms if ARM_SPECS[arm][0] == fuse]
        if not arms_here:
            continue
        transformer = load_transformer(Path(model.model_path), settings.lora if fuse else None, device)
        for arm in arms_here:
            placement = ARM_SPECS[arm][1]
            arm_config = strategy_config.model_copy(update={"reference_positions": placement})
            for scale in scales:
                label = arm_label(arm, scale)
                logger.info(
                    "Arm %s: generating %d samples (reference at %s positions, reference guidance %g)",
                    label,
                    len(samples),
                    placement,
                    scale,
                )
                with (
                    bridge.reference_placement(arm_config, reference_guidance=scale),
                    _staged(out / label) as staging,
                    bridge.sampling_progress() as progress,
                ):
                    results = runner.run(
                        transformer=transformer, step=0, output_dir=staging, device=device, progress=progress
                    )
                files = [out / label / Path(path).relative_to(staging) for _, path in sorted(results)]
                measured[label] = [_measure_file(path) for path in files]
        del transformer

    from ltx_audio_reference.evaluation.sweep_stats import summarize_arm  # noqa: PLC0415

    arms: dict[str, ArmResult] = {}
    for arm in settings.arms:
        for scale in scales:
            name = arm_label(arm, scale)
            rows = [{**label, "file": file} for label, (_, file) in zip(labels, measured[name], strict=True)]
            arms[name] = summarize_arm(
                name,
                reference_hz,
                [m for m, _ in measured[name]],
                labels=rows,
                bootstrap=settings.bootstrap,
                base_arm=arm,
                reference_guidance_scale=scale,
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
        "reference_guidance": scales,
        "reference_guidance_formula": "pred = G(pos, neg, ptb, mod) + s * (pos - pos_without_reference), audio and "
        "video, after the stock guider's guidance_rescale; s = 0 is the stock sampler",
        "arms": {arm: result.to_dict() for arm, result in arms.items()},
    }
    json_path = atomic_write_json(out / "sweep.json", document)
    title = f"Pitch sweep: {settings.lora.name if settings.lora else 'base only'}"
    plot_path = plot_sweep(list(arms.values()), out / "sweep.png", title=title)
    return SweepResult(arms=arms, json_path=json_path, plot_path=plot_path, document=document)


@contextlib.contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """Yield a hidden staging folder for one arm's outputs; it replaces ``folder`` only once the arm is complete.

    The stock validation runner writes its audio and video files in place, so a full disk could leave half a file.
    On any failure the staging folder is removed and a write failure is raised as a :class:`StorageError`.
    """
    staging = folder.with_name(f".incoming-{folder.name}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
    except BaseException as error:
        diagnosed = storage_error(error, staging / "output")
        shutil.rmtree(staging, ignore_errors=True)
        if diagnosed is not None and diagnosed is not error:
            raise diagnosed from error
        raise


def _measure_file(path: Path) -> tuple[PitchMeasurement, str]:
    from ltx_audio_reference.data.audio_io import read_audio  # noqa: PLC0415

    waveform, sample_rate = read_audio(path)
    return measure_pitch(waveform, sample_rate), str(path)
