from __future__ import annotations

import numpy as np

from service.backbones.registry import BUILTIN


def test_matches_sentence_transformers(minilm, bbc_test) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["short", "Ünïcödé — 日本語のテキスト", bbc_test[0]["input"], "a " * 1000] + [
        r["input"][:200] for r in bbc_test[1:6]
    ]
    reference = SentenceTransformer(BUILTIN["minilm"].source(), device="cpu").encode(texts, normalize_embeddings=True)
    ours = minilm.embed(texts)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5


def test_embeddings_are_normalised_and_order_preserved(minilm) -> None:
    texts = ["a much longer sentence about the weather in Paris today", "hi", "medium length text here"]
    batch = minilm.embed(texts)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):
        assert np.abs(minilm.embed([text])[0] - batch[i]).max() < 1e-5


def test_long_texts_are_truncated_at_the_model_limit(minilm) -> None:
    assert minilm.max_length == 256
    long = "word " * 5000
    assert minilm.token_lengths([long]) == [256]
    assert minilm.embed([long]).shape == (1, 384)


def test_a_100k_character_text_is_cut_before_tokenising_and_embeds_as_its_prefix(minilm, bbc_test, monkeypatch) -> None:
    """A 100,000-character text is cut to ``max_length × 16`` characters before the tokenizer sees it
    (every runtime tokenises through ``_tokenize``: torch, ONNX, the fine-tuned trunk), and its
    embedding is that of its prefix: the characters cut off lay past the model's 256 tokens anyway."""
    long = " ".join(r["input"] for r in bbc_test) * 3
    long = long[:100_000]
    assert len(long) == 100_000
    prefix = long[: minilm.max_chars]
    assert minilm.max_chars == 256 * 16
    seen: list[int] = []
    tokenizer = minilm.tokenizer

    class Spy:  # the real tokenizer, recording the lengths it is given
        def __call__(self, texts, **kwargs):
            seen.extend(len(t) for t in texts)
            return tokenizer(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    monkeypatch.setattr(minilm, "tokenizer", Spy())
    vectors = minilm.embed([long, prefix])
    assert max(seen) <= minilm.max_chars
    assert np.abs(vectors[0] - vectors[1]).max() < 1e-6
    monkeypatch.undo()
    whole = minilm.tokenizer([long], truncation=True, max_length=minilm.max_length)["input_ids"]
    assert minilm._tokenize([long]) == whole  # the same 256 token ids as tokenising all 100,000 characters


def test_revision_is_a_weights_checksum(minilm) -> None:
    assert minilm.revision.startswith("sha256:") and len(minilm.revision) == 23


def test_length_buckets_keep_long_texts_away_from_short_ones() -> None:
    from service.backbones.text import length_buckets

    lengths = [30] * 60 + [256, 250] + [40] * 2
    groups = length_buckets(lengths, max_rows=32, max_ratio=2.0)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= 32 and max(lengths[i] for i in group) <= 2 * min(lengths[i] for i in group)
    assert {60, 61} in [set(g) for g in groups]  # the two long texts share a micro-batch of their own

    def padding_share(groups: list[list[int]]) -> float:
        positions = sum(len(g) * max(lengths[i] for i in g) for g in groups)
        return 1 - sum(lengths) / positions

    fixed = [sorted(range(len(lengths)), key=lengths.__getitem__)[i : i + 32] for i in range(0, len(lengths), 32)]
    assert padding_share(groups) < 0.15 < 0.5 < padding_share(fixed)
