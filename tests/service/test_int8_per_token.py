"""Per-token activation scales (adapters/onnx_int8.py) on a small graph quantised by ORT itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from benchmarks.int8_per_token import quantize_activations_per_token

H, N = 48, 20


def quantised_graph(path: Path, rng: np.random.Generator, layers: int) -> None:
    """x (batch, tokens, H) -> MatMul W1 + b [-> Relu -> MatMul W2], quantised by ``quantize_dynamic``."""
    w1 = rng.normal(size=(H, N)).astype(np.float32)
    w2 = rng.normal(size=(N, N)).astype(np.float32)
    b = rng.normal(size=(N,)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b"], ["y1"])]
    if layers == 2:
        nodes += [helper.make_node("Relu", ["y1"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y2"])]
    graph = helper.make_graph(
        nodes,
        "layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", H])],
        [helper.make_tensor_value_info(f"y{layers}", TensorProto.FLOAT, ["batch", "tokens", N])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(model, fp32)
    quantize_dynamic(fp32, path, per_channel=True, weight_type=QuantType.QInt8)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def rewritten(path: Path) -> onnx.ModelProto:
    model = quantize_activations_per_token(onnx.load(path))
    onnx.checker.check_model(model)
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node)
    return model


def test_a_row_does_not_depend_on_its_batch_mates(tmp_path) -> None:
    path = tmp_path / "q.onnx"
    quantised_graph(path, np.random.default_rng(0), layers=2)
    per_tensor, per_token = session(onnx.load(path)), session(rewritten(path))
    rng = np.random.default_rng(1)
    row = rng.normal(size=(1, 5, H)).astype(np.float32)
    loud = 100 * rng.normal(size=(1, 5, H)).astype(np.float32)  # widens a tensor-wide range
    moved = {}
    for name, run in (("tensor", per_tensor), ("token", per_token)):
        alone = run.run(None, {"x": row})[0]
        together = run.run(None, {"x": np.concatenate([row, loud])})[0][:1]
        moved[name] = float(np.abs(alone - together).max())
    assert moved["token"] == 0.0
    assert moved["tensor"] > 1e-2  # the reason for the rewrite: one scale per tensor moves the quiet row


def test_the_product_matches_a_per_token_reference(tmp_path) -> None:
    """One layer recomputed in numpy: each token quantised with its own range as DynamicQuantizeLinear
    does for a tensor (zero included, round half to even, uint8), times the int8 weights ORT stored."""
    path = tmp_path / "q.onnx"
    quantised_graph(path, np.random.default_rng(3), layers=1)
    model = rewritten(path)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    product = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    w_q, w_zero = values[product.input[1]].astype(np.float64), values[product.input[3]].astype(np.float64)
    w_scale = next(values[n.input[1]] for n in model.graph.node if n.op_type == "Mul" and n.input[1] in values
                   and values[n.input[1]].shape == (N,))
    x = np.random.default_rng(2).normal(size=(3, 4, H)).astype(np.float32)
    x[1, 2] = 0.0  # an all-zero token
    low = np.minimum(x.min(-1, keepdims=True), 0)
    high = np.maximum(x.max(-1, keepdims=True), 0)
    scale = np.maximum((high - low) / np.float32(255), np.float32(1e-30))
    zero = np.clip(np.round(-low / scale), 0, 255)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    reference = ((q - zero) @ (w_q - w_zero)) * (scale * w_scale) + values["b"]
    got = session(model).run(None, {"x": x})[0]
    assert np.abs(got - reference).max() < 1e-4
    assert np.allclose(got[1, 2], values["b"])


def test_a_graph_it_does_not_understand_is_refused() -> None:
    """A DynamicQuantizeLinear whose zero point feeds something other than MatMulInteger."""
    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
            helper.make_node("Cast", ["z"], ["zf"], to=TensorProto.FLOAT),
        ],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, H])],
        [helper.make_tensor_value_info("zf", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="reads a dynamic zero point"):
        quantize_activations_per_token(model)
