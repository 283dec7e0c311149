"""``ltx-trainer check``: validate a raw config and its data without loading a model.

With ltx-trainer importable the whole config goes through the stock ``LtxTrainerConfig`` (after the bridge is
installed), the plugins' ``validate_config`` hooks and the run-settings checks training start runs
(:mod:`~ltx_audio_reference.reliability.preflight`). Without it, the strategy section goes through the registered
strategy's own config class, the run settings are read from the raw YAML, and the data is still checked; the other
stock sections are then left unvalidated, and a note says so. Nothing is written (writability is probed with a
hidden folder that is removed at once).
"""

from __future__ import annotations

import difflib
import functools
import logging
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from ltx_audio_reference import bridge
from ltx_audio_reference.data.check import Problem, check_dataset, check_strategy_data
from ltx_audio_reference.registry import StrategyRegistry
from ltx_audio_reference.reliability import preflight

logger = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What ``check`` found."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""
    config: Any = None  # the parsed LtxTrainerConfig, when ltx-trainer is importable and the config parsed


def _models_in(annotation: Any) -> list[type[BaseModel]]:  # noqa: ANN401 - any annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def field_names(model: type[BaseModel]) -> set[str]:
    """Every field name of ``model`` and of the models its fields hold (the keys a config may write)."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, info in current.model_fields.items():
            names.add(name)
            todo.extend(_models_in(info.annotation))
    return names


def validation_lines(
    error: ValidationError, prefix: str = "", config_dir: Path | None = None, known: Collection[str] = ()
) -> list[str]:
    """One ``config <location>: <message>; found <value>`` line per pydantic error.

    Args:
        error: The validation error.
        prefix: The section the validated model sits under (e.g. ``training_strategy``), prepended to locations.
        config_dir: The config file's folder: a relative path that does not exist is said to resolve against the
            current folder, and where it exists next to the config, that path is named.
        known: The keys the config may write (:func:`field_names`): an unknown key gets the closest one, and a
            union's tag in a location (``training_strategy.audio_reference.x``) is left out, as the YAML has none.
    """
    lines = []
    for err in error.errors():
        parts = [str(part) for part in ((prefix,) if prefix else ()) + tuple(err["loc"])]
        if known and len(parts) >= 3 and parts[0] == "training_strategy" and parts[1] not in known:
            del parts[1]  # the discriminated union's tag (the strategy name), not a key of the YAML
        loc = ".".join(parts)
        value = err.get("input")
        if err["type"] == "unknown_training_strategy" and isinstance(value, dict):
            value = value.get("name")
        shown = "" if isinstance(value, dict) else f"; found {value!r}"
        if isinstance(value, str) and "does not exist" in err["msg"]:
            shown += preflight.relative_path_note(value, config_dir)
        if err["type"] == "extra_forbidden" and parts:
            close = difflib.get_close_matches(parts[-1], sorted(known), n=1, cutoff=0.75)
            shown += f"; did you mean {close[0]}?" if close else ""
        lines.append(f"config {loc or '(root)'}: {err['msg']}{shown}")
    return lines


def _strategy_section(data: dict[str, Any]) -> dict[str, Any]:
    section = data.get("training_strategy")
    return section if isinstance(section, dict) else {}


def _with_trainer(data: dict[str, Any], pm: pluggy.PluginManager, report: CheckReport, config_dir: Path | None) -> Any:  # noqa: ANN401
    """Validate through the stock config model and the run-settings checks; returns the strategy config or None."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    bridge.install(pm)
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415

    try:
        parsed = LtxTrainerConfig(**data)
    except ValidationError as e:
        # The stock validator also reports missing data folders; the data check names them more precisely.
        report.problems.extend(
            line
            for line in validation_lines(e, config_dir=config_dir, known=field_names(LtxTrainerConfig))
            if "does not exist under preprocessed_data_root" not in line
        )
    else:
        try:
            pm.hook.validate_config(config=parsed)
        except ValueError as e:
            report.problems.append(f"config: {e}")
        _add(report, preflight.check_run(preflight.RunSettings.from_config(parsed, config_dir)))
        report.config = parsed
        return parsed.training_strategy
    annotation = LtxTrainerConfig.model_fields["training_strategy"].rebuild_annotation()
    try:
        return TypeAdapter(annotation).validate_python(_strategy_section(data))
    except ValidationError:
        return None  # already reported above


def _add(report: CheckReport, result: preflight.Preflight) -> None:
    report.problems.extend(result.problems)
    report.notes.extend(result.notes)


def _without_trainer(
    data: dict[str, Any], registry: StrategyRegistry, report: CheckReport, config_dir: Path | None
) -> Any:  # noqa: ANN401
    name = _strategy_section(data).get("name", "text_to_video")
    report.notes.append(
        "ltx-trainer is not importable here: only the strategy section, the run settings and the data are checked "
        "(install ltx-trainer for a full check of every section)"
    )
    _add(report, preflight.check_run(preflight.RunSettings.from_dict(data, config_dir)))
    if name not in registry:
        if name not in registry.available():
            report.problems.append(
                f"config training_strategy.name: expected one of {', '.join(registry.available())}; found {name!r}"
            )
        else:
            report.notes.append(f"stock strategy {name!r} cannot be validated without ltx-trainer")
        return None
    try:
        return registry.get(name).config_cls.model_validate(_strategy_section(data))
    except ValidationError as e:
        config_cls = registry.get(name).config_cls
        report.problems.extend(validation_lines(e, prefix="training_strategy", known=field_names(config_cls)))
        return None


def check_config(
    data: dict[str, Any],
    *,
    registry: StrategyRegistry,
    pm: pluggy.PluginManager,
    max_files: int | None = None,
    config_dir: Path | None = None,
) -> CheckReport:
    """Check a raw config dict and the preprocessed data it points to.

    Args:
        data: The YAML config as a dict.
        registry: Registered strategies.
        pm: The plugin manager (for ``validate_config`` hooks).
        max_files: Read at most this many samples' contents.
        config_dir: The config file's folder, to say where a relative path that does not exist would be found.

    Returns:
        The problems (one line each), notes and a one-line summary.
    """
    report = CheckReport()
    if bridge.ltx_trainer_available():
        strategy_config = _with_trainer(data, pm, report, config_dir)
    else:
        strategy_config = _without_trainer(data, registry, report, config_dir)
    report.notes.extend(memory_notes(data, report.config, pm, strategy_config))

    data_section = data.get("data")
    root = data_section.get("preprocessed_data_root") if isinstance(data_section, dict) else None
    if root is None:
        report.problems.append("config data.preprocessed_data_root: required; found nothing")
        return report
    if strategy_config is None:
        report.notes.append("data folders unknown (the strategy section is invalid): only the data root is checked")
        problems: list[Problem] = check_dataset(Path(root).expanduser(), {}, max_files=max_files)
    else:
        optimization = data.get("optimization") or {}
        batch_size = optimization.get("batch_size", 2) if isinstance(optimization, dict) else 2
        model = data.get("model") or {}
        dataset = check_strategy_data(
            Path(root),
            strategy_config,
            batch_size=batch_size if isinstance(batch_size, int) else 1,
            max_files=max_files,
            model_path=model.get("model_path") if isinstance(model, dict) else None,
        )
        problems = dataset.problems
        report.notes.extend(dataset.notes)
        folders = ", ".join(strategy_config.get_data_sources())
        report.summary = f"strategy {strategy_config.name}, {dataset.samples} samples, data folders {folders}"
    report.problems.extend(str(p) for p in problems)
    return report


def _config_view(data: dict[str, Any], strategy: Any) -> Any:  # noqa: ANN401
    """The sections the memory estimate reads, from the raw YAML (without ltx-trainer to parse it), with the
    strategy's own section as its registered config class parsed it (None where it did not parse)."""
    from types import SimpleNamespace  # noqa: PLC0415

    from ltx_audio_reference.blockswap.config import BlockSwapConfig  # noqa: PLC0415

    def section(name: str) -> dict[str, Any]:
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    swap = section("block_swap")
    return SimpleNamespace(
        model=SimpleNamespace(**{"training_mode": "lora", **section("model")}),
        acceleration=SimpleNamespace(**{"quantization": None, **section("acceleration")}),
        block_swap=BlockSwapConfig(**swap) if swap else None,
        lora=SimpleNamespace(**{"target_modules": [], **section("lora")}) if "lora" in data else None,
        training_strategy=strategy,
    )


def memory_notes(
    data: dict[str, Any],
    config: Any,  # noqa: ANN401
    pm: pluggy.PluginManager,
    strategy: Any = None,  # noqa: ANN401
) -> list[str]:
    """The host- and GPU-memory estimates of a config (lines for ``check``), read from the checkpoint's header.

    Args:
        data: The raw config.
        config: The parsed ``LtxTrainerConfig``, or None (the raw sections are read then).
        pm: The plugin manager (for the quantization backends and the LoRA targets).
        strategy: The parsed strategy section, for the raw view (its ``lora_preset`` sets the LoRA targets).
    """
    model = data.get("model")
    path = model.get("model_path") if isinstance(model, dict) else None
    if not path or not Path(str(path)).expanduser().is_file() or preflight.model_problem(path) is not None:
        return []  # a model file that is not a checkpoint is a problem of its own (preflight.model_problem)
    import torch  # noqa: PLC0415

    from ltx_audio_reference.plugins import collect  # noqa: PLC0415
    from ltx_audio_reference.quantization import memory  # noqa: PLC0415
    from ltx_audio_reference.registry import QuantizationRegistry, lora_target_modules  # noqa: PLC0415

    try:
        view = config if config is not None else _config_view(data, strategy)
        name = view.acceleration.quantization
        backend = collect(QuantizationRegistry, pm).get(name) if name else None
        checkpoint = Path(str(path)).expanduser()
        targets = functools.partial(lora_target_modules, pm.hook, view)
        estimate = memory.estimate_config(
            view, checkpoint, backend, cuda=torch.cuda.is_available(), lora_targets=targets
        )
    except Exception as e:  # the estimate is advice: a checkpoint it cannot size must not fail the check
        logger.debug("Memory estimate failed", exc_info=True)
        return [f"memory estimate unavailable: {type(e).__name__}: {e}"]
    return estimate.lines()
