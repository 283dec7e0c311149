"""Make a folder really unwritable for this process, also as root (tier-1 and tier-2 fault tests share this)."""

from __future__ import annotations

import contextlib
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
