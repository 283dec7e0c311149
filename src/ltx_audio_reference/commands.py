"""The ``ltx-trainer audio-reference ...`` command group, contributed through the ``register_commands`` hook.

Each feature module exposes ``register(app: typer.Typer) -> None`` and keeps its heavy imports inside the command
functions, so building the CLI stays fast.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES: tuple[str, ...] = (
    "ltx_audio_reference.evaluation.lora_inspect",
    "ltx_audio_reference.evaluation.sweep",
    "ltx_audio_reference.data.cli",
)


def build_audio_reference_app() -> typer.Typer:
    """The ``audio-reference`` sub-application with every feature module's commands."""
    app = typer.Typer(
        name="audio-reference",
        help="Audio-reference IC-LoRA tools: datasets, reference latents, evaluation and inspection.",
        no_args_is_help=True,
    )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)
    return app
