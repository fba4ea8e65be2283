"""Spectral features of mono float32 audio, in numpy and scipy only: a power spectrogram, a mel
filterbank (Slaney's scale and area normalisation, as librosa's default), and MFCCs.

The GE2E speaker backbone (``service/backbones/audio.py``) feeds its LSTM the mel power spectrogram
it was trained on (librosa ``melspectrogram``: 25 ms Hann window, 10 ms hop, 40 bands, centred frames
with reflect padding). The MFCC features are the no-transfer baseline for audio tasks: frame-level
MFCCs (and their deltas) pooled over time into one fixed-length vector per clip.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import wave
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from scipy import fft
from scipy.signal import get_window

_F_SP = 200.0 / 3  # Slaney: Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@lru_cache(maxsize=16)
def mel_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), each scaled to unit area (Slaney)."""
    fmax = rate / 2 if fmax is None else fmax
    bins = np.linspace(0, rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights.astype(np.float32)


def power_spectrogram(samples: np.ndarray, n_fft: int, hop: int, center: bool = True) -> np.ndarray:
    """|STFT|² with a periodic Hann window of ``n_fft``, shape (frames, n_fft // 2 + 1); centred frames
    pad the signal by ``n_fft // 2`` on each side (reflected, zeros when it is too short to reflect)."""
    x = np.asarray(samples, dtype=np.float32)
    if center:
        pad = n_fft // 2
        x = np.pad(x, pad, mode="reflect" if len(x) > pad else "constant")
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = get_window("hann", n_fft, fftbins=True).astype(np.float32)
    spectrum = fft.rfft(frames * window, axis=1)
    return (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)


def mel_spectrogram(samples: np.ndarray, rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Mel power spectrogram (not log), shape (frames, n_mels)."""
    return power_spectrogram(samples, n_fft, hop) @ mel_filterbank(rate, n_fft, n_mels).T


def mfcc(samples: np.ndarray, rate: int = 16_000, n_mfcc: int = 20, n_mels: int = 40) -> np.ndarray:
    """MFCCs, shape (frames, n_mfcc): 25 ms windows every 10 ms, log mel energies (dB), orthonormal DCT-II."""
    n_fft, hop = int(round(rate * 0.025)), int(round(rate * 0.010))
    mel = mel_spectrogram(samples, rate, n_fft, hop, n_mels)
    log_mel = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return fft.dct(log_mel, type=2, norm="ortho", axis=1)[:, :n_mfcc].astype(np.float32)


def mfcc_summary(samples: np.ndarray, rate: int = 16_000, n_mfcc: int = 20, segments: int = 3) -> np.ndarray:
    """One fixed-length vector per clip from its MFCCs: mean and standard deviation over the whole clip,
    the mean of each of ``segments`` equal parts (coarse word order), and the mean and standard
    deviation of the deltas. Length ``n_mfcc * (4 + segments)``."""
    coefficients = mfcc(samples, rate, n_mfcc)
    deltas = np.diff(coefficients, axis=0) if len(coefficients) > 1 else np.zeros_like(coefficients)
    parts = [part.mean(axis=0) for part in np.array_split(coefficients, segments) if len(part)]
    parts += [coefficients.mean(axis=0)] * (segments - len(parts))
    return np.concatenate([coefficients.mean(axis=0), coefficients.std(axis=0), *parts,
                           deltas.mean(axis=0), deltas.std(axis=0)]).astype(np.float32)


def stored_samples(stored: str | np.ndarray) -> np.ndarray:
    """A clip as Graft stores it (base64 of a mono 16-bit PCM WAV at 16 kHz, written by the service's
    ``audio.to_stored``) as float32 samples; an array passes through. Trusted input: the service wrote it."""
    if isinstance(stored, np.ndarray):
        return stored.astype(np.float32, copy=False)
    with wave.open(io.BytesIO(base64.b64decode(stored)), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError("not a stored clip: expected mono 16-bit PCM WAV")
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


_SUMMARIES: OrderedDict[bytes, np.ndarray] = OrderedDict()
_SUMMARIES_MAX = 4096  # clips; ~0.6 KB each
_SUMMARIES_LOCK = threading.Lock()


def stored_mfcc_summary(stored: str | np.ndarray, rate: int = 16_000) -> np.ndarray:
    """:func:`mfcc_summary` of a stored clip, memoised by the clip's digest: cross-validation featurizes the
    same clips once per fold and candidate, and the MFCCs do not depend on the fold."""
    data = stored.encode("ascii") if isinstance(stored, str) else np.ascontiguousarray(stored).tobytes()
    key = hashlib.blake2b(data, digest_size=16).digest()
    with _SUMMARIES_LOCK:
        hit = _SUMMARIES.get(key)
        if hit is not None:
            _SUMMARIES.move_to_end(key)
            return hit
    summary = mfcc_summary(stored_samples(stored), rate)
    summary.setflags(write=False)
    with _SUMMARIES_LOCK:
        _SUMMARIES[key] = summary
        while len(_SUMMARIES) > _SUMMARIES_MAX:
            _SUMMARIES.popitem(last=False)
    return summary
