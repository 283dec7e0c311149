"""Linux process-memory figures, read from ``/proc`` and cgroup v2: the one home for parsing them.

Used by ``ltx-trainer check``'s host-memory estimate (:func:`cgroup_dir`) and by the benchmarks and tests that measure
host memory (:func:`status`, :func:`private_bytes`). Every reader returns bytes; on a system without these files it
returns an empty result (or None) instead of raising.
"""

from __future__ import annotations

from pathlib import Path

#: ``/proc/<pid>/status`` fields reported by :func:`status`, in bytes.
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def status(pid: int | str = "self") -> dict[str, int]:
    """The memory fields of ``/proc/<pid>/status`` in bytes, plus ``NonReclaimable`` (anonymous + shared pages).

    Anonymous and shared pages (pinned host buffers among them) are what the kernel cannot drop; file-backed pages
    (an mmapped checkpoint) it can. Empty once the process is gone.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    found = {key: int(fields[key].split()[0]) * 1024 for key in STATUS_FIELDS if key in fields}
    if "RssAnon" in found and "RssShmem" in found:
        found["NonReclaimable"] = found["RssAnon"] + found["RssShmem"]
    return found


def private_bytes(pid: int | str = "self") -> int | None:
    """``Private_Clean + Private_Dirty`` of ``/proc/<pid>/smaps_rollup``: the pages that only this process maps.

    A forked child's ``RssAnon`` counts the pages it shares copy-on-write with its parent too; this counts the ones it
    holds alone (a copy the kernel made at ``fork()`` among them). None where the file cannot be read.
    """
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    return sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))


def cgroup_dir(pid: int | str = "self") -> Path | None:
    """The cgroup v2 folder of process ``pid`` under ``/sys/fs/cgroup``, or None (no cgroup v2 entry)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    return None if relative is None else Path("/sys/fs/cgroup") / relative.lstrip("/")
