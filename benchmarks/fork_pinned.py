"""What a ``fork()`` costs when the parent holds page-locked host memory (block swap's pinned copies), measured.

PyTorch's ``DataLoader`` starts its workers with ``fork()`` on Linux, after the trainer has built block swap's pinned
host copies of the swapped blocks (9.3 GB at 48 blocks). Since Linux 5.9 ("mm: Do early cow for pinned pages during
fork()"), anonymous pages that a driver holds with ``pin_user_pages()`` (what NVIDIA's driver does for
``cudaHostRegister``) are copied into the child at fork time instead of being shared copy-on-write. Each worker would
then hold a private copy of every pinned byte, and the fork would take as long as copying it.

For one buffer of ``--gb`` GB, in this process (each case a fresh buffer):

- ``pageable``: a plain host tensor;
- ``registered``: the same, page-locked in place with ``cudaHostRegister`` (block swap's way);
- ``registered + dontfork``: the same, with block swap's ``madvise(MADV_DONTFORK)`` on its pages
  (:func:`ltx_audio_reference.blockswap.engine.keep_out_of_forks`): children do not get the range at all.

it forks a child that reports its own ``RssAnon`` and its private pages, and exits, and prints the fork's duration and
those figures, every case in one run. ``RssAnon`` counts the pages a child maps, shared copy-on-write or copied alike;
a copy shows in the fork's duration and in the private figure (``smaps_rollup``)::

    python benchmarks/fork_pinned.py --gb 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch

from ltx_audio_reference.quantization import memory as hostmem

logger = logging.getLogger("fork_pinned")
GB = 1e9


def _rss_anon_gb(pid: int | str = "self") -> float:
    return hostmem.process_memory(pid).get("RssAnon", 0) / GB


def _private_gb() -> float:
    """This process's own pages, in GB: what a child holds beyond what it shares copy-on-write with its parent
    (``RssAnon`` counts both)."""
    return (hostmem.private_bytes() or 0) / GB


def fork_once() -> dict[str, float]:
    """Fork a child that writes its ``RssAnon`` to a pipe and exits; the fork's duration and that figure."""
    read, write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: touch nothing of the parent's buffers
        os.close(read)
        os.write(write, json.dumps({"child_anon_gb": _rss_anon_gb(), "child_private_gb": _private_gb()}).encode())
        os._exit(0)
    forked = time.perf_counter() - start
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    return {"fork_s": round(forked, 4), **child, "child_ok": os.waitstatus_to_exitcode(status) == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=4.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ltx_audio_reference.blockswap.engine import keep_out_of_forks  # noqa: PLC0415

    if not torch.cuda.is_available():
        parser.exit(2, "fork_pinned.py pins host memory through CUDA: run it on a machine with a CUDA GPU and torch.\n")
    nbytes = int(args.gb * GB)
    torch.cuda.init()
    rows = []
    for case in ("pageable", "registered", "registered + dontfork"):
        host = torch.ones(nbytes, dtype=torch.uint8)  # touched: every page is resident
        registered = case != "pageable"
        if registered:
            status = int(torch.cuda.cudart().cudaHostRegister(host.data_ptr(), host.numel(), 0))
            assert status == 0, f"cudaHostRegister failed ({status})"
        if case.endswith("dontfork"):
            keep_out_of_forks(host.data_ptr(), host.numel())
        row = {"case": case, "buffer_gb": args.gb, "parent_anon_gb": round(_rss_anon_gb(), 2), **fork_once()}
        row["child_anon_gb"] = round(row["child_anon_gb"], 2)
        row["child_private_gb"] = round(row["child_private_gb"], 2)
        rows.append(row)
        logger.info(
            "%-24s fork %.3f s, child RssAnon %.2f GB, of it private %.2f GB",
            case,
            row["fork_s"],
            row["child_anon_gb"],
            row["child_private_gb"],
        )
        if registered:
            torch.cuda.cudart().cudaHostUnregister(host.data_ptr())
        del host
    sys.stdout.write(json.dumps({"device": torch.cuda.get_device_name(), "kernel": os.uname().release, "rows": rows}))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
