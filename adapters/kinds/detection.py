"""Detection: an image per example, labelled with its objects ``[{"box": [x0, y0, x1, y1], "label"}]`` in the
image's own pixels (``[]``: no object); a CenterNet-style head on the shared frozen CNN's feature maps of the
letterboxed image against the same head on a CNN trained from scratch (adapters/heads/detection.py); a
prediction is the objects found, in the caller's pixels, after per-label non-maximum suppression.

The contract with the service (``TaskKind.reads_feature_maps``): the service letterboxes each image (stored
examples and predict inputs alike: the normalised image, service/images.py) onto a ``SIZE × SIZE`` canvas and
describes it with :class:`Placed`; training calls :meth:`Detection.fit_maps` with the backbone's feature maps
and the canvases, predict :meth:`Detection.predict_maps` (the map lane, service/batching.py).

Stored labels keep the example image's size beside the boxes (``[[W,H],[x0,y0,x1,y1,"label"],...]``), read
from the upload's header when the example is added (:meth:`Detection.encode_example`): stored images are
normalised (scaled down to a shorter side of at most 256 pixels), and the size maps the caller's boxes onto
them exactly.

The closed loop (docs/detection.md#monitoring-suggest-and-promotion): a pooled embedding of each image,
:meth:`Detection.pooled` (the detector's feature map averaged over the cells the image covers, L2-normalised),
is what the version's OOD model (adapters/ood.py) measures and what ``suggest`` spreads its picks over; an
image's uncertainty (:func:`uncertainty`) is its most ambiguous heatmap peak; a retrain is compared with the
active version image by image on the images the active version never saw (:meth:`Detection.compare_maps`).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..boxes import Letterbox, Objects, batched_nms, evaluate
from ..heads import Head, ood_of
from ..heads.detection import (
    LOWER,
    MAPS,
    PIXELS,
    STRIDE,
    TUNED_BLOCKS,
    DetectorHead,
    ScratchDetectorHead,
    TunedDetectorHead,
    tune,
    tuned_maps,
)
from ..selection import Decision, compare_scores_on_unseen, unconditional
from ..training import FitResult
from .base import STRUCTURED_LABEL_CHARS, TaskKind, register_kind, shape, string_problem

SIZE = 256  # letterbox canvas side (pixels); the head's grid is SIZE / 16
OBJECT_KEYS = ("box", "label")
DETECTION_FOLDS = 3  # at most this many CV folds (each trains both heads)
NMS_IOU = 0.5
SCORE_THRESHOLD = 0.3  # predict's default score_threshold
MAX_OBJECTS = 100  # predict's default (and largest) max_objects
EVAL_MIN_SCORE = 0.01  # detections scored for mAP: every candidate down to this score
DEFAULT_STEPS = 300
IMAGENET = (0.485, 0.456, 0.406)  # the scratch baseline's own normalisation (adapters/heads/detection.py)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCRATCH_CHANNELS = 64  # the scratch baseline's stem output
COMPARED = "AP@0.5 per image"  # what the promotion comparison scores each unseen image by (image_scores)


@dataclass
class DetectionFit(FitResult):
    """A detection fit: the served head, its metrics, and its out-of-fold detections per image (after NMS, down
    to EVAL_MIN_SCORE, label indices into ``names``), which the promotion comparison scores."""

    oof: list[Objects] | None = None
    names: list[str] = field(default_factory=list)


def uncertainty(found: Objects) -> float:
    """How unsure a detector is about one image, in [0, 1]: its most ambiguous candidate. Each heatmap peak is a
    yes/no question (is an object of that label centred here?) answered with probability p; its uncertainty is
    one minus the margin between the two answers, ``1 - |2p - 1|`` (the margin uncertainty of adapters/active.py
    for two outcomes: 1.0 at p = 0.5, 0.1 at 0.05 or 0.95), and the image's is the largest over its peaks (the
    "max" aggregation of Brust et al. 2018, "Active learning for deep object detection"). An image where every
    peak is confidently on or off scores near 0; no candidate at all: 0."""
    if not len(found.scores):
        return 0.0
    return float(np.max(1.0 - np.abs(2.0 * np.asarray(found.scores, dtype=np.float64) - 1.0)))


def image_scores(truth: Sequence[Objects], found: Sequence[Objects], names: Sequence[str]) -> list[float]:
    """Per image, how well ``found`` (after NMS) answers ``truth``: AP@0.5 over the labels of the image's true
    boxes (COCO's AP on that image alone); an image with no true box: 1.0 when nothing scores the default
    ``score_threshold`` or more (predict's answer is empty, as it should be), else 0.0."""
    out = []
    for t, f in zip(truth, found, strict=True):
        if len(t.labels):
            out.append(float(evaluate([t], [f], names)["map_50"]))
        else:
            out.append(float(not (f.scores >= SCORE_THRESHOLD).any()))
    return out


def _relabelled(found: Objects, names: Sequence[str], into: dict[str, int]) -> Objects:
    return Objects(found.boxes, np.asarray([into[names[int(i)]] for i in found.labels], dtype=np.int64), found.scores)


HOLDOUT = 0.2  # head 'finetune': the fraction of images held out for early stopping and the comparison
TUNE_EPOCHS = 8  # head 'finetune': most epochs (GRAFT_FINETUNE_MAX_EPOCHS)
TUNE_PATIENCE = 2


@dataclass(frozen=True)
class Tuning:
    """What head ``finetune`` needs beyond the frozen ``lower`` states: ``blocks``, a copy of the CNN's top ``k``
    stride-16 blocks (the frozen ones: they make the frozen maps, and the task's copies start from them);
    ``fine_channels``, the pooled stride-8 channels at the front of ``lower``; limits in epochs and seconds.
    An epoch is ``max(steps / 8, one pass over the training images)`` batches of 16."""

    blocks: Any  # torch.nn.Module
    fine_channels: int
    k: int = TUNED_BLOCKS
    max_epochs: int = TUNE_EPOCHS
    max_seconds: float = 600.0


@dataclass(frozen=True)
class Placed:
    """One image on its letterbox canvas: ``pixels`` uint8 (SIZE, SIZE, 3); ``letterbox`` places the image the
    canvas was made from (the normalised one) on it; ``width`` × ``height`` is the caller's image (answers are
    in its pixels)."""

    pixels: np.ndarray
    letterbox: Letterbox
    width: int
    height: int

    def to_caller(self, boxes: np.ndarray) -> np.ndarray:
        out = self.letterbox.from_canvas(boxes)
        out[:, 0::2] *= self.width / self.letterbox.width
        out[:, 1::2] *= self.height / self.letterbox.height
        return out

    def to_canvas(self, boxes: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        """Boxes in the pixels of an image of ``size`` (None: the letterboxed image's own) on the canvas."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        if size is not None:
            b[:, 0::2] *= self.letterbox.width / size[0]
            b[:, 1::2] *= self.letterbox.height / size[1]
        return self.letterbox.to_canvas(b)


@dataclass(frozen=True)
class DetectedObject:
    box: tuple[float, float, float, float]
    label: str
    score: float

    def as_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "label": self.label, "score": self.score}


@dataclass(frozen=True)
class DetectionPrediction:
    objects: list[DetectedObject]

    def as_json(self) -> dict[str, Any]:
        return {"objects": [o.as_json() for o in self.objects]}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def object_problem(i: int, item: Any) -> str | None:
    """Why the ``i``-th item of a detection label is not an object ``{box, label}``."""
    if not isinstance(item, dict):
        return f"label[{i}] must be an object {{box, label}}, got {shape(item)}"
    keys = set(item)
    if keys != set(OBJECT_KEYS):
        missing, extra = sorted(set(OBJECT_KEYS) - keys), sorted(keys - set(OBJECT_KEYS))
        return (
            f"label[{i}] must have exactly box and label"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    box = item["box"]
    if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
        return f"label[{i}].box must be [x0, y0, x1, y1]: four finite numbers (pixels), got {str(box)[:60]}"
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0:
        return f"label[{i}].box {box}: x0 and y0 must be >= 0 (pixels from the image's top-left corner)"
    if not (x1 > x0 and y1 > y0):
        return f"label[{i}].box {box}: need x1 > x0 and y1 > y0 (corners [x0, y0, x1, y1], not width/height)"
    problem = string_problem(item["label"])
    return f"label[{i}]: {problem}" if problem else None


def _coordinate(v: float) -> float | int:
    r = round(float(v), 2)
    return int(r) if r == int(r) else r


def image_size(value: Any) -> tuple[int, int] | None:
    """An uploaded image's upright size (EXIF orientation applied) from its header, or None when the header
    cannot be read (the service's decoding then says why)."""
    try:
        data = value if isinstance(value, bytes) else base64.b64decode(str(value).split(",", 1)[-1], validate=True)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            try:
                orientation = image.getexif().get(0x0112, 1)
            except Exception:
                orientation = 1
    except (binascii.Error, ValueError, OSError, Exception):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@register_kind
class Detection(TaskKind):
    name = "detection"
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    pinnable_heads = ("detector", "scratch-detector", "finetune")
    scores_ood: ClassVar[bool] = True  # on the pooled feature map (pooled()), when the served head reads the maps
    reads_feature_maps: ClassVar[bool] = True
    structured_uploads = True  # JSON Lines rows, or a zip of images + annotations.jsonl (dataset uploads)

    # -- labels ---------------------------------------------------------------------------------

    def problem(self, label: Any) -> str | None:
        if not isinstance(label, list):
            return f"a detection task takes a list of objects [{{box: [x0, y0, x1, y1], label}}], got {shape(label)}"
        problem = next(filter(None, (object_problem(i, item) for i, item in enumerate(label))), None)
        if problem:
            return problem
        stored = self._stored(label, (99999, 99999))
        if len(stored) > STRUCTURED_LABEL_CHARS:
            return (
                f"the objects take {len(stored)} characters as stored ([[w,h],[x0,y0,x1,y1,label],...]); the limit "
                f"is {STRUCTURED_LABEL_CHARS} (about 300 boxes with short labels): use fewer boxes per image"
            )
        return None

    def example_problem(self, value: Any, label: Any) -> str | None:
        size = image_size(value)
        if size is None:
            return None
        width, height = size
        for i, item in enumerate(label):
            x0, y0, x1, y1 = item["box"]
            if x1 > width or y1 > height:
                return f"label[{i}].box {item['box']} extends past the image ({width}×{height} pixels)"
        return None

    @staticmethod
    def _stored(label: Any, size: tuple[int, int] | None) -> str:
        rows = [[*(_coordinate(v) for v in o["box"]), o["label"]] for o in label]
        return json.dumps([list(size) if size else None, *rows], ensure_ascii=False, separators=(",", ":"))

    def encode(self, label: Any) -> str:
        return self._stored(label, None)  # no image to read a size from (feedback): boxes as they are

    def encode_example(self, value: Any, label: Any) -> str:
        return self._stored(label, image_size(value))

    @staticmethod
    def sized(stored: str) -> tuple[tuple[int, int] | None, list[dict[str, Any]]]:
        """A stored label's image size (None: unknown) and its objects."""
        size, *rows = json.loads(stored)
        objects = [{"box": [float(v) for v in row[:4]], "label": row[4]} for row in rows]
        return (tuple(size) if size else None), objects  # type: ignore[return-value]

    def decode(self, stored: str) -> Any:
        return self.sized(stored)[1]

    def names(self, stored: Sequence[str]) -> list[str]:
        return [o["label"] for one in stored for o in self.decode(one)]

    def per_label(self, counts: dict[str, int]) -> dict[str, int]:
        out: Counter[str] = Counter()  # images holding each label (once per image)
        for stored, n in counts.items():
            for label in {o["label"] for o in self.decode(stored)}:
                out[label] += n
        return dict(sorted(out.items()))

    def examples_problem(self, labels: Sequence[Any], declared: Sequence[str] | None) -> str | None:
        if len(labels) < 2:
            return f"a detection task needs at least 2 examples to cross-validate; got {len(labels)}"
        present = {o["label"] for label in labels for o in label}
        if not present:
            return "no example has an object: label at least one box"
        if declared is not None:
            unknown, missing = sorted(present - set(declared)), sorted(set(declared) - present)
            if unknown:
                return f"examples use object labels not in 'labels': {unknown[:10]}"
            if missing:
                return f"every declared label needs at least one box; none for {missing[:10]}"
        return None

    # -- fitting ----------------------------------------------------------------------------------

    def fit(
        self,
        x: np.ndarray,
        labels: Sequence[Any],
        *,
        head: str,
        raw: Sequence[str] | None,
        modality: str,
        folds: int,
        seed: int,
    ) -> FitResult:
        raise TypeError("a detection task is fitted on feature maps: call fit_maps")

    def truth(self, placed: Sequence[Placed], stored: Sequence[str], names: Sequence[str]) -> list[Objects]:
        """Stored labels as boxes on their images' canvases, with label indices into ``names``."""
        index = {n: i for i, n in enumerate(names)}
        out = []
        for where, one in zip(placed, stored, strict=True):
            size, objects = self.sized(one)
            boxes = where.to_canvas(np.array([o["box"] for o in objects]).reshape(-1, 4), size)
            out.append(Objects.of(boxes, [index[o["label"]] for o in objects]))
        return out

    def fit_maps(
        self,
        maps: np.ndarray | None,
        placed: Sequence[Placed],
        stored: Sequence[str],
        *,
        head: str,
        folds: int,
        seed: int,
        steps: int = DEFAULT_STEPS,
        lower: np.ndarray | None = None,
        tuning: Tuning | None = None,
    ) -> FitResult:
        """Head ``finetune``: see :meth:`fit_tuned` (``lower`` and ``tuning`` needed, ``maps`` unused). Else:
        cross-validate the transfer head (on ``maps``, (n, C, g, g)) and the scratch baseline (on the canvases)
        on the same image folds; mAP for each; refit the better (``auto``) or the pinned one on all images."""
        if head == "finetune":
            if lower is None or tuning is None:
                raise ValueError("head 'finetune' needs the frozen states below the CNN's top blocks (lower, tuning)")
            return self.fit_tuned(lower, placed, stored, tuning, seed=seed, steps=steps)
        names = sorted({o["label"] for one in stored for o in self.decode(one)})
        truth = self.truth(placed, stored, names)
        pixels = np.stack([p.pixels for p in placed])
        inputs: dict[str, np.ndarray | None] = {"detector": maps, "scratch-detector": pixels}
        classes = {"detector": DetectorHead, "scratch-detector": ScratchDetectorHead}
        channels = {"detector": int(maps.shape[1]) if maps is not None else 128, "scratch-detector": SCRATCH_CHANNELS}
        n = len(placed)
        k = max(2, min(folds, DETECTION_FOLDS, n))
        order = np.random.default_rng(seed).permutation(n)
        parts = [np.sort(part) for part in np.array_split(order, k)]
        scores: dict[str, dict[str, Any]] = {}
        oof: dict[str, list[Objects]] = {}
        for kind, cls in classes.items():
            data = inputs[kind]
            if data is None:
                continue
            started = time.perf_counter()
            found: list[Objects | None] = [None] * n
            for f, held in enumerate(parts):
                train = np.setdiff1d(np.arange(n), held)
                model = cls(names, size=SIZE, channels=channels[kind])
                model.fit(data[train], [truth[i] for i in train], steps=steps, seed=seed + f)
                for i, got in zip(held, model.detect(data[held], EVAL_MIN_SCORE), strict=True):
                    found[i] = self.suppressed(got, MAX_OBJECTS)
            done = [f for f in found if f is not None]
            oof[kind] = done
            scores[kind] = {**evaluate(truth, done, names), "cv_seconds": round(time.perf_counter() - started, 2)}
        pinned = None if head == "auto" else head
        transfer, baseline = scores.get("detector"), scores["scratch-detector"]
        if pinned:
            chosen = pinned
        elif transfer is None or baseline["map_50"] > transfer["map_50"]:
            chosen = "scratch-detector"
        else:
            chosen = "detector"
        warnings = []
        if transfer is not None and baseline["map_50"] > transfer["map_50"]:
            warnings.append(
                f"the from-scratch baseline (mAP@0.5 {baseline['map_50']:.3f}) beats the head on the backbone's "
                f"features ({transfer['map_50']:.3f}): the backbone's features do not transfer to these images"
                + (" (served: the baseline)" if chosen == "scratch-detector" else "")
            )
        final = classes[chosen](names, size=SIZE, channels=channels[chosen])
        chosen_inputs = inputs[chosen]
        if chosen_inputs is None:
            raise ValueError(f"head {chosen!r} needs the backbone's feature maps")
        final.fit(chosen_inputs, truth, steps=steps, seed=seed)
        served = scores[chosen]
        keys = ("map_50", "map", "cv_seconds")
        metrics: dict[str, Any] = {
            "kind": self.name,
            "head": chosen,
            "selection": "pinned" if pinned else "auto",
            "evaluation": "cv",
            "folds": k,
            "map_50": served["map_50"],
            "map": served["map"],
            "per_label": served["per_label"],
            "heads": {h: {m: v[m] for m in keys} for h, v in scores.items()},
            "baseline": {"head": "scratch-detector", "map_50": baseline["map_50"], "map": baseline["map"]},
            "input_size": SIZE,
            "steps": steps,
            "images": n,
            "examples_per_label": dict(sorted(Counter(o["label"] for one in stored for o in self.decode(one)).items())),
            "warnings": warnings,
        }
        return DetectionFit(final, metrics, oof=oof[chosen], names=names)  # type: ignore[arg-type]

    def fit_tuned(
        self,
        lower: np.ndarray,
        placed: Sequence[Placed],
        stored: Sequence[str],
        tuning: Tuning,
        *,
        seed: int,
        steps: int = DEFAULT_STEPS,
    ) -> FitResult:
        """Head ``finetune``: the task's own copies of the CNN's top ``tuning.k`` blocks trained with the head, on
        ``lower`` (the frozen states below them, computed once per image). A held-out 20 % of the images (at least
        one) scores each epoch (mAP@0.5) for early stopping, and the frozen ``detector`` (on the frozen maps) and the
        ``scratch-detector`` baseline, fitted on the same training part, on the same held-out images. Epoch 0 is the
        frozen detector (the blocks start as the backbone's, the head as that detector's). The best epoch count is
        then re-run on all images (the frozen detector refitted first), unless that would pass the time limit."""
        import copy

        import torch

        started = time.perf_counter()
        deadline = time.monotonic() + tuning.max_seconds
        names = sorted({o["label"] for one in stored for o in self.decode(one)})
        truth = self.truth(placed, stored, names)
        pixels = np.stack([p.pixels for p in placed])
        n = len(placed)
        with torch.inference_mode():
            states = torch.from_numpy(np.ascontiguousarray(lower))
            maps = tuned_maps(states, tuning.blocks, tuning.fine_channels).numpy()
        order = np.random.default_rng(seed).permutation(n)
        n_held = max(1, int(round(HOLDOUT * n))) if n >= 3 else 0
        held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
        epoch_steps = max(1, steps // 8, math.ceil(len(train) / 16))
        channels = int(maps.shape[1])

        def scored(found: list[Objects]) -> dict[str, Any]:
            return evaluate([truth[i] for i in held], [self.suppressed(f, MAX_OBJECTS) for f in found], names)

        def tuned_run(rows: np.ndarray, score: bool, epochs: int) -> tuple[TunedDetectorHead, Any, DetectorHead]:
            frozen = DetectorHead(names, size=SIZE, channels=channels)
            frozen.fit(maps[rows], [truth[i] for i in rows], steps=steps, seed=seed)
            blocks = copy.deepcopy(tuning.blocks).float()
            net = copy.deepcopy(frozen.net)
            run = tune(
                blocks, net, tuning.fine_channels, lower[rows], [truth[i] for i in rows], labels=len(names),
                grid=SIZE // 16, epochs=epochs, epoch_steps=epoch_steps, seed=seed, patience=TUNE_PATIENCE,
                deadline=deadline,
                score=(lambda model: scored(model.detect(lower[held], EVAL_MIN_SCORE))["map_50"]) if score else None,
            )
            blocks.load_state_dict(run.blocks)
            net.load_state_dict(run.net)
            made = TunedDetectorHead(names, size=SIZE, channels=channels, blocks_k=tuning.k,
                                     fine_channels=tuning.fine_channels)
            made.net = net.eval()
            return made.with_blocks(blocks), run, frozen

        compared: dict[str, dict[str, Any]] = {}
        if n_held:
            tick = time.perf_counter()
            head, run, frozen = tuned_run(train, True, tuning.max_epochs)
            tuned_seconds = time.perf_counter() - tick
            served = scored(head.detect(lower[held], EVAL_MIN_SCORE))
            compared["finetune"] = {
                "map_50": served["map_50"], "map": served["map"], "seconds": round(tuned_seconds, 2)
            }
            frozen_scores = scored(frozen.detect(maps[held], EVAL_MIN_SCORE))
            compared["detector"] = {"map_50": frozen_scores["map_50"], "map": frozen_scores["map"]}
            tick = time.perf_counter()
            scratch = ScratchDetectorHead(names, size=SIZE, channels=SCRATCH_CHANNELS)
            scratch.fit(pixels[train], [truth[i] for i in train], steps=steps, seed=seed)
            base = scored(scratch.detect(pixels[held], EVAL_MIN_SCORE))
            compared["scratch-detector"] = {
                "map_50": base["map_50"], "map": base["map"], "seconds": round(time.perf_counter() - tick, 2)
            }
        else:
            head, run, frozen = tuned_run(np.arange(n), False, 2)
            served = {"map_50": None, "map": None, "per_label": {}}
        refit = False
        spent = time.perf_counter() - started
        if n_held and run.best_epoch > 0 and time.monotonic() + spent < deadline:
            head, _, _ = tuned_run(np.arange(n), False, run.best_epoch)
            refit = True
        warnings = []
        if n_held == 0:
            warnings.append(
                f"only {n} images: none could be held out, so fine-tuning ran 2 epochs unchecked and reports no "
                "held-out mAP; add images (30 or more is better)"
            )
        else:
            tuned, frozen_map = compared["finetune"]["map_50"], compared["detector"]["map_50"]
            if tuned <= frozen_map:
                why = (
                    "No epoch improved on it, so the served model is that frozen detector run through the task's own "
                    "copies of the blocks (fine-tuning changed nothing)."
                    if run.best_epoch == 0
                    else "The fine-tuned detector is served as pinned."
                )
                warnings.append(
                    f"Fine-tuning did not beat the frozen detector: on the same {n_held} held-out images it scored "
                    f"mAP@0.5 {tuned:.3f}, the detector on the frozen feature maps {frozen_map:.3f}. {why} Head "
                    "'detector' (or 'auto') trains and serves for far less at this quality."
                )
            base_map = compared["scratch-detector"]["map_50"]
            if base_map > tuned:
                warnings.append(
                    f"The from-scratch baseline (scratch-detector) scored mAP@0.5 {base_map:.3f} on the same {n_held} "
                    f"held-out images, better than fine-tuning ({tuned:.3f}): the backbone's features do not transfer "
                    "to these images."
                )
        metrics: dict[str, Any] = {
            "kind": self.name,
            "head": "finetune",
            "selection": "pinned",
            "evaluation": "holdout" if n_held else "train",
            "map_50": served["map_50"],
            "map": served["map"],
            "per_label": served["per_label"],
            "heads": compared,
            "baseline": {
                "head": "scratch-detector",
                "map_50": compared.get("scratch-detector", {}).get("map_50"),
                "map": compared.get("scratch-detector", {}).get("map"),
            },
            "finetune": {
                "blocks": tuning.k,
                "epoch_steps": epoch_steps,
                "max_epochs": tuning.max_epochs,
                "patience": TUNE_PATIENCE,
                "best_epoch": run.best_epoch,
                "history": run.history,
                "stopped": run.stopped,
                "held_out": int(n_held),
                "refitted": refit,
                "max_seconds": tuning.max_seconds,
                "seconds": round(time.perf_counter() - started, 2),
                "bytes": int(sum(v.nbytes for v in head.tensors().values())),
            },
            "input_size": SIZE,
            "steps": steps,
            "images": n,
            "examples_per_label": dict(sorted(Counter(o["label"] for one in stored for o in self.decode(one)).items())),
            "warnings": warnings,
        }
        return FitResult(head, metrics)  # type: ignore[arg-type]

    # -- predicting -------------------------------------------------------------------------------

    @staticmethod
    def suppressed(found: Objects, max_objects: int, min_score: float = 0.0) -> Objects:
        keep = np.flatnonzero(found.scores >= min_score)
        keep = keep[batched_nms(found.boxes[keep], found.scores[keep], found.labels[keep], NMS_IOU)][:max_objects]
        return Objects(found.boxes[keep], found.labels[keep], found.scores[keep])

    def reads_maps(self, head: Any) -> bool:
        """Whether ``head`` reads the backbone's feature maps (else only the canvas: no backbone pass)."""
        return getattr(head, "reads", None) in (MAPS, LOWER)

    @staticmethod
    def tuned_blocks(head: Any) -> int | None:
        """How many top blocks ``head`` owns (it reads the frozen states below them), or None: not fine-tuned."""
        return int(head.blocks_k) if getattr(head, "reads", None) == LOWER else None

    def predict_maps(
        self, head: Any, placed: Sequence[Placed], maps: np.ndarray | None, options: dict[str, Any] | None = None
    ) -> list[DetectionPrediction]:
        """One prediction per image: candidates over ``score_threshold``, NMS per label, the ``max_objects``
        best, boxes in the caller's pixels (rounded to 0.01)."""
        options = options or {}
        threshold = float(options.get("score_threshold") or SCORE_THRESHOLD)
        limit = int(options.get("max_objects") or MAX_OBJECTS)
        inputs = maps if self.reads_maps(head) else np.stack([p.pixels for p in placed])
        out = []
        for where, got in zip(placed, head.detect(inputs, min(threshold, EVAL_MIN_SCORE)), strict=True):
            kept = self.suppressed(got, limit, threshold)
            boxes = where.to_caller(kept.boxes)
            out.append(
                DetectionPrediction(
                    [
                        DetectedObject(
                            (round(b[0], 2), round(b[1], 2), round(b[2], 2), round(b[3], 2)),
                            head.labels[int(label)],
                            round(float(score), 4),
                        )
                        for b, label, score in zip(boxes.tolist(), kept.labels, kept.scores, strict=True)
                        if b[2] > b[0] and b[3] > b[1]
                    ]
                )
            )
        return out

    @staticmethod
    def pooled(maps: np.ndarray, placed: Sequence[Placed], channels: int | None = None) -> np.ndarray:
        """One vector per image (n, channels) float32, L2-normalised: the last ``channels`` of the feature map the
        detector reads (the service passes the CNN's stride-16 ones, the coarsest; None: all) averaged over the
        cells the image covers on its canvas (the letterbox's padding is left out, so a wide and a tall image of
        the same scene pool alike). What the OOD model measures and ``suggest`` spreads its picks over. Why not
        the stride-8 channels too: they describe texture, so the same scenes saved as PNG rather than JPEG moved
        away from their JPEG training images (docs/detection.md#monitoring-suggest-and-promotion)."""
        maps = np.asarray(maps, dtype=np.float32)
        if channels:
            maps = maps[:, -channels:]
        out = np.empty(maps.shape[:2], dtype=np.float32)
        for i, where in enumerate(placed):
            w, h = where.letterbox.inner
            gx, gy = max(1, math.ceil(w / STRIDE)), max(1, math.ceil(h / STRIDE))
            out[i] = maps[i, :, :gy, :gx].mean(axis=(1, 2))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def ood_scores(self, head: Any, placed: Sequence[Placed], maps: np.ndarray | None) -> np.ndarray | None:
        """Each image's OOD score (above 1.0: out of distribution) when the version has an OOD model and the
        maps were computed (heads that read them); else None."""
        ood = ood_of(head)
        if ood is None or maps is None or not self.reads_maps(head):
            return None
        return ood.score(self.pooled(maps, placed, int(ood.means.shape[1])))  # the channels it was fitted on

    def suggest_scores(
        self, head: Any, placed: Sequence[Placed], maps: np.ndarray, channels: int | None = None
    ) -> list[tuple[np.ndarray, float]]:
        """Per image of an unlabelled pool: its pooled embedding (the last ``channels`` of ``maps``; those of the
        version's OOD model when it has one) and the head's :func:`uncertainty` about it (the candidates after
        NMS, every score down to EVAL_MIN_SCORE)."""
        ood = ood_of(head)
        channels = channels if ood is None else int(ood.means.shape[1])
        inputs = maps if self.reads_maps(head) else np.stack([p.pixels for p in placed])
        found = [self.suppressed(f, MAX_OBJECTS) for f in head.detect(inputs, EVAL_MIN_SCORE)]
        return [(v, uncertainty(f)) for v, f in zip(self.pooled(maps, placed, channels), found, strict=True)]

    def format(self, head: Head, output: Any, top_k: int | None) -> list[Any]:
        return list(output)  # predict_maps already built the answers

    # -- storing and promotion ------------------------------------------------------------------------

    def comparable(self, result: FitResult) -> bool:
        return isinstance(result, DetectionFit) and result.oof is not None

    def compare(
        self,
        active: Head,
        vectors: Any,
        raw: Sequence[str],
        truth: Sequence[str],
        result: FitResult,
        unseen: np.ndarray,
        active_number: int,
    ) -> Decision:
        raise TypeError("a detection version is compared on feature maps: call compare_maps")

    def compare_maps(
        self,
        active: Any,
        maps: np.ndarray | None,
        placed: Sequence[Placed],
        stored: Sequence[str],
        result: FitResult,
        unseen: np.ndarray,
        active_number: int,
    ) -> Decision:
        """Promotion: the active version's head on the images it never saw (``placed`` on their canvases,
        ``maps`` their feature maps on its backbone, None when it does not read them; ``stored`` their labels)
        against ``result``'s out-of-fold detections at ``unseen``, image by image (:func:`image_scores`, a sign
        test: adapters/selection.py ``compare_scores_on_unseen``)."""
        if not isinstance(result, DetectionFit) or result.oof is None:
            return unconditional("promoted without comparison: no out-of-fold detections")
        if len(unseen) == 0:
            return compare_scores_on_unseen([], [], active_number, COMPARED)
        names = sorted(
            set(result.names) | set(active.labels) | {o["label"] for one in stored for o in self.decode(one)}
        )
        into = {n: i for i, n in enumerate(names)}
        truth = self.truth(placed, stored, names)
        new = [_relabelled(result.oof[int(i)], result.names, into) for i in unseen]
        if self.reads_maps(active):
            if maps is None:
                raise ValueError("the active version's head reads feature maps: pass them")
            inputs = maps
        else:
            inputs = np.stack([p.pixels for p in placed])
        found = [self.suppressed(f, MAX_OBJECTS) for f in active.detect(inputs, EVAL_MIN_SCORE)]
        old = [_relabelled(f, active.labels, into) for f in found]
        return compare_scores_on_unseen(
            image_scores(truth, new, names), image_scores(truth, old, names), active_number, COMPARED
        )

    def export_problem(self) -> str | None:
        return None  # one graph: CNN maps + head (adapters/export.py detection_graph); decoding per the manifest

    def manifest(self, head: Head) -> dict[str, Any]:
        """How a consumer turns the graph's ``detections`` into Graft's answer (docs/detection.md#export)."""
        scratch = getattr(head, "reads", None) == PIXELS
        return {
            "detection": {
                "canvas": SIZE,
                "letterbox": "the image (upright; Graft also scales its shorter side down to at most 256 pixels "
                "first) scaled by canvas / max(width, height), bilinear, pasted at the canvas's top-left corner; the "
                "rest filled with round(255 * mean) per channel; pixel_values = (canvas / 255 - mean) / std, NCHW",
                "normalisation": {"mean": list(IMAGENET), "std": list(IMAGENET_STD)}
                if scratch
                else "preprocessing.json",
                "output": "detections (n, labels + 4, g, g): channels 0..labels-1 are each label's heatmap score "
                "where it is a 3x3 local maximum (else 0); then log width, log height (in cells), offset x, offset y",
                "stride": 16,
                "decode": "take the 100 highest scores (label, cell y, cell x); box centre = (cell + offset) * stride, "
                "size = exp(log size) * stride; keep scores >= score_threshold; greedy NMS per label at IoU "
                f"{NMS_IOU}; the max_objects best; divide by the letterbox scale (and undo Graft's downscaling)",
                "score_threshold": SCORE_THRESHOLD,
                "nms_iou": NMS_IOU,
                "max_objects": MAX_OBJECTS,
            }
        }

