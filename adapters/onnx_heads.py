"""ONNX forms of the heads that read raw inputs (baseline, hybrid), built node by node with ``onnx.helper``.

A featurizer becomes a subgraph from the raw-input graph input to its L2-normalised feature rows:

* TF-IDF (text): input ``tokens`` (string, batch × width; the consumer's pre-tokenisation,
  ``adapters/raw_inputs.py``, rows padded with ``""``) → ONNX ``TfIdfVectorizer`` (mode ``TF``: counts of
  the vocabulary's uni- and bigrams, contiguous, per row) → sublinear tf (``1 + log(count)`` where
  count > 0) → × idf → rows divided by their L2 norm (all-zero rows stay zero), as scikit-learn does.
* Pixels (image): input ``pixels`` (float32, batch × size², grayscale in [0, 1]) → minus the training
  mean → rows divided by max(L2 norm, 1e-6).
* MFCC summaries (audio): input ``mfcc`` (float32, batch × 140; the consumer's MFCC summary of the clip,
  ``adapters/audio_decode.py``) → minus the training mean, divided by the training scale → rows divided
  by max(L2 norm, 1e-6).

The head then adds its logistic regression: ``features @ W_featuresᵀ (+ embedding @ W_embeddingᵀ for
hybrid) + bias`` → ``Softmax`` → ``probabilities``, computed in float32 like the numpy head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TOKENS = "tokens"  # string (batch, width): the text featurizer's graph input
PIXELS = "pixels"  # float32 (batch, size²): the image featurizer's graph input
MFCC = "mfcc"  # float32 (batch, 140): the audio featurizer's graph input (adapters/audio_decode.py MFCC)


class _Graph:
    """Nodes and constants under construction, with fresh names under a prefix."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self.count}", **attrs))
        return out

    def l2_rows(self, x: str, width: int, floor: float, prefix: str) -> str:
        """Rows of ``x`` divided by max(their L2 norm, floor) (opset-independent: the sum of squares is a MatMul)."""
        ones = self.const(f"{prefix}ones", np.ones((width, 1), dtype=np.float32))
        norm = self.op("Sqrt", self.op("MatMul", self.op("Mul", x, x), ones))
        return self.op("Div", x, self.op("Max", norm, self.const(f"{prefix}floor", np.array(floor, dtype=np.float32))))


def tfidf_features(g: _Graph, features: Any) -> tuple[onnx.ValueInfoProto, str, int]:
    """The TF-IDF featurizer (``TfidfFeatures``) as nodes: (graph input, feature output, feature width)."""
    terms: list[str] = features.vocabulary()
    idf = np.asarray(features.vectorizer.idf_, dtype=np.float32)
    if features.vectorizer.analyzer == "char":
        grams = [[t] for t in terms]
    else:
        grams = [t.split(" ") for t in terms]
    longest = max(len(gram) for gram in grams)
    if longest > 2:
        raise ValueError("the TF-IDF export covers uni- and bigrams")
    pool: list[str] = []
    indexes: list[int] = []
    counts: list[int] = []
    for n in range(1, longest + 1):  # the pool lists all 1-grams, then all 2-grams; indexes map them to columns
        counts.append(len(indexes))
        for column, gram in enumerate(grams):
            if len(gram) == n:
                pool.extend(gram)
                indexes.append(column)
    tf = g.op(
        "TfIdfVectorizer", TOKENS, mode="TF", min_gram_length=1, max_gram_length=longest, max_skip_count=0,
        ngram_counts=counts, ngram_indexes=indexes, pool_strings=pool,
    )
    zero = g.const("tfidf/zero", np.array(0.0, dtype=np.float32))
    one = g.const("tfidf/one", np.array(1.0, dtype=np.float32))
    sublinear = g.op("Add", g.op("Log", g.op("Max", tf, one)), one)  # 1 + log(count), count ≥ 1
    sublinear = g.op("Where", g.op("Greater", tf, zero), sublinear, zero)
    weighted = g.op("Mul", sublinear, g.const("tfidf/idf", idf))
    source = helper.make_tensor_value_info(TOKENS, TensorProto.STRING, ["batch", "tokens"])
    return source, g.l2_rows(weighted, len(terms), 1e-30, "tfidf/"), len(terms)


def pixel_features(g: _Graph, features: Any) -> tuple[onnx.ValueInfoProto, str, int]:
    """The pixel featurizer (``PixelFeatures``) as nodes: (graph input, feature output, feature width)."""
    width = features.size * features.size
    centred = g.op("Sub", PIXELS, g.const("pixels/mean", np.asarray(features.mean, dtype=np.float32)))
    source = helper.make_tensor_value_info(PIXELS, TensorProto.FLOAT, ["batch", width])
    return source, g.l2_rows(centred, width, 1e-6, "pixels/"), width


def mfcc_features(g: _Graph, features: Any) -> tuple[onnx.ValueInfoProto, str, int]:
    """The MFCC featurizer (``MfccFeatures``) on the consumer's summaries: standardised, L2-normalised."""
    mean = np.asarray(features.mean, dtype=np.float32)
    scaled = g.op("Div", g.op("Sub", MFCC, g.const("mfcc/mean", mean)),
                  g.const("mfcc/scale", np.asarray(features.scale, dtype=np.float32)))
    source = helper.make_tensor_value_info(MFCC, TensorProto.FLOAT, ["batch", len(mean)])
    return source, g.l2_rows(scaled, len(mean), 1e-6, "mfcc/"), len(mean)


FEATURE_GRAPHS = {"tfidf": tfidf_features, "pixels": pixel_features, "mfcc": mfcc_features}


def raw_head_graph(head: Any, embedding: str, dim: int, output: str, opset: int) -> onnx.ModelProto:
    """A baseline or hybrid head as ONNX: its raw input (and ``embedding`` (batch, dim) for hybrid) → ``output``."""
    g = _Graph()
    build = FEATURE_GRAPHS.get(head.features.name)
    if build is None:
        raise ValueError(f"featurizer {head.features.name!r} has no ONNX form")
    source, feats, _ = build(g, head.features)
    inputs = [source]
    w_features = head.weight if head.kind == "baseline" else head.w_features
    logits = g.op("MatMul", feats, g.const("head/w_features", np.asarray(w_features, dtype=np.float32).T))
    if head.kind == "hybrid":
        inputs.insert(0, helper.make_tensor_value_info(embedding, TensorProto.FLOAT, ["batch", dim]))
        w_embedding = g.const("head/w_embedding", np.asarray(head.w_embedding, dtype=np.float32).T)
        logits = g.op("Add", g.op("MatMul", embedding, w_embedding), logits)
    logits = g.op("Add", logits, g.const("head/bias", np.asarray(head.bias, dtype=np.float32)))
    g.nodes.append(helper.make_node("Softmax", [logits], [output], name="Softmax_out", axis=1))
    graph = helper.make_graph(
        g.nodes, f"graft-{head.kind}", inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", len(head.labels)])], g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graft")
    onnx.checker.check_model(model)
    return model


FEATURE_NAMES = "feature_names"  # string (words, width): a word head's per-word feature names (span_decode.py)
FEATURE_VALUES = "feature_values"  # float32 (words, width): their values, 0 where a row is padded


def word_head_graph(head: Any, output: str, opset: int) -> onnx.ModelProto:
    """A word baseline of the span kinds (``word-tagger``, ``word-pointer``: adapters/spans/heads.py) as ONNX.

    Inputs: the per-word feature dicts as two aligned arrays, ``feature_names`` and ``feature_values``
    (what ``span_decode.word_feeds`` builds from ``span_decode.word_rows``: Python string work). The graph
    maps each name to its column of the head's vocabulary (``ai.onnx.ml`` ``LabelEncoder``; a name outside
    it, or the padding ``""``, reads a zero column), gathers the weights and sums them times the values:
    ``logits[w] = Σ_k values[w, k] · coef[:, column(names[w, k])] + bias``, the head's sparse product.

    ``word-tagger`` → ``output`` (words, tags): the BIO logits. ``word-pointer`` → ``output`` (words, 2): the
    log-softmax over the context's words of the start and of the end model's "here" margin."""
    g = _Graph()
    vocabulary: list[str] = list(head.vocab.names)
    if head.kind == "word-tagger":
        coef, bias = head.model.coef, head.model.bias  # (tags, V), (tags,)
    elif head.kind == "word-pointer":
        # each binary model's margin (class 1 minus class 0) is what the head's log-softmax reads
        coef = np.stack([head.start.coef[1] - head.start.coef[0], head.end.coef[1] - head.end.coef[0]])
        bias = np.array([head.start.bias[1] - head.start.bias[0], head.end.bias[1] - head.end.bias[0]])
    else:
        raise ValueError(f"no word-feature graph for heads of kind {head.kind!r}")
    weights = np.vstack([np.asarray(coef, np.float32).T, np.zeros((1, coef.shape[0]), np.float32)])  # (V + 1, C)
    g.nodes.append(
        helper.make_node(
            "LabelEncoder", [FEATURE_NAMES], ["columns"], name="LabelEncoder_vocabulary", domain="ai.onnx.ml",
            keys_strings=vocabulary, values_int64s=list(range(len(vocabulary))), default_int64=len(vocabulary),
        )
    )
    gathered = g.op("Gather", g.const("head/weights", weights), "columns", axis=0)  # (words, width, C)
    logits = g.op("Einsum", gathered, FEATURE_VALUES, equation="wkc,wk->wc")
    logits = g.op("Add", logits, g.const("head/bias", np.asarray(bias, np.float32)))
    if head.kind == "word-pointer":
        g.nodes.append(helper.make_node("LogSoftmax", [logits], [output], name="LogSoftmax_out", axis=0))
    else:
        g.nodes.append(helper.make_node("Identity", [logits], [output], name="Identity_out"))
    inputs = [
        helper.make_tensor_value_info(FEATURE_NAMES, TensorProto.STRING, ["words", "width"]),
        helper.make_tensor_value_info(FEATURE_VALUES, TensorProto.FLOAT, ["words", "width"]),
    ]
    graph = helper.make_graph(
        g.nodes, f"graft-{head.kind}", inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["words", int(coef.shape[0])])], g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 2)],
        producer_name="graft",
    )
    onnx.checker.check_model(model)
    return model
