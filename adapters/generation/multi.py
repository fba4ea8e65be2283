"""Many LoRA adapters on one base model, applied per row of a batch (Punica / S-LoRA / LoRAX style).

:class:`MultiLora` replaces each targeted ``nn.Linear`` of the base model, in place, by a
:class:`SlotLinear` that keeps the original module and adds, for each row of the batch, the low-rank update
of that row's adapter. Adapters live in fixed slots of stacked, rank-padded tensors per module:
``A[slot]`` (r_max x in) and ``B[slot]`` (out x r_max, the adapter's ``alpha / rank`` folded in); a rank
below ``r_max`` is padded with zeros, which changes nothing. Nothing is merged and the base weights are
never copied: one base model serves every adapter, and a row without an adapter gets exactly the base output.

Per forward pass the caller sets the rows' slots (:meth:`MultiLora.rows`), and every wrapped module reads
them. Two ways to apply the updates, chosen per batch:

- ``grouped``: rows are grouped by adapter; per group, gather its rows, ``x_g @ A_g^T @ B_g^T``, and add the
  result back at those rows (one pair of small matmuls per distinct adapter): best with few adapters.
- ``bmm``: gather each row's ``A`` and ``B`` from the stacks and run two batched matmuls for all adapted
  rows at once (Punica's BGMV in plain torch): one pair of kernels whatever the number of adapters.

``auto`` uses ``grouped`` up to :data:`GROUPED_MAX` (16) distinct adapters in a batch, ``bmm`` above.
Inference only: the updates are added in place under ``torch.no_grad``/``inference_mode``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .lora import LoraWeights
from .prompts import GenerationDataError

GROUPED_MAX = 16  # benchmarks/generation.py: grouped wins at 10 distinct adapters, bmm at 100 (CPU)
MODES = ("auto", "grouped", "bmm")


@dataclass
class _Batch:
    """The current forward pass's rows: which slot each adapted row uses (shared by every SlotLinear)."""

    mode: str = "auto"
    rows: torch.Tensor | None = None  # (n,) batch indices of the rows that have an adapter
    slots: torch.Tensor | None = None  # (n,) their slots
    groups: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (slot, batch indices)


class SlotLinear(nn.Module):
    """``base(x)`` plus, for each row with an adapter, ``(x A_slot^T) B_slot^T``."""

    base: nn.Linear
    lora_a: torch.Tensor  # (capacity, max_rank, in)
    lora_b: torch.Tensor  # (capacity, out, max_rank)

    def __init__(self, base: nn.Linear, capacity: int, max_rank: int, batch: _Batch) -> None:
        super().__init__()
        self.base = base
        self.batch = batch
        weight = base.weight
        self.register_buffer(
            "lora_a",
            torch.zeros(capacity, max_rank, base.in_features, dtype=weight.dtype, device=weight.device),
            persistent=False,
        )
        self.register_buffer(
            "lora_b",
            torch.zeros(capacity, base.out_features, max_rank, dtype=weight.dtype, device=weight.device),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        batch = self.batch
        if batch.rows is None or batch.slots is None:
            return y
        if batch.mode == "grouped":
            for slot, idx in batch.groups:
                xa = x.index_select(0, idx) @ self.lora_a[slot].T
                y.index_add_(0, idx, xa @ self.lora_b[slot].T)
            return y
        a = self.lora_a.index_select(0, batch.slots)  # (n, r, in)
        b = self.lora_b.index_select(0, batch.slots)  # (n, out, r)
        xs = x.index_select(0, batch.rows)  # (n, tokens, in): a causal LM's linears see (batch, tokens, features)
        y.index_add_(0, batch.rows, torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2)))
        return y


class MultiLora:
    """Wraps ``targets`` (module name suffixes, e.g. ``q_proj``) of ``model`` in place with slot linears."""

    def __init__(self, model: nn.Module, targets: Sequence[str], *, capacity: int = 8, max_rank: int = 8) -> None:
        if capacity < 1 or max_rank < 1:
            raise ValueError("capacity and max_rank must be at least 1")
        self.model = model
        self.capacity = capacity
        self.max_rank = max_rank
        self._batch = _Batch()
        self.modules: dict[str, SlotLinear] = {}
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in targets]
        if not names:
            raise ValueError(f"no linear module of the model ends with one of {list(targets)}")
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            wrapped = SlotLinear(getattr(parent, child), capacity, max_rank, self._batch)
            setattr(parent, child, wrapped)
            self.modules[name] = wrapped
        self.slots: dict[str, int] = {}  # adapter key -> slot

    # -- adapters -------------------------------------------------------------------------------------

    @property
    def bytes_per_slot(self) -> int:
        return sum((m.lora_a[0].numel() + m.lora_b[0].numel()) * m.lora_a.element_size() for m in self.modules.values())

    def load(self, key: str, weights: LoraWeights) -> int:
        """Put an adapter in a free slot (or its current one); its slot."""
        weights.check()
        if weights.rank > self.max_rank:
            raise GenerationDataError(f"adapter rank {weights.rank} is over this server's maximum {self.max_rank}")
        unknown = set(weights.a) - set(self.modules)
        if unknown:
            raise GenerationDataError(f"the adapter targets modules this model does not adapt: {sorted(unknown)[:3]}")
        slot = self.slots.get(key)
        if slot is None:
            free = sorted(set(range(self.capacity)) - set(self.slots.values()))
            if not free:
                raise GenerationDataError(f"all {self.capacity} adapter slots are in use: unload one first")
            slot = free[0]
        r = weights.rank
        with torch.no_grad():
            for name, module in self.modules.items():
                module.lora_a[slot].zero_()
                module.lora_b[slot].zero_()
                if name in weights.a:
                    a, b = weights.a[name], weights.b[name]
                    if a.shape[1] != module.base.in_features or b.shape[0] != module.base.out_features:
                        raise GenerationDataError(f"{name}: the adapter's shapes do not fit the model's")
                    module.lora_a[slot, :r].copy_(a)
                    module.lora_b[slot, :, :r].copy_(b * weights.scale)
        self.slots[key] = slot
        return slot

    def unload(self, key: str) -> None:
        self.slots.pop(key, None)

    def remove(self) -> None:
        """Put the original linear modules back (the model is the plain base model again)."""
        for name, module in self.modules.items():
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name), child, module.base)
        self.modules.clear()
        self.slots.clear()

    # -- the batch's rows -----------------------------------------------------------------------------

    @contextmanager
    def rows(self, slots: Sequence[int | None] | torch.Tensor, mode: str = "auto") -> Iterator[None]:
        """Within the block, row i of a forward pass uses slot ``slots[i]`` (-1 or None: no adapter)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        values = slots.tolist() if isinstance(slots, torch.Tensor) else [-1 if s is None else s for s in slots]
        adapted = [(i, s) for i, s in enumerate(values) if s >= 0]
        batch = self._batch
        if adapted:
            device: torch.device = next(iter(self.modules.values())).lora_a.device
            distinct = sorted({s for _, s in adapted})
            batch.mode = mode if mode != "auto" else ("grouped" if len(distinct) <= GROUPED_MAX else "bmm")
            batch.rows = torch.tensor([i for i, _ in adapted], device=device)
            batch.slots = torch.tensor([s for _, s in adapted], device=device)
            batch.groups = [(s, torch.tensor([i for i, t in adapted if t == s], device=device)) for s in distinct]
        try:
            yield
        finally:
            batch.rows = batch.slots = None
            batch.groups = []
