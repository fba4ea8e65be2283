"""Fine-tuning head: LoRA on the top ``k`` transformer layers of the text backbone plus a classifier.

The backbone's layers below the split point (``split = n_layers - k``) stay frozen and are the
same for every tenant, so the server computes them once per mixed batch (:func:`predict_shared`)
and only the top ``k`` layers run per task. Training exploits the same cut: the hidden states at
the split are computed once for all examples, and the epochs only run the top ``k`` layers.

- Adapted: every linear projection of the top ``k`` layers (query, key, value, attention output,
  FFN in and out) gets a rank-``r`` LoRA update (peft); the classifier is a linear map on the
  mean-pooled, L2-normalised output, initialised with the logistic regression of the linear head
  (so epoch 0 *is* the linear head, and fine-tuning only has to improve on it).
- Trained with a low learning rate (AdamW), in eval mode (no dropout: seeded runs are
  reproducible), early stopping on a stratified held-out fold; the number of epochs that scored
  best on it is then re-run on all examples.
- Stored: only the LoRA matrices and the classifier (safetensors, like every head). Loaded for
  serving, the LoRA updates are merged into copies of the top layers (``bind``): serving a
  fine-tuned row costs exactly what the backbone's own top layers cost.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, cast

import numpy as np
import torch

from ..encoding import encode_labels
from .base import TRUNK, Array, HeadFormatError, MissingInputs, StoredHead, register
from .baseline import BaselineHead
from .linear import fit_logistic

TARGETS = ("query", "key", "value", "dense")  # suffixes: attention q/k/v, attention output, FFN in and out
DEFAULT_LAYERS = 3  # the classification recipe (docs/finetune.md, "Recipes"); entities keep 1 (TAGGER_RECIPE)
DEFAULT_RANK = 8
LINEAR_C_GRID = (0.5, 2.0, 8.0, 32.0, 128.0)  # the linear head's grid (adapters/training.py GRIDS["linear"])


class TextSource(Protocol):
    """What fine-tuning needs from the text backbone: the HF encoder and its tokenisation."""

    model: torch.nn.Module

    def batches(self, inputs: Sequence[str], max_items: int) -> Any: ...


@dataclass(frozen=True)
class FinetuneConfig:
    layers: int = DEFAULT_LAYERS  # k: adapted top layers
    rank: int = DEFAULT_RANK
    alpha: float = 16.0
    # Gentle steps (issue 22's recipe runs): Adam moves every weight by about its learning rate per step, and a
    # larger classifier rate walks away from the warm start's optimum within an epoch.
    lr: float = 3e-4  # LoRA matrices (low: epoch 0 is already the linear head)
    head_lr: float = 1e-3  # classifier
    weight_decay: float = 0.01
    max_epochs: int = 8
    patience: int = 2
    batch_size: int = 16
    holdout: float = 0.2  # fraction of each label held out for early stopping
    c: float = 10.0  # the initial logistic regression's inverse regularisation, where ``c_by_cv`` is off
    refit: bool = True  # re-run the best number of epochs on all examples
    bucket: bool = True  # batches of similar length (less padding); False: plain shuffled batches
    warmup: float = 0.0  # fraction of the steps with a linear learning-rate warm-up
    decay: bool = False  # linear decay to 0 over the run's steps after the warm-up
    select: str = "accuracy"  # the best epoch on the held-out part: "accuracy" (ties: log-loss) or "loss" alone
    # Warm start at the C that cross-validation picks from LINEAR_C_GRID (as the linear head does), not at ``c``:
    # +0.8 pt over C = 10 at 64 per label on three sets (docs/finetune.md, "The warm start's C").
    c_by_cv: bool = True
    # Measured variants (docs/finetune.md), off by default:
    layer_decay: float = 1.0  # the adapted layer d below the top trains at lr * layer_decay**d
    full: bool = False  # train the top layers' projection weights themselves (no LoRA); stored as exact deltas
    contrastive_epochs: int = 0  # a SetFit-style stage first: in-batch pairs, cosine similarity towards 1 / 0


# -- the split backbone -------------------------------------------------------------------------


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.encoder.layer  # type: ignore[union-attr,return-value]


def layer_mask(model: torch.nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The attention mask as the encoder's layers take it: additive, shaped (batch, 1, 1, tokens), 0 where a
    key token is real and the dtype's minimum where it is padding; eager and SDPA attention both add it to
    the scores. Built here from the 0/1 mask rather than by the model's private helpers, whose signatures
    change between transformers releases (``model`` is unused, kept so callers need not change)."""
    del model
    keep = attention_mask[:, None, None, :].to(hidden.dtype)
    return (1.0 - keep) * torch.finfo(hidden.dtype).min


def lower(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, stop: int
) -> tuple[torch.Tensor, Any]:
    """Hidden states after the first ``stop`` layers, and the layers' attention mask."""
    hidden = model.embeddings(input_ids=input_ids)  # type: ignore[operator]
    mask = layer_mask(model, hidden, attention_mask)
    for layer in encoder_layers(model)[:stop]:
        hidden = layer(hidden, mask)
    return hidden, mask


def run_layers(layers: Iterable[torch.nn.Module], hidden: torch.Tensor, mask: Any) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean pooling and L2 normalisation (the backbone's embedding)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def merge_lora(layers: torch.nn.ModuleList, lora: dict[str, np.ndarray], scaling: float) -> None:
    """Add ``scaling * B @ A`` to each adapted linear weight of ``layers`` (in place)."""
    modules = dict(layers.named_modules())
    for key, a in lora.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        b = lora[f"{name}.lora_B.weight"]
        linear = modules[name]
        with torch.no_grad():
            linear.weight += scaling * torch.from_numpy(b @ a).to(linear.weight.dtype).to(linear.weight.device)


# -- the head -----------------------------------------------------------------------------------


@register(rank=4)
class FinetuneHead(StoredHead):
    kind: ClassVar[str] = "finetune"
    consumes: ClassVar[frozenset[str]] = frozenset({TRUNK})
    exportable: ClassVar[bool] = False  # exported with its own top layers (adapters/export.py: finetune_graph)
    settings: ClassVar[tuple[str, ...]] = ("split", "n_layers", "rank", "alpha")
    arrays: ClassVar[tuple[Array, ...]] = (
        Array("weight", ("labels", "dim"), key="classifier.weight"), Array("bias", ("labels",), key="classifier.bias"),
    )

    def __init__(
        self, labels: list[str], split: int, n_layers: int, rank: int, alpha: float,
        lora: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.labels = list(labels)
        self.split, self.n_layers, self.rank, self.alpha = int(split), int(n_layers), int(rank), float(alpha)
        self.lora: dict[str, np.ndarray] = dict(lora or {})
        self.weight = np.zeros((len(labels), 0), dtype=np.float32)
        self.bias = np.zeros(len(labels), dtype=np.float32)
        self.temperature = 1.0
        self.source: TextSource | None = None
        self.layers: torch.nn.ModuleList | None = None  # merged copies of the top layers, once bound
        self.metrics: dict[str, Any] = {}

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    # -- Head protocol ----------------------------------------------------------------------

    def fit(self, x: np.ndarray | None, y: np.ndarray, raw: Sequence[str] | None = None) -> FinetuneHead:
        raise TypeError("fine-tuning heads are trained with adapters.heads.finetune.fit_finetune")

    def temper(self, temperature: float) -> None:
        self.weight, self.bias = self.weight / temperature, self.bias / temperature
        self._torch_classifier = None

    def extra_tensors(self) -> dict[str, np.ndarray]:
        return {f"lora.{k}": v for k, v in self.lora.items()}

    @classmethod
    def restored_arguments(cls, params: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"lora": {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}}

    def check(self) -> None:
        if not 0 <= self.split < self.n_layers:
            raise HeadFormatError("finetune head split point out of range")

    # -- serving ----------------------------------------------------------------------------

    def bind(self, source: TextSource) -> FinetuneHead:
        """Attach the backbone: copies of its top layers with this head's LoRA updates merged in."""
        model = source.model
        if len(encoder_layers(model)) != self.n_layers:
            raise ValueError(
                f"the head was trained on a {self.n_layers}-layer backbone, this one has {len(encoder_layers(model))}"
            )
        layers = copy.deepcopy(encoder_layers(model)[self.split :]).float().eval()
        for p in layers.parameters():
            p.requires_grad_(False)
        merge_lora(layers, self.lora, self.scaling)
        self.source, self.layers = source, layers
        return self

    @property
    def bound(self) -> bool:
        return self.layers is not None

    def resident_nbytes(self) -> int:
        """Memory held once bound: the merged top layers plus the stored tensors."""
        held = sum(int(t.nbytes) for t in self.tensors().values())
        if self.layers is not None:
            held += sum(p.numel() * p.element_size() for p in self.layers.parameters())
        return held

    def top(self, hidden: torch.Tensor, mask: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        """Probabilities from the hidden states at the split point (torch, float32)."""
        assert self.layers is not None, "bind() the head to its backbone first"
        pooled = pool(run_layers(self.layers, hidden.float(), mask), attention_mask)
        w = torch.from_numpy(self.weight).to(pooled.device)
        b = torch.from_numpy(self.bias).to(pooled.device)
        return torch.softmax(pooled @ w.T + b, dim=1)

    def predict_proba(self, x: np.ndarray | None, raw: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities for raw texts through this head's whole model (bound backbone required)."""
        if raw is None:
            raise MissingInputs("the 'finetune' head needs the raw texts")
        if self.source is None:
            raise RuntimeError("bind() the head to its backbone first")
        return predict_shared(self.source, list(raw), [self] * len(raw))

    def torch_module(self) -> torch.nn.Module:
        """The whole adapted model: (input_ids, attention_mask) → probabilities (for ONNX export)."""
        assert self.source is not None and self.layers is not None, "bind() the head to its backbone first"
        return FinetunedModel(self.source.model, self)


class FinetunedModel(torch.nn.Module):
    """Backbone lower layers + the head's merged top layers + classifier, as one module."""

    weight: torch.Tensor  # buffers
    bias: torch.Tensor

    def __init__(self, model: torch.nn.Module, head: FinetuneHead) -> None:
        super().__init__()
        assert head.layers is not None, "bind() the head to its backbone first"
        self.model = copy.deepcopy(model).float().eval()
        self.split = head.split
        self.top_layers: torch.nn.ModuleList = copy.deepcopy(head.layers)
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(head.weight, dtype=np.float32).copy()))
        self.register_buffer("bias", torch.from_numpy(np.ascontiguousarray(head.bias, dtype=np.float32).copy()))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden, mask = lower(self.model, input_ids, attention_mask, self.split)
        pooled = pool(run_layers(self.top_layers, hidden, mask), attention_mask)
        return torch.softmax(pooled @ self.weight.T + self.bias, dim=1)


@torch.inference_mode()
def predict_shared(
    source: TextSource, texts: Sequence[str], row_heads: Sequence[FinetuneHead], micro_batch: int = 32
) -> np.ndarray:
    """Probabilities for a mixed batch: row ``i`` is ``texts[i]`` for ``row_heads[i]``.

    Per length-sorted micro-batch, the frozen layers below the lowest split point run once for
    all rows; then rows are grouped by head, and each group runs the frozen layers up to its
    head's split (if higher), the head's own top layers and its classifier. Rows are (n, max
    labels), columns past a head's labels are 0.
    """
    width = max((len(h.labels) for h in row_heads), default=0)
    out = np.zeros((len(texts), width), dtype=np.float32)
    if not len(texts):
        return out
    model = source.model
    device = next(model.parameters()).device
    for idx, feeds in source.batches(texts, micro_batch):
        ids = torch.from_numpy(feeds["input_ids"]).to(device)
        am = torch.from_numpy(feeds["attention_mask"]).to(device)
        heads_here = [row_heads[i] for i in idx]
        start = min(h.split for h in heads_here)
        hidden, mask = lower(model, ids, am, start)
        hidden = hidden.float()
        groups: dict[int, list[int]] = {}
        for pos, head in enumerate(heads_here):
            groups.setdefault(id(head), []).append(pos)
        for positions in groups.values():
            head = heads_here[positions[0]]
            rows = torch.tensor(positions, device=device)
            sub_am = am[rows]
            sub_hidden = hidden[rows]
            sub_mask = layer_mask(model, sub_hidden, sub_am)
            sub_hidden = run_layers(encoder_layers(model)[start : head.split], sub_hidden, sub_mask)
            proba = head.top(sub_hidden, sub_mask, sub_am).cpu().numpy()
            out[np.asarray(idx)[positions], : proba.shape[1]] = proba
    return out


# -- training ---------------------------------------------------------------------------------


def _holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) indices: ``fraction`` of each label, at least 1 when it has 2+."""
    train: list[int] = []
    held: list[int] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n = int(round(fraction * len(members))) if len(members) >= 2 else 0
        n = max(n, 1) if len(members) >= 2 else 0
        held.extend(members[:n])
        train.extend(members[n:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


class _Cached:
    """The hidden states at the split point of every example (unpadded), computed once.

    Every epoch and every held-out evaluation reads these: the frozen layers below the split never
    run again during training (:func:`fit_finetune`)."""

    def __init__(self, source: TextSource, texts: Sequence[str], split: int, micro_batch: int = 32) -> None:
        model = source.model
        self.device = next(model.parameters()).device
        self.hidden: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        with torch.inference_mode():
            for idx, feeds in source.batches(texts, micro_batch):
                ids = torch.from_numpy(feeds["input_ids"]).to(self.device)
                am = torch.from_numpy(feeds["attention_mask"]).to(self.device)
                hidden, _ = lower(model, ids, am, split)
                for row, i in enumerate(idx):
                    self.hidden[i] = hidden[row, : int(am[row].sum())].float().clone()
        self.lengths = np.array([h.shape[0] for h in self.hidden], dtype=np.int64)

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' hidden states padded to the longest of them, and their 0/1 attention mask."""
        hidden = torch.nn.utils.rnn.pad_sequence([self.hidden[i] for i in rows], batch_first=True)
        am = torch.zeros(hidden.shape[:2], dtype=torch.int64, device=self.device)
        for r, i in enumerate(rows):
            am[r, : self.hidden[i].shape[0]] = 1
        return hidden, am

    def epoch_batches(self, rows: np.ndarray, size: int, gen: torch.Generator, bucket: bool = True) -> list[list[int]]:
        """One epoch's batches of ``rows``, in a seeded random order. Bucketed: the shuffled rows are
        cut into pools of 8 batches, each pool sorted by length and cut into batches, and the batches
        shuffled — batches of similar lengths (little padding) whose composition still changes every
        epoch."""
        order = rows[torch.randperm(len(rows), generator=gen).numpy()]
        if not bucket:
            return [order[s : s + size].tolist() for s in range(0, len(order), size)]
        batches: list[list[int]] = []
        pool = 8 * size
        for p in range(0, len(order), pool):
            chunk = order[p : p + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[s : s + size].tolist() for s in range(0, len(chunk), size))
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]

    def sorted_batches(self, rows: np.ndarray, size: int = 32) -> list[list[int]]:
        """``rows`` in length order, cut into batches (evaluation: order does not matter)."""
        order = rows[np.argsort(self.lengths[rows], kind="stable")]
        return [order[s : s + size].tolist() for s in range(0, len(order), size)]


class _Trainable(torch.nn.Module):
    """Copies of the top layers with peft LoRA injected (or, ``cfg.full``, their projections trainable), plus the
    classifier."""

    def __init__(
        self, model: torch.nn.Module, split: int, cfg: FinetuneConfig, weight: np.ndarray, bias: np.ndarray
    ) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__()
        self.__dict__["backbone"] = model  # not a submodule: peft must not touch it, its weights are not trained
        self.full, self.scaling = cfg.full, cfg.alpha / cfg.rank
        self.layer = copy.deepcopy(encoder_layers(model)[split:]).float().train(False)
        for p in self.layer.parameters():
            p.requires_grad_(False)
        self.initial: dict[str, torch.Tensor] = {}
        if cfg.full:
            for name, module in self.layer.named_modules():
                if isinstance(module, torch.nn.Linear) and name.endswith(TARGETS):
                    module.weight.requires_grad_(True)
                    self.initial[name] = module.weight.detach().clone()
        else:
            config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # typed int; a float works
                                lora_dropout=0.0, target_modules=list(TARGETS), bias="none")
            inject_adapter_in_model(config, self)  # LoRA only on the top layers' projections (the only linears here)
        self.classifier = torch.nn.Linear(weight.shape[1], weight.shape[0])
        self.set_classifier(weight, bias)

    def set_classifier(self, weight: np.ndarray, bias: np.ndarray) -> None:
        with torch.no_grad():
            self.classifier.weight.copy_(torch.from_numpy(weight))
            self.classifier.bias.copy_(torch.from_numpy(bias))

    def adapted_parameters(self) -> list[tuple[int, torch.nn.Parameter]]:
        """The trained parameters of the top layers, each with its layer's distance below the top (0 = top)."""
        top = len(self.layer) - 1
        return [
            (top - int(n.split(".", 1)[0]), p) for n, p in self.layer.named_parameters()
            if p.requires_grad and ("lora_" in n or self.full)
        ]

    def embed(self, hidden: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        mask = layer_mask(cast(torch.nn.Module, self.__dict__["backbone"]), hidden, am)
        return pool(run_layers(self.layer, hidden, mask), am)

    def forward(self, hidden: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(hidden, am))

    def lora_state(self) -> dict[str, np.ndarray]:
        """The LoRA matrices; for ``full``, each projection's change as an exact factorisation ``B @ A`` with one
        factor the identity, so the stored head, its merge and its export are the same as LoRA's."""
        if not self.full:
            return {
                n.removeprefix("layer.").replace(".default", ""): p.detach().cpu().numpy().astype(np.float32).copy()
                for n, p in self.layer.named_parameters() if "lora_" in n
            }
        modules = dict(self.layer.named_modules())
        state: dict[str, np.ndarray] = {}
        for name, w0 in self.initial.items():
            delta = (modules[name].weight.detach() - w0).cpu().numpy().astype(np.float32) / self.scaling
            out_dim, in_dim = delta.shape
            if in_dim <= out_dim:
                a, b = np.eye(in_dim, dtype=np.float32), delta
            else:
                a, b = delta, np.eye(out_dim, dtype=np.float32)
            state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"] = a, b
        return state


def _pooled_frozen(source: TextSource, cache: _Cached, split: int) -> np.ndarray:
    """The backbone's own embeddings, from the cached hidden states (frozen top layers)."""
    model = source.model
    out = np.zeros((len(cache.hidden), int(cache.hidden[0].shape[1]) if cache.hidden else 0), dtype=np.float32)
    with torch.inference_mode():
        for rows in cache.sorted_batches(np.arange(len(cache.hidden))):
            hidden, am = cache.batch(rows)
            mask = layer_mask(model, hidden, am)
            out[rows] = pool(run_layers(encoder_layers(model)[split:], hidden, mask), am).cpu().numpy()
    return out


@dataclass
class _Run:
    lora: dict[str, np.ndarray]
    weight: np.ndarray
    bias: np.ndarray
    history: list[dict[str, float]]
    best_epoch: int
    held_pred: np.ndarray | None = None  # the best epoch's predicted class per held-out example (``held`` order)
    stopped: str = "epochs"  # "epochs" (max_epochs), "early" (patience), "time" (the deadline)


def lr_factor(step: int, steps: int, warmup: float, decay: bool) -> float:
    """The learning rate's multiplier at ``step`` of ``steps``: linear warm-up over the first
    ``warmup`` fraction, then constant, or (``decay``) linear decay to 0 at the last step."""
    ramp = int(round(warmup * steps))
    if step < ramp:
        return (step + 1) / ramp
    if not decay:
        return 1.0
    return max(0.0, (steps - step) / max(1, steps - ramp))


def _epoch_score(scored: dict[str, float], select: str) -> tuple[float, ...]:
    """Higher is better: held-out accuracy with log-loss breaking ties, or (``select="loss"``) the log-loss alone,
    which moves with every example's probability and so is less noisy than a few examples' accuracy."""
    if select == "loss":
        return (-scored["loss"],)
    return (scored["accuracy"], -scored["loss"])


def cv_c(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> float:
    """The linear head's choice of C for the warm start: stratified CV accuracy over LINEAR_C_GRID (ties: the
    smaller C). Labels with fewer examples than ``folds`` lower the number of folds (at least 2)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    fewest = int(counts[counts > 0].min())
    if fewest < 2:
        return LINEAR_C_GRID[len(LINEAR_C_GRID) // 2]
    k = min(folds, fewest)
    right = np.zeros(len(LINEAR_C_GRID))
    n_labels = int(y.max()) + 1
    for fit_rows, test_rows in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        for i, c in enumerate(LINEAR_C_GRID):
            w, b = fit_logistic(x[fit_rows], y[fit_rows], n_labels, c, tol=1e-4)
            right[i] += np.sum((x[test_rows] @ w.T + b).argmax(1) == y[test_rows])
    return float(LINEAR_C_GRID[int(np.argmax(right))])


def _contrastive(
    net: _Trainable, cache: _Cached, y: np.ndarray, train: np.ndarray, cfg: FinetuneConfig, gen: torch.Generator,
    between_steps: Callable[[], None] | None,
) -> None:
    """SetFit's stage on in-batch pairs: the cosine similarity of two examples' pooled outputs is pulled towards 1
    when they share a label, towards 0 when not (positive and negative pairs weigh the same)."""
    optim = torch.optim.AdamW([p for _, p in net.adapted_parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    yt = torch.from_numpy(y).to(cache.device)
    for _ in range(cfg.contrastive_epochs):
        for rows in cache.epoch_batches(train, 2 * cfg.batch_size, gen, cfg.bucket):
            if between_steps is not None:
                between_steps()
            emb = net.embed(*cache.batch(rows))
            sim = emb @ emb.T
            same = yt[rows][:, None] == yt[rows][None, :]
            off = ~torch.eye(len(rows), dtype=torch.bool, device=cache.device)
            losses = []
            for part, target in ((same & off, 1.0), (~same, 0.0)):
                if part.any():
                    losses.append(((sim[part] - target) ** 2).mean())
            if not losses:
                continue
            loss = torch.stack(losses).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()


def _train(
    source: TextSource, cache: _Cached, pooled: np.ndarray, y: np.ndarray, n_labels: int, train: np.ndarray,
    held: np.ndarray | None, epochs: int, cfg: FinetuneConfig, split: int, seed: int,
    tick: Callable[[], None], between_steps: Callable[[], None] | None = None, deadline: float = float("inf"),
) -> _Run:
    """One training run; with ``held``, early stopping (keeps the best epoch's weights); no epoch starts after
    ``deadline`` (``time.perf_counter()``)."""
    torch.manual_seed(seed)
    c = cv_c(pooled[train], y[train], seed) if cfg.c_by_cv else cfg.c
    weight, bias = fit_logistic(pooled[train], y[train], n_labels, c)
    net = _Trainable(source.model, split, cfg, weight, bias).to(cache.device)
    gen = torch.Generator().manual_seed(seed)
    if cfg.contrastive_epochs:
        _contrastive(net, cache, y, train, cfg, gen, between_steps)
        with torch.no_grad():
            adapted = np.zeros_like(pooled)
            for rows in cache.sorted_batches(train):
                adapted[rows] = net.embed(*cache.batch(rows)).cpu().numpy()
        net.set_classifier(*fit_logistic(adapted[train], y[train], n_labels, c))
    by_depth: dict[int, list[torch.nn.Parameter]] = {}
    for depth, p in net.adapted_parameters():
        by_depth.setdefault(depth, []).append(p)
    optim = torch.optim.AdamW(
        [{"params": ps, "lr": cfg.lr * cfg.layer_decay**depth} for depth, ps in sorted(by_depth.items())]
        + [{"params": list(net.classifier.parameters()), "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    steps = max(1, epochs * -(-len(train) // cfg.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: lr_factor(step, steps, cfg.warmup, cfg.decay))
    yt = torch.from_numpy(y).to(cache.device)
    history: list[dict[str, float]] = []

    predicted: dict[int, np.ndarray] = {}  # epoch -> predicted class per held-out example

    def evaluate(epoch: int) -> dict[str, float]:
        assert held is not None
        with torch.no_grad():
            batches = cache.sorted_batches(held)
            rows_in_order = [i for rows in batches for i in rows]
            logits = torch.cat([net(*cache.batch(rows)) for rows in batches])
            target = yt[torch.tensor(rows_in_order, device=cache.device)]
            pred = np.empty(len(held), dtype=np.int64)
            pred[np.searchsorted(held, rows_in_order)] = logits.argmax(1).cpu().numpy()
            predicted[epoch] = pred
            return {
                "loss": float(torch.nn.functional.cross_entropy(logits, target)),
                "accuracy": float((logits.argmax(1) == target).float().mean()),
            }

    def snapshot() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        return (
            net.lora_state(),
            net.classifier.weight.detach().cpu().numpy().copy(),
            net.classifier.bias.detach().cpu().numpy().copy(),
        )

    best = snapshot()
    best_epoch, best_score = 0, None
    if held is not None and len(held):
        history.append({"epoch": 0, **evaluate(0)})
        best_score = _epoch_score(history[-1], cfg.select)
    stopped = "epochs"
    for epoch in range(1, epochs + 1):
        if time.perf_counter() >= deadline:
            stopped = "time"
            break
        for rows in cache.epoch_batches(train, cfg.batch_size, gen, cfg.bucket):
            if between_steps is not None:
                between_steps()
            loss = torch.nn.functional.cross_entropy(net(*cache.batch(rows)), yt[rows])
            optim.zero_grad()
            loss.backward()
            optim.step()
            schedule.step()
        tick()
        if best_score is None:
            best, best_epoch = snapshot(), epoch
            continue
        history.append({"epoch": epoch, **evaluate(epoch)})
        score = _epoch_score(history[-1], cfg.select)
        if score > best_score:
            best, best_epoch, best_score = snapshot(), epoch, score
        elif epoch - best_epoch >= cfg.patience:
            stopped = "early"
            break
    return _Run(*best, history=history, best_epoch=best_epoch, held_pred=predicted.get(best_epoch), stopped=stopped)


def compare_on_holdout(
    texts: Sequence[str], y: np.ndarray, classes: list[str], train: np.ndarray, held: np.ndarray, run: _Run,
) -> dict[str, dict[str, float]]:
    """Held-out accuracy of the fine-tuned model and of the cheaper heads, all fitted on the same
    training part and scored on the same held-out examples: ``linear`` is epoch 0 (the logistic
    regression on the frozen embeddings the classifier starts from), ``baseline`` the from-scratch
    TF-IDF + logistic regression. The fine-tuned figure is its best epoch's, chosen on these
    examples, so it is optimistic; the others involve no choice on them."""
    epoch = {h["epoch"]: h for h in run.history}
    out = {
        "finetune": {"accuracy": epoch[run.best_epoch]["accuracy"], "epoch": float(run.best_epoch)},
        "linear": {"accuracy": epoch[0]["accuracy"]},
    }
    try:
        base = BaselineHead(classes, c=32.0).fit(None, y[train], raw=[texts[i] for i in train])
        pred = base.predict_proba(None, raw=[texts[i] for i in held]).argmax(axis=1)
        out["baseline"] = {"accuracy": float(np.mean(pred == y[held]))}
    except ValueError:  # e.g. no token survives the vectoriser's vocabulary rules
        pass
    return out


def holdout_warnings(
    compared: dict[str, dict[str, float]], n_held: int, best_epoch: int, pinned: bool = True
) -> list[str]:
    """Plain-words warnings when fine-tuning did not beat the cheaper heads on the held-out examples
    (``pinned``: the head was asked for; else ``auto`` chose it)."""
    if not compared:
        return [
            "Too few examples per label to hold any out: fine-tuning ran a fixed 3 epochs and was not compared "
            "with the cheaper heads. Add at least 2 examples per label (8 or more is better)."
        ]
    tuned = compared["finetune"]["accuracy"]
    warnings = []
    if tuned <= compared["linear"]["accuracy"]:
        served = (
            "No epoch improved on it, so the served model is that logistic regression (fine-tuning changed nothing)."
            if best_epoch == 0
            else "The fine-tuned model is served as pinned." if pinned
            else "Head 'auto' serves the fine-tuned model: it beat the frozen heads' choice beyond noise."
        )
        warnings.append(
            f"Fine-tuning did not beat the linear head: on the same {n_held} held-out examples it scored "
            f"{100 * tuned:.1f}% accuracy, the logistic regression on the frozen embeddings "
            f"{100 * compared['linear']['accuracy']:.1f}%. "
            f"{served} Head 'linear' (or 'auto') trains and serves for far less at this accuracy; fine-tuning tends "
            "to pay off with more examples per label."
        )
    base = compared.get("baseline", {}).get("accuracy")
    if base is not None and base > tuned:
        warnings.append(
            "The from-scratch baseline (TF-IDF + logistic regression, no pretrained backbone) scored "
            f"{100 * base:.1f}% on "
            f"the same {n_held} held-out examples, better than fine-tuning ({100 * tuned:.1f}%): the pretrained "
            "backbone "
            "may not suit this task. Head 'auto' compares them by cross-validation."
        )
    return warnings


@dataclass
class Finetuned:
    """A fitted fine-tuned head with what its held-out comparison needs: the stratified split it stopped
    early on (``train``, ``held``: indices into the examples) and its best epoch's predicted class on
    each held-out example (``held_pred``, in ``held`` order; None when nothing was held out)."""

    head: FinetuneHead
    metrics: dict[str, Any]
    classes: list[str]
    train: np.ndarray
    held: np.ndarray
    held_pred: np.ndarray | None
    best_epoch: int


def fit_finetune(
    source: TextSource,
    texts: Sequence[str],
    labels: Sequence[str],
    cfg: FinetuneConfig = FinetuneConfig(),
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    between_steps: Callable[[], None] | None = None,
) -> tuple[FinetuneHead, dict[str, Any]]:
    """Fine-tune the top ``cfg.layers`` layers of ``source`` on ``texts``; returns the bound head and metrics.

    ``between_steps`` is called before every optimiser step (the service waits there while predict
    requests are in flight, so training yields the cores to serving)."""
    fitted = fit_finetune_split(source, texts, labels, cfg, seed, progress, between_steps)
    return fitted.head, fitted.metrics


def fit_finetune_split(
    source: TextSource,
    texts: Sequence[str],
    labels: Sequence[str],
    cfg: FinetuneConfig = FinetuneConfig(),
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    between_steps: Callable[[], None] | None = None,
    pinned: bool = True,
    max_seconds: float | None = None,
) -> Finetuned:
    """:func:`fit_finetune`, with its held-out split and predictions (``head: auto`` compares them with the
    frozen heads' choice, service/pipeline.py); ``pinned``: whether the head was asked for (its warnings
    say so) or chosen by ``auto``. With ``max_seconds`` no epoch starts after that many seconds (the best
    epoch so far is kept), and the refit on all examples runs only if it fits in the time left (else the
    early-stopped model, trained without the held-out part, is the head)."""
    started = time.perf_counter()
    deadline = started + (max_seconds if max_seconds is not None else float("inf"))
    n_layers = len(encoder_layers(source.model))
    if not 1 <= cfg.layers <= n_layers:
        raise ValueError(f"layers must be between 1 and {n_layers}")
    split = n_layers - cfg.layers
    classes, y = encode_labels(labels)
    report = progress or (lambda _: None)
    cache = _Cached(source, texts, split)
    pooled = _pooled_frozen(source, cache, split)
    report(0.2)
    train, held = _holdout(y, cfg.holdout, np.random.default_rng(seed))
    total = cfg.max_epochs * (2 if cfg.refit else 1)
    done = [0]

    def tick() -> None:
        done[0] += 1
        report(0.2 + 0.8 * min(1.0, done[0] / total))

    with torch.enable_grad():
        if len(held):
            stopped = _train(
                source, cache, pooled, y, len(classes), train, held, cfg.max_epochs, cfg, split, seed, tick,
                between_steps, deadline,
            )
        else:  # too few examples to hold any out: a fixed small number of epochs
            stopped = _train(
                source, cache, pooled, y, len(classes), np.arange(len(y)), None, 3, cfg, split, seed, tick,
                between_steps,
            )
        final = stopped
        spent = time.perf_counter() - started
        refit = bool(cfg.refit and len(held)) and started + 2 * spent < deadline
        if refit:
            done[0] = max(done[0], cfg.max_epochs)
            final = _train(
                source, cache, pooled, y, len(classes), np.arange(len(y)), None, stopped.best_epoch, cfg, split, seed,
                tick, between_steps,
            )
    head = FinetuneHead(classes, split, n_layers, cfg.rank, cfg.alpha)
    head.lora, head.weight, head.bias = final.lora, final.weight.astype(np.float32), final.bias.astype(np.float32)
    head.bind(source)
    held_best = next((h for h in stopped.history if h["epoch"] == stopped.best_epoch), None)
    compared = compare_on_holdout(texts, y, classes, train, held, stopped) if len(held) else {}
    metrics = {
        "evaluation": "holdout" if len(held) else "train",
        "head": "finetune",
        "finetune": {**asdict(cfg), "split": split, "best_epoch": stopped.best_epoch, "history": stopped.history,
                     "held_out": int(len(held)), "seconds": round(time.perf_counter() - started, 3),
                     "stopped": stopped.stopped, "refit": refit, "max_seconds": max_seconds},
        "accuracy": held_best["accuracy"] if held_best else None,
        "selected": {"layers": cfg.layers, "rank": cfg.rank},
        "heads": compared,
        "warnings": holdout_warnings(compared, int(len(held)), stopped.best_epoch, pinned=pinned),
    }
    report(1.0)
    return Finetuned(head, metrics, classes, train, held, stopped.held_pred if len(held) else None, stopped.best_epoch)
