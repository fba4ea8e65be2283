"""service/audio.py: WAV bytes of every supported encoding decode to the same mono signal at the
backbone's rate; hostile files (lying sizes, truncated chunks, zero channels, odd formats) are refused
with a coded AudioError before any work their header would ask for."""

from __future__ import annotations

import io
import struct
import time
import wave

import numpy as np
import pytest
from scipy.io import wavfile

from service import audio
from service.api import errors

LIMITS = audio.Limits(max_bytes=16_000_000, max_seconds=30.0, max_channels=2)


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def chunk(chunk_id: bytes, body: bytes, declared: int | None = None) -> bytes:
    size = len(body) if declared is None else declared
    return chunk_id + struct.pack("<I", size) + body + (b"\0" if len(body) & 1 else b"")


def riff(*chunks: bytes, declared: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if declared is None else declared) + body


def fmt_chunk(tag: int = 1, channels: int = 1, rate: int = 16_000, bits: int = 16, block: int | None = None) -> bytes:
    block = channels * bits // 8 if block is None else block
    return chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits))


def extensible_fmt(sub_tag: int, channels: int, rate: int, bits: int, valid_bits: int | None = None) -> bytes:
    block = channels * bits // 8
    guid = struct.pack("<H", sub_tag) + bytes.fromhex("000000001000800000aa00389b71")
    body = (
        struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, valid_bits or bits, 0) + guid
    )
    return chunk(b"fmt ", body)


ENCODINGS = [("pcm", 16), ("pcm", 24), ("pcm", 32), ("float", 32), ("float", 64)]


@pytest.mark.parametrize("encoding,bits", ENCODINGS)
@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_every_encoding_and_rate_decodes_to_the_same_tone_at_16_khz(encoding: str, bits: int, rate: int) -> None:
    data = audio.encode_wav(tone(rate), rate, bits, encoding)
    clip = audio.decode(data, LIMITS)
    assert clip.rate == rate and abs(clip.seconds - 1.0) < 1e-9
    at16 = clip.at(16_000)
    assert at16.dtype == np.float32 and abs(len(at16) - 16_000) <= 1
    assert abs(dominant_hz(at16, 16_000) - 440) < 2
    rms = float(np.sqrt(np.mean(at16[1000:-1000] ** 2)))
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.01


@pytest.mark.parametrize("bits", [16, 24, 32])
def test_pcm_from_the_standard_library_writer_decodes_exactly(bits: int) -> None:
    rng = np.random.default_rng(bits)
    scale = 2 ** (bits - 1)
    ints = rng.integers(-scale, scale, size=(2000, 2), dtype=np.int64)
    raw = b"".join(int(v).to_bytes(bits // 8, "little", signed=True) for v in ints.ravel())
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(bits // 8)
        writer.setframerate(11_025)
        writer.writeframes(raw)
    clip = audio.decode(buffer.getvalue(), LIMITS)
    expected = (ints / scale).mean(axis=1)
    assert clip.rate == 11_025 and np.allclose(clip.samples, expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64])
def test_scipy_written_files_decode(dtype: type) -> None:
    signal = tone(24_000, 0.5)
    data = (signal * (np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1)).astype(dtype)
    buffer = io.BytesIO()
    wavfile.write(buffer, 24_000, data)
    clip = audio.decode(buffer.getvalue(), LIMITS)
    assert np.allclose(clip.samples, signal, atol=1e-4)


def test_stereo_is_mixed_to_mono() -> None:
    x = tone(16_000, 0.5)
    opposite = audio.decode(audio.encode_wav(np.stack([x, -x], axis=1), 16_000), LIMITS)
    assert np.abs(opposite.samples).max() < 1e-4
    one_side = audio.decode(audio.encode_wav(np.stack([x, np.zeros_like(x)], axis=1), 16_000, 24), LIMITS)
    assert np.allclose(one_side.samples, x / 2, atol=1e-4)


@pytest.mark.parametrize("sub_tag,bits,valid", [(1, 16, 16), (1, 24, 24), (1, 32, 24), (3, 32, 32)])
def test_wave_format_extensible_decodes(sub_tag: int, bits: int, valid: int) -> None:
    x = tone(16_000, 0.25)
    plain = audio.encode_wav(x, 16_000, bits, "float" if sub_tag == 3 else "pcm")
    samples = plain[plain.index(b"data") + 8 :]
    data = riff(extensible_fmt(sub_tag, 1, 16_000, bits, valid), chunk(b"data", samples))
    assert np.allclose(audio.decode(data, LIMITS).samples, x, atol=1e-4)


def test_other_chunks_odd_padding_and_a_lying_riff_size_are_tolerated() -> None:
    x = tone(16_000, 0.25)
    plain = audio.encode_wav(x, 16_000)
    samples = plain[plain.index(b"data") + 8 :]
    for declared in (0, 0xFFFFFFFF, 12):  # streaming writers leave the RIFF size 0 or -1
        data = riff(
            chunk(b"LIST", b"INFOabc"),
            fmt_chunk(),
            chunk(b"fact", b"\0" * 4),
            chunk(b"data", samples),
            declared=declared,
        )
        assert np.allclose(audio.decode(data, LIMITS).samples, x, atol=1e-4)


def test_a_trailing_partial_frame_is_dropped() -> None:
    samples = audio.encode_wav(np.zeros((100, 2)), 16_000)[44:] + b"\x01\x02\x03"
    clip = audio.decode(riff(fmt_chunk(channels=2), chunk(b"data", samples)), LIMITS)
    assert len(clip.samples) == 100


def test_base64_with_and_without_a_data_url() -> None:
    data = audio.encode_wav(tone(16_000, 0.1), 16_000)
    assert audio.from_base64(audio.to_base64(data)) == data
    assert audio.from_base64("data:audio/wav;base64," + audio.to_base64(data)) == data
    with pytest.raises(audio.NotAudio, match="not base64"):
        audio.from_base64("not base64!")


SAMPLES = audio.encode_wav(tone(16_000, 0.1), 16_000)[44:]


@pytest.mark.parametrize(
    "data,error,message",
    [
        (b"", audio.NotAudio, "empty"),
        (b"hello world, not a wav", audio.NotAudio, "not a WAV"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", audio.NotAudio, "not a WAV"),
        (b"RF64\xff\xff\xff\xffWAVEds64", audio.UnsupportedAudio, "RF64"),
        (riff(), audio.NotAudio, "no 'fmt '"),
        (riff(fmt_chunk()), audio.NotAudio, "no 'data'"),
        (riff(chunk(b"data", SAMPLES), fmt_chunk()), audio.NotAudio, "before the 'fmt '"),
        (riff(fmt_chunk(), fmt_chunk(), chunk(b"data", SAMPLES)), audio.NotAudio, "two 'fmt '"),
        (riff(chunk(b"fmt ", b"\x01\x00\x01\x00"), chunk(b"data", SAMPLES)), audio.NotAudio, "at least 16"),
        (riff(fmt_chunk(channels=0, block=0), chunk(b"data", SAMPLES)), audio.NotAudio, "0 channels"),
        (riff(fmt_chunk(block=3), chunk(b"data", SAMPLES)), audio.NotAudio, "block alignment"),
        (riff(fmt_chunk(bits=8), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "8-bit PCM"),
        (riff(fmt_chunk(tag=3, bits=16), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "16-bit float"),
        (riff(fmt_chunk(tag=6, bits=8), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "0x0006"),  # A-law
        (riff(fmt_chunk(tag=0x11, bits=4, block=256), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "0x0011"),
        (riff(extensible_fmt(2, 1, 16_000, 16), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "0x0002"),
        (riff(fmt_chunk(rate=0), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "sample rate of 0"),
        (riff(fmt_chunk(rate=10_000_000), chunk(b"data", SAMPLES)), audio.UnsupportedAudio, "sample rate"),
        (riff(fmt_chunk(), chunk(b"data", b"")), audio.NotAudio, "no samples"),
        (riff(fmt_chunk(), chunk(b"data", b"\x01")), audio.NotAudio, "no samples"),
        # lying sizes: a chunk that declares more than the file holds, however much
        (riff(fmt_chunk(), chunk(b"data", SAMPLES, declared=len(SAMPLES) + 2)), audio.NotAudio, "truncated"),
        (riff(fmt_chunk(), chunk(b"data", SAMPLES, declared=0xFFFFFFF0)), audio.NotAudio, "truncated"),
        (
            riff(chunk(b"LIST", b"abcd", declared=0x7FFFFFFF), fmt_chunk(), chunk(b"data", SAMPLES)),
            audio.NotAudio,
            "truncated",
        ),
        (riff(fmt_chunk())[:-4], audio.NotAudio, "truncated"),
        (riff(*[chunk(b"junk", b"")] * 1_001, fmt_chunk(), chunk(b"data", SAMPLES)), audio.NotAudio, "chunks"),
        (riff(fmt_chunk(channels=6), chunk(b"data", SAMPLES[:1200])), audio.AudioTooLarge, "6 channels"),
        # 31 s at 1 kHz: few bytes, a long clip
        (riff(fmt_chunk(rate=1_000), chunk(b"data", b"\0" * 62_000)), audio.AudioTooLarge, "31.0 s"),
        (
            riff(fmt_chunk(tag=3, bits=32), chunk(b"data", struct.pack("<3f", 0.1, float("nan"), 0.2))),
            audio.NotAudio,
            "NaN",
        ),
        (
            riff(fmt_chunk(tag=3, bits=64), chunk(b"data", struct.pack("<2d", float("inf"), 0.2))),
            audio.NotAudio,
            "infinite",
        ),
    ],
)
def test_hostile_and_unsupported_files_are_refused_with_a_reason(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        audio.decode(data, LIMITS)
    assert isinstance(raised.value, audio.AudioError)


def test_the_byte_limit_is_checked_first() -> None:
    data = audio.encode_wav(tone(16_000, 1.0), 16_000)
    with pytest.raises(audio.AudioTooLarge, match="bytes"):
        audio.decode(data, audio.Limits(max_bytes=len(data) - 1, max_seconds=30, max_channels=2))


def test_the_request_budget_is_charged_from_the_header_before_decoding() -> None:
    budget = audio.SecondsBudget(15.0)
    ten_seconds = audio.encode_wav(np.zeros(160_000), 16_000)
    audio.decode(ten_seconds, LIMITS, budget)
    with pytest.raises(audio.AudioTooLarge, match="GRAFT_MAX_REQUEST_AUDIO_SECONDS"):
        audio.decode(ten_seconds, LIMITS, budget)
    assert budget.spent == 10.0


def test_an_odd_rate_resamples_by_fft_in_bounded_time() -> None:
    rate = 44_101  # 16000/44101 is irreducible: a polyphase filter would need ~10^6 taps
    start = time.perf_counter()
    out = audio.decode(audio.encode_wav(tone(rate, 5.0, 1000.0), rate), LIMITS).at(16_000)
    assert time.perf_counter() - start < 5
    assert abs(len(out) - 80_000) <= 1 and abs(dominant_hz(out, 16_000) - 1000) < 2


def test_random_corruption_never_escapes_as_anything_but_an_audio_error() -> None:
    rng = np.random.default_rng(7)
    good = audio.encode_wav(np.stack([tone(22_050, 0.05)] * 2, axis=1), 22_050, 24)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(good)
        for position in rng.integers(0, 64, size=rng.integers(1, 4)):  # the header and first samples
            data[position] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        try:
            clip = audio.decode(bytes(data), LIMITS)
        except audio.AudioError:
            outcomes["refused"] += 1
        else:
            assert clip.samples.dtype == np.float32 and np.isfinite(clip.samples).all()
            assert np.abs(clip.samples).max() <= 1.0
            outcomes["decoded"] += 1
    assert outcomes["decoded"] and outcomes["refused"]


@pytest.mark.parametrize(
    "exc,status,code",
    [
        (audio.NotAudio("not a WAV"), 422, "invalid_audio"),
        (audio.UnsupportedAudio("A-law"), 415, "unsupported_media_type"),
        (audio.AudioTooLarge("31 s"), 413, "too_large"),
    ],
)
def test_audio_errors_take_their_status_from_the_table(exc: audio.AudioError, status: int, code: str) -> None:
    found = errors.answer_for(exc)
    assert found is not None and (found.status, found.code) == (status, code)
    assert exc.code == code


def test_the_stored_form_is_mono_16_bit_at_16_khz_and_round_trips() -> None:
    stereo = np.stack([tone(44_100, 0.5), tone(44_100, 0.5, amplitude=0.25)], axis=1)
    clip = audio.decode(audio.encode_wav(stereo, 44_100, 24), LIMITS)
    stored = audio.to_stored(clip)
    with wave.open(io.BytesIO(audio.from_base64(stored))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, audio.STORED_RATE)
        assert wav.getnframes() == 8000
    (samples,) = audio.from_stored([stored])
    np.testing.assert_allclose(samples, clip.at(16_000), atol=1 / 32768 + 1e-6)  # 16-bit quantisation only
    assert abs(dominant_hz(samples, 16_000) - 440) < 3
    (at_8k,) = audio.from_stored([stored], 8_000)
    assert len(at_8k) == 4000
