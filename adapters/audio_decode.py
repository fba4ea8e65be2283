"""How a consumer of an exported audio graph turns a WAV file into the graph's inputs, as Graft's server does.

This file is shipped as is in every audio export zip (``audio_decode.py``): it needs only numpy and the
Python standard library (``struct`` reads the RIFF chunks: the standard ``wave`` module reads neither IEEE
float samples nor, before Python 3.12, ``WAVE_FORMAT_EXTENSIBLE``), no Graft code and no scipy. It reproduces
the server's path (service/audio.py):

* decode: PCM integers of 16, 24 or 32 bits, IEEE float of 32 or 64 bits (clipped to [-1, 1]), a plain
  ``fmt `` chunk or ``WAVE_FORMAT_EXTENSIBLE``; channels mixed to mono by averaging (float32);
* resample to the backbone's rate (16 kHz) as ``scipy.signal.resample_poly`` does (its Kaiser-windowed
  FIR filter, beta 5, 10 taps per phase either side, zero padding) when the reduced ratio's factors are
  at most 1024, else as ``scipy.signal.resample`` (FFT) does. The filter is computed here in float64 where
  scipy filters in float32: samples agree within 1e-5 (tests/adapters/test_audio_export.py);
* for heads that read the no-transfer MFCC features (``baseline``, ``hybrid``): the clip as the server
  stores it (16-bit PCM at 16 kHz) and its MFCC summary (adapters/audio_features.py ``mfcc_summary``:
  20 MFCCs of 40 Slaney mel bands, 25 ms periodic-Hann windows every 10 ms, centred frames; their mean and
  standard deviation, the means of three equal time segments, the deltas' mean and standard deviation).
  The graph standardises and L2-normalises it.

Use: ``feeds = inputs(open("clip.wav", "rb").read(), **manifest["preprocessing"]["audio"])``, then
``session.run(None, feeds)``: one clip per call (the graph's windows and pooling are over one clip).
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import Any

import numpy as np

SAMPLES = "samples"  # the graph's input: float32 (1, n), mono, at the backbone's rate, in [-1, 1]
MFCC = "mfcc"  # a baseline or hybrid head's input: float32 (1, 140), the clip's MFCC summary
MAX_POLYPHASE_FACTOR = 1_024  # larger up/down factors resample by FFT, as the server does
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class NotAudio(ValueError):
    """Not a WAV file this decoder (and Graft's server) reads; the message says why."""


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A WAV file's samples as mono float32 in [-1, 1], and its sample rate."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise NotAudio("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int, int] | None = None  # encoding, channels, rate, block align, bits
    body: bytes | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        start = offset + 8
        if start + size > len(data):
            raise NotAudio(f"chunk {chunk!r} declares {size} bytes, {len(data) - start} follow")
        if chunk == b"fmt ":
            if size < 16:
                raise NotAudio("'fmt ' chunk too short")
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", data[start : start + 16])
            if tag == _EXTENSIBLE and size >= 40:
                tag = struct.unpack("<H", data[start + 24 : start + 26])[0]  # the sub-format GUID's first two bytes
            fmt = (tag, channels, rate, align, bits)
        elif chunk == b"data":
            body = data[start : start + size]
        offset = start + size + (size & 1)
    if fmt is None or body is None:
        raise NotAudio("no 'fmt ' or no 'data' chunk")
    tag, channels, rate, align, bits = fmt
    if channels < 1 or align != channels * bits // 8:
        raise NotAudio("block alignment disagrees with channels × bits")
    body = body[: len(body) // align * align]  # a trailing partial frame is dropped
    if tag == _FLOAT and bits in (32, 64):
        values = np.frombuffer(body, dtype="<f4" if bits == 32 else "<f8")
        if not np.isfinite(values).all():
            raise NotAudio("has NaN or infinite samples")
        out = np.clip(values, -1.0, 1.0).astype(np.float32)
    elif tag == _PCM and bits == 16:
        out = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
    elif tag == _PCM and bits == 32:
        out = (np.frombuffer(body, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    elif tag == _PCM and bits == 24:
        triples = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((len(triples), 4), dtype=np.uint8)
        wide[:, 1:] = triples
        out = (wide.view("<i4").ravel() >> 8).astype(np.float32) / 8388608.0
    else:
        raise NotAudio(f"unsupported encoding: format tag {tag}, {bits} bits (PCM 16/24/32 or float 32/64 only)")
    if not len(out):
        raise NotAudio("no samples")
    frames = out.reshape(-1, channels)
    mono = frames[:, 0] if channels == 1 else frames.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def _lowpass(up: int, down: int) -> np.ndarray:
    """``scipy.signal.firwin(2 * half + 1, 1 / max(up, down), window=("kaiser", 5.0)) * up``, float64."""
    max_rate = max(up, down)
    half = 10 * max_rate
    taps = np.arange(2 * half + 1) - half
    h = np.sinc(taps / max_rate) / max_rate * np.kaiser(2 * half + 1, 5.0)
    return h / h.sum() * up


def resample_poly(x: np.ndarray, up: int, down: int, chunk: int = 65_536) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` (zero padding): the polyphase sums, ``chunk`` outputs at a time."""
    g = math.gcd(up, down)
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    h = _lowpass(up, down)
    half = (len(h) - 1) // 2
    n_out = -(-len(x) * up // down)
    pre_pad = down - half % down
    pre_remove = (half + pre_pad) // down
    h = np.concatenate([np.zeros(pre_pad), h])
    taps = -(-len(h) // up)
    phases = np.zeros((up, taps))  # phases[p, j] = h[p + j * up]
    padded = np.concatenate([h, np.zeros(taps * up - len(h))])
    phases[:] = padded.reshape(taps, up).T
    xz = np.concatenate([np.zeros(taps), x, np.zeros(1)])  # x[i] at xz[i + taps]; out of range reads 0
    out = np.empty(n_out)
    for begin in range(0, n_out, chunk):
        m = (np.arange(begin, min(n_out, begin + chunk)) + pre_remove) * down  # indexes of the full convolution
        last, phase = m // up, m % up
        rows = last[:, None] - np.arange(taps)[None, :]  # x indexes, newest first
        rows = np.where((rows >= 0) & (rows < len(x)), rows + taps, 0)
        out[begin : begin + len(m)] = np.einsum("kj,kj->k", xz[rows], phases[phase])
    return out.astype(np.float32)


def resample_fft(x: np.ndarray, num: int) -> np.ndarray:
    """``scipy.signal.resample(x, num)``: the spectrum truncated or zero-padded."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    m = min(num, n)
    spectrum = np.fft.rfft(x)[: m // 2 + 1]
    if m % 2 == 0 and num != n:
        spectrum[m // 2] *= 2 if num < n else 0.5
    return np.fft.irfft(spectrum / (n / num), n=num).astype(np.float32)


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """``samples`` (mono) from ``source`` Hz to ``target`` Hz, float32, as the server resamples."""
    if source == target:
        return np.ascontiguousarray(samples, dtype=np.float32)
    ratio = Fraction(target, source)
    if max(ratio.numerator, ratio.denominator) <= MAX_POLYPHASE_FACTOR:
        return resample_poly(samples, ratio.numerator, ratio.denominator)
    return resample_fft(samples, max(1, math.ceil(len(samples) * target / source)))


def stored(samples: np.ndarray) -> np.ndarray:
    """The clip as the server stores it (16-bit PCM), back as float32: what its MFCC features read."""
    ints = np.clip(np.round(np.clip(samples.astype(np.float64), -1.0, 1.0) * 32768.0), -32768, 32767)
    return (ints.astype("<i2").astype(np.float32) / 32768.0).astype(np.float32)


# -- MFCC summary (adapters/audio_features.py, in numpy alone) ----------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    f_sp, min_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_hz, min_hz / f_sp + np.log(np.maximum(hz, min_hz) / min_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_hz = 200.0 / 3, 1000.0
    min_mel, logstep = min_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_mel, min_hz * np.exp(logstep * (np.maximum(mel, min_mel) - min_mel)), f_sp * mel)


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular Slaney mel filters with unit area, (n_mels, n_fft // 2 + 1), float32 (librosa's default)."""
    bins = np.linspace(0, rate / 2, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2)), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    weights = np.maximum(0, np.minimum(-ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def mfcc(samples: np.ndarray, rate: int = 16_000, n_mfcc: int = 20, n_mels: int = 40) -> np.ndarray:
    """MFCCs (frames, n_mfcc): power spectra of centred 25 ms periodic-Hann frames every 10 ms, mel bands in
    dB (floored at 1e-10), orthonormal DCT-II."""
    n_fft, hop = int(round(rate * 0.025)), int(round(rate * 0.010))
    x = np.asarray(samples, dtype=np.float32)
    x = np.pad(x, n_fft // 2, mode="reflect" if len(x) > n_fft // 2 else "constant")
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    log_mel = 10.0 * np.log10(np.maximum(power @ mel_filterbank(rate, n_fft, n_mels).T, 1e-10))
    k, n = np.arange(n_mels)[None, :], np.arange(n_mfcc)[:, None]
    dct = np.sqrt(2.0 / n_mels) * np.cos(np.pi * n * (2 * k + 1) / (2 * n_mels))
    dct[0] /= np.sqrt(2.0)
    return (log_mel @ dct.T).astype(np.float32)


def mfcc_summary(samples: np.ndarray, rate: int = 16_000, n_mfcc: int = 20, segments: int = 3) -> np.ndarray:
    """The clip's MFCC summary, length ``n_mfcc * (4 + segments)`` (140): as the server's baseline reads it."""
    coefficients = mfcc(samples, rate, n_mfcc)
    deltas = np.diff(coefficients, axis=0) if len(coefficients) > 1 else np.zeros_like(coefficients)
    parts = [part.mean(axis=0) for part in np.array_split(coefficients, segments) if len(part)]
    parts += [coefficients.mean(axis=0)] * (segments - len(parts))
    return np.concatenate([coefficients.mean(axis=0), coefficients.std(axis=0), *parts,
                           deltas.mean(axis=0), deltas.std(axis=0)]).astype(np.float32)


def inputs(wav: bytes, rate: int = 16_000, graph_inputs: Any = (SAMPLES,), **_: Any) -> dict[str, np.ndarray]:
    """The graph's feeds for one WAV file: ``samples`` (1, n) at ``rate`` and, when the graph takes it,
    ``mfcc`` (1, 140) of the stored (16-bit, 16 kHz) clip. ``graph_inputs``: the manifest's
    ``model.inputs``."""
    samples, source = read_wav(wav)
    feeds: dict[str, np.ndarray] = {}
    if SAMPLES in graph_inputs:
        feeds[SAMPLES] = resample(samples, source, rate)[None, :]
    if MFCC in graph_inputs:
        feeds[MFCC] = mfcc_summary(stored(resample(samples, source, 16_000)))[None, :]
    return feeds
