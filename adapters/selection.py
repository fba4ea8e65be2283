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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
