"""The LoRA tensors of a peft model, as the trainer exports them, also when FSDP wraps the transformer blocks.

peft (0.21) finds a model's LoRA tensors from its module names, and strips FSDP's ``_fsdp_wrapped_module.`` only at
the start of a name. FSDP's transformer-block wrapping (``configs/accelerate/fsdp.yaml``, and upstream's FSDP config)
puts it in the middle (``transformer_blocks.0._fsdp_wrapped_module.audio_attn1...``), while the gathered state dict
has no wrapper names at all. peft then matches nothing, and the stock trainer writes a LoRA file with no tensors,
measured on an H100 with ltx-trainer 1.2.0. :func:`adapter_state_dict` completes peft's answer by parameter name and
refuses to return fewer tensors than the model trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

FSDP_WRAPPER = "_fsdp_wrapped_module."


def lora_parameter_names(model: torch.nn.Module, adapter_name: str = "default") -> list[str]:
    """State-dict names of the adapter's LoRA parameters, with FSDP's wrapper names removed.

    Args:
        model: A peft model (the unwrapped ``PeftModel``; under FSDP, its blocks may be FSDP units).
        adapter_name: The adapter.

    Returns:
        Names like ``base_model.model.transformer_blocks.0.audio_attn1.to_q.lora_A.default.weight``.
    """
    return [
        name.replace(FSDP_WRAPPER, "")
        for name, _ in model.named_parameters()
        if ".lora_" in name and f".{adapter_name}." in name
    ]


def adapter_state_dict(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor] | None = None,
    adapter_name: str = "default",
    *,
    peft_state_dict: Callable[..., dict[str, torch.Tensor]] | None = None,
    **kwargs: Any,  # noqa: ANN401 - passed through to peft
) -> dict[str, torch.Tensor]:
    """peft's ``get_peft_model_state_dict``, completed where peft misses LoRA tensors of FSDP-wrapped blocks.

    Args:
        model: The unwrapped peft model.
        state_dict: The model's full state dict (what ``accelerator.get_state_dict`` gathers under FSDP), or None to
            read the model's own.
        adapter_name: The adapter.
        peft_state_dict: The function to complete (peft's ``get_peft_model_state_dict`` by default).
        **kwargs: Passed to ``peft_state_dict``.

    Returns:
        ``{name without the adapter name: tensor}`` for every LoRA tensor of the adapter, as peft names them, without
        FSDP's wrapper names.

    Raises:
        ValueError: If the state dict lacks some of the model's LoRA tensors: a LoRA file without them would load
            as "no change" in ComfyUI and ltx-pipelines.
    """
    if peft_state_dict is None:
        from peft import get_peft_model_state_dict as peft_state_dict  # noqa: PLC0415

    result = peft_state_dict(model, state_dict=state_dict, adapter_name=adapter_name, **kwargs)
    # Exported names never carry wrapper names (an FSDP model's own state dict can, and ComfyUI would not map them).
    result = {name.replace(FSDP_WRAPPER, ""): tensor for name, tensor in result.items()}
    expected = lora_parameter_names(model, adapter_name)
    if len(result) >= len(expected):
        return result
    source = state_dict
    if source is None:
        source = {name.replace(FSDP_WRAPPER, ""): tensor for name, tensor in model.state_dict().items()}
    missing = [name for name in expected if name not in source]
    if missing:
        raise ValueError(
            f"The state dict holds {len(expected) - len(missing)} of the model's {len(expected)} LoRA tensors "
            f"(missing e.g. {missing[0]}); refusing to export an incomplete LoRA"
        )
    logger.info(
        "peft found %d of the model's %d LoRA tensors (FSDP-wrapped blocks); exporting all of them by name",
        len(result),
        len(expected),
    )
    return {name.replace(f".{adapter_name}.", ".", 1): source[name] for name in expected}
