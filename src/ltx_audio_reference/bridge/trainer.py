"""Trainer seam: the strategy factory, config checks before the model loads, LoRA targets, model preparation, the
per-step guard and hooks, and the exact-resume data order.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import os
from typing import Any

from ltx_audio_reference.bridge import run_folder, schedule, state
from ltx_audio_reference.bridge.ranks import is_global_main_process
from ltx_audio_reference.bridge.state import Installation, trainer_parts
from ltx_audio_reference.data.check import check_strategy_data
from ltx_audio_reference.errors import ConfigurationError, NonFiniteError
from ltx_audio_reference.registry import ModelContext, TrainStepContext, lora_target_modules
from ltx_audio_reference.reliability import determinism, guards, preflight

logger = logging.getLogger(__name__)

MAX_LISTED_PROBLEMS = 20
# At training start, values are scanned only in tensors up to this size (references, audio and video latents);
# prompt embeddings can reach tens of GB over a dataset, and `ltx-trainer check` scans them all.
STARTUP_SCAN_LIMIT = 2**20


def install_factory(installation: Installation) -> None:
    """Rebind the strategy factory ``ltx_trainer.trainer`` calls: registered strategies first, then stock's."""
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    import ltx_trainer.training_strategies as strategies_module  # noqa: PLC0415

    stock_factory = state.stock().factory

    @functools.wraps(stock_factory)
    def get_training_strategy(config: Any) -> Any:  # noqa: ANN401
        entry = installation.strategies.for_config(config)
        if entry is None:
            return stock_factory(config)
        strategy = entry.strategy_cls(config)
        logger.debug("Using %s training strategy from plugin %s", type(strategy).__name__, entry.plugin)
        return strategy

    # trainer.py imported the factory by name, so the name bound there is the one the trainer calls.
    trainer_module.get_training_strategy = get_training_strategy
    strategies_module.get_training_strategy = get_training_strategy


def install_gpu_memory_probe() -> None:
    """Rebind the ``get_gpu_memory_gb`` that ``ltx_trainer.trainer`` calls: 0.0 for a CPU device, stock otherwise.

    The stock probe runs ``nvidia-smi`` whatever the device and logs ``ERROR Failed to get GPU memory from
    nvidia-smi`` three times per CPU run, which reads as a failure. On a CUDA device the stock probe runs unchanged,
    so a real nvidia-smi failure there is still logged.
    """
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    stock_probe = state.stock().get_gpu_memory_gb

    @functools.wraps(stock_probe)
    def get_gpu_memory_gb(device: Any) -> float:  # noqa: ANN401 - a torch.device
        if getattr(device, "type", None) != "cuda":
            return 0.0  # what the stock fallback (torch.cuda.memory_allocated) reports for a CPU device
        return stock_probe(device)

    trainer_module.get_gpu_memory_gb = get_gpu_memory_gb


def install_quantization(installation: Installation) -> None:
    """Rebind the ``quantize_model`` that ``ltx_trainer.trainer`` calls to the registered backends.

    Every value of ``acceleration.quantization`` (the stock optimum-quanto ones included) then quantizes through
    :func:`ltx_audio_reference.quantization.quantize_model`, block by block on the GPU as stock does.
    """
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_audio_reference.quantization import model as quantization  # noqa: PLC0415

    backends = installation.backends
    stock_quantize = state.stock().quantize_model

    @functools.wraps(stock_quantize)
    def quantize_model(
        model: Any,  # noqa: ANN401
        precision: str,
        quantize_activations: bool = False,
        device: Any = None,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        return quantization.quantize_model(model, precision, quantize_activations, device, backends=backends)

    trainer_module.quantize_model = quantize_model


_STREAMED_LOAD: contextvars.ContextVar[Any] = contextvars.ContextVar("streamed_load", default=None)


def install_streamed_load(installation: Installation) -> None:
    """Rebind the ``load_transformer`` that ``ltx_trainer.trainer`` calls, and wrap ``_load_models``, so that a
    quantized config loads through the streamed load (:mod:`ltx_audio_reference.quantization.stream`).

    ``_load_models`` knows the config; it sets the load's settings for the ``load_transformer`` call inside it:
    quantize on this process's GPU (``LOCAL_RANK``, as the trainer does), leave the blocks block swap will stream in
    host memory, read and write the quantized-weight cache (written by the first process of each machine only). The
    routed ``quantize_model`` then finds the model quantized and leaves it. Without quantization, in full training,
    or with ``acceleration.streamed_load: false``, both run as stock.
    """
    import torch  # noqa: PLC0415

    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415
    from ltx_audio_reference.quantization import cache, memory, stream  # noqa: PLC0415

    trainer_cls, stock = trainer_parts()
    stock_load = state.stock().load_transformer
    backends = installation.backends

    @functools.wraps(stock["_load_models"])
    def _load_models(self: Any) -> None:  # noqa: ANN401
        token = _STREAMED_LOAD.set(self._config if memory.streams(self._config) else None)
        try:
            stock["_load_models"](self)
        finally:
            _STREAMED_LOAD.reset(token)

    @functools.wraps(stock_load)
    def load_transformer(checkpoint_path: Any, device: Any = "cpu", dtype: Any = torch.bfloat16) -> Any:  # noqa: ANN401
        config = _STREAMED_LOAD.get()
        if config is None:
            return stock_load(checkpoint_path, device=device, dtype=dtype)
        backend = backends.get(config.acceleration.quantization)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        target = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        targets = functools.partial(lora_target_modules, installation.pm.hook, config)
        host_blocks = (
            memory.planned_host_blocks(config, checkpoint_path, backend, targets) if target.type == "cuda" else ()
        )
        plan = stream.LoadPlan(device=target, host_blocks=frozenset(host_blocks), dtype=dtype)
        return stream.load_transformer_streamed(
            checkpoint_path,
            backend,
            plan,
            cache_root=cache.cache_root(getattr(config.acceleration, "quantized_cache", True)),
            write_cache=local_rank == 0,
            progress=is_global_main_process(),
        )

    trainer_cls._load_models = _load_models
    trainer_module.load_transformer = load_transformer


def install_main_process_flag() -> None:
    """Make the ``IS_MAIN_PROCESS`` that ``ltx_trainer.trainer`` reads mean the global rank 0.

    Stock sets it from ``LOCAL_RANK``, which is 0 on the first process of every machine. On several machines each of
    them then prints the config, writes ``training_config.yaml`` and every training state into the shared output
    folder (the same names, each with its own RNG state), and starts its own W&B run. Only the run's first process
    (``RANK`` 0) does that now, as for the weights, which stock already saves on ``accelerator.is_main_process``.
    On one machine the flag is unchanged.
    """
    import ltx_trainer.trainer as trainer_module  # noqa: PLC0415

    trainer_module.IS_MAIN_PROCESS = is_global_main_process()


def install_trainer_hooks(installation: Installation) -> None:
    """Run ``validate_config``, the run-settings and data checks and the run-folder claim before the model loads,
    ``configure_lora`` and ``configure_model``."""
    import torch  # noqa: PLC0415

    trainer_cls, stock = trainer_parts()
    hook = installation.pm.hook

    @functools.wraps(stock["__init__"])
    def __init__(self: Any, trainer_config: Any) -> None:  # noqa: N807, ANN401
        # Runs before any model is loaded, so bad values fail in seconds instead of after a 40 GB load.
        try:
            hook.validate_config(config=trainer_config)
        except ValueError as e:
            raise ConfigurationError(str(e)) from e
        check_before_loading(trainer_config)
        # One run per output folder, before the 40 GB load; released by train() or if the load fails.
        self._bridge_run = run_folder.claim(trainer_config)
        try:
            stock["__init__"](self, trainer_config)
        except BaseException:
            if self._bridge_run is not None:
                self._bridge_run.release()
            raise

    @functools.wraps(stock["_setup_lora"])
    def _setup_lora(self: Any) -> None:  # noqa: ANN401
        targets = lora_target_modules(hook, self._config, self._transformer, self._training_strategy)
        if targets != list(self._config.lora.target_modules):
            logger.info("LoRA targets: %d modules (set by plugins)", len(targets))
            self._config.lora = self._config.lora.model_copy(update={"target_modules": targets})
        # peft draws lora_A from the global RNG long before train() seeds it, so the initial LoRA would depend on
        # whatever ran first in the process. Seed it from config.seed, in a forked stream that training never sees.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._config.seed)
            stock["_setup_lora"](self)

    @functools.wraps(stock["_prepare_models_for_training"])
    def _prepare_models_for_training(self: Any) -> None:  # noqa: ANN401
        freeze_text_connectors(self)
        context = ModelContext(
            config=self._config,
            strategy=self._training_strategy,
            model=self._transformer,
            accelerator=self._accelerator,
            device=self._accelerator.device,
        )
        hook.configure_model(context=context)
        self._transformer = context.model
        placement = self._accelerator.device_placement
        self._accelerator.device_placement = context.device_placement
        try:
            stock["_prepare_models_for_training"](self)
        finally:
            self._accelerator.device_placement = placement

    trainer_cls.__init__ = __init__
    trainer_cls._setup_lora = _setup_lora
    trainer_cls._prepare_models_for_training = _prepare_models_for_training


def freeze_text_connectors(trainer: Any) -> int:  # noqa: ANN401 - the stock LtxvTrainer
    """Freeze the trainer's text connectors (``_embeddings_processor``); returns how many tensors were unfrozen.

    ltx-trainer loads them with ``requires_grad`` on and never trains them (the optimizer holds transformer
    parameters only), so every step back-propagated into them through each block's text cross-attention and kept
    their gradients on the GPU. It also made ``context`` a tensor with a gradient that every block passes through.
    """
    processor = getattr(trainer, "_embeddings_processor", None)
    if processor is None:
        return 0
    unfrozen = [p for p in processor.parameters() if p.requires_grad]
    if unfrozen:
        processor.requires_grad_(False)
        logger.debug(
            "Froze the text connectors: %d tensors, %.1f M parameters (ltx-trainer leaves them trainable and never "
            "updates them)",
            len(unfrozen),
            sum(p.numel() for p in unfrozen) / 1e6,
        )
    return len(unfrozen)


def install_step_guard(installation: Installation) -> None:
    """Stop at the first non-finite loss or gradient norm, naming the step, the batch's files and sigma."""
    trainer_cls, stock = trainer_parts()
    hook = installation.pm.hook

    @functools.wraps(stock["_training_step"])
    def _training_step(self: Any, batch: dict[str, Any]) -> Any:  # noqa: ANN401
        # Per-sample draws (for strategies that use them) are keyed by the epoch that drew the batch; without the
        # bridge's epoch-seeded loader there is no epoch to key them by, and the global stream is used.
        epoch = getattr(self._dataloader, "current_epoch", None)
        draws = contextlib.nullcontext() if epoch is None else determinism.per_sample_draws(self._config.seed, epoch)
        with draws:
            output = stock["_training_step"](self, batch)
        # Inside accelerate's accumulate(), global_step already counts the step this batch completes.
        step = self._global_step if self._accelerator.sync_gradients else self._global_step + 1
        record = guards.BatchRecord(
            files=guards.sample_files(self._dataset, batch.get("idx")),
            sigma=output.sigma.detach(),
            loss=output.loss.detach(),
        )
        current = getattr(self, "_bridge_step_batches", None)
        if current is None or current[0] != step:
            current = (step, [])
            self._bridge_step_batches = current
        current[1].append(record)
        if not guards.is_finite(record.loss):
            value = float(record.loss.float().mean())
            raise NonFiniteError(guards.describe_nonfinite_step("loss", value, step, current[1]))
        hook.on_train_step(
            context=TrainStepContext(
                config=self._config,
                strategy=self._training_strategy,
                model=self._transformer,
                step=step,
                loss=record.loss,
                sigma=record.sigma,
                sample_files=record.files,
            )
        )
        return output

    @functools.wraps(stock["_init_optimizer"])
    def _init_optimizer(self: Any) -> None:  # noqa: ANN401
        # The schedule then advances once per optimizer step on any number of processes (bridge/schedule.py).
        schedule.after_init_optimizer(self, stock["_init_optimizer"])
        # A pre-step hook runs only when accelerate really steps (after the last micro-batch, gradients synced, and
        # with fp16 only once the scaler found them finite), right before the weights change.
        optimizer = getattr(self._optimizer, "optimizer", self._optimizer)
        optimizer.register_step_pre_hook(functools.partial(_gradient_guard, self))
        # The first step done commits the run's start in its folder (record written, overwritten checkpoints deleted).
        optimizer.register_step_post_hook(lambda *_: run_folder.started(self))

    trainer_cls._training_step = _training_step
    trainer_cls._init_optimizer = _init_optimizer


def _gradient_guard(trainer: Any, optimizer: Any, args: Any, kwargs: Any) -> None:  # noqa: ANN401, ARG001
    norm = guards.grad_norm(p for group in optimizer.param_groups for p in group["params"])
    if norm is None or math.isfinite(norm):
        return
    step, batches = getattr(trainer, "_bridge_step_batches", None) or (trainer._global_step, [])
    raise NonFiniteError(guards.describe_nonfinite_step("gradient norm", norm, step, batches))


def check_before_loading(config: Any) -> None:  # noqa: ANN401 - the stock LtxTrainerConfig
    """The run settings (counts, text encoder, output folders, resume) and the data, before any model loads.

    The stock dataset silently skips bad pairs, and the stock runner finds most of these only after the model
    loaded, or at the first checkpoint save.

    Raises:
        ConfigurationError: Listing each problem on its own line (``config <key>: ...`` or ``file: expected ...;
            found ...``).
    """
    # The run's main process takes output_dir's lock; its other processes would find it held.
    run = preflight.check_run(preflight.RunSettings.from_config(config), probe_lock=is_global_main_process())
    lines = list(run.problems)
    report = check_strategy_data(
        config.data.preprocessed_data_root,
        config.training_strategy,
        batch_size=config.optimization.batch_size,
        # accelerate launch sets WORLD_SIZE; each process draws its own batches from its share of the samples.
        num_processes=max(1, int(os.environ.get("WORLD_SIZE", "1"))),
        scan_limit=STARTUP_SCAN_LIMIT,
        model_path=config.model.model_path,
    )
    problems = [str(p) for p in report.problems]
    for note in report.notes:
        logger.info("Data: %s", note)
    if not lines and not problems:
        return
    lines += problems[:MAX_LISTED_PROBLEMS]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more (`ltx-trainer check CONFIG` lists all)")
    count = len(run.problems) + len(problems)
    raise ConfigurationError(f"{count} problem(s) {run_folder.REFUSED}\n" + "\n".join(lines))


def install_data_order() -> None:
    """Wrap the stock ``_init_dataloader``: its loader then runs under an ``EpochSeededLoader`` (exact data order)."""
    trainer_cls, stock = trainer_parts()
    stock_init = stock["_init_dataloader"]

    @functools.wraps(stock_init)
    def _init_dataloader(self: Any) -> None:  # noqa: ANN401
        stock_init(self)
        # The stock loader draws each epoch's permutation from the global RNG, so a run resumed mid-epoch gets a new
        # order. Seeding the sampler per epoch makes the order a function of (seed, epoch), and the first iteration
        # starts at the resumed step's position without loading the skipped batches.
        generator = determinism.own_data_generator(self._dataloader)
        if generator is None:
            logger.debug("No shuffling sampler found: data order left to the stock loader")
            return
        accumulation = self._config.optimization.gradient_accumulation_steps
        self._dataloader = determinism.EpochSeededLoader(
            self._dataloader,
            generator,
            self._config.seed,
            consumed_batches=lambda: max(self._global_step, 0) * accumulation,
            skip=self._accelerator.skip_first_batches,
        )

    trainer_cls._init_dataloader = _init_dataloader
