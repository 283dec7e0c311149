"""Checks of a run's settings that need no model: step and batch counts, the model and text-encoder files (the model's
from its safetensors header alone), validation's reference audio, writable output folders, an output folder holding
another run (:mod:`.identity`) and the checkpoint to resume from (its LoRA's header against
the model's, :mod:`.lora_fit`).

Training start (the bridge, before any model loads) and ``ltx-trainer check`` run the same checks, so both say the
same thing. Each problem is one line naming the config key, what it holds and how to fix it; notes say what will
happen when it is not what the user may expect. Nothing is left on disk: writability is probed with a hidden folder
that is removed at once.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx_audio_reference.reliability import checkpoints, identity, runlock
from ltx_audio_reference.reliability.files import is_temp_name
from ltx_audio_reference.reliability.lora_fit import lora_fit

logger = logging.getLogger(__name__)

#: The folder under ``output_dir`` where the stock runner saves its checkpoints.
CHECKPOINTS_DIR_NAME = "checkpoints"
_PROBE_PREFIX = ".ltx-write-probe-"

_COUNT_FIXES = {
    "steps": "Set it to the number of optimizer steps to train",
    "batch_size": "Set it to the samples per step and process (1 or more)",
    "gradient_accumulation_steps": "Set it to 1 (no accumulation) or more",
}


@dataclass(frozen=True)
class RunSettings:
    """The values these checks read, from a parsed ``LtxTrainerConfig`` or a raw YAML dict.

    None means "not given": that check is skipped (the stock default applies), except ``text_encoder_path``, which
    training always needs.
    """

    steps: Any = None
    batch_size: Any = None
    gradient_accumulation_steps: Any = None
    learning_rate: Any = None
    output_dir: str | Path | None = None
    text_encoder_path: str | Path | None = None
    load_checkpoint: str | Path | None = None
    no_resume: bool = False
    #: The whole config, to say what differs from the run already in ``output_dir`` (None: not compared).
    config: Mapping[str, Any] | None = None
    #: ``config`` is raw YAML without the defaults (only the keys it writes are compared).
    config_is_partial: bool = False
    overwrite_output_dir: bool = False
    model_path: str | Path | None = None
    training_mode: str = "lora"
    lora_rank: int | None = None
    #: The config file's folder, to say where a relative path would have been found.
    config_dir: Path | None = None
    #: The audio files validation reads, as ``(config key, path)``; empty where validation does not run.
    validation_audio: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, config: Any, config_dir: Path | None = None) -> RunSettings:  # noqa: ANN401 - LtxTrainerConfig
        """Read a parsed ``LtxTrainerConfig``."""
        lora = getattr(config, "lora", None)
        return cls(
            steps=config.optimization.steps,
            batch_size=config.optimization.batch_size,
            gradient_accumulation_steps=config.optimization.gradient_accumulation_steps,
            learning_rate=config.optimization.learning_rate,
            output_dir=config.output_dir,
            text_encoder_path=config.model.text_encoder_path,
            load_checkpoint=config.model.load_checkpoint,
            no_resume=bool(config.checkpoints.no_resume),
            config=config.model_dump(mode="json"),
            overwrite_output_dir=bool(getattr(config, identity.OVERWRITE_KEY, False)),
            model_path=config.model.model_path,
            training_mode=str(config.model.training_mode),
            lora_rank=lora.rank if lora is not None else None,
            config_dir=config_dir,
            validation_audio=validation_audio(config.validation.model_dump(mode="json")),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config_dir: Path | None = None) -> RunSettings:
        """Read a raw YAML config (where ltx-trainer is not importable to parse it)."""

        def section(name: str) -> Mapping[str, Any]:
            value = data.get(name)
            return value if isinstance(value, Mapping) else {}

        optimization, model = section("optimization"), section("model")
        rank = section("lora").get("rank")
        return cls(
            steps=optimization.get("steps"),
            batch_size=optimization.get("batch_size"),
            gradient_accumulation_steps=optimization.get("gradient_accumulation_steps"),
            learning_rate=optimization.get("learning_rate"),
            output_dir=data.get("output_dir"),
            text_encoder_path=model.get("text_encoder_path"),
            load_checkpoint=model.get("load_checkpoint"),
            no_resume=bool(section("checkpoints").get("no_resume", False)),
            config=data,
            config_is_partial=True,
            overwrite_output_dir=data.get(identity.OVERWRITE_KEY) is True,
            model_path=model.get("model_path"),
            training_mode=str(model.get("training_mode", "lora")),
            lora_rank=rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
            config_dir=config_dir,
            validation_audio=validation_audio(section("validation")),
        )


@dataclass
class Preflight:
    """Problems (training cannot start, or would fail later) and notes (it starts; worth knowing)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def relative_path_note(path: str | Path, config_dir: Path | None = None) -> str:
    """For a relative path that was not found: where it was looked for, and where it would have been found.

    Relative paths in a config resolve against the current folder (as the stock trainer opens them), not against the
    config file's folder, which reads as a missing file when ``ltx-trainer`` runs from elsewhere.

    Returns:
        ``" (a relative path: ...)"``, or ``""`` for an absolute path.
    """
    p = Path(str(path)).expanduser()
    if p.is_absolute():
        return ""
    note = f" ({str(path)!r} is a relative path, resolved against the current folder {Path.cwd()}, not the config's"
    if config_dir is not None:
        beside = (Path(config_dir) / p).resolve()
        if beside.exists() and beside != p.resolve():
            return f"{note}; {beside} exists: write that absolute path, or run from {Path(config_dir).resolve()})"
        return f"{note} folder {Path(config_dir).resolve()})"
    return f"{note} file's folder)"


def _number(value: Any) -> float:  # noqa: ANN401 - a raw YAML value
    """A YAML number as pydantic reads it (PyYAML leaves ``1e-4`` a string); NaN for anything else."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def count_problems(settings: RunSettings) -> list[str]:
    """``optimization.steps``, ``batch_size`` and ``gradient_accumulation_steps`` must be integers of at least 1, and
    ``learning_rate`` a finite number above 0 (torch refuses a negative one only once the model loaded, and 0 trains
    nothing)."""
    problems = []
    for key, fix in _COUNT_FIXES.items():
        value = getattr(settings, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"config optimization.{key}: expected an integer >= 1; found {value!r}. {fix}")
    rate = settings.learning_rate
    if rate is not None and not 0 < _number(rate) < math.inf:
        problems.append(
            f"config optimization.learning_rate: expected a number > 0; found {rate!r}. Set it to the optimizer's "
            "step size, such as 1e-4 for a LoRA (0 trains nothing; torch refuses a negative one after the model loads)"
        )
    return problems


def text_encoder_problem(path: str | Path | None, config_dir: Path | None = None) -> str | None:
    """Why ``model.text_encoder_path`` cannot load, or None.

    The trainer builds its text-embedding connectors from the Gemma config even when every prompt is precomputed and
    validation is off, so the path is always needed: a Gemma folder with ``config.json`` and ``tokenizer.json``, or
    the packed text-encoder ``.safetensors`` of a split pack.
    """
    key = "config model.text_encoder_path"
    fix = (
        "Set it to the Gemma-3 folder (with config.json and tokenizer.json), or to the packed text-encoder "
        ".safetensors of a split pack; training reads it even with precomputed prompts and validation off"
    )
    p, problem = _given_path(key, path, config_dir, "folder or file", fix)
    if p is None:
        return problem
    if p.is_dir():
        missing = [name for name in ("config.json", "tokenizer.json") if next(p.rglob(name), None) is None]
        if missing:
            return f"{key}: expected a Gemma folder; found {p} without {' and '.join(missing)}. {fix}"
        return None
    if p.suffix != ".safetensors":
        return f"{key}: expected a Gemma folder or a .safetensors file; found the file {p}. {fix}"
    return None


def _given_path(
    key: str, path: str | Path | None, config_dir: Path | None, expected: str, fix: str
) -> tuple[Path | None, str | None]:
    """``(the path, None)`` when ``path`` is given and exists, else ``(None, the problem line)``."""
    if path is None or str(path).strip() == "":
        return None, f"{key}: required; found nothing. {fix}"
    p = Path(path).expanduser()
    if not p.exists():
        what = "no such file or folder" if "folder" in expected else "no such file"
        where = relative_path_note(path, config_dir)
        return None, f"{key}: expected an existing {expected}; found {str(path)!r} ({what}){where}. {fix}"
    return p, None


def model_problem(path: str | Path | None, config_dir: Path | None = None) -> str | None:
    """Why ``model.model_path`` is not an LTX-2 transformer checkpoint, from its safetensors header alone, or None.

    The stock runner opens the file only after the text encoder and connectors loaded, and fails there with a
    safetensors or ltx-core traceback; a broken file (a copy cut short, a ``.pt``, a folder) or another model's
    weights (Gemma's, a LoRA) is named here instead. The file must be a complete safetensors file (its header parses
    and describes exactly the file's size) whose ``config`` metadata has a ``transformer`` section: an LTX-2
    checkpoint, or the transformer file of a split LTX-2.5 pack. Only the header is read (the real file is 40+ GB).

    Args:
        path: The config's ``model.model_path``; None is not checked (the stock config requires it).
        config_dir: The config file's folder, for a relative path that does not exist.
    """
    if path is None:
        return None
    key = "config model.model_path"
    fix = (
        "Set it to the LTX-2 checkpoint .safetensors (the file of the whole model), or to the transformer "
        ".safetensors of a split LTX-2.5 pack (in its diffusion_models/ folder)"
    )
    p, problem = _given_path(key, path, config_dir, ".safetensors file", fix)
    if p is None:
        return problem
    if p.is_dir():
        inside = sorted(q.name for q in p.glob("*.safetensors"))[:3]
        holds = f" (it holds {', '.join(inside)})" if inside else ""
        return f"{key}: expected a .safetensors file; found the folder {p}{holds}. {fix}"
    why = _transformer_file_problem(p)
    return f"{key}: {p} {why}. {fix}" if why else None


def _transformer_file_problem(path: Path) -> str | None:
    """What an existing file is instead of an LTX-2 transformer checkpoint (from its header), or None."""
    try:
        config = checkpoints.header_config(checkpoints.read_safetensors_header(path))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        return (
            f"is not a complete .safetensors file ({e}): a copy or download cut short, or another format such as a "
            ".pt file. Re-download or re-copy it and compare its size with the original's"
        )
    if config is None:
        return (
            "is a .safetensors file without LTX-2's 'config' metadata, so not an LTX-2 checkpoint (a LoRA, or another "
            "model's weights such as Gemma's?)"
        )
    if "transformer" not in config:
        return (
            f"holds no transformer (its config has {', '.join(sorted(config)) or 'no sections'}): a component file "
            "of a pack, not its transformer"
        )
    return None


#: Validation condition fields that hold an audio file the stock validation runner reads (``torchaudio.load``).
_AUDIO_FIELDS = ("audio",)


def validation_audio(validation: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The audio files validation will read, as ``(config key, path)``, from the ``validation`` section (as a dict).

    Empty when validation does not run (``validation.interval`` unset or 0).
    """
    if not isinstance(validation, Mapping) or not validation.get("interval"):
        return ()
    samples = validation.get("samples")
    found = []
    for i, sample in enumerate(samples if isinstance(samples, list) else []):
        conditions = sample.get("conditions") if isinstance(sample, Mapping) else None
        for j, condition in enumerate(conditions if isinstance(conditions, list) else []):
            for name in _AUDIO_FIELDS:
                value = condition.get(name) if isinstance(condition, Mapping) else None
                if isinstance(value, str | Path) and str(value).strip():
                    found.append((f"validation.samples[{i}].conditions[{j}].{name}", str(value)))
    return tuple(found)


def validation_audio_check(files: Sequence[tuple[str, str]], config_dir: Path | None = None) -> Preflight:
    """Whether validation can read its reference audio: each file exists and decodes, FFmpeg and torchcodec are there.

    The stock validation runner reads each file with ``torchaudio.load`` (torchcodec, FFmpeg) only when validation
    first runs, after the model loaded (step 0 unless ``skip_initial_validation``). Each file is decoded here with
    :func:`~ltx_audio_reference.data.audio_io.read_audio`; a file only PyAV could read, where PyAV is not installed,
    is left to torchaudio (a note says so).

    Args:
        files: ``(config key, path)`` pairs (:func:`validation_audio`).
        config_dir: The config file's folder, for relative paths that do not exist.
    """
    from ltx_audio_reference.data import audio_io, media_tools  # noqa: PLC0415

    result = Preflight()
    off = "or set validation.interval: null to train without validation"
    for key, value in files:
        path = Path(value).expanduser()
        fix = f"Point it at the reference's audio file (WAV, FLAC, MP3, ...), {off}"
        if not path.exists():
            where = relative_path_note(value, config_dir)
            result.problems.append(
                f"config {key}: expected an audio file; found {value!r} (no such file){where}. {fix}"
            )
        elif not path.is_file():
            result.problems.append(f"config {key}: expected an audio file; found the folder {path}. {fix}")
        elif audio_io.needs_pyav(path) and media_tools.missing_pyav() is not None:
            result.notes.append(
                f"{key}: {path} is not decoded before training (PyAV is not installed); torchaudio reads it when "
                "validation runs"
            )
        else:
            try:
                audio_io.read_audio(path)
            except audio_io.AudioReadError as e:
                result.problems.append(f"config {key}: {e}. {fix}")
    if files:
        purpose = (
            f"validation reads {len(files)} reference audio file(s) with torchaudio, through torchcodec and FFmpeg"
        )
        for missing in (media_tools.missing_ffmpeg(), media_tools.missing_torchcodec()):
            if missing:
                result.problems.append(f"config validation.samples: {purpose}, and {missing}; {off}")
    return result


def device_problem(device: str, option: str = "--device") -> str | None:
    """A line saying why ``device`` cannot run here (not a torch device, or an accelerator this machine lacks), or None.

    Commands check it before they load or write anything, instead of failing in torch once the models are loaded.
    """
    import torch  # noqa: PLC0415

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"{option} {device}: not a device torch knows; use cpu, cuda or cuda:N"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"{option} {device}: no CUDA GPU is available here (torch {torch.__version__}); use --device cpu"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            return f"{option} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
    elif parsed.type != "cpu":
        backend = getattr(torch, parsed.type, None)
        is_available = getattr(backend, "is_available", None)
        if not callable(is_available) or not is_available():
            return f"{option} {device}: no {parsed.type} device is available here; use --device cpu"
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_problem(folder: Path) -> str | None:
    """Why nothing can be created in ``folder`` (an existing folder), or None.

    Probed by creating and removing a hidden folder: permission bits alone miss read-only mounts, immutable folders
    and pseudo filesystems such as ``/proc`` (where even root cannot create anything).
    """
    try:
        probe = tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=folder)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    Path(probe).rmdir()
    return None


def output_problem(output_dir: str | Path | None) -> str | None:
    """Why ``output_dir`` (or its ``checkpoints/``) is not a folder this process can create files in, or None.

    The stock runner writes ``training_config.yaml`` into ``output_dir`` before step 1 and every checkpoint into
    ``output_dir/checkpoints``; a folder it cannot write fails there, after the model loaded, or at the first save.
    """
    if output_dir is None:
        return None
    out = Path(output_dir).expanduser()
    key = "config output_dir"
    fix = "Point output_dir at a folder this user can write (it is created if missing)"
    elsewhere = "or point output_dir at another folder"
    ckpt = out / CHECKPOINTS_DIR_NAME
    if out.exists() and not out.is_dir():
        problem = f"{key}: expected a folder; found the file {out}. {fix}"
    elif ckpt.exists() and not ckpt.is_dir():
        problem = f"{key}: {ckpt} is a file, where the trainer saves its checkpoints folder. Move it away, {elsewhere}"
    elif ckpt.is_dir() and (why := write_problem(ckpt)) is not None:
        problem = (
            f"{key}: {ckpt} is not writable ({why}): every checkpoint save would fail, the first one after "
            f"checkpoints.interval steps of training. Make it writable (chmod u+w, chattr -i, a read-write mount), "
            f"{elsewhere}"
        )
    elif not (base := _nearest_existing(out)).is_dir():
        problem = f"{key}: {out} cannot be created: {base} is a file. {fix}"
    elif (why := write_problem(base)) is not None:
        where = f"{out} is not writable" if base == out else f"{out} cannot be created in {base}"
        problem = f"{key}: {where} ({why}). {fix}"
    else:
        problem = None
    return problem


def _step(weights: Path) -> int | None:
    match = checkpoints.WEIGHTS_NAME.match(weights.name)
    return int(match["step"]) if match else None


def _finished(weights: Path, steps: Any, no_resume: bool) -> str | None:  # noqa: ANN401
    """A problem when resuming from ``weights`` leaves no step to train."""
    step = _step(weights)
    state = checkpoints.state_path_for(weights)
    if no_resume or step is None or state is None or not state.is_file() or not isinstance(steps, int):
        return None
    if step < steps:
        return None
    return (
        f"config model.load_checkpoint: the run is finished: {weights.name} with its training state is step {step}, "
        f"and optimization.steps is {steps}. Raise optimization.steps to train on from step {step}, or set "
        "checkpoints.no_resume: true to start a new schedule from these weights"
    )


def lora_fit_problems(weights: Path, settings: RunSettings) -> Preflight:
    """The LoRA ``weights`` a run loads, against the model's header and ``lora.rank`` (nothing is loaded)."""
    result = Preflight()
    model = Path(settings.model_path).expanduser() if settings.model_path else None
    if settings.training_mode != "lora" or model is None or not model.is_file():
        return result
    try:
        fit = lora_fit(
            checkpoints.safetensors_shapes(weights),
            checkpoints.safetensors_shapes(model),
            lora_path=weights,
            model_path=model,
            rank=settings.lora_rank,
        )
    except (checkpoints.CheckpointError, OSError) as e:
        logger.debug("LoRA header check skipped: %s", e)
        return result
    fix = "Point model.load_checkpoint at a LoRA of this model, rank and preset, or remove it to start a new run"
    result.problems.extend(f"config model.load_checkpoint: {problem}. {fix}" for problem in fit.problems)
    result.notes.extend(f"model.load_checkpoint: {note}; the other blocks keep new LoRA weights" for note in fit.notes)
    return result


def resume_check(
    load_checkpoint: str | Path | None,
    steps: Any,  # noqa: ANN401
    no_resume: bool,
    settings: RunSettings | None = None,
) -> Preflight:
    """What ``model.load_checkpoint`` will do: refuse what cannot load, note what starts from step 0.

    Args:
        load_checkpoint: The config's ``model.load_checkpoint``.
        steps: ``optimization.steps``.
        no_resume: ``checkpoints.no_resume`` (load the weights, restart the schedule).
        settings: The run's settings; with ``model_path`` and ``lora_rank``, the LoRA's header is compared with the
            model's (:func:`lora_fit_problems`).
    """
    result = Preflight()
    if load_checkpoint is None or str(load_checkpoint).strip() == "":
        return result
    key = "config model.load_checkpoint"
    path = Path(load_checkpoint).expanduser()
    if not path.exists():
        where = relative_path_note(load_checkpoint, settings.config_dir if settings else None)
        result.problems.append(
            f"{key}: {path} does not exist{where}. Point it at a checkpoints folder (training resumes from its newest "
            "complete checkpoint) or at a .safetensors LoRA file, or remove model.load_checkpoint to start a new run"
        )
        return result
    if path.is_file():
        if is_temp_name(path.name):
            result.problems.append(
                f"{key}: {path} is the temporary file of an interrupted save, not a checkpoint. Set "
                f"model.load_checkpoint: {path.parent} to resume from the newest complete checkpoint there"
            )
        elif path.suffix != ".safetensors":
            result.problems.append(
                f"{key}: expected a .safetensors weights file or a checkpoints folder; found {path}. Set "
                f"model.load_checkpoint: {path.parent} to resume from the newest complete checkpoint there"
            )
        elif (problem := checkpoints.safetensors_problem(path)) is not None:
            result.problems.append(
                f"{key}: {path} is an incomplete checkpoint ({problem}). Set model.load_checkpoint: {path.parent} "
                "to resume from the newest complete checkpoint there"
            )
        elif (problem := _finished(path, steps, no_resume)) is not None:
            result.problems.append(problem)
        elif settings is not None:
            fit = lora_fit_problems(path, settings)
            result.problems.extend(fit.problems)
            result.notes.extend(fit.notes)
        return result
    choice = checkpoints.select_checkpoint(path)
    if choice is None:
        result.notes.append(
            f"model.load_checkpoint: nothing to resume under {path} ({checkpoints.no_checkpoint_reason(path)}): "
            "training starts at step 0 with new LoRA weights"
        )
        return result
    if (problem := _finished(choice.weights, steps, no_resume)) is not None:
        result.problems.append(problem)
        return result
    if settings is not None:
        fit = lora_fit_problems(choice.weights, settings)
        result.problems.extend(fit.problems)
        result.notes.extend(fit.notes)
    if choice.note:
        result.notes.append(
            f"model.load_checkpoint: {path}: {choice.note}; {choice.weights.name} is loaded without a training state, "
            "so the schedule restarts at step 0"
        )
    return result


def run_folder_problem(settings: RunSettings) -> str | None:
    """Why starting would overwrite another run's checkpoints in ``output_dir`` (:mod:`.identity`), or None."""
    return identity.folder_problem(
        settings.output_dir,
        settings.config,
        load_checkpoint=settings.load_checkpoint,
        no_resume=settings.no_resume,
        overwrite=settings.overwrite_output_dir,
        partial=settings.config_is_partial,
    )


def lock_problem(output_dir: str | Path | None) -> str | None:
    """Why ``output_dir`` cannot take a run now: another run holds its lock (:mod:`.runlock`), or None."""
    if output_dir is None:
        return None
    out = Path(output_dir).expanduser()
    locked, record = runlock.holder(out)
    return runlock.held_message(out, record) if locked else None


def check_run(settings: RunSettings, *, probe_lock: bool = True) -> Preflight:
    """Every check of this module on one run's settings.

    Args:
        settings: The run's settings.
        probe_lock: Whether to look for a run holding ``output_dir`` (not on a run's other processes, whose main
            process holds it).
    """
    result = Preflight(problems=count_problems(settings))
    output = output_problem(settings.output_dir)
    # Where output_dir cannot be written, what it holds is moot; a run in progress there explains its checkpoints.
    folder = None
    if output is None:
        folder = (lock_problem(settings.output_dir) if probe_lock else None) or run_folder_problem(settings)
    model = model_problem(settings.model_path, settings.config_dir)
    text_encoder = text_encoder_problem(settings.text_encoder_path, settings.config_dir)
    for problem in (model, text_encoder, output, folder):
        if problem is not None:
            result.problems.append(problem)
    for check in (
        resume_check(settings.load_checkpoint, settings.steps, settings.no_resume, settings),
        validation_audio_check(settings.validation_audio, settings.config_dir),
    ):
        result.problems.extend(check.problems)
        result.notes.extend(check.notes)
    return result
