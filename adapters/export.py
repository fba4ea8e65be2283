"""Export an adapted model: one ONNX graph fusing a backbone export and a tenant's head.

The backbone graph maps preprocessed inputs (``input_ids``, ``attention_mask`` for text) to
pooled, L2-normalised embeddings; a head maps embeddings to class probabilities. Any head
that provides its torch form (``torch_module()``: embeddings → probabilities) is exported
the same way, so the exporter knows nothing about head kinds. The bundle is a zip with the
fused graph, the backbone's preprocessing files and a JSON description.
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

EMBEDDING = "pooled_embedding"  # the head graph's input, wired to the backbone's output
PROBABILITIES = "probabilities"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "graft-export.json"


class ExportError(ValueError):
    """This model cannot be exported (the message says why)."""


@runtime_checkable
class ExportableHead(Protocol):
    kind: str
    labels: list[str]

    def torch_module(self) -> torch.nn.Module:
        """The head as a torch module: float32 embeddings (n, dim) → probabilities (n, len(labels))."""


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def head_graph(head: ExportableHead, dim: int, opset: int) -> onnx.ModelProto:
    """The head alone as ONNX: ``pooled_embedding`` (batch, dim) → ``probabilities`` (batch, labels)."""
    if getattr(head, "kind", "") == "finetune":
        raise ExportError("a 'finetune' head changes the backbone's top layers: export its whole model with finetune_graph")
    if not isinstance(head, ExportableHead):
        raise ExportError(f"heads of kind {getattr(head, 'kind', type(head).__name__)!r} have no ONNX form yet")
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head.torch_module().float().eval(), (torch.zeros(2, dim),), buffer,
            input_names=[EMBEDDING], output_names=[PROBABILITIES],
            dynamic_axes={EMBEDDING: {0: "batch"}, PROBABILITIES: {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def fuse(backbone: onnx.ModelProto, head: ExportableHead) -> onnx.ModelProto:
    """One graph: the backbone's inputs → its (single) embedding output → the head → ``probabilities``."""
    (output,) = backbone.graph.output
    dim = output.type.tensor_type.shape.dim[-1].dim_value
    if not dim:
        raise ExportError("the backbone graph's embedding width is not static")
    part = head_graph(head, dim, _opset(backbone))
    part = onnx.compose.add_prefix(part, "head/", rename_inputs=False, rename_outputs=False)
    part.ir_version = backbone.ir_version
    fused = onnx.compose.merge_models(
        backbone, part, io_map=[(output.name, EMBEDDING)], outputs=[PROBABILITIES],
        producer_name="graft", producer_version="1",
    )
    onnx.helper.set_model_props(fused, {"labels": json.dumps(head.labels, ensure_ascii=False), "head": head.kind})
    return fused


def bundle(fused: onnx.ModelProto, files: dict[str, bytes], manifest: dict[str, Any]) -> bytes:
    """A zip: ``model.onnx`` (stored: weights barely compress), the preprocessing files, the manifest."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(MODEL_FILE, fused.SerializeToString(), compress_type=zipfile.ZIP_STORED)
        for name, data in files.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def finetune_graph(head: Any, spec: Any) -> onnx.ModelProto:
    """A fine-tuned head's whole model as one fp32 graph: the backbone's layers with the head's LoRA
    updates merged into its top layers, pooling and classifier: (input_ids, attention_mask) →
    ``probabilities``. ``spec`` is the backbone's :class:`ExportSpec` (its eager-attention copy)."""
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from adapters.heads.finetune import FinetunedModel, FinetuneHead
    from service.backbones.onnx_export import ExportSpec, export_fp32

    eager = spec.module.model  # the SentenceEmbedder's transformer, eager attention (ORT-friendly)
    bound = FinetuneHead.restore(head.labels, head.params(), head.tensors()).bind(SimpleNamespace(model=eager))
    module = FinetunedModel(eager, bound).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        export_fp32(ExportSpec(module=module, example_inputs=spec.example_inputs, dynamic_axes=spec.dynamic_axes, output=PROBABILITIES), path)
        model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"labels": json.dumps(head.labels, ensure_ascii=False), "head": head.kind})
    return model
