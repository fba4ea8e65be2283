"""Audio inputs: decode untrusted WAV bytes safely into mono float32 at a backbone's sample rate.

The pipeline, for every clip Graft sees (examples, predict inputs)::

    base64 text ──from_base64()──► bytes ──decode()──► Clip (float32 samples, mono, source rate)
                                                          │
                                                          └──Clip.at(rate)──► float32 at the backbone's rate

``decode`` reads a RIFF/WAVE file: PCM integer samples of 16, 24 or 32 bits, or IEEE float of 32 or
64 bits (``WAVE_FORMAT_EXTENSIBLE`` with either sub-format too), any number of channels up to
``Limits.max_channels``, any sample rate in ``[MIN_RATE, MAX_RATE]``. Everything it would spend is
checked from the header before a sample is converted: the byte size, the channel count and the
duration (frames ÷ rate, so the work of resampling, which produces ``duration × target rate``
samples, is bounded too), and a request's total duration (:class:`SecondsBudget`). A chunk that
declares more bytes than the file holds, a ``fmt `` chunk that disagrees with itself, or NaN samples
are refused with an :class:`AudioError` whose ``code`` says how the API answers
(``service/api/errors.py``).

Resampling is polyphase (``scipy.signal.resample_poly``) when the rates' reduced ratio is small (every
common rate: 8, 11.025, 16, 22.05, 32, 44.1, 48, 96 kHz…), else FFT resampling
(``scipy.signal.resample``) so an odd rate cannot ask for a filter of millions of taps.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import signal

MIN_RATE = 1_000  # Hz; below it there is no speech to hear
MAX_RATE = 384_000  # Hz; the highest rate audio interfaces record at
MAX_POLYPHASE_FACTOR = 1_024  # larger up/down factors resample by FFT
_DATA_URL = re.compile(r"^data:audio/[A-Za-z0-9.+-]+;base64,")
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# the sub-format GUIDs of WAVE_FORMAT_EXTENSIBLE: the format code then this fixed tail
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_INT_BITS = (16, 24, 32)
_FLOAT_BITS = (32, 64)
_MAX_CHUNKS = 1_000  # chunks before "data": real files have a handful


class AudioError(ValueError):
    """An input Graft will not take as audio; ``code`` says why (service/api/errors.py maps it to a status)."""

    code = "invalid_audio"


class NotAudio(AudioError):
    """Not base64, not a RIFF/WAVE file, or a WAVE file whose header or chunks are malformed or truncated."""


class UnsupportedAudio(AudioError):
    """A well-formed WAVE file in an encoding Graft does not decode (8-bit, A-law, ADPCM, …)."""

    code = "unsupported_media_type"


class AudioTooLarge(AudioError):
    """More bytes, a longer duration or more channels than the limits allow."""

    code = "too_large"


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # encoded size of one clip
    max_seconds: float  # duration of one clip, from its header
    max_channels: int


class SecondsBudget:
    """Seconds of audio one request may decode across all its clips (``GRAFT_MAX_REQUEST_AUDIO_SECONDS``),
    charged from each header before the clip is decoded; beyond it :class:`AudioTooLarge` (413)."""

    def __init__(self, limit: float) -> None:
        self.limit, self.spent = limit, 0.0

    def spend(self, seconds: float) -> None:
        if self.spent + seconds > self.limit:
            raise AudioTooLarge(
                f"would bring this request's audio to {self.spent + seconds:.1f} s in all; the limit is "
                f"{self.limit:g} s per request (GRAFT_MAX_REQUEST_AUDIO_SECONDS): send fewer or shorter clips"
            )
        self.spent += seconds


@dataclass(frozen=True)
class Format:
    """What a WAVE file's ``fmt `` chunk says."""

    encoding: str  # "pcm" | "float"
    channels: int
    rate: int
    bits: int

    @property
    def block_align(self) -> int:
        return self.channels * self.bits // 8


@dataclass(frozen=True)
class Clip:
    """Decoded audio: mono float32 samples in [-1, 1] at ``rate`` Hz."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def at(self, rate: int) -> np.ndarray:
        """The samples at ``rate`` Hz (float32, C-contiguous)."""
        return resample(self.samples, self.rate, rate)


def from_base64(text: str) -> bytes:
    """Strict base64 (a ``data:audio/...;base64,`` prefix is allowed)."""
    try:
        return base64.b64decode(_DATA_URL.sub("", text.strip(), count=1), validate=True)
    except (binascii.Error, ValueError):
        raise NotAudio("is not base64; audio tasks take base64-encoded WAV files") from None


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_fmt(body: bytes) -> Format:
    if len(body) < 16:
        raise NotAudio(f"has a 'fmt ' chunk of {len(body)} bytes; a WAVE format chunk has at least 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 40:
            raise NotAudio("has a WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk shorter than 40 bytes")
        valid_bits = struct.unpack_from("<H", body, 18)[0]
        guid = body[24:40]
        if guid[2:] != _GUID_TAIL:
            raise UnsupportedAudio(
                "is a WAVE_FORMAT_EXTENSIBLE file of an unknown sub-format; Graft takes PCM or float"
            )
        tag = struct.unpack_from("<H", guid)[0]
        if valid_bits and valid_bits != bits and not (tag == _PCM and bits in _INT_BITS and valid_bits <= bits):
            raise NotAudio(f"declares {valid_bits} valid bits in {bits}-bit samples")
    if channels == 0:
        raise NotAudio("declares 0 channels")
    if tag == _PCM and bits in _INT_BITS:
        encoding = "pcm"
    elif tag == _FLOAT and bits in _FLOAT_BITS:
        encoding = "float"
    elif tag in (_PCM, _FLOAT):
        kind = "PCM" if tag == _PCM else "float"
        supported = _INT_BITS if tag == _PCM else _FLOAT_BITS
        raise UnsupportedAudio(
            f"has {bits}-bit {kind} samples; Graft takes {kind} of {', '.join(map(str, supported))} bits"
        )
    else:
        raise UnsupportedAudio(
            f"is encoded with WAVE format 0x{tag:04x}; Graft takes PCM (16/24/32-bit) or float (32/64-bit) WAV"
        )
    fmt = Format(encoding, channels, rate, bits)
    if block_align != fmt.block_align:
        raise NotAudio(
            f"declares a block alignment of {block_align} bytes; {channels} channel(s) of {bits} bits "
            f"take {fmt.block_align}"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise UnsupportedAudio(f"has a sample rate of {rate} Hz; Graft takes {MIN_RATE} to {MAX_RATE} Hz")
    return fmt


def read_header(data: bytes, limits: Limits) -> tuple[Format, memoryview]:
    """The format and the sample bytes (whole frames only) of a WAVE file, checked against ``limits``;
    nothing is converted yet."""
    if len(data) > limits.max_bytes:
        raise AudioTooLarge(f"is {len(data)} bytes; the limit is {limits.max_bytes} bytes per clip")
    if not data:
        raise NotAudio("is empty")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        if data[:4] in (b"RF64", b"BW64"):
            raise UnsupportedAudio("is an RF64/BW64 file; Graft takes RIFF WAVE files (up to 4 GiB)")
        raise NotAudio("is not a WAV file (expected a RIFF header with form type WAVE)")
    # The RIFF size is not trusted (streaming writers leave it 0 or 0xFFFFFFFF): chunks are read from
    # the bytes present, each one's declared size checked against what is left.
    view = memoryview(data)
    offset, fmt, chunks = 12, None, 0
    while True:
        if offset + 8 > len(data):
            what = "has no 'fmt ' chunk" if fmt is None else "has no 'data' chunk"
            raise NotAudio(f"{what} (the file ends after {len(data)} bytes)")
        chunk_id, size = bytes(view[offset : offset + 4]), struct.unpack_from("<I", data, offset + 4)[0]
        body_start = offset + 8
        chunks += 1
        if chunks > _MAX_CHUNKS:
            raise NotAudio(f"has more than {_MAX_CHUNKS} chunks before its samples")
        if chunk_id == b"data":
            if fmt is None:
                raise NotAudio("has its 'data' chunk before the 'fmt ' chunk")
            if size > len(data) - body_start:
                raise NotAudio(
                    f"is truncated: its 'data' chunk declares {size} bytes but {len(data) - body_start} follow"
                )
            usable = size - size % fmt.block_align  # a trailing partial frame is dropped
            frames = usable // fmt.block_align
            seconds = frames / fmt.rate
            if fmt.channels > limits.max_channels:
                raise AudioTooLarge(f"has {fmt.channels} channels; the limit is {limits.max_channels}")
            if seconds > limits.max_seconds:
                raise AudioTooLarge(f"lasts {seconds:.1f} s; the limit is {limits.max_seconds:g} s per clip")
            if frames == 0:
                raise NotAudio("has no samples")
            return fmt, view[body_start : body_start + usable]
        if size > len(data) - body_start:
            raise NotAudio(
                f"is truncated: its {chunk_id!r} chunk declares {size} bytes but {len(data) - body_start} follow"
            )
        if chunk_id == b"fmt ":
            if fmt is not None:
                raise NotAudio("has two 'fmt ' chunks")
            fmt = _parse_fmt(bytes(view[body_start : body_start + size]))
        offset = body_start + size + (size & 1)  # chunks are padded to an even size


def _samples(fmt: Format, raw: memoryview) -> np.ndarray:
    """Interleaved samples as float32 in [-1, 1], shape (frames, channels)."""
    if fmt.encoding == "float":
        values = np.frombuffer(raw, dtype="<f4" if fmt.bits == 32 else "<f8")
        if not np.isfinite(values).all():
            raise NotAudio("has NaN or infinite samples")
        out = np.clip(values, -1.0, 1.0).astype(np.float32)
    elif fmt.bits == 16:
        out = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif fmt.bits == 32:
        out = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:  # 24-bit: three little-endian bytes, sign-extended through the top byte of an int32
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((len(triples), 4), dtype=np.uint8)
        wide[:, 1:] = triples
        out = (wide.view("<i4").ravel() >> 8).astype(np.float32) / 8388608.0
    return out.reshape(-1, fmt.channels)


def decode(data: bytes, limits: Limits, budget: SecondsBudget | None = None) -> Clip:
    """Decode a WAV file into mono float32 at its own rate, or raise an :class:`AudioError` saying why not.
    Its duration is charged to ``budget`` (the request's) from the header, before decoding."""
    fmt, raw = read_header(data, limits)
    if budget is not None:
        budget.spend(len(raw) // fmt.block_align / fmt.rate)
    frames = _samples(fmt, raw)
    mono = frames[:, 0] if fmt.channels == 1 else frames.mean(axis=1, dtype=np.float32)
    return Clip(np.ascontiguousarray(mono, dtype=np.float32), fmt.rate)


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """``samples`` (mono) from ``source`` Hz to ``target`` Hz, float32."""
    if source == target:
        return np.ascontiguousarray(samples, dtype=np.float32)
    ratio = Fraction(target, source)
    if max(ratio.numerator, ratio.denominator) <= MAX_POLYPHASE_FACTOR:
        out = signal.resample_poly(samples, ratio.numerator, ratio.denominator)
    else:
        out = signal.resample(samples, max(1, math.ceil(len(samples) * target / source)))
    return np.ascontiguousarray(out, dtype=np.float32)


def encode_wav(samples: np.ndarray, rate: int, bits: int = 16, encoding: str = "pcm") -> bytes:
    """A WAV file of ``samples`` (float in [-1, 1]; shape (n,) or (n, channels)): PCM of 16/24/32 bits
    or float of 32/64 bits. For tests, benchmarks and clients."""
    frames = np.asarray(samples, dtype=np.float64)
    frames = frames.reshape(len(frames), -1)
    channels = frames.shape[1]
    clipped = np.clip(frames, -1.0, 1.0)
    if encoding == "float":
        body = clipped.astype("<f4" if bits == 32 else "<f8").tobytes()
        tag = _FLOAT
    elif bits in _INT_BITS:
        scale = float(2 ** (bits - 1))
        ints = np.clip(np.round(clipped * scale), -scale, scale - 1).astype("<i4")
        if bits == 16:
            body = ints.astype("<i2").tobytes()
        elif bits == 32:
            body = ints.tobytes()
        else:
            body = ints.reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
        tag = _PCM
    else:
        raise ValueError(f"cannot write {bits}-bit {encoding}")
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    if len(body) & 1:
        chunks += b"\0"
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


# -- the stored form ------------------------------------------------------------------------------

STORED_RATE = 16_000  # Hz: what both audio backbones take, and what the store keeps
_STORED_LIMITS = Limits(max_bytes=2**31, max_seconds=math.inf, max_channels=1)  # written by Graft: trusted


def to_stored(clip: Clip) -> str:
    """A clip as the store keeps it (examples, and a baseline head's raw input at predict): mono 16-bit
    PCM WAV at 16 kHz, base64. Normalised, so every stored clip decodes the same way."""
    return to_base64(encode_wav(clip.at(STORED_RATE), STORED_RATE))


def from_stored(stored: Sequence[str], rate: int = STORED_RATE) -> list[np.ndarray]:
    """Stored clips (:func:`to_stored`) as mono float32 at ``rate`` Hz."""
    return [decode(from_base64(text), _STORED_LIMITS).at(rate) for text in stored]
