"""Safetensors files read and written a few tensors at a time, without mmap.

The streamed load and the quantized-weight cache read one part of a model (a transformer block) at a time. Reading
through ``mmap`` (what ``safetensors.safe_open`` does) leaves every page it touched mapped into the process for as
long as the file stays open, which is how the stock loader ends up with the whole 38 GB checkpoint in its resident
set. Here a part's tensors are read with plain ``readinto`` calls into one flat host buffer that the part's tensors
are views of: when the part is done with (moved to the GPU, or copied into block swap's pinned buffers), the buffer
is one allocation, which the C library hands straight back to the kernel.

The format is safetensors' own (8-byte little-endian header size, a JSON header, the raw bytes), so
``safetensors.safe_open`` reads the files written here, and the files it writes are read here.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx_audio_reference.reliability.checkpoints import read_safetensors_header
from ltx_audio_reference.reliability.files import atomic_file

#: Offsets of the views inside a flat host buffer, as block swap aligns them (``blockswap.tensors.ALIGNMENT``).
ALIGNMENT = 512

_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file.

    Attributes:
        dtype: Its dtype.
        shape: Its shape.
        start: First byte, counted from the start of the file.
        nbytes: Its size in bytes.
    """

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    nbytes: int


@dataclass(frozen=True)
class Header:
    """A safetensors file's header.

    Attributes:
        path: The file.
        tensors: Name -> where the tensor lies.
        metadata: The ``__metadata__`` strings.
        digest: SHA-256 of the header's content: names, dtypes, shapes, offsets and metadata.
    """

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    digest: str

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data."""
        return sum(t.nbytes for t in self.tensors.values())


def read_header(path: Path) -> Header:
    """Read a safetensors file's header (no tensor data), through the project's one header reader.

    Raises:
        ValueError: If the file is not a complete safetensors file (too short, a header that is not JSON, a size
            other than the header describes) or holds a dtype this reader does not know.
    """
    path = Path(path)
    try:
        header = read_safetensors_header(path)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path} is truncated or not a safetensors file ({e})") from e
    # The reader checked that the file ends where the last tensor does, so the data starts that far before the end.
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    data_start = path.stat().st_size - max(ends, default=0)
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']}, which this reader does not know")
        begin, end = entry["data_offsets"]
        tensors[name] = TensorInfo(_DTYPES[entry["dtype"]], tuple(entry["shape"]), data_start + begin, end - begin)
    return Header(path=path, tensors=tensors, metadata=dict(metadata), digest=digest)


def read_tensors(header: Header, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Read some tensors of a file into one flat pageable host buffer; returns views of it, by name.

    Args:
        header: The file's header (:func:`read_header`).
        names: The tensors to read.

    Raises:
        KeyError: If a name is not in the file.
        OSError: If the file ends early.
    """
    infos = {name: header.tensors[name] for name in names}
    order = sorted(infos, key=lambda n: infos[n].start)
    offsets: dict[str, int] = {}
    total = 0
    for name in order:
        offsets[name] = total
        total = _align(total + infos[name].nbytes)
    flat = torch.empty(max(total, 1), dtype=torch.uint8)
    view = memoryview(flat.numpy())
    with open(header.path, "rb", buffering=0) as f:
        for name in order:
            info, offset = infos[name], offsets[name]
            f.seek(info.start)
            target = view[offset : offset + info.nbytes]
            while len(target):
                count = f.readinto(target)
                if not count:
                    raise OSError(f"{header.path} ended while reading tensor {name}")
                target = target[count:]
    return {name: _as(flat, offsets[name], infos[name]) for name in infos}


def _as(flat: torch.Tensor, offset: int, info: TensorInfo) -> torch.Tensor:
    raw = flat[offset : offset + info.nbytes]
    if info.dtype == torch.uint8:
        return raw.view(info.shape)
    return raw.view(info.dtype).view(info.shape)


def pack(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy tensors (from any device) into one flat pageable host buffer; returns views of it, by name.

    The copies are blocking: a ``non_blocking`` copy from a CUDA tensor to the host allocates page-locked memory from
    torch's host caching allocator, which keeps it after the tensor is freed (see ``docs/memory.md``).
    """
    offsets: dict[str, int] = {}
    total = 0
    for name, tensor in tensors.items():
        offsets[name] = total
        total = _align(total + tensor.numel() * tensor.element_size())
    flat = torch.empty(max(total, 1), dtype=torch.uint8)
    packed = {}
    for name, tensor in tensors.items():
        info = TensorInfo(tensor.dtype, tuple(tensor.shape), 0, tensor.numel() * tensor.element_size())
        packed[name] = _as(flat, offsets[name], info)
        packed[name].copy_(tensor)
    return packed


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (:func:`~ltx_audio_reference.reliability.files.atomic_file`).

    Tensors on a GPU are copied to the host one at a time.

    Returns:
        ``path``.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads its header to 8 bytes
    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for tensor in tensors.values():
            if tensor.numel():
                data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
                f.write(memoryview(data.numpy()))
    return Path(path)


__all__ = ["ALIGNMENT", "Header", "TensorInfo", "pack", "read_header", "read_tensors", "write_tensors"]
