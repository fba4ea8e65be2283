"""A LoRA adapter as plain tensors: what training returns, what the store keeps and what serving loads.

For each adapted linear module of the base model (named by its path in ``model.named_modules()``, e.g.
``model.layers.0.self_attn.q_proj``) the adapter holds ``A`` (rank x in) and ``B`` (out x rank); the module's
output becomes ``W x + scale * B (A x)`` with ``scale = alpha / rank`` (peft's LoRA, without rsLoRA or DoRA).
Serialised as safetensors (tensors ``<module>.lora_A`` / ``<module>.lora_B``, rank and alpha in the header's
metadata): never pickle.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .prompts import GenerationDataError

FORMAT = "graft-lora-1"


@dataclass
class LoraWeights:
    rank: int
    alpha: float
    a: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> (rank, in)
    b: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> (out, rank)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def modules(self) -> list[str]:
        return sorted(self.a)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.a.values(), *self.b.values()])

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{m}.lora_A": self.a[m].contiguous() for m in self.a}
        out.update({f"{m}.lora_B": self.b[m].contiguous() for m in self.b})
        return out

    def to_bytes(self) -> bytes:
        metadata = {"format": FORMAT, "rank": str(self.rank), "alpha": repr(float(self.alpha))}
        return save_tensors(self.tensors(), metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> LoraWeights:
        if len(data) < 8:
            raise GenerationDataError("not a LoRA adapter: too short for a safetensors file")
        (size,) = struct.unpack("<Q", data[:8])
        try:
            metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        except ValueError as exc:
            raise GenerationDataError("not a LoRA adapter: the safetensors header is not JSON") from exc
        if metadata.get("format") != FORMAT:
            raise GenerationDataError(f"not a LoRA adapter of format {FORMAT!r}")
        out = cls(int(metadata["rank"]), float(metadata["alpha"]))
        for name, tensor in load_tensors(data).items():
            module, _, part = name.rpartition(".")
            {"lora_A": out.a, "lora_B": out.b}[part][module] = tensor
        out.check()
        return out

    def peft_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter in peft's ``get_peft_model_state_dict`` form (for ``set_peft_model_state_dict``),
        the scale being peft's ``lora_alpha / r`` from a ``LoraConfig`` of the same rank and alpha."""
        out = {f"base_model.model.{m}.lora_A.weight": self.a[m] for m in self.a}
        out.update({f"base_model.model.{m}.lora_B.weight": self.b[m] for m in self.b})
        return out

    def check(self) -> None:
        if set(self.a) != set(self.b) or not self.a:
            raise GenerationDataError("a LoRA adapter needs an A and a B matrix for each of its modules")
        for m in self.a:
            a, b = self.a[m], self.b[m]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != self.rank or b.shape[1] != self.rank:
                raise GenerationDataError(f"{m}: A must be (rank, in) and B (out, rank), rank {self.rank}")
