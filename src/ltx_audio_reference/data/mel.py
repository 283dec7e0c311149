"""The LTX-2 audio VAE's front end (resampling and log-mel) in plain torch, and a torchaudio-free audio VAE import.

ltx-core's ``AudioProcessor`` (``ltx_core/model/audio_vae/ops.py``) turns a waveform into the encoder's input with
torchaudio: ``torchaudio.functional.resample`` to the encoder's rate, then ``MelSpectrogram`` (Hann window, centred
reflect-padded STFT magnitude, Slaney mel scale and norm) and ``log(clamp(mel, 1e-5))``. ``ops.py`` imports
torchaudio at module level, so where torchaudio cannot load (PyPI's Linux torchaudio is a CUDA build that fails
next to a CPU torch, which is why tier 1 runs without it) even ``AudioEncoder`` cannot be imported.

Decision: the encoder itself is plain torch, so

- :func:`import_audio_vae` imports ``ltx_core.model.audio_vae`` normally when torchaudio loads. When it does not, it
  imports it with an inert stand-in registered as ``torchaudio`` for the duration of that one import only. The
  stand-in raises an ``ImportError`` that explains itself on any use (so ltx-core's ``AudioProcessor`` cannot be
  built by accident), and ``sys.modules`` is restored afterwards, so ``importlib.util.find_spec("torchaudio")`` (what
  transformers checks) still says torchaudio is absent.
- :class:`MelFrontEnd` reimplements the same transform in plain torch. It is tested equal to ltx-core's
  ``AudioProcessor`` wherever torchaudio loads (``tests/unit/test_frontend.py``).
- :func:`front_end_for` picks ltx-core's ``AudioProcessor`` when torchaudio loads (bit-for-bit what ltx-trainer's
  ``process_dataset.py`` uses for ``audio_latents/``) and :class:`MelFrontEnd` otherwise.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import logging
import math
import sys
import types
from collections.abc import Iterator
from typing import Any, Literal, Protocol

import torch

logger = logging.getLogger(__name__)

FrontEndChoice = Literal["auto", "ltx-core", "torch"]

_STAND_IN_MESSAGE = (
    "torchaudio cannot be imported here, so ltx_audio_reference imported ltx-core's audio VAE without it: "
    "ltx-core's AudioProcessor is unavailable. Use ltx_audio_reference.data.mel.MelFrontEnd (the same "
    "transform in plain torch), or install a torchaudio that loads next to your torch."
)


def torchaudio_available() -> bool:
    """Whether ``import torchaudio`` succeeds (PyPI's CUDA torchaudio fails to load next to a CPU torch)."""
    if "torchaudio" in sys.modules:
        return not getattr(sys.modules["torchaudio"], "__ltx_audio_reference_stand_in__", False)
    try:
        importlib.import_module("torchaudio")
    except (ImportError, OSError) as e:
        logger.debug("torchaudio is not importable: %s: %s", type(e).__name__, e)
        return False
    return True


@contextlib.contextmanager
def _torchaudio_stand_in() -> Iterator[None]:
    """Register an inert ``torchaudio`` module for the duration of the block, then remove it again."""
    stand_in = types.ModuleType("torchaudio", doc=_STAND_IN_MESSAGE)

    def _getattr(name: str) -> Any:  # noqa: ANN401
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise ImportError(f"torchaudio.{name}: {_STAND_IN_MESSAGE}")

    stand_in.__getattr__ = _getattr  # PEP 562 module-level __getattr__
    stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", loader=None)
    stand_in.__ltx_audio_reference_stand_in__ = True
    sys.modules["torchaudio"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("torchaudio") is stand_in:
            del sys.modules["torchaudio"]


def import_audio_vae() -> types.ModuleType:
    """Import ``ltx_core.model.audio_vae``, also where torchaudio cannot be imported.

    Returns:
        The ``ltx_core.model.audio_vae`` package (``AudioEncoder``, ``AudioEncoderConfigurator``, the key filters).
        Without torchaudio, its ``AudioProcessor`` raises an ``ImportError`` that says to use :class:`MelFrontEnd`.
    """
    name = "ltx_core.model.audio_vae"
    if name in sys.modules or torchaudio_available():
        return importlib.import_module(name)
    logger.debug("Importing %s with a torchaudio stand-in (torchaudio cannot be imported)", name)
    with _torchaudio_stand_in():
        return importlib.import_module(name)


def resample(
    waveform: torch.Tensor,
    orig_sample_rate: int,
    new_sample_rate: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """Band-limited resampling with a Hann-windowed sinc kernel (torchaudio's default ``resample``).

    The ideal reconstruction ``x(t) = sum_i x[i] sinc(pi * f_orig * (i / f_orig - t))`` is truncated to
    ``lowpass_filter_width`` zero crossings of a sinc whose cutoff is ``rolloff`` times the lower Nyquist rate and
    sampled at the new rate. After dividing both rates by their gcd, output sample ``j + new`` uses the same
    weights as sample ``j`` on input shifted by ``orig``, so one strided ``conv1d`` with ``new`` kernels does it.

    Args:
        waveform: ``[..., samples]``, floating point.
        orig_sample_rate: Input rate in Hz (an integer).
        new_sample_rate: Output rate in Hz (an integer).
        lowpass_filter_width: Zero crossings on each side of the kernel; sharper with more.
        rolloff: Cutoff as a fraction of the lower Nyquist frequency, below 1 to limit aliasing.

    Returns:
        ``[..., ceil(samples * new / orig)]`` with ``waveform``'s dtype and device.

    Raises:
        ValueError: If a rate is not a positive integer or ``waveform`` is not floating point.
    """
    for rate in (orig_sample_rate, new_sample_rate):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"sample rates must be positive integers, got {rate}")
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be floating point, got {waveform.dtype}")
    if orig_sample_rate == new_sample_rate:
        return waveform
    gcd = math.gcd(int(orig_sample_rate), int(new_sample_rate))
    orig, new = int(orig_sample_rate) // gcd, int(new_sample_rate) // gcd
    kernel, width = _sinc_kernel(orig, new, lowpass_filter_width, rolloff, waveform.dtype, waveform.device)

    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)  # [batch, new, blocks]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    return out[..., :target_length].reshape(*shape[:-1], -1)


def _sinc_kernel(
    orig: int, new: int, zero_crossings: int, rolloff: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, int]:
    """``new`` polyphase kernels ``[new, 1, 2 * width + orig]`` and the padding ``width``."""
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    phases = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new
    t = ((phases + taps) * cutoff).clamp_(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=dtype, device=device), t.sin() / t)
    return sinc * window * (cutoff / orig), width


def _hz_to_slaney_mel(hz: float) -> float:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    linear_step = 200.0 / 3
    if hz < 1000.0:
        return hz / linear_step
    return 1000.0 / linear_step + math.log(hz / 1000.0) / (math.log(6.4) / 27.0)


def _slaney_mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    linear_step = 200.0 / 3
    break_mel = 1000.0 / linear_step
    log_step = math.log(6.4) / 27.0
    return torch.where(mels >= break_mel, 1000.0 * torch.exp(log_step * (mels - break_mel)), linear_step * mels)


def slaney_mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular mel filters on Slaney's scale with Slaney's area normalisation (librosa's default bank).

    Args:
        n_freqs: STFT bins, ``n_fft // 2 + 1``.
        f_min: Lowest filter edge in Hz.
        f_max: Highest filter edge in Hz.
        n_mels: Number of filters.
        sample_rate: Sample rate in Hz.

    Returns:
        ``[n_freqs, n_mels]`` float32; ``|STFT|^T @ bank`` gives the mel spectrogram.
    """
    bin_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(_hz_to_slaney_mel(f_min), _hz_to_slaney_mel(f_max), n_mels + 2)
    edges = _slaney_mel_to_hz(mel_points)
    spacing = edges[1:] - edges[:-1]
    slopes = edges[None, :] - bin_freqs[:, None]  # [n_freqs, n_mels + 2]
    rising = -slopes[:, :-2] / spacing[:-1]
    falling = slopes[:, 2:] / spacing[1:]
    bank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return bank * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]


class MelFrontEnd(torch.nn.Module):
    """The audio VAE encoder's input transform in plain torch: ltx-core ``AudioProcessor``'s twin.

    Args:
        target_sample_rate: The encoder's rate (``AudioEncoder.sample_rate``, 16 kHz for LTX-2).
        mel_bins: Mel filters (``AudioEncoder.mel_bins``).
        mel_hop_length: STFT hop (``AudioEncoder.mel_hop_length``).
        n_fft: STFT size and window length (``AudioEncoder.n_fft``).
    """

    name = "plain torch (ltx_audio_reference MelFrontEnd)"

    def __init__(self, target_sample_rate: int, mel_bins: int, mel_hop_length: int, n_fft: int) -> None:
        super().__init__()
        self.target_sample_rate = target_sample_rate
        self.mel_bins = mel_bins
        self.mel_hop_length = mel_hop_length
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        bank = slaney_mel_filterbank(n_fft // 2 + 1, 0.0, target_sample_rate / 2.0, mel_bins, target_sample_rate)
        self.register_buffer("mel_bank", bank, persistent=False)

    def forward(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Log-mel spectrogram of ``waveform``.

        Args:
            waveform: ``[batch, channels, samples]`` at ``sample_rate``.
            sample_rate: The waveform's rate in Hz; it is resampled to ``target_sample_rate`` first.

        Returns:
            ``[batch, channels, frames, mel_bins]`` with ``frames = samples' // hop + 1`` (centred frames), in
            ``waveform``'s dtype.
        """
        waveform = resample(waveform, sample_rate, self.target_sample_rate)
        batch_shape, length = waveform.shape[:-1], waveform.shape[-1]
        spec = torch.stft(
            waveform.reshape(-1, length),
            n_fft=self.n_fft,
            hop_length=self.mel_hop_length,
            win_length=self.n_fft,
            window=self.window.to(waveform),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        ).abs()  # [batch * channels, n_freqs, frames]
        mel = torch.matmul(spec.transpose(-1, -2), self.mel_bank.to(spec))  # [batch * channels, frames, mel_bins]
        mel = torch.log(torch.clamp(mel, min=1e-5))
        return mel.reshape(*batch_shape, *mel.shape[-2:]).to(waveform.dtype).contiguous()


class FrontEnd(Protocol):
    """``front_end(waveform [B, C, N], sample_rate) -> log-mel [B, C, frames, mel_bins]``."""

    name: str

    def __call__(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor: ...


class _LtxCoreFrontEnd:
    """ltx-core's own ``AudioProcessor`` (needs torchaudio), behind the :class:`FrontEnd` call signature."""

    name = "ltx-core AudioProcessor (torchaudio)"

    def __init__(self, processor: torch.nn.Module) -> None:
        self.processor = processor

    def __call__(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        from ltx_core.types import Audio  # noqa: PLC0415

        return self.processor.waveform_to_mel(Audio(waveform=waveform, sampling_rate=sample_rate))


def front_end_for(encoder: torch.nn.Module, choice: FrontEndChoice = "auto") -> FrontEnd:
    """The front end matching an ltx-core ``AudioEncoder``'s rate, hop, FFT size and mel bins.

    Args:
        encoder: An ltx-core ``AudioEncoder``.
        choice: ``"ltx-core"`` (its ``AudioProcessor``; needs torchaudio), ``"torch"`` (:class:`MelFrontEnd`) or
            ``"auto"``: ltx-core's where torchaudio loads, else plain torch.

    Returns:
        A callable on the encoder's device.

    Raises:
        ImportError: If ``choice`` is ``"ltx-core"`` and torchaudio cannot be imported.
    """
    params = {
        "target_sample_rate": encoder.sample_rate,
        "mel_bins": encoder.mel_bins,
        "mel_hop_length": encoder.mel_hop_length,
        "n_fft": encoder.n_fft,
    }
    device = next(encoder.parameters()).device
    use_ltx_core = choice == "ltx-core" or (choice == "auto" and torchaudio_available())
    if use_ltx_core:
        if not torchaudio_available():
            raise ImportError(f"front end 'ltx-core' needs torchaudio: {_STAND_IN_MESSAGE}")
        processor = import_audio_vae().AudioProcessor(**params).to(device)
        return _LtxCoreFrontEnd(processor)
    return MelFrontEnd(**params).to(device)
