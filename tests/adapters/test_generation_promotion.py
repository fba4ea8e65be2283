"""A generation retrain replaces the active adapter only when it is not worse beyond noise (a sign test on each
example's loss) on every held-out example neither adapter was trained on (added since the active one, or held out
by both), after beating the base model (adapters/kinds/generation.py ``Generation.promotion``), on the real
packaged SmolLM2. The adapters compared are an all-zero one (exactly the
base model) and a strong random one (far worse than the base on these completions)."""

from __future__ import annotations

import pytest

from adapters.generation import Example, LoraFit, LoraTrainConfig, LoraWeights, load_causal_lm
from adapters.generation.training import (
    adapter_example_losses,
    adapter_loss,
    heldout_split,
    permuted_heldout_split,
)
from adapters.kinds import kind_of
from adapters.kinds.generation import ActiveAdapter
from adapters.selection import compare_losses_on_heldout
from tests.adapters.test_generation import CACHE, CAPITALS, question, random_adapter

PROMPTS = [question(c) for c, _ in CAPITALS[:20]]
COMPLETIONS = [k for _, k in CAPITALS[:20]]
CONFIG = LoraTrainConfig(seed=0)


@pytest.fixture(scope="module")
def lm():
    return load_causal_lm(cache_dir=CACHE)


def zero_adapter(model) -> LoraWeights:
    """Rank 4, B = 0: the base model's outputs exactly."""
    weights = random_adapter(model, seed=1)
    weights.b = {k: v * 0 for k, v in weights.b.items()}
    return weights


def fit(weights: LoraWeights, promotable: bool = True) -> LoraFit:
    return LoraFit(weights, promotable, {"warnings": [] if promotable else ["not better than the base: not promoted"]})


def test_the_held_out_split_is_the_one_fit_lora_uses_and_nearly_stays_as_examples_are_added() -> None:
    held = heldout_split(20, CONFIG)
    assert len(held) == 4 and len(set(held)) == 4 and all(0 <= i < 20 for i in held)
    assert heldout_split(20, CONFIG) == held and heldout_split(20, LoraTrainConfig(seed=1)) != held
    # an example's place in or out of the held-out set does not depend on how many examples there are: a
    # retrain's held-out examples among the old ones are (here all) examples the old version held out too, where
    # the permuted split of earlier versions shared few of them
    for old, new in ((20, 40), (40, 50), (100, 120)):
        kept = set(heldout_split(old, CONFIG))
        shared = [i for i in heldout_split(new, CONFIG) if i < old]
        permuted = set(permuted_heldout_split(old, CONFIG))
        assert set(shared) <= kept
        assert len([i for i in permuted_heldout_split(new, CONFIG) if i < old and i in permuted]) < len(shared)


def test_the_sign_test_on_held_out_losses() -> None:
    def decide(new, active):
        return compare_losses_on_heldout(new, active, 3, "on the test's examples")

    within = decide([1.0, 1.0, 1.0, 2.0, 5.0], [2.0, 2.0, 2.0, 1.0, 1.0])  # 3 against 2: noise (and mean worse)
    assert within.promote and within.only_new_right == 3 and within.only_active_right == 2, within
    worse = decide([2.0] * 8, [1.0] * 8)  # 8 against 0: beyond noise (8 > 1.96 * sqrt(8))
    assert not worse.promote and worse.reason.startswith("kept as a candidate: worse than the active version")
    assert "version 3's on 8" in worse.reason and worse.compared_on == 8
    ties = decide([1.0, 1.0 + 1e-9, 2.0], [1.0, 1.0, 2.0])  # equal within 1e-6: counts for neither
    assert ties.promote and ties.only_new_right == ties.only_active_right == 0
    assert decide([], []).promote


def test_a_retrain_is_compared_with_the_active_adapter_on_every_held_out_example_neither_trained_on(lm) -> None:
    model, tokenizer = lm
    kind = kind_of("generation")
    good, bad = zero_adapter(model), random_adapter(model, seed=2)
    seen = 16  # the active version was trained on the first 16 examples, holding out heldout_split(16)
    held = heldout_split(20, CONFIG)
    new = [i for i in held if i >= seen]
    assert 0 < len(new) < len(held), held  # the comparison uses more than the examples added since it

    def active(weights):
        return ActiveAdapter(3, seen, weights, frozenset(heldout_split(seen, CONFIG)))

    better = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(good), CONFIG, active(bad))
    assert better.promote and better.compared_on == len(held) == 4, better
    assert better.only_new_right == 4 and "since version 3" in better.reason, better
    # the refusal: the active adapter's loss is lower on all 4 examples; 4 > 1.96 * sqrt(4): beyond noise
    worse = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(bad), CONFIG, active(good))
    assert not worse.promote and worse.reason.startswith("kept as a candidate: worse than the active version"), worse
    assert worse.only_active_right == 4 and "version 3's on 4" in worse.reason
    # an active version that held out none of the new one's held-out examples, and no example is new: promoted on
    # the base comparison alone, and the reason says so
    alone = kind.promotion(
        model, tokenizer, PROMPTS, COMPLETIONS, fit(bad), CONFIG, ActiveAdapter(3, 20, good, frozenset())
    )
    assert alone.promote and "not compared" in alone.reason
    # the negative-transfer guard comes first
    guarded = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(good, False), CONFIG, None)
    assert not guarded.promote and "not promoted" in guarded.reason
    assert kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(good), CONFIG, None).promote
    assert not any("lora" in name for name, _ in model.named_modules()), "the comparison left LoRA layers behind"


def test_per_example_losses_add_up_to_the_token_weighted_loss(lm) -> None:
    model, tokenizer = lm
    examples = [Example(p, c) for p, c in zip(PROMPTS[:5], COMPLETIONS[:5], strict=True)]
    weights = random_adapter(model, seed=3)
    sums, counts = adapter_example_losses(model, tokenizer, examples, weights, batch_size=2)  # rows padded
    assert len(sums) == len(counts) == 5 and all(n > 0 for n in counts)
    assert sum(sums) / sum(counts) == pytest.approx(adapter_loss(model, tokenizer, examples, weights), rel=1e-5)
    alone = [adapter_example_losses(model, tokenizer, [e], weights)[0][0] for e in examples[:2]]
    assert alone == pytest.approx(sums[:2], rel=1e-4)  # a row's loss does not depend on its batch
