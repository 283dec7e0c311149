"""One run per output folder: an exclusive lock on ``output_dir`` for the whole run.

The lock is ``flock`` on ``output_dir/.ltx-trainer.lock``, so the kernel releases it when the process ends, however
it ends (a crash, ``SIGKILL``); the stock runner has none, and two runs into one folder overwrite each other's
checkpoints. The holder writes who it is into the file (PID, host, start time, command). A second run that finds the
folder locked stops before the model loads and names the holder. A run that takes a lock whose file still holds a
record was preceded by a run that never released it (killed or crashed): that is reported, never silently passed
over. A clean release empties the record.

A forked child (a data-loader worker) shares the lock; if it outlives a killed parent, the folder stays locked and
the message names the dead holder and how to find the survivor.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ltx_audio_reference.errors import RunFolderError

logger = logging.getLogger(__name__)

LOCK_NAME = ".ltx-trainer.lock"
_OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class LockRecord:
    """Who holds (or held) a run lock."""

    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def parse(cls, text: str) -> LockRecord | None:
        """The record in a lock file's text; None for an empty or unreadable one."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    @classmethod
    def of_this_process(cls) -> LockRecord:
        """This process's record."""
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=_command(),
        )

    def to_text(self) -> str:
        """One JSON line."""
        return json.dumps(self.__dict__) + "\n"

    def alive(self) -> bool | None:
        """Whether the process still runs: None when it ran on another host (it cannot be asked from here)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, under another user
        return True

    def describe(self) -> str:
        """``PID 4242 on host h (started ..., `ltx-trainer train b.yaml`)``."""
        return f"PID {self.pid} on host {self.host} (started {self.started}, `{self.command}`)"


def _command() -> str:
    """This process's command line as typed: ``ltx-trainer train a.yaml``, or ``python -m pkg train a.yaml``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m ...: argv[0] is the module's __main__.py
        head = ["python", "-m", spec.name.removesuffix(".__main__")]
    else:
        head = [Path(sys.argv[0]).name] if sys.argv and sys.argv[0] else ["python"]
    return " ".join([*head, *sys.argv[1:]])


def _held_by_this_process(record: LockRecord | None) -> bool:
    return record is not None and record.pid == os.getpid() and record.host == socket.gethostname()


def lock_path(output_dir: Path) -> Path:
    """The lock file of ``output_dir``."""
    return Path(output_dir) / LOCK_NAME


def _read(path: Path) -> LockRecord | None:
    try:
        return LockRecord.parse(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def held_message(output_dir: Path, record: LockRecord | None) -> str:
    """Why a run cannot start in ``output_dir``: who holds its lock, and what to do."""
    path = lock_path(output_dir)
    head = f"config output_dir: {output_dir} is in use by another training run"
    why = "Two runs in one output_dir overwrite each other's checkpoints, so this one stops before loading the model"
    if record is None:
        return (
            f"{head} (its lock {path} is held; the holder has not written who it is yet, so it is just starting). "
            f"{why}. Wait for that run to end, or set another output_dir"
        )
    if record.alive() is False:
        return (
            f"{head}: {record.describe()} took its lock {path}, and that process is no longer running, but a process "
            f"it started (a data-loader worker, say) still holds the lock. {why}. Find it with `fuser -v {path}`, "
            "end it, and run again; or set another output_dir"
        )
    stop = f"stop it (`kill {record.pid}` on {record.host})"
    return f"{head}: {record.describe()}. {why}. Wait for that run to end, {stop}, or set another output_dir"


class RunLock:
    """A held lock on an output folder; :meth:`release` (or the process ending) gives it back."""

    def __init__(self, output_dir: Path, fd: int | None, previous: LockRecord | None) -> None:
        self.output_dir = Path(output_dir)
        self.path = lock_path(output_dir)
        self._fd = fd
        #: The record a run that never released the lock left (killed or crashed), or None.
        self.stale = previous

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def in_place(self) -> bool:
        """Whether the lock file on disk is the one held: False once the folder is deleted, moved or unmounted."""
        return True if self._fd is None else _is_file_at(self._fd, self.path)

    def release(self, *, remove: bool = False) -> None:
        """Empty the record and give the lock back (idempotent).

        Args:
            remove: Also delete the lock file (a run that leaves the folder as it found it), while still holding the
                lock: a run that opened the file meanwhile finds it unlinked once it gets the lock, and takes a new
                one (see :func:`acquire`).
        """
        if self._fd is None:
            return
        import fcntl  # noqa: PLC0415 - POSIX only; acquire() did not get an fd where it is missing

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a clean end: the next run finds no stale record
            if remove and _is_file_at(fd, self.path):
                self.path.unlink()
        except OSError as e:
            logger.debug("Could not empty or remove %s: %s", self.path, e)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            self.release()


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether ``path`` names the file open as ``fd`` (not deleted, nor replaced by another file)."""
    try:
        on_disk = path.stat()
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def acquire(output_dir: Path) -> RunLock:
    """Take the lock on ``output_dir`` (created if missing), or raise naming who holds it.

    Returns:
        The held lock; its ``stale`` names a previous holder that ended without releasing it.

    Raises:
        RunFolderError: If another process holds the lock (PID, host, start time and command are named).
        OSError: If the folder or the lock file cannot be created (read-only, full).
    """
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # Windows: no flock; the run goes on unlocked, as the stock runner does
        logger.warning("No file locking on this platform: %s is not locked against a second run", output_dir)
        return RunLock(output_dir, None, None)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(output_dir)
    for _ in range(_OPEN_ATTEMPTS):
        fd = _lock_file(output_dir, path, fcntl)
        # A run that ended before its first step deletes the lock file it created, while holding it; a lock taken on
        # that deleted file would lock nothing that the next run opens, so take the file now at that path instead.
        if _is_file_at(fd, path):
            break
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    else:
        raise RunFolderError(held_message(output_dir, _read(path)))
    try:
        previous = LockRecord.parse(os.pread(fd, 64 * 1024, 0).decode("utf-8", errors="replace"))
        data = LockRecord.of_this_process().to_text().encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    return RunLock(output_dir, fd, previous)


def _lock_file(output_dir: Path, path: Path, fcntl: Any) -> int:  # noqa: ANN401 - the fcntl module
    """Open ``path`` (created if missing) and lock it; the open descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _held_by_this_process(_read(path)):
                raise
            # This process holds it: a trainer that was built but never trained, and is garbage now (peft and the
            # optimizer hooks keep reference cycles, so only the cycle collector frees it and its lock).
            gc.collect()
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(held_message(output_dir, _read(path))) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def holder(output_dir: Path) -> tuple[bool, LockRecord | None]:
    """Whether a run holds ``output_dir``'s lock right now, and its record (for ``check``; nothing is created).

    The lock is tested by taking a shared lock for an instant, so a run starting at that very moment could see it
    held and stop; ``check`` is not run beside a starting run in practice.
    """
    path = lock_path(output_dir)
    try:
        import fcntl  # noqa: PLC0415

        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (ImportError, OSError):
        return False, None
    try:
        for attempt in range(2):
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _read(path)
                if attempt == 0 and _held_by_this_process(record):
                    gc.collect()  # a trainer of this process that is garbage now (see acquire)
                    continue
                return True, record
            fcntl.flock(fd, fcntl.LOCK_UN)
            break
        return False, _read(path)
    finally:
        os.close(fd)
