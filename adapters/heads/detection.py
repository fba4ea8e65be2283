"""Detection heads (task kind ``detection``): CenterNet-style, anchor-free (Zhou et al. 2019, "Objects as
Points"), on one stride-16 grid.

- ``detector`` (the transfer head): reads the shared frozen CNN's multi-scale feature maps, the stride-8 map
  average-pooled to stride 16 and concatenated with the stride-16 map (MobileNetV2: 32 + 96 = 128 channels;
  service/backbones/image.py ``feature_maps``), of a letterboxed ``size × size`` image.
- ``scratch-detector`` (the no-transfer baseline): the same head behind a small CNN trained from scratch on
  the letterboxed pixels, average-pooled to a quarter of the size (two stride-2 convolutions reach stride 16).

The head: a 1×1 convolution to ``hidden`` channels, a 3×3 one, then three 1×1 outputs per grid cell: a
heatmap per label (sigmoid: the chance that an object of that label is centred in the cell), the box size
(log width and height in cells) and the centre's offset within the cell. Trained with CenterNet's focal
loss on Gaussian-splatted centres (one Gaussian per box, its spread a sixth of the box's size) and L1 on size
and offset at the centre cells; decoded by taking the local maxima of the heatmaps (3×3), highest first.
Boxes here are in canvas pixels; adapters/kinds/detection.py maps them back to the caller's image and runs
NMS. Both heads store their weights as safetensors tensors (``net.*``); nothing is pickled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..boxes import Objects
from .base import HeadFormatError, StoredHead, register

MAPS = "maps"  # the backbone's feature maps of the letterboxed image
PIXELS = "pixels"  # the letterboxed image itself, uint8 (size, size, 3)
STRIDE = 16
THUMB = 4  # the scratch baseline sees the canvas average-pooled by this factor
MEAN = np.asarray((0.485, 0.456, 0.406), dtype=np.float32)
STD = np.asarray((0.229, 0.224, 0.225), dtype=np.float32)
BATCH = 16
PEAKS = 100  # most candidate boxes decoded per image (before the score threshold and NMS)


class CenterNet(nn.Module):
    """The head network (see the module docstring); ``stem``: the scratch baseline's pixel CNN before it."""

    def __init__(self, channels: int, labels: int, hidden: int, stem: bool) -> None:
        super().__init__()
        self.stem = (
            nn.Sequential(
                nn.Conv2d(3, 32, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(32, channels, 3, 2, 1),
                nn.ReLU(),
            )
            if stem
            else None
        )
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU()
        )
        self.heat = nn.Conv2d(hidden, labels, 1)
        self.box = nn.Conv2d(hidden, 4, 1)  # log w, log h (cells), offset x, y (within the cell)
        nn.init.constant_(self.heat.bias, -2.19)  # type: ignore[arg-type]  # sigmoid ~0.1 at start (CenterNet's prior)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)  # on the thumbnail (thumbnails())
        h = self.body(x)
        return self.heat(h), self.box(h)


def thumbnails(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (n, size, size, 3) canvases → float32 (n, 3, size / THUMB, size / THUMB), ImageNet-normalised,
    average-pooled: what the scratch baseline's stem reads."""
    out = []
    for start in range(0, len(pixels), 64):
        x = (np.asarray(pixels[start : start + 64], dtype=np.float32) / 255.0 - MEAN) / STD
        out.append(F.avg_pool2d(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), THUMB))
    return torch.cat(out)


def targets(objects: Sequence[Objects], labels: int, grid: int) -> tuple[torch.Tensor, ...]:
    """Training targets on a ``grid × grid`` map of stride :data:`STRIDE` for boxes in canvas pixels: the
    heatmaps (n, labels, g, g), the box targets (n, 4, g, g) and their mask (n, 1, g, g)."""
    n = len(objects)
    heat = np.zeros((n, labels, grid, grid), dtype=np.float32)
    box = np.zeros((n, 4, grid, grid), dtype=np.float32)
    mask = np.zeros((n, 1, grid, grid), dtype=np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for i, found in enumerate(objects):
        for (x0, y0, x1, y1), label in zip(found.boxes / STRIDE, found.labels, strict=True):
            w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ix, iy = int(np.clip(cx, 0, grid - 1)), int(np.clip(cy, 0, grid - 1))
            sx, sy = max(w / 6, 0.3), max(h / 6, 0.3)
            g = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
            heat[i, label] = np.maximum(heat[i, label], g)
            heat[i, label, iy, ix] = 1.0
            box[i, :, iy, ix] = (np.log(w), np.log(h), cx - ix, cy - iy)
            mask[i, 0, iy, ix] = 1.0
    return torch.from_numpy(heat), torch.from_numpy(box), torch.from_numpy(mask)


def loss_of(
    heat: torch.Tensor, box: torch.Tensor, t_heat: torch.Tensor, t_box: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """CenterNet's focal loss (alpha 2, beta 4) on the heatmaps plus L1 on sizes and offsets at the centres."""
    p = torch.sigmoid(heat).clamp(1e-4, 1 - 1e-4)
    pos = t_heat.eq(1.0).float()
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p) * p**2 * (1 - t_heat) ** 4 * (1 - pos)).sum()
    n = pos.sum().clamp(min=1.0)
    reg = (F.l1_loss(box * mask, t_box * mask, reduction="sum")) / mask.sum().clamp(min=1.0)
    return -(pos_loss + neg_loss) / n + reg


class _Detector(StoredHead):
    """What both detection heads share; subclasses say what they read (``reads``)."""

    consumes: ClassVar[frozenset[str]] = frozenset()
    exportable: ClassVar[bool] = False
    reads: ClassVar[str]
    settings = ("size", "channels", "hidden")

    def __init__(self, labels: list[str], size: int = 256, channels: int = 128, hidden: int = 32) -> None:
        self.labels = list(labels)
        self.size, self.channels, self.hidden = int(size), int(channels), int(hidden)
        if self.size % (STRIDE * THUMB) or self.size <= 0:
            raise HeadFormatError(f"a detection head's input size must be a multiple of {STRIDE * THUMB}")
        self.net = CenterNet(self.channels, len(self.labels), self.hidden, stem=self.reads == PIXELS).eval()

    @property
    def grid(self) -> int:
        return self.size // STRIDE

    def _tensor(self, inputs: np.ndarray) -> torch.Tensor:
        if self.reads == PIXELS:
            return thumbnails(inputs)
        return torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))

    # -- storing -----------------------------------------------------------------------------------

    def extra_tensors(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in self.net.state_dict().items()}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Any:
        head = super().restore(labels, params, tensors)
        state = {
            k[4:]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items() if k.startswith("net.")
        }
        try:
            head.net.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise HeadFormatError(f"{cls.kind} head weights do not fit its settings: {exc}") from None
        return head

    # -- fitting and predicting -----------------------------------------------------------------------

    def fit(self, inputs: np.ndarray, objects: Sequence[Objects], *, steps: int, seed: int) -> _Detector:
        """Train on ``inputs`` (feature maps or pixels, as the head reads) and their boxes in canvas pixels."""
        torch.manual_seed(seed)
        self.net = CenterNet(self.channels, len(self.labels), self.hidden, stem=self.reads == PIXELS)
        t_heat, t_box, mask = targets(objects, len(self.labels), self.grid)
        rng = np.random.default_rng(seed)
        opt = torch.optim.AdamW(self.net.parameters(), lr=3e-3, weight_decay=1e-4)
        total = max(1, steps)
        warm = max(1, total // 10)  # linear warm-up over a tenth of the steps, then a cosine decay (any step count)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda t: (t + 1) / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm))),
        )
        self.net.train()
        n = len(inputs)
        x = self._tensor(inputs)
        for _ in range(total):
            idx = torch.from_numpy(np.sort(rng.choice(n, size=min(BATCH, n), replace=False)))
            heat, box = self.net(x[idx])
            loss = loss_of(heat, box, t_heat[idx], t_box[idx], mask[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.net.eval()
        return self

    @torch.inference_mode()
    def detect(self, inputs: np.ndarray, min_score: float = 0.01) -> list[Objects]:
        """Candidate boxes per input (canvas pixels, before NMS): the heatmaps' 3×3 local maxima, at most
        :data:`PEAKS` per image, with a score of at least ``min_score``, highest first."""
        out: list[Objects] = []
        for start in range(0, len(inputs), 32):
            heat, box = self.net(self._tensor(inputs[start : start + 32]))
            p = torch.sigmoid(heat)
            peaks = p * (F.max_pool2d(p, 3, 1, 1) == p).float()
            n, k, g, _ = peaks.shape
            scores, flat = peaks.reshape(n, -1).topk(min(PEAKS, k * g * g), dim=1)
            for i in range(n):
                keep = scores[i] >= min_score
                s, f = scores[i][keep], flat[i][keep]
                label, cell = f // (g * g), f % (g * g)
                iy, ix = cell // g, cell % g
                b = box[i][:, iy, ix]  # (4, m)
                w, h = torch.exp(b[0].clamp(max=8.0)), torch.exp(b[1].clamp(max=8.0))
                cx, cy = ix.float() + b[2], iy.float() + b[3]
                boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1) * STRIDE
                out.append(Objects.of(boxes.numpy(), label.numpy(), s.numpy()))
        return out


class ExportForm(nn.Module):
    """The head (behind the CNN's maps, for ``detector``) as one traceable module for ONNX export:
    ``pixel_values`` (n, 3, size, size), normalised as the manifest says → (n, labels + 4, g, g): per label the
    heatmap's score where it is a 3×3 local maximum (0 elsewhere), then the box's log width, log height (cells) and
    the centre's offset (x, y) in the cell. :func:`decode_grid` turns it into boxes as Graft does."""

    def __init__(self, head: _Detector, network: nn.Module | None) -> None:
        super().__init__()
        self.net, self.network, self.pixels = head.net, network, head.reads == PIXELS

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(pixel_values, THUMB) if self.pixels else cast(Any, self.network).maps(pixel_values)
        heat, box = self.net(x)
        p = torch.sigmoid(heat)
        peaks = p * (F.max_pool2d(p, 3, 1, 1) == p).float()
        return torch.cat([peaks, box], dim=1)


def decode_grid(grid: np.ndarray, labels: int, min_score: float = 0.01) -> list[Objects]:
    """An exported graph's output (n, labels + 4, g, g) → candidate boxes per image in canvas pixels, as
    :meth:`_Detector.detect` finds them (before NMS): the :data:`PEAKS` highest peaks with a score of at least
    ``min_score``; a box is centred at (cell + offset) × stride, its size exp(log size) × stride."""
    out = []
    for one in np.asarray(grid, dtype=np.float32):
        peaks, box = one[:labels], one[labels:]
        g = peaks.shape[-1]
        flat = peaks.reshape(-1)
        order = np.argsort(-flat, kind="stable")[: min(PEAKS, flat.size)]
        order = order[flat[order] >= min_score]
        label, cell = order // (g * g), order % (g * g)
        iy, ix = cell // g, cell % g
        b = box[:, iy, ix]
        w, h = np.exp(np.minimum(b[0], 8.0)), np.exp(np.minimum(b[1], 8.0))
        cx, cy = ix + b[2], iy + b[3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * STRIDE
        out.append(Objects.of(boxes, label, flat[order]))
    return out


@register("detection", rank=0)
class DetectorHead(_Detector):
    kind = "detector"
    reads = MAPS


@register("detection", rank=1)
class ScratchDetectorHead(_Detector):
    kind = "scratch-detector"
    reads = PIXELS
