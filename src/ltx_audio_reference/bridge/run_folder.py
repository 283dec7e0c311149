"""Run-folder seam: one run per ``output_dir``, and a run's identity recorded there.

Before the model loads, the run's main process takes the folder's lock (:mod:`~ltx_audio_reference.reliability
.runlock`), refuses to start over another run's checkpoints unless it resumes them or ``overwrite_output_dir`` is set
(:mod:`~ltx_audio_reference.reliability.identity`; the checkpoints ``overwrite_output_dir`` replaces are only set
aside), and at its first optimizer step records what it is (:mod:`~ltx_audio_reference.reliability.run_start`): a run
that ends before that leaves the folder as it found it. The lock is held until ``train()`` returns or raises (and the
kernel drops it if the process dies). Each checkpoint save first checks that the folder is
still the one it locked: a folder deleted, moved or unmounted during the run stops it with one message, instead of the
stock runner silently recreating it (on the disk under the mount point, for an unmounted one).
"""

from __future__ import annotations

import errno
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltx_audio_reference.bridge.ranks import is_global_main_process
from ltx_audio_reference.bridge.state import trainer_parts
from ltx_audio_reference.errors import RunFolderError, StorageError
from ltx_audio_reference.reliability import identity, preflight, run_start, runlock
from ltx_audio_reference.reliability.files import storage_error

logger = logging.getLogger(__name__)

#: The header of every refusal before the model loads (this module's and :mod:`.trainer`'s checks).
REFUSED = "before training could start (nothing was loaded or written):"


@dataclass
class RunClaim:
    """The main process's hold on its output folder, and its start there (committed at the first step)."""

    output_dir: Path
    lock: runlock.RunLock
    start: run_start.RunStart
    config: dict[str, Any]
    resumed_from: str | Path | None = None

    def started(self) -> None:
        """The first optimizer step is done: record the run, delete the checkpoints ``overwrite_output_dir`` set
        aside (idempotent)."""
        self.start.commit(self.config, self.resumed_from)

    def release(self) -> None:
        """Give the folder back; before the first step, as it was found (:meth:`RunStart.rollback`)."""
        if self.start.done:
            self.lock.release()
        else:
            self.start.rollback(self.lock)

    def vanished(self) -> bool:
        """Whether the folder is no longer the one locked (deleted, moved, unmounted)."""
        return not self.lock.in_place()


def claim(config: Any) -> RunClaim | None:  # noqa: ANN401 - the stock LtxTrainerConfig
    """Lock ``output_dir``, refuse another run's folder, begin this run's start (main process; None on the others).

    Raises:
        RunFolderError: If another run holds the folder, or the folder holds another run's checkpoints that this run
            neither resumes nor may overwrite.
        StorageError: If the lock cannot be written, or the checkpoints cannot be set aside.
    """
    if not is_global_main_process():
        return None
    out = Path(config.output_dir).expanduser()
    before = run_start.FolderBefore.look(out)
    try:
        lock = runlock.acquire(out)
    except RunFolderError as e:
        raise RunFolderError(f"1 problem(s) {REFUSED}\n{e}") from None
    except OSError as e:
        raise (storage_error(e, runlock.lock_path(out)) or e) from e
    start = run_start.RunStart.begin(out, before)
    try:
        if lock.stale is not None:
            logger.warning(
                "%s was locked by %s, which ended without releasing it (killed or crashed); this run takes the folder "
                "over",
                out,
                lock.stale.describe(),
            )
        run_start.recover(out)
        settings = preflight.RunSettings.from_config(config)
        problem = preflight.run_folder_problem(settings)
        if problem is not None:
            raise RunFolderError(f"1 problem(s) {REFUSED}\n{problem}")
        resumed = identity.resumes(out, settings.load_checkpoint, settings.no_resume)
        if settings.overwrite_output_dir and not resumed and (aside := start.set_aside()):
            logger.warning(
                "overwrite_output_dir: set aside %d checkpoint file(s) of the previous run in %s (newest: %s); they "
                "are deleted at this run's first step, and put back if it stops before",
                len(aside),
                run_start.aside_dir(out),
                aside[0].name,
            )
        previous = identity.read_record(out)
        if resumed and previous is not None and settings.config is not None:
            changed = identity.differences(previous["config"], settings.config)
            if changed:
                logger.info(
                    "Resuming with %d changed setting(s): %s", len(changed), identity.describe_differences(changed)
                )
    except BaseException:
        start.rollback(lock)
        raise
    return RunClaim(out, lock, start, settings.config or {}, settings.load_checkpoint if resumed else None)


def check_still_there(trainer: Any) -> None:  # noqa: ANN401 - the stock LtxvTrainer
    """Before a save: stop if the run's folder vanished since it was locked.

    Raises:
        StorageError: ``ENOENT`` on the folder, saying that this step is not saved.
    """
    run: RunClaim | None = getattr(trainer, "_bridge_run", None)
    if run is None or not run.vanished():
        return
    raise StorageError(
        errno.ENOENT,
        run.output_dir / identity.CHECKPOINTS_DIR_NAME,
        safe=(
            f"output_dir {run.output_dir} vanished during the run (deleted, moved or unmounted): step "
            f"{trainer._global_step} was not saved, and nothing was written in its place"
        ),
    )


def started(trainer: Any) -> None:  # noqa: ANN401 - the stock LtxvTrainer
    """After an optimizer step: the run has started (its first step commits its start in the folder)."""
    run: RunClaim | None = getattr(trainer, "_bridge_run", None)
    if run is not None:
        run.started()


def install_run_folder() -> None:
    """Wrap the stock ``train``: the folder's lock is given back when it returns or raises (before the first step,
    with the folder as it was found)."""
    trainer_cls, stock = trainer_parts()

    @functools.wraps(stock["train"])
    def train(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        try:
            return stock["train"](self, *args, **kwargs)
        finally:
            run: RunClaim | None = getattr(self, "_bridge_run", None)
            if run is not None:
                run.release()

    trainer_cls.train = train
