"""Predict routing: task → active version → head → shared backbone pass → probabilities.

The hot path makes no store round trip while its caches are warm:

- task lookups ``(tenant, name) → (task, active version)`` are cached for ``task_ttl_s``, so a
  version switch made by another process is seen within that bound; changes made by this
  process are applied at once (:meth:`Router.forget`);
- heads are cached by immutable ``(task id, version)`` in a byte-budgeted LRU (:mod:`.caching`).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import anyio.to_thread
import numpy as np

from adapters import heads, kinds
from adapters.kinds import (
    Detection,
    KindPrediction,
    LabelScore,
    MultiLabelPrediction,
    Placed,
    Prediction,
    RegressionPrediction,
    TokenKind,
    top_predictions,
)

from . import logs, metrics
from .batching import Batcher, FromLower, MapBatcher, OodScores, OwnLayers, TokenBatcher, TokenInput
from .caching import HeadCache, TTLCache
from .engine.head_store import VersionFailed, store_head_loader
from .engine.prediction_ids import new_id
from .engine.shadow import ShadowLog
from .metrics import TenantLabels
from .store.models import Task
from .store.repository import NewShadow, NotFound, Store

log = logs.get("router")


class NotTrained(Exception):
    """The task exists but has no active version yet."""


class WrongKind(Exception):
    """The task's kind does not answer this call (predict on a generation task, generate on another kind)."""

    code: ClassVar[str] = "wrong_kind"


# (task, backbone name, whether the head reads raw inputs) → (backbone inputs, raw inputs)
Prepare = Callable[["TaskRef", str, bool], Awaitable[tuple[Sequence[Any], Sequence[Any] | None]]]


@dataclass(frozen=True)
class TaskRef:
    """What predict needs to know about a task (a small immutable copy of its row)."""

    id: str
    tenant_id: str
    name: str
    modality: str
    backbone: str
    head: str
    active_version: int | None
    kind: str = kinds.DEFAULT
    shadow_version: int | None = None  # a candidate answering in shadow on ``shadow_share`` of predict requests
    shadow_share: float = 0.0

    @classmethod
    def of(cls, task: Task) -> TaskRef:
        return cls(
            task.id,
            task.tenant_id,
            task.name,
            task.modality,
            task.backbone,
            task.head,
            task.active_version,
            task.kind,
            task.shadow_version,
            task.shadow_share or 0.0,
        )


AnyPrediction = KindPrediction  # one input's prediction, in its task kind's form (adapters/kinds/)


@dataclass(frozen=True)
class Served:
    """One input's answer as predict returns it: the task kind's prediction plus what every prediction
    carries: an ``id`` (feedback quotes it; service/engine/prediction_ids.py) and, when the version has an
    OOD model, ``ood``/``ood_score`` (docs/monitoring.md)."""

    prediction: KindPrediction
    id: str
    ood_score: float | None = None

    def as_json(self) -> dict[str, Any]:
        out = {"id": self.id, **self.prediction.as_json()}
        if self.ood_score is not None:
            out["ood"] = self.ood_score > 1.0
            out["ood_score"] = self.ood_score
        return out


class Router:
    def __init__(
        self,
        store: Store,
        batchers: Callable[[str], Batcher],
        head_cache: HeadCache,
        task_ttl_s: float = 1.0,
        tenant_labels: TenantLabels | None = None,
        token_batchers: Callable[[str], TokenBatcher] | None = None,
        shadow_log: ShadowLog | None = None,
        rng: random.Random | None = None,
        map_batchers: Callable[[str], MapBatcher] | None = None,
    ) -> None:
        self.store = store
        self.batchers = batchers
        self.token_batchers = token_batchers  # the token lanes of text backbones (entities, answers)
        self.map_batchers = map_batchers  # the map lanes of image backbones (detection)
        self.heads = head_cache
        self.tasks: TTLCache[tuple[str, str], TaskRef] = TTLCache(task_ttl_s)
        self.tenant_labels = tenant_labels or TenantLabels(20)
        self.ood_window = metrics.OodWindow()  # per task: flagged share of recent predictions (monitoring)
        self.shadow_log = shadow_log  # where shadow answers go (None: shadow versions are not run)
        self.rng = rng or random.Random()  # which predict requests a shadow version also answers

    def lookup(self, tenant_id: str, task_name: str) -> TaskRef:
        """The task as the store has it now (one query), remembered for the freshness bound."""
        asked = self.tasks.now()  # the entry's age counts from before the query, so staleness <= ttl
        ref = TaskRef.of(self.store.get_task(tenant_id, task_name))
        self.tasks.put((tenant_id, task_name), ref, at=asked)
        return ref

    def forget(self, tenant_id: str, task_name: str) -> None:
        """This process changed the task (new version, deletion): drop what is cached about it."""
        self.tasks.pop((tenant_id, task_name))

    def resolve(self, tenant_id: str, task_name: str) -> tuple[TaskRef, int]:
        ref = self.tasks.get((tenant_id, task_name)) or self.lookup(tenant_id, task_name)
        return ref, _active(ref)

    async def head(self, tenant_id: str, task_name: str) -> tuple[TaskRef, int, heads.Head]:
        """Resolve: the task, its active version's number and head (from the caches while they are warm)."""
        ref = self.tasks.get((tenant_id, task_name))
        if ref is None:  # store round trip, off the event loop
            ref = await anyio.to_thread.run_sync(self.lookup, tenant_id, task_name)
        if kinds.kind_of(ref.kind).generates:  # no head: an adapter on the language model
            raise WrongKind(
                f"task {task_name!r} is a generation task: send its prompts to POST /v1/tasks/{task_name}/generate"
            )
        number = _active(ref)
        key = (ref.id, number)
        head = self.heads.peek(key)
        if head is None:
            try:
                head = await anyio.to_thread.run_sync(self.heads.get, key)
            except NotFound:  # deleted meanwhile (by another process): the cached task is stale
                self.forget(tenant_id, task_name)
                raise NotFound(f"no task named {task_name!r}") from None
        return ref, number, head

    @staticmethod
    def backbone_of(ref: TaskRef, head: heads.Head) -> str:
        """The backbone a version's head was trained on (the task's may say ``auto``)."""
        return getattr(head, "backbone", None) or ref.backbone

    async def run(
        self,
        ref: TaskRef,
        head: heads.Head,
        model_inputs: Sequence[Any],
        raw: Sequence[Any] | None,
        top_k: int | None = None,
        shadow: tuple[int, heads.Head] | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[Served]:
        """Run: the inputs through the shared backbone pass and the head, answered in the task kind's form
        (:class:`Served`). ``model_inputs`` are what the backbone takes; ``raw`` what heads that read raw
        inputs take. OOD scores come from the embeddings of the same pass (the backbone runs once).
        ``shadow``: a (version, head) that also answers, on the same embeddings; its answers are recorded
        (:class:`ShadowLog`), not returned. ``options``: the kind's request options (detection's)."""
        proba, scores, shadow_proba = await self.outputs(ref, head, model_inputs, raw, shadow, options)
        self.tenant_labels.count(ref.tenant_id, len(model_inputs))
        kind = kinds.kind_of(ref.kind)
        predictions = kind.format(head, proba, top_k)
        version = _active(ref)
        if scores is not None:
            scored = scores[~np.isnan(scores)]
            metrics.OOD_SCORED.labels(ref.kind).inc(len(scored))
            metrics.OOD_FLAGGED.labels(ref.kind).inc(int((scored > 1.0).sum()))
            values = scored.tolist()
            self.ood_window.add(ref.id, version, values)
            histogram = metrics.OOD_SCORE.labels(ref.kind)
            for value in values:
                histogram.observe(value)
        served = []
        for i, p in enumerate(predictions):
            score = None if scores is None or np.isnan(scores[i]) else float(scores[i])
            flagged = None if score is None else score > 1.0
            served.append(Served(p, new_id(ref.id, version, _encoded(kind, kind.answer(p)), flagged), score))
        if shadow is not None and shadow_proba is not None and self.shadow_log is not None:
            self._record_shadow(ref, kind, version, shadow, shadow_proba, predictions, served)
        return served

    def _record_shadow(
        self,
        ref: TaskRef,
        kind: kinds.TaskKind,
        version: int,
        shadow: tuple[int, heads.Head],
        shadow_proba: Any,
        predictions: Sequence[KindPrediction],
        served: Sequence[Served],
    ) -> None:
        number, head = shadow
        answers = [_encoded(kind, kind.answer(p)) for p in kind.format(head, shadow_proba, None)]
        rows = []
        agreed = 0
        for p, out, answer in zip(predictions, served, answers, strict=True):
            active = _encoded(kind, kind.answer(p))
            agreed += answer is not None and answer == active
            rows.append(NewShadow(ref.tenant_id, ref.id, number, version, out.id.partition(".")[0], answer, active))
        metrics.SHADOW_PREDICTIONS.labels(ref.kind).inc(len(rows))
        metrics.SHADOW_AGREEMENTS.labels(ref.kind).inc(agreed)
        assert self.shadow_log is not None
        self.shadow_log.add(rows)

    async def shadow_for(self, ref: TaskRef, head: heads.Head) -> tuple[int, heads.Head] | None:
        """The shadow version's (number, head) when this request is one of the share it also answers, and it
        can answer on the embeddings the active head's pass computes anyway; else None (a shadow that cannot
        load is skipped: predict never fails for it)."""
        number = ref.shadow_version
        if (
            number is None
            or number == ref.active_version
            or self.shadow_log is None
            or self.rng.random() >= ref.shadow_share
            or not shares_embeddings(head)
        ):
            return None
        shadow = self.heads.peek((ref.id, number))
        if shadow is None:
            try:
                shadow = await anyio.to_thread.run_sync(self.heads.get, (ref.id, number))
            except (NotFound, VersionFailed):
                return None
        if not shares_embeddings(shadow) or self.backbone_of(ref, shadow) != self.backbone_of(ref, head):
            return None
        return number, shadow

    async def outputs(
        self,
        ref: TaskRef,
        head: heads.Head,
        model_inputs: Sequence[Any],
        raw: Sequence[Any] | None,
        shadow: tuple[int, heads.Head] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, np.ndarray | None, Any]:
        """The head's output per input (a token kind's: its answers), when its version has an OOD model each
        input's OOD score (NaN where the input had no pooled embedding: fine-tuned heads), and the ``shadow``
        head's output when given (else None), from one shared backbone pass."""
        backbone = self.backbone_of(ref, head)
        task_kind = kinds.kind_of(ref.kind)
        if task_kind.reads_feature_maps:  # detection: feature maps of letterboxed images, the map lane
            detection = cast(Detection, task_kind)
            answers, scores = await self._run_maps(ref, detection, head, backbone, model_inputs, options or {})
            return answers, scores, None
        if task_kind.reads_token_states:  # per-token states (entities, answers): the token lane; no OOD model
            return await self._run_tokens(ref, cast(TokenKind, task_kind), head, backbone, model_inputs), None, None
        ood = heads.ood_of(head)
        scores = None if ood is None else np.full(len(model_inputs), np.nan, dtype=np.float32)
        shadow_proba = None
        if heads.RAW in head.consumes or shadow is not None:
            # the embeddings come back from the pass, and the head steps run here: from-scratch features of the
            # raw inputs (baseline, hybrid), and a shadow head's extra step on the same embeddings
            embeds = heads.EMBEDDING in head.consumes
            vectors = await self.batchers(backbone).embed(model_inputs, ref.tenant_id) if embeds else None

            def steps() -> tuple[Any, Any]:
                out = heads.predict(head, vectors, raw=raw)
                if ood is not None and scores is not None and vectors is not None:
                    scores[:] = ood.score(vectors)
                return out, None if shadow is None else heads.predict(shadow[1], vectors, raw=raw)

            proba, shadow_proba = await anyio.to_thread.run_sync(steps)
        else:
            wanted = None if ood is None or scores is None else OodScores(ood, scores)
            proba = await self.batchers(backbone).predict(model_inputs, head, ref.tenant_id, wanted)
        return proba, scores, shadow_proba

    async def pool(
        self, ref: TaskRef, head: heads.Head, model_inputs: Sequence[Any], raw: Sequence[Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """An unlabelled pool's embeddings (one shared backbone pass, at predict priority) and the head's
        output on them, for active learning. A fine-tuned head's output needs its own trunk pass."""
        batcher = self.batchers(self.backbone_of(ref, head))
        vectors = await batcher.embed(model_inputs, ref.tenant_id)
        if heads.TRUNK in head.consumes:
            output = await batcher.predict(model_inputs, head, ref.tenant_id)
        else:
            output = await anyio.to_thread.run_sync(lambda: heads.predict(head, vectors, raw=raw))
        self.tenant_labels.count(ref.tenant_id, len(model_inputs))
        return vectors, output

    async def _run_tokens(
        self, ref: TaskRef, kind: TokenKind, head: Any, backbone: str, inputs: Sequence[Any]
    ) -> list[Any]:
        """A token kind's answers: heads that read token states through the backbone's token lane (its
        pass shared with other tenants' token-kind requests), fine-tuned heads through the lane too (their
        lower layers shared, their own top layers per task: :class:`OwnLayers`), word-feature heads on the
        raw text alone."""
        own = heads.TRUNK in getattr(head, "consumes", ())
        if not own and not kind.reads_states(head):
            return await anyio.to_thread.run_sync(lambda: kind.predict_tokens(head, inputs, None))
        if self.token_batchers is None:
            raise RuntimeError("this router has no token lanes")
        texts, questions = kind.token_inputs(inputs)
        items = [
            TokenInput(text, None if questions is None else questions[i], value)
            for i, (text, value) in enumerate(zip(texts, inputs, strict=True))
        ]

        def apply(part: Sequence[TokenInput], encoded: list[Any]) -> list[Any]:
            return kind.predict_tokens(head, [item.value for item in part], encoded)

        return await self.token_batchers(backbone).run(items, OwnLayers(head, apply) if own else apply, ref.tenant_id)

    async def _run_maps(
        self, ref: TaskRef, kind: Detection, head: Any, backbone: str, inputs: Sequence[Any], options: dict[str, Any]
    ) -> tuple[list[Any], np.ndarray | None]:
        """Detection answers and, when the version has an OOD model, each image's OOD score (from the pooled maps
        of the same pass): heads that read feature maps through the backbone's map lane (its pass shared with
        other tenants' detection requests), the scratch baseline on the canvases alone (no maps: no score)."""
        placed = cast(Sequence[Placed], inputs)
        if not kind.reads_maps(head):
            return await anyio.to_thread.run_sync(lambda: kind.predict_maps(head, placed, None, options)), None
        if self.map_batchers is None:
            raise RuntimeError("this router has no map lanes")

        def apply(part: Sequence[Placed], maps: np.ndarray) -> list[Any]:
            answers = kind.predict_maps(head, part, maps, options)
            scores = kind.ood_scores(head, part, maps)
            return [(a, None if scores is None else float(scores[i])) for i, a in enumerate(answers)]

        k = kind.tuned_blocks(head)  # a fine-tuned head: the frozen states below its own blocks, same shared pass
        step = apply if k is None else FromLower(apply, k)
        pairs = await self.map_batchers(backbone).run(placed, step, ref.tenant_id)
        scored = [np.nan if score is None else score for _, score in pairs]
        scores = None if np.isnan(scored).all() else np.array(scored, dtype=np.float32)
        return [answer for answer, _ in pairs], scores

    async def pool_maps(self, ref: TaskRef, head: Any, placed: Sequence[Placed]) -> tuple[np.ndarray, np.ndarray]:
        """A detection task's unlabelled pool, for active learning: each image's pooled feature map (the map
        lane, at predict priority; the scratch baseline's pool needs the maps too) and the head's uncertainty."""
        if self.map_batchers is None:
            raise RuntimeError("this router has no map lanes")
        kind = cast(Detection, kinds.kind_of(ref.kind))
        lane = self.map_batchers(self.backbone_of(ref, head))

        def apply(part: Sequence[Placed], maps: np.ndarray) -> list[Any]:
            return kind.suggest_scores(head, part, maps, lane.coarse_channels)

        pairs = await lane.run(placed, apply, ref.tenant_id)
        self.tenant_labels.count(ref.tenant_id, len(placed))
        return np.stack([v for v, _ in pairs]), np.array([u for _, u in pairs], dtype=np.float64)

    async def predict(
        self,
        tenant_id: str,
        task_name: str,
        inputs: Sequence[Any],
        top_k: int | None = None,
        prepare: Prepare | None = None,
    ) -> tuple[TaskRef, int, list[Served]]:
        """Resolve then run. ``prepare(ref, backbone, want_raw)`` turns the request's inputs into what the
        backbone takes and, for heads that read raw inputs (baseline, hybrid), their raw form (the
        application layer's decoding, service/application/inputs.py); without it inputs pass through."""
        ref, number, head = await self.head(tenant_id, task_name)
        backbone = self.backbone_of(ref, head)
        want_raw = heads.RAW in getattr(head, "consumes", ())
        shadow = await self.shadow_for(ref, head)
        if shadow is not None:
            want_raw = want_raw or heads.RAW in shadow[1].consumes
        model_inputs, raw = await prepare(ref, backbone, want_raw) if prepare else (inputs, inputs)
        return ref, number, await self.run(ref, head, model_inputs, raw, top_k, shadow)


def shares_embeddings(head: Any) -> bool:
    """Whether a head reads the backbone's pooled embedding and nothing of the backbone beyond it (a shadow
    version's head step then reuses the active version's pass), raw inputs aside."""
    consumes: frozenset[str] = getattr(head, "consumes", frozenset())
    return heads.EMBEDDING in consumes and heads.TRUNK not in consumes


def _encoded(kind: kinds.TaskKind, answer: Any) -> str | None:
    return None if answer is None else kind.encode(answer)


def _active(ref: TaskRef) -> int:
    if ref.active_version is None:
        raise NotTrained(f"task {ref.name!r} has no trained version yet; poll its job and retry when it succeeds")
    return ref.active_version


__all__ = [
    "AnyPrediction",
    "HeadCache",
    "LabelScore",
    "MultiLabelPrediction",
    "NotFound",
    "NotTrained",
    "Prediction",
    "RegressionPrediction",
    "Router",
    "Served",
    "TaskRef",
    "VersionFailed",
    "WrongKind",
    "store_head_loader",
    "top_predictions",
]
