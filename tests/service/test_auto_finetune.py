"""Head ``auto`` and fine-tuning (issue 22): on a text classification task with enough examples per label,
``auto`` also fine-tunes, compares the fine-tuned head with the frozen heads' choice on the same held-out
examples, and serves fine-tuning only where it wins beyond noise."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pytest

from adapters import heads, selection
from adapters.heads.finetune import FinetuneConfig, fit_finetune_split
from adapters.selection import FinetuneChoice, finetune_against_frozen, finetune_eligibility
from service.batching import Batcher
from service.config import Settings
from service.engine.head_store import head_of, store_head_loader
from service.engine.heads_step import apply_trunk, text_trunk
from service.jobs import JobRunner
from service.pipeline import auto_finetune_why_not
from service.store.models import Task
from service.store.repository import Store
from tests.conftest import per_label

# -- which tasks try it ----------------------------------------------------------------------------


def test_eligibility_needs_enough_examples_in_every_label_and_not_too_many_in_all() -> None:
    assert finetune_eligibility({"a": 64, "b": 70}, 64, 4000) is None
    few = finetune_eligibility({"a": 64, "b": 63, "c": 100}, 64, 4000)
    assert few is not None and "'b' has 63 examples" in few and "GRAFT_AUTO_FINETUNE_MIN_PER_LABEL" in few
    many = finetune_eligibility({"a": 3000, "b": 1001}, 64, 4000)
    assert many is not None and "4001 examples" in many and "GRAFT_AUTO_FINETUNE_MAX_EXAMPLES" in many
    assert finetune_eligibility({"a": 3000, "b": 1001}, 64, 0) is None  # 0: no upper bound
    off = finetune_eligibility({"a": 500, "b": 500}, 0, 4000)
    assert off is not None and "off" in off
    assert finetune_eligibility({"a": 500}, 64, 4000) == "fewer than 2 labels"


def test_only_text_classification_tasks_with_head_auto_try_it() -> None:
    settings = Settings.from_env({})
    assert (settings.auto_finetune_min_per_label, settings.auto_finetune_max_examples) == (64, 4000)
    counts = {"a": 64, "b": 64}

    def task(**kw: str) -> Task:
        return Task(**{"kind": "classification", "modality": "text", "head": "auto", **kw})

    assert auto_finetune_why_not(task(), counts, settings) is None
    for other in (task(head="linear"), task(head="finetune"), task(modality="image"), task(kind="multilabel")):
        assert auto_finetune_why_not(other, counts, settings) is not None
    assert auto_finetune_why_not(task(), counts, Settings.from_env({"GRAFT_AUTO_FINETUNE_MIN_PER_LABEL": "0"}))
    assert auto_finetune_why_not(task(), counts, Settings.from_env({}, auto_finetune_max_examples=100))


def test_a_job_that_may_fine_tune_gets_the_fine_tuning_time_limit(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    try:
        tenant, _ = store.create_tenant("acme")
        rows = [(f"text {i}", "ab"[i % 2]) for i in range(8)]
        for name in ("few", "enough"):
            store.create_task(tenant.id, name, modality="text", backbone="minilm", head="auto", examples=rows)
        settings = Settings.from_env(
            {}, data_dir=str(tmp_path), job_time_limit_s=11.0, job_time_limit_finetune_s=22.0,
            auto_finetune_min_per_label=5,
        )
        runner = JobRunner(store, lambda _: None, settings)  # type: ignore[arg-type,return-value]
        store.add_examples(tenant.id, "enough", [("more", "a"), ("and more", "b")])  # 5 per label
        limits = {}
        for _ in range(2):
            job = store.claim_job("w", lease_s=60, max_attempts=3)
            assert job is not None
            limits[job.task_name] = runner._heartbeat(job).limit_setting
        assert limits == {"few": "GRAFT_JOB_TIME_LIMIT_S", "enough": "GRAFT_JOB_TIME_LIMIT_FINETUNE_S"}
    finally:
        store.close()


# -- the paired decision ---------------------------------------------------------------------------


def _decide(wins: int, losses: int, both: int = 40, best_epoch: int = 2) -> FinetuneChoice:
    """Predicted labels on held-out examples where fine-tuning alone is right on ``wins``, the frozen choice
    alone on ``losses``, both on ``both`` and neither on 5."""
    truth = ["a"] * (wins + losses + both + 5)
    tuned = ["a"] * wins + ["b"] * losses + ["a"] * both + ["b"] * 5
    frozen = ["b"] * wins + ["a"] * losses + ["a"] * both + ["b"] * 5
    return finetune_against_frozen(truth, tuned, frozen, "hybrid", best_epoch)


def test_fine_tuning_is_chosen_only_when_it_wins_beyond_noise() -> None:
    win = _decide(12, 2)  # 10 > 1.96 * sqrt(14) = 7.3
    assert (win.chosen, win.wins, win.losses, win.held_out) == ("finetune", 12, 2, 59)
    assert win.finetune == pytest.approx(52 / 59) and win.frozen == pytest.approx(42 / 59)
    assert win.summary.startswith("Head 'auto' serves fine-tuning") and "beyond noise" in win.summary
    assert win.as_dict()["tried"] is True and win.as_dict()["frozen_head"] == "hybrid"

    noise = _decide(8, 3)  # 5 < 1.96 * sqrt(11) = 6.5: more right, but within noise
    assert noise.chosen == "hybrid" and noise.finetune > noise.frozen
    assert "serves 'hybrid'" in noise.summary and "within noise" in noise.summary

    loss = _decide(2, 12)
    assert loss.chosen == "hybrid" and "no better" in loss.summary
    unchanged = _decide(12, 2, best_epoch=0)  # no epoch improved on the logistic regression it starts from
    assert unchanged.chosen == "hybrid" and "no epoch" in unchanged.summary
    assert finetune_against_frozen([], [], [], "linear", 3).chosen == "linear"


def test_the_fine_tune_stops_at_its_time_limit_and_reports_its_held_out_predictions(minilm, bbc_train) -> None:
    """``max_seconds`` (GRAFT_FINETUNE_MAX_SECONDS for auto's fine-tune): no epoch starts after it, and the
    refit is skipped when it would not fit; the held-out predictions are the ones its accuracy counts."""
    rows = per_label(bbc_train, 4, seed=5)
    texts, labels = [r["input"][:200] for r in rows], [r["label"] for r in rows]
    fitted = fit_finetune_split(
        text_trunk(minilm), texts, labels, FinetuneConfig(max_epochs=3), max_seconds=0.0, pinned=False  # type: ignore[arg-type]
    )
    run = fitted.metrics["finetune"]
    assert (run["stopped"], run["refit"], fitted.best_epoch, len(run["history"])) == ("time", False, 0, 1)
    assert fitted.held_pred is not None and len(fitted.held_pred) == len(fitted.held) == 5
    right = [fitted.classes[p] == labels[i] for p, i in zip(fitted.held_pred, fitted.held, strict=True)]
    assert sum(right) / len(right) == pytest.approx(fitted.metrics["accuracy"])
    assert "changed nothing" in fitted.metrics["warnings"][0]  # epoch 0 is the logistic regression it starts from


# -- through the real pipeline ---------------------------------------------------------------------


def test_auto_fine_tunes_and_serves_the_winner_like_a_pinned_finetune(
    tmp_path, minilm, bbc_train, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 short BBC texts (8 per label), the threshold lowered to 8 per label and 1 epoch so it runs in
    seconds. Version 1: the real comparison decides, and the version records it. Versions 2 and 3 (one more
    example per label each): the decision is forced the other way, then back, so both outcomes go through the
    real storing path — fine-tuning served as a pinned ``finetune`` version is (torch runtime, no OOD model,
    promoted without comparison), the frozen choice as before, each with its comparison in the metrics — and a
    frozen retrain is compared with an active fine-tuned version on the examples that version never saw."""
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_schema()
    batcher = Batcher(minilm)
    settings = Settings.from_env(
        {}, data_dir=str(tmp_path), auto_finetune_min_per_label=8, finetune_max_epochs=1, cv_folds=3
    )
    runner = JobRunner(store, lambda _: batcher, settings, lambda _: ["minilm"])
    try:
        tenant, _ = store.create_tenant("acme")
        rows = per_label(bbc_train, 10, seed=21)  # label by label, 10 each
        batches = [[r for i, r in enumerate(rows) if i % 10 < 8], rows[8::10], rows[9::10]]
        task, _ = store.create_task(
            tenant.id, "t", modality="text", backbone="minilm", head="auto",
            examples=[(r["input"][:200], r["label"]) for r in batches[0]],
        )
        started = time.perf_counter()
        runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
        seconds = time.perf_counter() - started
        v1 = store.version(task.id, 1, with_weights=True)
        record = v1.metrics["auto_finetune"]
        assert record["tried"] is True and record["held_out"] == 10  # 20% of each label's 8
        assert 0 < record["seconds"] < seconds  # the fine-tune's own time, within the job's
        assert record["wins"] + record["losses"] <= record["held_out"]
        assert record["chosen"] == v1.head and record["frozen_head"] in {"linear", "prototype", "baseline", "hybrid"}
        assert v1.metrics["selection"] == "auto"
        assert seconds < 120, f"the auto fine-tuning job took {seconds:.0f} s"

        real = selection.finetune_against_frozen
        outcome = {"chosen": ""}

        def forced(*args: Any) -> FinetuneChoice:
            choice = real(*args)
            return dataclasses.replace(choice, chosen=outcome["chosen"] or choice.frozen_head, summary="forced")

        monkeypatch.setattr(selection, "finetune_against_frozen", forced)
        for number, batch in ((2, batches[1]), (3, batches[2])):
            previous = store.version(task.id, number - 1)
            outcome["chosen"] = "" if previous.head == "finetune" else "finetune"
            store.add_examples(tenant.id, "t", [(r["input"][:200], r["label"]) for r in batch])
            runner.run(store.claim_job(runner.worker_id, lease_s=60, max_attempts=3))
            assert store.version(task.id, number).metrics["auto_finetune"]["summary"] == "forced"
        v2, v3 = (store.version(task.id, n, with_weights=True) for n in (2, 3))
        assert [v.head == "finetune" for v in (v1, v2, v3)] in ([True, False, True], [False, True, False])

        for version in (v1, v2, v3):
            assert version.metrics["auto_finetune"]["chosen"] == version.head
            if version.head != "finetune":
                assert version.runtime == minilm.runtime and "ood" in version.metrics
                continue
            assert version.runtime == "torch" and version.backbone == "minilm"
            assert "ood" not in version.metrics and version.metrics["evaluation"] == "holdout"
            assert set(version.metrics["heads"]) == {"finetune", "linear", "baseline"}  # as a pinned one reports
            # the held-out predictions the comparison used are those the fine-tune's own accuracy counts
            assert version.metrics["accuracy"] == pytest.approx(version.metrics["auto_finetune"]["finetune"])
            assert heads.TRUNK in head_of(store, version).consumes
            # served as the engine serves a pinned one: loaded, bound to the trunk, on the shared-trunk pass
            served = store_head_loader(store, lambda _: text_trunk(minilm))((task.id, version.number))
            assert served.labels == sorted({r["label"] for r in rows})
            texts = [r["input"][:200] for r in rows]
            proba = apply_trunk(minilm, texts, [served] * len(texts))
            assert proba.shape == (50, 5) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
            right = [served.labels[i] == r["label"] for i, r in zip(proba.argmax(axis=1), rows, strict=True)]
            assert sum(right) >= 40, "the served fine-tuned head does not fit its own training texts"
            if version.number > 1:
                assert "compared on its held-out fold only" in version.metrics["promotion"]["reason"]
        after_tuned = v2 if v1.head == "finetune" else v3  # a frozen retrain against an active fine-tuned version
        assert after_tuned.metrics["promotion"]["compared_on"] == 5
        print(f"auto fine-tuning job: {seconds:.1f} s; version 1 serves {v1.head} ({record['summary']})")
    finally:
        batcher.close()
        store.close()
