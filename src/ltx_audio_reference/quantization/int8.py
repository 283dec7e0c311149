"""A traceable int8 runtime for frozen Linear weights: ``int8`` (W8A16) and ``int8-dynamic`` (W8A8).

Weights are int8 per output channel with a scale in the model's dtype, on optimum-quanto's grid (``scale =
amax|W| / 127`` and ``q = round(W / scale)``, both in the weight's dtype), so a checkpoint quantizes to the same
integers and scales as ``int8-quanto`` and the dequantized weights are equal bit for bit. What differs is how the
matmul runs:

- quanto's ``qbytes_mm`` is a custom op that ``torch.compile`` cannot see into; here the forward and backward are
  plain torch ops inside one ``torch.autograd.Function``, which Dynamo traces, so inductor fuses the dequantization
  and the scaling with their neighbours;
- ``int8`` (weight-only) dequantizes and multiplies in the model's dtype, as quanto does;
- ``int8-dynamic`` also quantizes each activation row (token) to int8 with its own scale and multiplies on int8
  tensor cores (``torch._int_mm``, int32 accumulation), then rescales by both scales in float32. Shapes that
  ``torch._int_mm`` refuses on CUDA (16 rows or fewer, widths not a multiple of 8) take the weight-only path;
- the backward computes only the input gradient, ``grad @ dequantize(W)`` in the model's dtype (the base is frozen;
  for ``int8-dynamic`` the activation rounding passes the gradient straight through). Only the int8 weight and its
  scale are saved for it, never a dequantized copy.

:class:`Int8Linear` subclasses ``nn.Linear`` so that peft wraps it with its ordinary LoRA layer, exactly as it wraps
quanto's ``QLinear``. Its state is plain tensors (``weight`` int8, ``weight_scale``, ``bias``), which block swap
streams like any other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ltx_audio_reference.quantization.base import QuantizationBackend, quantizable_linears

#: Largest int8 magnitude of the symmetric grid.
QMAX = 127
#: Version of the int8 format and kernels; part of the quantized-weight cache key.
FORMAT_VERSION = "1"


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel on optimum-quanto's grid.

    Args:
        weight: ``[out, in]`` floating-point weight.

    Returns:
        ``(q, scale)``: ``q`` int8 ``[out, in]`` and ``scale`` ``[out, 1]`` in ``weight``'s dtype, with
        ``q * scale`` the dequantized weight. All-zero rows get scale 0 and q 0 (quanto divides by zero there).
    """
    scale = weight.abs().amax(dim=1, keepdim=True) / QMAX
    divisor = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(weight / divisor).clamp(-QMAX - 1, QMAX).to(torch.int8)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q * scale`` in ``scale``'s dtype (rounded once, as quanto's ``qbytes_mm`` does)."""
    return q.to(scale.dtype) * scale


def int_mm_supported(rows: int, inner: int, cols: int, device: torch.device) -> bool:
    """Whether ``torch._int_mm`` takes a ``[rows, inner] x [inner, cols]`` product on ``device``.

    CUDA's int8 GEMM needs more than 16 rows and both widths a multiple of 8; the CPU kernel takes any shape.
    """
    if device.type != "cuda":
        return True
    return rows > 16 and inner % 8 == 0 and cols % 8 == 0


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 of a 2-D activation: ``(q [rows, in] int8, scale [rows, 1] float32)``."""
    x32 = x.float()
    scale = x32.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / QMAX
    return torch.round(x32 / scale).clamp(-QMAX, QMAX).to(torch.int8), scale


class _Int8Matmul(torch.autograd.Function):
    """``x @ dequantize(q, scale).T`` with an input-only backward that saves nothing but ``q`` and ``scale``."""

    @staticmethod
    def forward(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, dynamic: bool) -> torch.Tensor:
        dtype = scale.dtype
        rows = x.reshape(-1, x.shape[-1]).to(dtype)
        out_features = q.shape[0]
        if dynamic and int_mm_supported(rows.shape[0], rows.shape[1], out_features, x.device):
            xq, x_scale = quantize_rows(rows)
            acc = torch._int_mm(xq, q.t())
            y = (acc.float() * x_scale * scale.float().t()).to(dtype)
        else:
            y = torch.mm(rows, dequantize_weight(q, scale).t())
        return y.reshape(*x.shape[:-1], out_features)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ARG004
        x, q, scale, _ = inputs
        ctx.save_for_backward(q, scale)
        ctx.input_dtype = x.dtype

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        q, scale = ctx.saved_tensors
        weight = dequantize_weight(q, scale)
        grad_x = torch.mm(grad.reshape(-1, grad.shape[-1]).to(weight.dtype), weight)
        return grad_x.reshape(*grad.shape[:-1], q.shape[1]).to(ctx.input_dtype), None, None, None


def int8_linear(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    dynamic: bool = False,
) -> torch.Tensor:
    """``F.linear`` with an int8 weight (see the module docstring); the result is in ``scale``'s dtype."""
    y = _Int8Matmul.apply(x, q, scale, dynamic)
    return y if bias is None else y + bias.to(y.dtype)


class Int8Linear(nn.Linear):
    """A frozen ``nn.Linear`` whose weight is int8 per output channel (see the module docstring).

    Args:
        in_features: Input width.
        out_features: Output width.
        bias: Whether the layer has a bias.
        dynamic: Quantize activations per token and multiply on int8 tensor cores (``int8-dynamic``).
        device: Where the tensors live.
        dtype: The compute dtype: the scale's, the bias's and the output's.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dynamic: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate a float weight
        self.in_features = in_features
        self.out_features = out_features
        self.dynamic = dynamic
        self.weight = nn.Parameter(
            torch.zeros(out_features, in_features, dtype=torch.int8, device=device), requires_grad=False
        )
        self.register_buffer("weight_scale", torch.zeros(out_features, 1, dtype=dtype, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, *, dynamic: bool = False) -> Int8Linear:
        """Quantize ``linear`` (on its device, in its dtype) into a new frozen layer."""
        weight = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            dynamic=dynamic,
            device="meta",
            dtype=weight.dtype,
        )
        q, scale = quantize_weight(weight)
        layer.weight = nn.Parameter(q, requires_grad=False)
        layer.weight_scale = scale
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return layer

    def dequantize(self) -> torch.Tensor:
        """The dequantized weight, ``[out, in]`` in the compute dtype."""
        return dequantize_weight(self.weight, self.weight_scale)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Linear's argument name
        return int8_linear(input, self.weight, self.weight_scale, self.bias, self.dynamic)

    def extra_repr(self) -> str:
        mode = "W8A8 dynamic" if self.dynamic else "W8A16"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, {mode}"


class Int8Backend(QuantizationBackend):
    """``int8`` (weight-only) or ``int8-dynamic`` (W8A8): :class:`Int8Linear` for every eligible Linear."""

    traceable = True

    def __init__(self, dynamic: bool) -> None:
        self.dynamic = dynamic
        self.name = "int8-dynamic" if dynamic else "int8"
        self.summary = (
            "int8 weights and per-token int8 activations on int8 tensor cores (W8A8), traceable by torch.compile"
            if dynamic
            else "int8 weights, bf16 matmul (W8A16) on quanto's grid, traceable by torch.compile"
        )

    def version(self) -> str:
        return f"ltx-audio-reference-int8/{FORMAT_VERSION}"

    def problem(self, device: torch.device | str | None = None) -> str | None:
        if not self.dynamic or device is None:
            return None
        device = torch.device(device)
        if device.type == "cuda" and torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            if (major, minor) < (7, 5):
                return (
                    f"int8-dynamic needs int8 tensor cores (compute capability 7.5 or newer; this GPU has "
                    f"{major}.{minor}). Use quantization: int8"
                )
        return None

    def quantize_block(self, block: nn.Module) -> int:
        count = 0
        for name, linear in list(quantizable_linears(block)):
            _replace(block, name, Int8Linear.from_linear(linear, dynamic=self.dynamic))
            count += 1
        return count

    def save_quantized(self, part: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
        """The part's state dict (int8 weights, scales, everything else as is) and each Int8Linear's mode."""
        layout = {n: {"dynamic": m.dynamic} for n, m in part.named_modules() if isinstance(m, Int8Linear)}
        return dict(part.state_dict()), layout

    def load_quantized(
        self,
        part: nn.Module,
        tensors: dict[str, torch.Tensor],
        layout: dict[str, dict[str, Any]],
    ) -> None:
        """Swap each listed ``nn.Linear`` of the meta part for an :class:`Int8Linear`, then assign the tensors."""
        for name, settings in layout.items():
            linear = part.get_submodule(name)
            layer = Int8Linear(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                dynamic=bool(settings["dynamic"]),
                device="meta",
                dtype=tensors[f"{name}.weight_scale"].dtype,
            )
            _replace(part, name, layer)
        part.load_state_dict(tensors, strict=True, assign=True)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where ``root.get_submodule(name)`` is."""
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, module)


__all__ = [
    "FORMAT_VERSION",
    "Int8Backend",
    "Int8Linear",
    "dequantize_weight",
    "int8_linear",
    "int_mm_supported",
    "quantize_rows",
    "quantize_weight",
]
