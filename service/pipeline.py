"""The training pipeline: a claimed job's examples → embeddings → the task kind's fit → a promotion
decision → the new version, completed in the store in one transaction.

The worker (service/jobs.py: claim, lease, heartbeat, requeue) runs it and hands it a :class:`Progress`
to report to; everything that depends on the task's kind, the kind says (adapters/kinds/).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, cast

import numpy as np

from adapters import heads, kinds, selection
from adapters.generation import LoraTrainConfig, LoraWeights
from adapters.generation.training import permuted_heldout_split
from adapters.heads.finetune import FinetuneConfig, Finetuned, TextSource, fit_finetune, fit_finetune_split
from adapters.kinds.generation import ActiveAdapter
from adapters.ood import CALIBRATION_FOLDS, OodDataError, OodModel, fit_ood
from adapters.spans.finetune import TAGGER_RECIPE
from adapters.training import FitResult, TrainingDataError, refit_predict
from adapters.transfer import capped_sample, logme

from . import audio, faults, images
from .backbones.base import Backbone, ImageBackbone
from .batching import Batcher, MapBatcher, TokenBatcher, TokenInput, text_trunk
from .config import Settings
from .engine.generation import GenerationEngine
from .engine.head_store import VersionFailed, head_of
from .store.models import Job, Task
from .store.repository import NewVersion, NotFound, Store

EMBED_SHARE = 0.7  # progress fraction spent embedding examples; the rest is fitting
EMBED_CHUNK = 64
OOD_SAMPLE = 5000  # most training examples an OOD model is fitted on (a seeded random sample beyond)


def backbone_inputs(backbone: Backbone, stored: list[str]) -> list:
    """Stored examples as a backbone takes them: texts as they are; images (stored as normalised
    PNG) decoded and cropped by the backbone's preprocessing; audio (stored as 16 kHz WAV) decoded at the
    backbone's sample rate."""
    if backbone.modality == "image":
        return images.from_stored(stored, cast(ImageBackbone, backbone).preprocessing)
    if backbone.modality == "audio":
        return audio.from_stored(stored, int(getattr(backbone, "sample_rate", audio.STORED_RATE)))
    return stored


def finetunes_text(task_kind: kinds.TaskKind) -> bool:
    """Whether ``task_kind``'s ``finetune`` head is the text classifier of adapters/heads/finetune.py (the
    kinds reading token states or feature maps fine-tune their own heads)."""
    return "finetune" in task_kind.pinnable_heads and not (
        task_kind.reads_token_states or task_kind.reads_feature_maps
    )


def auto_finetune_why_not(task: Task, counts: Mapping[str, int], settings: Settings) -> str | None:
    """Why head ``auto`` does not try fine-tuning on ``task`` with ``counts`` examples per label (None: it does,
    where its backbone has a transformer trunk): only text classification tasks with head ``auto`` do, within
    ``GRAFT_AUTO_FINETUNE_MIN_PER_LABEL`` and ``GRAFT_AUTO_FINETUNE_MAX_EXAMPLES``."""
    if task.head != "auto" or task.modality != "text" or not finetunes_text(kinds.kind_of(task.kind)):
        return "only text classification tasks with head 'auto' may fine-tune"
    return selection.finetune_eligibility(
        counts, settings.auto_finetune_min_per_label, settings.auto_finetune_max_examples
    )


def not_tried(why: str) -> dict[str, Any]:
    """``metrics.auto_finetune`` of a job whose head ``auto`` did not fine-tune, and why not."""
    return {"tried": False, "why": why, "summary": f"Head 'auto' did not try fine-tuning: {why}."}


class JobLost(Exception):
    """The job is no longer ours (its task was deleted, or another worker reclaimed it)."""


class Progress(Protocol):
    """Where a training reports how far it got (the worker's heartbeat)."""

    def update(self, progress: float) -> None:
        """The job is ``progress`` (0..1) done; raises when the job must stop (lost, timed out)."""

    def step(self) -> None:
        """A training step is about to run (fine-tuning); may wait, and raises as :meth:`update` does."""


class TrainingPipeline:
    """Trains claimed jobs of worker ``worker_id`` (the store completes a job only for its owner)."""

    def __init__(
        self,
        store: Store,
        batchers: Callable[[str], Batcher],
        settings: Settings,
        worker_id: str,
        backbones_of: Callable[[str], list[str]] | None = None,
        token_batchers: Callable[[str], TokenBatcher] | None = None,
        generation: GenerationEngine | None = None,
        map_batchers: Callable[[str], MapBatcher] | None = None,
    ) -> None:
        self.store, self.batchers, self.settings, self.worker_id = store, batchers, settings, worker_id
        self.generation = generation  # the causal LM generation tasks adapt (a fresh copy per job)
        self.backbones_of = backbones_of  # modality -> configured backbone names
        self.token_batchers = token_batchers  # text backbone -> its token lane (kinds that read token states)
        self.map_batchers = map_batchers  # image backbone -> its map lane (detection)

    def _fit_maps(
        self, backbone: str, task_kind: kinds.Detection, task: Task, texts: list[str], labels: list[str],
        progress: Progress,
    ) -> tuple[FitResult, np.ndarray | None, list[kinds.Placed]]:
        """Detection: the stored images letterboxed, their feature maps through the backbone's map lane (at
        training priority; none when the pinned head is the scratch baseline), the kind's CV fit; with the maps
        and the canvases (the OOD model and the promotion comparison read them)."""
        batcher = self.batchers(backbone)
        preprocessing = cast(ImageBackbone, batcher.backbone).preprocessing
        placed = images.placed_stored(texts, preprocessing, kinds.DETECTION_SIZE)
        maps: np.ndarray | None = None
        lower: np.ndarray | None = None
        tuning: kinds.DetectionTuning | None = None
        if task.head != "scratch-detector":
            try:
                lane = self.map_batchers(backbone) if self.map_batchers else None
            except KeyError:
                lane = None
            if lane is None:
                raise TrainingDataError(f"backbone {backbone!r} has no feature maps for detection (not a CNN)")
            k = kinds.DETECTION_TUNED_BLOCKS
            parts = []
            for start in range(0, len(placed), EMBED_CHUNK):
                chunk = placed[start : start + EMBED_CHUNK]
                if task.head == "finetune":  # the frozen part once per image: the epochs run only the top blocks
                    parts.append(lane.states_sync(chunk, k, background=True))
                else:
                    parts.append(lane.maps_sync(chunk, background=True))
                progress.update(0.3 * min(1.0, (start + EMBED_CHUNK) / max(1, len(placed))))
            if task.head == "finetune":
                lower = np.concatenate(parts)
                source = lane.source
                tuning = kinds.DetectionTuning(
                    blocks=source.top_blocks(k), fine_channels=int(source.fine_channels), k=k,
                    max_epochs=self.settings.finetune_max_epochs, max_seconds=self.settings.finetune_max_seconds,
                )
            else:
                maps = np.concatenate(parts)
        result = task_kind.fit_maps(
            maps, placed, labels, head=task.head, folds=self.settings.cv_folds, seed=self.settings.seed,
            steps=self.settings.detection_steps, lower=lower, tuning=tuning,
        )
        return result, maps, placed

    def _decide_maps(
        self, task: Task, result: FitResult, maps: np.ndarray | None, placed: list[kinds.Placed], backbone: str,
        labels: list[str],
    ) -> tuple[selection.Decision, int | None]:
        """Detection's promotion: the active version's head on the images it never saw (their maps on its own
        backbone) against the new version's out-of-fold detections, image by image (adapters/kinds/detection.py
        ``compare_maps``)."""
        if task.active_version is None:
            return selection.first_version(), None
        active = self.store.version(task.id, task.active_version, with_weights=True)
        task_kind = cast(kinds.Detection, kinds.kind_of(task.kind))
        if not task_kind.comparable(result):
            return selection.unconditional("promoted without comparison: no out-of-fold detections"), active.number
        try:
            head = head_of(self.store, active)
        except VersionFailed:  # a corrupt active version must not block the retrain that replaces it
            return selection.unconditional(
                f"promoted without comparison: version {active.number} failed to load (corrupt weights)"
            ), active.number
        unseen = np.arange(active.n_examples, len(placed))
        where = [placed[i] for i in unseen]
        active_maps: np.ndarray | None = None
        tuned = task_kind.tuned_blocks(head)  # an active fine-tuned head reads the frozen states below its blocks
        if task_kind.reads_maps(head) and len(unseen):
            if maps is not None and active.backbone == backbone and tuned is None:
                active_maps = maps[unseen]
            else:
                try:
                    lane = self.map_batchers(active.backbone) if self.map_batchers else None
                except KeyError:
                    lane = None
                if lane is None:
                    return selection.unconditional(
                        f"promoted without comparison: version {active.number}'s backbone {active.backbone!r} "
                        "has no feature maps here"
                    ), active.number
                active_maps = (
                    lane.maps_sync(where, background=True) if tuned is None
                    else lane.states_sync(where, tuned, background=True)
                )
        decision = task_kind.compare_maps(
            head, active_maps, where, [labels[i] for i in unseen], result, unseen, active.number
        )
        return decision, active.number

    def _token_states(
        self, backbone: str, task_kind: kinds.TokenKind, inputs: list[Any], progress: Progress, share: float
    ) -> list[Any]:
        """Per-token states of decoded ``inputs`` at training priority, through the backbone's token lane."""
        if self.token_batchers is None:
            raise TrainingDataError(f"a {task_kind.name} task needs per-token states; no token lane is configured")
        try:
            lane = self.token_batchers(backbone)
        except KeyError:
            raise TrainingDataError(
                f"backbone {backbone!r} has no per-token states for a {task_kind.name} task"
            ) from None
        texts, questions = task_kind.token_inputs(inputs)
        items = [TokenInput(t, None if questions is None else questions[i]) for i, t in enumerate(texts)]
        encoded: list[Any] = []
        for start in range(0, len(items), EMBED_CHUNK):
            encoded += lane.states_sync(items[start : start + EMBED_CHUNK], background=True)
            progress.update(share * min(1.0, (start + EMBED_CHUNK) / max(1, len(items))))
        return encoded

    def _embed(self, backbone: str, texts: list[str], progress: Progress, done: float, share: float) -> np.ndarray:
        """Embed ``texts`` at training priority; progress moves from ``done`` to ``done + share``."""
        batcher = self.batchers(backbone)
        vectors = [np.zeros((0, batcher.backbone.dim), dtype=np.float32)]
        for start in range(0, len(texts), EMBED_CHUNK):
            chunk = backbone_inputs(batcher.backbone, texts[start : start + EMBED_CHUNK])
            vectors.append(batcher.embed_sync(chunk, background=True))
            progress.update(done + share * min(1.0, (start + EMBED_CHUNK) / max(1, len(texts))))
        return np.concatenate(vectors)

    def _embed_and_score(
        self, task: Task, texts: list[str], labels: list[Any], progress: Progress
    ) -> tuple[str, np.ndarray, dict]:
        """Embed the examples with the task's backbone — for ``auto``, the backbone of the modality with
        the highest LogME on a capped, stratified sample — and score every backbone of the modality."""
        names = self.backbones_of(task.modality) if self.backbones_of else []
        if task.backbone != "auto" and task.backbone not in names:
            names = [task.backbone, *names]
        if not names:
            raise TrainingDataError(f"no {task.modality} backbone is configured")
        y = kinds.kind_of(task.kind).transfer_targets(labels)
        assert y is not None  # called for kinds that choose their backbone by LogME on these targets
        sample = capped_sample(y, self.settings.transfer_sample, self.settings.seed)
        sample_texts = [texts[i] for i in sample]
        others = [n for n in names if n != task.backbone]
        scores: dict[str, float] = {}
        embedded: dict[str, np.ndarray] = {}
        work = len(others) * len(sample) + len(texts)  # inputs to embed, for progress
        done = 0

        def share(count: int) -> tuple[float, float]:
            return EMBED_SHARE * done / work, EMBED_SHARE * count / work

        for name in others:  # the sample only
            embedded[name] = self._embed(name, sample_texts, progress, *share(len(sample)))
            if len(sample) >= 2:
                scores[name] = logme(embedded[name], y[sample])
            done += len(sample)
        chosen = task.backbone if task.backbone != "auto" else max(others, key=lambda n: scores.get(n, 0.0))
        if chosen in embedded:  # auto: embed the rest with the winner
            x = np.empty((len(texts), embedded[chosen].shape[1]), dtype=np.float32)
            x[sample] = embedded[chosen]
            rest = np.setdiff1d(np.arange(len(texts)), sample)
            x[rest] = self._embed(chosen, [texts[i] for i in rest], progress, *share(len(rest)))
        else:
            x = self._embed(chosen, texts, progress, *share(len(texts)))
            if len(sample) >= 2:
                scores[chosen] = logme(x[sample], y[sample])
        transferability = {
            "method": "LogME",
            "examples": int(len(sample)),
            "selection": "auto" if task.backbone == "auto" else "pinned",
            "chosen": chosen,
            "scores": dict(sorted(scores.items(), key=lambda kv: -kv[1])),
        }
        return chosen, x, transferability

    def _unseen_states(
        self, task_kind: kinds.TaskKind, x: Any, unseen: np.ndarray, active_backbone: str, backbone: str,
        texts: list[str],
    ) -> list[Any] | None:
        """Token states of the examples at ``unseen`` on the active version's backbone (None: not here)."""
        if active_backbone == backbone:
            return [x[i] for i in unseen]
        token_kind = cast(kinds.TokenKind, task_kind)
        try:
            lane = self.token_batchers(active_backbone) if self.token_batchers else None
        except KeyError:
            lane = None
        if lane is None:
            return None
        found, questions = token_kind.token_inputs(token_kind.decode_inputs([texts[i] for i in unseen]))
        items = [TokenInput(t, None if questions is None else questions[i]) for i, t in enumerate(found)]
        return lane.states_sync(items, background=True)

    def _decide(
        self, task: Task, result: FitResult, x: Any, backbone: str, texts: list[str], labels: list[str]
    ) -> tuple[selection.Decision, int | None]:
        """Compare with the active version on the examples it never saw (see adapters/selection.py)."""
        if task.active_version is None:
            return selection.first_version(), None
        active = self.store.version(task.id, task.active_version, with_weights=True)
        task_kind = kinds.kind_of(task.kind)
        if not task_kind.comparable(result):
            why = (
                "promoted without comparison: a fine-tuned head is compared on its held-out part only"
                if result.metrics.get("head") == "finetune"
                else "promoted without comparison: too few examples to cross-validate"
            )
            return selection.unconditional(why), active.number
        unseen = np.arange(active.n_examples, len(texts))
        try:
            head = head_of(self.store, active)
        except VersionFailed:  # a corrupt active version must not block the retrain that replaces it
            return selection.unconditional(
                f"promoted without comparison: version {active.number} failed to load (corrupt weights)"
            ), active.number
        vectors: Any = None
        if heads.TRUNK in getattr(head, "consumes", ()):  # a fine-tuned head (e.g. auto's) runs its own layers
            try:
                source = text_trunk(self.batchers(active.backbone).backbone)
            except KeyError:
                source = None
            if source is None:
                return selection.unconditional(
                    f"promoted without comparison: version {active.number}'s backbone {active.backbone!r} "
                    "has no transformer trunk here"
                ), active.number
            head.bind(source)  # type: ignore[attr-defined]
        if task_kind.reads_token_states:  # the active head's token states of the unseen examples
            vectors = self._unseen_states(task_kind, x, unseen, active.backbone, backbone, texts)
            if vectors is None:
                return selection.unconditional(
                    f"promoted without comparison: version {active.number}'s backbone {active.backbone!r} "
                    "has no token lane here"
                ), active.number
        elif heads.EMBEDDING in head.consumes:
            if active.backbone == backbone:
                vectors = x[unseen]
            else:
                try:
                    batcher = self.batchers(active.backbone)
                    unseen_inputs = backbone_inputs(batcher.backbone, [texts[i] for i in unseen])
                    vectors = batcher.embed_sync(unseen_inputs, background=True)
                except KeyError:
                    return selection.unconditional(
                        f"promoted without comparison: version {active.number}'s backbone {active.backbone!r} "
                        "is no longer configured"
                    ), active.number
        truth = [labels[i] for i in unseen]
        decision = task_kind.compare(head, vectors, [texts[i] for i in unseen], truth, result, unseen, active.number)
        return decision, active.number

    def _pinned_backbone(self, task: Task) -> str:
        """The backbone of a kind that does not choose one by transferability (``auto`` is refused at the
        API for those; a hand-edited row falls back to the modality's first backbone)."""
        if task.backbone != "auto":
            return task.backbone
        names = self.backbones_of(task.modality) if self.backbones_of else []
        if not names:
            raise TrainingDataError(f"no {task.modality} backbone is configured")
        return names[0]

    def _finetune_config(self, recipe: FinetuneConfig = FinetuneConfig()) -> FinetuneConfig:
        """The kind's recipe (classification: FinetuneConfig's defaults; entities: ``TAGGER_RECIPE``) with the
        settings' rank and epochs, and their layers where set (``GRAFT_FINETUNE_LAYERS`` 0: the recipe's)."""
        return replace(
            recipe,
            layers=self.settings.finetune_layers or recipe.layers,
            rank=self.settings.finetune_rank,
            max_epochs=self.settings.finetune_max_epochs,
        )

    def _finetune(self, job: Job, task: Task, texts: list[str], labels: list[str], progress: Progress) -> int | None:
        """LoRA on the top layers of the task's text backbone (``auto``: the first one configured)."""
        if task.modality != "text":
            raise TrainingDataError("head 'finetune' is available for text tasks only")
        names = [task.backbone] if task.backbone != "auto" else (self.backbones_of("text") if self.backbones_of else [])
        sources = [(n, text_trunk(self.batchers(n).backbone)) for n in names]
        name, source = next(((n, s) for n, s in sources if s is not None), (None, None))
        if source is None or name is None:
            raise TrainingDataError("no text backbone with a transformer trunk is configured for head 'finetune'")
        if len(set(labels)) < 2:
            raise TrainingDataError("at least 2 distinct labels are needed to train a classifier")
        head, fit_metrics = fit_finetune(
            cast(TextSource, source),
            texts,
            labels,
            self._finetune_config(),
            seed=self.settings.seed,
            progress=lambda f: progress.update(0.9 * f),
            between_steps=progress.step,
        )
        return self._complete_finetune(job, task, name, head, fit_metrics, texts, labels, progress)

    def _complete_finetune(
        self, job: Job, task: Task, name: str, head: heads.Head, fit_metrics: dict[str, Any], texts: list[str],
        labels: list[str], progress: Progress,
    ) -> int | None:
        """Store a fine-tuned head as the job's new version — pinned, or chosen by ``auto`` (the same version
        either way: torch runtime, no OOD model, promoted without comparison)."""
        backbone = self.batchers(name).backbone
        decision = (
            selection.first_version()
            if task.active_version is None
            else selection.unconditional(
                "promoted without comparison: a fine-tuned head is compared on its held-out fold only"
            )
        )
        metrics = {
            **fit_metrics,
            "warnings": list(fit_metrics.get("warnings", [])),
            "examples_per_label": dict(sorted(Counter(labels).items())),
        }
        provenance: dict[str, Any] = {
            "backbone": name,
            "backbone_revision": backbone.revision,
            "runtime": "torch",
            "dim": backbone.dim,
        }
        blob = heads.to_bytes(head, metrics=metrics, **provenance)
        progress.update(0.95)
        return self.store.complete_job(
            job.id,
            self.worker_id,
            NewVersion(
                head="finetune",
                backbone=name,
                backbone_revision=backbone.revision,
                runtime="torch",
                labels=head.labels,
                metrics={**metrics, "promotion": decision.as_dict()},
                n_examples=len(texts),
                weights=blob,
            ),
            promote=decision.promote,
            compared_with=task.active_version,
        )

    def _auto_finetune(
        self, task: Task, backbone: str, x: np.ndarray, texts: list[str], labels: list[str], result: FitResult,
        progress: Progress,
    ) -> tuple[dict[str, Any], Finetuned | None]:
        """Head ``auto`` on a text classification task: where the task is eligible
        (:func:`auto_finetune_why_not`) and ``backbone`` has a transformer trunk, fine-tune it too, refit the
        frozen heads' choice (``result``) on the fine-tune's training part, and compare both on its held-out
        part (adapters/selection.py ``finetune_against_frozen``). Returns the comparison's record for the
        version's metrics, and the fine-tuned head when it won (else None: the frozen choice is served)."""
        why = auto_finetune_why_not(task, Counter(labels), self.settings)
        source = text_trunk(self.batchers(backbone).backbone)
        if why is None and source is None:
            why = f"backbone {backbone!r} has no transformer trunk to fine-tune"
        if why is None and result.metrics.get("evaluation") != "cv":
            why = "the frozen heads were not cross-validated"
        if why is not None:
            return not_tried(why), None
        tuned = fit_finetune_split(
            cast(TextSource, source),
            texts,
            labels,
            self._finetune_config(),
            seed=self.settings.seed,
            progress=lambda f: progress.update(EMBED_SHARE + (0.9 - EMBED_SHARE) * f),
            between_steps=progress.step,
            pinned=False,
            max_seconds=self.settings.finetune_max_seconds,
        )
        if tuned.held_pred is None or not len(tuned.held):
            return not_tried("too few examples per label to hold any out"), None
        frozen_head = str(result.metrics["head"])
        frozen = refit_predict(
            frozen_head, result.metrics["selected"], x, labels, texts, tuned.train, tuned.held, task.modality
        )
        choice = selection.finetune_against_frozen(
            [labels[i] for i in tuned.held],
            [tuned.classes[i] for i in tuned.held_pred],
            frozen,
            frozen_head,
            tuned.best_epoch,
        )
        record = {**choice.as_dict(), "seconds": tuned.metrics["finetune"]["seconds"]}  # the fine-tune's own time
        return record, tuned if choice.chosen == "finetune" else None

    def _token_finetuning(self, backbone: str, progress: Progress) -> kinds.Finetuning:
        """What an entities ``finetune`` head trains with: the backbone's torch model, the recipe from the
        settings, its seconds bound, and the job's progress (0.2..0.9) and step hooks."""
        source = text_trunk(self.batchers(backbone).backbone)
        if source is None or not hasattr(source, "tokenizer"):
            raise TrainingDataError(f"backbone {backbone!r} has no transformer trunk for head 'finetune'")
        return kinds.Finetuning(
            source,
            self._finetune_config(TAGGER_RECIPE),
            max_seconds=self.settings.finetune_max_seconds,
            progress=lambda f: progress.update(0.2 + 0.7 * f),
            between_steps=progress.step,
        )

    def _fit_ood(
        self, task_kind: kinds.TaskKind, head: heads.Head, x: np.ndarray | None, targets: list[Any]
    ) -> OodModel | None:
        """The version's OOD model on its training embeddings (docs/monitoring.md): for kinds that score it and
        heads that read the embedding (the predict path computes no embedding for the others; detection: the
        pooled feature maps, ``x``, for heads that read the maps); None with too few examples to calibrate a
        threshold."""
        if not task_kind.scores_ood or x is None:
            return None
        if not (task_kind.reads_feature_maps or heads.EMBEDDING in head.consumes):
            return None
        if len(x) > OOD_SAMPLE:  # the geometry of a large set is as well estimated from a sample of it
            keep = np.sort(np.random.default_rng(self.settings.seed).choice(len(x), OOD_SAMPLE, replace=False))
            x, targets = x[keep], [targets[i] for i in keep]
        try:
            return fit_ood(
                x,
                task_kind.ood_groups(targets),
                fpr=self.settings.ood_fpr,
                folds=CALIBRATION_FOLDS,
                seed=self.settings.seed,
            )
        except OodDataError:
            return None

    def _fit_adapter(
        self, job: Job, task: Task, task_kind: Any, prompts: list[str], labels: list[str], progress: Progress
    ) -> int | None:
        """A generation task: a LoRA adapter on a fresh copy of the causal LM, scored against the base model
        on held-out examples; an adapter not better than the base is stored as a candidate, not promoted."""
        if self.generation is None:
            raise TrainingDataError("generation is not configured in this process")
        s = self.settings
        config = LoraTrainConfig(max_steps=s.generation_max_steps, eval_every=s.generation_eval_every, seed=s.seed)
        progress.update(0.01)
        model, tokenizer = self.generation.training_model()
        progress.update(0.05)

        def on_step(step: int, total: int) -> None:
            progress.step()  # yields to serving, renews the heartbeat, raises when the job must stop
            progress.update(0.05 + 0.85 * step / max(total, 1))

        completions = task_kind.decode_all(labels)
        fit = task_kind.fit_adapter(model, tokenizer, prompts, completions, config, on_step)
        warnings = list(fit.metrics.get("warnings", []))
        metrics = {
            "kind": task_kind.name,
            "head": "lora",
            "model": self.generation.name,
            **fit.metrics,
            "warnings": warnings,
            "examples_per_label": task_kind.per_label({"": len(prompts)}),
        }
        active = self._active_adapter(task, config)
        decision = task_kind.promotion(model, tokenizer, prompts, completions, fit, config, active)
        if decision.promote and active is None and task.active_version is not None:
            decision = selection.unconditional(
                f"promoted: better than the base model; version {task.active_version}'s adapter failed to load, "
                "so the two were not compared"
            )
        if not decision.promote and decision.reason not in warnings:
            warnings.append(decision.reason)  # why it lost (to the base model, or to the active adapter)
        del model
        faults.point("training")
        progress.update(0.95)
        return self.store.complete_job(
            job.id,
            self.worker_id,
            NewVersion(
                head="lora",
                backbone=self.generation.name,
                backbone_revision=self.generation.name,
                runtime="torch",
                labels=[],
                metrics={**metrics, "promotion": decision.as_dict()},
                n_examples=len(prompts),
                weights=fit.weights.to_bytes(),
            ),
            promote=decision.promote,
            compared_with=task.active_version,
        )

    def _active_adapter(self, task: Task, config: LoraTrainConfig) -> ActiveAdapter | None:
        """The active version of a generation task (number, examples it saw, adapter, the examples it held out);
        None when there is none, or its adapter does not load (a corrupt active version must not block the
        retrain replacing it). Its held-out examples are in its metrics (``heldout_indices``); a version trained
        before they were recorded used the permuted split with its recorded seed and share."""
        if task.active_version is None:
            return None
        active = self.store.version(task.id, task.active_version, with_weights=True)
        try:
            weights = LoraWeights.from_bytes(active.weights)
        except (TrainingDataError, KeyError, ValueError):
            return None
        metrics = active.metrics or {}
        held = metrics.get("heldout_indices")
        if not isinstance(held, list):
            recorded = metrics.get("config") or {}
            seed, share = recorded.get("seed", config.seed), recorded.get("holdout", config.holdout)
            held = permuted_heldout_split(active.n_examples, LoraTrainConfig(seed=int(seed), holdout=float(share)))
        return ActiveAdapter(active.number, active.n_examples, weights, frozenset(int(i) for i in held))

    def train(self, job: Job, progress: Progress) -> int | None:
        """Train ``job``'s task and complete the job with the new version: its number, or None when the job
        is no longer this worker's (the store refused the completion)."""
        try:
            task = self.store.get_task_by_id(job.task_id or "")
        except NotFound:
            raise JobLost("the task was deleted") from None
        examples = self.store.examples(task.id)
        texts = [text for text, _ in examples]
        labels = [label for _, label in examples]
        task_kind = kinds.kind_of(task.kind)
        if task.head == "finetune" and finetunes_text(task_kind):
            return self._finetune(job, task, texts, labels, progress)
        if task_kind.generates:
            return self._fit_adapter(job, task, task_kind, texts, labels, progress)
        targets = task_kind.decode_all(labels)
        x: Any
        pooled: np.ndarray | None = None  # detection: the images' pooled feature maps (the OOD model's space)
        if task_kind.reads_feature_maps:  # detection: feature maps of letterboxed images, not pooled embeddings
            backbone_name, transferability = self._pinned_backbone(task), None
            detection = cast(kinds.Detection, task_kind)
            result, x, placed = self._fit_maps(backbone_name, detection, task, texts, labels, progress)
            if x is not None and detection.reads_maps(result.head) and self.map_batchers is not None:
                pooled = detection.pooled(x, placed, self.map_batchers(backbone_name).coarse_channels)
        elif task_kind.reads_token_states:  # entities, answers: per-token states, not pooled embeddings
            token_kind = cast(kinds.TokenKind, task_kind)
            backbone_name, transferability = self._pinned_backbone(task), None
            inputs = token_kind.decode_inputs(texts)
            tuning = task.head == "finetune"
            x = self._token_states(backbone_name, token_kind, inputs, progress, 0.2 if tuning else EMBED_SHARE)
            result = token_kind.fit_tokens(
                x,
                inputs,
                targets,
                head=task.head,
                folds=self.settings.cv_folds,
                seed=self.settings.seed,
                finetuning=self._token_finetuning(backbone_name, progress) if tuning else None,
            )
        elif task_kind.chooses_backbone:  # LogME over the modality's backbones (``auto``: the best is used)
            backbone_name, x, transferability = self._embed_and_score(task, texts, targets, progress)
        else:
            backbone_name = self._pinned_backbone(task)
            x, transferability = self._embed(backbone_name, texts, progress, 0.0, EMBED_SHARE), None
        if not (task_kind.reads_token_states or task_kind.reads_feature_maps):
            result = task_kind.fit_with(
                x,
                targets,
                options={"speaker_far": self.settings.speaker_far},
                head=task.head,
                raw=texts,
                modality=task.modality,
                folds=self.settings.cv_folds,
                seed=self.settings.seed,
            )
            if task.head == "auto" and task.modality == "text" and finetunes_text(task_kind):
                record, tuned = self._auto_finetune(task, backbone_name, x, texts, targets, result, progress)
                if tuned is not None:  # served exactly as a pinned fine-tuned head is
                    chosen = {**tuned.metrics, "selection": "auto", "auto_finetune": record}
                    if transferability is not None:
                        chosen["transferability"] = transferability
                    return self._complete_finetune(
                        job, task, backbone_name, tuned.head, chosen, texts, labels, progress
                    )
                result.metrics["auto_finetune"] = record
        progress.update(0.9)
        metrics = result.metrics if transferability is None else {**result.metrics, "transferability": transferability}
        if task_kind.reads_feature_maps:
            decision, compared_with = self._decide_maps(task, result, x, placed, backbone_name, labels)
        else:
            decision, compared_with = self._decide(task, result, x, backbone_name, texts, labels)
        backbone = self.batchers(backbone_name).backbone
        faults.point("training")
        progress.update(0.95)
        provenance = {
            "backbone": backbone.name,
            "backbone_revision": backbone.revision,
            "runtime": backbone.runtime,
            "dim": backbone.dim,
        }
        ood = self._fit_ood(task_kind, result.head, pooled if task_kind.reads_feature_maps else x, targets)
        if ood is not None:
            metrics = {**metrics, "ood": {"fpr": ood.fpr, "threshold": ood.threshold, "groups": len(ood.means)}}
        stored_ood = {} if ood is None else {"ood": ood}  # a version with an OOD model keeps it in its blob
        blob = task_kind.to_bytes(result.head, metrics=metrics, **stored_ood, **provenance)
        return self.store.complete_job(
            job.id,
            self.worker_id,
            NewVersion(
                head=result.metrics["head"],
                backbone=backbone.name,
                backbone_revision=backbone.revision,
                runtime=backbone.runtime,
                labels=result.head.labels,
                metrics={**metrics, "promotion": decision.as_dict()},
                n_examples=len(examples),
                weights=blob,
            ),
            promote=decision.promote,
            compared_with=compared_with,
        )
