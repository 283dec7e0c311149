"""Clip I/O for the recipes (PyAV): probe a clip, and re-mux it with its audio replaced and its video untouched.

The video stream's packets are copied as they are (no decode, no re-encode), so frames, timestamps and quality are
exactly the source's. The new audio is encoded once (AAC, or Opus in WebM) and interleaved with the video by time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})

# Output container (by input suffix) and its audio encoder. Containers that cannot take AAC are rewritten as MKV.
_CONTAINERS: dict[str, tuple[str, str]] = {
    ".mp4": (".mp4", "aac"),
    ".mov": (".mov", "aac"),
    ".m4v": (".m4v", "aac"),
    ".mkv": (".mkv", "aac"),
    ".webm": (".webm", "libopus"),
}
_FALLBACK_CONTAINER = (".mkv", "aac")
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class ClipInfo:
    """What a clip holds."""

    has_video: bool
    has_audio: bool
    duration_s: float | None


def probe(path: Path) -> ClipInfo:
    """Open a clip and list its streams.

    Raises:
        Exception: Whatever PyAV raises on an unreadable file (the caller reports it as unreadable).
    """
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        duration = container.duration / 1_000_000 if container.duration else None
        return ClipInfo(
            has_video=bool(container.streams.video),
            has_audio=bool(container.streams.audio),
            duration_s=duration,
        )


def target_suffix(source: Path) -> str:
    """The suffix a target clip gets: the source's when its container takes the new audio, else ``.mkv``."""
    return _CONTAINERS.get(source.suffix.lower(), _FALLBACK_CONTAINER)[0]


def replace_audio(source: Path, destination: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``destination``: ``source``'s first video stream copied packet for packet, and ``audio`` as its sound.

    Other streams (further audio tracks, subtitles, data) are dropped.

    Args:
        source: The input clip.
        destination: Output path; its suffix picks the container (see :func:`target_suffix`).
        audio: ``[samples]`` or ``[channels, samples]`` float in [-1, 1]; one or two channels.
        sample_rate: Audio rate in Hz.

    Returns:
        ``destination``.

    Raises:
        ValueError: If ``source`` has no video stream or ``audio`` has more than two channels.
    """
    import av  # noqa: PLC0415

    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if audio.shape[0] > 2:
        raise ValueError(f"audio must be mono or stereo, got {audio.shape[0]} channels")
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    codec = _CONTAINERS.get(destination.suffix.lower(), _FALLBACK_CONTAINER)[1]
    rate = sample_rate
    if codec == "libopus" and rate not in _OPUS_RATES:
        rate = 48000  # the encoder's resampler converts

    with av.open(str(source)) as inp:
        if not inp.streams.video:
            raise ValueError(f"{source}: no video stream")
        video_in = inp.streams.video[0]
        with av.open(str(destination), "w", format=_format_for(destination)) as out:
            video_out = out.add_stream_from_template(video_in)
            sound = out.add_stream(codec, rate=rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(np.clip(audio, -1, 1)), format="fltp", layout=layout
            )
            frame.sample_rate = sample_rate
            frame.pts = 0
            frame.time_base = Fraction(1, sample_rate)
            packets = [*sound.encode(frame), *sound.encode(None)]
            for packet in inp.demux(video_in):
                if packet.size == 0 and packet.dts is None:
                    continue  # the demuxer's flush packet
                packet.stream = video_out
                packets.append(packet)
            packets.sort(key=_packet_time)
            for packet in packets:
                out.mux(packet)
    return destination


def _format_for(path: Path) -> str:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".m4v": "mp4"}.get(path.suffix.lower(), "mp4")


def _packet_time(packet: object) -> float:
    timestamp = packet.dts if packet.dts is not None else (packet.pts or 0)
    return float(timestamp * packet.time_base) if packet.time_base is not None else 0.0
