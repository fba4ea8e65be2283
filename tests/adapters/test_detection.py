"""The detection core: box geometry, NMS, COCO-style average precision against hand-computed cases, the heads'
storage round trip, the kind's label checks (server and client agree) and its negative-transfer guard."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from adapters import heads
from adapters.boxes import Letterbox, Objects, average_precision, batched_nms, evaluate, iou, nms
from adapters.heads.detection import DetectorHead, ScratchDetectorHead
from adapters.kinds import KINDS, Placed
from graft.schemas import label_problem

KIND = KINDS["detection"]


def one(boxes: list, labels: list | None = None, scores: list | None = None) -> Objects:
    return Objects.of(boxes, labels if labels is not None else [0] * len(boxes), scores)


def test_iou_of_hand_computed_boxes() -> None:
    a = [[0, 0, 10, 10]]
    assert iou(a, [[0, 0, 10, 10]])[0, 0] == 1.0
    assert iou(a, [[0, 0, 10, 6]])[0, 0] == pytest.approx(0.6)
    assert iou(a, [[5, 5, 15, 15]])[0, 0] == pytest.approx(25 / 175)
    assert iou(a, [[10, 10, 20, 20]])[0, 0] == 0.0  # touching corners


def test_nms_keeps_the_best_of_overlapping_boxes_and_labels_apart() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    assert nms(boxes[:3], scores[:3], 0.5).tolist() == [1, 2]  # box 0 overlaps box 1 by IoU 0.82
    assert nms(boxes[:3], scores[:3], 0.9).tolist() == [1, 0, 2]  # under the threshold: both stay
    # box 3 has another label: it suppresses nothing and is not suppressed
    assert batched_nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5).tolist() == [1, 3, 2]


def test_average_precision_of_a_hand_computed_case() -> None:
    """Two true boxes; detections by score: hit, miss, hit. Precision/recall: (1, 0.5), (0.5, 0.5), (2/3, 1).
    Made monotone: 1 up to recall 0.5, 2/3 beyond. Read at the 101 recall points: 51 points (0..0.50) at 1 and
    50 points (0.51..1) at 2/3: AP = (51 + 50 * 2/3) / 101."""
    truth = [one([[0, 0, 10, 10], [20, 20, 30, 30]])]
    found = [one([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], scores=[0.9, 0.8, 0.7])]
    assert average_precision(truth, found, 0, 0.5) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_average_precision_edge_cases() -> None:
    truth = [one([[0, 0, 10, 10]])]
    assert average_precision(truth, [one([])], 0, 0.5) == 0.0  # nothing found
    assert average_precision(truth, truth, 0, 0.5) == 1.0
    # a duplicate (lower score) is a false positive after the last true positive: precision stays 1 at all recall
    dup = [one([[0, 0, 10, 10], [0, 0, 10, 10]], scores=[0.9, 0.8])]
    assert average_precision(truth, dup, 0, 0.5) == 1.0
    # the duplicate scored higher but misplaced (IoU 0.36): a false positive first, then the hit: AP 0.5
    first_wrong = [one([[0, 0, 6, 6], [0, 0, 10, 10]], scores=[0.9, 0.8])]
    assert average_precision(truth, first_wrong, 0, 0.5) == pytest.approx(0.5)
    # the right label matters: a perfect box of label 1 is no hit for label 0
    assert average_precision(truth, [one([[0, 0, 10, 10]], labels=[1])], 0, 0.5) == 0.0
    assert average_precision([one([])], [one([[0, 0, 1, 1]])], 0, 0.5) is None  # no truth: no AP


def test_a_detection_equally_close_to_two_true_boxes_takes_the_later_one_as_cocoeval_does() -> None:
    """True boxes 0-10 and 2-12; the first detection (1-11) overlaps both by IoU 9/11 (0.82), the second (0-10)
    is the first true box exactly (IoU 2/3 with the other). COCOeval keeps the last of equally good true boxes, so
    up to threshold 0.80 the second detection meets the free first box at IoU 1: both hit, AP 1. Taking the first
    box instead left it only IoU 2/3 with the second: a false positive from 0.70 up (AP 51/101 there). From 0.85
    the first detection hits nothing, the second hits the first box: AP 0.5 * 51/101 either way. Checked against
    pycocotools by benchmarks/coco_check.py."""
    truth = [one([[0, 0, 10, 10], [2, 0, 12, 10]])]
    found = [one([[1, 0, 11, 10], [0, 0, 10, 10]], scores=[0.9, 0.8])]
    assert average_precision(truth, found, 0, 0.75) == 1.0  # first-box matching: 51/101
    assert average_precision(truth, found, 0, 0.9) == pytest.approx(0.5 * 51 / 101)
    assert evaluate(truth, found, ["a"])["map"] == pytest.approx((7 + 3 * 0.5 * 51 / 101) / 10)


def test_map_over_thresholds_and_labels() -> None:
    """One box found at IoU 0.6: a hit at thresholds 0.50, 0.55, 0.60 of the ten, so its AP@0.5:0.95 is 0.3;
    the second label is found exactly (1.0 at every threshold); label 'c' has no true box and counts nowhere."""
    truth = [one([[0, 0, 10, 10]], [0]), one([[5, 5, 25, 25]], [1])]
    found = [one([[0, 0, 10, 6]], [0], [0.9]), one([[5, 5, 25, 25]], [1], [0.8])]
    result = evaluate(truth, found, ["a", "b", "c"])
    assert result["per_label"]["a"] == {"ap_50": 1.0, "ap": pytest.approx(0.3), "boxes": 1}
    assert result["per_label"]["b"] == {"ap_50": 1.0, "ap": 1.0, "boxes": 1}
    assert result["per_label"]["c"] == {"ap_50": None, "ap": None, "boxes": 0}
    assert result["map_50"] == 1.0 and result["map"] == pytest.approx(0.65)


def test_letterbox_maps_boxes_both_ways() -> None:
    placement = Letterbox(300, 150, 256)
    assert placement.scale == pytest.approx(256 / 300) and placement.inner == (256, 128)
    boxes = np.array([[10.5, 20, 290, 149]])
    assert np.allclose(placement.from_canvas(placement.to_canvas(boxes)), boxes)
    assert placement.from_canvas(np.array([[-5, -5, 300, 300]])).tolist() == [[0, 0, 300, 150]]  # clipped
    # a caller's image of 600×300, normalised to 300×150 before the letterbox: answers in the caller's pixels
    where = Placed(np.zeros((256, 256, 3), np.uint8), placement, 600, 300)
    assert np.allclose(where.to_caller(placement.to_canvas(boxes)), boxes * 2)
    assert np.allclose(where.to_canvas(boxes * 2, (600, 300)), placement.to_canvas(boxes))


@pytest.mark.parametrize("cls", [DetectorHead, ScratchDetectorHead])
def test_a_detection_head_round_trips_through_its_blob(cls: type) -> None:
    rng = np.random.default_rng(0)
    if cls is DetectorHead:
        inputs = rng.normal(size=(6, 32, 4, 4)).astype(np.float32)
        head = cls(["a", "b"], size=64, channels=32, hidden=8)
    else:
        inputs = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
        head = cls(["a", "b"], size=64, channels=16, hidden=8)
    truth = [one([[8, 8, 40, 40]], [i % 2]) for i in range(6)]
    head.fit(inputs, truth, steps=3, seed=0)
    blob = heads.to_bytes(head, backbone="mobilenet_v2")
    restored = heads.from_bytes(blob)
    assert type(restored) is cls and restored.labels == ["a", "b"] and restored.params() == head.params()
    for a, b in zip(head.detect(inputs, 0.0), restored.detect(inputs, 0.0), strict=True):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert heads.to_bytes(restored, backbone="mobilenet_v2") == blob
    tensors = heads.from_bytes(blob).tensors()
    tensors.pop(next(iter(tensors)))
    with pytest.raises(heads.HeadFormatError):  # weights that do not fit the settings are refused
        cls.restore(["a", "b"], head.params(), tensors)


def png(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 200, 200)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ({"box": [0, 0, 1, 1], "label": "a"}, "takes a list of objects"),
        ([{"box": [10, 0, 5, 8], "label": "a"}], "label[0].box [10, 0, 5, 8]: need x1 > x0 and y1 > y0"),
        ([{"box": [0, 0, 5, 5], "label": "a"}, {"box": [0, 0, 5], "label": "a"}], "label[1].box must be"),
        ([{"box": [0, 0, 5, float("nan")], "label": "a"}], "four finite numbers"),
        ([{"box": [-1, 0, 5, 5], "label": "a"}], "x0 and y0 must be >= 0"),
        ([{"box": [0, 0, True, 5], "label": "a"}], "four finite numbers"),
        ([{"box": [0, 0, 5, 5], "label": " "}], "non-empty string"),
        ([{"box": [0, 0, 5, 5], "name": "a"}], "missing ['label']; unknown ['name']"),
        ([{"box": [0, 0, 5, 5], "label": "label-" + str(i)} for i in range(400)], "the limit is 8192"),
    ],
)
def test_bad_boxes_are_refused_saying_which(label: object, fragment: str) -> None:
    assert fragment in (label_problem("detection", label) or "")
    assert KIND.problem(label) == label_problem("detection", label)  # the server's check and the client's agree


def test_labels_round_trip_with_the_images_size() -> None:
    label = [{"box": [1.5, 2, 30, 40.25], "label": "bag"}, {"box": [0, 0, 10, 10], "label": "cup"}]
    assert KIND.problem(label) is None and KIND.problem([]) is None  # no object is a valid label
    assert KIND.example_problem(png(64, 48), label) is None
    past = [{"box": [0, 0, 65, 10], "label": "bag"}]
    assert (
        KIND.example_problem(png(64, 48), past) == "label[0].box [0, 0, 65, 10] extends past the image (64×48 pixels)"
    )
    stored = KIND.encode_example(png(64, 48), label)
    assert stored == '[[64,48],[1.5,2,30,40.25,"bag"],[0,0,10,10,"cup"]]' and len(stored) <= 256
    assert KIND.decode(stored) == [
        {"box": [1.5, 2.0, 30.0, 40.25], "label": "bag"},
        {"box": [0, 0, 10, 10], "label": "cup"},
    ]
    assert KIND.sized(stored)[0] == (64, 48)
    assert KIND.names([stored]) == ["bag", "cup"]
    assert KIND.per_label({stored: 2, "[[8,8]]": 1}) == {"bag": 2, "cup": 2}
    assert "at least one box" in (KIND.examples_problem([[], []], None) or "")
    assert KIND.examples_problem([label, []], ["bag", "cup"]) is None


def test_the_guard_serves_the_baseline_when_the_features_carry_nothing() -> None:
    """Feature maps of pure noise (nothing to transfer) against the scratch CNN on the real pixels: the baseline
    wins on CV mAP, is served, and the metrics say why in words."""
    from benchmarks.detection_data import scenes

    rng = np.random.default_rng(0)
    placed, stored = [], []
    for scene in scenes(18, seed=3, size=(160, 200), max_objects=2, empty=0.0):
        image = scene.image
        placement = Letterbox(image.width, image.height, 256)
        canvas = Image.new("RGB", (256, 256), (124, 116, 104))
        canvas.paste(image.resize(placement.inner, Image.Resampling.BILINEAR), (0, 0))
        placed.append(Placed(np.asarray(canvas), placement, image.width, image.height))
        stored.append(KIND.encode_example(scene.png_base64(), scene.objects))
    noise = rng.normal(size=(len(placed), 32, 16, 16)).astype(np.float32)
    result = KIND.fit_maps(noise, placed, stored, head="auto", folds=3, seed=0, steps=60)
    m = result.metrics
    assert m["heads"]["scratch-detector"]["map_50"] > m["heads"]["detector"]["map_50"], m["heads"]
    assert m["head"] == "scratch-detector" and type(result.head) is ScratchDetectorHead
    assert any("do not transfer" in w and "served: the baseline" in w for w in m["warnings"]), m["warnings"]
