"""Synthetic voiced speech with a known F0, and synthetic talking-head clips, for tests and benchmarks.

:func:`synthetic_voice` is a source-filter vowel: a Rosenberg glottal pulse train (differentiated, for lip
radiation) through a cascade of two-pole formant resonators, with a slow symmetric intonation and a syllable-rate
loudness envelope. Its median F0 is the ``f0_hz`` it is given, which makes F0 measurement and pitch shifting
testable against a known truth. :func:`write_clip` muxes audio with a small moving test-pattern video (PyAV).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# (frequency Hz, bandwidth Hz) of the first three formants of a few vowels (adult speaker averages).
VOWELS: dict[str, tuple[tuple[float, float], ...]] = {
    "a": ((730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0)),
    "i": ((270.0, 60.0), (2290.0, 100.0), (3010.0, 170.0)),
    "u": ((300.0, 60.0), (870.0, 90.0), (2240.0, 170.0)),
    "e": ((530.0, 70.0), (1840.0, 100.0), (2480.0, 160.0)),
}


def _rosenberg_flow(cycle_fraction: np.ndarray, open_phase: float = 0.4, closing_phase: float = 0.16) -> np.ndarray:
    """The glottal flow pulse over one cycle (fraction in [0, 1)); the caller differentiates it."""
    opening = cycle_fraction < open_phase
    closing = (cycle_fraction >= open_phase) & (cycle_fraction < open_phase + closing_phase)
    flow = np.zeros_like(cycle_fraction)
    flow[opening] = 0.5 * (1.0 - np.cos(np.pi * cycle_fraction[opening] / open_phase))
    flow[closing] = np.cos(np.pi * (cycle_fraction[closing] - open_phase) / (2.0 * closing_phase))
    return flow


def formant_filter(signal: np.ndarray, sample_rate: int, formants: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Apply cascaded two-pole resonators (unit gain at DC) in the frequency domain.

    Args:
        signal: ``[n]`` samples.
        sample_rate: In Hz.
        formants: ``(frequency, bandwidth)`` pairs in Hz.

    Returns:
        ``[n]`` filtered samples. The FFT is zero-padded well past the resonators' decay, so nothing wraps.
    """
    n = len(signal)
    size = 1 << math.ceil(math.log2(n + sample_rate // 10))
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(size, 1.0 / sample_rate) / sample_rate)
    response = np.ones_like(z)
    for frequency, bandwidth in formants:
        r = math.exp(-math.pi * bandwidth / sample_rate)
        c = 2.0 * r * math.cos(2.0 * math.pi * frequency / sample_rate)
        response *= (1.0 - c + r * r) / (1.0 - c * z + r * r * z * z)
    return np.fft.irfft(np.fft.rfft(signal, size) * response, size)[:n]


def synthetic_voice(
    f0_hz: float,
    *,
    sample_rate: int = 16000,
    duration_s: float = 1.0,
    vowel: str = "a",
    intonation_semitones: float = 1.0,
    syllable_rate_hz: float = 4.0,
    noise_db: float = -45.0,
    seed: int = 0,
) -> np.ndarray:
    """A sustained synthetic vowel whose median F0 is ``f0_hz``.

    Args:
        f0_hz: Median fundamental frequency in Hz.
        sample_rate: In Hz.
        duration_s: Length.
        vowel: One of :data:`VOWELS`.
        intonation_semitones: Peak deviation of a slow sinusoidal intonation with a whole number of cycles (so the
            median F0 stays ``f0_hz``).
        syllable_rate_hz: Rate of the loudness envelope (never silent, so every frame stays voiced).
        noise_db: Level of a white noise floor relative to the voice's peak.
        seed: Random seed (noise floor and intonation phase).

    Returns:
        float32 ``[round(duration_s * sample_rate)]`` with peak 0.5.
    """
    rng = np.random.default_rng(seed)
    n = round(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    cycles = max(1, round(duration_s * 1.5))
    contour = intonation_semitones * np.sin(2 * np.pi * cycles / duration_s * t + rng.uniform(0, 2 * np.pi))
    f0 = f0_hz * 2.0 ** (contour / 12.0)
    position = np.cumsum(f0) / sample_rate
    flow = _rosenberg_flow(position % 1.0)
    source = np.diff(flow, prepend=0.0)
    voice = formant_filter(source, sample_rate, VOWELS[vowel])
    envelope = 0.55 + 0.45 * np.cos(2 * np.pi * syllable_rate_hz * t) ** 2
    voice *= envelope
    voice *= 0.5 / (float(np.abs(voice).max()) or 1.0)
    voice += 0.5 * 10.0 ** (noise_db / 20.0) * rng.standard_normal(n)
    return voice.astype(np.float32)


def synthetic_whisper(*, sample_rate: int = 16000, duration_s: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unvoiced speech-like noise (formant-filtered white noise): no F0 anywhere."""
    rng = np.random.default_rng(seed)
    n = round(duration_s * sample_rate)
    noise = formant_filter(rng.standard_normal(n), sample_rate, VOWELS["a"])
    return (0.3 * noise / (float(np.abs(noise).max()) or 1.0)).astype(np.float32)


def write_clip(
    path: Path,
    audio: np.ndarray | None,
    sample_rate: int,
    *,
    duration_s: float = 1.0,
    fps: int = 25,
    size: tuple[int, int] = (64, 64),
    video_codec: str = "libx264",
    audio_codec: str = "aac",
) -> Path:
    """Write a talking-head stand-in: a moving test pattern with ``audio`` as its soundtrack.

    Args:
        path: Output file; the container follows its suffix (``.mp4``, ``.mkv``, ``.mov``).
        audio: ``[n]`` mono or ``[channels, n]`` float samples, or None for a clip without sound.
        sample_rate: Audio rate in Hz.
        duration_s: Video length when ``audio`` is None.
        fps: Video frame rate; the video lasts as long as the audio.
        size: ``(width, height)`` in pixels (even numbers for yuv420p).
        video_codec: FFmpeg video encoder.
        audio_codec: FFmpeg audio encoder.

    Returns:
        ``path``.
    """
    import av  # noqa: PLC0415

    if audio is not None:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        duration_s = audio.shape[1] / sample_rate
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    frames = max(1, math.ceil(duration_s * fps))
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        streams = [video]
        if audio is not None:
            layout = "mono" if audio.shape[0] == 1 else "stereo"
            streams.append(container.add_stream(audio_codec, rate=sample_rate, layout=layout))
        yy, xx = np.mgrid[0:height, 0:width]
        for index in range(frames):
            rgb = np.stack(
                [(xx * 4 + index * 3) % 256, (yy * 4 + index * 5) % 256, np.full_like(xx, (index * 7) % 256)], axis=-1
            ).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = 0
            for packet in streams[1].encode(frame):
                container.mux(packet)
        for stream in streams:
            for packet in stream.encode(None):
                container.mux(packet)
    return path
