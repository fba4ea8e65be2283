"""service/backbones/audio.py: the packaged audio backbones embed clips of any length, batched results
equal one-by-one results (a clip's embedding never depends on the others in its pass), and the GE2E
checkpoint loads as tensors only."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from adapters.audio_features import hz_to_mel, mel_filterbank, mel_to_hz, power_spectrogram
from service.backbones.audio import GE2EEncoder, SpeakerBackbone, SpeechEmbeddingBackbone, load_ge2e
from service.backbones.registry import BUILTIN, Registry


@pytest.fixture(scope="module")
def backbones() -> dict:
    registry = Registry({n: BUILTIN[n] for n in ("openwakeword-speech-embedding", "resemblyzer-ge2e")}, "cpu")
    return {n: registry.load(n) for n in registry.specs}


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(48_000) / 16_000
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return [(0.05 * rng.standard_normal(n)).astype(np.float32) for n in (300, 8_000, 12_639, 20_000)] + [voiced]


@pytest.mark.parametrize("name,dim", [("openwakeword-speech-embedding", 96), ("resemblyzer-ge2e", 256)])
def test_batched_embeddings_equal_one_by_one_and_are_normalised(backbones: dict, name: str, dim: int) -> None:
    bb = backbones[name]
    assert (bb.modality, bb.dim, bb.revision.startswith("sha256:")) == ("audio", dim, True)
    inputs = clips()
    batched = bb.embed(inputs)
    alone = np.stack([bb.embed([c])[0] for c in inputs])
    assert batched.shape == (len(inputs), dim) and batched.dtype == np.float32
    assert np.allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)
    assert np.abs(batched - alone).max() < 1e-5
    assert np.abs(bb.embed(inputs[::-1])[::-1] - batched).max() < 1e-5  # order kept
    similarity = batched @ batched.T
    assert similarity[4, :4].max() < 0.999  # a voiced tone is not noise


def test_speech_embedding_windows_follow_the_clip_length(backbones: dict) -> None:
    bb: SpeechEmbeddingBackbone = backbones["openwakeword-speech-embedding"]
    counts = [len(w) for w in bb.windows([np.zeros(n, np.float32) + 0.01 for n in (100, 12_640, 16_000, 32_000)])]
    assert counts == [1, 1, 3, 16]  # (frames - 76) // 8 + 1, frames = n / 160 - 3


def test_speaker_partials_follow_resemblyzer(backbones: dict) -> None:
    bb: SpeakerBackbone = backbones["resemblyzer-ge2e"]
    lengths = (1_000, 16_000, 32_000, 80_000, 100_000)
    counts = [len(bb.partials(np.full(n, 0.01, np.float32))) for n in lengths]
    assert counts == [resemblyzer_partials(n) for n in lengths]
    assert bb.partials(np.full(16_000, 0.01, np.float32)).shape[1:] == (160, 40)


def resemblyzer_partials(n: int) -> int:
    """Resemblyzer 0.1.4's compute_partial_slices (rate 1.3, min_coverage 0.75), counting slices."""
    frames, step = math.ceil((n + 1) / 160), int(round(16_000 / 1.3 / 160))
    starts = list(range(0, max(1, frames - 160 + step + 1), step))
    if (n - starts[-1] * 160) / (160 * 160) < 0.75 and len(starts) > 1:
        starts.pop()
    return len(starts)


def test_the_ge2e_checkpoint_is_loaded_as_tensors_only(tmp_path) -> None:
    state = GE2EEncoder().state_dict()
    good = tmp_path / "good.pt"
    torch.save({"model_state": state, "step": 1}, good)
    assert isinstance(load_ge2e(good), GE2EEncoder)
    evil = tmp_path / "evil.pt"
    torch.save({"model_state": state, "payload": _Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_ge2e(evil)


class _Payload:
    """An object a weights_only load must refuse to build."""


def test_mel_scale_and_filterbank() -> None:
    hz = np.array([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0])
    assert np.allclose(mel_to_hz(hz_to_mel(hz)), hz)
    assert hz_to_mel(np.array(1000.0)) == pytest.approx(15.0)
    bank = mel_filterbank(16_000, 400, 40)
    assert bank.shape == (40, 201) and (bank >= 0).all()
    areas = bank.sum(axis=1) * (16_000 / 400)  # Slaney normalisation: each triangle has unit area in Hz
    assert np.allclose(areas[10:], 1.0, rtol=0.05)
    t = np.arange(16_000) / 16_000
    spectrum = power_spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 400, 160)
    assert spectrum.shape == (101, 201) and int(spectrum[50].argmax()) == 25  # 1 kHz = bin 25 of 40 Hz
