"""Run-folder seam: one run per ``output_dir``, and a run's identity recorded there.

Before the model loads, the run's main process takes the folder's lock (:mod:`~ltx_audio_reference.reliability
.runlock`), refuses to start over another run's checkpoints unless it resumes them or ``overwrite_output_dir`` is set
(:mod:`~ltx_audio_reference.reliability.identity`), and records what it is. The lock is held until ``train()``
returns or raises (and the kernel drops it if the process dies). Each checkpoint save first checks that the folder is
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
from ltx_audio_reference.reliability import identity, preflight, runlock
from ltx_audio_reference.reliability.files import storage_error

logger = logging.getLogger(__name__)

#: The header of every refusal before the model loads (this module's and :mod:`.trainer`'s checks).
REFUSED = "before training could start (nothing was loaded or written):"


@dataclass
class RunClaim:
    """The main process's hold on its output folder."""

    output_dir: Path
    lock: runlock.RunLock

    def release(self) -> None:
        """Give the folder back."""
        self.lock.release()

    def vanished(self) -> bool:
        """Whether the folder is no longer the one locked (deleted, moved, unmounted)."""
        return not self.lock.in_place()


def claim(config: Any) -> RunClaim | None:  # noqa: ANN401 - the stock LtxTrainerConfig
    """Lock ``output_dir``, refuse another run's folder, record this run (main process; None on the others).

    Raises:
        RunFolderError: If another run holds the folder, or the folder holds another run's checkpoints that this run
            neither resumes nor may overwrite.
        StorageError: If the lock or the record cannot be written.
    """
    if not is_global_main_process():
        return None
    out = Path(config.output_dir).expanduser()
    try:
        lock = runlock.acquire(out)
    except RunFolderError as e:
        raise RunFolderError(f"1 problem(s) {REFUSED}\n{e}") from None
    except OSError as e:
        raise (storage_error(e, runlock.lock_path(out)) or e) from e
    try:
        if lock.stale is not None:
            logger.warning(
                "%s was locked by %s, which ended without releasing it (killed or crashed); this run takes the folder "
                "over",
                out,
                lock.stale.describe(),
            )
        settings = preflight.RunSettings.from_config(config)
        problem = preflight.run_folder_problem(settings)
        if problem is not None:
            raise RunFolderError(f"1 problem(s) {REFUSED}\n{problem}")
        resumed = identity.resumes(out, settings.load_checkpoint, settings.no_resume)
        if settings.overwrite_output_dir and not resumed and (removed := identity.remove_checkpoints(out)):
            logger.warning(
                "overwrite_output_dir: deleted %d checkpoint file(s) of the previous run in %s (newest: %s)",
                len(removed),
                out / identity.CHECKPOINTS_DIR_NAME,
                removed[0].name,
            )
        previous = identity.read_record(out)
        if resumed and previous is not None and settings.config is not None:
            changed = identity.differences(previous["config"], settings.config)
            if changed:
                logger.info(
                    "Resuming with %d changed setting(s): %s", len(changed), identity.describe_differences(changed)
                )
        identity.write_record(out, settings.config or {}, settings.load_checkpoint if resumed else None)
    except BaseException:
        lock.release()
        raise
    return RunClaim(out, lock)


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


def install_run_folder() -> None:
    """Wrap the stock ``train``: the folder's lock is given back when it returns or raises."""
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
