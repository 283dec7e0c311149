"""The ``ltx-trainer`` command line: train, strategies, check, demo, the ``audio-reference`` group, and commands that
plugins contribute.

Also runs as a module, which is how ``accelerate launch`` starts it::

    accelerate launch --config_file ddp.yaml -m ltx_audio_reference.cli train my.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from ltx_audio_reference import __version__
from ltx_audio_reference.errors import ConfigurationError, NonFiniteError
from ltx_audio_reference.plugins import collect_strategies, get_plugin_manager
from ltx_audio_reference.registry import STOCK_STRATEGIES

logger = logging.getLogger(__name__)
console = Console()

_HELP = "LTX-2 training with plugins: the stock ltx-trainer runner plus registered strategies and hooks."


#: bitsandbytes (an ltx-trainer dependency) warns on every import on CPUs with AVX512-BF16 that its 4-bit CPU kernel
#: could not be fetched from the Hugging Face hub. Training never uses bitsandbytes' 4-bit CPU matmul, so the warning
#: only alarms users; this drops that one message and nothing else from bitsandbytes (``-v`` keeps it).
_BNB_CPU_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_CPU_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


#: Two more lines every command printed, which only alarm or puzzle users (``-v`` keeps both):
#: - transformers warns that Gemma's config holds ``full_attention``/``sliding_attention`` rope keys it does not know,
#:   on every load of the text encoder (harmless: Gemma 3 and 4 configs hold them);
#: - ltx-core logs the attention backends of every transformer it builds, the meta models of the estimates included,
#:   naming CUDA kernels on a CPU.
_NOISE = (
    ("transformers.modeling_rope_utils", "Unrecognized keys in `rope_parameters`"),
    ("ltx_core.model.transformer.model", "Building transformer with attention backends"),
)


def _drop_bnb_cpu_kernel_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_BNB_CPU_KERNEL_MESSAGE)


def _drop_noise(record: logging.LogRecord) -> bool:
    return not any(record.name == name and str(record.msg).startswith(text) for name, text in _NOISE)


def _quiet_third_party_logs() -> None:
    bnb_logger = logging.getLogger(_BNB_CPU_KERNEL_LOGGER)
    if _drop_bnb_cpu_kernel_warning not in bnb_logger.filters:
        bnb_logger.addFilter(_drop_bnb_cpu_kernel_warning)
    for name, _ in _NOISE:
        if _drop_noise not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_drop_noise)


def _setup_logging(verbose: bool) -> None:
    package_logger = logging.getLogger("ltx_audio_reference")
    if not any(isinstance(h, RichHandler) for h in package_logger.handlers):
        package_logger.addHandler(RichHandler(show_time=False, show_path=False, markup=False))
        package_logger.propagate = False
    package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        _quiet_third_party_logs()


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a dict.

    Raises:
        typer.BadParameter: If the file is missing, is not YAML, or is not a mapping.
    """
    from ltx_audio_reference.bridge.config import read_config_file  # noqa: PLC0415

    try:
        return read_config_file(path)
    except ConfigurationError as e:
        raise typer.BadParameter(str(e), param_hint="CONFIG") from e


def apply_strategy_override(data: dict[str, Any], strategy: str | None, available: list[str]) -> dict[str, Any]:
    """Apply ``--strategy NAME`` to a raw config dict.

    The YAML's own section is kept when it names the same strategy. Without a section the strategy's defaults are
    used. When the YAML names another strategy, the flag wins with a warning and that section is dropped, since its
    fields belong to the other strategy.

    Args:
        data: The raw YAML config.
        strategy: The ``--strategy`` value, or None.
        available: Every strategy name that can be selected.

    Returns:
        A new dict; ``data`` is not modified.

    Raises:
        typer.BadParameter: If ``strategy`` is not registered; the message lists the available names.
    """
    if strategy is None:
        return data
    if strategy not in available:
        raise typer.BadParameter(
            f"Unknown strategy {strategy!r}. Available: {', '.join(available)}", param_hint="--strategy"
        )
    result = dict(data)
    section = data.get("training_strategy")
    yaml_name = section.get("name", "text_to_video") if isinstance(section, dict) else None
    if yaml_name == strategy:
        return result
    if yaml_name is not None:
        logger.warning(
            "--strategy %s overrides training_strategy.name %r from the YAML; that section's fields are dropped "
            "and %s's defaults are used",
            strategy,
            yaml_name,
            strategy,
        )
    result["training_strategy"] = {"name": strategy}
    return result


ConfigArg = Annotated[Path, typer.Argument(help="Path to the YAML training config.")]
StrategyOpt = Annotated[
    str | None,
    typer.Option("--strategy", "-s", help="Training strategy to use; overrides training_strategy.name in the YAML."),
]


def _print_lines(text: str) -> None:
    for line in text.splitlines() or [""]:
        console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)


def _fail(error: BaseException, verbose: bool) -> typer.Exit:
    """Print an error as one clear message (its traceback only with ``-v``); returns the exit to raise."""
    if isinstance(error, ConfigurationError | NonFiniteError):
        _print_lines(str(error))  # written for the user: what is wrong and how to fix it
        return typer.Exit(1)
    if verbose:
        logger.exception("Training failed")
    else:
        # ltx-trainer's own ValueErrors, the OSErrors of a full disk or a vanished folder, and any other exception
        # (a truncated model file's SafetensorError, fp16 on a CPU): the message is the news.
        _print_lines(f"Training failed: {type(error).__name__}: {error}")
        console.print("Run `ltx-trainer -v train ...` for the traceback.", highlight=False)
    return typer.Exit(1)


def train_command(
    ctx: typer.Context,
    config: ConfigArg,
    strategy: StrategyOpt = None,
    disable_progress_bars: Annotated[
        bool,
        typer.Option("--disable-progress-bars", help="Log status lines instead of progress bars (multi-process runs)."),
    ] = False,
) -> None:
    """Train with the stock ltx-trainer runner and every registered plugin."""
    from pydantic import ValidationError  # noqa: PLC0415

    from ltx_audio_reference import bridge  # noqa: PLC0415
    from ltx_audio_reference.cli.check import field_names, validation_lines  # noqa: PLC0415
    from ltx_audio_reference.cli.interrupt import (  # noqa: PLC0415
        TrainingStopped,
        checkpoint_lines,
        stop_signals,
        stopped_message,
        storage_message,
    )
    from ltx_audio_reference.reliability.checkpoints import safetensors_problem  # noqa: PLC0415
    from ltx_audio_reference.reliability.files import as_storage_error  # noqa: PLC0415

    verbose = bool((ctx.obj or {}).get("verbose"))
    try:
        installation = bridge.install()
    except ModuleNotFoundError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    from ltx_trainer.config import LtxTrainerConfig  # noqa: PLC0415
    from ltx_trainer.trainer import LtxvTrainer  # noqa: PLC0415

    data = apply_strategy_override(load_yaml(config), strategy, installation.strategies.available())
    try:
        trainer_config = LtxTrainerConfig(**data)
    except ValidationError as e:
        for line in validation_lines(e, config_dir=config.parent, known=field_names(LtxTrainerConfig)):
            console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from e
    with stop_signals():
        try:
            trainer = LtxvTrainer(trainer_config)
            saved_path, stats = trainer.train(disable_progress_bars=disable_progress_bars)
        except TrainingStopped as e:
            if bridge.is_global_main_process():
                for line in stopped_message(e, trainer_config.output_dir, config):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from e
        except Exception as e:  # KeyboardInterrupt and SystemExit are not Exceptions: they pass
            if (storage := as_storage_error(e)) is not None and not verbose:
                _print_lines("\n".join(storage_message(storage, trainer_config.output_dir, config)))
                raise typer.Exit(1) from e
            failure = _fail(e, verbose)
            # Beyond ltx-trainer's own ValueErrors and our messages (SafetensorError, KeyError, torch's RuntimeError):
            # training may have run, so say where its last good checkpoint is.
            if not isinstance(e, ValueError | OSError | NonFiniteError) and bridge.is_global_main_process():
                for line in checkpoint_lines(trainer_config.output_dir, config):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
            raise failure from e
    if saved_path is not None:
        # "Saved" only for a file that passes the check a resume makes (complete header and size).
        if (problem := safetensors_problem(Path(saved_path))) is not None:
            _print_lines(f"The final checkpoint {saved_path} is incomplete ({problem}); it was not saved correctly.")
            raise typer.Exit(1)
        logger.info("Saved %s (%.2f steps/s)", saved_path, stats.steps_per_second)


def strategies_command() -> None:
    """List every training strategy: the stock ones and those registered by plugins."""
    registry = collect_strategies()
    table = Table(title="Training strategies")
    table.add_column("name")
    table.add_column("from")
    table.add_column("config")
    for name in STOCK_STRATEGIES:
        table.add_row(name, "ltx-trainer (stock)", "")
    for entry in registry:
        ref = entry.config_ref if isinstance(entry.config_ref, str) else entry.config_ref.__qualname__
        table.add_row(entry.name, f"plugin {entry.plugin}", ref)
    console.print(table)


def quantization_command() -> None:
    """List the values of acceleration.quantization: every registered backend, and whether it can run here."""
    import torch  # noqa: PLC0415

    from ltx_audio_reference.quantization import registered_backends  # noqa: PLC0415

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = Table(title=f"Quantization backends (acceleration.quantization), checked for {device}")
    for column in ("name", "plugin", "compiler sees the matmul", "here", "what it is"):
        table.add_column(column)
    for backend in registered_backends():
        problem = backend.problem(device)
        traceable = "yes" if backend.traceable else "no (opaque)"
        table.add_row(backend.name, backend.plugin, traceable, problem or "ok", backend.summary)
    console.print(table)


def check_command(
    config: ConfigArg,
    strategy: StrategyOpt = None,
    max_files: Annotated[
        int | None,
        typer.Option("--max-files", min=1, help="Read at most this many samples (pairing is always checked for all)."),
    ] = None,
) -> None:
    """Validate a config and its preprocessed data without loading any model. Writes nothing."""
    from ltx_audio_reference.cli.check import check_config  # noqa: PLC0415

    registry = collect_strategies()
    data = apply_strategy_override(load_yaml(config), strategy, registry.available())
    report = check_config(
        data, registry=registry, pm=get_plugin_manager(), max_files=max_files, config_dir=config.parent
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for problem in report.problems:
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s) in {config}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]OK[/green]: {config} ({report.summary})", highlight=False)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"ltx-audio-reference {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Build the CLI: built-in commands plus those from the ``register_commands`` hook."""
    app = typer.Typer(name="ltx-trainer", help=_HELP, no_args_is_help=True, pretty_exceptions_enable=False)

    @app.callback()
    def _main(
        ctx: typer.Context,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")] = False,
        version: Annotated[  # noqa: ARG001 - handled by the callback
            bool,
            typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
        ] = False,
    ) -> None:
        _setup_logging(verbose)
        ctx.obj = {"verbose": verbose}

    # Named *_command: the ``check`` and ``demo`` submodules of this package would shadow same-named functions.
    app.command("train")(train_command)
    app.command("strategies")(strategies_command)
    app.command("quantization")(quantization_command)
    app.command("check")(check_command)
    from ltx_audio_reference.cli.audio_reference import build_audio_reference_app  # noqa: PLC0415
    from ltx_audio_reference.cli.demo import demo_command  # noqa: PLC0415

    app.command("demo")(demo_command)
    # The CLI adds its own command group; plugins never import the CLI (it imports them, through the bridge).
    app.add_typer(build_audio_reference_app(), name="audio-reference")
    get_plugin_manager().hook.register_commands(cli=app)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()


if __name__ == "__main__":
    main()
