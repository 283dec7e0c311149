"""Registry objects handed to the hooks in :mod:`ltx_audio_reference.hookspecs`.

Registries reject duplicates with a message naming both plugins, and a failed lookup lists what is available.
Classes may be registered as ``"module:attr"`` strings and are imported on first use, so that listing strategies
never imports ltx-trainer.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from ltx_audio_reference.errors import DuplicateNameError, UnknownNameError

if TYPE_CHECKING:  # annotations only: `ltx-trainer --help` and `strategies` never import torch
    import torch

# Strategy names built into ltx-trainer 1.2.0. Plugins may not take them.
STOCK_STRATEGIES: tuple[str, ...] = ("text_to_video", "video_to_video", "flexible")

_Key = TypeVar("_Key")
_Entry = TypeVar("_Entry")


class Registry(Generic[_Key, _Entry]):
    """What every registry shares: entries by key, the plugin registering now, and duplicates refused.

    Subclasses name the hook that fills them (:attr:`hook`) and define ``__call__``, the ``register`` callback.
    """

    #: The hook (in :mod:`ltx_audio_reference.hookspecs`) whose implementations fill this registry.
    hook: ClassVar[str]

    def __init__(self) -> None:
        self._entries: dict[_Key, _Entry] = {}
        self.current_plugin = "<direct>"

    def _add(self, key: _Key, entry: _Entry, duplicate: Callable[[_Entry], str]) -> None:
        """Store ``entry`` under ``key``; ``duplicate(existing)`` words the error when the key is taken."""
        if key in self._entries:
            raise DuplicateNameError(duplicate(self._entries[key]))
        self._entries[key] = entry

    def __iter__(self) -> Iterator[_Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def resolve(ref: type | Callable | str) -> Any:  # noqa: ANN401 - returns whatever the reference names
    """Import a ``"package.module:attr"`` reference, or return a non-string reference unchanged.

    Args:
        ref: An object, or a string ``"module:attr"`` (``attr`` may be dotted).

    Returns:
        The referenced object.

    Raises:
        ImportError: If the module or the attribute does not exist; the message names the reference.
    """
    if not isinstance(ref, str):
        return ref
    module_name, sep, attr = ref.partition(":")
    if not sep or not attr:
        raise ImportError(f"Reference {ref!r} must look like 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise ImportError(f"Module {module_name!r} has no attribute {attr!r} (from {ref!r})") from e
    return obj


@dataclass(frozen=True)
class StrategyEntry:
    """One registered training strategy."""

    name: str
    config_ref: type | str
    strategy_ref: type | str
    plugin: str

    @property
    def config_cls(self) -> type:
        """The strategy's pydantic config class (imported on first use)."""
        return resolve(self.config_ref)

    @property
    def strategy_cls(self) -> type:
        """The strategy class (imported on first use)."""
        return resolve(self.strategy_ref)


class StrategyRegistry(Registry[str, StrategyEntry]):
    """Name -> (config class, strategy class), filled by the ``register_strategies`` hook."""

    hook = "register_strategies"

    def __call__(self, name: str, config_cls: type | str, strategy_cls: type | str) -> None:
        """Register a strategy.

        Args:
            name: The value of ``training_strategy.name`` that selects it.
            config_cls: Its config class (a ``TrainingStrategyConfigBase`` subclass) or a ``"module:attr"`` string.
            strategy_cls: Its strategy class (a ``TrainingStrategy`` subclass) or a ``"module:attr"`` string.

        Raises:
            DuplicateNameError: If the name is a stock strategy or already registered.
            ValueError: If the name is not a lowercase identifier.
        """
        if not name.isidentifier() or name.lower() != name:
            raise ValueError(f"Strategy name {name!r} must be a lowercase identifier such as 'audio_reference'")
        if name in STOCK_STRATEGIES:
            raise DuplicateNameError(
                f"Plugin {self.current_plugin!r} registers strategy {name!r}, which is built into ltx-trainer; "
                "choose another name"
            )
        self._add(
            name,
            StrategyEntry(name, config_cls, strategy_cls, self.current_plugin),
            lambda old: (
                f"Strategy {name!r} is registered twice: by {old.plugin!r} and by {self.current_plugin!r}. "
                "Block one of them with LTX_TRAINER_PLUGINS_BLOCK."
            ),
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered plugin strategy names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> StrategyEntry:
        """Look a strategy up by name.

        Raises:
            UnknownNameError: If nobody registered it; the message lists every available name.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"Unknown training strategy {name!r}. Available: {', '.join(self.available())}"
            ) from None

    def available(self) -> list[str]:
        """Stock and registered strategy names."""
        return [*STOCK_STRATEGIES, *self.names()]

    def for_config(self, config: object) -> StrategyEntry | None:
        """The entry whose config class built ``config``, or None for a stock strategy config."""
        for entry in self._entries.values():
            if isinstance(config, entry.config_cls):
                return entry
        return None


class QuantizationRegistry(Registry[str, Any]):
    """Name -> weight-quantization backend, filled by the ``register_quantization_backends`` hook, in registration
    order (the built-in backends first)."""

    hook = "register_quantization_backends"

    def __call__(self, backend: Any) -> None:  # noqa: ANN401 - a quantization.QuantizationBackend
        """Register ``backend`` under ``backend.name``.

        Raises:
            DuplicateNameError: If the name is taken.
            ValueError: If the name is not lowercase letters, digits and dashes.
        """
        name = getattr(backend, "name", None)
        if not isinstance(name, str) or not name or name.lower() != name or not name.replace("-", "").isalnum():
            raise ValueError(f"Quantization backend name {name!r} must be lowercase letters, digits and dashes")
        self._add(
            name,
            backend,
            lambda old: (
                f"Quantization backend {name!r} is registered twice: by {old.plugin!r} and by {self.current_plugin!r}"
            ),
        )
        backend.plugin = self.current_plugin

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered backend names, in registration order."""
        return list(self._entries)

    def get(self, name: str) -> Any:  # noqa: ANN401
        """The backend registered as ``name``.

        Raises:
            UnknownNameError: If nobody registered it; the message lists every available name.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"Unknown quantization {name!r}. Available: {', '.join(self.names())}") from None


@dataclass(frozen=True)
class ConfigFieldEntry:
    """An extra field for the stock trainer config."""

    owner: Literal["root", "acceleration"]
    name: str
    annotation: Any
    field: Any
    plugin: str


class ConfigFieldRegistry(Registry[tuple[str, str], ConfigFieldEntry]):
    """Extra fields added to the stock config, filled by the ``register_config_fields`` hook."""

    hook = "register_config_fields"

    def __call__(
        self,
        owner: Literal["root", "acceleration"],
        name: str,
        annotation: Any,  # noqa: ANN401 - any type annotation
        field: Any,  # noqa: ANN401 - a pydantic FieldInfo
    ) -> None:
        """Register a field ``name: annotation = field`` on ``LtxTrainerConfig`` (root) or ``AccelerationConfig``.

        Raises:
            DuplicateNameError: If the field was already registered.
            ValueError: If the owner is unknown.
        """
        if owner not in ("root", "acceleration"):
            raise ValueError(f"Config field owner must be 'root' or 'acceleration', got {owner!r}")
        self._add(
            (owner, name),
            ConfigFieldEntry(owner, name, annotation, field, self.current_plugin),
            lambda old: (
                f"Config field {owner}.{name} is registered twice: by {old.plugin!r} and by {self.current_plugin!r}"
            ),
        )


class ReferenceConditioner(Protocol):
    """Places reference latents in a sequence for validation or inference.

    It receives the patchified reference tokens ``[B, T_ref, C]`` and the target's RoPE positions ``[B, n, T, 2]``
    and returns the reference positions ``[B, n, T_ref, 2]`` (float32, seconds for time) plus the per-token
    denoise-mask value (0.0 = clean).
    """

    def __call__(
        self, ref_tokens: torch.Tensor, target_positions: torch.Tensor, strategy_config: object
    ) -> tuple[torch.Tensor, float]:
        """Place ``ref_tokens`` relative to ``target_positions``."""


class ConditionerRegistry(Registry[tuple[str, str], tuple["ReferenceConditioner", str]]):
    """(strategy name, modality) -> reference conditioner, filled by ``register_reference_conditioners``."""

    hook = "register_reference_conditioners"

    def __call__(
        self, strategy_name: str, modality: Literal["audio", "video"], conditioner: ReferenceConditioner
    ) -> None:
        """Register the conditioner that places ``modality`` references for ``strategy_name``.

        Raises:
            DuplicateNameError: If that pair already has a conditioner.
        """
        if modality not in ("audio", "video"):
            raise ValueError(f"Reference modality must be 'audio' or 'video', got {modality!r}")
        self._add(
            (strategy_name, modality),
            (conditioner, self.current_plugin),
            lambda old: (
                f"A {modality} reference conditioner for {strategy_name!r} is registered twice: by "
                f"{old[1]!r} and by {self.current_plugin!r}"
            ),
        )

    def get(self, strategy_name: str, modality: str) -> ReferenceConditioner | None:
        """The conditioner for that strategy and modality, or None (stock placement)."""
        entry = self._entries.get((strategy_name, modality))
        return entry[0] if entry else None


@dataclass
class LoraContext:
    """Mutable context of the ``configure_lora`` hook."""

    config: Any
    strategy: Any
    model: torch.nn.Module
    target_modules: list[str]


def lora_target_modules(hook: Any, config: Any, model: torch.nn.Module, strategy: Any = None) -> list[str]:  # noqa: ANN401
    """The modules LoRA wraps in ``model``: ``config.lora.target_modules`` as the ``configure_lora`` hooks set them.

    The bridge asks before peft wraps the model. The memory estimates ask about the transformer built on the meta
    device, before the trainer exists (``strategy`` is None then).

    Args:
        hook: The plugin manager's hook relay (``pm.hook``).
        config: The trainer config (``lora.target_modules``; a strategy's hook may read its own section).
        model: The unwrapped transformer (on any device, the meta device included).
        strategy: The training strategy object, where one exists.
    """
    targets = list(config.lora.target_modules)
    context = LoraContext(config=config, strategy=strategy, model=model, target_modules=targets)
    hook.configure_lora(context=context)
    return context.target_modules


@dataclass
class ModelContext:
    """Mutable context of the ``configure_model`` hook."""

    config: Any
    strategy: Any
    model: torch.nn.Module
    accelerator: Any
    device: torch.device
    device_placement: bool = True
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointContext:
    """Mutable context of the ``on_checkpoint`` hook."""

    config: Any
    strategy: Any
    model: torch.nn.Module
    step: int
    device: torch.device
    dataset: Any
    loss_fn: Callable[[dict[str, Any]], torch.Tensor]
    collate: Callable[[list[Any]], dict[str, Any]]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainStepContext:
    """Context of the ``on_train_step`` hook (read-only: changing it changes nothing in training)."""

    config: Any
    strategy: Any
    model: torch.nn.Module
    step: int
    loss: torch.Tensor
    sigma: torch.Tensor
    sample_files: list[list[Path]]


class CheckpointMetadata:
    """Safetensors metadata under construction: string keys to string values.

    Strings are stored as-is, everything else JSON-encoded, so ``0.04`` becomes ``"0.04"`` and ``True``
    becomes ``"true"`` (not Python's ``"True"``).
    """

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._data: dict[str, str] = {}
        for key, value in (initial or {}).items():
            self._data[key] = self.encode(value)

    @staticmethod
    def encode(value: Any) -> str:  # noqa: ANN401 - any JSON-serializable value
        """Encode one metadata value."""
        return value if isinstance(value, str) else json.dumps(value)

    def add(self, key: str, value: Any, *, overwrite: bool = False) -> None:  # noqa: ANN401
        """Add an entry.

        Raises:
            DuplicateNameError: If ``key`` exists with a different value and ``overwrite`` is False.
        """
        encoded = self.encode(value)
        if not overwrite and key in self._data and self._data[key] != encoded:
            raise DuplicateNameError(
                f"Checkpoint metadata key {key!r} is set twice with different values: "
                f"{self._data[key]!r} and {encoded!r}"
            )
        self._data[key] = encoded

    def to_dict(self) -> dict[str, str]:
        """A copy of the metadata as ``dict[str, str]``."""
        return dict(self._data)
