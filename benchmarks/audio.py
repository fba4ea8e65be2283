"""Audio backbones against a no-transfer baseline, on spoken words synthesised offline (benchmarks/audio_data.py).

1. Keyword classification (10 words): logistic regression on the frozen speech embedding
   (``openwakeword-speech-embedding``) vs MFCC summary features + logistic regression (no transfer),
   at 8 and 64 clips per word, over several draws; tested on clips by speakers of another draw.
2. Speaker identification on the GE2E backbone (``resemblyzer-ge2e``): cosine to each enrolled
   speaker's centroid, with an open-set "unknown" answer under a threshold tuned by leave-one-speaker-out
   CV to a stated false-accept rate, then measured on speakers never enrolled.
3. Embed throughput of each backbone (clips of ~1 s, one call of 64 clips).

    python -m benchmarks.audio --draws 3 --json /tmp/audio.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from adapters.audio_features import mfcc_summary
from benchmarks.audio_data import WORDS, keyword_clips, speaker_clips
from service import audio
from service.backbones.audio import SAMPLE_RATE, SpeakerBackbone, SpeechEmbeddingBackbone

LIMITS = audio.Limits(10**8, 60.0, 2)


def decoded(wavs: list[bytes]) -> list[np.ndarray]:
    return [audio.decode(w, LIMITS).at(SAMPLE_RATE) for w in wavs]


def per_label(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == lab), k, replace=False) for lab in np.unique(labels)])


def keywords(draws: int, pool_per_word: int, test_per_word: int) -> dict:
    pool = keyword_clips(pool_per_word, seed=0)
    test = keyword_clips(test_per_word, n_speakers=24, seed=99)  # other speakers (other voices and pitches)
    pool_x, test_x = decoded([w for w, _, _ in pool]), decoded([w for w, _, _ in test])
    y, y_test = np.array([lab for _, lab, _ in pool]), np.array([lab for _, lab, _ in test])
    speech = SpeechEmbeddingBackbone()
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "speech-embedding + logistic regression": (speech.embed(pool_x), speech.embed(test_x)),
        "MFCC + logistic regression (no transfer)": (np.stack([mfcc_summary(x) for x in pool_x]),
                                                      np.stack([mfcc_summary(x) for x in test_x])),
    }
    out: dict = {}
    for k in (8, 64):
        for method, (train_f, test_f) in features.items():
            scores = []
            for draw in range(draws):
                idx = per_label(y, k, np.random.default_rng(draw))
                model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
                model.fit(train_f[idx], y[idx])
                scores.append(float(np.mean(model.predict(test_f) == y_test)))
            out.setdefault(str(k), {})[method] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)),
                                                  "draws": scores}
    return {"words": WORDS, "test_clips": len(test), "per_label": out}


def speakers(enrolled: int, unknown: int, per_speaker: int, far: float) -> dict:
    clips = speaker_clips(enrolled + unknown, per_speaker * 2)
    ge2e = SpeakerBackbone()
    x = ge2e.embed(decoded([w for w, _ in clips]))
    who = np.array([s for _, s in clips])
    names = list(dict.fromkeys(who))
    known, strangers = names[:enrolled], names[enrolled:]
    # each known speaker: first half of their clips enrol, second half test
    enrol = np.concatenate([np.flatnonzero(who == s)[:per_speaker] for s in known])
    probe = np.concatenate([np.flatnonzero(who == s)[per_speaker:] for s in known])
    impostor = np.concatenate([np.flatnonzero(who == s) for s in strangers])

    def centroids(idx: np.ndarray, people: list[str]) -> np.ndarray:
        c = np.stack([x[idx][who[idx] == s].mean(axis=0) for s in people])
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    # threshold by leave-one-speaker-out over the enrolled speakers: each one's clips, scored against the
    # others' centroids, are impostor trials; the threshold lets `far` of them through
    cv_impostor = []
    for held in known:
        others = [s for s in known if s != held]
        cv_impostor.extend((x[enrol][who[enrol] == held] @ centroids(enrol, others).T).max(axis=1))
    threshold = float(np.quantile(cv_impostor, 1 - far))
    c = centroids(enrol, known)
    probe_scores = x[probe] @ c.T
    predicted = np.array(known)[probe_scores.argmax(axis=1)]
    accepted = probe_scores.max(axis=1) >= threshold
    closed = float(np.mean(predicted == who[probe]))
    open_correct = float(np.mean(accepted & (predicted == who[probe])))
    false_accept = float(np.mean((x[impostor] @ c.T).max(axis=1) >= threshold))
    return {"enrolled_speakers": enrolled, "unknown_speakers": unknown, "enrol_clips_per_speaker": per_speaker,
            "target_false_accept_rate": far, "threshold": threshold, "closed_set_accuracy": closed,
            "open_set_accuracy_known": open_correct, "false_reject_rate_known": float(1 - accepted.mean()),
            "false_accept_rate_unknown": false_accept}


def throughput(n: int = 64) -> dict:
    clips = decoded([w for w, _, _ in keyword_clips(max(1, n // len(WORDS) + 1), seed=5)])[:n]
    out = {}
    backbone: Callable[[], SpeechEmbeddingBackbone | SpeakerBackbone]
    for backbone in (SpeechEmbeddingBackbone, SpeakerBackbone):
        bb = backbone()
        bb.embed(clips[:4])
        start = time.perf_counter()
        bb.embed(clips)
        elapsed = time.perf_counter() - start
        out[bb.name] = {"clips": len(clips), "mean_clip_s": float(np.mean([len(c) for c in clips]) / SAMPLE_RATE),
                        "clips_per_s": len(clips) / elapsed}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--pool-per-word", type=int, default=96)
    parser.add_argument("--test-per-word", type=int, default=30)
    parser.add_argument("--far", type=float, default=0.05)
    parser.add_argument("--json", default="audio-benchmark.json")
    args = parser.parse_args()
    results = {"keywords": keywords(args.draws, args.pool_per_word, args.test_per_word),
               "speakers": speakers(12, 6, 6, args.far), "throughput": throughput()}
    print("| clips per word | method | accuracy (mean ± sd over draws) |\n|---|---|---|")
    for k, methods in results["keywords"]["per_label"].items():
        for method, r in methods.items():
            print(f"| {k} | {method} | {r['mean']:.3f} ± {r['std']:.3f} |")
    s = results["speakers"]
    print(f"\nspeaker id ({s['enrolled_speakers']} enrolled, {s['unknown_speakers']} unknown): closed-set accuracy "
          f"{s['closed_set_accuracy']:.3f}; open set at target FAR {s['target_false_accept_rate']:.0%}: known "
          f"correct {s['open_set_accuracy_known']:.3f}, false reject {s['false_reject_rate_known']:.3f}, unknown "
          f"false accept {s['false_accept_rate_unknown']:.3f}")
    for name, t in results["throughput"].items():
        print(f"throughput {name}: {t['clips_per_s']:.1f} clips/s (clips of {t['mean_clip_s']:.2f} s)")
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
