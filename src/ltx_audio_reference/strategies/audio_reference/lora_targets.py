"""LoRA target presets for the LTX-2 audio+video transformer.

A preset names Linear layers relative to a transformer block (``audio_attn1.to_q``). :func:`expand_lora_targets`
turns it into the full module names of the model at hand (``transformer_blocks.3.audio_attn1.to_q``), so peft's
``LoraConfig(target_modules=[...])`` wraps exactly those layers and nothing in the video stack: peft matches a list
entry against a module name by equality or by a ``"." + entry`` suffix, and full block paths are unambiguous.

:func:`assert_only_allowed_trainable` checks the result after peft has wrapped the model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from ltx_audio_reference.reliability.lora_fit import transformer_weight_shapes

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


def _peft_matches(name: str, target: str) -> bool:
    """peft's rule for one entry of a ``target_modules`` list: the module's name, or a ``.``-suffix of it."""
    return name == target or name.endswith(f".{target}")


def preset_target_problem(preset: LoraPreset, targets: Sequence[str]) -> str | None:
    """Why a ``lora.target_modules`` list the user wrote contradicts a preset with a fixed module list, or None.

    Such a preset sets the LoRA targets itself, so the list would be replaced: its entries outside the preset dropped,
    and a partial list widened to the whole preset. Only the preset's own list (in any order) agrees with it.
    """
    modules = preset_block_modules(preset)
    outside = [t for t in targets if not any(_peft_matches(m, t) for m in modules)]
    if outside:
        fixes = []
        wider = [
            name
            for name, mods in PRESETS.items()
            if name != preset and all(any(_peft_matches(m, t) for m in mods) for t in targets)
        ]
        if wider:
            fixes.append(f"set lora_preset: {wider[0]} and remove lora.target_modules (that preset adapts them)")
        fixes += ["set lora_preset: custom to adapt exactly lora.target_modules", "remove lora.target_modules"]
        return (
            f"lora.target_modules names {', '.join(outside)}, which lora_preset {preset!r} does not adapt; the preset "
            f"sets the LoRA targets itself, so they would be dropped. To fix: {'; or '.join(fixes)}"
        )
    covered = {m for m in modules if any(_peft_matches(m, t) for t in targets)}
    if len(covered) < len(modules):
        return (
            f"lora.target_modules names {len(covered)} of the {len(modules)} modules per block that lora_preset "
            f"{preset!r} adapts; the preset sets the LoRA targets itself, so all {len(modules)} would be adapted. "
            "Set lora_preset: custom to adapt only lora.target_modules, or remove lora.target_modules"
        )
    return None


def checkpoint_modules(shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Transformer module name -> number of dimensions of its weight, from a checkpoint's tensor shapes.

    Names are those of the transformer peft wraps (``transformer_blocks.0.audio_attn1.to_q``), as
    :func:`~ltx_audio_reference.reliability.lora_fit.transformer_weight_shapes` reads them.
    """
    return {module: len(shape) for module, shape in transformer_weight_shapes(shapes).items()}


def custom_target_problems(targets: Sequence[str], modules: Mapping[str, int], source: str) -> list[str]:
    """Why entries of a ``custom`` preset's ``lora.target_modules`` would fail in peft, one line each.

    Args:
        targets: ``lora.target_modules``.
        modules: :func:`checkpoint_modules` of the checkpoint.
        source: The checkpoint, for the message.
    """
    block_inner = sorted({m.split(".", 2)[2] for m in modules if _BLOCK_MODULE.match(m) and modules[m] >= 2})
    problems = []
    for target in targets:
        matched = [m for m in modules if _peft_matches(m, target)]
        if not matched:
            inner = re.sub(r"^(?:.*\.)?transformer_blocks\.\d+\.", "", target)
            close = difflib.get_close_matches(inner, block_inner, 3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            problems.append(
                f"lora.target_modules: {target!r} matches no module of the transformer in {source} (peft takes a "
                f"module's name or a '.'-suffix of it, e.g. audio_attn1.to_q).{hint} Fix the name, or use "
                "lora_preset: audio"
            )
        elif all(modules[m] < 2 for m in matched):
            problems.append(
                f"lora.target_modules: {target!r} matches only {', '.join(matched[:3])}, whose weight has one "
                "dimension (a norm layer), which peft's LoRA cannot adapt. Name Linear layers (to_q, to_k, to_v, "
                "to_out.0, net.0.proj, net.2)"
            )
    return problems


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
