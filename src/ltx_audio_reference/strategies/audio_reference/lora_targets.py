"""LoRA target presets for the LTX-2 audio+video transformer.

A preset names Linear layers relative to a transformer block (``audio_attn1.to_q``). :func:`expand_lora_targets`
turns it into the full module names of the model at hand (``transformer_blocks.3.audio_attn1.to_q``), so peft's
``LoraConfig(target_modules=[...])`` wraps exactly those layers and nothing in the video stack: peft matches a list
entry against a module name by equality or by a ``"." + entry`` suffix, and full block paths are unambiguous.

:func:`assert_only_allowed_trainable` checks the result after peft has wrapped the model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch loads only where LoRA is applied; the config imports the presets without it
    from torch import nn

LoraPreset = Literal["audio", "audio+bridges", "custom"]

_ATTENTION_LINEARS = ("to_q", "to_k", "to_v", "to_out.0")
_FEED_FORWARD_LINEARS = ("net.0.proj", "net.2")

#: Audio self-attention, audio text cross-attention and audio feed-forward: 10 Linear layers per block.
AUDIO_MODULES: tuple[str, ...] = (
    *(f"audio_attn1.{leaf}" for leaf in _ATTENTION_LINEARS),
    *(f"audio_attn2.{leaf}" for leaf in _ATTENTION_LINEARS),
    *(f"audio_ff.{leaf}" for leaf in _FEED_FORWARD_LINEARS),
)
#: The two cross-modal attentions between the audio and video streams: 8 Linear layers per block.
BRIDGE_MODULES: tuple[str, ...] = (
    *(f"audio_to_video_attn.{leaf}" for leaf in _ATTENTION_LINEARS),
    *(f"video_to_audio_attn.{leaf}" for leaf in _ATTENTION_LINEARS),
)

PRESETS: dict[str, tuple[str, ...]] = {
    "audio": AUDIO_MODULES,
    "audio+bridges": AUDIO_MODULES + BRIDGE_MODULES,
}

# A module inside a transformer block: (prefix)transformer_blocks.<index>.<path inside the block>
_BLOCK_MODULE = re.compile(r"^(?:.*\.)?transformer_blocks\.(\d+)\.(.+)$")
# peft names its adapter parameters <module>.lora_A.<adapter>.weight (also lora_B, lora_embedding_*, lora_magnitude_*)
_LORA_PARAM = re.compile(r"^(?P<module>.+?)\.lora_[A-Za-z_]+\.")


class TrainableParameterError(RuntimeError):
    """Parameters outside the LoRA preset require gradients."""


def preset_block_modules(preset: LoraPreset) -> tuple[str, ...]:
    """The module paths, relative to one transformer block, that a preset targets.

    Raises:
        ValueError: For ``"custom"`` (it has no fixed module list) or an unknown preset.
    """
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(
            f"LoRA preset {preset!r} has no fixed module list; presets with one: {', '.join(PRESETS)}"
        ) from None


def expand_lora_targets(
    model: nn.Module,
    preset: LoraPreset,
    custom_targets: Sequence[str] = (),
) -> list[str]:
    """Full names of the modules a preset puts LoRA on, for ``peft.LoraConfig(target_modules=...)``.

    Args:
        model: The (not yet peft-wrapped) transformer; names are relative to it.
        preset: ``"audio"``, ``"audio+bridges"`` or ``"custom"``.
        custom_targets: The config's ``lora.target_modules``, returned unchanged for ``"custom"``.

    Returns:
        Module names in model order, e.g. ``["transformer_blocks.0.audio_attn1.to_q", ...]``.

    Raises:
        ValueError: If the model has no transformer blocks, or a block lacks a Linear layer the preset names (for
            example a video-only model), or ``"custom"`` comes without targets.
    """
    if preset == "custom":
        if not custom_targets:
            raise ValueError("lora_preset 'custom' needs lora.target_modules to list the modules to adapt")
        return list(custom_targets)
    wanted = set(preset_block_modules(preset))

    found: dict[int, set[str]] = {}
    names: list[str] = []
    for name, module in model.named_modules():
        match = _BLOCK_MODULE.match(name)
        if match is None:
            continue
        block, inner = int(match.group(1)), match.group(2)
        found.setdefault(block, set())
        if inner in wanted:
            from torch import nn  # noqa: PLC0415

            if not isinstance(module, nn.Linear):
                raise ValueError(f"LoRA preset {preset!r} targets {name}, which is a {type(module).__name__}")
            found[block].add(inner)
            names.append(name)

    if not found:
        raise ValueError(f"{type(model).__name__} has no 'transformer_blocks'; cannot expand LoRA preset {preset!r}")
    for block, present in sorted(found.items()):
        missing = wanted - present
        if missing:
            raise ValueError(
                f"Transformer block {block} lacks {sorted(missing)} needed by LoRA preset {preset!r}; "
                "is this an audio+video LTX-2 model?"
            )
    return names


def _lora_module_allowed(module_name: str, preset: LoraPreset, custom_targets: Sequence[str]) -> bool:
    if preset == "custom":
        bare = module_name.removeprefix("base_model.model.")
        return any(bare == t or bare.endswith(f".{t}") for t in custom_targets)
    match = _BLOCK_MODULE.match(module_name)
    return match is not None and match.group(2) in PRESETS[preset]


def disallowed_trainable_parameters(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    preset: LoraPreset,
    custom_targets: Sequence[str] = (),
) -> tuple[list[str], int]:
    """Split trainable parameters into offenders and allowed LoRA parameters.

    Returns:
        ``(offending_names, allowed_count)``. Offenders are trainable parameters that are not LoRA parameters of a
        module in the preset (base weights, or LoRA on a video module).
    """
    if preset != "custom":
        preset_block_modules(preset)  # fail early on an unknown preset
    offenders: list[str] = []
    allowed = 0
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        match = _LORA_PARAM.match(name)
        if match is not None and _lora_module_allowed(match.group("module"), preset, custom_targets):
            allowed += 1
        else:
            offenders.append(name)
    return offenders, allowed


def assert_only_allowed_trainable(
    model: nn.Module,
    preset: LoraPreset,
    custom_targets: Sequence[str] = (),
    *,
    require_any: bool = True,
) -> int:
    """Check that only LoRA parameters of the preset's modules require gradients.

    Args:
        model: The peft-wrapped model.
        preset: The LoRA preset the model was wrapped with.
        custom_targets: ``lora.target_modules`` for the ``"custom"`` preset.
        require_any: Also fail when nothing at all is trainable.

    Returns:
        The number of trainable LoRA parameter tensors.

    Raises:
        TrainableParameterError: Listing every offending parameter name.
    """
    offenders, allowed = disallowed_trainable_parameters(model.named_parameters(), preset, custom_targets)
    if offenders:
        shown = "\n  ".join(offenders[:50])
        more = f"\n  ... and {len(offenders) - 50} more" if len(offenders) > 50 else ""
        raise TrainableParameterError(
            f"{len(offenders)} trainable parameters are outside LoRA preset {preset!r}:\n  {shown}{more}\n"
            "Freeze the base model (requires_grad_(False)) before adding LoRA, and again after quantizing."
        )
    if require_any and allowed == 0:
        raise TrainableParameterError(f"No LoRA parameter of preset {preset!r} is trainable")
    return allowed
