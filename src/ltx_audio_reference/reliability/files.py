"""The one atomic write of the package: checkpoints, latents, dataset pairs, manifests, reports and plots use it.

A file is written under a hidden temporary name in its own folder (:func:`temp_path_for`: ``.STEM.PID.tmpSUFFIX``,
the suffix kept last so that format-sniffing writers such as FFmpeg and matplotlib still see it), flushed to disk
(``fsync``), renamed over the final name (``os.replace``, atomic within a filesystem), and the folder is flushed so
the rename is durable. A ``SIGKILL`` at any moment leaves either the previous complete file or the new complete one
under the final name, never a partial one; :func:`remove_stale_temps` clears what an interrupted write left.

A write that fails because of the storage (a full disk, a quota, a read-only or vanished folder) raises
:class:`~ltx_audio_reference.errors.StorageError` naming the final path and the errno in words, whatever the writer
raised (safetensors' ``SafetensorError``, torch's ``unexpected pos`` ``RuntimeError``, PyAV's errors):
:func:`storage_error` reads the errno from the error, or else measures the folder by writing one block into it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ltx_audio_reference.errors import StorageError

logger = logging.getLogger(__name__)

TEMP_MARK = ".tmp"
# Stock's _save_training_state writes into the folder it is given; the bridge gives it this sub-folder and moves the
# finished file up, so its own ``.pt.tmp`` name never appears next to the checkpoints.
STAGING_DIR_NAME = ".incoming"
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)" + re.escape(TEMP_MARK) + r"(?:\.[^.]*)?$")
#: Errnos that say the storage cannot take a write (rather than that the writer has a bug).
STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EIO,
        errno.EFBIG,
        errno.ESTALE,
    }
)
# Rust's io::Error (safetensors) and Python's OSError, quoted inside another library's message.
_ERRNO_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")
_PROBE_BYTES = 4096


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk.

    Folders cannot be opened on Windows; there the rename itself is the only guarantee.
    """
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path, pid: int | None = None) -> Path:
    """The temporary name ``path`` is written under: hidden, in the same folder, tagged with a process id.

    ``lora_weights_step_00002.safetensors`` is written as ``.lora_weights_step_00002.<pid>.tmp.safetensors``.

    Args:
        path: The final name.
        pid: The process id in the name (this process by default).
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid() if pid is None else pid}{TEMP_MARK}{path.suffix}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`temp_path_for`'s temporary names (of any process)."""
    return _TEMP_NAME.match(name) is not None


def probe_write(folder: Path) -> int | None:
    """The errno that writing (and flushing) one block into ``folder`` fails with right now, or None if it works.

    Nothing is left behind: the probe file is hidden and removed.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".ltx-write-probe-", dir=folder)
    except OSError as e:
        return e.errno
    try:
        os.write(fd, b"\0" * _PROBE_BYTES)
        os.fsync(fd)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            Path(name).unlink()
    return None


def require_writable(folder: Path, *, safe: str, next_step: str) -> None:
    """Refuse a folder (or, where it does not exist yet, the nearest folder above it) that cannot take a write now.

    For commands to call before any work, so a read-only or full output fails in a second, not after an hour.

    Raises:
        StorageError: Naming ``folder`` and the errno, with ``safe`` and ``next_step`` for the message.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    code = probe_write(existing) if existing.is_dir() else errno.ENOTDIR
    if code is not None:
        raise StorageError(code, folder, safe=safe, next_step=next_step)


def storage_error(error: BaseException, path: Path) -> StorageError | None:
    """The :class:`StorageError` behind a failed write of ``path``, or None when the storage is not the cause.

    The errno comes from the error itself (an ``OSError``, or ``(os error 28)`` / ``[Errno 28]`` in its message);
    otherwise ``path``'s folder is probed with a one-block write, which fails the same way while the disk is full
    (call this before removing the failed partial file, which holds the space).

    Args:
        error: What the writer raised.
        path: The file being written (named in the message).
    """
    if isinstance(error, StorageError):
        return error
    if not isinstance(error, Exception):
        return None  # an interrupt, not the storage
    path = Path(path)
    code = error.errno if isinstance(error, OSError) else None
    if code is None and (match := _ERRNO_IN_TEXT.search(str(error))):
        code = int(match[1] or match[2])
    if code not in STORAGE_ERRNOS:
        # A folder that is gone (deleted, unmounted) is the cause whatever the writer said.
        code = probe_write(path.parent) if path.parent.is_dir() else errno.ENOENT
    if code in STORAGE_ERRNOS:
        return StorageError(code, path)
    return None


#: Errnos only a write raises: an ``OSError`` carrying one is a storage failure wherever it was raised.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def as_storage_error(error: BaseException) -> StorageError | None:
    """``error`` as a :class:`StorageError`: itself, or an ``OSError`` with a write-only errno and a file name.

    For commands that catch what any code raised (the stock runner writes ``training_config.yaml`` with ``open``);
    an ``ENOENT`` or ``EACCES`` there could come from a read, so only write sites (:func:`storage_error`) name those.
    """
    if isinstance(error, StorageError):
        return error
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS and error.filename:
        return StorageError(error.errno, error.filename)
    return None


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s new content to; publish it only if the block succeeds.

    On success the temporary file is flushed to disk, renamed over ``path`` and the folder is flushed. On any
    exception (an interrupt, a full disk) the temporary file is removed and ``path`` keeps its old content, or stays
    absent. The folder is created if needed.

    Raises:
        StorageError: If the storage refused the write (full, read-only, vanished), whatever the writer raised.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (storage_error(e, path) or e) from e
    tmp = temp_path_for(path)
    try:
        yield tmp
        fsync_path(tmp)
        tmp.replace(path)
    except BaseException as error:
        diagnosed = storage_error(error, path)  # before the partial file gives its space back
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if diagnosed is not None and diagnosed is not error:
            raise diagnosed from error
        raise
    fsync_path(path.parent)


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Write a file so that ``path`` holds either its old content or the complete new one, never a partial file.

    Args:
        path: The final file name.
        write: Writes the complete content to the (temporary) path it is given.

    Returns:
        ``path``.
    """
    with atomic_file(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:  # noqa: ANN401 - any JSON-serializable value
    """:func:`atomic_write` of indented JSON with a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_move(src: Path, dst: Path) -> Path:
    """Flush ``src`` to disk, rename it to ``dst`` (same filesystem) and flush ``dst``'s folder.

    Returns:
        ``dst``.
    """
    fsync_path(src)
    Path(src).replace(dst)
    fsync_path(dst.parent)
    return dst


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete what an interrupted save left in ``folder``: other processes' temporary files and the staging folder.

    Call it only where one process writes checkpoints (the main process), before it writes.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file() and int(match["pid"]) != os.getpid():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    staging = folder / STAGING_DIR_NAME
    if staging.is_dir():
        for entry in staging.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    for path in removed:
        logger.info("Removed %s, left by an interrupted save", path)
    return removed
