"""Per-token activation scales for a dynamically quantised ONNX graph, so rows can share a call.

Measured by ``benchmarks/int8_batched.py`` and **not served**: row-independent and closer to fp32
(min cosine 0.998 vs 0.993), but 0.5–0.7× the served int8's items/s on this CPU, because the
unfused quantisation ops cost more than batching gains (docs/onnx.md).

``onnxruntime.quantization.quantize_dynamic`` writes, before each int8 matrix product, a
``DynamicQuantizeLinear`` node: one scale and one zero point for the **whole activation tensor**.
A batched input then quantises each row with a scale set by its batch mates, so a row's result
depends on the others (up to 0.03 per embedding element on MiniLM), and Graft had to run int8 one
input per call. This rewrite gives every token its own scale and zero point (the range of its own
hidden vector, as ``DynamicQuantizeLinear`` computes for the tensor: ``[min(x, 0), max(x, 0)] / 255``,
rounded half to even, saturated to uint8). A token's quantisation then reads only its own values,
so a row's result is independent of the batch (up to fp32 summation order, as for the fp32 graph),
and it is more accurate than one scale per tensor (a scale per token follows its own range).

``MatMulInteger`` takes one zero point for its ``A`` input in ONNX Runtime, so the rewrite gives it
none and subtracts the zero point's share after the product, exactly in integers-as-float:
``(q - z) · (W - w_z) = q · (W - w_z) - z · colsum(W - w_z)``. The product is below 2**24 in
magnitude for hidden sizes up to ~500 (255 · 127 · 384) and rounds to float32's 24 bits beyond.

Only standard ONNX operators are written (ReduceMin/Max, Div, Round, Clip, Cast, Mul, Sub), with
the opset the graph already declares.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Constants shared by every rewritten node.
_ZERO, _TOP, _TINY, _AXES = "per_token/zero", "per_token/255", "per_token/tiny", "per_token/last_axis"


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _quantize_per_token(node: onnx.NodeProto, opset: int) -> tuple[list[onnx.NodeProto], str]:
    """Nodes that replace one ``DynamicQuantizeLinear``: the same outputs (``q`` uint8 like ``x``,
    ``scale`` of shape ``x.shape[:-1] + (1,)``), and the zero point as float under a new name (the
    uint8 zero point output is no longer written)."""
    x, (q, scale, _zero_point) = node.input[0], node.output
    p = f"{node.name or node.output[0]}/per_token"

    def reduce(op: str, out: str) -> onnx.NodeProto:
        if opset >= 18:  # axes became an input in opset 18
            return helper.make_node(op, [x, _AXES], [out], keepdims=1)
        return helper.make_node(op, [x], [out], axes=[-1], keepdims=1)

    zero_float = f"{p}/zero_point"
    nodes = [
        reduce("ReduceMin", f"{p}/min"),
        reduce("ReduceMax", f"{p}/max"),
        helper.make_node("Min", [f"{p}/min", _ZERO], [f"{p}/low"]),
        helper.make_node("Max", [f"{p}/max", _ZERO], [f"{p}/high"]),
        helper.make_node("Sub", [f"{p}/high", f"{p}/low"], [f"{p}/range"]),
        helper.make_node("Div", [f"{p}/range", _TOP], [f"{p}/raw_scale"]),
        helper.make_node("Max", [f"{p}/raw_scale", _TINY], [scale]),  # an all-zero token: q = 0, any scale
        helper.make_node("Div", [f"{p}/low", scale], [f"{p}/low_scaled"]),
        helper.make_node("Neg", [f"{p}/low_scaled"], [f"{p}/minus_low"]),
        helper.make_node("Round", [f"{p}/minus_low"], [f"{p}/zero_rounded"]),
        helper.make_node("Clip", [f"{p}/zero_rounded", _ZERO, _TOP], [zero_float]),
        helper.make_node("Div", [x, scale], [f"{p}/scaled"]),
        helper.make_node("Round", [f"{p}/scaled"], [f"{p}/rounded"]),
        helper.make_node("Add", [f"{p}/rounded", zero_float], [f"{p}/shifted"]),
        helper.make_node("Clip", [f"{p}/shifted", _ZERO, _TOP], [f"{p}/saturated"]),
        helper.make_node("Cast", [f"{p}/saturated"], [q], to=TensorProto.UINT8),
    ]
    return nodes, zero_float


def quantize_activations_per_token(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``model`` (from ``quantize_dynamic``) in place so every ``DynamicQuantizeLinear``
    quantises per token (last axis), and return it. Each of its ``MatMulInteger`` consumers must be
    followed by one ``Cast`` to float (the layout ``quantize_dynamic`` writes); anything else raises
    ``ValueError`` rather than produce a wrong graph."""
    graph, opset = model.graph, _opset(model)
    constants = _constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    zero_points: dict[str, str] = {}  # the uint8 zero point's name -> its float replacement
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            for other in consumers[node.output[2]]:
                if other.op_type != "MatMulInteger":
                    raise ValueError(f"{other.name}: a {other.op_type} reads a dynamic zero point; cannot rewrite")
            for other in consumers[node.output[1]]:
                if other.op_type != "Mul":  # broadcasting the per-token scale (…, 1) needs an elementwise Mul
                    raise ValueError(f"{other.name}: a {other.op_type} reads a dynamic scale; cannot rewrite")
            replacement, zero_float = _quantize_per_token(node, opset)
            nodes += replacement
            zero_points[node.output[2]] = zero_float
        else:
            nodes.append(node)

    corrections: dict[str, list[onnx.NodeProto]] = {}  # a Cast's output -> nodes to insert after it
    initializers: list[onnx.TensorProto] = []
    for node in nodes:
        if node.op_type != "MatMulInteger" or len(node.input) < 3 or node.input[2] not in zero_points:
            continue
        weights = constants.get(node.input[1])
        if weights is None or weights.ndim != 2:
            raise ValueError(f"{node.name}: its B input is not a constant matrix; cannot rewrite")
        w_zero = constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        centred = weights.astype(np.int64) - (0 if w_zero is None else w_zero.astype(np.int64))
        colsum = f"{node.name or node.output[0]}/per_token/colsum"
        initializers.append(numpy_helper.from_array(centred.sum(axis=0).astype(np.float32), colsum))
        casts = consumers[node.output[0]]
        if len(casts) != 1 or casts[0].op_type != "Cast":
            raise ValueError(f"{node.name}: its product is not read by exactly one Cast; cannot rewrite")
        cast = casts[0]
        raw, fixed = cast.output[0], f"{cast.output[0]}/per_token"
        for reader in consumers[raw]:
            reader.input[:] = [fixed if name == raw else name for name in reader.input]
        for output in graph.output:
            if output.name == raw:
                raise ValueError(f"{node.name}: its product is a graph output; cannot rewrite")
        zero = zero_points[node.input[2]]
        corrections[raw] = [
            helper.make_node("Mul", [zero, colsum], [f"{raw}/zero_share"]),
            helper.make_node("Sub", [raw, f"{raw}/zero_share"], [fixed]),
        ]
        node.input[2] = ""  # no A zero point: the product is q · (W - w_z)

    ordered: list[onnx.NodeProto] = []
    for node in nodes:
        ordered.append(node)
        ordered += corrections.pop(node.output[0], []) if node.output else []
    if corrections:
        raise ValueError("a MatMulInteger's Cast was not found in the graph's order")
    del graph.node[:]
    graph.node.extend(ordered)
    if zero_points:
        initializers += [
            numpy_helper.from_array(np.array(0.0, np.float32), _ZERO),
            numpy_helper.from_array(np.array(255.0, np.float32), _TOP),
            numpy_helper.from_array(np.array(1e-30, np.float32), _TINY),
        ]
        if opset >= 18:
            initializers.append(numpy_helper.from_array(np.array([-1], np.int64), _AXES))
    graph.initializer.extend(initializers)
    return model
