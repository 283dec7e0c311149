"""Faults of the storage (tier-1 and tier-2 fault tests share this): a folder really unwritable for this process,
also as root; a small real filesystem that fills; a read-only mount."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltx_audio_reference.reliability.preflight import write_problem


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable: mode 0o555, and for root (who ignores modes) ``chattr +i`` as well.

    Skips the test where neither works (root on a filesystem without the immutable flag).
    """
    folder.chmod(0o555)
    chattr = shutil.which("chattr")
    immutable = False
    try:
        if write_problem(folder) is None:
            immutable = chattr is not None and subprocess.run([chattr, "+i", str(folder)], check=False).returncode == 0
            if not immutable or write_problem(folder) is None:
                pytest.skip("cannot make a folder unwritable here (root without chattr +i)")
        yield
    finally:
        if immutable:
            subprocess.run([chattr, "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _mount_skip_reason(folder: Path, options: str) -> str | None:
    mount = shutil.which("mount")
    if mount is None:
        return "no mount program here"
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"cannot mount a tmpfs here (mount -t tmpfs needs root or CAP_SYS_ADMIN): {result.stderr.strip()}"
    return None


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "64k", *, read_only: bool = False) -> Iterator[Path]:
    """A real filesystem of ``size`` mounted at ``folder`` (a full disk is then one write away), or read-only.

    Skips the test, with the reason, where a tmpfs cannot be mounted (not root, a container without
    CAP_SYS_ADMIN). Unmounted afterwards, whatever the test left in it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    if (reason := _mount_skip_reason(folder, options)) is not None:
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``folder`` with one file until at most ``leave`` bytes are free (0: it is full).

    Returns:
        The filler file (delete it to give the space back).
    """
    filler = folder / "filler.bin"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                stats = os.statvfs(folder)
                if stats.f_bavail * stats.f_frsize <= leave:
                    break
                f.write(chunk)
        except OSError:
            pass
    return filler
