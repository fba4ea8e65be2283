"""Boxes for the detection kind, in numpy: letterbox geometry, IoU, non-maximum suppression and COCO-style
average precision (no torchvision, no pycocotools).

Boxes are ``(x0, y0, x1, y1)`` in pixels, ``x1 > x0`` and ``y1 > y0`` (corners, not centre + size), float.

**Letterbox.** An image of ``width × height`` goes onto a ``size × size`` canvas scaled by
``size / max(width, height)`` and placed at the top-left corner (the rest is padding), so a box maps to the
canvas by one multiplication and back by one division: :class:`Letterbox`.

**Average precision** (:func:`average_precision`, :func:`evaluate`), as COCO computes it for one IoU
threshold: per label, detections of all images sorted by score (highest first; ties keep image order, then
detection order); each is a true positive when it overlaps a not-yet-matched true box of its label and image
by IoU >= the threshold (the best-overlapping such box; of equally good ones the last, as COCOeval picks), else
a false positive; precision is made monotone (each point takes the best precision at any higher recall) and
read at the 101 recall points 0, 0.01, ..., 1 (0 past the highest recall reached). A label with no true boxes
has no AP (left out of the mean, as COCO does); one with true boxes and no detection has AP 0. ``map_50`` is
the mean over labels at IoU 0.5, ``map`` the mean over labels and the ten thresholds 0.50, 0.55, ..., 0.95.
No crowd regions, area ranges or cap on detections per image (COCO's ``maxDets``, 100 by default). Agrees with
pycocotools' COCOeval to 1e-16 (benchmarks/coco_check.py, docs/detection.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # COCO's 0.50:0.05:0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``width × height`` sits on a ``size × size`` canvas: scaled by ``scale`` at the
    top-left corner."""

    width: int
    height: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.width, self.height)

    @property
    def inner(self) -> tuple[int, int]:
        """The scaled image's size on the canvas (at least one pixel each way)."""
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * self.scale

    def from_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Canvas boxes back in the image's pixels, clipped to the image."""
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / self.scale
        out[:, 0::2] = out[:, 0::2].clip(0, self.width)
        out[:, 1::2] = out[:, 1::2].clip(0, self.height)
        return out


def area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union, (len(a), len(b))."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first. A box is dropped when it
    overlaps an already kept one by IoU > ``threshold``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlaps = iou(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """NMS within each class (boxes of different labels never suppress each other); kept indices, highest
    score first."""
    classes = np.asarray(classes)
    keep = [
        idx[nms(boxes[idx], scores[idx], threshold)]
        for idx in (np.flatnonzero(classes == c) for c in np.unique(classes))
    ]
    if not keep:
        return np.zeros(0, dtype=np.int64)
    kept = np.concatenate(keep)
    return kept[np.argsort(-np.asarray(scores)[kept], kind="stable")]


@dataclass(frozen=True)
class Objects:
    """One image's boxes: ``boxes`` (n, 4), ``labels`` (n,) label indices, ``scores`` (n,) (truth: ones)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(cls, boxes: Any, labels: Any, scores: Any = None) -> Objects:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        s = np.ones(len(b)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        return cls(b, lab, s)


def average_precision(truth: Sequence[Objects], found: Sequence[Objects], label: int, threshold: float) -> float | None:
    """COCO-style AP of one label at one IoU threshold over all images (see the module docstring); None when
    no image has a true box of that label."""
    n_true = sum(int((t.labels == label).sum()) for t in truth)
    if n_true == 0:
        return None
    scored: list[tuple[float, int, int]] = []  # (score, image, detection index)
    for image, f in enumerate(found):
        scored += [(float(f.scores[j]), image, int(j)) for j in np.flatnonzero(f.labels == label)]
    scored.sort(key=lambda s: -s[0])  # stable: ties keep image order
    matched = [np.zeros(int((t.labels == label).sum()), dtype=bool) for t in truth]
    true_boxes = [t.boxes[t.labels == label] for t in truth]
    tp = np.zeros(len(scored))
    for k, (_, image, j) in enumerate(scored):
        boxes = true_boxes[image]
        if not len(boxes):
            continue
        overlaps = iou(found[image].boxes[j : j + 1], boxes)[0]
        overlaps[matched[image]] = -1.0
        best = len(overlaps) - 1 - int(np.argmax(overlaps[::-1]))  # ties: the last such box, as COCOeval
        if overlaps[best] >= threshold:
            matched[image][best] = True
            tp[k] = 1.0
    if not len(scored):
        return 0.0
    tps = np.cumsum(tp)
    recall = tps / n_true
    precision = tps / np.arange(1, len(scored) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at any higher recall
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def evaluate(truth: Sequence[Objects], found: Sequence[Objects], names: Sequence[str]) -> dict[str, Any]:
    """``map_50``, ``map`` (0.5:0.95) and ``per_label`` ``{name: {"ap_50", "ap", "boxes"}}`` (see the module
    docstring); labels with no true box get no AP and count in no mean."""
    per_label: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        aps = [average_precision(truth, found, index, t) for t in IOU_THRESHOLDS]
        boxes = sum(int((t.labels == index).sum()) for t in truth)
        if aps[0] is None:
            per_label[name] = {"ap_50": None, "ap": None, "boxes": boxes}
            continue
        values = [float(a or 0.0) for a in aps]
        per_label[name] = {"ap_50": values[0], "ap": float(np.mean(values)), "boxes": boxes}
    scored = [v for v in per_label.values() if v["ap_50"] is not None]
    return {
        "map_50": float(np.mean([v["ap_50"] for v in scored])) if scored else 0.0,
        "map": float(np.mean([v["ap"] for v in scored])) if scored else 0.0,
        "per_label": per_label,
    }
