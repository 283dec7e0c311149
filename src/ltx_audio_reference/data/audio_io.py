"""Reading and writing audio files without torchaudio (numpy arrays; no torch import, so worker processes start fast).

WAV (PCM 8/16/24/32-bit) always works through the standard library. With the ``recipes`` extra, soundfile adds
FLAC, OGG and float WAV, and PyAV adds everything FFmpeg decodes (MP3, AAC, M4A, the audio track of MP4/MKV/WebM).
"""

from __future__ import annotations

import logging
import struct
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus"})
_SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif"})


class AudioReadError(RuntimeError):
    """An audio file could not be read; the message names the file and says why."""


class _ReaderUnavailableError(Exception):
    """This reader's library is not installed or does not handle the format."""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read an audio file (or a media file's first audio track) as float32.

    Args:
        path: The file.

    Returns:
        ``(waveform [channels, samples] float32 numpy array in [-1, 1], sample_rate)``.

    Raises:
        AudioReadError: If no reader can decode the file, naming the file and each reader's complaint.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"{path}: cannot read audio (no such file)")
    readers: list[tuple[str, Callable[[Path], tuple[np.ndarray, int]]]] = [
        ("wave", _read_wave),
        ("soundfile", _read_soundfile),
        ("PyAV", _read_av),
    ]
    complaints = []
    for name, reader in readers:
        try:
            waveform, sample_rate = reader(path)
        except _ReaderUnavailableError:
            continue
        except Exception as e:  # each library raises its own error types
            complaints.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if waveform.ndim != 2 or waveform.shape[-1] == 0:
            complaints.append(f"{name}: no audio samples")
            continue
        return waveform, sample_rate
    reason = "; ".join(complaints) if complaints else "not a WAV file; install the recipes extra for other formats"
    raise AudioReadError(f"{path}: cannot read audio ({reason})")


def wav_shortfall(path: Path) -> tuple[float, float] | None:
    """For a WAV file whose sample data ends before its header says: ``(declared seconds, seconds present)``.

    Read from the RIFF chunks alone. None for a complete file, a file that is not a RIFF WAV, or a streamed WAV whose
    header leaves the length open (a data size of 0 or 0xFFFFFFFF, as pipes and RF64 write).
    """
    path = Path(path)
    if path.suffix.lower() != ".wav":
        return None
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        bytes_per_second = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = f.read(length + length % 2)
                if len(fmt) >= 12:
                    bytes_per_second = struct.unpack("<I", fmt[8:12])[0]
            elif kind == b"data":
                present = size - f.tell()
                if not bytes_per_second or length in (0, 0xFFFFFFFF) or present >= length:
                    return None
                return length / bytes_per_second, present / bytes_per_second
            else:
                f.seek(length + length % 2, 1)


def needs_pyav(path: Path) -> bool:
    """Whether only PyAV can read ``path`` here: not a WAV, and not a FLAC/OGG/AIFF with soundfile installed."""
    suffix = Path(path).suffix.lower()
    if suffix == ".wav":
        return False
    if suffix in _SOUNDFILE_EXTENSIONS:
        try:
            import soundfile  # noqa: F401, PLC0415
        except (ImportError, OSError):  # soundfile raises OSError when its libsndfile is missing
            return True
        return False
    return True


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    if path.suffix.lower() != ".wav":
        raise _ReaderUnavailableError
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except wave.Error as e:
        if "unknown format" in str(e):  # float WAV: leave it to soundfile
            raise _ReaderUnavailableError from e
        raise
    if width == 1:  # unsigned 8-bit
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        samples = value.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2.0**31).astype(np.float32)
    else:
        raise ValueError(f"unsupported sample width {width} bytes")
    return np.ascontiguousarray(samples.reshape(-1, channels).T), rate


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile  # noqa: PLC0415
    except ImportError as e:
        raise _ReaderUnavailableError from e
    if path.suffix.lower() not in _SOUNDFILE_EXTENSIONS:
        raise _ReaderUnavailableError
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    try:
        import av  # noqa: PLC0415
    except ImportError as e:
        raise _ReaderUnavailableError from e
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.sample_rate
        channels = stream.codec_context.channels or 1
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise ValueError("no audio frames")
    data = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    return np.ascontiguousarray(data[:channels]), int(rate)


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV with the standard library (any reader, torchaudio included, opens it).

    Args:
        path: Output file. Written as given; wrap it in :func:`ltx_audio_reference.reliability.files.atomic_file` for an
            atomic write.
        waveform: ``[channels, samples]`` or ``[samples]``, float in [-1, 1] (clipped).
        sample_rate: Sample rate in Hz.

    Returns:
        ``path``.
    """
    waveform = np.atleast_2d(np.asarray(waveform, dtype=np.float32))
    pcm = np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(waveform.shape[0])
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return path
