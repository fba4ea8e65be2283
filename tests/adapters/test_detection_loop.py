"""Detection's closed loop in the core: the pooled embedding (OOD and suggest), the detector's uncertainty per
image, suggest with a kind's own uncertainties, per-image scores and the paired promotion comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adapters import heads
from adapters.active import suggest
from adapters.boxes import Letterbox, Objects
from adapters.heads.detection import DetectorHead, ScratchDetectorHead
from adapters.kinds import KINDS, Placed
from adapters.kinds.detection import DetectionFit, image_scores, uncertainty
from adapters.ood import fit_ood
from adapters.selection import compare_scores_on_unseen

KIND = KINDS["detection"]


def placed(width: int, height: int) -> Placed:
    return Placed(np.zeros((256, 256, 3), np.uint8), Letterbox(width, height, 256), width, height)


def test_the_pooled_embedding_averages_the_cells_the_image_covers_only() -> None:
    maps = np.zeros((2, 4, 16, 16), np.float32)
    maps[:, 0, :, :8] = 1.0  # channel 0 on the left half of the canvas
    maps[:, 1, :, 8:] = 5.0  # channel 1 on the right half: padding for a tall image
    tall, square = placed(100, 200), placed(200, 200)  # the tall one covers the left 8 columns (128 px)
    pooled = KIND.pooled(maps, [tall, square])
    assert pooled.shape == (2, 4) and pooled.dtype == np.float32
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1.0)
    assert np.allclose(pooled[0], [1, 0, 0, 0])  # the padding's channel 1 is not seen
    assert pooled[1, 1] > pooled[1, 0] > 0  # the square image covers both halves


def test_an_ood_model_on_pooled_maps_flags_a_shifted_domain_not_the_training_one() -> None:
    rng = np.random.default_rng(0)
    where = [placed(200, 160)] * 120
    base = rng.normal(1.0, 0.3, size=(1, 32, 1, 1)).astype(np.float32)
    domain = base + rng.normal(0, 0.05, size=(120, 32, 16, 16)).astype(np.float32)
    foreign = base[:, ::-1] + rng.normal(0, 0.05, size=(60, 32, 16, 16)).astype(np.float32)
    ood = fit_ood(KIND.pooled(domain[:80], where[:80]), None, fpr=0.05, folds=10, seed=0)
    assert ood.flags(KIND.pooled(domain[80:], where[80:])).mean() <= 0.2
    assert ood.flags(KIND.pooled(foreign, where[:60])).mean() == 1.0


def test_an_images_uncertainty_is_its_most_ambiguous_peak() -> None:
    def found(*scores: float) -> Objects:
        return Objects.of([[0, 0, 10, 10]] * len(scores), [0] * len(scores), list(scores))

    assert uncertainty(found()) == 0.0
    assert uncertainty(found(0.97, 0.02)) == pytest.approx(0.06)
    assert uncertainty(found(0.97, 0.5, 0.02)) == pytest.approx(1.0)
    assert uncertainty(found(0.7)) == pytest.approx(0.6) == uncertainty(found(0.3))


def test_suggest_takes_a_kinds_own_uncertainties() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u = np.full(40, 0.1)
    u[[3, 17, 29]] = [0.9, 1.0, 0.8]
    indices, scores = suggest(x, 3, uncertainty=u, pool_factor=1)
    assert sorted(indices) == [3, 17, 29] and sorted(scores) == pytest.approx([0.8, 0.9, 1.0])
    with pytest.raises(ValueError, match="not both"):
        suggest(x, 3, uncertainty=u, proba=np.full((40, 2), 0.5))
    with pytest.raises(ValueError, match="differ in rows"):
        suggest(x, 3, uncertainty=u[:5])


def test_per_image_scores_and_the_sign_test() -> None:
    truth = [Objects.of([[0, 0, 10, 10]], [0]), Objects.of([], []), Objects.of([], [])]
    found = [
        Objects.of([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.9, 0.2]),  # the right box first: AP 1
        Objects.of([[0, 0, 10, 10]], [1], [0.1]),  # an empty image answered empty at threshold 0.3
        Objects.of([[0, 0, 10, 10]], [1], [0.8]),  # an empty image with a false box at 0.8
    ]
    assert image_scores(truth, found, ["a", "b"]) == [1.0, 1.0, 0.0]
    assert image_scores([truth[0]], [Objects.of([[30, 30, 40, 40]], [0], [0.9])], ["a", "b"]) == [0.0]
    same = compare_scores_on_unseen([0.8] * 20, [0.8] * 20, 2, "AP")
    assert same.promote and same.only_active_right == same.only_new_right == 0 and "20 ties" in same.reason
    noise = compare_scores_on_unseen([0.7] * 3 + [0.9] * 17, [0.9] * 20, 2, "AP")  # b=3, c=0: within noise
    assert noise.promote
    worse = compare_scores_on_unseen([0.2] * 12 + [0.9] * 8, [0.9] * 20, 2, "AP")
    assert not worse.promote and worse.only_active_right == 12 and "beyond noise" in worse.reason
    assert compare_scores_on_unseen([], [], 2).promote


def scenes_on_maps(n: int, seed: int) -> tuple[list[Placed], list[str], np.ndarray]:
    """Feature maps that show where each object is (its label's channel lit over its box): what a detector learns
    from in a few steps; the stored labels of 256 × 256 images."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 0.1, size=(n, 4, 16, 16)).astype(np.float32)
    stored = []
    for i in range(n):
        rows: list[list] = [[256, 256]]  # as the store keeps a label: the image's size, then the boxes
        for _ in range(int(rng.integers(1, 3))):
            label = int(rng.integers(0, 2))
            x, y = (int(v) for v in rng.integers(0, 12, size=2))
            maps[i, label, y : y + 3, x : x + 3] += 2.0
            rows.append([x * 16, y * 16, x * 16 + 48, y * 16 + 48, "ab"[label]])
        stored.append(json.dumps(rows))
    return [placed(256, 256)] * n, stored, maps


def test_a_retrain_worse_on_the_unseen_images_is_not_promoted_and_a_good_one_is() -> None:
    where, stored, maps = scenes_on_maps(40, seed=0)
    truth = KIND.truth(where, stored, ["a", "b"])
    active = DetectorHead(["a", "b"], size=256, channels=4, hidden=16).fit(maps[:20], truth[:20], steps=150, seed=0)
    active = heads.from_bytes(heads.to_bytes(active))  # as the pipeline loads it
    unseen = np.arange(20, 40)
    # a new version that found nothing on the unseen images (out of fold), and one with an extra label "c" that
    # found exactly the true boxes: its label indices are into its own names
    empty = DetectionFit(active, {}, oof=[Objects.of([], [])] * 40, names=["a", "b"])
    exact = [Objects.of(t.boxes, t.labels + 1, np.full(len(t.labels), 0.9)) for t in truth]
    perfect = DetectionFit(active, {}, oof=exact, names=["0", "a", "b"])
    rest = [where[i] for i in unseen]
    worse = KIND.compare_maps(active, maps[unseen], rest, stored[20:], empty, unseen, 1)
    assert not worse.promote and worse.compared_on == 20 and worse.only_active_right > 10, worse
    assert "AP@0.5 per image" in worse.reason and "beyond noise" in worse.reason
    better = KIND.compare_maps(active, maps[unseen], rest, stored[20:], perfect, unseen, 1)
    assert better.promote and better.only_new_right >= better.only_active_right, better
    assert KIND.comparable(perfect) and not KIND.comparable(DetectionFit(active, {}))
    with pytest.raises(ValueError, match="feature maps"):
        KIND.compare_maps(active, None, rest, stored[20:], empty, unseen, 1)


def test_suggest_scores_and_ood_scores_of_a_stored_detector() -> None:
    where, stored, maps = scenes_on_maps(16, seed=1)
    truth = KIND.truth(where, stored, ["a", "b"])
    head = DetectorHead(["a", "b"], size=256, channels=4, hidden=8).fit(maps, truth, steps=20, seed=0)
    assert KIND.ood_scores(head, where, maps) is None  # no OOD model stored with it
    ood = fit_ood(KIND.pooled(maps, where), None, fpr=0.1, folds=4, seed=0)
    restored = heads.from_bytes(heads.to_bytes(head, ood=ood))
    scores = KIND.ood_scores(restored, where, maps)
    assert scores is not None and scores.shape == (16,) and np.allclose(scores, ood.score(KIND.pooled(maps, where)))
    assert KIND.ood_scores(restored, where, None) is None
    pairs = KIND.suggest_scores(restored, where, maps)
    assert len(pairs) == 16 and all(v.shape == (4,) and 0.0 <= u <= 1.0 for v, u in pairs)
    scratch = ScratchDetectorHead(["a", "b"], size=256, channels=8, hidden=8)
    scratch.fit(np.stack([p.pixels for p in where]), truth, steps=2, seed=0)
    assert len(KIND.suggest_scores(scratch, where, maps)) == 16  # reads the canvases; pooled from the maps
