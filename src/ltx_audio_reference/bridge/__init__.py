"""The bridge: the ONLY package that touches ltx-trainer internals.

ltx-trainer 1.2.0 has no plugin seam: its strategy config is a closed pydantic union, its strategy factory is a
``match``, and model setup, checkpoint metadata and validation conditioning are private methods. :func:`install`
teaches the stock classes the registered strategies and routes those steps through the plugin hooks. It edits no
file and copies no upstream code: it rebuilds two pydantic fields (the strategy union and ``quantization``), rebinds
the factory, ``save_file``, ``get_peft_model_state_dict``, ``get_gpu_memory_gb``, ``quantize_model`` and
``load_transformer`` names that ``ltx_trainer.trainer`` calls and the ``X0Model``
and ``MultiModalGuider`` names that ``ltx_trainer.validation_runner`` calls, and wraps the trainer methods listed in
:data:`~ltx_audio_reference.bridge.state.TRAINER_METHODS` and the runner's ``_apply_audio_conditionings`` and
``_run_denoising``. One module per seam:

- :mod:`.config`: the strategy union and plugin config fields;
- :mod:`.trainer`: the factory, checks before the model loads, LoRA and model hooks, the step guard, data order;
- :mod:`.schedule`: the LR schedule counted in optimizer steps on any number of processes, and across resume;
- :mod:`.checkpoints`: checkpoint hooks and metadata, atomic saves, resume;
- :mod:`.run_folder`: one run per ``output_dir`` (a lock) and the run's identity recorded there;
- :mod:`.validation`: reference placement in validation (:func:`reference_placement`, public);
- :mod:`.guidance`: reference guidance in validation's denoising loop (its scale is set by
  :func:`reference_placement`);
- :mod:`.ranks`: which process is the run's main one (:func:`is_global_main_process`, public).

``install()`` is idempotent: every call rebuilds from the stock objects it saved on the first call, so installing
with another plugin manager (tests) replaces the previous installation instead of stacking on it.
"""

from __future__ import annotations

import logging

import pluggy

from ltx_audio_reference.bridge import state
from ltx_audio_reference.bridge.ranks import is_global_main_process
from ltx_audio_reference.bridge.state import Installation
from ltx_audio_reference.bridge.validation import (
    current_placement,
    current_reference_guidance,
    reference_placement,
    sampling_progress,
)
from ltx_audio_reference.plugins import collect, collect_strategies, get_plugin_manager
from ltx_audio_reference.registry import STOCK_STRATEGIES, ConditionerRegistry, QuantizationRegistry

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "ltx-trainer is not installed. It is not on PyPI: run `bash scripts/setup.sh --trainer` (or install ltx-core "
    "and ltx-trainer 1.2.0 from the LTX-2 repository, see docs/install.md)."
)

_current: Installation | None = None


def require_ltx_trainer() -> None:
    """Import ltx-trainer's config module or raise a ModuleNotFoundError that says how to install it."""
    try:
        import ltx_trainer.config  # noqa: F401, PLC0415
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "ltx_trainer":
            raise ModuleNotFoundError(INSTALL_HINT, name="ltx_trainer") from e
        raise


def ltx_trainer_available() -> bool:
    """Whether ltx-trainer can be imported here (it imports torchvision, wandb and friends)."""
    try:
        require_ltx_trainer()
    except ImportError:
        return False
    return True


def current() -> Installation | None:
    """The active installation, or None before :func:`install`."""
    return _current


def install(pm: pluggy.PluginManager | None = None) -> Installation:
    """Install the registered strategies and hooks into stock ltx-trainer.

    Args:
        pm: The plugin manager to take strategies and hooks from; the shared one by default.

    Returns:
        The installation (registries and plugin manager in use).

    Raises:
        ModuleNotFoundError: If ltx-trainer is not installed.
    """
    global _current  # noqa: PLW0603 - the bridge is process-wide by nature: it patches shared classes
    pm = pm or get_plugin_manager()
    if _current is not None and _current.pm is pm:
        return _current
    require_ltx_trainer()
    from ltx_audio_reference.bridge import checkpoints, config, run_folder, schedule, trainer, validation  # noqa: PLC0415

    stock = state.stock()
    strategies = collect_strategies(pm)
    installation = Installation(
        pm=pm,
        strategies=strategies,
        conditioners=collect(ConditionerRegistry, pm),
        backends=collect(QuantizationRegistry, pm),
    )
    config.install_config(stock, strategies, pm, installation.backends)
    trainer.install_factory(installation)
    trainer.install_trainer_hooks(installation)
    trainer.install_step_guard(installation)
    trainer.install_data_order()
    trainer.install_gpu_memory_probe()
    trainer.install_main_process_flag()
    trainer.install_quantization(installation)
    trainer.install_streamed_load(installation)
    schedule.install_schedule()
    checkpoints.install_checkpoint_hooks(installation)
    checkpoints.install_atomic_checkpoints()
    checkpoints.install_resume()
    run_folder.install_run_folder()
    validation.install_validation_conditioning(installation)
    _current = installation
    logger.debug("ltx-trainer bridge installed: strategies %s", strategies.available())
    return installation


def uninstall() -> None:
    """Restore the stock ltx-trainer objects (for tests)."""
    global _current  # noqa: PLW0603
    stock = state.saved()
    if stock is None:
        return
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    import ltx_trainer.training_strategies as strategies_module  # noqa: PLC0415
    from ltx_audio_reference.bridge import config, validation  # noqa: PLC0415

    config.restore_config(stock)
    trainer_module.get_training_strategy = stock.factory
    strategies_module.get_training_strategy = stock.factory
    trainer_module.save_file = stock.save_file
    trainer_module.get_peft_model_state_dict = stock.get_peft_model_state_dict
    trainer_module.get_gpu_memory_gb = stock.get_gpu_memory_gb
    trainer_module.quantize_model = stock.quantize_model
    trainer_module.load_transformer = stock.load_transformer
    trainer_module.IS_MAIN_PROCESS = stock.is_main_process
    for name, method in stock.trainer_methods.items():
        setattr(trainer_module.LtxvTrainer, name, method)
    validation.restore_validation_conditioning()
    _current = None


def available_strategies(pm: pluggy.PluginManager | None = None) -> list[str]:
    """Stock and registered strategy names (no ltx-trainer import needed)."""
    return collect_strategies(pm or get_plugin_manager()).available()


__all__ = [
    "INSTALL_HINT",
    "STOCK_STRATEGIES",
    "Installation",
    "available_strategies",
    "current",
    "current_placement",
    "current_reference_guidance",
    "install",
    "is_global_main_process",
    "ltx_trainer_available",
    "reference_placement",
    "require_ltx_trainer",
    "sampling_progress",
    "uninstall",
]
