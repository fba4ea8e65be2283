"""Speaker identification (adapters/kinds/speakers.py, adapters/heads/speaker.py) and the MFCC baseline
featurizer of audio tasks (adapters/heads/features.py), on synthetic embeddings and real decoded WAV."""

from __future__ import annotations

import numpy as np
import pytest

from adapters import heads
from adapters.heads.features import FOR_MODALITY, MfccFeatures
from adapters.kinds import kind_of
from adapters.kinds.speakers import cross_fitted_far, fit_speakers, stranger_scores, threshold_at
from adapters.training import TrainingDataError, fit_head
from service import audio


def voices(n_speakers: int, per_speaker: int, spread: float, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Embeddings clustered per speaker: a random direction each, plus noise of ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_speakers, 32))
    x = np.concatenate([c + spread * rng.normal(size=(per_speaker, 32)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"s{k}" for k in range(n_speakers) for _ in range(per_speaker)]


def test_threshold_accepts_at_most_the_stated_share_of_strangers() -> None:
    scores = np.linspace(0.0, 0.99, 100).astype(np.float32)
    for far in (0.0, 0.01, 0.05, 0.2):
        t = threshold_at(scores, far)
        assert np.mean(scores >= t) <= far + 1e-9
        assert np.mean(scores >= np.nextafter(np.float32(t), np.float32(-1)) - 1e-6) > far  # the lowest such
    assert threshold_at(np.array([], np.float32), 0.05) == -1.0


def test_speakers_fit_names_known_voices_and_rejects_strangers() -> None:
    x, names = voices(6, 8, spread=0.6)
    known = [i for i, n in enumerate(names) if n != "s5"]
    result = fit_speakers(x[known], [names[i] for i in known], far=0.05, folds=4)
    head, metrics = result.head, result.metrics
    assert isinstance(head, heads.SpeakerHead) and head.labels == ["s0", "s1", "s2", "s3", "s4"]
    assert metrics["evaluation"] == "cv" and metrics["accuracy"] >= 0.95
    assert metrics["open_set"]["far_target"] == 0.05 and metrics["open_set"]["far_cross_fitted"] <= 0.15
    assert result.oof_pred is not None and result.oof_pred.shape == (len(known),)

    strangers = np.array([i for i, n in enumerate(names) if n == "s5"])
    answers = kind_of("speakers").format(head, head.predict_proba(x[strangers]), top_k=2)
    assert [a.as_json()["speaker"] for a in answers] == [None] * len(strangers)
    own = kind_of("speakers").format(head, head.predict_proba(x[known]), top_k=None)
    assert all(a.speaker in (None, names[i]) for a, i in zip(own, known, strict=True))
    assert sum(a.speaker == names[i] for a, i in zip(own, known, strict=True)) >= 0.8 * len(known)
    first = own[0].as_json()
    assert set(first) == {"speaker", "score", "threshold", "labels"} and len(first["labels"]) == 5
    assert first["labels"][0] == {"label": first["speaker"] or first["labels"][0]["label"], "score": first["score"]}


def test_stranger_scores_leave_the_speaker_out_and_far_is_cross_fitted() -> None:
    x, names = voices(4, 5, spread=0.3)
    y = np.repeat(np.arange(4), 5)
    centroids = heads.speaker.centroids_of(x, y, 4)
    stranger = stranger_scores(x, y, centroids)
    own = (x * centroids[y]).sum(axis=1)
    assert np.all(stranger < own)  # well-separated voices: a clip is nearer its own speaker than any other
    assert 0.0 <= cross_fitted_far(stranger, y, 4, 0.05) <= 0.25


def test_speaker_head_round_trips_and_refuses_too_few_speakers() -> None:
    x, names = voices(3, 4, spread=0.5)
    result = fit_speakers(x, names, far=0.1, folds=3)
    blob = heads.to_bytes(result.head, backbone="resemblyzer-ge2e", dim=32)
    again = heads.from_bytes(blob)
    assert isinstance(again, heads.SpeakerHead) and (again.threshold, again.far) == (result.head.threshold, 0.1)
    np.testing.assert_array_equal(again.predict_proba(x), result.head.predict_proba(x))
    with pytest.raises(TrainingDataError, match="at least 2 speakers"):
        fit_speakers(x[:4], ["a"] * 4)
    single = fit_speakers(x[:3], ["a", "b", "c"])  # one clip each: enrolled, not cross-validated
    assert single.metrics["evaluation"] == "train" and single.oof_pred is None


def test_speakers_kind_takes_audio_only_and_defaults_to_the_speaker_encoder() -> None:
    kind = kind_of("speakers")
    assert kind.new_task_problem("text", None, "auto") == "a speakers task takes modality 'audio', not 'text'"
    assert kind.new_task_problem("audio", None, "auto") is None
    assert kind.default_backbone("audio") == "resemblyzer-ge2e"
    assert kind_of("classification").default_backbone("audio") is None  # the modality's default
    assert "audio" in kind_of("classification").modalities
    assert kind.problem(3) == "a speakers task takes one speaker name (a string), got the number 3"


def tone_clips(freqs: list[float], seconds: float = 0.5, rate: int = 22_050) -> list[str]:
    """Stored clips (base64 16 kHz WAV) of pure tones with a little noise, decoded from WAV as the service does."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    wavs = [audio.encode_wav(0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.normal(size=len(t)), rate) for f in freqs]
    return [audio.to_stored(audio.decode(w, audio.Limits(10**7, 60.0, 2))) for w in wavs]


def test_mfcc_baseline_learns_audio_and_round_trips() -> None:
    assert FOR_MODALITY["audio"] == MfccFeatures.name
    low, high = [200.0 + 10 * i for i in range(6)], [2000.0 + 50 * i for i in range(6)]
    raw = tone_clips(low + high)
    labels = ["low"] * 6 + ["high"] * 6
    result = fit_head("baseline", None, labels, raw=raw, modality="audio", folds=3)
    assert result.metrics["accuracy"] == 1.0
    blob = heads.to_bytes(result.head, backbone="openwakeword-speech-embedding")
    again = heads.from_bytes(blob)
    np.testing.assert_allclose(again.predict_proba(None, raw=raw), result.head.predict_proba(None, raw=raw), atol=1e-6)
    features = again.features  # type: ignore[attr-defined]
    assert isinstance(features, MfccFeatures) and features.transform(raw[:2]).shape == (2, 140)
    # the stored form decodes to the same samples either way: a float array passes through
    samples = audio.from_stored(raw[:1])[0]
    np.testing.assert_allclose(features.transform([samples]), features.transform(raw[:1]), atol=1e-6)


def test_the_false_accept_rate_setting_is_checked_at_startup() -> None:
    from service.config import Settings

    assert Settings.from_env({}).speaker_far == 0.05
    assert Settings.from_env({"GRAFT_SPEAKER_FAR": "0.01"}).speaker_far == 0.01
    with pytest.raises(ValueError, match="GRAFT_SPEAKER_FAR='1.5' is not valid: must be a share"):
        Settings.from_env({"GRAFT_SPEAKER_FAR": "1.5"})
    with pytest.raises(TrainingDataError, match="false-accept rate"):
        fit_speakers(*voices(2, 3, 0.1), far=1.0)
