"""Export a backbone to ONNX and derive its runtime variants.

Any backbone can run on ONNX Runtime if it implements :class:`Exportable`: it hands over
the torch module to trace (inputs → pooled, L2-normalised embeddings), example inputs
(with padding, where it has any), the dynamic axes, and its own preprocessing as numpy
micro-batches. The text backbone does; an image backbone would export its CNN with
``pixel_values`` as the input the same way.

Variants (all derived from one fp32 export):

* ``onnx`` — the fp32 graph as traced; ORT applies its graph optimisations at load time.
* ``onnx-int8`` — dynamic quantisation: int8 weights per output channel (per tensor loses
  too much: cosine 0.92–0.96), activations quantised per call.
* ``onnx-fp16`` — CUDA only: ORT's transformer fusions for GPU (fused attention, skip
  layer norm) and fp16 weights and compute, float32 inputs and outputs kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from adapters.onnx_trace import OPSET, trace_onnx

# Bump when the export or a variant recipe changes, so cached files made by older code are rebuilt.
EXPORT_FORMAT = 2
OUTPUT = "embedding"


@dataclass
class ExportSpec:
    """What the exporter needs from a backbone."""

    module: torch.nn.Module  # forward(*example_inputs.values()) -> (n, dim) float32, L2-normalised
    example_inputs: dict[str, torch.Tensor]  # in forward's argument order
    dynamic_axes: dict[str, dict[int, str]]  # input name → {axis: symbolic name}
    output: str = OUTPUT
    # Hints for ORT's transformer optimiser (model_type, num_heads, hidden_size); None: not a transformer.
    fusion: dict[str, Any] | None = field(default=None)


@runtime_checkable
class Exportable(Protocol):
    """A backbone that ONNX runtimes can wrap."""

    name: str
    modality: str
    dim: int
    revision: str

    def export_spec(self) -> ExportSpec: ...

    def batches(self, inputs: Sequence[Any], max_items: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Preprocessed micro-batches: (positions in ``inputs``, model feeds as numpy arrays)."""

    def preprocessing_files(self) -> dict[str, bytes]:
        """Files a consumer of an exported graph needs to preprocess inputs (e.g. ``tokenizer.json``)."""


VARIANTS = ("onnx", "onnx-int8", "onnx-fp16")


def export_fp32(spec: ExportSpec, path: Path, opset: int = OPSET) -> None:
    """Trace ``spec.module`` to one self-contained ONNX file with dynamic batch (and sequence) axes
    (``adapters.onnx_trace.trace_onnx``: the TorchScript-based exporter, opset 17)."""
    trace_onnx(spec.module, spec.example_inputs, spec.dynamic_axes, spec.output, path, opset)


def quantize_int8(source: Path, path: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice for static quantisation on the root logger
    try:
        quantize_dynamic(source, path, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def convert_fp16(source: Path, path: Path, fusion: dict[str, Any] | None) -> None:
    import onnx
    from onnxruntime.transformers import float16, optimizer

    if fusion:
        model = optimizer.optimize_model(str(source), use_gpu=True, opt_level=0, **fusion)
        model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(path))
    else:
        onnx.save(float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(path))


def build_variant(
    variant: str, spec_or_fp32: ExportSpec | Path, path: Path, *, fusion: dict[str, Any] | None = None
) -> None:
    """Write ``variant`` to ``path``: ``onnx`` from an ExportSpec, the others from the fp32 file."""
    if variant == "onnx":
        assert isinstance(spec_or_fp32, ExportSpec)
        export_fp32(spec_or_fp32, path)
    elif variant == "onnx-int8":
        assert isinstance(spec_or_fp32, Path)
        quantize_int8(spec_or_fp32, path)
    elif variant == "onnx-fp16":
        assert isinstance(spec_or_fp32, Path)
        convert_fp16(spec_or_fp32, path, fusion)
    else:
        raise ValueError(f"unknown ONNX variant {variant!r}; choose one of {list(VARIANTS)}")
