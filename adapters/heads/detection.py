"""Detection heads (task kind ``detection``): CenterNet-style, anchor-free (Zhou et al. 2019, "Objects as
Points"), on one stride-16 grid.

- ``detector`` (the transfer head): reads the shared frozen CNN's multi-scale feature maps, the stride-8 map
  average-pooled to stride 16 and concatenated with the stride-16 map (MobileNetV2: 32 + 96 = 128 channels;
  service/backbones/image.py ``feature_maps``), of a letterboxed ``size × size`` image.
- ``finetune-detector`` (a task's ``head: "finetune"``): the ``detector`` head behind the task's own copies of
  the CNN's top ``k`` stride-16 blocks (:data:`TUNED_BLOCKS`), trained together; it reads the frozen activations
  entering those blocks (``lower``: the stride-8 map pooled to stride 16 beside them, ``CNN.lower``), which the
  service computes once per image (training) and once per shared map-lane pass (serving).
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

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..boxes import Objects
from .base import HeadFormatError, StoredHead, register

MAPS = "maps"  # the backbone's feature maps of the letterboxed image
PIXELS = "pixels"  # the letterboxed image itself, uint8 (size, size, 3)
LOWER = "lower"  # the frozen activations below the CNN's top k stride-16 blocks (CNN.lower), fine-tuned heads
TUNED_BLOCKS = 2  # k: stride-16 blocks a fine-tuned detection head owns (MobileNetV2 features.12-13)
TUNED_MAX_BYTES = 8 * 2**20  # the most a fine-tuned head's own blocks may take, fp32 (2 blocks: ~0.9 MB)
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
    settings: ClassVar[tuple[str, ...]] = ("size", "channels", "hidden")

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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cast(tuple[torch.Tensor, torch.Tensor], self.net(x))

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
        batches = (self._tensor(inputs[s : s + 32]) for s in range(0, len(inputs), 32))
        return candidates(self.forward, batches, min_score)


@torch.inference_mode()
def candidates(
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], batches: Any, min_score: float
) -> list[Objects]:
    """:meth:`_Detector.detect` for any network (``forward``: input batch → heatmap logits, box terms)."""
    out: list[Objects] = []
    for x in batches:
        heat, box = forward(x)
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
        self.tuned = head if isinstance(head, TunedDetectorHead) else None
        if self.tuned is not None:
            self.blocks = self.tuned.bound_blocks  # registered, so tracing sees the task's own weights

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.tuned is not None:  # the CNN below its top blocks, then the task's own blocks and head
            heat, box = self.tuned.forward(cast(Any, self.network).lower(pixel_values, self.tuned.blocks_k))
        else:
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


class TunedNet(nn.Module):
    """The task's own top blocks, then the head: what a fine-tuned detection head trains and runs."""

    def __init__(self, blocks: nn.Module, net: CenterNet, fine: int) -> None:
        super().__init__()
        self.blocks, self.net, self.fine = blocks, net, fine

    def forward(self, lower: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(tuned_maps(lower, self.blocks, self.fine))  # type: ignore[no-any-return]

    def detect(self, lower: np.ndarray, min_score: float = 0.01) -> list[Objects]:
        """Candidates on ``lower`` states, as a bound :class:`TunedDetectorHead` finds them."""
        batches = (torch.from_numpy(np.ascontiguousarray(lower[s : s + 32])) for s in range(0, len(lower), 32))
        return candidates(self, batches, min_score)


def tuned_maps(lower: torch.Tensor, blocks: nn.Module, fine: int) -> torch.Tensor:
    """The feature maps (``CNN.maps``) from the frozen ``lower`` states: the pooled stride-8 channels as they
    are, beside ``blocks`` (the CNN's top stride-16 blocks, frozen or a task's own) on the rest."""
    return torch.cat([lower[:, :fine], blocks(lower[:, fine:])], dim=1)


class BlockSource(Protocol):
    """What a fine-tuned detection head binds to: the backbone's CNN (service/backbones/cnn.py)."""

    fine_channels: int

    def top_blocks(self, k: int) -> nn.Sequential: ...


@register("detection", rank=2)
class TunedDetectorHead(_Detector):
    """``detector`` behind the task's own copies of the CNN's top :data:`TUNED_BLOCKS` stride-16 blocks (see the
    module docstring). Stored: the head (``net.*``) and the blocks' whole state (``blocks.*``, BatchNorm statistics
    included; fp32, at most :data:`TUNED_MAX_BYTES`). Loaded, it is :meth:`bind`-ed to the backbone's CNN, whose
    block structure the stored state must fit exactly."""

    kind = "finetune-detector"
    reads = LOWER
    binds_cnn: ClassVar[bool] = True  # the head store binds it to its backbone's CNN (service/engine/head_store.py)
    settings = ("size", "channels", "hidden", "blocks_k", "fine_channels")

    def __init__(
        self, labels: list[str], size: int = 256, channels: int = 128, hidden: int = 32, blocks_k: int = TUNED_BLOCKS,
        fine_channels: int = 32,
    ) -> None:
        super().__init__(labels, size=size, channels=channels, hidden=hidden)
        self.blocks_k, self.fine_channels = int(blocks_k), int(fine_channels)
        self.block_state: dict[str, torch.Tensor] | None = None  # the stored blocks, until bound
        self.bound_blocks: nn.Module | None = None

    @property
    def bound(self) -> bool:
        return self.bound_blocks is not None

    def check(self) -> None:
        if not 1 <= self.blocks_k <= 8 or not 0 < self.fine_channels < self.channels:
            raise HeadFormatError("finetune-detector settings out of range")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bound_blocks is None:
            raise RuntimeError("a fine-tuned detection head must be bound to its backbone's CNN first (bind)")
        return TunedNet(self.bound_blocks, self.net, self.fine_channels)(x)

    def with_blocks(self, blocks: nn.Module) -> TunedDetectorHead:
        """Use ``blocks`` (the task's own, trained: this head keeps them) as its top blocks."""
        nbytes = sum(p.numel() * 4 for p in blocks.state_dict().values())
        if nbytes > TUNED_MAX_BYTES:
            raise ValueError(f"the tuned blocks take {nbytes} bytes; at most {TUNED_MAX_BYTES}")
        self.bound_blocks = blocks.float().eval()
        for p in self.bound_blocks.parameters():
            p.requires_grad_(False)
        self.block_state = None
        return self

    def bind(self, source: BlockSource) -> TunedDetectorHead:
        """Copies of ``source``'s top blocks with this head's stored weights loaded (strictly)."""
        if int(source.fine_channels) != self.fine_channels:
            raise ValueError(
                f"the head was tuned on a CNN with {self.fine_channels} stride-8 channels, this one has "
                f"{source.fine_channels}"
            )
        if self.block_state is None:
            if self.bound_blocks is None:
                raise HeadFormatError("finetune-detector head without its blocks' weights")
            return self
        blocks = copy.deepcopy(source.top_blocks(self.blocks_k)).float().cpu()
        try:
            blocks.load_state_dict(self.block_state, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise HeadFormatError(f"the stored blocks do not fit this backbone's top blocks: {exc}") from None
        return self.with_blocks(blocks)

    def resident_nbytes(self) -> int:
        held = sum(int(t.nbytes) for t in self.tensors().values())
        return held

    def extra_tensors(self) -> dict[str, np.ndarray]:
        out = super().extra_tensors()
        state = self.bound_blocks.state_dict() if self.bound_blocks is not None else self.block_state or {}
        out.update({f"blocks.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()})
        return out

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> Any:
        head = super().restore(labels, params, {k: v for k, v in tensors.items() if not k.startswith("blocks.")})
        state = {k[7:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("blocks.")}
        if not state:
            raise HeadFormatError("finetune-detector head without its blocks' weights")
        if sum(int(v.numel()) * 4 for v in state.values()) > TUNED_MAX_BYTES:
            raise HeadFormatError(f"finetune-detector blocks larger than {TUNED_MAX_BYTES} bytes")
        head.block_state = state
        return head

    def fit(self, inputs: np.ndarray, objects: Sequence[Objects], *, steps: int, seed: int) -> _Detector:
        raise TypeError("a fine-tuned detection head is trained by Detection.fit_maps (head 'finetune')")


@dataclass
class TuneRun:
    """One fine-tuning run's outcome: the best epoch (0: the warm start, nothing improved on it), the held-out
    score per epoch, why it stopped, and the best state (blocks and head)."""

    best_epoch: int
    history: list[dict[str, float]]
    stopped: str
    blocks: dict[str, torch.Tensor]
    net: dict[str, torch.Tensor]


def tune(
    blocks: nn.Module,
    net: CenterNet,
    fine: int,
    lower: np.ndarray,
    objects: Sequence[Objects],
    *,
    labels: int,
    grid: int,
    epochs: int,
    epoch_steps: int,
    seed: int,
    score: Callable[[TunedNet], float] | None = None,
    patience: int = 2,
    deadline: float = float("inf"),
    lr: float = 3e-4,
    head_lr: float = 1e-3,
) -> TuneRun:
    """Train ``blocks`` (copies of the CNN's top blocks) and ``net`` (a head already fitted on the frozen maps:
    epoch 0 is that head) together on ``lower`` (the frozen states below the blocks, computed once) for up to
    ``epochs`` epochs of ``epoch_steps`` batches; after each, ``score`` (held-out mAP@0.5; None: no early
    stopping) keeps the best epoch, and ``patience`` epochs without improvement stop it, as does ``deadline``
    (``time.monotonic()``: no epoch starts after it). BatchNorm keeps the backbone's statistics (eval mode)."""
    import time

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TunedNet(blocks, net, fine)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": blocks.parameters(), "lr": lr}, {"params": net.parameters(), "lr": head_lr}], weight_decay=1e-4
    )
    t_heat, t_box, mask = targets(objects, labels, grid)
    x = torch.from_numpy(np.ascontiguousarray(lower, dtype=np.float32))
    n = len(x)

    def state() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return (
            {k: v.detach().clone() for k, v in blocks.state_dict().items()},
            {k: v.detach().clone() for k, v in net.state_dict().items()},
        )

    model.eval()
    best = score(model) if score is not None else 0.0
    history = [{"epoch": 0, "map_50": round(best, 4)}]
    best_epoch, best_state, since, stopped = 0, state(), 0, "max_epochs"
    for epoch in range(1, epochs + 1):
        if time.monotonic() > deadline:
            stopped = "time_limit"
            break
        model.eval()  # BatchNorm statistics stay the backbone's; gradients flow all the same
        with torch.enable_grad():
            for _ in range(epoch_steps):
                idx = torch.from_numpy(np.sort(rng.choice(n, size=min(BATCH, n), replace=False)))
                heat, box = model(x[idx])
                loss = loss_of(heat, box, t_heat[idx], t_box[idx], mask[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        if score is None:
            best_epoch, best_state = epoch, state()
            history.append({"epoch": epoch})
            continue
        got = score(model)
        history.append({"epoch": epoch, "map_50": round(got, 4)})
        if got > best:
            best, best_epoch, best_state, since = got, epoch, state(), 0
        else:
            since += 1
            if since >= patience:
                stopped = "early_stopping"
                break
    for p in model.parameters():
        p.requires_grad_(False)
    return TuneRun(best_epoch, history, stopped, *best_state)
