"""``ltx-trainer audio-reference inspect LORA [LORA2]``: what an exported LoRA holds, and how far apart two are.

An exported LoRA follows ComfyUI's convention, which ltx-core's ``LTXV_LORA_COMFY_RENAMING_MAP`` also reads: every
key is ``diffusion_model.<module>.lora_A.weight`` (``[rank, in_features]``) or ``...lora_B.weight``
(``[out_features, rank]``), and there is no ``alpha`` key, because ltx-core and ComfyUI apply ``B @ A`` with scale 1.

**Distances.** For two files P (the first) and Q, with the effective weight delta ``dW_m = B_m @ A_m`` of each
module ``m`` (computed in float64; a module missing from one file counts as a zero delta there):

- ``relative_delta_distance = sqrt(sum_m ||dW_m(Q) - dW_m(P)||_F^2) / sqrt(sum_m ||dW_m(P)||_F^2)``, the headline
  number. It compares what the LoRAs do to the model, so it does not depend on how a delta is factored (``B @ A``
  equals ``(B G) @ (G^-1 A)`` for any invertible ``G``).
- ``relative_raw_distance = sqrt(sum_k ||T_k(Q) - T_k(P)||_F^2) / sqrt(sum_k ||T_k(P)||_F^2)`` over the raw
  ``lora_A``/``lora_B`` tensors ``T_k`` present in both files with one shape. It is only meaningful for two
  checkpoints of one run (same initialisation, so the same factorisation).

**Other key formats.** A kohya-ss (``lora_unet_...lora_down/lora_up`` plus ``alpha``), diffusers (``transformer.``)
or raw peft (``base_model.model.``) file is named as such in one line, with what ComfyUI and ltx-core read: ltx-core
fuses only ``<module>.lora_A.weight``/``.lora_B.weight`` pairs, so such keys would be skipped.

Both are relative to P, so ``0.08`` reads "Q's delta differs from P's by 8% of P's size". Frobenius norms and inner
products of ``B @ A`` are computed from ``rank x rank`` Gram matrices (``||B A||^2 = sum((B^T B) * (A A^T))``), so a
22B model's LoRA is inspected without materialising any full-size delta.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference.reliability.lora_fit import LORA_KEY
from ltx_audio_reference.strategies.audio_reference.lora_targets import PRESETS

logger = logging.getLogger(__name__)

KEY_PREFIX = "diffusion_model."
_BLOCK_MODULE = re.compile(r"^transformer_blocks\.(?P<block>\d+)\.(?P<inner>.+)$")
_ALPHA_KEY = re.compile(r"(^|\.)alpha$")

PRESET_OTHER = "other"

#: Key formats other than the export's, by key prefix, with how each names a module's factors.
FOREIGN_FORMATS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "kohya": (
        ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"),
        "lora_unet_<module path with _>.lora_down.weight / .lora_up.weight / .alpha",
        "rename lora_down to lora_A and lora_up to lora_B under diffusion_model.<module path with .>, and fold "
        "alpha / rank into lora_B",
    ),
    "diffusers": (
        ("transformer.",),
        "transformer.<module>.lora_A.weight / .lora_B.weight",
        "replace the transformer. prefix with diffusion_model.",
    ),
    "peft": (
        ("base_model.model.",),
        "base_model.model.<module>.lora_A.default.weight (a raw peft state dict)",
        "replace base_model.model. with diffusion_model. and drop .default",
    ),
}
EXPECTED_FORMAT = (
    "ComfyUI and ltx-core read diffusion_model.<module>.lora_A.weight / .lora_B.weight with no alpha (ltx-core fuses "
    "only lora_A/lora_B pairs, so these keys would be skipped)"
)
EXPORT_FORMAT = "comfyui"
#: Unknown keys listed one per line before "and N more".
MAX_UNKNOWN_LISTED = 10
#: Key prefixes of a model checkpoint's own weights (a monolithic LTX-2 file, a bare transformer, a VAE).
MODEL_KEY_PREFIXES = ("model.diffusion_model.", "transformer_blocks.", "vae.", "audio_vae.", "vocoder.", "text_")


class LoraFileError(RuntimeError):
    """The file cannot be read as safetensors."""


@dataclass
class ModuleNorms:
    """Frobenius norms of one adapted module's factors and of its effective delta ``B @ A``."""

    module: str
    rank: int
    in_features: int
    out_features: int
    norm_a: float
    norm_b: float
    norm_delta: float


@dataclass
class LoraReport:
    """What one LoRA file holds; ``problems`` is empty for a clean, loadable export."""

    path: str
    num_tensors: int
    dtypes: dict[str, int]
    problems: list[str]
    non_finite_tensors: list[str]
    bad_keys: list[str]
    key_format: str
    preset: str
    num_blocks: int
    ranks: list[int]
    total_delta_norm: float
    metadata: dict[str, Any]
    modules: list[ModuleNorms] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the file has no problems."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


@dataclass
class LoraDistance:
    """How far the second LoRA is from the first (see the module docstring for the definitions)."""

    reference: str
    other: str
    relative_delta_distance: float
    relative_raw_distance: float | None
    delta_norm_reference: float
    delta_norm_other: float
    modules_compared: int
    modules_only_in_reference: list[str]
    modules_only_in_other: list[str]
    raw_tensors_compared: int
    per_module: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the metadata of a safetensors file.

    Raises:
        LoraFileError: If the file is missing or not safetensors.
    """
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    path = Path(path)
    if path.is_dir():
        raise LoraFileError(f"{path} is a folder, not a LoRA file: {_lora_in_folder(path)}")
    if not path.is_file():
        raise LoraFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not a Mapping
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        what = {
            ".pt": "a training state or latent (.pt), not a LoRA: pass checkpoints/lora_weights_step_NNNNN.safetensors",
            ".yaml": "a config, not a LoRA: pass checkpoints/lora_weights_step_NNNNN.safetensors",
            ".yml": "a config, not a LoRA: pass checkpoints/lora_weights_step_NNNNN.safetensors",
        }.get(path.suffix.lower())
        raise LoraFileError(f"{path}: {what}" if what else f"{path}: not a readable safetensors file ({e})") from e
    return tensors, metadata


def _lora_in_folder(folder: Path) -> str:
    """What to pass instead of a folder: its newest complete checkpoint, or its .safetensors files."""
    from ltx_audio_reference.reliability.checkpoints import select_checkpoint  # noqa: PLC0415

    for candidate in (folder / "checkpoints", folder):
        choice = select_checkpoint(candidate) if candidate.is_dir() else None
        if choice is not None:
            return f"pass a .safetensors file, such as its newest complete checkpoint {choice.weights}"
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return f"pass one of its .safetensors files, such as {found[0]}"
    return (
        "it holds no .safetensors file; pass an exported LoRA (output_dir/checkpoints/lora_weights_step_N.safetensors)"
    )


def _decode_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, value in sorted(metadata.items()):
        try:
            decoded[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            decoded[key] = value
    return decoded


def lora_factors(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """Pair each module's ``lora_A`` and ``lora_B`` and list every problem with the keys or values.

    Args:
        tensors: The file's tensors by key.

    Returns:
        ``(factors, problems)``: ``{module: (A, B)}`` for well-formed pairs, and one line per problem, each naming
        the tensor (non-finite values, an alpha key, an unknown key, a lone factor, mismatched shapes).
    """
    problems: list[str] = []
    halves: dict[str, dict[str, torch.Tensor]] = {}
    foreign: dict[str, list[str]] = {}
    unknown: list[str] = []
    for key in sorted(tensors):
        tensor = tensors[key]
        if tensor.is_floating_point():
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            if nan or inf:
                problems.append(f"{key}: {nan} NaN and {inf} Inf of {tensor.numel()} values")
        match = LORA_KEY.match(key)
        if match is None:
            if (name := foreign_format(key)) is not None:
                foreign.setdefault(name, []).append(key)  # one line per format, not one per tensor
            elif _ALPHA_KEY.search(key):
                problems.append(
                    f"{key}: alpha key. Exported LoRAs carry no alpha: ltx-core and ComfyUI apply B @ A with scale "
                    "1 (train with lora.alpha equal to lora.rank)"
                )
            else:
                unknown.append(key)
            continue
        if tensor.ndim != 2:
            problems.append(f"{key}: expected a 2-D matrix, found shape {tuple(tensor.shape)}")
            continue
        halves.setdefault(match.group("module"), {})[match.group("factor")] = tensor
    problems.extend(_unknown_key_problems(unknown, lora_keys=len(tensors) - len(unknown)))
    for name, keys in foreign.items():
        _, layout, fix = FOREIGN_FORMATS[name]
        example = next((k for k in keys if not _ALPHA_KEY.search(k)), keys[0])
        problems.append(
            f"{len(keys)} key(s) in {name} format ({layout}), e.g. {example}: {EXPECTED_FORMAT}; to use this file, "
            f"{fix}"
        )

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module, pair in halves.items():
        if set(pair) != {"A", "B"}:
            present, missing = next(iter(pair)), "B" if "A" in pair else "A"
            problems.append(f"{KEY_PREFIX}{module}.lora_{present}.weight: no matching lora_{missing}")
            continue
        a, b = pair["A"], pair["B"]
        if a.shape[0] != b.shape[1]:
            problems.append(
                f"{KEY_PREFIX}{module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} disagree on the rank"
            )
            continue
        factors[module] = (a, b)
    return factors, problems


def _unknown_key_problems(unknown: list[str], lora_keys: int) -> list[str]:
    """One line per unknown key, or one line for a file with no LoRA key at all (a model checkpoint, say)."""
    if not unknown:
        return []
    expected = f"expected {KEY_PREFIX}<module>.lora_A.weight or .lora_B.weight (ComfyUI)"
    if lora_keys == 0 and len(unknown) > MAX_UNKNOWN_LISTED:
        model = any(k.startswith(MODEL_KEY_PREFIXES) and k.endswith((".weight", ".bias")) for k in unknown)
        what = "a model checkpoint (its weights and biases), not a LoRA" if model else "not a LoRA"
        return [
            f"this file is {what}: none of its {len(unknown)} tensors is a LoRA factor (e.g. {unknown[0]}); "
            f"{expected}. Pass an exported LoRA, such as output_dir/checkpoints/lora_weights_step_N.safetensors"
        ]
    shown = [f"{key}: unknown key; {expected}" for key in unknown[:MAX_UNKNOWN_LISTED]]
    if len(unknown) > MAX_UNKNOWN_LISTED:
        shown.append(f"... and {len(unknown) - MAX_UNKNOWN_LISTED} more unknown keys")
    return shown


def foreign_format(key: str) -> str | None:
    """The other LoRA key format ``key`` is written in (a :data:`FOREIGN_FORMATS` name), or None."""
    for name, (prefixes, _, _) in FOREIGN_FORMATS.items():
        if key.startswith(prefixes):
            return name
    return None


def detect_key_format(keys: list[str]) -> str:
    """The key format of a LoRA file.

    Returns:
        ``"comfyui"`` when every key is an export key (``diffusion_model.<module>.lora_A/B.weight``; alpha keys there
        still count as this format, and are reported separately), a :data:`FOREIGN_FORMATS` name when every other key
        is in that format and no key is an export key, ``"mixed"`` for a mixture, ``"unknown"`` for keys of no known
        format, ``"empty"`` for no keys.
    """
    if not keys:
        return "empty"
    formats = {
        EXPORT_FORMAT if LORA_KEY.match(k) or k.startswith(KEY_PREFIX) else foreign_format(k) or "unknown" for k in keys
    }
    return formats.pop() if len(formats) == 1 else "mixed"


def detect_preset(modules: list[str]) -> tuple[str, int]:
    """Which LoRA preset a set of adapted modules is.

    Args:
        modules: Module names relative to the transformer (``transformer_blocks.3.audio_attn1.to_q``).

    Returns:
        ``(preset, num_blocks)``: ``"audio"`` or ``"audio+bridges"`` when every adapted block holds exactly that
        preset's modules and nothing outside the blocks is adapted; ``"other"`` otherwise.
    """
    per_block: dict[int, set[str]] = {}
    outside = False
    for module in modules:
        match = _BLOCK_MODULE.match(module)
        if match is None:
            outside = True
            continue
        per_block.setdefault(int(match.group("block")), set()).add(match.group("inner"))
    if outside or not per_block:
        return PRESET_OTHER, len(per_block)
    for name, preset_modules in PRESETS.items():
        if all(inner == set(preset_modules) for inner in per_block.values()):
            return name, len(per_block)
    return PRESET_OTHER, len(per_block)


def _gram_inner(a1: torch.Tensor, b1: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> float:
    """``<B1 A1, B2 A2>_F`` in float64 from rank-sized Gram matrices."""
    return float(((b1.T @ b2) * (a1 @ a2.T)).sum())


def _float64(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pair[0].to(torch.float64), pair[1].to(torch.float64)


def inspect_lora(path: Path) -> LoraReport:
    """Inspect one exported LoRA file.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        The report; its ``problems`` name every non-finite tensor, alpha key, unknown key and unpaired factor.

    Raises:
        LoraFileError: If the file cannot be read.
    """
    tensors, raw_metadata = read_lora(path)
    factors, problems = lora_factors(tensors)
    if not tensors:
        problems.append(f"{path}: holds no tensors")
    non_finite = [key for key, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    bad_keys = [key for key in tensors if LORA_KEY.match(key) is None]
    modules: list[ModuleNorms] = []
    total = 0.0
    for module in sorted(factors, key=_module_sort_key):
        a, b = _float64(factors[module])
        delta_sq = max(_gram_inner(a, b, a, b), 0.0)
        total += delta_sq
        modules.append(
            ModuleNorms(
                module=module,
                rank=a.shape[0],
                in_features=a.shape[1],
                out_features=b.shape[0],
                norm_a=float(torch.linalg.vector_norm(a)),
                norm_b=float(torch.linalg.vector_norm(b)),
                norm_delta=math.sqrt(delta_sq),
            )
        )
    preset, num_blocks = detect_preset(list(factors))
    return LoraReport(
        path=str(path),
        num_tensors=len(tensors),
        dtypes=dict(sorted(Counter(str(t.dtype).removeprefix("torch.") for t in tensors.values()).items())),
        problems=problems,
        non_finite_tensors=sorted(non_finite),
        bad_keys=sorted(bad_keys),
        key_format=detect_key_format(list(tensors)),
        preset=preset,
        num_blocks=num_blocks,
        ranks=sorted({m.rank for m in modules}),
        total_delta_norm=math.sqrt(total),
        metadata=_decode_metadata(raw_metadata),
        modules=modules,
    )


def lora_distance(reference: Path, other: Path) -> LoraDistance:
    """The relative distance of ``other`` from ``reference`` (definitions in the module docstring).

    Raises:
        LoraFileError: If a file cannot be read.
        ValueError: If the reference LoRA has an all-zero delta (a relative distance is undefined).
    """
    ref_tensors, _ = read_lora(reference)
    other_tensors, _ = read_lora(other)
    ref_factors, _ = lora_factors(ref_tensors)
    other_factors, _ = lora_factors(other_tensors)

    ref_sq = other_sq = diff_sq = 0.0
    per_module: dict[str, float] = {}
    for module in sorted(set(ref_factors) | set(other_factors), key=_module_sort_key):
        p = _float64(ref_factors[module]) if module in ref_factors else None
        q = _float64(other_factors[module]) if module in other_factors else None
        pp = _gram_inner(*p, *p) if p else 0.0
        qq = _gram_inner(*q, *q) if q else 0.0
        pq = _gram_inner(p[0], p[1], q[0], q[1]) if p and q else 0.0
        module_diff = max(pp + qq - 2.0 * pq, 0.0)
        ref_sq += pp
        other_sq += qq
        diff_sq += module_diff
        if pp > 0:
            per_module[module] = math.sqrt(module_diff / pp)
    if ref_sq <= 0:
        raise ValueError(f"{reference}: every B @ A is zero, so a distance relative to it is undefined")

    raw_ref_sq = raw_diff_sq = 0.0
    raw_compared = 0
    for key, tensor in ref_tensors.items():
        counterpart = other_tensors.get(key)
        if not LORA_KEY.match(key) or counterpart is None or counterpart.shape != tensor.shape:
            continue
        p64, q64 = tensor.to(torch.float64), counterpart.to(torch.float64)
        raw_ref_sq += float(p64.pow(2).sum())
        raw_diff_sq += float((q64 - p64).pow(2).sum())
        raw_compared += 1

    return LoraDistance(
        reference=str(reference),
        other=str(other),
        relative_delta_distance=math.sqrt(diff_sq / ref_sq),
        relative_raw_distance=math.sqrt(raw_diff_sq / raw_ref_sq) if raw_ref_sq > 0 else None,
        delta_norm_reference=math.sqrt(ref_sq),
        delta_norm_other=math.sqrt(other_sq),
        modules_compared=len(set(ref_factors) & set(other_factors)),
        modules_only_in_reference=sorted(set(ref_factors) - set(other_factors), key=_module_sort_key),
        modules_only_in_other=sorted(set(other_factors) - set(ref_factors), key=_module_sort_key),
        raw_tensors_compared=raw_compared,
        per_module=per_module,
    )


def strict_json(value: Any) -> tuple[Any, dict[str, str]]:  # noqa: ANN401 - any JSON-like value
    """``value`` with every non-finite float replaced by None, and where each one was.

    ``json.dumps`` writes NaN and Infinity bare, which is not JSON (RFC 8259) and which most parsers refuse.

    Returns:
        ``(clean, non_finite)``: the same structure with None in place of each NaN or infinity, and
        ``{JSON Pointer: "NaN" | "Infinity" | "-Infinity"}`` naming each replaced value (``/files/0/modules/3/norm_b``).
    """
    non_finite: dict[str, str] = {}

    def clean(item: Any, pointer: str) -> Any:  # noqa: ANN401
        if isinstance(item, float) and not math.isfinite(item):
            non_finite[pointer] = "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
            return None
        if isinstance(item, dict):
            return {k: clean(v, f"{pointer}/{str(k).replace('~', '~0').replace('/', '~1')}") for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v, f"{pointer}/{i}") for i, v in enumerate(item)]
        return item

    return clean(value, ""), non_finite


def module_kind(module: str) -> str:
    """``transformer_blocks.3.audio_attn1.to_q`` -> ``audio_attn1.to_q`` (the module's path inside its block)."""
    match = _BLOCK_MODULE.match(module)
    return match.group("inner") if match else module


def _module_sort_key(module: str) -> tuple[int, str]:
    match = _BLOCK_MODULE.match(module)
    return (int(match.group("block")), match.group("inner")) if match else (-1, module)
