"""ONNX forms of the heads that read raw inputs (baseline; hybrid is in tests/service/test_onnx_export.py):
the graph plus the shipped pre-tokenisation (adapters/raw_inputs.py) against the numpy head, on bare onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from adapters import heads, raw_inputs
from adapters.export import PROBABILITIES, TOKENS, fuse, raw_inputs_source
from adapters.heads import BaselineHead
from adapters.heads.features import TfidfFeatures
from adapters.training import encode_labels
from tests.conftest import load_jsonl, per_label

# What a consumer may send: empty, blank, punctuation only, accents and compatibility forms (NFKD), other
# scripts, emoji, whitespace runs, one letter, a dotted capital İ (lower-cases to i + a combining dot), ß.
ODD = [
    "",
    "   ",
    "!!! ??? ...",
    "Ünïcödé: le café, résumé naïve 🙂",
    "東京 株式 市場が 上昇",
    "ﬁnance ｆｕｌｌｗｉｄｔｈ ½",
    "tab\tand\nnewline   spaces",
    "x",
    "İstanbul STRASSE Straße",
    "don't stop-words_with_underscores 1990s £5",
]


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def exported(head: BaselineHead) -> BaselineHead:
    """The head as the service stores and exports it (vocabulary and idf through safetensors)."""
    return heads.from_bytes(heads.to_bytes(head))  # type: ignore[return-value]


def assert_parity(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5, np.abs(got - expected).max()
    assert got.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()


@pytest.mark.parametrize("analyzer", ["word", "char"])
def test_shipped_pretokenisation_is_scikit_learns(analyzer, bbc_test) -> None:
    """raw_inputs.tokenize reproduces the featurizer's analyzer (before n-grams) on odd and real texts."""
    if analyzer == "word":
        v = TfidfFeatures().vectorizer
        reference = v.build_tokenizer()
        texts = ODD + [r["input"] for r in bbc_test[:50]]
        for text in texts:
            assert raw_inputs.tokenize(text) == reference(v.build_preprocessor()(text)), text
    else:
        v = TfidfVectorizer(analyzer="char", ngram_range=(1, 1))  # the featurizer's fallback
        for text in ODD:
            assert raw_inputs.tokenize(text, "char") == v.build_analyzer()(text), text
    assert raw_inputs_source().decode().startswith('"""How a consumer')


def test_text_baseline_graph_reproduces_the_head(bbc_train, bbc_test) -> None:
    """≥ 100 texts: min_df=2, uni- and bigrams; odd texts, a very long one, one by one and batched."""
    train = per_label(bbc_train, 25, seed=5)
    classes, y = encode_labels([r["label"] for r in train])
    fitted = BaselineHead(classes).fit(None, y, raw=[r["input"] for r in train])
    assert fitted.features.vectorizer.min_df == 2 and any(" " in t for t in fitted.features.vocabulary())  # type: ignore[union-attr]
    head = exported(fitted)
    model = fuse(None, head)
    s = session(model)
    assert [i.name for i in s.get_inputs()] == [TOKENS] and [o.name for o in s.get_outputs()] == [PROBABILITIES]
    texts = ODD + [r["input"] for r in bbc_test[:8]] + [" ".join(r["input"] for r in bbc_test[:40])]
    expected = head.predict_proba(None, raw=texts)
    batched = s.run(None, {TOKENS: raw_inputs.tokens(texts)})[0]
    assert_parity(batched, expected)
    alone = np.concatenate([s.run(None, {TOKENS: raw_inputs.tokens([t])})[0] for t in texts])
    assert np.abs(alone - batched).max() <= 1e-6  # padding never changes a row


def test_char_fallback_and_bigrams_without_their_unigrams() -> None:
    """Punctuation-only training texts fall back to characters; a restored vocabulary may hold a bigram
    whose words are not terms themselves: both count exactly as scikit-learn counts them."""
    _, y = encode_labels(["a", "a", "b", "b"])
    char = exported(BaselineHead(["a", "b"]).fit(None, y, raw=["!!", "!!!", "??", "???"]))
    assert char.features.vectorizer.analyzer == "char"  # type: ignore[union-attr]
    texts = ["!", "?", "", "!? ?!", "Ünï  !!"]
    got = session(fuse(None, char)).run(None, {TOKENS: raw_inputs.tokens(texts, "char")})[0]
    assert_parity(got, char.predict_proba(None, raw=texts))

    features = TfidfFeatures(["new york", "times", "york times"], np.array([1.5, 2.0, 1.2], dtype=np.float32))
    head = BaselineHead(["a", "b"], features=features)
    head.weight = np.array([[1.0, -2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=np.float32)
    head.bias = np.array([0.1, -0.1], dtype=np.float32)
    texts = ["New York Times", "new new york", "times york", "New-York times times", ""]
    got = session(fuse(None, head)).run(None, {TOKENS: raw_inputs.tokens(texts)})[0]
    assert_parity(got, head.predict_proba(None, raw=texts))


def test_image_baseline_graph_reproduces_the_head() -> None:
    """Raw pixels: the shipped decoding + resize, then the graph's centring and normalisation."""
    train = per_label(load_jsonl("digits.train.jsonl"), 4, seed=1)
    test = [r["input"] for r in load_jsonl("digits.test.jsonl")[:20]]
    classes, y = encode_labels([r["label"] for r in train])
    head = exported(BaselineHead(classes, modality="image").fit(None, y, raw=[r["input"] for r in train]))
    s = session(fuse(None, head))
    assert [i.name for i in s.get_inputs()] == ["pixels"]
    got = s.run(None, {"pixels": raw_inputs.pixels(test, head.features.size)})[0]  # type: ignore[union-attr]
    assert_parity(got, head.predict_proba(None, raw=test))
