"""Does a LoRA file fit a model? Both safetensors headers compared, before anything loads.

An exported LoRA holds ``diffusion_model.<module>.lora_A.weight`` (``[rank, in]``) and ``...lora_B.weight``
(``[out, rank]``) per adapted Linear layer. Against the model checkpoint's header (``model.diffusion_model.<module>
.weight``, ``[out, in]``) that settles, without reading a single value:

- **widths**: every factor's ``in``/``out`` equals the layer's (another width fails deep inside ltx-core's fusion, or
  peft's load, after every model loaded);
- **blocks**: a LoRA reaching blocks the model does not have would be dropped without a word; a LoRA of a smaller
  model covers only the model's first blocks;
- **rank**: the config's ``lora.rank`` (when resuming);
- **targets**: the modules per block the config adapts (its preset), when given.

Each problem names the first tensor that differs. Torch-free: the headers are JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: ``diffusion_model.<module>.lora_A.weight`` / ``.lora_B.weight``: the keys of an exported LoRA.
LORA_KEY = re.compile(r"^diffusion_model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")
#: Where ltx-core's transformer loader takes its weights from in a checkpoint.
CHECKPOINT_TRANSFORMER_PREFIX = "model.diffusion_model."
_BLOCK = re.compile(r"^transformer_blocks\.(?P<block>\d+)\.(?P<inner>.+)$")


def transformer_weight_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Transformer module name -> its weight's shape, from a checkpoint's tensor shapes.

    Names are those of the transformer peft wraps (``transformer_blocks.0.audio_attn1.to_q``): the loader's prefix
    is stripped (a split pack's transformer file has it too; a file without it is taken as is), and the text
    connectors (loaded by the embeddings processor, not the transformer) are left out.
    """
    keys = [k for k in shapes if k.startswith(CHECKPOINT_TRANSFORMER_PREFIX)] or list(shapes)
    return {
        key.removeprefix(CHECKPOINT_TRANSFORMER_PREFIX).removesuffix(".weight"): tuple(shapes[key])
        for key in keys
        if key.endswith(".weight") and "embeddings_connector" not in key
    }


def _block_of(module: str) -> tuple[int, str] | None:
    match = _BLOCK.match(module)
    return (int(match["block"]), match["inner"]) if match else None


def _span(blocks: Iterable[int]) -> str:
    ordered = sorted(set(blocks))
    if not ordered:
        return "none"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}" if len(ordered) > 1 else str(ordered[0])
    shown = ", ".join(map(str, ordered[:6]))
    return shown + (f" and {len(ordered) - 6} more" if len(ordered) > 6 else "")


def _peft_matches(name: str, target: str) -> bool:
    """peft's rule for one ``target_modules`` entry: the module's name, or a ``.``-suffix of it."""
    return name == target or name.endswith(f".{target}")


@dataclass
class LoraFit:
    """What comparing the headers found: problems (refuse) and notes (it fits; worth knowing)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is refused."""
        return not self.problems


def lora_modules(lora_shapes: Mapping[str, Sequence[int]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Module -> ``{"A": shape, "B": shape}`` of the export-format keys of a LoRA's header."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in lora_shapes.items():
        match = LORA_KEY.match(key)
        if match:
            modules.setdefault(match["module"], {})[match["factor"]] = tuple(shape)
    return modules


def _sort_key(module: str) -> tuple[int, str]:
    block = _block_of(module)
    return block if block is not None else (-1, module)


def _first_shape_problem(
    modules: Mapping[str, Mapping[str, tuple[int, ...]]], weights: Mapping[str, tuple[int, ...]], rank: int | None
) -> str | None:
    """The first factor (in block order) whose width differs from its layer's, or whose rank is not ``rank``."""
    for module in sorted(modules, key=_sort_key):
        weight = weights.get(module)
        if weight is None:
            continue
        out_features, in_features = weight
        for factor in ("A", "B"):
            shape = modules[module].get(factor)
            if shape is None:
                continue
            key = f"diffusion_model.{module}.lora_{factor}.weight"
            if len(shape) != 2:
                return f"the first differing tensor is {key}: {list(shape)}, not a matrix"
            r, width, want = (shape[0], shape[1], in_features) if factor == "A" else (shape[1], shape[0], out_features)
            if width != want:
                expected = [r, in_features] if factor == "A" else [out_features, r]
                return (
                    f"the first differing tensor is {key}: {list(shape)}, while the model's {module}.weight is "
                    f"{list(weight)} (out x in), so it must be {expected}: it was trained for a model of another width"
                )
            if rank is not None and r != rank:
                return (
                    f"the first differing tensor is {key}: {list(shape)} is rank {r}, while lora.rank is {rank}: it "
                    "was trained with another LoRA rank"
                )
    return None


def target_problems(
    modules: Mapping[str, Mapping[str, tuple[int, ...]]],
    weights: Mapping[str, tuple[int, ...]],
    targets: Sequence[str],
    *,
    head: str,
    targets_label: str,
) -> list[str]:
    """Where the LoRA's adapted modules differ from the modules ``targets`` name, in the blocks it covers (modules
    the model does not have are left to :func:`lora_fit`'s other checks).

    Args:
        modules: :func:`lora_modules` of the LoRA.
        weights: The model's 2-D weights (:func:`transformer_weight_shapes`).
        targets: ``target_modules`` entries (peft's rule).
        head: The start of each message.
        targets_label: What ``targets`` are (``lora_preset 'audio'``).
    """
    expected = {m for m in weights if any(_peft_matches(m, t) for t in targets)}
    blocks = {b[0] for m in modules if (b := _block_of(m)) is not None}
    # A module the model does not have says "another model", which lora_fit's other checks name.
    extra = sorted((set(modules) & set(weights)) - expected, key=_sort_key)
    covered = {m for m in expected if (b := _block_of(m)) is None or b[0] in blocks}
    absent = sorted(covered - set(modules), key=_sort_key)
    what = "it was trained with another LoRA preset or target list"
    if extra:
        return [
            f"{head}: it adapts {len(extra)} module(s) that {targets_label} does not (the first is "
            f"diffusion_model.{extra[0]}.lora_A.weight): {what}"
        ]
    if absent:
        return [
            f"{head}: it lacks {len(absent)} module(s) that {targets_label} adapts (the first is "
            f"diffusion_model.{absent[0]}.lora_A.weight): {what}"
        ]
    return []


def lora_fit(
    lora_shapes: Mapping[str, Sequence[int]],
    model_shapes: Mapping[str, Sequence[int]],
    *,
    lora_path: str | Path,
    model_path: str | Path,
    rank: int | None = None,
    targets: Sequence[str] | None = None,
    targets_label: str = "the config's LoRA targets",
) -> LoraFit:
    """Compare a LoRA's header with a model checkpoint's header.

    Args:
        lora_shapes: The LoRA file's tensor name -> shape.
        model_shapes: The model checkpoint's tensor name -> shape.
        lora_path: The LoRA file, for the messages.
        model_path: The model checkpoint, for the messages.
        rank: The rank the LoRA must have (``lora.rank`` when resuming); None accepts any rank.
        targets: ``target_modules`` entries (peft's rule: a module's name or a ``.``-suffix of it) the LoRA must
            adapt, exactly; None leaves the target set unchecked.
        targets_label: What ``targets`` are, for the messages (``lora_preset 'audio'``).

    Returns:
        Problems (one line each, naming the first differing tensor) and notes.
    """
    fit = LoraFit()
    head = f"{lora_path} does not fit the model in {model_path}"
    modules = lora_modules(lora_shapes)
    if not modules:
        fit.problems.append(
            f"{lora_path} holds no LoRA tensor (diffusion_model.<module>.lora_A.weight / .lora_B.weight; it has "
            f"{len(lora_shapes)} other tensors): pass an exported LoRA .safetensors file"
        )
        return fit
    weights = {m: s for m, s in transformer_weight_shapes(model_shapes).items() if len(s) == 2}
    model_blocks = {b[0] for m in weights if (b := _block_of(m)) is not None}
    lora_blocks = {b[0] for m in modules if (b := _block_of(m)) is not None}
    n_model = max(model_blocks) + 1 if model_blocks else 0

    beyond = sorted(b for b in lora_blocks if b >= n_model)
    outside = sorted((m for m in modules if (b := _block_of(m)) is not None and b[0] >= n_model), key=_sort_key)
    if beyond:
        fit.problems.append(
            f"{head}: the LoRA covers {len(lora_blocks)} transformer blocks ({_span(lora_blocks)}), the model has "
            f"{n_model} ({_span(model_blocks)}): blocks {_span(beyond)} of the LoRA have no place and would be "
            f"dropped without a word (the first is diffusion_model.{outside[0]}.lora_A.weight). It was trained for "
            "a larger model: pass a LoRA of this model"
        )
    unknown = sorted((m for m in modules if m not in weights and m not in outside), key=_sort_key)
    if unknown:
        fit.problems.append(
            f"{head}: {len(unknown)} adapted module(s) of the LoRA are not Linear layers of this model (the first is "
            f"diffusion_model.{unknown[0]}.lora_A.weight): it was trained for another model"
        )
    if (problem := _first_shape_problem(modules, weights, rank)) is not None:
        fit.problems.append(f"{head}: {problem}")

    per_block: dict[int, set[str]] = {}
    for module in modules:
        if (block := _block_of(module)) is not None:
            per_block.setdefault(block[0], set()).add(block[1])
    uniform = len({frozenset(inner) for inner in per_block.values()}) == 1
    fewer = lora_blocks and not beyond and len(lora_blocks) < n_model
    if fewer and uniform and lora_blocks == set(range(len(lora_blocks))):
        missing_blocks = sorted(model_blocks - lora_blocks)
        fit.problems.append(
            f"{head}: the LoRA covers {len(lora_blocks)} transformer blocks ({_span(lora_blocks)}), the model has "
            f"{n_model}: blocks {_span(missing_blocks)} would get no LoRA. It was trained for a smaller model (the "
            f"first block without it is {missing_blocks[0]}): pass a LoRA of this model"
        )
    elif fewer:
        fit.notes.append(
            f"{lora_path} adapts {len(lora_blocks)} of the model's {n_model} transformer blocks ({_span(lora_blocks)})"
        )

    if targets is not None and not fit.problems:
        fit.problems.extend(target_problems(modules, weights, targets, head=head, targets_label=targets_label))
    return fit
