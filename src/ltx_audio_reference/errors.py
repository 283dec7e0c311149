"""The package's exception types, shared by the host, the bridge, the strategy and the tools.

Each one says what went wrong and how to fix it; the CLI prints its message without a traceback.
"""

from __future__ import annotations

import errno as errno_codes
import os
from pathlib import Path


class UnknownNameError(LookupError):
    """A lookup named something nobody registered."""


class DuplicateNameError(ValueError):
    """Two plugins registered the same name."""


class ConfigurationError(ValueError):
    """The config or its data cannot train; raised before any model loads, with a message saying how to fix it."""


class CheckpointError(ConfigurationError):
    """A checkpoint or training-state file cannot be used (incomplete, untrusted, or of another model)."""


class NonFiniteError(RuntimeError):
    """A loss, gradient norm or parameter became NaN or Inf; training stopped before it reached a checkpoint."""


class RunFolderError(ConfigurationError):
    """The output folder belongs to another run: it is in use (locked) or holds another run's checkpoints."""


def errno_in_words(code: int) -> str:
    """``28`` -> ``"no space left on device (ENOSPC)"``."""
    name = errno_codes.errorcode.get(code, f"errno {code}")
    return f"{os.strerror(code).lower()} ({name})"


class StorageError(OSError):
    """A file could not be written: a full disk, a read-only or vanished folder, a quota.

    ``str()`` is the whole message for the user: the path, the errno in words, and, where the code that caught it
    knows them, what is safe on disk (``safe``) and how to go on (``next_step``).
    """

    def __init__(self, code: int, path: str | Path, *, safe: str | None = None, next_step: str | None = None) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.path = Path(path)
        self.safe = safe
        self.next_step = next_step

    def __reduce__(self) -> tuple[object, ...]:
        # Worker processes (build-dataset) send it back pickled: keyword arguments must survive.
        return (_rebuild_storage_error, (self.errno, str(self.path), self.safe, self.next_step))

    @property
    def reason(self) -> str:
        """The errno in words: ``no space left on device (ENOSPC)``."""
        return errno_in_words(self.errno)

    def with_context(self, *, safe: str | None = None, next_step: str | None = None) -> StorageError:
        """A copy with what is safe on disk and how to go on (kept where already set and not given)."""
        return StorageError(self.errno, self.path, safe=safe or self.safe, next_step=next_step or self.next_step)

    def __str__(self) -> str:
        parts = [f"Cannot write {self.path}: {self.reason}."]
        if self.safe:
            parts.append(f"Safe on disk: {self.safe}.")
        if self.next_step:
            parts.append(self.next_step)
        return " ".join(parts)


def _rebuild_storage_error(code: int, path: str, safe: str | None, next_step: str | None) -> StorageError:
    return StorageError(code, path, safe=safe, next_step=next_step)


__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "DuplicateNameError",
    "NonFiniteError",
    "RunFolderError",
    "StorageError",
    "UnknownNameError",
    "errno_in_words",
]
