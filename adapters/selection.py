"""Whether a newly trained version may replace the active one: a paired comparison on examples
that *neither* model was trained on.

Fairness: the active version was fitted on the first ``n_examples`` examples of the task (examples
are append-only), so scoring it on those would be scoring training data. The examples added since
are unseen by it; the new version's out-of-fold (cross-validation) predictions on them are unseen
by the new version's fold models too. Both models are scored on exactly those examples.

Noise: on each example either both are right, both wrong, or one is right (a multilabel prediction is
right when it is exactly the example's label set; for regression, where nothing is exactly right, the
model whose prediction is strictly closer to the target counts as the one right — a sign test; for detection,
the model with the strictly higher per-image score, AP@0.5 of the image's boxes; for generation, the adapter
whose held-out loss on the example is strictly lower). With ``b`` = only the
active right and ``c`` = only the new right, the new version is *worse beyond noise* when
``b - c > Z * sqrt(b + c)`` (McNemar's test, normal approximation, Z = 1.96): then it stays a
candidate. Otherwise (better, equal, or a difference within noise) it is promoted.

The same test, the other way round, decides whether head ``auto`` serves a fine-tuned head instead of the
frozen heads' choice (:func:`finetune_against_frozen`): there fine-tuning must be *better* beyond noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

Z = 1.96


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    compared_on: int = 0  # examples both models were scored on
    new_correct: int = 0
    active_correct: int = 0
    only_active_right: int = 0
    only_new_right: int = 0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["promoted"] = out.pop("promote")
        return out


def first_version() -> Decision:
    return Decision(True, "first version of the task")


def unconditional(reason: str) -> Decision:
    return Decision(True, reason)


def compare_on_unseen(truth: Sequence[str], new: Sequence[str], active: Sequence[str], active_number: int) -> Decision:
    """Decide from predicted labels of the new and the active version on examples neither saw."""
    n = len(truth)
    if n == 0:
        return Decision(True, f"no example unseen by version {active_number} to compare on; promoted")
    new_right = [a == b for a, b in zip(new, truth, strict=True)]
    active_right = [a == b for a, b in zip(active, truth, strict=True)]
    b = sum(a and not c for a, c in zip(active_right, new_right, strict=True))
    c = sum(cn and not a for a, cn in zip(active_right, new_right, strict=True))
    counts = {
        "compared_on": n,
        "new_correct": sum(new_right),
        "active_correct": sum(active_right),
        "only_active_right": b,
        "only_new_right": c,
    }
    summary = (
        f"on the {n} examples added since version {active_number} (unseen by both), the new version got "
        f"{sum(new_right)} right (cross-validated), version {active_number} {sum(active_right)}"
    )
    return _paired_decision(b, c, summary, counts)


def compare_errors_on_unseen(
    truth: Sequence[float], new: Sequence[float], active: Sequence[float], active_number: int
) -> Decision:
    """Regression: the same decision, where on each example the strictly closer prediction counts as right."""
    n = len(truth)
    if n == 0:
        return Decision(True, f"no example unseen by version {active_number} to compare on; promoted")
    new_err = [abs(p - t) for p, t in zip(new, truth, strict=True)]
    active_err = [abs(p - t) for p, t in zip(active, truth, strict=True)]
    b = sum(a < e for a, e in zip(active_err, new_err, strict=True))
    c = sum(e < a for a, e in zip(active_err, new_err, strict=True))
    counts = {"compared_on": n, "new_correct": c, "active_correct": b, "only_active_right": b, "only_new_right": c}
    summary = (
        f"on the {n} examples added since version {active_number} (unseen by both), the new version was closer on {c} "
        f"(cross-validated, MAE {sum(new_err) / n:.4g}), version {active_number} on {b} (MAE {sum(active_err) / n:.4g})"
    )
    return _paired_decision(b, c, summary, counts)


def compare_scores_on_unseen(
    new: Sequence[float], active: Sequence[float], active_number: int, what: str = "score"
) -> Decision:
    """Per-example scores where higher is better (detection: each image's AP@0.5): the same decision, where on
    each example the strictly higher score counts as right and ties count for neither (a sign test)."""
    n = len(new)
    if n == 0:
        return Decision(True, f"no example unseen by version {active_number} to compare on; promoted")
    b = sum(a > e for a, e in zip(active, new, strict=True))
    c = sum(e > a for a, e in zip(active, new, strict=True))
    counts = {"compared_on": n, "new_correct": c, "active_correct": b, "only_active_right": b, "only_new_right": c}
    summary = (
        f"on the {n} examples added since version {active_number} (unseen by both), the new version scored higher "
        f"on {c} (cross-validated, mean {what} {sum(new) / n:.3f}), version {active_number} on {b} "
        f"(mean {sum(active) / n:.3f}); {n - b - c} ties"
    )
    return _paired_decision(b, c, summary, counts)


def compare_losses_on_heldout(
    new: Sequence[float], active: Sequence[float], active_number: int, about: str
) -> Decision:
    """Generation: the same decision, from each example's held-out loss (lower is better; a tie, equal within
    1e-6 relative, counts for neither) — a sign test on examples neither adapter was trained on (``about``
    says which)."""
    n = len(new)
    if n == 0:
        return Decision(True, f"no held-out example unseen by version {active_number} to compare on; promoted")

    def lower(x: float, y: float) -> bool:
        return x < y and not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)

    b = sum(lower(a, e) for a, e in zip(active, new, strict=True))
    c = sum(lower(e, a) for a, e in zip(active, new, strict=True))
    counts = {"compared_on": n, "new_correct": c, "active_correct": b, "only_active_right": b, "only_new_right": c}
    summary = (
        f"{about}, the new adapter's loss was lower on {c} (mean {sum(new) / n:.4f}), version {active_number}'s "
        f"on {b} (mean {sum(active) / n:.4f})"
    )
    return _paired_decision(b, c, summary, counts)


def _paired_decision(b: int, c: int, summary: str, counts: dict[str, int]) -> Decision:
    """Keep the new version as a candidate only when the active one wins beyond noise: ``b`` examples
    only the active version got right, ``c`` only the new one (a one-sided McNemar-style test)."""
    if b - c > Z * math.sqrt(b + c):
        return Decision(False, f"kept as a candidate: worse than the active version beyond noise — {summary}", **counts)
    return Decision(True, f"promoted: not worse than the active version beyond noise — {summary}", **counts)


# -- head "auto" and fine-tuning ----------------------------------------------------------------


def finetune_eligibility(counts: Mapping[str, int], min_per_label: int, max_examples: int) -> str | None:
    """Why head ``auto`` does not try fine-tuning on a task with ``counts`` examples per label (None: it
    does): ``min_per_label`` 0 turns it off; fewer examples than that in some label hold out too few to
    tell the two apart, and more than ``max_examples`` in all would train too long."""
    if min_per_label <= 0:
        return "fine-tuning is off for head 'auto' (GRAFT_AUTO_FINETUNE_MIN_PER_LABEL is 0)"
    if len(counts) < 2:
        return "fewer than 2 labels"
    label, fewest = min(sorted(counts.items()), key=lambda kv: kv[1])
    if fewest < min_per_label:
        return (
            f"label {label!r} has {fewest} examples; head 'auto' tries fine-tuning from "
            f"{min_per_label} examples per label (GRAFT_AUTO_FINETUNE_MIN_PER_LABEL)"
        )
    total = sum(counts.values())
    if max_examples > 0 and total > max_examples:
        return (
            f"{total} examples; head 'auto' tries fine-tuning on at most {max_examples} "
            "(GRAFT_AUTO_FINETUNE_MAX_EXAMPLES), to bound training time"
        )
    return None


@dataclass(frozen=True)
class FinetuneChoice:
    """Head ``auto``'s comparison of the fine-tuned head with the frozen heads' choice on the same held-out
    examples (neither was fitted on them): ``wins`` examples only the fine-tuned head got right, ``losses``
    only the frozen choice. Fine-tuning is chosen when it is strictly more accurate *and* ``wins - losses >
    Z * sqrt(wins + losses)`` (McNemar's test, normal approximation) *and* some epoch of it improved on the
    logistic regression it starts from (``best_epoch`` > 0; else it is that regression at a higher cost)."""

    chosen: str  # "finetune" or the frozen head kind
    frozen_head: str
    held_out: int
    finetune: float  # held-out accuracy (its best epoch, chosen on these examples: optimistic)
    frozen: float
    wins: int
    losses: int
    best_epoch: int
    summary: str

    def as_dict(self) -> dict:
        return {"tried": True, **asdict(self)}


def finetune_against_frozen(
    truth: Sequence[str], tuned: Sequence[str], frozen: Sequence[str], frozen_head: str, best_epoch: int
) -> FinetuneChoice:
    """Decide between the fine-tuned head (predictions ``tuned``) and the frozen heads' choice ``frozen_head``
    (predictions ``frozen``) from their predicted labels on the same held-out examples (``truth``)."""
    n = len(truth)
    tuned_right = [a == t for a, t in zip(tuned, truth, strict=True)]
    frozen_right = [a == t for a, t in zip(frozen, truth, strict=True)]
    wins = sum(t and not f for t, f in zip(tuned_right, frozen_right, strict=True))
    losses = sum(f and not t for t, f in zip(tuned_right, frozen_right, strict=True))
    acc_tuned = sum(tuned_right) / n if n else 0.0
    acc_frozen = sum(frozen_right) / n if n else 0.0
    beyond_noise = wins - losses > Z * math.sqrt(wins + losses)
    chosen = "finetune" if n and best_epoch > 0 and wins > losses and beyond_noise else frozen_head
    scores = (
        f"on the same {n} held-out examples fine-tuning scored {100 * acc_tuned:.1f}% accuracy and '{frozen_head}' "
        f"(the frozen heads' cross-validated choice, refitted without them) {100 * acc_frozen:.1f}%; only "
        f"fine-tuning was right on {wins}, only '{frozen_head}' on {losses}"
    )
    if chosen == "finetune":
        summary = f"Head 'auto' serves fine-tuning: {scores}, a difference beyond noise."
    elif n and best_epoch == 0:
        summary = (
            f"Head 'auto' tried fine-tuning and serves '{frozen_head}': no epoch of fine-tuning improved on the "
            f"logistic regression it starts from ({scores})."
        )
    else:
        verdict = "within noise" if wins > losses else "no better"
        summary = (
            f"Head 'auto' tried fine-tuning and serves '{frozen_head}': {scores} — {verdict}; fine-tuning costs more "
            "to train and serve, so it is served only when it wins beyond noise."
        )
    return FinetuneChoice(
        chosen=chosen, frozen_head=frozen_head, held_out=n, finetune=round(acc_tuned, 6), frozen=round(acc_frozen, 6),
        wins=wins, losses=losses, best_epoch=best_epoch, summary=summary,
    )
