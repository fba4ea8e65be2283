"""Export an adapted model: one ONNX graph fusing a backbone export and a tenant's head.

The backbone graph maps preprocessed inputs (``input_ids``, ``attention_mask`` for text) to
pooled, L2-normalised embeddings; a head maps embeddings (and, for baseline and hybrid heads, the raw
inputs' from-scratch features) to its output. Heads on embeddings provide their torch form
(``torch_module()``: embeddings → output) and are exported the same way whatever their kind; heads
on raw inputs get their featurizer and logistic regression built with ``onnx.helper``
(``adapters/onnx_heads.py``), their raw input (``tokens`` or ``pixels``) becoming a graph input.
The bundle is a zip with the fused graph, the preprocessing files and a JSON description.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from typing import Any, Protocol, runtime_checkable

import onnx
import onnx.compose
import torch

from .audio_export import FILE as AUDIO_DECODE_FILE  # adapters/audio_decode.py, shipped with audio graphs
from .heads import EMBEDDING as CONSUMES_EMBEDDING
from .heads import RAW, ValueHead
from .onnx_heads import FEATURE_NAMES, FEATURE_VALUES, MFCC, PIXELS, TOKENS, raw_head_graph, word_head_graph
from .onnx_trace import OPSET, trace_onnx
from .span_decode import FILE as SPAN_DECODE_FILE  # adapters/span_decode.py, shipped with token-level graphs

EMBEDDING = "pooled_embedding"  # the head graph's input, wired to the backbone's output
PROBABILITIES = "probabilities"
VALUE = "value"  # a regression head's output, (batch,)
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "graft-export.json"
RAW_INPUTS_FILE = "raw_inputs.py"  # adapters/raw_inputs.py, shipped with graphs that read raw inputs
DETECTIONS = "detections"  # a detection graph's output (n, labels + 4, g, g): heatmap peaks, then box terms
PIXEL_VALUES = "pixel_values"
TAG_LOGIT_PARTS = "tag_logit_parts"  # an entities tagger's output (n, seq, 3, tags): see token_graph
SPAN_LOG_PROBS = "span_log_probs"  # an answers pointer's output (context tokens, 2): start, end log-probabilities
TAG_LOGITS = "tag_logits"  # an entities word baseline's output (words, tags): see word_graph
WORD_HEADS = ("word-tagger", "word-pointer")  # the span kinds' no-transfer baselines: word features, no encoder

__all__ = [
    "AUDIO_DECODE_FILE", "DETECTIONS", "EMBEDDING", "FEATURE_NAMES", "FEATURE_VALUES", "MANIFEST_FILE",
    "MODEL_FILE", "PIXELS", "PIXEL_VALUES", "PROBABILITIES", "RAW_INPUTS_FILE", "SPAN_DECODE_FILE", "SPAN_LOG_PROBS",
    "TAG_LOGITS", "TAG_LOGIT_PARTS", "TOKENS", "VALUE", "WORD_HEADS", "ExportError",
    "ExportableHead", "PointerForm", "TaggerForm", "bundle", "detection_graph", "finetune_graph", "fuse",
    "head_graph", "needs_backbone", "output_of", "audio_decode_source",
    "raw_inputs", "raw_inputs_source", "span_decode_source", "token_graph", "token_head_problem", "word_graph",
]


class ExportError(ValueError):
    """This model cannot be exported (the message says why)."""


@runtime_checkable
class ExportableHead(Protocol):
    kind: str
    labels: list[str]

    def torch_module(self) -> torch.nn.Module:
        """The head as a torch module: float32 embeddings (n, dim) → its output (n, len(labels)) or (n,)."""


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def output_of(head: Any) -> str:
    """The graph output's name: ``value`` for a regression head, else ``probabilities``."""
    return VALUE if isinstance(head, ValueHead) else PROBABILITIES


def needs_backbone(head: Any) -> bool:
    """Whether the head reads backbone embeddings (a baseline head's graph is its featurizer alone)."""
    return CONSUMES_EMBEDDING in getattr(head, "consumes", frozenset({CONSUMES_EMBEDDING}))


def raw_inputs(head: Any) -> dict[str, Any] | None:
    """How the consumer prepares the graph's raw input (None when it has none): the function of
    ``raw_inputs.py`` to call and its keyword arguments, for the manifest."""
    if RAW not in getattr(head, "consumes", frozenset()):
        return None
    features = head.features
    if features.name == "mfcc":  # the clip's MFCC summary, from the shipped audio decoder
        return {"input": MFCC, "file": AUDIO_DECODE_FILE, "function": "inputs", "kwargs": {}, "dtype": "float32"}
    if features.name == "tfidf":
        return {"input": TOKENS, "file": RAW_INPUTS_FILE, "function": "tokens",
                "kwargs": {"analyzer": features.vectorizer.analyzer}, "dtype": "str", "pad": ""}
    return {"input": PIXELS, "file": RAW_INPUTS_FILE, "function": "pixels", "kwargs": {"size": features.size},
            "dtype": "float32"}


def raw_inputs_source() -> bytes:
    """The consumer's preprocessing code for raw inputs (this package's own ``raw_inputs.py``)."""
    from pathlib import Path

    from . import raw_inputs as module

    return Path(module.__file__ or "").read_bytes()


def audio_decode_source() -> bytes:
    """The consumer's WAV decoding, resampling and MFCC summary for audio graphs (``audio_decode.py``)."""
    from pathlib import Path

    from . import audio_decode as module

    return Path(module.__file__ or "").read_bytes()


def span_decode_source() -> bytes:
    """The consumer's windowing and span decoding for token-level graphs (this package's ``span_decode.py``)."""
    from pathlib import Path

    from . import span_decode as module

    return Path(module.__file__ or "").read_bytes()


def head_graph(head: Any, dim: int, opset: int) -> onnx.ModelProto:
    """The head alone as ONNX: ``pooled_embedding`` (batch, dim) and/or its raw input → its output."""
    kind = getattr(head, "kind", type(head).__name__)
    if kind == "finetune":
        raise ExportError(
            "a 'finetune' head changes the backbone's top layers: export its whole model with finetune_graph"
        )
    output = output_of(head)
    if RAW in getattr(head, "consumes", frozenset()):
        try:
            return raw_head_graph(head, EMBEDDING, dim, output, opset)
        except ValueError as exc:
            raise ExportError(f"heads of kind {kind!r}: {exc}") from None
    if not isinstance(head, ExportableHead):
        raise ExportError(f"heads of kind {kind!r} have no ONNX form yet")
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head.torch_module().float().eval(), (torch.zeros(2, dim),), buffer,  # type: ignore[arg-type]  # a file object works
            input_names=[EMBEDDING], output_names=[output],
            dynamic_axes={EMBEDDING: {0: "batch"}, output: {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def _label(model: onnx.ModelProto, head: Any) -> onnx.ModelProto:
    onnx.helper.set_model_props(model, {"labels": json.dumps(head.labels, ensure_ascii=False), "head": head.kind})
    return model


def fuse(backbone: onnx.ModelProto | None, head: Any) -> onnx.ModelProto:
    """One graph: the backbone's inputs → its (single) embedding output → the head → its output
    (``probabilities``, or ``value`` for regression); a head's raw input (``tokens``/``pixels``) is a
    graph input too. A head that reads no embedding (baseline) is exported alone (``backbone`` may be None)."""
    if not needs_backbone(head):
        return _label(head_graph(head, 0, _opset(backbone) if backbone is not None else OPSET), head)
    if backbone is None:
        raise ExportError(f"heads of kind {head.kind!r} read backbone embeddings: the export needs the backbone graph")
    (output,) = backbone.graph.output
    dim = output.type.tensor_type.shape.dim[-1].dim_value
    if not dim:
        raise ExportError("the backbone graph's embedding width is not static")
    part = head_graph(head, dim, _opset(backbone))
    part = onnx.compose.add_prefix(part, "head/", rename_inputs=False, rename_outputs=False)
    part.ir_version = backbone.ir_version
    fused = onnx.compose.merge_models(
        backbone, part, io_map=[(output.name, EMBEDDING)], outputs=[output_of(head)],
        producer_name="graft", producer_version="1",
    )
    return _label(fused, head)


def bundle(fused: onnx.ModelProto, files: dict[str, bytes], manifest: dict[str, Any]) -> bytes:
    """A zip: ``model.onnx`` (stored: weights barely compress), the preprocessing files, the manifest."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(MODEL_FILE, fused.SerializeToString(), compress_type=zipfile.ZIP_STORED)
        for name, data in files.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(
            MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False), compress_type=zipfile.ZIP_DEFLATED
        )
    return out.getvalue()


def finetune_graph(head: Any, spec: Any) -> onnx.ModelProto:
    """A fine-tuned head's whole model as one fp32 graph: the backbone's layers with the head's LoRA
    updates merged into its top layers, pooling and classifier: (input_ids, attention_mask) →
    ``probabilities``. ``spec`` is the backbone's export spec (``module``: its eager-attention copy,
    ``example_inputs``, ``dynamic_axes``), which the service passes in."""
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from .heads.finetune import FinetunedModel, FinetuneHead

    eager = spec.module.model  # the SentenceEmbedder's transformer, eager attention (ORT-friendly)
    bound = FinetuneHead.restore(head.labels, head.params(), head.tensors()).bind(SimpleNamespace(model=eager))
    module = FinetunedModel(eager, bound).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        trace_onnx(module, spec.example_inputs, spec.dynamic_axes, PROBABILITIES, path)
        model = onnx.load(str(path))
    return _label(model, head)


def detection_graph(head: Any, network: torch.nn.Module | None, size: int) -> onnx.ModelProto:
    """A detection head as one fp32 graph: ``pixel_values`` (batch, 3, size, size), the letterboxed canvas
    normalised → ``detections`` (adapters/heads/detection.py ``ExportForm``). ``network``: a copy of the
    backbone's CNN (the service passes it in; None for the scratch baseline, which reads the pixels alone)."""
    import tempfile
    from pathlib import Path

    from .heads.detection import ExportForm

    if network is None and head.reads != "pixels":
        raise ExportError(f"heads of kind {head.kind!r} read the backbone's feature maps: the export needs its CNN")
    module = ExportForm(head, network).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        example = {PIXEL_VALUES: torch.zeros(2, 3, size, size)}
        trace_onnx(module, example, {PIXEL_VALUES: {0: "batch"}}, DETECTIONS, path)
        model = onnx.load(str(path))
    return _label(model, head)


class TaggerForm(torch.nn.Module):
    """An entities ``tagger`` on the encoder, as a graph: token ids → each token's three contributions to
    the BIO logits, ``(batch, seq, 3, tags)``: as the token itself (with the bias), as the left neighbour
    of the next token, as the right neighbour of the previous one. The tagger is linear in the standardised
    ``[state, left state, right state]`` of a token (adapters/spans/heads.py ``TokenTagger``), and a
    missing neighbour (a text's ends) reads zeros, so its logits are exactly the sum of the three parts
    once the windows are merged: ``parts[t, 0] + parts[t - 1, 1] + parts[t + 1, 2]`` (span_decode.py)."""

    def __init__(self, encoder: torch.nn.Module, head: Any, inputs: list[str]) -> None:
        super().__init__()
        model = head.model
        dim = model.coef.shape[1] // 3
        scaled = torch.from_numpy((model.coef / model.scale[None, :]).astype("float32"))  # (tags, 3·dim)
        self.encoder, self.inputs = encoder, inputs
        weight = scaled.reshape(-1, 3, dim).permute(1, 2, 0).contiguous()  # (3, dim, tags)
        self.weight = torch.nn.Parameter(weight, False)
        bias = torch.zeros(3, scaled.shape[0])
        bias[0] = torch.from_numpy((model.bias - (model.mean / model.scale) @ model.coef.T).astype("float32"))
        self.bias = torch.nn.Parameter(bias, False)

    def forward(self, *feeds: torch.Tensor) -> torch.Tensor:
        states = self.encoder(**dict(zip(self.inputs, feeds, strict=True))).last_hidden_state
        parts: torch.Tensor = torch.einsum("bsd,kdt->bskt", states, self.weight)
        return parts + self.bias


def token_graph(head: Any, spec: Any) -> onnx.ModelProto:
    """A token-level head on the text encoder as one fp32 graph: the backbone's inputs (``input_ids``,
    ``attention_mask``, ``token_type_ids`` where it takes them) of one window → per-token outputs
    (:class:`TaggerForm` for an entities ``tagger``). ``spec``: the backbone's export spec (``module.model``:
    its eager-attention transformer, ``example_inputs``, ``dynamic_axes``), which the service passes in."""
    import tempfile
    from pathlib import Path

    problem = token_head_problem(head)
    if problem:
        raise ExportError(problem)
    if head.kind in WORD_HEADS:
        raise ExportError(f"a {head.kind!r} head reads no encoder: export it with word_graph")
    axes = {"input_ids": {0: "batch", 1: "sequence"}} | dict(spec.dynamic_axes)
    names = list(spec.example_inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        if head.kind == "tagger":
            module: torch.nn.Module = TaggerForm(spec.module.model, head, names).eval()
            per_token = {0: "batch", 1: "sequence"}
            trace_onnx(module, spec.example_inputs, axes, TAG_LOGIT_PARTS, path, output_axes=per_token)
        else:
            from .spans.heads import MATCH_RADII

            module = PointerForm(spec.module.model, head, names).eval()
            width = spec.example_inputs["input_ids"].shape[1]
            n = 3 * (width - 2)
            example = dict(spec.example_inputs) | {  # the pointer's own inputs, after the encoder's
                "token_window": torch.arange(n) % 2,
                "token_position": 1 + torch.arange(n) % (width - 2),
                "query_positions": torch.tensor([1, 2]),
                "exact_match": torch.zeros(n, len(MATCH_RADII)),
            }
            pointer_axes = axes | {
                "token_window": {0: "tokens"},
                "token_position": {0: "tokens"},
                "query_positions": {0: "query"},
                "exact_match": {0: "tokens"},
            }
            trace_onnx(module, example, pointer_axes, SPAN_LOG_PROBS, path, output_axes={0: "tokens"})
        model = onnx.load(str(path))
    return _label(model, head)


class PointerForm(torch.nn.Module):
    """An answers ``pointer`` on the encoder, as a graph over the windows of ONE question + context: the
    encoder's inputs (windows, seq) plus where each context token takes its state (``token_window``,
    ``token_position``: its max-context window and its position there), the question's positions in every
    window (``query_positions``) and the word-level exact-match feature (``exact_match``, (tokens, 5):
    Python string work, computed by span_decode.py) → ``span_log_probs`` (tokens, 2): the log-softmax over the
    context's tokens of "starts here" and "ends here" (adapters/spans/heads.py ``SpanPointer``)."""

    def __init__(self, encoder: torch.nn.Module, head: Any, inputs: list[str]) -> None:
        super().__init__()
        from .spans.heads import MATCH_RADII, POOL_RADII

        self.encoder, self.inputs = encoder, inputs
        self.match_radii, self.pool_radii = MATCH_RADII, POOL_RADII
        self.arrays = torch.nn.ParameterDict(
            {name: torch.nn.Parameter(torch.from_numpy(a.astype("float32")), False) for name, a in head.arrays.items()}
        )

    def forward(self, *feeds: torch.Tensor) -> torch.Tensor:
        encoder_feeds = dict(zip(self.inputs, feeds[: len(self.inputs)], strict=True))
        window, position, query_positions, lexical = feeds[len(self.inputs) :]
        hidden = self.encoder(**encoder_feeds).last_hidden_state
        a = self.arrays
        s = hidden[window, position]  # (n, dim)
        q = hidden[:, query_positions].mean(dim=0)  # (query tokens, dim): the same question in every window
        n = s.shape[0]
        p = (s - a["center"]) @ a["basis"].T
        unit = s / (s.norm(dim=1, keepdim=True) + 1e-6)
        q_unit = q / (q.norm(dim=1, keepdim=True) + 1e-6)
        match = (unit @ q_unit.T).max(dim=1).values
        near = []
        for r in self.match_radii:
            padded = torch.nn.functional.pad(match[None, None], (r, r), value=-1.0)
            near.append(torch.nn.functional.max_pool1d(padded, 2 * r + 1, stride=1)[0, 0])
        q_mean = q.mean(dim=0)
        q_mean = q_mean / (q_mean.norm() + 1e-6)
        cumulative = torch.cat([torch.zeros_like(s[:1]), torch.cumsum(s, dim=0)])
        index = torch.arange(n)
        for r in self.pool_radii:
            pooled = cumulative[torch.clamp(index + r + 1, max=n)] - cumulative[torch.clamp(index - r, min=0)]
            near.append(pooled @ q_mean / (pooled.norm(dim=1) + 1e-6))
        pq = (q.mean(dim=0) - a["center"]) @ a["basis"].T
        features = torch.cat([p, p * pq[None, :], torch.stack(near, dim=1), lexical], dim=1)
        logits = ((features - a["mean"]) / a["scale"]) @ a["weight"].T + a["bias"]
        out: torch.Tensor = torch.log_softmax(logits, dim=0)
        return out


def word_graph(head: Any) -> onnx.ModelProto:
    """A span kind's word baseline (``word-tagger``, ``word-pointer``) as one graph, no encoder: the per-word
    feature names and values that the shipped ``span_decode.py`` computes (the functions the head itself
    calls) → ``tag_logits`` (words, tags) or ``span_log_probs`` (words, 2) (adapters/onnx_heads.py)."""
    if getattr(head, "kind", None) not in WORD_HEADS:
        raise ExportError(f"heads of kind {getattr(head, 'kind', type(head).__name__)!r} are not word baselines")
    output = TAG_LOGITS if head.kind == "word-tagger" else SPAN_LOG_PROBS
    return _label(word_head_graph(head, output, OPSET), head)


def token_head_problem(head: Any) -> str | None:
    """Why a token-level head has no ONNX form (None for the entities ``tagger`` and the answers
    ``pointer``, on the encoder, and for their word baselines), checked before the backbone is loaded."""
    kind = getattr(head, "kind", type(head).__name__)
    if kind in ("tagger", "pointer", *WORD_HEADS):
        return None
    return _TOKEN_HEADS_NOT_EXPORTED.get(kind, f"a token head of kind {kind!r} has no ONNX form yet")


_TOKEN_HEADS_NOT_EXPORTED = {
    "finetune-tagger": "a fine-tuned entities head (head 'finetune') changes the encoder's top layers and has no ONNX "
    "export yet; retrain with head 'tagger' to export, or predict through POST /v1/tasks/{name}/predict",
}
