"""Tier 1: the quantization package on tiny real LTX models: the registry, ``int8`` on quanto's grid, its traceable
runtime and input-only backward, ``int8-dynamic``, peft LoRA on top, block swap of its tensors."""

from __future__ import annotations

import copy
import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
import torch
from torch import nn

from ltx_audio_reference import hookspecs
from ltx_audio_reference.blockswap.config import spread_blocks
from ltx_audio_reference.blockswap.engine import BlockSwapEngine
from ltx_audio_reference.errors import ConfigurationError, DuplicateNameError, UnknownNameError
from ltx_audio_reference.hookspecs import hookimpl
from ltx_audio_reference.plugins import build_plugin_manager, collect
from ltx_audio_reference.quantization import (
    SKIP_ROOT_MODULES,
    Int8Linear,
    QuantizationBackend,
    get_backend,
    quantizable_linears,
    quantization_report,
    quantize_model,
    registered_backends,
)
from ltx_audio_reference.quantization import plugin as builtin
from ltx_audio_reference.quantization.int8 import dequantize_weight, int8_linear, int_mm_supported, quantize_weight
from ltx_audio_reference.quantization.model import quantize_parts
from ltx_audio_reference.registry import QuantizationRegistry
from ltx_audio_reference.testing import swap_workload as workload

HAS_QUANTO = importlib.util.find_spec("optimum.quanto") is not None
needs_quanto = pytest.mark.skipif(not HAS_QUANTO, reason="needs optimum-quanto")
NUM_LAYERS = 3


@functools.cache
def _bf16_model() -> nn.Module:
    return workload.build_model(NUM_LAYERS, "tiny", seed=0, dtype=torch.bfloat16)


def _model(backend: str | None = None) -> nn.Module:
    model = copy.deepcopy(_bf16_model())
    if backend is not None:
        quantize_model(model, backend, device="cpu", progress=False)
    return model


def _quantized_names(model: nn.Module, kind: type) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, kind)]


# --------------------------------------------------------------------------------------------------------------------
# Registry and plugin host
# --------------------------------------------------------------------------------------------------------------------


def test_the_built_in_backends_load_from_their_entry_point_in_order() -> None:
    assert registered_backends().names() == [
        "int8-quanto",
        "int4-quanto",
        "int2-quanto",
        "fp8-quanto",
        "fp8uz-quanto",
        "int8",
        "int8-dynamic",
    ]
    assert get_backend("int8").plugin == builtin.PLUGIN_NAME
    assert get_backend("int8").traceable
    assert not get_backend("int8-quanto").traceable


def test_unknown_names_list_what_exists_and_duplicates_name_both_plugins() -> None:
    with pytest.raises(UnknownNameError, match=r"Unknown quantization 'int9'\. Available: int8-quanto, .*int8-dynamic"):
        get_backend("int9")
    registry = QuantizationRegistry()
    registry.current_plugin = "first"
    builtin.register_quantization_backends(registry)
    registry.current_plugin = "second"
    with pytest.raises(DuplicateNameError, match="'int8' is registered twice: by 'first' and by 'second'"):
        registry(get_backend("int8"))
    with pytest.raises(ValueError, match="lowercase letters, digits and dashes"):
        registry(type("Bad", (), {"name": "Int8 Fast"})())


class HalfBackend(QuantizationBackend):
    """A third-party backend: every eligible Linear's weight rounded to float16 and back (a stand-in for a format)."""

    name = "half-rounded"
    summary = "weights rounded through float16"

    def version(self) -> str:
        return "half/1"

    def quantize_block(self, block: nn.Module) -> int:
        count = 0
        for _, linear in quantizable_linears(block):
            linear.weight.data = linear.weight.data.half().to(linear.weight.dtype)
            count += 1
        return count


class HalfPlugin:
    @hookimpl
    def register_quantization_backends(self, register: QuantizationRegistry) -> None:
        register(HalfBackend())


def test_a_plugin_adds_a_backend_through_the_same_hook_and_quantize_model_uses_it() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="quantization")
    pm.register(HalfPlugin(), name="half")
    backends = collect(QuantizationRegistry, pm)
    assert backends.names()[-1] == "half-rounded"
    assert backends.get("half-rounded").plugin == "half"
    model = _model()
    quantize_model(model, "half-rounded", device="cpu", backends=backends, progress=False)
    report = quantization_report(model)
    assert report is not None
    assert (report.backend, report.blocks) == ("half-rounded", NUM_LAYERS)
    parts = quantize_parts(_bf16_model())
    assert [n for n, _ in parts[:NUM_LAYERS]] == [f"transformer_blocks.{i}" for i in range(NUM_LAYERS)]
    assert not {n for n, _ in parts} & set(SKIP_ROOT_MODULES)
    assert report.layers == sum(len(list(quantizable_linears(part))) for _, part in parts) > 0


def test_quantize_model_refuses_activation_quantization_and_a_backend_that_cannot_run() -> None:
    class Unavailable(HalfBackend):
        name = "unavailable"

        def problem(self, device: object = None) -> str | None:  # noqa: ARG002
            return "unavailable needs a part this machine lacks (pip install part)"

    registry = QuantizationRegistry()
    registry(Unavailable())
    with pytest.raises(ConfigurationError, match="pip install part"):
        quantize_model(_model(), "unavailable", backends=registry, progress=False)
    with pytest.raises(ConfigurationError, match="int8-dynamic for W8A8"):
        quantize_model(_model(), "int8", quantize_activations=True, progress=False)


def test_a_quanto_config_without_optimum_quanto_is_refused_with_the_install_line() -> None:
    code = (
        "import sys; sys.modules['optimum'] = None\n"  # optimum-quanto hidden: importing it fails as if absent
        "from ltx_audio_reference.quantization import get_backend\n"
        "print(get_backend('int8-quanto').problem('cpu')); print(get_backend('int8').problem('cpu'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'optimum-quanto>=0.2.6'" in out
    assert "or use quantization: int8" in out
    assert out.strip().endswith("None")  # int8 needs nothing beyond torch


# --------------------------------------------------------------------------------------------------------------------
# int8 on quanto's grid
# --------------------------------------------------------------------------------------------------------------------


@needs_quanto
def test_int8_quantizes_the_same_layers_onto_quantos_integers_and_scales() -> None:
    from optimum.quanto import QLinear  # noqa: PLC0415

    theirs, ours = _model("int8-quanto"), _model("int8")
    names = _quantized_names(ours, Int8Linear)
    assert names == _quantized_names(theirs, QLinear)
    assert any(n.startswith("transformer_blocks.") for n in names)
    assert "patchify_proj" not in names
    assert "audio_proj_out" not in names
    modules = dict(theirs.named_modules())
    for name in names:
        mine, weight = ours.get_submodule(name), modules[name].weight
        assert torch.equal(mine.weight, weight._data), name
        assert torch.equal(mine.weight_scale, weight._scale), name
        assert torch.equal(mine.dequantize(), weight.dequantize()), name


@needs_quanto
def test_int8_forward_matches_int8_quanto_within_bf16_rounding() -> None:
    theirs, ours = _model("int8-quanto"), _model("int8")
    video, audio, *_ = workload.make_batch("tiny", workload.TINY_WORKLOAD, dtype=torch.bfloat16, seed=3)
    with torch.no_grad():
        expected = theirs(video=video, audio=audio, perturbations=None)
        actual = ours(video=video, audio=audio, perturbations=None)
    for a, e in zip(actual, expected, strict=True):
        # The same dequantized weights through other matmul calls: the outputs differ by bf16 rounding alone.
        assert float((a.float() - e.float()).norm() / e.float().norm()) < 2**-7


def test_quantize_weight_rounds_to_the_nearest_step_and_keeps_zero_rows_finite() -> None:
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], dtype=torch.bfloat16)
    q, scale = quantize_weight(weight)
    assert q.dtype == torch.int8
    assert scale.dtype == torch.bfloat16
    assert scale.shape == (3, 1)
    assert q[0].tolist() == [64, -127, 32]
    assert q[2].tolist() == [126, 63, -32]  # the bf16 scale 3/127 rounds up: the row's peak lands on 126, as in quanto
    assert q[1].tolist() == [0, 0, 0]
    assert scale[1].item() == 0.0
    error = (dequantize_weight(q, scale).float() - weight.float()).abs()
    assert bool((error <= scale.float() / 2 + weight.float().abs() * 2**-8).all())  # half a step, plus bf16 rounding


# --------------------------------------------------------------------------------------------------------------------
# The runtime: traceable, input-only backward, W8A8
# --------------------------------------------------------------------------------------------------------------------


def _layer(dynamic: bool = False, out_features: int = 24) -> Int8Linear:
    torch.manual_seed(0)
    return Int8Linear.from_linear(nn.Linear(32, out_features).to(torch.bfloat16), dynamic=dynamic)


def test_the_backward_is_the_input_gradient_only_and_saves_nothing_but_int8_and_scales() -> None:
    layer = _layer()
    x = torch.randn(2, 20, 32, dtype=torch.bfloat16, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert {t.dtype for t in saved} <= {torch.int8, torch.bfloat16}
    assert all(t.data_ptr() in (layer.weight.data_ptr(), layer.weight_scale.data_ptr()) for t in saved)
    grad = torch.randn_like(y)
    y.backward(grad)
    assert torch.equal(x.grad, (grad.reshape(-1, 24) @ layer.dequantize()).reshape(2, 20, 32))
    assert layer.weight.grad is None
    assert layer.bias.grad is None


def test_int8_dynamic_multiplies_in_int8_and_passes_the_gradient_straight_through() -> None:
    weight_only, dynamic = _layer(), _layer(dynamic=True)
    x = torch.randn(40, 32, dtype=torch.bfloat16)
    exact = x.float() @ weight_only.dequantize().float().t() + weight_only.bias.float()
    a, b = weight_only(x), dynamic(x)
    assert not torch.equal(a, b)  # really another kernel: activations are rounded to int8
    assert float((b.float() - exact).norm() / exact.norm()) < 0.02
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad = torch.randn(40, 24, dtype=torch.bfloat16)
    weight_only(xa).backward(grad)
    dynamic(xb).backward(grad)
    assert torch.equal(xa.grad, xb.grad)


def test_int_mm_shapes_cuda_refuses_fall_back_to_the_weight_only_path() -> None:
    cuda = torch.device("cuda")
    assert int_mm_supported(17, 32, 24, cuda)
    assert not int_mm_supported(16, 32, 24, cuda)  # 16 rows or fewer
    assert not int_mm_supported(64, 36, 24, cuda)
    assert not int_mm_supported(64, 32, 2, cuda)
    assert int_mm_supported(3, 36, 2, torch.device("cpu"))


def _graph_ops(fn: object, *args: torch.Tensor) -> set[str]:
    """The ops of the forward and backward graphs Dynamo and AOT autograd capture (no graph break allowed)."""
    from functorch.compile import make_boxed_func  # noqa: PLC0415
    from torch._dynamo.backends.common import aot_autograd  # noqa: PLC0415

    ops: set[str] = set()

    def record(graph: torch.fx.GraphModule, _: object) -> object:
        ops.update(str(n.target) for n in graph.graph.nodes if n.op == "call_function")
        return make_boxed_func(graph.forward)

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    compiled(*args).float().sum().backward()
    return ops


@pytest.mark.parametrize("dynamic", [False, True], ids=["int8", "int8-dynamic"])
def test_the_compiler_sees_every_op_of_the_int8_forward_and_backward(dynamic: bool) -> None:
    layer = _layer(dynamic)
    x = torch.randn(40, 32, dtype=torch.bfloat16, requires_grad=True)
    ops = _graph_ops(lambda t: int8_linear(t, layer.weight, layer.weight_scale, layer.bias, dynamic), x)
    assert "aten.mm.default" in ops  # weight-only forward and every backward: a plain matmul inductor can fuse around
    assert ("aten._int_mm.default" in ops) == dynamic
    assert not any("quanto" in op for op in ops)


@needs_quanto
def test_quantos_matmul_is_one_opaque_op_to_the_compiler() -> None:
    from optimum.quanto import freeze, qint8, quantize  # noqa: PLC0415

    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(32, 24).to(torch.bfloat16))
    quantize(layer, weights=qint8)
    freeze(layer)
    x = torch.randn(40, 32, dtype=torch.bfloat16, requires_grad=True)
    ops = _graph_ops(layer, x)
    assert any("qbytes_mm" in op for op in ops), ops


def test_to_float32_casts_the_scales_and_bias_but_never_the_int8_weight() -> None:
    layer = _layer().to(torch.float32)
    assert layer.weight.dtype == torch.int8
    assert layer.weight_scale.dtype == torch.float32
    assert layer.bias.dtype == torch.float32
    assert list(layer.state_dict()) == ["weight", "bias", "weight_scale"]
    assert "W8A16" in repr(layer)
    assert "W8A8" in repr(_layer(dynamic=True))


# --------------------------------------------------------------------------------------------------------------------
# LoRA on top, block swap
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["int8", "int8-dynamic"])
def test_peft_lora_wraps_int8_layers_and_only_the_adapters_train(backend: str) -> None:
    model = _model(backend)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora_" in n for n in trainable)
    assert {p.dtype for n, p in peft_model.named_parameters() if "lora_" in n} == {torch.float32}
    wrapped = [m for m in peft_model.modules() if hasattr(m, "base_layer")]
    assert wrapped
    assert all(isinstance(m.base_layer, Int8Linear) for m in wrapped)
    base_before = {n: t.clone() for n, t in peft_model.state_dict().items() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    video, audio, video_target, audio_target = workload.make_batch("tiny", dtype=torch.bfloat16, seed=1)
    for _ in range(2):
        video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
        workload.loss_fn(video_pred, audio_pred, video_target, audio_target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(torch.equal(t, peft_model.state_dict()[n]) for n, t in base_before.items())
    assert any(not torch.equal(p, lora_before[n]) for n, p in peft_model.named_parameters() if p.requires_grad)


def _train_lora(peft_model: nn.Module, steps: int = 2) -> list[torch.Tensor]:
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    video, audio, video_target, audio_target = workload.make_batch("tiny", dtype=torch.bfloat16, seed=2)
    losses = []
    for _ in range(steps):
        video_pred, audio_pred = peft_model(video=video, audio=audio, perturbations=None)
        loss = workload.loss_fn(video_pred, audio_pred, video_target, audio_target)
        loss.backward()
        losses.append(loss.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses


def _lora_model(backend: str) -> nn.Module:
    model = _model(backend)
    model.requires_grad_(False)
    peft_model = workload.add_audio_lora(model, rank=4, seed=0)
    model.set_gradient_checkpointing(True)
    return peft_model


@pytest.mark.parametrize("backend", ["int8", "int8-dynamic"])
def test_block_swap_streams_int8_layers_as_plain_tensors_with_the_same_bits(backend: str) -> None:
    resident = _train_lora(_lora_model(backend))
    peft_model = _lora_model(backend)
    engine = BlockSwapEngine(peft_model, spread_blocks(NUM_LAYERS, 2), device="cpu", prefetch=1)
    engine.place(peft_model)
    assert all(entry.kind != "subclass" for block in engine._blocks.values() for entry in block.entries)
    swapped = _train_lora(peft_model)
    assert all(torch.equal(a, b) for a, b in zip(resident, swapped, strict=True))
    assert engine.stats.loads > 0


def test_the_layout_keeps_every_backend_in_its_own_module() -> None:
    package = Path(builtin.__file__).parent
    assert sorted(p.name for p in package.glob("*.py")) == [
        "__init__.py",
        "base.py",
        "cache.py",
        "int8.py",
        "memory.py",
        "model.py",
        "plugin.py",
        "quanto.py",
        "stream.py",
        "tensorfile.py",
    ]
    assert "quantization" in {ep.name for ep in __import__("importlib").metadata.entry_points(group="ltx_trainer")}
    assert build_plugin_manager().get_plugin("quantization") is builtin
