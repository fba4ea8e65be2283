"""A generation retrain replaces the active adapter only when it is not worse on the held-out examples added
since it (which the active adapter never saw), after beating the base model (adapters/kinds/generation.py
``Generation.promotion``), on the real packaged SmolLM2. The adapters compared are an all-zero one (exactly the
base model) and a strong random one (far worse than the base on these completions)."""

from __future__ import annotations

import pytest

from adapters.generation import LoraFit, LoraTrainConfig, LoraWeights, load_causal_lm
from adapters.generation.training import heldout_split
from adapters.kinds import kind_of
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


def test_the_held_out_split_is_the_one_fit_lora_uses() -> None:
    held = heldout_split(20, CONFIG)
    assert len(held) == 4 and len(set(held)) == 4 and all(0 <= i < 20 for i in held)
    assert heldout_split(20, CONFIG) == held and heldout_split(20, LoraTrainConfig(seed=1)) != held


def test_a_retrain_is_compared_with_the_active_adapter_on_examples_it_never_saw(lm) -> None:
    model, tokenizer = lm
    kind = kind_of("generation")
    good, bad = zero_adapter(model), random_adapter(model, seed=2)
    seen = min(heldout_split(20, CONFIG))  # the active version saw the examples before the first held-out one
    better = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(good), CONFIG, (3, seen, bad))
    assert better.promote and better.compared_on == 4 and "since version 3" in better.reason, better
    worse = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(bad), CONFIG, (3, seen, good))
    assert not worse.promote and worse.reason.startswith("kept as a candidate"), worse
    # no held-out example is new: promoted on the base comparison alone, and the reason says so
    alone = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(bad), CONFIG, (3, 20, good))
    assert alone.promote and "not compared" in alone.reason
    # the negative-transfer guard comes first
    guarded = kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(good, False), CONFIG, None)
    assert not guarded.promote and "not promoted" in guarded.reason
    assert kind.promotion(model, tokenizer, PROMPTS, COMPLETIONS, fit(good), CONFIG, None).promote
    assert not any("lora" in name for name, _ in model.named_modules()), "the comparison left LoRA layers behind"
