"""Trace a torch module to one self-contained ONNX file (the core's one torch → ONNX step).

Used for backbones (through ``service/backbones/onnx_export.py``) and for a fine-tuned head's whole
model (``adapters/export.py``), so the core needs nothing of the service to export.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

OPSET = 17


def trace_onnx(
    module: torch.nn.Module, example_inputs: dict[str, torch.Tensor], dynamic_axes: dict[str, dict[int, str]],
    output: str, path: Path, opset: int = OPSET, output_axes: dict[int, str] | None = None,
) -> None:
    """Write ``module`` (called as ``module(*example_inputs.values())``, one (batch, ...) output) to ``path``
    with dynamic axes: the inputs' as given, the output's ``output_axes`` (default: its batch axis); its
    other axes are made static.

    Uses the TorchScript-based exporter (``dynamo=False``): for these encoder graphs it is the
    stable path, and its graphs are the ones ORT's transformer fusions recognise.
    """
    dynamic = output_axes or {0: "batch"}
    axes = {**dynamic_axes, output: dynamic}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            module.cpu().float().eval(),
            tuple(example_inputs.values()),
            str(path),
            input_names=list(example_inputs),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
        shape = module(*example_inputs.values()).shape
    set_static_output_dims(path, shape[1:], skip=frozenset(dynamic))


def set_static_output_dims(path: Path, dims: Sequence[int], skip: frozenset[int] = frozenset({0})) -> None:
    """The tracer can leave the output's non-batch axes symbolic; make them the static numbers they are
    (``dims``: the sizes of axes 1, 2, …; the axes in ``skip`` stay dynamic)."""
    import onnx

    model = onnx.load(str(path))
    shape = model.graph.output[0].type.tensor_type.shape
    for axis, size in enumerate(dims, start=1):
        if axis in skip:
            continue
        shape.dim[axis].Clear()
        shape.dim[axis].dim_value = int(size)
    onnx.save(model, str(path))
