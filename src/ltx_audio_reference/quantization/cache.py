"""The quantized-weight cache: a quantized transformer written once, part by part, and loaded with no bf16 pass.

One cache entry per checkpoint and backend, ``ROOT/<checkpoint stem>-<hash of its path>/<backend>/``:

- ``part-NNN-<part>.safetensors``: one file per part (each transformer block, each other top-level module, the
  root's own tensors), with the part's tensors as the backend saves them (int8 weights and scales, plain tensors for
  what stays in full precision) and, in its metadata, the entry's key digest, the part's name and its quantization
  map;
- ``manifest.json``, written last: the key, and per part its file, size and quantization map.

The key (:func:`cache_key`) is the source checkpoint (its path, size, modification time and a SHA-256 of its
safetensors header), the backend's name and ``version()``, the modules left unquantized, the dtype, where the weights
were quantized (``cuda`` or ``cpu``), the ltx-core version and the cache format. An entry whose key differs (stale:
the checkpoint or a version changed; foreign: written for another checkpoint or backend) is never used: it is
rebuilt, and the log says which field differed.

Every file is written with the package's one atomic write (:func:`~ltx_audio_reference.reliability.files.atomic_file`),
and the manifest only after every part: a write that is killed leaves no manifest (or files the manifest does not
list), so the entry reads as incomplete and is rebuilt. Each part file carries the key digest, so a part left by
another write is never mixed in. One process writes an entry at a time (an exclusive ``flock`` next to it); another
run that finds it locked loads without writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch

from ltx_audio_reference.quantization.base import EXCLUDE_PATTERNS, QuantizationBackend
from ltx_audio_reference.quantization.tensorfile import Header, read_header, read_tensors, write_tensors
from ltx_audio_reference.reliability.files import atomic_write_json, is_temp_name

logger = logging.getLogger(__name__)

#: Version of the on-disk layout; part of the key.
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
#: Metadata key of each part file that holds the entry's key digest.
DIGEST_KEY = "ltx_audio_reference_quantized_cache"
#: Free space kept on the cache's disk beyond the entry's size.
DISK_MARGIN_BYTES = 1_000_000_000


class CacheUnusable(Exception):  # noqa: N818 - a reason, not an error: the caller rebuilds
    """An entry that cannot be used, with the reason the log gives."""


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/ltx-audio-reference/quantized`` (``~/.cache/...`` when ``XDG_CACHE_HOME`` is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ltx-audio-reference" / "quantized"


def cache_root(setting: bool | str | Path | None) -> Path | None:
    """The cache folder an ``acceleration.quantized_cache`` value names: the default for true (or unset), none for
    false, else the path given."""
    if setting is None or setting is True:
        return default_cache_root()
    if setting is False:
        return None
    return Path(setting).expanduser()


def entry_folder(root: Path, checkpoint: Path, backend: str) -> Path:
    """Where the entry of ``checkpoint`` quantized with ``backend`` lives under ``root``."""
    resolved = Path(checkpoint).resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return Path(root) / f"{resolved.stem}-{tag}" / backend


def _ltx_core_version() -> str:
    try:
        return importlib_metadata.version("ltx-core")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def cache_key(
    checkpoint: Path,
    backend: QuantizationBackend,
    *,
    dtype: torch.dtype,
    quantized_on: str,
    skip_root_modules: frozenset[str] | set[str],
    header: Header | None = None,
) -> dict[str, Any]:
    """What an entry must match to be used.

    Args:
        checkpoint: The source ``.safetensors`` file.
        backend: The quantization backend.
        dtype: The dtype of everything left in full precision (and of the scales).
        quantized_on: ``cuda`` or ``cpu``: where the weights are quantized (rounding may differ between devices).
        skip_root_modules: Top-level modules never quantized.
        header: The checkpoint's header, if already read.
    """
    path = Path(checkpoint).resolve()
    stat = path.stat()
    header = header or read_header(path)
    return {
        "format": CACHE_FORMAT,
        "checkpoint": {
            "path": str(path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "header_sha256": header.digest,
        },
        "backend": backend.name,
        "backend_version": backend.version(),
        "unquantized": {"exclude_patterns": list(EXCLUDE_PATTERNS), "skip_root_modules": sorted(skip_root_modules)},
        "dtype": str(dtype).removeprefix("torch."),
        "quantized_on": quantized_on,
        "ltx_core": _ltx_core_version(),
    }


def key_digest(key: dict[str, Any]) -> str:
    """SHA-256 of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:  # noqa: ANN401 - JSON values
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def key_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every field where two keys differ."""
    a, b = _flat(old), _flat(new)
    return [
        f"{k}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


def _part_file(index: int, name: str) -> str:
    return f"part-{index:03d}-{name or 'root'}.safetensors"


@dataclass
class CachedModel:
    """A complete entry whose key matched: read it part by part.

    Attributes:
        folder: The entry's folder.
        manifest: Its manifest.
    """

    folder: Path
    manifest: dict[str, Any]
    _parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._parts = {p["name"]: p for p in self.manifest["parts"]}

    @property
    def total_bytes(self) -> int:
        """Bytes of the part files."""
        return sum(p["bytes"] for p in self._parts.values())

    def read_part(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
        """The part's tensors (views of one pageable host buffer) and its quantization map.

        Raises:
            CacheUnusable: If the part's file is not the one the manifest lists (another write's, or damaged).
        """
        entry = self._parts[name]
        path = self.folder / entry["file"]
        try:
            header = read_header(path)
        except (OSError, ValueError) as e:
            raise CacheUnusable(f"part file {path.name} cannot be read ({e})") from e
        if header.metadata.get(DIGEST_KEY) != self.manifest["key_digest"] or header.metadata.get("part") != name:
            raise CacheUnusable(f"part file {path.name} belongs to another cache write")
        try:
            tensors = read_tensors(header, header.tensors)
        except OSError as e:
            raise CacheUnusable(f"part file {path.name} cannot be read ({e})") from e
        return tensors, entry["layout"]


def open_entry(folder: Path, key: dict[str, Any], parts: list[str]) -> CachedModel:
    """The entry in ``folder`` if it is complete and matches ``key`` and the model's ``parts``.

    Raises:
        CacheUnusable: Saying why not (absent, incomplete, stale, foreign, missing or damaged files).
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            raise CacheUnusable("it is incomplete (no manifest: an earlier write was interrupted)")
        raise CacheUnusable("there is none yet")
    try:
        manifest = json.loads(manifest_path.read_text())
        stored = manifest["key"]
        manifest["parts"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CacheUnusable(f"its manifest cannot be read ({e})") from e
    if stored != key:
        same_source = stored.get("checkpoint", {}).get("path") == key["checkpoint"]["path"]
        kind = "stale" if same_source and stored.get("backend") == key["backend"] else "foreign"
        raise CacheUnusable(f"it is {kind}: " + "; ".join(key_differences(stored, key)))
    if manifest.get("key_digest") != key_digest(key):
        raise CacheUnusable("its manifest's key digest does not match its key")
    listed = [p["name"] for p in manifest["parts"]]
    if listed != parts:
        raise CacheUnusable(f"it is foreign: its parts ({len(listed)}) are not this model's ({len(parts)})")
    for part in manifest["parts"]:
        path = folder / part["file"]
        if not path.is_file():
            raise CacheUnusable(f"part file {part['file']} is missing")
        if path.stat().st_size != part["bytes"]:
            raise CacheUnusable(f"part file {part['file']} has {path.stat().st_size} bytes, not {part['bytes']}")
    return CachedModel(folder=folder, manifest=manifest)


def _ours(name: str) -> bool:
    return name == MANIFEST or (name.startswith("part-") and name.endswith(".safetensors")) or is_temp_name(name)


class CacheWriter:
    """Writes one entry: every part (:meth:`write_part`), then the manifest (:meth:`finish`).

    Create it with :func:`begin_write`. A failed write (a full disk) logs a warning and stops writing; the run goes on
    and the entry stays incomplete, so the next run rebuilds it.
    """

    def __init__(self, folder: Path, key: dict[str, Any], lock: Any) -> None:  # noqa: ANN401 - an open lock file
        self.folder = folder
        self.key = key
        self.digest = key_digest(key)
        self.parts: list[dict[str, Any]] = []
        self.failed: str | None = None
        self._lock = lock

    def write_part(self, name: str, tensors: dict[str, torch.Tensor], layout: dict[str, dict[str, Any]]) -> None:
        """Write one part's file (tensors on any device; copied to the host one at a time)."""
        if self.failed is not None:
            return
        file = _part_file(len(self.parts), name)
        metadata = {DIGEST_KEY: self.digest, "part": name, "layout": json.dumps(layout, sort_keys=True)}
        try:
            write_tensors(self.folder / file, tensors, metadata)
        except OSError as e:
            self._fail(f"writing {file} failed ({e})")
            return
        self.parts.append({"name": name, "file": file, "bytes": (self.folder / file).stat().st_size, "layout": layout})

    def finish(self) -> Path | None:
        """Write the manifest (the entry is usable from then on); returns the entry's folder, or None if it failed."""
        try:
            if self.failed is not None:
                return None
            manifest = {
                "format": CACHE_FORMAT,
                "key": self.key,
                "key_digest": self.digest,
                "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "parts": self.parts,
            }
            try:
                atomic_write_json(self.folder / MANIFEST, manifest)
            except OSError as e:
                self._fail(f"writing the manifest failed ({e})")
                return None
            return self.folder
        finally:
            self.close()

    def abort(self, reason: str) -> None:
        """Stop writing (the entry stays incomplete) and release the lock."""
        self._fail(reason)
        self.close()

    def close(self) -> None:
        """Release the entry's lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            logger.warning("Quantized-weight cache not written to %s: %s", self.folder, reason)


def _lock(folder: Path) -> Any:  # noqa: ANN401 - an open file, or None where flock is unavailable
    """An exclusive lock on the entry, or raises BlockingIOError when another process holds it."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:
        return None
    handle = open(folder.parent / f".{folder.name}.lock", "a")  # noqa: SIM115 - held until the write ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise
    return handle


def begin_write(folder: Path, key: dict[str, Any], expected_bytes: int) -> CacheWriter | None:
    """Clear ``folder`` (only the cache's own files) and start writing an entry there.

    Returns:
        The writer, or None (with a log line saying why) when the entry cannot be written: another process is writing
        it, the folder holds files that are not the cache's, it cannot be created, or its disk lacks the space.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)
    except BlockingIOError:
        logger.info("Quantized-weight cache %s is being written by another process; loading without writing", folder)
        return None
    except OSError as e:
        logger.warning("Quantized-weight cache not written: %s cannot be created (%s)", folder, e)
        return None
    problem = _clear(folder, expected_bytes)
    if problem is not None:
        logger.warning("Quantized-weight cache not written to %s: %s", folder, problem)
        if lock is not None:
            lock.close()
        return None
    return CacheWriter(folder, key, lock)


def _clear(folder: Path, expected_bytes: int) -> str | None:
    """Remove the cache's own files from ``folder``; returns why the entry cannot be written there, or None."""
    try:
        strangers = sorted(p.name for p in folder.iterdir() if not _ours(p.name))
        if strangers:
            return (
                f"it holds files that are not the cache's ({', '.join(strangers[:3])}); point "
                "acceleration.quantized_cache at a folder of its own"
            )
        # The manifest first: from then on no reader takes the entry for complete.
        (folder / MANIFEST).unlink(missing_ok=True)
        for path in folder.iterdir():
            path.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as e:
        return str(e)
    if free < expected_bytes + DISK_MARGIN_BYTES:
        return (
            f"its disk has {free / 1e9:.1f} GB free and the entry needs {expected_bytes / 1e9:.1f} GB "
            f"(+{DISK_MARGIN_BYTES / 1e9:.0f} GB margin); free some space or set acceleration.quantized_cache to a "
            "folder on another disk"
        )
    return None


@contextlib.contextmanager
def writing(writer: CacheWriter | None) -> Iterator[CacheWriter | None]:
    """Abort ``writer`` (leaving an incomplete entry) if the block raises; the caller calls ``finish`` on success."""
    try:
        yield writer
    except BaseException as e:
        if writer is not None:
            writer.abort(f"the load stopped ({type(e).__name__})")
        raise


__all__ = [
    "CACHE_FORMAT",
    "MANIFEST",
    "CacheUnusable",
    "CacheWriter",
    "CachedModel",
    "begin_write",
    "cache_key",
    "cache_root",
    "default_cache_root",
    "entry_folder",
    "key_differences",
    "key_digest",
    "open_entry",
    "writing",
]
