"""Heads as torch modules (embeddings → probabilities), for export into one ONNX graph with
their backbone. Each head's ``torch_module()`` builds its form from its own tensors; the forms
compute what the head's numpy ``predict_proba`` computes, in float32."""

from __future__ import annotations

import numpy as np
import torch


def _const(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).copy())


class LinearForm(torch.nn.Module):
    weight: torch.Tensor  # buffers
    bias: torch.Tensor

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", _const(weight))
        self.register_buffer("bias", _const(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ self.weight.T + self.bias, dim=1)


class PrototypeForm(torch.nn.Module):
    centroids: torch.Tensor  # a buffer

    def __init__(self, centroids: np.ndarray, scale: float) -> None:
        super().__init__()
        self.register_buffer("centroids", _const(centroids))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sims = torch.nn.functional.normalize(x, p=2, dim=1, eps=1e-12) @ self.centroids.T
        return torch.softmax(self.scale * sims, dim=1)


class SigmoidForm(LinearForm):
    """Multi-label: each label's own probability (the decision thresholds stay outside the graph); the
    linear form's buffers, a sigmoid per label instead of the softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x @ self.weight.T + self.bias)


class ValueForm(torch.nn.Module):
    """Regression: one value per input, (n,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", _const(np.asarray(weight).reshape(-1)))
        self.register_buffer("bias", _const(np.asarray(bias).reshape(())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias
