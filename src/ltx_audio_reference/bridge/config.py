"""Config seam: the closed strategy union of ``LtxTrainerConfig`` opened to registered strategies, plugin config
fields, the bridge's own ``overwrite_output_dir``, and the YAML reader that every command shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pluggy

from ltx_audio_reference.errors import ConfigurationError
from ltx_audio_reference.plugins import collect
from ltx_audio_reference.registry import ConfigFieldRegistry, QuantizationRegistry, StrategyRegistry
from ltx_audio_reference.reliability.identity import OVERWRITE_KEY as OVERWRITE_FIELD
from ltx_audio_reference.reliability.parsing import TextFileError, read_yaml


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML training config into a dict (no validation).

    Raises:
        ConfigurationError: If the file is missing, is not YAML, writes a key twice in one mapping (naming both
            lines), or is not a mapping of sections.
    """
    import yaml  # noqa: PLC0415

    path = Path(path)
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder: pass the training config's .yaml file")
    if not path.is_file():
        raise ConfigurationError(f"Configuration file {path} does not exist")
    try:
        data = read_yaml(path)
    except TextFileError as e:
        raise ConfigurationError(str(e)) from e
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} must hold a mapping of config sections")
    return data


def strategy_name(value: object) -> str:
    """The strategy a raw or parsed ``training_strategy`` section names; the stock fallback is ``text_to_video``."""
    if isinstance(value, dict):
        return value.get("name", "text_to_video")
    return getattr(value, "name", "text_to_video")


def _set_fields(config_module: Any, stock_fields: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> None:  # noqa: ANN401
    owners = {"root": config_module.LtxTrainerConfig, "acceleration": config_module.AccelerationConfig}
    for owner, cls in owners.items():
        fields = dict(stock_fields[owner])
        fields.update(extra.get(owner, {}))
        cls.model_fields.clear()
        cls.model_fields.update(fields)


def _rebuild(config_module: Any) -> None:  # noqa: ANN401
    # Nested models are embedded in the parent's schema, so the parent is rebuilt after its children.
    config_module.AccelerationConfig.model_rebuild(force=True)
    config_module.LtxTrainerConfig.model_rebuild(force=True)


def quantization_field(stock: Any, backends: QuantizationRegistry) -> Any:  # noqa: ANN401 - pydantic FieldInfo
    """``acceleration.quantization`` widened from ltx-trainer's closed ``Literal`` to every registered backend."""
    from pydantic import Field  # noqa: PLC0415
    from pydantic.fields import FieldInfo  # noqa: PLC0415

    names = tuple(backends.names())
    listing = "; ".join(f"{b.name}: {b.summary}" for b in backends)
    stock_field = stock.config_fields["acceleration"]["quantization"]
    return FieldInfo.from_annotated_attribute(
        Literal[names] | None,  # type: ignore[valid-type]
        Field(default=stock_field.default, description=f"Weight quantization of the transformer blocks ({listing})"),
    )


def install_config(
    stock: Any,  # noqa: ANN401
    strategies: StrategyRegistry,
    pm: pluggy.PluginManager,
    backends: QuantizationRegistry,
) -> None:
    """Rebuild ``LtxTrainerConfig.training_strategy`` over every registered strategy, add plugin config fields, and
    open ``acceleration.quantization`` to the registered backends.

    Args:
        stock: The saved stock objects (:class:`~ltx_audio_reference.bridge.state.Stock`).
        strategies: The registered strategies.
        pm: The plugin manager whose ``register_config_fields`` hooks add fields.
        backends: The registered quantization backends, the values ``acceleration.quantization`` takes.

    Raises:
        ValueError: If a plugin adds a field the stock config already has.
    """
    from pydantic import Discriminator, Field, Tag  # noqa: PLC0415
    from pydantic.fields import FieldInfo  # noqa: PLC0415

    import ltx_trainer.config as config_module  # noqa: PLC0415

    extra: dict[str, dict[str, Any]] = {"root": {}, "acceleration": {}}
    # The bridge's own field: how a new run may replace another run's checkpoints (bridge/run_folder.py).
    extra["root"][OVERWRITE_FIELD] = FieldInfo.from_annotated_attribute(
        bool,
        Field(
            default=False,
            description="Start a new run in an output_dir that holds another run's checkpoints: they are set aside "
            "when the run starts and deleted at its first step (put back if it stops before). Without it such a run "
            "is refused before the model loads (resuming that run, with model.load_checkpoint naming its "
            "checkpoints, needs no setting).",
        ),
    )
    for entry in collect(ConfigFieldRegistry, pm):
        if entry.name in stock.config_fields[entry.owner] or entry.name in extra[entry.owner]:
            raise ValueError(
                f"Plugin {entry.plugin!r} adds config field {entry.owner}.{entry.name}, which ltx-trainer or the "
                "bridge already has"
            )
        extra[entry.owner][entry.name] = FieldInfo.from_annotated_attribute(entry.annotation, entry.field)
    extra["acceleration"]["quantization"] = quantization_field(stock, backends)
    _set_fields(config_module, stock.config_fields, extra)

    members = [*stock.strategy_union_args, *(Annotated[e.config_cls, Tag(e.name)] for e in strategies)]
    names = ", ".join(strategies.available())
    annotation = Annotated[
        Union[tuple(members)],
        Discriminator(
            strategy_name,
            custom_error_type="unknown_training_strategy",
            custom_error_message=f"Unknown training strategy name. Registered strategies: {names}",
        ),
    ]
    config_module.LtxTrainerConfig.model_fields["training_strategy"] = FieldInfo.from_annotated_attribute(
        annotation,
        Field(default_factory=stock.strategy_field.default_factory, description=stock.strategy_field.description),
    )
    _rebuild(config_module)


def restore_config(stock: Any) -> None:  # noqa: ANN401
    """Put the stock config fields and strategy union back."""
    import ltx_trainer.config as config_module  # noqa: PLC0415

    _set_fields(config_module, stock.config_fields, {})
    config_module.LtxTrainerConfig.model_fields["training_strategy"] = stock.strategy_field
    _rebuild(config_module)
