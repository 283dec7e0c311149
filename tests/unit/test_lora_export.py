"""Tier 1: the LoRA export finds every tensor, also when the transformer blocks sit inside FSDP units.

FSDP itself needs a GPU process group (``tests/gpu/test_fsdp_cuda.py`` runs it). Here the blocks are placed under a
module attribute named as FSDP names it, ``_fsdp_wrapped_module``, which gives the unwrapped peft model the same
module names FSDP's transformer-block wrapping gives it, and the state dict is the one FSDP gathers: the same tensors
without the wrapper names.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

from ltx_audio_reference.reliability import export as lora_export
from ltx_audio_reference.strategies.audio_reference.lora_targets import AUDIO_MODULES
from ltx_audio_reference.testing.tiny_model import build_tiny_model


class _Unit(torch.nn.Module):
    """Holds a block the way an FSDP unit does (its attribute name is the infix FSDP puts in parameter names)."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self._fsdp_wrapped_module = block

    def forward(self, *args: object, **kwargs: object) -> object:
        return self._fsdp_wrapped_module(*args, **kwargs)


def _peft_model(wrapped: bool) -> torch.nn.Module:
    model = build_tiny_model(num_layers=2, seed=0)
    torch.manual_seed(0)  # peft's lora_A init and the lora_B values below
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=list(AUDIO_MODULES)))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)  # distinguishable values
    if wrapped:
        blocks = peft_model.base_model.model.transformer_blocks
        for i in range(len(blocks)):
            blocks[i] = _Unit(blocks[i])
    return peft_model


def _gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k.replace(lora_export.FSDP_WRAPPER, ""): v for k, v in model.state_dict().items()}


def test_plain_models_get_exactly_peft_s_answer() -> None:
    model = _peft_model(wrapped=False)
    ours = lora_export.adapter_state_dict(model)
    theirs = get_peft_model_state_dict(model)
    assert ours.keys() == theirs.keys()
    assert len(ours) == 2 * 10 * 2
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_fsdp_wrapped_blocks_export_every_lora_tensor_under_the_plain_names() -> None:
    plain = lora_export.adapter_state_dict(_peft_model(wrapped=False))
    model = _peft_model(wrapped=True)
    assert any(lora_export.FSDP_WRAPPER in name for name, _ in model.named_parameters())
    state_dict = _gathered(model)

    peft_count = len(get_peft_model_state_dict(model, state_dict=state_dict))
    ours = lora_export.adapter_state_dict(model, state_dict=state_dict)
    assert peft_count <= len(ours)  # peft 0.21 finds 0 here; the stock trainer then writes an empty LoRA file
    assert ours.keys() == plain.keys()
    assert all(torch.equal(ours[k], plain[k]) for k in ours)  # same seed, same values, same names
    assert lora_export.adapter_state_dict(model).keys() == plain.keys()  # the model's own state dict too


def test_a_state_dict_missing_lora_tensors_is_refused() -> None:
    model = _peft_model(wrapped=True)
    state_dict = {k: v for k, v in _gathered(model).items() if "transformer_blocks.1." not in k}
    with pytest.raises(ValueError, match=r"holds 20 of the model's 40 LoRA tensors .* refusing to export"):
        lora_export.adapter_state_dict(model, state_dict=state_dict)
