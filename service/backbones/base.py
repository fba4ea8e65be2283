"""What every backbone runtime provides: frozen embeddings for a batch of inputs."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from ..images import Preprocessing

# torch runtimes: name → autocast dtype (None: plain fp32)
TORCH_DTYPES: dict[str, torch.dtype | None] = {"torch": None, "torch-bf16": torch.bfloat16, "torch-fp16": torch.float16}


@runtime_checkable
class Backbone(Protocol):
    name: str
    modality: str  # "text" | "image"
    dim: int
    revision: str  # checksum of the weights: heads record it, caches key on it
    runtime: str  # "torch" | "onnx" | ...
    device: str

    def embed(self, inputs: Sequence[Any]) -> np.ndarray:  # texts, or preprocessed images (image backbones)
        """L2-normalised float32 embeddings, shape (len(inputs), dim), in input order."""


class ImageBackbone(Backbone, Protocol):
    """A backbone of modality ``image``: it crops and normalises images its own way."""

    @property
    def preprocessing(self) -> Preprocessing: ...


def cpu_quota() -> int:
    """CPUs this process may use: the cgroup quota when set, else the affinity mask."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, len(os.sched_getaffinity(0)))


def weights_checksum(directory: Path, patterns: Sequence[str] = ("*.safetensors", "*.bin", "*.pth", "*.onnx")) -> str:
    """sha256 over a model directory's weight files (name and content), shortened."""
    digest = hashlib.sha256()
    files = sorted(p for pattern in patterns for p in directory.glob(pattern) if p.is_file())
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def autocast(device: str, runtime: str) -> contextlib.AbstractContextManager:
    """The autocast context of a torch runtime (a no-op for fp32 ``torch``)."""
    if runtime not in TORCH_DTYPES:
        raise ValueError(f"unknown torch runtime {runtime!r}; choose one of {sorted(TORCH_DTYPES)}")
    dtype = TORCH_DTYPES[runtime]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
