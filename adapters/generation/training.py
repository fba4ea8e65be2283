"""Fitting a per-tenant LoRA adapter on (prompt, completion) examples.

- Examples are tokenised as :mod:`.prompts` says (the chat template's user turn, then the completion and the
  end-of-turn token); the loss is the next-token cross-entropy on the completion's tokens only (the prompt's
  labels are -100).
- A held-out split (``holdout`` of the examples, at least one; picked by a hash of ``seed`` and each example's
  index, so a task's later versions hold out nearly the same examples: :func:`heldout_split`) is scored every
  ``eval_every`` steps; training stops after ``patience`` evaluations without improvement, or at
  ``max_steps`` / ``max_seconds``, and the adapter of the best evaluation is returned.
- Metrics: the held-out token-weighted loss and perplexity of the base model and of the adapter on the same
  examples. ``promotable`` is False unless the adapter's held-out loss is below the base's by more than
  ``min_gain`` (relative): the negative-transfer guard.
- peft's ``LoraConfig`` / ``get_peft_model`` (public API) on a private copy of the model (``copy=True``, the
  default), so the caller's model, serving meanwhile, is never touched. The result is plain tensors
  (:class:`LoraWeights`).
- Bounded: at most ``max_examples`` examples, ``max_tokens`` tokens per example (prompt and completion
  together), ``max_steps`` optimiser steps and ``max_seconds`` of wall time.
"""

from __future__ import annotations

import copy as copying
import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch

from .lora import LoraWeights
from .prompts import GenerationDataError, completion_ids, prompt_ids

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections (Llama naming)


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


@dataclass(frozen=True)
class LoraTrainConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 8
    holdout: float = 0.2
    eval_every: int = 5
    patience: int = 3
    min_gain: float = 0.0  # relative held-out loss gain over the base needed to promote
    max_examples: int = 2000
    max_tokens: int = 512  # per example, prompt and completion together
    max_steps: int = 300
    max_seconds: float = 600.0
    seed: int = 0


@dataclass
class LoraFit:
    weights: LoraWeights
    promotable: bool
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Tokenised:
    ids: list[int]
    labels: list[int]


def tokenise(tokenizer: Any, examples: Sequence[Example], config: LoraTrainConfig) -> list[_Tokenised]:
    if len(examples) > config.max_examples:
        raise GenerationDataError(f"{len(examples)} examples: at most {config.max_examples} train an adapter")
    if len(examples) < 2:
        raise GenerationDataError("an adapter needs at least 2 examples (one is held out)")
    out = []
    for i, ex in enumerate(examples):
        if not ex.prompt or not ex.completion:
            raise GenerationDataError(f"example {i}: the prompt and the completion must not be empty")
        p, c = prompt_ids(tokenizer, ex.prompt), completion_ids(tokenizer, ex.completion)
        if len(p) + len(c) > config.max_tokens:
            raise GenerationDataError(
                f"example {i} is {len(p) + len(c)} tokens long (prompt and completion): at most {config.max_tokens}"
            )
        out.append(_Tokenised(p + c, [-100] * len(p) + c))
    return out


def _collate(rows: Sequence[_Tokenised], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # right padding: positions 0.. are the real tokens
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        labels[i, : len(r.ids)] = torch.tensor(r.labels)
        mask[i, : len(r.ids)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over the labelled tokens, and their count. The output layer (vocabulary-sized)
    runs only at the positions that predict a completion token, not at every prompt position."""
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    target = batch["labels"][:, 1:]
    where = target != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][where])
    loss = torch.nn.functional.cross_entropy(logits.float(), target[where], reduction="sum")
    return loss, int(where.sum())


@torch.no_grad()
def heldout_loss(model: Any, rows: Sequence[_Tokenised], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean NLL of the completions of ``rows``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        loss, n = _nll(model, _collate(rows[start : start + batch_size], pad_id, device))
        total, count = total + float(loss), count + n
    return total / max(count, 1)


@torch.no_grad()
def example_losses(
    model: Any, rows: Sequence[_Tokenised], pad_id: int, batch_size: int
) -> tuple[list[float], list[int]]:
    """Per row: the summed NLL of its completion's tokens, and their number."""
    device = next(model.parameters()).device
    sums: list[float] = []
    counts: list[int] = []
    for start in range(0, len(rows), batch_size):
        batch = _collate(rows[start : start + batch_size], pad_id, device)
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        target = batch["labels"][:, 1:]
        where = target != -100
        logits = model.get_output_embeddings()(hidden[:, :-1][where])
        losses = torch.nn.functional.cross_entropy(logits.float(), target[where], reduction="none")
        per_row = torch.zeros(len(target), dtype=losses.dtype, device=losses.device)
        per_row.index_add_(0, where.nonzero()[:, 0], losses)  # boolean indexing is row-major, as nonzero()
        sums.extend(float(x) for x in per_row.cpu())
        counts.extend(int(x) for x in where.sum(dim=1).cpu())
    return sums, counts


def _shuffled(n: int, config: LoraTrainConfig) -> list[int]:
    order = list(range(n))
    random.Random(config.seed).shuffle(order)
    return order


def _n_held(n: int, config: LoraTrainConfig) -> int:
    return max(1, round(n * config.holdout))


def _heldout_key(i: int, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big")


def heldout_split(n: int, config: LoraTrainConfig) -> list[int]:
    """The indices of the examples :func:`fit_lora` holds out (of ``n``, with ``config``'s seed and share): the
    ``holdout`` share (at least one) whose key, a hash of the seed and the index alone, is smallest. An example's
    key does not depend on ``n``, so as examples are added the held-out set of the first ``n`` examples stays
    (nearly all) held out: two versions of a task share most of their held-out examples, which a paired
    comparison of the two needs (the examples neither was trained on)."""
    return sorted(range(n), key=lambda i: (_heldout_key(i, config.seed), i))[: _n_held(n, config)]


def permuted_heldout_split(n: int, config: LoraTrainConfig) -> list[int]:
    """The split of adapters trained before :func:`heldout_split` (a seeded permutation's first share): to find
    which examples such an adapter held out (its version metrics have no ``heldout_indices``)."""
    return _shuffled(n, config)[: _n_held(n, config)]


def adapter_loss(
    model: Any, tokenizer: Any, examples: Sequence[Example], weights: LoraWeights, batch_size: int = 8
) -> float:
    """Token-weighted held-out NLL of ``examples``' completions with ``weights`` applied to ``model`` (peft, on the
    model in place; its LoRA layers are removed again after): to compare two adapters on the same examples."""
    sums, counts = adapter_example_losses(model, tokenizer, examples, weights, batch_size)
    return sum(sums) / max(sum(counts), 1)


def adapter_example_losses(
    model: Any, tokenizer: Any, examples: Sequence[Example], weights: LoraWeights, batch_size: int = 8
) -> tuple[list[float], list[int]]:
    """Per example: the summed NLL of its completion's tokens with ``weights`` applied to ``model`` (as
    :func:`adapter_loss`), and the number of those tokens. Two adapters scored on the same examples score the
    same tokens, so comparing their sums example by example is a paired comparison."""
    from peft import get_peft_model, set_peft_model_state_dict

    rows = []
    for ex in examples:
        p, c = prompt_ids(tokenizer, ex.prompt), completion_ids(tokenizer, ex.completion)
        rows.append(_Tokenised(p + c, [-100] * len(p) + c))
    targets = tuple(sorted({m.rsplit(".", 1)[-1] for m in weights.a}))
    config = LoraTrainConfig(rank=weights.rank, alpha=weights.alpha, targets=targets)
    peft_model = get_peft_model(model, peft_config(config, init=False))
    try:
        set_peft_model_state_dict(peft_model, weights.peft_state_dict())
        peft_model.eval()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return example_losses(peft_model.get_base_model(), rows, pad_id, batch_size)
    finally:
        peft_model.unload()


def _lora_state(peft_model: Any, config: LoraTrainConfig) -> LoraWeights:
    from peft import get_peft_model_state_dict

    out = LoraWeights(config.rank, config.alpha)
    prefix = "base_model.model."
    for key, tensor in get_peft_model_state_dict(peft_model).items():
        module, _, rest = key.removeprefix(prefix).rpartition(".lora_")
        part = {"A.weight": out.a, "B.weight": out.b}.get(rest)
        if part is not None:
            part[module] = tensor.detach().to("cpu", copy=True).contiguous()
    out.check()
    return out


def peft_config(config: LoraTrainConfig, init: bool = True) -> Any:
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=config.rank,
        lora_alpha=cast(Any, config.alpha),
        lora_dropout=config.dropout,
        target_modules=list(config.targets),
        bias="none",
        init_lora_weights=init,
    )


def fit_lora(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: LoraTrainConfig | None = None,
    *,
    copy: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> LoraFit:
    """Train an adapter on ``examples`` (see the module's docstring); ``model`` is left as it was.
    ``on_step(step, max_steps)`` is called before each optimiser step (a job's progress and heartbeat; it may
    raise to stop the training)."""
    from peft import get_peft_model

    config = config or LoraTrainConfig()
    began = time.monotonic()
    rows = tokenise(tokenizer, examples, config)
    held_indices = heldout_split(len(rows), config)
    held_set = set(held_indices)
    held = [rows[i] for i in held_indices]
    train = [rows[i] for i in _shuffled(len(rows), config) if i not in held_set]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    torch.manual_seed(config.seed)
    work = copying.deepcopy(model) if copy else model
    work.eval()  # no dropout in the base (LoRA dropout is the config's)
    device = next(work.parameters()).device
    base_loss = heldout_loss(work, held, pad_id, config.batch_size)
    peft_model = get_peft_model(work, peft_config(config))
    lm = peft_model.get_base_model()  # the causal LM, its targeted modules now LoRA layers
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = random.Random(config.seed + 1)

    best_loss, best_step, best = math.inf, 0, _lora_state(peft_model, config)
    step, evals_since_best, stopped = 0, 0, "max_steps"
    history: list[tuple[int, float]] = []
    batches: list[list[_Tokenised]] = []
    while step < config.max_steps:
        if not batches:
            shuffled = train[:]
            rng.shuffle(shuffled)
            batches = [shuffled[i : i + config.batch_size] for i in range(0, len(shuffled), config.batch_size)]
        if on_step is not None:
            on_step(step, config.max_steps)
        peft_model.train()
        loss, n = _nll(lm, _collate(batches.pop(0), pad_id, device))
        optimiser.zero_grad()
        (loss / max(n, 1)).backward()
        optimiser.step()
        step += 1
        if step % config.eval_every == 0 or step == config.max_steps:
            peft_model.eval()
            current = heldout_loss(lm, held, pad_id, config.batch_size)
            history.append((step, current))
            if current < best_loss:
                best_loss, best_step, best, evals_since_best = current, step, _lora_state(peft_model, config), 0
            else:
                evals_since_best += 1
                if evals_since_best >= config.patience:
                    stopped = "early_stopping"
                    break
        if time.monotonic() - began > config.max_seconds:
            stopped = "max_seconds"
            break
    if not copy:
        peft_model.unload()  # the caller's model without the LoRA layers again
    if best_step == 0:
        best_loss = base_loss  # never evaluated better than the zero-initialised adapter (= the base)
    promotable = best_step > 0 and best_loss < base_loss * (1.0 - config.min_gain)
    metrics: dict[str, Any] = {
        "base_loss": base_loss,
        "adapter_loss": best_loss,
        "base_perplexity": math.exp(min(base_loss, 50.0)),
        "adapter_perplexity": math.exp(min(best_loss, 50.0)),
        "train_examples": len(train),
        "heldout_examples": len(held),
        "heldout_indices": sorted(held_indices),  # which examples (by position) it never trained on
        "steps": step,
        "best_step": best_step,
        "stopped": stopped,
        "seconds": time.monotonic() - began,
        "history": history,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    if not promotable:
        metrics["warnings"] = ["the adapter is not better than the base model on held-out examples: not promoted"]
    return LoraFit(best, promotable, metrics)
