"""The /proc and cgroup readers of `quantization.memory` that the host-memory estimate, benchmarks and tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx_audio_reference.quantization import memory as hostmem

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")

MB = 2**20


def test_status_counts_touched_anonymous_memory_and_sums_the_non_reclaimable_part() -> None:
    before = hostmem.process_memory()
    block = bytearray(256 * MB)  # zero-filled by calloc: touch every page so that it is resident
    block[::4096] = b"\x01" * len(block[::4096])
    after = hostmem.process_memory()
    assert after["RssAnon"] - before["RssAnon"] >= 200 * MB
    assert after["NonReclaimable"] == after["RssAnon"] + after["RssShmem"]
    assert after["VmHWM"] >= after["VmRSS"] >= after["RssAnon"]
    del block


def test_private_bytes_counts_this_process_pages() -> None:
    before = hostmem.private_bytes()
    block = bytearray(128 * MB)
    block[::4096] = b"\x01" * len(block[::4096])
    assert hostmem.private_bytes() - before >= 100 * MB
    del block


def test_a_gone_process_reads_as_empty() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    pid = int(child.stdout)
    assert hostmem.process_memory(pid) == {}
    assert hostmem.private_bytes(pid) is None
    assert hostmem.cgroup_dir(pid) is None


@pytest.mark.skipif(
    not any(line.startswith("0::") for line in Path("/proc/self/cgroup").read_text().splitlines()),
    reason="no cgroup v2 entry for this process",
)
def test_cgroup_dir_is_this_process_group_folder() -> None:
    group = hostmem.cgroup_dir(os.getpid())
    assert group is not None
    assert group == hostmem.cgroup_dir()
    assert group.is_relative_to("/sys/fs/cgroup")
    if (group / "cgroup.procs").is_file():  # the hierarchy is mounted here
        assert str(os.getpid()) in (group / "cgroup.procs").read_text().split()
