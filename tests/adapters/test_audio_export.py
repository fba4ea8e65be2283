"""ONNX export of audio tasks against the server's own path, on bare onnxruntime: the shipped decoder
(adapters/audio_decode.py: numpy + stdlib) against service/audio.py's decoding, resampling and stored form;
the speech embedding graph (adapters/audio_export.py) against the backbone; every classification head on it;
the speaker graph (GE2E by torch.onnx.export, partials, head, "unknown") against backbone + head.

The clips are synthesised here with numpy (voiced sounds: a pitch glide, harmonics shaped by three formants,
an envelope, noise), so these tests run without eSpeak NG; tests/integration/test_audio.py repeats the
check on eSpeak speech through the live server's export endpoint."""

from __future__ import annotations

import struct

import numpy as np
import onnxruntime as ort
import pytest

from adapters import audio_decode, heads
from adapters.audio_export import SAMPLES, SIMILARITIES, SPEAKER, with_speaker_head
from adapters.export import PROBABILITIES, fuse, raw_inputs
from adapters.kinds.speakers import fit_speakers
from adapters.training import fit_head
from service import audio
from service.backbones.audio import SpeakerBackbone, SpeechEmbeddingBackbone

LIMITS = audio.Limits(max_bytes=2**31, max_seconds=600.0, max_channels=8)
# Measured: the decoder's samples within 1.1e-7 of the server's (resample_poly filters in float32 there,
# float64 here); the speech embedding graph is the backbone's own nodes (0 difference); the speaker graph's
# DFT as MatMul against scipy's FFT: similarities within 2e-7. The bounds leave room for other CPUs' kernels.
SAMPLES_TOL, PROBA_TOL, SIMILARITY_TOL = 1e-5, 1e-4, 1e-4


def voiced(f0: float, formants: tuple[float, ...], seconds: float, rate: int, rng: np.random.Generator,
           glide: float = 0.0) -> np.ndarray:
    """A vowel-like sound: harmonics of a gliding f0, weighted by resonances at ``formants``, plus noise."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + glide * t / max(seconds, 1e-9))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    out = np.zeros_like(t)
    for k in range(1, int(rate / 2 / (f0 * 1.5))):
        weight = sum(1.0 / (1 + ((k * f0 - f) / 120.0) ** 2) for f in formants)
        out += weight * np.sin(k * phase)
    envelope = np.sin(np.pi * np.clip(t / max(seconds, 1e-9), 0, 1)) ** 0.5
    out = out * envelope / max(np.abs(out).max(), 1e-9) * rng.uniform(0.2, 0.6)
    return (out + rng.normal(0, 0.01, len(t))).astype(np.float32)


WORDS = {"ah": (700, 1200, 2600), "ee": (300, 2300, 3000), "oo": (320, 800, 2300)}


def word_clips(per_word: int, seed: int) -> list[tuple[bytes, str]]:
    """WAV files of three "words" (vowels, with a pitch glide each), at several rates and encodings."""
    rng = np.random.default_rng(seed)
    rates, encodings = [16_000, 22_050, 44_100, 8_000], [(16, "pcm"), (24, "pcm"), (32, "float")]
    out = []
    for i in range(per_word):
        for word, formants in WORDS.items():
            rate = rates[i % len(rates)]
            clip = voiced(rng.uniform(90, 220), formants, rng.uniform(0.4, 1.6), rate, rng, glide=rng.uniform(-.3, .3))
            bits, encoding = encodings[i % len(encodings)]
            out.append((audio.encode_wav(clip, rate, bits, encoding), word))
    return out


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def server_clip(wav: bytes) -> audio.Clip:
    return audio.decode(wav, LIMITS)


@pytest.fixture(scope="module")
def speech() -> SpeechEmbeddingBackbone:
    return SpeechEmbeddingBackbone()


@pytest.fixture(scope="module")
def speaker_backbone() -> SpeakerBackbone:
    return SpeakerBackbone()


def test_shipped_decoder_reads_and_resamples_as_the_server() -> None:
    rng = np.random.default_rng(3)
    stereo = rng.normal(0, 0.2, (9_000, 2)).clip(-1, 1)
    for rate in (16_000, 22_050, 44_100, 48_000, 8_000, 11_025, 44_101):  # 44 101 Hz resamples by FFT
        for bits, encoding in ((16, "pcm"), (24, "pcm"), (32, "pcm"), (32, "float"), (64, "float")):
            wav = audio.encode_wav(stereo if bits == 16 else stereo[:, 0], rate, bits, encoding)
            mine, mine_rate = audio_decode.read_wav(wav)
            clip = server_clip(wav)
            assert mine_rate == clip.rate and np.array_equal(mine, clip.samples), (rate, bits, encoding)
            got = audio_decode.resample(mine, mine_rate, 16_000)
            expected = clip.at(16_000)
            assert got.shape == expected.shape and got.dtype == np.float32
            assert np.abs(got - expected).max() <= SAMPLES_TOL, (rate, bits, np.abs(got - expected).max())
    # WAVE_FORMAT_EXTENSIBLE, as some recorders write it: the sub-format GUID's first bytes decide (PCM here)
    plain = audio.encode_wav(stereo[:, 0], 22_050, 24)
    guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    extended = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 22_050, 22_050 * 3, 3, 24, 22, 24, 4) + guid
    chunks = b"fmt " + struct.pack("<I", len(extended)) + extended + plain[36:]
    wav = b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
    assert np.array_equal(audio_decode.read_wav(wav)[0], server_clip(wav).samples)
    headless = audio.encode_wav(stereo[:, 0], 8000)[:36]
    for bad, why in ((b"not a wav", "RIFF"), (plain[:60], "declares"), (headless, "no")):
        with pytest.raises(audio_decode.NotAudio, match=why):
            audio_decode.read_wav(bad)


def test_shipped_mfcc_summary_is_the_servers_baseline_input() -> None:
    from adapters.audio_features import stored_mfcc_summary

    for wav, _ in word_clips(2, seed=5):
        feeds = audio_decode.inputs(wav, graph_inputs=["mfcc"])
        expected = stored_mfcc_summary(audio.to_stored(server_clip(wav)))
        assert feeds["mfcc"].shape == (1, 140)
        # summaries are dB-scale numbers (tens to hundreds); float32 FFTs of numpy and scipy differ in the last bits
        assert np.abs(feeds["mfcc"][0] - expected).max() <= 1e-3 * max(1.0, np.abs(expected).max())


def test_speech_embedding_graph_is_the_backbone(speech) -> None:
    graph = session(speech.export_graph())
    rng = np.random.default_rng(0)
    # shorter than one window (padded with silence both sides), exactly one, odd lengths, silence, 3 s
    for n in (400, 3_000, speech.min_samples - 1, speech.min_samples, speech.min_samples + 1, 16_001, 48_000):
        clip = voiced(140, WORDS["ah"], n / 16_000, 16_000, rng) if n > 400 else np.zeros(n, np.float32)
        got = graph.run(None, {SAMPLES: clip[None]})[0]
        expected = speech.embed([clip])
        assert got.shape == (1, speech.dim)
        assert np.abs(got - expected).max() <= 1e-5, (n, np.abs(got - expected).max())


@pytest.mark.parametrize("kind", ["linear", "prototype", "hybrid", "baseline"])
def test_exported_classification_head_answers_as_the_server(speech, kind) -> None:
    train, test = word_clips(6, seed=1), word_clips(3, seed=2)
    clips = [server_clip(wav) for wav, _ in train]
    x = speech.embed([c.at(16_000) for c in clips])
    fitted = fit_head(kind, x, [w for _, w in train], raw=[audio.to_stored(c) for c in clips], modality="audio",
                      folds=3)
    head = heads.from_bytes(heads.to_bytes(fitted.head))  # as the service stores it
    graph = fuse(speech.export_graph() if kind != "baseline" else None, head)
    inputs = [i.name for i in graph.graph.input]
    assert sorted(inputs) == sorted({"linear": [SAMPLES], "prototype": [SAMPLES], "hybrid": [SAMPLES, "mfcc"],
                                     "baseline": ["mfcc"]}[kind])
    if kind in ("hybrid", "baseline"):
        assert raw_inputs(head) == {"input": "mfcc", "file": "audio_decode.py", "function": "inputs", "kwargs": {},
                                    "dtype": "float32"}
    run = session(graph)
    test_clips = [server_clip(wav) for wav, _ in test]
    expected = head.predict_proba(speech.embed([c.at(16_000) for c in test_clips]),
                                  [audio.to_stored(c) for c in test_clips])
    got = np.concatenate([run.run([PROBABILITIES], audio_decode.inputs(wav, graph_inputs=inputs))[0]
                          for wav, _ in test])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= PROBA_TOL, np.abs(got - expected).max()
    assert got.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
    accuracy = np.mean([head.labels[i] == w for i, (_, w) in zip(got.argmax(axis=1), test, strict=True)])
    assert accuracy > 1 / len(WORDS), accuracy  # the head learnt the vowels: parity is not of a constant


def speaker_clips(voices: dict[str, tuple[float, tuple[float, ...]]], per: int, seed: int) -> list[tuple[bytes, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for name, (f0, formants) in voices.items():
        for i in range(per):
            seconds = rng.uniform(1.0, 3.5) if i else 0.6  # one shorter than a partial: padded
            clip = voiced(f0 * rng.uniform(0.95, 1.05), formants, seconds, 22_050, rng, glide=rng.uniform(-.2, .2))
            out.append((audio.encode_wav(clip * (0.02 if i == 1 else 1.0), 22_050), name))  # one quiet: made louder
    return out


def test_speaker_graph_answers_as_backbone_and_head(speaker_backbone) -> None:
    voices = {"low": (95.0, (600, 1100, 2500)), "mid": (150.0, (400, 1900, 2700)),
              "high": (240.0, (800, 1500, 3000)), "other": (120.0, (350, 900, 2200))}
    clips = speaker_clips(voices, 5, seed=4)
    enrolled = [(wav, who) for wav, who in clips if who != "other"]
    x = speaker_backbone.embed([server_clip(wav).at(16_000) for wav, _ in enrolled])
    head = heads.from_bytes(heads.to_bytes(fit_speakers(x, [who for _, who in enrolled], folds=3).head))
    graph = session(with_speaker_head(speaker_backbone.export_graph(), head))
    assert [o.name for o in graph.get_outputs()] == [SIMILARITIES, SPEAKER]
    probes = [wav for wav, _ in clips]
    expected = head.predict_proba(speaker_backbone.embed([server_clip(w).at(16_000) for w in probes]))
    named = head.accepted(expected)  # type: ignore[attr-defined]
    got, speaker = zip(*(graph.run(None, audio_decode.inputs(w)) for w in probes), strict=True)
    similarities = np.concatenate(got)
    assert np.abs(similarities - expected).max() <= SIMILARITY_TOL, np.abs(similarities - expected).max()
    margin = np.abs(expected.max(axis=1) - head.threshold) > SIMILARITY_TOL  # not on the threshold itself
    assert np.concatenate(speaker)[margin].tolist() == named[margin].tolist()
    # both answers occur: named speakers and "unknown" (a threshold above every score)
    strict = heads.from_bytes(heads.to_bytes(head))
    strict.threshold = float(expected.max()) + 0.01  # type: ignore[attr-defined]
    strict_graph = session(with_speaker_head(speaker_backbone.export_graph(), strict))
    assert strict_graph.run([SPEAKER], audio_decode.inputs(probes[0]))[0].tolist() == [-1]
    assert (named >= 0).any()


def test_heads_swap_audio_backbones(speech, speaker_backbone) -> None:
    """A speakers task on the speech embedding, a classification head on the speaker encoder: same parity."""
    train, test = word_clips(3, seed=6), word_clips(1, seed=7)
    for backbone, kind in ((speech, "speakers"), (speaker_backbone, "linear")):
        x = backbone.embed([server_clip(wav).at(16_000) for wav, _ in train])
        names = [w for _, w in train]
        fitted = fit_speakers(x, names, folds=3) if kind == "speakers" else fit_head(kind, x, names, folds=3)
        head = heads.from_bytes(heads.to_bytes(fitted.head))
        graph = backbone.export_graph()
        run = session(with_speaker_head(graph, head) if kind == "speakers" else fuse(graph, head))
        expected = head.predict_proba(backbone.embed([server_clip(wav).at(16_000) for wav, _ in test]))
        got = np.concatenate([run.run(None, audio_decode.inputs(wav))[0] for wav, _ in test])
        assert np.abs(got - expected).max() <= PROBA_TOL, (kind, np.abs(got - expected).max())
