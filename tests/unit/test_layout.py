"""Meta-tests of the package layout: the folders read the layers, and each layer imports only what it may.

The rules (docs/development.md, "Layout"): no library module imports the CLI; nothing outside ``bridge/`` touches
ltx-trainer internals or the bridge's private state; the top level stays small; ``ltx-trainer --help`` and
``strategies`` never import torch; ``python -m ltx_audio_reference.cli`` (how ``accelerate launch`` starts it) runs the
CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ltx_audio_reference

PACKAGE = Path(ltx_audio_reference.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

# What code outside bridge/ may import from ltx-trainer: its public strategy, config and sampling API.
PUBLIC_LTX_TRAINER = {
    "ltx_trainer.training_strategies": {"TrainingStrategy", "TrainingStrategyConfigBase", "ModelInputs"},
    "ltx_trainer.timestep_samplers": {"TimestepSampler"},
    "ltx_trainer.config": {
        "LtxTrainerConfig",
        "ModelConfig",
        "ValidationConfig",
        "ValidationSample",
        "ReferenceConditionConfig",
    },
    "ltx_trainer.trainer": {"LtxvTrainer"},
    "ltx_trainer.progress": {"TrainingProgress"},
    "ltx_trainer.validation_runner": {"ValidationRunner"},
}


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(path: Path) -> list[tuple[ast.AST, str, list[str], list[str]]]:
    """(node, module, imported names, names of the enclosing functions) for every import in ``path``."""
    found = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = [*scope, child.name] if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            if isinstance(child, ast.ImportFrom) and child.module:
                found.append((child, child.module, [a.name for a in child.names], inner))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((child, alias.name, [], inner))
            visit(child, inner)

    visit(ast.parse(path.read_text()), [])
    return found


def test_the_top_level_has_at_most_15_entries() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 15, entries
    for layer in (
        "bridge",
        "strategies",
        "blockswap",
        "quantization",
        "reliability",
        "data",
        "evaluation",
        "cli",
        "testing",
    ):
        assert (PACKAGE / layer / "__init__.py").is_file(), f"{layer}/ is not a package"


def test_no_library_module_imports_the_cli() -> None:
    # Not even inside a hook: the CLI adds its own audio-reference group, so nothing below it reaches up.
    offenders = []
    for path in MODULES:
        if _relative(path).startswith("cli/"):
            continue
        for node, module, names, _ in _imports(path):
            targets = [module, *(f"{module}.{n}" for n in names)]
            if any(t == "ltx_audio_reference.cli" or t.startswith("ltx_audio_reference.cli.") for t in targets):
                offenders.append(f"{_relative(path)}:{node.lineno}")
        # importlib.import_module("ltx_audio_reference.cli...") would slip past the import statements above
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if "import_module(" in line and "ltx_audio_reference.cli" in line:
                offenders.append(f"{_relative(path)}:{lineno}")
    assert offenders == []


def test_only_the_bridge_touches_ltx_trainer_internals() -> None:
    offenders = []
    for path in MODULES:
        if _relative(path).startswith("bridge/"):
            continue
        for node, module, names, _ in _imports(path):
            if module.split(".")[0] != "ltx_trainer":
                continue
            allowed = PUBLIC_LTX_TRAINER.get(module, set())
            if not names or set(names) - allowed:
                offenders.append(f"{_relative(path)}:{node.lineno} imports {module} {names}")
    assert offenders == []


def test_no_module_reads_or_writes_the_bridges_private_state() -> None:
    offenders = []
    for path in MODULES:
        if _relative(path).startswith("bridge/"):
            continue
        for node, module, names, _ in _imports(path):
            if module.startswith("ltx_audio_reference.bridge.") and module != "ltx_audio_reference.bridge.config":
                offenders.append(f"{_relative(path)}:{node.lineno} imports {module}")
            if module == "ltx_audio_reference.bridge" and {"state", "current"} & set(names):
                offenders.append(f"{_relative(path)}:{node.lineno} imports {names}")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "bridge"
                and (node.attr.startswith("_") or node.attr in ("state", "current"))
            ):
                offenders.append(f"{_relative(path)}:{node.lineno} uses bridge.{node.attr}")
    assert offenders == []


def test_the_strategy_lives_in_its_folder() -> None:
    strategy = PACKAGE / "strategies" / "audio_reference"
    for name in ("plugin", "config", "strategy", "positions", "inputs", "loss", "lora_targets", "ref_gap"):
        assert (strategy / f"{name}.py").is_file(), name
    for old in ("conditioning", "lora_targets", "builtin", "commands", "kit", "datacheck", "checks", "demo"):
        assert not (PACKAGE / f"{old}.py").exists(), old
    # Only strategy.py and config.py (its base class) reach ltx-trainer's API.
    for path in strategy.glob("*.py"):
        modules = [module for _, module, _, _ in _imports(path)]
        if path.name not in ("strategy.py", "config.py"):
            assert not any(m.startswith("ltx_trainer") for m in modules), path.name


@pytest.mark.parametrize("args", [["--help"], ["strategies"]], ids=["help", "strategies"])
def test_help_and_strategies_do_not_import_torch(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from ltx_audio_reference.cli import main\n"
        f"sys.argv = ['ltx-trainer', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert "audio_reference" in result.stdout if args == ["strategies"] else "train" in result.stdout


def test_python_m_cli_runs_the_cli_as_accelerate_launch_does() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ltx_audio_reference.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "check", "strategies", "demo", "audio-reference"):
        assert command in result.stdout
