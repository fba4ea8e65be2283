"""Fine-tuned token tagger for entities (``head: "finetune"``): LoRA on the top ``k`` transformer layers of
the text backbone plus a BIO token classifier, trained on the task's spans.

The recipe follows the classification fine-tune (adapters/heads/finetune.py), on tokens instead of a
pooled embedding:

- **Windows.** Each text is tokenised once (no special tokens, character offsets kept) and cut into
  windows of the backbone's length (``codec.windows``, ``overlap`` tokens shared); a window runs as
  ``[CLS] tokens [SEP]``. A token's tag is learnt and predicted from the window where it has the most
  context (``codec.window_owners``), as the frozen tagger's states are.
- **Frozen pass, once.** The hidden states at the split point (``split = n_layers - k``) of every window
  are computed once; the epochs run only the top ``k`` layers (peft ``inject_adapter_in_model`` on a copy
  of them: the shared model is never modified) and the classifier.
- **Warm start.** The classifier reads each token's output state with its neighbours' (3·dim, zeros past
  the text's ends), like the frozen ``tagger``, and starts as the same standardised logistic regression on
  the frozen states (C = 0.5) folded into one linear map: LoRA's ``B`` starts at zero, so epoch 0 *is* the
  frozen tagger on these windows.
- **Bounded.** Up to ``max_epochs``; early stopping on the entity F1 of a held-out 20 % of the examples
  (patience 2); and ``max_seconds``: no epoch starts after it (the best epoch so far is kept). The best
  epoch count is re-run on all examples when the time left allows it (``refit``).
- **Competing.** The frozen ``tagger`` and the ``word-tagger`` baseline are fitted on the same training part
  and scored on the same held-out examples; the version's warnings say when the fine-tune did not beat them.
- **Stored** as a span head: the LoRA matrices and the classifier (safetensors, never pickled). Loaded for
  serving, the LoRA updates are merged into copies of the top layers (``bind``), like the classification
  fine-tune's; a prediction runs the shared model's frozen lower layers and then the task's own top layers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch

from adapters.heads.base import TRUNK, HeadFormatError
from adapters.heads.finetune import (
    TARGETS,
    FinetuneConfig,
    encoder_layers,
    layer_mask,
    lower,
    merge_lora,
    run_layers,
)

from .codec import Span, encode_bio, scored_spans, tag_names, window_owners, windows
from .heads import ENTITIES, Encoded, TokenTagger, WordTagger, _Linear, span_head
from .metrics import entity_scores

# The entities recipe: one adapted layer at the original learning rates (issue 18's measurements); the
# classification recipe (FinetuneConfig's defaults) adapts three layers with gentler steps.
TAGGER_RECIPE = FinetuneConfig(layers=1, lr=1e-3, head_lr=1e-2)
IGNORE = -100  # tokens whose tag is not learnt from this window (special tokens, tokens owned by another window)
OVERLAP = 64


@dataclass(frozen=True)
class _Window:
    text: int  # the example it belongs to
    ids: list[int]  # [CLS] tokens [SEP]
    first: int  # the text's token index of the window's first token
    owned: np.ndarray  # bool per text token of the window: its tag is read from this window


class _Tokens:
    """Texts cut into windows of the backbone's length (see the module docstring)."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], max_length: int, overlap: int = OVERLAP) -> None:
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        if cls is None or sep is None:
            raise ValueError("the finetune-tagger needs a tokenizer with [CLS] and [SEP] tokens (a BERT-style encoder)")
        room = max_length - 2
        found = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        self.offsets = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in found["offset_mapping"]]
        self.windows: list[_Window] = []
        for i, ids in enumerate(found["input_ids"]):
            spans = windows(len(ids), room, min(overlap, room // 4)) if ids else []
            owners = window_owners(spans, len(ids))
            for k, (start, end) in enumerate(spans):
                self.windows.append(_Window(i, [cls, *ids[start:end], sep], start, owners[start:end] == k))

    def tags(self, spans: Sequence[Sequence[Span]], labels: Sequence[str]) -> list[np.ndarray]:
        """Per window, the tag of every position (IGNORE where not learnt from this window)."""
        per_text = [encode_bio(o, s, labels) for o, s in zip(self.offsets, spans, strict=True)]
        out = []
        for w in self.windows:
            tags = np.full(len(w.ids), IGNORE, dtype=np.int64)
            n = len(w.owned)
            mine = per_text[w.text][w.first : w.first + n]
            tags[1 : 1 + n] = np.where(w.owned, mine, IGNORE)
            out.append(tags)
        return out


def _feeds(rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.int64)
    am = torch.zeros((len(rows), width), dtype=torch.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.int64)
        am[r, : len(row)] = 1
    return ids.to(device), am.to(device)


def _text_mask(am: torch.Tensor) -> torch.Tensor:
    """1 on a window's text tokens, 0 on [CLS], [SEP] and padding."""
    mask = am.clone()
    mask[:, 0] = 0
    lengths = am.sum(dim=1)
    mask[torch.arange(len(am)), lengths - 1] = 0
    return mask


def _context(hidden: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Each position's state next to its neighbours' (zeros outside the text): (batch, tokens, 3·dim)."""
    h = hidden * text_mask.unsqueeze(-1).to(hidden.dtype)
    prev = torch.nn.functional.pad(h[:, :-1], (0, 0, 1, 0))
    nxt = torch.nn.functional.pad(h[:, 1:], (0, 0, 0, 1))
    return torch.cat([h, prev, nxt], dim=-1)


def _folded(linear: _Linear) -> tuple[np.ndarray, np.ndarray]:
    """A standardised logistic regression as one linear map on the raw features."""
    weight = linear.coef / linear.scale
    return weight.astype(np.float32), (linear.bias - weight @ linear.mean).astype(np.float32)


def _order(lengths: Sequence[int], size: int) -> list[list[int]]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[s : s + size].tolist() for s in range(0, len(order), size)]


@span_head
class FinetuneTagger:
    """BIO tags from the task's own top layers (the backbone's with LoRA merged in) and a token classifier.
    Needs its backbone (``bind``): it runs the backbone itself rather than reading the token lane's states."""

    kind: ClassVar[str] = "finetune-tagger"
    task_kind: ClassVar[str] = ENTITIES
    transfer: ClassVar[bool] = False  # reads no shared final states: runs its own top layers (bind)
    consumes: ClassVar[frozenset[str]] = frozenset({TRUNK})  # bound to the backbone when loaded for serving

    def __init__(
        self,
        labels: list[str],
        split: int,
        n_layers: int,
        rank: int,
        alpha: float,
        overlap: int = OVERLAP,
        micro_batch: int = 16,
    ) -> None:
        self.labels = list(labels)
        self.split, self.n_layers, self.rank, self.alpha = int(split), int(n_layers), int(rank), float(alpha)
        self.overlap, self.micro_batch = int(overlap), int(micro_batch)
        self.lora: dict[str, np.ndarray] = {}
        self.weight = np.zeros((len(tag_names(self.labels)), 0), dtype=np.float32)
        self.bias = np.zeros(len(tag_names(self.labels)), dtype=np.float32)
        self.source: Any = None
        self.layers: torch.nn.ModuleList | None = None
        self.backbone: str | None = None

    # -- storing ------------------------------------------------------------------------------

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "classifier.weight": self.weight,
            "classifier.bias": self.bias,
            **{f"lora.{k}": v for k, v in self.lora.items()},
        }

    def params(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_layers": self.n_layers,
            "rank": self.rank,
            "alpha": self.alpha,
            "overlap": self.overlap,
        }

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> FinetuneTagger:
        head = cls(labels, **params)
        if not 0 <= head.split < head.n_layers:
            raise HeadFormatError("finetune-tagger split point out of range")
        head.weight, head.bias = tensors["classifier.weight"], tensors["classifier.bias"]
        if head.weight.shape[0] != len(tag_names(head.labels)) or head.bias.shape != (head.weight.shape[0],):
            raise HeadFormatError("finetune-tagger classifier shape does not match its labels")
        head.lora = {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}
        return head

    # -- serving ------------------------------------------------------------------------------

    def bind(self, source: Any) -> FinetuneTagger:
        """Attach the backbone (its torch model and tokenizer): copies of its top layers with the LoRA
        updates merged in."""
        model = source.model
        if len(encoder_layers(model)) != self.n_layers:
            raise ValueError(
                f"the head was trained on a {self.n_layers}-layer backbone, this one has {len(encoder_layers(model))}"
            )
        layers = copy.deepcopy(encoder_layers(model)[self.split :]).float().eval()
        for p in layers.parameters():
            p.requires_grad_(False)
        merge_lora(layers, self.lora, self.alpha / self.rank)
        self.source, self.layers = source, layers
        return self

    def resident_nbytes(self) -> int:
        held = sum(int(t.nbytes) for t in self.tensors().values())
        if self.layers is not None:
            held += sum(p.numel() * p.element_size() for p in self.layers.parameters())
        return held

    def log_probs(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text: log tag probabilities of every token (n_tokens, n_tags) and the tokens' offsets."""
        if self.source is None or self.layers is None:
            raise RuntimeError("bind() the finetune-tagger to its backbone first")
        tagged = tag_shared(self.source, texts, [self] * len(texts), self.micro_batch)
        return [t.log_probs for t in tagged], [t.offsets for t in tagged]

    def predict(self, texts: Sequence[str], encoded: Sequence[Any] | None = None) -> list[list[tuple[Span, float]]]:
        """Entities of ``texts``; ``encoded``, when given, holds this head's :class:`Tagged` rows of them
        already computed (the token lane's shared pass, :func:`tag_shared`)."""
        if encoded is not None and all(isinstance(e, Tagged) for e in encoded):
            tagged = list(encoded)
        else:
            scores, offsets = self.log_probs(texts)
            tagged = [Tagged(s, o) for s, o in zip(scores, offsets, strict=True)]
        return [scored_spans(np.exp(t.log_probs), t.offsets, self.labels) if len(t.offsets) else [] for t in tagged]


@dataclass(frozen=True)
class Tagged:
    """One text through a fine-tuned tagger: log tag probabilities per token and the tokens' offsets."""

    log_probs: np.ndarray
    offsets: np.ndarray


@torch.inference_mode()
def tag_shared(
    source: Any, texts: Sequence[str], row_heads: Sequence[FinetuneTagger], micro_batch: int = 16
) -> list[Tagged]:
    """Row ``i`` is ``texts[i]`` through ``row_heads[i]`` (each bound to ``source``): the windows of all texts,
    length-sorted into micro-batches; per micro-batch the frozen layers below the lowest split point run
    **once for all rows of all heads**, then each head's rows run the frozen layers up to its split (if
    higher), its merged top layers and its classifier — the classification fine-tune's shared trunk
    (adapters/heads/finetune.py ``predict_shared``), on windows of tokens."""
    if not texts:
        return []
    model = source.model
    device = next(model.parameters()).device
    windows: list[tuple[int, _Window]] = []  # (row, window)
    offsets: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)] * len(texts)
    by_overlap: dict[int, list[int]] = {}
    for i, head in enumerate(row_heads):
        if head.layers is None:
            raise RuntimeError("bind() the finetune-tagger to its backbone first")
        by_overlap.setdefault(head.overlap, []).append(i)
    for overlap, rows in by_overlap.items():
        tokens = _Tokens(source.tokenizer, [texts[i] for i in rows], source.max_length, overlap)
        for k, i in enumerate(rows):
            offsets[i] = tokens.offsets[k]
        windows += [(rows[w.text], w) for w in tokens.windows]
    out = [np.zeros((len(o), len(h.bias)), dtype=np.float32) for o, h in zip(offsets, row_heads, strict=True)]
    for chunk in _order([len(w.ids) for _, w in windows], micro_batch):
        ids, am = _feeds([windows[c][1].ids for c in chunk], device)
        heads_here = [row_heads[windows[c][0]] for c in chunk]
        start = min(h.split for h in heads_here)
        hidden, _ = lower(model, ids, am, start)
        hidden = hidden.float()
        groups: dict[int, list[int]] = {}
        for pos, head in enumerate(heads_here):
            groups.setdefault(id(head), []).append(pos)
        for positions in groups.values():
            head = heads_here[positions[0]]
            assert head.layers is not None
            rows_t = torch.tensor(positions, device=device)
            sub_am = am[rows_t]
            sub_mask = layer_mask(model, hidden, sub_am)
            sub = run_layers(encoder_layers(model)[start : head.split], hidden[rows_t], sub_mask)
            sub = run_layers(head.layers, sub, sub_mask)
            weight = torch.from_numpy(np.ascontiguousarray(head.weight)).to(device)
            bias = torch.from_numpy(np.ascontiguousarray(head.bias)).to(device)
            scores = torch.log_softmax(_context(sub, _text_mask(sub_am)) @ weight.T + bias, dim=-1).cpu().numpy()
            for row, pos in enumerate(positions):
                i, w = windows[chunk[pos]]
                keep = np.flatnonzero(w.owned)
                out[i][w.first + keep] = scores[row, 1 + keep]
    return [Tagged(o, off) for o, off in zip(out, offsets, strict=True)]


# -- training -----------------------------------------------------------------------------------


class _Net(torch.nn.Module):
    """Copies of the top layers with peft LoRA injected, plus the token classifier."""

    def __init__(
        self, model: torch.nn.Module, split: int, cfg: FinetuneConfig, weight: np.ndarray, bias: np.ndarray
    ) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__()
        self.__dict__["backbone"] = model  # not a submodule: peft must not touch it
        self.layer = copy.deepcopy(encoder_layers(model)[split:]).float().train(False)
        for p in self.layer.parameters():
            p.requires_grad_(False)
        config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # a float scale works
            lora_dropout=0.0,
            target_modules=list(TARGETS),
            bias="none",
        )
        inject_adapter_in_model(config, self)
        self.classifier = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(torch.from_numpy(weight))
            self.classifier.bias.copy_(torch.from_numpy(bias))

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.named_parameters() if "lora_" in n]

    def forward(self, hidden: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        mask = layer_mask(cast(torch.nn.Module, self.__dict__["backbone"]), hidden, am)
        return self.classifier(_context(run_layers(self.layer, hidden, mask), _text_mask(am)))

    def lora_state(self) -> dict[str, np.ndarray]:
        return {
            n.removeprefix("layer.").replace(".default", ""): p.detach().cpu().numpy().astype(np.float32).copy()
            for n, p in self.layer.named_parameters()
            if "lora_" in n
        }


class _Cache:
    """Hidden states at the split point of every window (unpadded), computed once."""

    def __init__(self, model: torch.nn.Module, tokens: _Tokens, split: int, micro_batch: int = 16) -> None:
        self.device = next(model.parameters()).device
        self.hidden: list[torch.Tensor] = [torch.empty(0)] * len(tokens.windows)
        with torch.inference_mode():
            for rows in _order([len(w.ids) for w in tokens.windows], micro_batch):
                ids, am = _feeds([tokens.windows[r].ids for r in rows], self.device)
                hidden, _ = lower(model, ids, am, split)
                for row, r in enumerate(rows):
                    self.hidden[r] = hidden[row, : len(tokens.windows[r].ids)].float().clone()
        self.lengths = np.array([h.shape[0] for h in self.hidden], dtype=np.int64)

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.nn.utils.rnn.pad_sequence([self.hidden[i] for i in rows], batch_first=True)
        am = torch.zeros(hidden.shape[:2], dtype=torch.int64, device=self.device)
        for r, i in enumerate(rows):
            am[r, : self.hidden[i].shape[0]] = 1
        return hidden, am


@dataclass
class _Run:
    lora: dict[str, np.ndarray]
    weight: np.ndarray
    bias: np.ndarray
    history: list[dict[str, float]]
    best_epoch: int
    stopped: str  # "early" (patience), "epochs" (max_epochs), "time" (max_seconds)


class _Trainer:
    def __init__(
        self,
        source: Any,
        texts: Sequence[str],
        spans: Sequence[Sequence[Span]],
        labels: list[str],
        cfg: FinetuneConfig,
        split: int,
        seed: int,
        tick: Callable[[], None],
        between_steps: Callable[[], None] | None,
        deadline: float,
    ) -> None:
        self.source, self.texts, self.spans, self.labels = source, texts, spans, labels
        self.cfg, self.split, self.seed, self.tick, self.between_steps = cfg, split, seed, tick, between_steps
        self.deadline = deadline
        self.tokens = _Tokens(source.tokenizer, texts, source.max_length)
        self.tags = self.tokens.tags(spans, labels)
        self.cache = _Cache(source.model, self.tokens, split)
        self.frozen = self._frozen_features()

    def _windows_of(self, examples: np.ndarray) -> np.ndarray:
        chosen = set(examples.tolist())
        return np.array([r for r, w in enumerate(self.tokens.windows) if w.text in chosen], dtype=np.int64)

    def _frozen_features(self) -> list[np.ndarray]:
        """Per window, the frozen top layers' context features (3·dim) of its positions."""
        model = self.source.model
        out: list[np.ndarray] = [np.zeros(0)] * len(self.cache.hidden)
        with torch.inference_mode():
            for rows in _order(self.cache.lengths.tolist(), 32):
                hidden, am = self.cache.batch(rows)
                mask = layer_mask(model, hidden, am)
                feats = _context(run_layers(encoder_layers(model)[self.split :], hidden, mask), _text_mask(am))
                for row, r in enumerate(rows):
                    out[r] = feats[row, : self.cache.lengths[r]].cpu().numpy()
        return out

    def warm_start(self, examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._windows_of(examples)
        x = np.vstack([self.frozen[r][self.tags[r] != IGNORE] for r in rows])
        y = np.concatenate([self.tags[r][self.tags[r] != IGNORE] for r in rows])
        return _folded(_Linear.fit(x, y, len(tag_names(self.labels)), TokenTagger(self.labels).c))

    def scores(self, net: _Net, examples: np.ndarray) -> dict[str, Any]:
        """Entity P/R/F1 of ``net`` on ``examples`` (and the mean token loss)."""
        rows = self._windows_of(examples)
        n_tags = len(tag_names(self.labels))
        per_text = {int(i): np.zeros((len(self.tokens.offsets[i]), n_tags), dtype=np.float32) for i in examples}
        losses = []
        with torch.no_grad():
            for batch in _order(self.cache.lengths[rows].tolist(), 32):
                chosen = rows[batch].tolist()
                logits = net(*self.cache.batch(chosen))
                target = self._targets(chosen, logits.shape[1])
                losses.append(
                    float(
                        torch.nn.functional.cross_entropy(
                            logits.reshape(-1, n_tags), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
                        )
                    )
                )
                logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
                for row, r in enumerate(chosen):
                    w = self.tokens.windows[r]
                    keep = np.flatnonzero(w.owned)
                    per_text[w.text][w.first + keep] = logp[row, 1 + keep]
        found = [
            [s for s, _ in scored_spans(np.exp(per_text[int(i)]), self.tokens.offsets[i], self.labels)]
            if len(self.tokens.offsets[i])
            else []
            for i in examples
        ]
        scored = entity_scores([self.spans[i] for i in examples], found)
        n_tokens = sum(int((self.tags[r] != IGNORE).sum()) for r in rows)
        return {**scored, "loss": sum(losses) / max(1, n_tokens)}

    def _targets(self, rows: Sequence[int], width: int) -> torch.Tensor:
        target = torch.full((len(rows), width), IGNORE, dtype=torch.int64)
        for r, i in enumerate(rows):
            target[r, : len(self.tags[i])] = torch.from_numpy(self.tags[i])
        return target.to(self.cache.device)

    def run(self, train: np.ndarray, held: np.ndarray | None, epochs: int) -> _Run:
        cfg = self.cfg
        torch.manual_seed(self.seed)
        weight, bias = self.warm_start(train)
        net = _Net(self.source.model, self.split, cfg, weight, bias).to(self.cache.device)
        optim = torch.optim.AdamW(
            [
                {"params": net.lora_parameters(), "lr": cfg.lr},
                {"params": list(net.classifier.parameters()), "lr": cfg.head_lr},
            ],
            weight_decay=cfg.weight_decay,
        )
        gen = torch.Generator().manual_seed(self.seed)
        rows = self._windows_of(train)
        n_tags = len(tag_names(self.labels))

        def snapshot() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
            return (
                net.lora_state(),
                net.classifier.weight.detach().cpu().numpy().copy(),
                net.classifier.bias.detach().cpu().numpy().copy(),
            )

        history: list[dict[str, float]] = []
        best, best_epoch, best_score = snapshot(), 0, None
        if held is not None and len(held):
            found = self.scores(net, held)
            history.append({"epoch": 0, "f1": found["f1"], "loss": found["loss"]})
            best_score = (found["f1"], -found["loss"])
        stopped = "epochs"
        for epoch in range(1, epochs + 1):
            if time.perf_counter() >= self.deadline:
                stopped = "time"
                break
            order = rows[torch.randperm(len(rows), generator=gen).numpy()]
            batches = _buckets(order, self.cache.lengths, cfg.batch_size)
            for i in torch.randperm(len(batches), generator=gen).tolist():
                if self.between_steps is not None:
                    self.between_steps()
                chosen = batches[i]
                logits = net(*self.cache.batch(chosen))
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, n_tags), self._targets(chosen, logits.shape[1]).reshape(-1), ignore_index=IGNORE
                )
                optim.zero_grad()
                loss.backward()
                optim.step()
            self.tick()
            if best_score is None:
                best, best_epoch = snapshot(), epoch
                continue
            assert held is not None
            found = self.scores(net, held)
            history.append({"epoch": epoch, "f1": found["f1"], "loss": found["loss"]})
            score = (found["f1"], -found["loss"])
            if score > best_score:
                best, best_epoch, best_score = snapshot(), epoch, score
            elif epoch - best_epoch >= cfg.patience:
                stopped = "early"
                break
        return _Run(*best, history=history, best_epoch=best_epoch, stopped=stopped)


def _buckets(order: np.ndarray, lengths: np.ndarray, size: int) -> list[list[int]]:
    """Shuffled rows cut into pools of 8 batches, each pool sorted by length and cut into batches."""
    out: list[list[int]] = []
    for p in range(0, len(order), 8 * size):
        chunk = order[p : p + 8 * size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[s : s + size].tolist() for s in range(0, len(chunk), size))
    return out


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) example indices: ``fraction`` of them held out (at least 2), none under 5 examples."""
    order = np.random.default_rng(seed).permutation(n)
    k = 0 if n < 5 else max(2, int(round(fraction * n)))
    return np.sort(order[k:]), np.sort(order[:k])


def finetune_warnings(compared: dict[str, dict[str, Any]], n_held: int, best_epoch: int) -> list[str]:
    """Plain-words warnings when the fine-tune did not beat the frozen tagger or the baseline held out."""
    if not compared:
        return [
            "Too few examples (under 5) to hold any out: fine-tuning ran a fixed 3 epochs and was not compared "
            "with the frozen tagger or the word baseline. Add examples (50 or more is better)."
        ]
    tuned = compared["finetune"]["f1"]
    warnings = []
    frozen = compared.get("tagger", {}).get("f1")
    if frozen is not None and tuned <= frozen:
        served = (
            "No epoch improved on it, so the served model is that frozen tagger run through the task's own "
            "layers (fine-tuning changed nothing)."
            if best_epoch == 0
            else "The fine-tuned tagger is served as pinned."
        )
        warnings.append(
            f"Fine-tuning did not beat the frozen tagger: on the same {n_held} held-out examples it scored "
            f"{tuned:.3f} entity F1, the tagger on the frozen token states {frozen:.3f}. {served} Head 'tagger' "
            "(or 'auto') trains and serves for far less at this quality."
        )
    base = compared.get("word-tagger", {}).get("f1")
    if base is not None and base > tuned:
        warnings.append(
            f"The no-transfer baseline (word-tagger: word shape, affixes and neighbours) scored {base:.3f} entity F1 "
            f"on the same {n_held} held-out examples, better than fine-tuning ({tuned:.3f}): the pretrained "
            "backbone may not suit this task. Head 'auto' compares the tagger and the baseline by cross-validation."
        )
    return warnings


@dataclass
class FinetuneFit:
    head: FinetuneTagger
    metrics: dict[str, Any]
    warnings: list[str]


def fit_finetune_tagger(
    source: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[Span]],
    labels: Sequence[str],
    encoded: Sequence[Encoded] | None = None,
    cfg: FinetuneConfig = TAGGER_RECIPE,
    max_seconds: float | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    between_steps: Callable[[], None] | None = None,
) -> FinetuneFit:
    """Fine-tune the top ``cfg.layers`` layers of ``source`` (its torch ``model``, ``tokenizer`` and
    ``max_length``) as a BIO tagger of ``labels``; the bound head, its metrics and warnings. With ``encoded``
    (the frozen final token states of ``texts``), the frozen ``tagger`` competes on the held-out examples;
    the ``word-tagger`` baseline always does. No epoch starts after ``max_seconds``."""
    started = time.perf_counter()
    deadline = started + (max_seconds if max_seconds is not None else float("inf"))
    n_layers = len(encoder_layers(source.model))
    if not 1 <= cfg.layers <= n_layers:
        raise ValueError(f"layers must be between 1 and {n_layers}")
    if len(texts) < 2:
        raise ValueError("entities need at least 2 examples")
    split = n_layers - cfg.layers
    names = list(labels)
    report = progress or (lambda _: None)
    total = cfg.max_epochs * (2 if cfg.refit else 1)
    done = [0]

    def tick() -> None:
        done[0] += 1
        report(0.2 + 0.8 * min(1.0, done[0] / total))

    trainer = _Trainer(source, texts, spans, names, cfg, split, seed, tick, between_steps, deadline)
    report(0.2)
    train, held = _holdout(len(texts), cfg.holdout, seed)
    with torch.enable_grad():
        if len(held):
            stopped = trainer.run(train, held, cfg.max_epochs)
        else:
            stopped = trainer.run(np.arange(len(texts)), None, 3)
        final, refit = stopped, False
        spent = time.perf_counter() - started
        if cfg.refit and len(held) and stopped.best_epoch > 0 and started + 2 * spent < deadline:
            done[0] = max(done[0], cfg.max_epochs)
            final, refit = trainer.run(np.arange(len(texts)), None, stopped.best_epoch), True

    def bound(run: _Run) -> FinetuneTagger:
        made = FinetuneTagger(names, split, n_layers, cfg.rank, cfg.alpha)
        made.lora, made.weight, made.bias = run.lora, run.weight.astype(np.float32), run.bias.astype(np.float32)
        return made.bind(source)

    head = bound(stopped)
    compared: dict[str, dict[str, Any]] = {}
    served: dict[str, Any] = {}
    if len(held):  # the best epoch's model (before any refit, which sees the held-out examples too)
        served = head_scores(head, texts, spans, held)
        compared["finetune"] = {k: served[k] for k in ("precision", "recall", "f1")}
        held_texts, held_spans = [texts[i] for i in held], [spans[i] for i in held]
        train_texts, train_spans = [texts[i] for i in train], [spans[i] for i in train]
        candidates: dict[str, Any] = {"word-tagger": WordTagger}
        if encoded is not None:
            candidates = {"tagger": TokenTagger, **candidates}
        for kind, cls in candidates.items():
            enc_train = None if encoded is None else [encoded[i] for i in train]
            enc_held = None if encoded is None else [encoded[i] for i in held]
            other = cls(names).fit(train_texts, train_spans, enc_train)
            found = [[s for s, _ in row] for row in other.predict(held_texts, enc_held)]
            scored = entity_scores(held_spans, found)
            compared[kind] = {k: scored[k] for k in ("precision", "recall", "f1")}
    if refit:
        head = bound(final)
    metrics = {
        "evaluation": "holdout" if len(held) else "train",
        "held_out": served,
        "finetune": {
            **asdict(cfg),
            "split": split,
            "best_epoch": stopped.best_epoch,
            "history": stopped.history,
            "held_out": int(len(held)),
            "stopped": stopped.stopped,
            "refitted": refit,
            "max_seconds": max_seconds,
            "seconds": round(time.perf_counter() - started, 3),
        },
        "heads": compared,
    }
    report(1.0)
    return FinetuneFit(head, metrics, finetune_warnings(compared, int(len(held)), stopped.best_epoch))


def head_scores(
    head: FinetuneTagger, texts: Sequence[str], spans: Sequence[Sequence[Span]], rows: np.ndarray
) -> dict[str, Any]:
    found = [[s for s, _ in row] for row in head.predict([texts[i] for i in rows])]
    return entity_scores([spans[i] for i in rows], found)
