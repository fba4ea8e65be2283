"""Decoding many sequences together, each with its own adapter (or none), one token per row per step.

:class:`BatchDecoder` is a step function, so a scheduler can add sequences between steps (continuous
batching): :meth:`BatchDecoder.submit` queues a sequence; each :meth:`BatchDecoder.step`

1. decodes one token for every running row (one forward pass over the batch, the KV cache of
   ``past_key_values`` extended by one position),
2. admits queued sequences (up to ``max_batch`` rows): their prompts, left-padded to a common length, run
   through one prefill pass whose last position gives their first token, and their KV cache joins the
   running one (both left-padded to a common length along the sequence axis),
3. drops finished rows from the batch and the cache, and the leading cache columns that are padding in
   every remaining row.

Left padding: each row's attention mask marks its real positions and its ``position_ids`` count real tokens
only, so a row's logits do not depend on its neighbours (the parity test checks it against the row decoded
alone with its adapter merged). Per row: the adapter (a slot of :class:`~.multi.MultiLora`), greedy or
temperature / top-p sampling, stop strings, ``max_tokens``; ``finish_reason`` is ``"stop"`` (end-of-turn
token or a stop string, which is cut from the text) or ``"length"``. Text is streamed as deltas that never
split a character and hold back what could still become a stop string.

Only full-attention decoder models (Llama, Mistral without sliding window, Qwen2, SmolLM2…): a model whose
config sets a sliding window is refused, since padded caches would shift its window.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from .multi import MultiLora
from .prompts import GenerationLimitError, prompt_ids, stop_ids

STOP = "stop"
LENGTH = "length"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class DecodeLimits:
    max_batch: int = 32  # rows decoded together; more sequences wait in the queue
    max_prompt_tokens: int = 1024
    max_new_tokens: int = 512
    max_stop: int = 4
    max_stop_chars: int = 64
    max_temperature: float = 2.0


@dataclass
class StepEvent:
    seq: int
    token: int | None  # None: finished without a new token (cancelled)
    delta: str
    finish_reason: str | None = None


@dataclass
class Completion:
    text: str
    tokens: int
    finish_reason: str
    token_ids: list[int] = field(default_factory=list)


@dataclass
class _Row:
    seq: int
    prompt: list[int]
    slot: int
    params: SamplingParams
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish: str | None = None
    logits: list[torch.Tensor] = field(default_factory=list)


def _holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` to hold back: a half-decoded character, or a suffix that is
    the start of a stop string."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    if text.endswith("\ufffd"):
        keep = max(keep, len(text) - len(text.rstrip("\ufffd")))
    return keep


class BatchDecoder:
    """One base model (optionally wrapped by :class:`MultiLora`), many sequences; see the module's docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        lora: MultiLora | None = None,
        *,
        limits: DecodeLimits | None = None,
        mode: str = "auto",
        keep_logits: bool = False,
    ) -> None:
        if getattr(model.config, "sliding_window", None) and getattr(model.config, "use_sliding_window", True):
            raise ValueError("sliding-window attention models are not supported by the batch decoder")
        self.model = model
        self.tokenizer = tokenizer
        self.lora = lora
        self.limits = limits or DecodeLimits()
        self.mode = mode
        self.keep_logits = keep_logits  # tests: each row's logits per generated token
        self.eos = stop_ids(tokenizer, model)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.device = next(model.parameters()).device
        # the KV cache's argument: ``cache`` in transformers 5 (``past_key_values`` is its deprecated alias),
        # ``past_key_values`` before
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._ids = itertools.count()
        self.pending: list[_Row] = []
        self.running: list[_Row] = []
        self.finished: dict[int, _Row] = {}
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (rows, cache length) 1 = real position
        self._last: torch.Tensor | None = None  # (rows,) the token each row feeds next

    # -- requests ---------------------------------------------------------------------------------------

    def check(self, n_prompt: int, params: SamplingParams) -> None:
        lim = self.limits
        if n_prompt < 1:
            raise GenerationLimitError("the prompt is empty")
        if n_prompt > lim.max_prompt_tokens:
            raise GenerationLimitError(f"the prompt is {n_prompt} tokens: at most {lim.max_prompt_tokens}")
        if not 1 <= params.max_tokens <= lim.max_new_tokens:
            raise GenerationLimitError(f"max_tokens must be between 1 and {lim.max_new_tokens}")
        if n_prompt + params.max_tokens > self.max_context:
            raise GenerationLimitError(
                f"prompt ({n_prompt} tokens) + max_tokens ({params.max_tokens}) is over the model's context "
                f"of {self.max_context} tokens"
            )
        if not 0.0 <= params.temperature <= lim.max_temperature:
            raise GenerationLimitError(f"temperature must be between 0 and {lim.max_temperature}")
        if not 0.0 < params.top_p <= 1.0:
            raise GenerationLimitError("top_p must be in (0, 1]")
        if len(params.stop) > lim.max_stop:
            raise GenerationLimitError(f"at most {lim.max_stop} stop strings")
        if any(not s or len(s) > lim.max_stop_chars for s in params.stop):
            raise GenerationLimitError(f"a stop string must be 1 to {lim.max_stop_chars} characters")

    def submit(
        self, prompt: str | Sequence[int], adapter: str | None = None, params: SamplingParams | None = None
    ) -> int:
        """Queue a sequence (a prompt's text, rendered by :func:`~.prompts.prompt_ids`, or its token ids)
        decoded with ``adapter`` (a key loaded in the :class:`MultiLora`; None: the base model); its id."""
        params = params or SamplingParams()
        ids = prompt_ids(self.tokenizer, prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        self.check(len(ids), params)
        slot = -1
        if adapter is not None:
            if self.lora is None or adapter not in self.lora.slots:
                raise KeyError(f"adapter {adapter!r} is not loaded")
            slot = self.lora.slots[adapter]
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        row = _Row(next(self._ids), ids, slot, params, generator)
        self.pending.append(row)
        return row.seq

    def cancel(self, seq: int) -> None:
        """Stop a sequence (the client went away): it leaves the batch at the next step."""
        for row in [*self.pending, *self.running]:
            if row.seq == seq and row.finish is None:
                row.finish = CANCELLED

    @property
    def idle(self) -> bool:
        return not self.pending and not self.running

    # -- the step ---------------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, slots: list[int]):
        rows = self.lora.rows(slots, self.mode) if self.lora is not None else nullcontext()
        with rows:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: cache},
            )
        return out.logits[:, -1].float(), getattr(out, self._cache_arg)

    def _sample(self, rows: Sequence[_Row], logits: torch.Tensor) -> list[int]:
        out = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            p = row.params
            if p.temperature <= 0:
                continue
            probs = torch.softmax(logits[i] / p.temperature, -1)
            if p.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = (sorted_p.cumsum(0) - sorted_p) < p.top_p  # the smallest prefix reaching top_p
                probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
            out[i] = int(torch.multinomial(probs / probs.sum(), 1, generator=row.generator))
        return out

    def _advance(self, rows: Sequence[_Row], logits: torch.Tensor) -> list[StepEvent]:
        events: list[StepEvent] = []
        for row, token in zip(rows, self._sample(rows, logits), strict=True):
            if self.keep_logits:
                row.logits.append(logits[len(events)].cpu())
            if row.finish is not None:  # cancelled meanwhile
                events.append(StepEvent(row.seq, None, "", row.finish))
                continue
            if token in self.eos:
                row.finish = STOP
            else:
                row.generated.append(token)
                row.text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
                cuts = [row.text.find(s, max(0, row.emitted - len(s))) for s in row.params.stop]
                cuts = [c for c in cuts if c >= 0]
                if cuts:
                    row.text, row.finish = row.text[: min(cuts)], STOP
                elif len(row.generated) >= row.params.max_tokens:
                    row.finish = LENGTH
            end = len(row.text) if row.finish else len(row.text) - _holdback(row.text, row.params.stop)
            delta = row.text[row.emitted : max(end, row.emitted)]
            row.emitted = max(end, row.emitted)
            events.append(StepEvent(row.seq, token, delta, row.finish))
        return events

    def _decode_running(self) -> list[StepEvent]:
        assert self._mask is not None and self._last is not None
        mask = torch.cat([self._mask, self._mask.new_ones(len(self.running), 1)], dim=1)
        positions = self._mask.sum(1, keepdim=True)
        logits, self._cache = self._forward(
            self._last[:, None], mask, positions, self._cache, [r.slot for r in self.running]
        )
        self._mask = mask
        events = self._advance(self.running, logits)
        self._last = torch.tensor([e.token if e.token is not None else 0 for e in events], device=self.device)
        return events

    def _prefill(self, rows: list[_Row]) -> tuple[list[StepEvent], Any, torch.Tensor, torch.Tensor]:
        from transformers import DynamicCache

        width = max(len(r.prompt) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[i, width - len(r.prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, DynamicCache(), [r.slot for r in rows])
        events = self._advance(rows, logits)
        last = torch.tensor([e.token if e.token is not None else 0 for e in events], device=self.device)
        return events, cache, mask, last

    @staticmethod
    def _layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _join(self, cache: Any, mask: torch.Tensor, last: torch.Tensor) -> None:
        """Add prefilled rows' cache to the running one, left-padding the shorter along the sequence axis."""
        from transformers import DynamicCache

        if self._cache is None or self._mask is None or self._last is None:
            self._cache, self._mask, self._last = cache, mask, last
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def left(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        layers = [
            (torch.cat([left(k0, 2), left(k1, 2)]), torch.cat([left(v0, 2), left(v1, 2)]))
            for (k0, v0), (k1, v1) in zip(self._layers(self._cache), self._layers(cache), strict=True)
        ]
        self._cache = DynamicCache(ddp_cache_data=layers)
        self._mask = torch.cat([left(self._mask, 1), left(mask, 1)])
        self._last = torch.cat([self._last, last])

    def _drop_finished(self) -> None:
        from transformers import DynamicCache

        keep = [i for i, r in enumerate(self.running) if r.finish is None]
        for r in self.running:
            if r.finish is not None:
                self.finished[r.seq] = r
        if len(keep) == len(self.running):
            return
        self.running = [self.running[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._last = None
            return
        assert self._mask is not None and self._last is not None
        index = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, index)
        start = int((mask.cumsum(1) == 0).sum(1).min())  # leading columns that are padding in every row
        self._mask = mask[:, start:]
        self._last = self._last.index_select(0, index)
        self._cache = DynamicCache(
            ddp_cache_data=[
                (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
                for k, v in self._layers(self._cache)
            ]
        )

    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """One decoding step for the running rows, then the queued sequences that fit join (see above)."""
        events: list[StepEvent] = []
        for row in [r for r in self.pending if r.finish is not None]:  # cancelled before they started
            self.pending.remove(row)
            self.finished[row.seq] = row
            events.append(StepEvent(row.seq, None, "", row.finish))
        if self.running:
            events += self._decode_running()
        room = self.limits.max_batch - sum(1 for r in self.running if r.finish is None)
        admitted, self.pending = self.pending[: max(room, 0)], self.pending[max(room, 0) :]
        if admitted:
            prefill_events, cache, mask, last = self._prefill(admitted)
            events += prefill_events
            self._join(cache, mask, last)
            self.running += admitted
        self._drop_finished()
        return events

    def result(self, seq: int) -> Completion:
        row = self.finished[seq]
        return Completion(row.text, len(row.generated), row.finish or LENGTH, list(row.generated))

    def generate(
        self,
        prompts: Sequence[str | Sequence[int]],
        adapters: Sequence[str | None] | None = None,
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[Completion]:
        """Decode ``prompts`` together (row i with ``adapters[i]``) until every one has finished."""
        adapters = list(adapters) if adapters is not None else [None] * len(prompts)
        each = list(params) if isinstance(params, Sequence) else [params or SamplingParams()] * len(prompts)
        seqs = [self.submit(p, a, s) for p, a, s in zip(prompts, adapters, each, strict=True)]
        while not all(s in self.finished for s in seqs):
            self.step()
        return [self.result(s) for s in seqs]
