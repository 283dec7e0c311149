"""A run's start as one step that either happens or leaves ``output_dir`` as it found it.

Until its first optimizer step, a run has trained nothing, so a failure or an interruption before it (a truncated
model file, ``fp16`` on a CPU, a bad validation path, Ctrl-C during the load) must not change the folder:

- ``overwrite_output_dir: true`` moves the previous run's checkpoint files aside, into the hidden
  ``checkpoints/.overwritten`` (:data:`ASIDE_DIR_NAME`; hidden folders are never read as checkpoints), instead of
  deleting them. They are deleted at the first step (:meth:`RunStart.commit`) and moved back otherwise
  (:meth:`RunStart.rollback`). A run killed before either (``SIGKILL``) leaves them there; the next run in the folder
  moves them back before it checks the folder (:func:`recover`), as the killed run had not started.
- ``run_identity.json`` is written at the first step, so it never describes a run that never happened.
- :meth:`RunStart.rollback` puts back the files the start wrote over (``run_identity.json``,
  ``training_config.yaml``), and removes what it created: those files, the lock file, ``checkpoints/`` and the folders
  it made (when empty).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx_audio_reference.reliability import identity, runlock
from ltx_audio_reference.reliability.files import atomic_write

logger = logging.getLogger(__name__)

#: Where ``overwrite_output_dir`` keeps the previous run's checkpoints until the new run's first step.
ASIDE_DIR_NAME = ".overwritten"
#: An aside folder being deleted (renamed first, so that a kill mid-delete never restores half a run).
DISCARD_DIR_NAME = ".overwritten.discard"
#: The files a start writes over, whose previous content a rollback puts back.
_RESTORED = (identity.RECORD_NAME, identity.STOCK_CONFIG_NAME)


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating ``folder`` would create: ``folder`` and its missing parents, outermost first."""
    missing = []
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def aside_dir(output_dir: Path) -> Path:
    """``output_dir/checkpoints/.overwritten``."""
    return Path(output_dir) / identity.CHECKPOINTS_DIR_NAME / ASIDE_DIR_NAME


def _discard(folder: Path) -> None:
    target = folder.with_name(DISCARD_DIR_NAME)
    if folder.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        folder.rename(target)
    shutil.rmtree(target, ignore_errors=True)


def _move_back(output_dir: Path) -> list[Path]:
    """Move the files of an aside folder back into ``checkpoints/``; a name taken there is left aside (warned)."""
    aside = aside_dir(output_dir)
    if not aside.is_dir():
        return []
    restored, kept = [], []
    for path in sorted(aside.iterdir()):
        target = aside.parent / path.name
        if target.exists():
            kept.append(path)
            continue
        path.rename(target)
        restored.append(target)
    if kept:
        logger.warning(
            "%d file(s) of the previous run stay in %s: %s already hold(s) files of the same name. Move them back "
            "by hand if you need them",
            len(kept),
            aside,
            aside.parent,
        )
    else:
        aside.rmdir()
    return restored


def recover(output_dir: Path) -> list[Path]:
    """Before a run checks its folder (with the lock held): undo what a killed run's start left.

    A ``checkpoints/.overwritten`` folder holds the checkpoints of the run before a run that was killed before its
    first step: they are moved back. A half-deleted ``.overwritten.discard`` is deleted.

    Returns:
        The checkpoint files moved back.
    """
    checkpoints = Path(output_dir) / identity.CHECKPOINTS_DIR_NAME
    shutil.rmtree(checkpoints / DISCARD_DIR_NAME, ignore_errors=True)
    restored = _move_back(output_dir)
    if restored:
        logger.warning(
            "%s: moved back %d checkpoint file(s) that overwrite_output_dir had set aside for a run that was killed "
            "before its first step",
            checkpoints,
            len(restored),
        )
    return restored


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@dataclass
class FolderBefore:
    """What ``output_dir`` was before this run took its lock (looked at before the lock creates anything)."""

    created: list[Path]
    lock_existed: bool

    @classmethod
    def look(cls, output_dir: Path) -> FolderBefore:
        """Look at ``output_dir`` now."""
        return cls(created=missing_folders(output_dir), lock_existed=runlock.lock_path(output_dir).exists())


@dataclass
class RunStart:
    """A run's start in its folder (main process, lock held): committed at the first step, else rolled back."""

    output_dir: Path
    before: FolderBefore
    #: The previous content of each file in :data:`_RESTORED` (None: it did not exist).
    saved: dict[str, bytes | None] = field(default_factory=dict)
    checkpoints_existed: bool = True
    #: Checkpoint files moved aside by ``overwrite_output_dir``, under their aside names.
    aside: list[Path] = field(default_factory=list)
    done: bool = False

    @classmethod
    def begin(cls, output_dir: Path, before: FolderBefore) -> RunStart:
        """Remember what the start may change (right after the lock is taken)."""
        out = Path(output_dir)
        return cls(
            output_dir=out,
            before=before,
            saved={name: _read(out / name) for name in _RESTORED},
            checkpoints_existed=(out / identity.CHECKPOINTS_DIR_NAME).exists(),
        )

    def set_aside(self) -> list[Path]:
        """``overwrite_output_dir``: move the previous run's checkpoint files into :func:`aside_dir`.

        Returns:
            The files moved, under their aside names, newest step first.

        Raises:
            OSError: If a file cannot be moved (those moved are moved back).
        """
        found = identity.checkpoint_files(self.output_dir)
        if not found:
            return []
        aside = aside_dir(self.output_dir)
        aside.mkdir(exist_ok=True)
        try:
            for path in found:
                target = aside / path.name
                path.rename(target)
                self.aside.append(target)
        except BaseException:
            _move_back(self.output_dir)
            self.aside.clear()
            raise
        return list(self.aside)

    def commit(self, config: dict[str, Any], resumed_from: str | Path | None) -> None:
        """The run reached its first step: record it, and delete the checkpoints set aside (idempotent)."""
        if self.done:
            return
        self.done = True
        # Deleted before the record is written: a kill between the two leaves no checkpoints under the old record,
        # never the old checkpoints (moved back by the next run) under this run's record.
        if self.aside:
            _discard(aside_dir(self.output_dir))
            logger.warning(
                "overwrite_output_dir: deleted %d checkpoint file(s) of the previous run in %s (newest: %s), now that "
                "this run has made its first step",
                len(self.aside),
                self.output_dir / identity.CHECKPOINTS_DIR_NAME,
                self.aside[0].name,
            )
        identity.write_record(self.output_dir, config, resumed_from)

    def rollback(self, lock: runlock.RunLock) -> None:
        """The run ended before its first step: put the folder back as it was, then give the lock back.

        Never raises: what cannot be undone is logged, and the lock is released whatever happens.
        """
        if self.done:
            lock.release()
            return
        self.done = True
        out = self.output_dir
        try:
            if self.aside:
                restored = _move_back(out)
                logger.warning(
                    "The run stopped before its first step: the %d checkpoint file(s) of the previous run are back "
                    "in %s",
                    len(restored),
                    out / identity.CHECKPOINTS_DIR_NAME,
                )
            for name, content in self.saved.items():
                path = out / name
                if content is None:
                    path.unlink(missing_ok=True)
                elif _read(path) != content:
                    atomic_write(path, functools.partial(Path.write_bytes, data=content))
            if not self.checkpoints_existed:
                with contextlib.suppress(OSError):
                    (out / identity.CHECKPOINTS_DIR_NAME).rmdir()
        except OSError as e:
            logger.warning("Could not put %s back as it was before this run: %s", out, e)
        finally:
            lock.release(remove=not self.before.lock_existed)
        for folder in reversed(self.before.created):
            try:
                folder.rmdir()
            except OSError:
                logger.debug("Left %s: not empty, or not removable", folder)
                break
