"""ONNX graphs of the audio backbones, from one clip's samples to its pooled embedding (or a speaker head's
answer), as Graft's server computes them (service/backbones/audio.py).

The graph's input is ``samples``: float32 (1, n), one mono clip at 16 kHz in [-1, 1] (the shipped
``audio_decode.py`` decodes and resamples a WAV file into it). One clip per call: the windows (or partials)
and their pooling are over one clip, and the speech embedding's mel graph floors its output relative to the
maximum of its whole input.

* :func:`speech_embedding_graph` (``openwakeword-speech-embedding``): pad a clip shorter than one window
  with silence on both sides → × 32767 → openWakeWord's mel graph (its own nodes) → /10 + 2 → the
  windows of 76 frames every 8 (a ``Gather`` of a (windows, 76) index grid) → Google's ``speech_embedding``
  graph (its own nodes) on all windows at once → mean over windows → L2 → ``pooled_embedding`` (1, 96);
  :func:`adapters.export.fuse` then adds any head, as for text and images.
* :func:`speaker_graph` (``resemblyzer-ge2e``): raise the volume to -30 dBFS (never lower it) → the
  partials' starts (1.6 s every 77 frames, the last dropped when it covers under 75 % of its span, as
  Resemblyzer cuts them) → zero-pad to the last partial's end → centred frames (reflect padding) × periodic
  Hann → power spectrum (a DFT as two ``MatMul``: cos and sin) → Slaney mel filterbank (40) → the partials
  (a ``Gather``) → the GE2E LSTM (``torch.onnx.export`` of the encoder) → mean → L2 → ``pooled_embedding``
  (1, 256).
* :func:`with_speaker_head`: a ``speakers`` task's head after either graph: cosine with each enrolled
  speaker's centroid → ``similarities`` (1, speakers), and ``speaker`` (1,): the best speaker's index when
  its similarity reaches the head's threshold, else -1 ("unknown"). Other heads follow
  :func:`adapters.export.fuse`.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from typing import Any

import numpy as np
import onnx
import onnx.compose
import torch
from onnx import TensorProto, helper, numpy_helper

from .audio_features import mel_filterbank

FILE = "audio_decode.py"  # adapters/audio_decode.py, shipped in every audio export zip
SAMPLES = "samples"  # float32 (1, n): the graph's input
POOLED = "pooled_embedding"  # the speech embedding graph's output, (1, 96)
SIMILARITIES = "similarities"  # a speaker graph's output (1, speakers): cosine similarity to each centroid
SPEAKER = "speaker"  # a speaker graph's output (1,) int64: the speaker named, -1 for unknown
SPEAKER_OPSET = 17


class _Nodes:
    """Nodes and constants under construction, with fresh names."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.count = prefix, 0
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, array: Any, dtype: Any = np.int64) -> str:
        self.count += 1
        name = f"{self.prefix}c{self.count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def f(self, value: float) -> str:
        return self.const(value, np.float32)

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self.count += 1
        name = out or f"{self.prefix}{op_type.lower()}{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=f"{self.prefix}{op_type}{self.count}",
                                           **attrs))
        return name

    def scalar(self, x: str, index: int) -> str:
        """``Shape(x)[index]`` as an int64 scalar."""
        return self.op("Gather", self.op("Shape", x), self.const(index), axis=0)

    def l2(self, x: str, out: str) -> str:
        norm = self.op("Sqrt", self.op("ReduceSum", self.op("Mul", x, x), self.const([1]), keepdims=1))
        return self.op("Div", x, self.op("Max", norm, self.f(1e-12)), out=out)


def _embedded(part: onnx.ModelProto, prefix: str) -> onnx.ModelProto:
    """``part`` with every name under ``prefix`` (its inputs and outputs included)."""
    return onnx.compose.add_prefix(part, prefix)


def _model(g: _Nodes, parts: list[onnx.ModelProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], opset: int, ir_version: int, name: str) -> onnx.ModelProto:
    nodes = list(g.nodes)
    initializers = list(g.initializers)
    for part in parts:
        nodes += list(part.graph.node)
        initializers += list(part.graph.initializer)
    # nodes were appended in order of construction, each part spliced where its input was produced: sort
    nodes = _topological(nodes, {i.name for i in inputs} | {t.name for t in initializers})
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graft")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    ready, out, pending = set(available), [], list(nodes)
    while pending:
        left = []
        for node in pending:
            if all(not i or i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise ValueError(f"the audio graph has unconnected inputs: {[n.name for n in left][:5]}")
        pending = left
    return out


def speech_embedding_graph(mel: onnx.ModelProto, net: onnx.ModelProto, *, min_samples: int, window_frames: int,
                           window_step: int, dim: int) -> onnx.ModelProto:
    """openWakeWord's mel graph and Google's speech embedding with the windowing and pooling around them:
    ``samples`` (1, n) → ``pooled_embedding`` (1, dim), as ``SpeechEmbeddingBackbone.embed`` computes it."""
    opset = next(o.version for o in mel.opset_import if o.domain in ("", "ai.onnx"))
    mel, net = _embedded(mel, "mel/"), _embedded(net, "net/")
    (mel_in,), (mel_out,) = mel.graph.input, mel.graph.output
    (net_in,), (net_out,) = net.graph.input, net.graph.output
    g = _Nodes("speech/")
    n = g.scalar(SAMPLES, 1)
    missing = g.op("Max", g.op("Sub", g.const(min_samples), n), g.const(0))
    left = g.op("Div", missing, g.const(2))
    right = g.op("Sub", missing, left)
    zero = g.const([0])
    pads = g.op("Concat", zero, g.op("Unsqueeze", left, zero), zero, g.op("Unsqueeze", right, zero), axis=0)
    padded = g.op("Pad", SAMPLES, pads)
    g.op("Mul", padded, g.f(32767.0), out=mel_in.name)  # the graph takes 16-bit sample values
    frames = g.op("Add", g.op("Div", g.op("Squeeze", mel_out.name, g.const([0, 1])), g.f(10.0)), g.f(2.0))
    count = g.scalar(frames, 0)
    starts = g.op("Range", g.const(0), g.op("Add", g.op("Sub", count, g.const(window_frames)), g.const(1)),
                  g.const(window_step))
    grid = g.op("Add", g.op("Unsqueeze", starts, g.const([1])), g.const(np.arange(window_frames)[None, :]))
    g.op("Unsqueeze", g.op("Gather", frames, grid, axis=0), g.const([3]), out=net_in.name)  # (windows, 76, 32, 1)
    windows = g.op("Reshape", net_out.name, g.const([-1, dim]))
    g.l2(g.op("ReduceMean", windows, axes=[0], keepdims=1), POOLED)
    return _model(
        g, [mel, net], [helper.make_tensor_value_info(SAMPLES, TensorProto.FLOAT, [1, "samples"])],
        [helper.make_tensor_value_info(POOLED, TensorProto.FLOAT, [1, dim])], opset, mel.ir_version,
        "openwakeword-speech-embedding",
    )


def encoder_graph(encoder: torch.nn.Module, frames: int, n_mels: int, opset: int = SPEAKER_OPSET) -> onnx.ModelProto:
    """The GE2E encoder (mels (partials, frames, n_mels) → L2-normalised embeddings) by ``torch.onnx.export``."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder.float().eval(), (torch.zeros(2, frames, n_mels),), buffer,  # type: ignore[arg-type]
            input_names=["mels"], output_names=["embeddings"],
            dynamic_axes={"mels": {0: "partials"}, "embeddings": {0: "partials"}},
            opset_version=opset, dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def speaker_graph(encoder: torch.nn.Module, *, rate: int, n_fft: int, hop: int, n_mels: int, partial_frames: int,
                  frame_step: int, min_coverage: float, target_dbfs: float, dim: int) -> onnx.ModelProto:
    """Resemblyzer's partials and the GE2E encoder: ``samples`` (1, n) → ``pooled_embedding`` (1, dim), as
    ``SpeakerBackbone.embed`` computes it."""
    net = _embedded(encoder_graph(encoder, partial_frames, n_mels), "encoder/")
    (net_in,), (net_out,) = net.graph.input, net.graph.output
    g = _Nodes("speaker/")
    x = g.op("Reshape", SAMPLES, g.const([-1]))
    n = g.scalar(x, 0)
    # louder: raise the RMS to target_dbfs, never lower it
    rms = g.op("Sqrt", g.op("ReduceMean", g.op("Mul", x, x), axes=[0], keepdims=0))
    change = g.op("Sub", g.f(target_dbfs), g.op("Mul", g.f(20.0 / math.log(10.0)), g.op("Log", rms)))
    raise_ = g.op("And", g.op("Greater", rms, g.f(0.0)), g.op("Greater", change, g.f(0.0)))
    gain = g.op("Where", raise_, g.op("Pow", g.f(10.0), g.op("Div", change, g.f(20.0))), g.f(1.0))
    louder = g.op("Mul", x, gain)
    # the partials' starts, as Resemblyzer: frames = ceil((n + 1) / hop); starts every frame_step up to
    # max(1, frames - partial_frames + frame_step + 1); the last dropped when it covers < min_coverage
    n_frames = g.op("Div", g.op("Add", n, g.const(hop)), g.const(hop))
    limit = g.op("Max", g.op("Add", n_frames, g.const(frame_step + 1 - partial_frames)), g.const(1))
    count = g.op("Div", g.op("Add", limit, g.const(frame_step - 1)), g.const(frame_step))
    last = g.op("Mul", g.op("Sub", count, g.const(1)), g.const(frame_step * hop))
    coverage = g.op("Div", g.op("Cast", g.op("Sub", n, last), to=TensorProto.FLOAT), g.f(partial_frames * hop))
    drop = g.op("And", g.op("Less", coverage, g.f(min_coverage)), g.op("Greater", count, g.const(1)))
    count = g.op("Sub", count, g.op("Cast", drop, to=TensorProto.INT64))
    starts = g.op("Range", g.const(0), g.op("Mul", count, g.const(frame_step)), g.const(frame_step))
    end = g.op("Mul", g.op("Add", g.op("Mul", g.op("Sub", count, g.const(1)), g.const(frame_step)),
                           g.const(partial_frames)), g.const(hop))
    zero = g.const([0])
    tail = g.op("Unsqueeze", g.op("Max", g.op("Sub", end, n), g.const(0)), zero)
    padded = g.op("Pad", louder, g.op("Concat", zero, tail, axis=0))
    # centred frames (reflect padding), periodic Hann, power spectrum, mel filterbank
    half = n_fft // 2
    centred = g.op("Pad", padded, g.const([half, half]), mode="reflect")
    total = g.op("Div", g.scalar(padded, 0), g.const(hop))  # frames - 1
    frame_starts = g.op("Mul", g.op("Range", g.const(0), g.op("Add", total, g.const(1)), g.const(1)), g.const(hop))
    grid = g.op("Add", g.op("Unsqueeze", frame_starts, g.const([1])), g.const(np.arange(n_fft)[None, :]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    framed = g.op("Mul", g.op("Gather", centred, grid, axis=0), g.const(window, np.float32))
    k = np.arange(n_fft)[:, None] * np.arange(n_fft // 2 + 1)[None, :]
    angle = 2 * np.pi * (k % n_fft) / n_fft
    real = g.op("MatMul", framed, g.const(np.cos(angle), np.float32))
    imag = g.op("MatMul", framed, g.const(np.sin(angle), np.float32))
    power = g.op("Add", g.op("Mul", real, real), g.op("Mul", imag, imag))
    mels = g.op("MatMul", power, g.const(mel_filterbank(rate, n_fft, n_mels).T, np.float32))
    partial_grid = g.op("Add", g.op("Unsqueeze", starts, g.const([1])), g.const(np.arange(partial_frames)[None, :]))
    g.op("Gather", mels, partial_grid, axis=0, out=net_in.name)  # (partials, partial_frames, n_mels)
    g.l2(g.op("ReduceMean", net_out.name, axes=[0], keepdims=1), POOLED)
    return _model(
        g, [net], [helper.make_tensor_value_info(SAMPLES, TensorProto.FLOAT, [1, "samples"])],
        [helper.make_tensor_value_info(POOLED, TensorProto.FLOAT, [1, dim])], SPEAKER_OPSET, net.ir_version,
        "resemblyzer-ge2e",
    )


def with_speaker_head(backbone: onnx.ModelProto, head: Any) -> onnx.ModelProto:
    """A speaker head after an audio backbone graph (``samples`` → ``pooled_embedding``): cosine with each
    enrolled speaker's centroid → ``similarities`` (1, speakers); the best speaker's index when its similarity
    reaches the head's threshold, else -1 → ``speaker`` (1,), as ``SpeakerHead.accepted``."""
    opset = next(o.version for o in backbone.opset_import if o.domain in ("", "ai.onnx"))
    g = _Nodes("speaker_head/")
    centroids = np.asarray(head.centroids, dtype=np.float32)
    pooled = g.l2(POOLED, "speaker_head/unit")  # the backbone's is L2-normalised already; the head renormalises
    similarities = g.op("MatMul", pooled, g.const(centroids.T, np.float32), out=SIMILARITIES)
    best = g.op("ArgMax", similarities, axis=1, keepdims=0)
    top = g.op("ReduceMax", similarities, axes=[1], keepdims=0)
    accepted = g.op("GreaterOrEqual", top, g.f(float(head.threshold)))
    g.op("Where", accepted, best, g.const([-1]), out=SPEAKER)
    model = _model(
        g, [backbone], list(backbone.graph.input),
        [helper.make_tensor_value_info(SIMILARITIES, TensorProto.FLOAT, [1, len(head.labels)]),
         helper.make_tensor_value_info(SPEAKER, TensorProto.INT64, [1])],
        opset, backbone.ir_version, f"{backbone.graph.name}-speakers",
    )
    helper.set_model_props(model, {"labels": json.dumps(head.labels, ensure_ascii=False), "head": head.kind,
                                   "threshold": repr(float(head.threshold))})
    return model
