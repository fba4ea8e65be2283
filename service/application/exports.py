"""Export of an adapted model (the use case; the route streams the file), in a zip with its manifest:

- ``onnx``: backbone + pooling + the task's head as one ONNX graph (every kind whose head has an ONNX form);
- ``peft``: a generation task's LoRA adapter as a PEFT adapter directory (``adapter_config.json``,
  ``adapter_model.safetensors``: adapters/generation/peft_export.py) for ``peft.PeftModel.from_pretrained``
  on the base model the manifest names.

A kind lists its formats (``TaskKind.export_formats``); another format is refused with the one to use.

Exports are cached on disk per (task id, version, format) under ``<GRAFT_DATA_DIR>/exports/<tenant>``
(a version never changes, so neither does its export). A tenant builds at most one export at a time in a
process: a second request while one builds gets :class:`ExportInProgress`. Deleting a task deletes its
cached exports.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio.to_thread

from adapters import heads, kinds
from adapters.audio_export import SIMILARITIES, SPEAKER, with_speaker_head
from adapters.export import (
    AUDIO_DECODE_FILE,
    DETECTIONS,
    MODEL_FILE,
    RAW_INPUTS_FILE,
    SPAN_DECODE_FILE,
    WORD_HEADS,
    ExportError,
    audio_decode_source,
    bundle,
    detection_graph,
    finetune_graph,
    fuse,
    needs_backbone,
    output_of,
    raw_inputs,
    raw_inputs_source,
    span_decode_source,
    token_graph,
    token_head_problem,
    word_graph,
)
from adapters.generation import GenerationDataError, LoraWeights
from adapters.generation.peft_export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, peft_bundle, target_modules
from adapters.generation.weights import SMOLLM2_DISTRIBUTION, SMOLLM2_GGUF, SMOLLM2_HUB_NAME

from ..engine.generation import PACKAGED
from ..engine.head_store import head_of
from ..router import NotTrained
from ..runtime import Runtime
from ..store.models import Task, Version
from .errors import ExportInProgress, Invalid, NotExportable

FORMATS = ("onnx", "peft")

PREPROCESSING = {
    "text": {"tokenizer": "tokenizer.json", "note": "truncation and padding are configured in tokenizer.json"},
    "image": {
        "spec": "preprocessing.json",
        "note": "RGB; resize the shorter side to `resize`, center-crop `crop`, "
        "scale to [0, 1], subtract `mean`, divide by `std`, layout NCHW float32",
    },
}

# Serving runtimes whose graph the bundle can carry as is; others (torch, CUDA fp16) export fp32.
PORTABLE = ("onnx", "onnx-int8")


@dataclass(frozen=True)
class Export:
    task: Task
    version: Version
    format: str
    path: Path


async def export(rt: Runtime, tenant_id: str, name: str, fmt: str | None, version: int | None) -> Export:
    """The export of ``version`` (default: the active one) of the tenant's task ``name`` in format ``fmt``
    (default: its kind's format): built and cached on first use, then served from the cache."""
    if fmt is not None and fmt not in FORMATS:
        raise Invalid(
            f"unsupported export format {fmt!r}; supported: 'onnx' (a head's graph), 'peft' (a generation task's "
            "LoRA adapter)"
        )
    task, v, chosen = await anyio.to_thread.run_sync(_version, rt, tenant_id, name, version, fmt)
    problem = kinds.kind_of(task.kind).export_problem() if chosen == "onnx" else None
    if problem:
        raise NotExportable(problem)
    build = _build_peft if chosen == "peft" else _build
    path = cached_export(rt, tenant_id, task.id, v.number, chosen)
    if not path.is_file():
        if not _BUILDING.begin(tenant_id):
            raise ExportInProgress(
                "this tenant is already building an export; retry when it is done "
                "(finished exports are cached and served at once)",
                BUILD_RETRY_S,
            )
        try:
            if not path.is_file():  # built by a request that held the slot just before
                data = await anyio.to_thread.run_sync(build, rt, task, v)
                await anyio.to_thread.run_sync(_store, path, data)
        finally:
            _BUILDING.end(tenant_id)
    return Export(task, v, chosen, path)


BUILD_RETRY_S = 5


class _Builds:
    """Tenants building an export in this process (at most one build each)."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def begin(self, tenant_id: str) -> bool:
        with self._lock:
            if tenant_id in self._busy:
                return False
            self._busy.add(tenant_id)
            return True

    def end(self, tenant_id: str) -> None:
        with self._lock:
            self._busy.discard(tenant_id)


_BUILDING = _Builds()


def exports_dir(rt: Runtime, tenant_id: str) -> Path:
    return rt.settings.data_path / "exports" / tenant_id


def cached_export(rt: Runtime, tenant_id: str, task_id: str, version: int, fmt: str) -> Path:
    return exports_dir(rt, tenant_id) / f"{task_id}-v{version}.{fmt}.zip"


def forget_exports(rt: Runtime, tenant_id: str, task_id: str) -> None:
    """Delete a (deleted) task's cached exports."""
    for path in exports_dir(rt, tenant_id).glob(f"{task_id}-v*.zip"):
        path.unlink(missing_ok=True)


def _store(path: Path, data: bytes) -> None:
    """Write the export whole or not at all (a temp file in the same directory, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".building-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _version(rt: Runtime, tenant_id: str, name: str, number: int | None, fmt: str | None) -> tuple[Task, Version, str]:
    task = rt.store.get_task(tenant_id, name)  # another tenant's task: NotFound → 404
    task_kind = kinds.kind_of(task.kind)
    fmt = fmt or task_kind.export_formats[0]
    problem = task_kind.export_format_problem(fmt)  # the kind decides, trained or not
    if problem:
        raise NotExportable(problem)
    number = number or task.active_version
    if number is None:
        raise NotTrained(f"task {name!r} has no trained version yet; poll its job and export when it succeeds")
    return task, rt.store.version(task.id, number, with_weights=True), fmt


def _build(rt: Runtime, task: Task, v: Version) -> bytes:
    import onnx
    import onnxruntime

    head = head_of(rt.store, v)
    finetuned = heads.TRUNK in getattr(head, "consumes", frozenset())
    files: dict[str, bytes] = {}
    windows: dict[str, int] | None = None
    audio_rate: int | None = None
    backbone, variant = None, None
    task_kind = kinds.kind_of(task.kind)
    try:
        if task_kind.reads_feature_maps:  # detection: the CNN up to its maps and the head, one fp32 graph
            name = v.backbone
            if name not in rt.backbones.loaded:
                raise NotExportable(f"backbone {name!r} is not configured")
            backbone, variant = rt.backbones.get(name), "onnx"
            source = rt.backbones.exportable(name)
            reads_maps = cast(kinds.Detection, task_kind).reads_maps(head)
            network = getattr(source, "detection_network", None)
            if reads_maps and network is None:
                raise NotExportable(f"backbone {name!r} has no feature maps to export")
            files = source.preprocessing_files() if source is not None else {}
            if getattr(head, "binds_cnn", False):  # fine-tuned: its own top blocks, bound to this backbone's CNN
                if not hasattr(source, "top_blocks"):
                    raise NotExportable(f"backbone {name!r} has no CNN blocks for a fine-tuned detection head")
                head.bind(source)  # type: ignore[attr-defined]
            fused = detection_graph(head, network() if reads_maps and network else None, kinds.DETECTION_SIZE)
        elif task_kind.reads_token_states and head.kind in WORD_HEADS:  # their word baselines: no encoder
            files, fused = {SPAN_DECODE_FILE: span_decode_source()}, word_graph(head)
        elif task_kind.reads_token_states:  # entities, answers: the encoder + the head's per-token outputs, fp32
            problem = token_head_problem(head)
            if problem:
                raise NotExportable(problem)
            name = v.backbone
            if name not in rt.backbones.loaded:
                raise NotExportable(f"backbone {name!r} is not configured")
            backbone, variant = rt.backbones.get(name), "onnx"
            source = rt.backbones.exportable(name)
            if source is None or not hasattr(source, "token_windows"):
                raise NotExportable(f"backbone {name!r} has no ONNX export of its token states")
            files = source.preprocessing_files() | {SPAN_DECODE_FILE: span_decode_source()}
            windows = source.token_windows(pair=cast(kinds.TokenKind, task_kind).pairs)
            fused = token_graph(head, source.export_spec())
        elif task.modality == "audio":  # samples → one graph (adapters/audio_export.py); audio_decode.py decodes
            source, variant = _audio_backbone(rt, v.backbone), "onnx"
            files, audio_rate = {AUDIO_DECODE_FILE: audio_decode_source()}, source.sample_rate
            if head.kind == "speaker":
                backbone, fused = source, with_speaker_head(source.export_graph(), head)
            elif needs_backbone(head):
                backbone, fused = source, fuse(source.export_graph(), head)
            else:  # the MFCC baseline reads the clip's MFCC summary alone
                fused = fuse(None, head)
        elif finetuned or needs_backbone(head):
            name = v.backbone if finetuned else task.backbone
            if name not in rt.backbones.loaded:
                raise NotExportable(f"backbone {name!r} is not configured")
            backbone = rt.backbones.get(name)
            # A fine-tuned head changes the backbone's top layers: its whole model is exported in fp32, merged.
            variant = "onnx" if finetuned or backbone.runtime not in PORTABLE else backbone.runtime
            source = rt.backbones.exportable(name)
            path = None if finetuned else rt.backbones.onnx_file(name, variant)
            if source is None or (path is None and not finetuned):
                raise NotExportable(f"backbone {name!r} has no ONNX export")
            files = source.preprocessing_files()
            fused = finetune_graph(head, source.export_spec()) if finetuned else fuse(onnx.load(str(path)), head)
        else:  # a baseline head reads only the raw inputs: its graph is the featurizer and the regression
            fused = fuse(None, head)
    except ExportError as exc:
        raise NotExportable(str(exc)) from None
    raw = raw_inputs(head)
    if raw is not None and raw["file"] == RAW_INPUTS_FILE:
        files[RAW_INPUTS_FILE] = raw_inputs_source()
    dtypes = {
        i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name for i in fused.graph.input
    }
    preprocessing = PREPROCESSING.get(task.modality, {}) if backbone is not None else {}
    manifest: dict[str, Any] = {
        "format": "graft-onnx-export/1",
        "task": task.name,
        "kind": task.kind,
        "version": v.number,
        "head": v.head,
        "labels": head.labels,
        "model": {
            "file": MODEL_FILE,
            "inputs": list(dtypes),
            "input_dtype": next(iter(dtypes.values())),
            "input_dtypes": dtypes,
            "output": output_of(head),
            "output_order": "labels",
        },
        "preprocessing": preprocessing | {"files": sorted(files)} | ({"raw": raw} if raw is not None else {}),
        "backbone": None
        if backbone is None
        else {
            "name": backbone.name,
            "revision": backbone.revision,
            "graph_variant": variant,
            "serving_runtime": backbone.runtime,
            "trained_on_runtime": v.runtime,
            "trained_on_revision": v.backbone_revision,
            "dim": backbone.dim,
        },
        # int8 activations are quantised with one scale per call: to reproduce Graft's scores exactly,
        # run one input per call, as Graft does (an audio graph: one clip per call, below).
        "one_input_per_call": variant == "onnx-int8",
        "versions": {
            "graft": "0.1.0",
            "opset": next(o.version for o in fused.opset_import if o.domain in ("", "ai.onnx")),
            "onnxruntime": onnxruntime.__version__,
            "onnx": onnx.__version__,
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if task_kind.reads_feature_maps:  # detection: heatmap peaks and box terms, decoded as the manifest says
        manifest["model"] |= {"output": DETECTIONS, "output_order": "labels' heatmap peaks, then 4 box terms"}
        manifest["preprocessing"]["note"] = "letterbox onto the detection canvas: see detection.letterbox"
    if task_kind.reads_token_states:  # per-token (or per-word) outputs, decoded as the manifest says
        manifest["model"] |= {"output": fused.graph.output[0].name, "output_order": "see `decode` and docs/spans.md"}
    if windows is None and task_kind.reads_token_states:  # a word baseline
        manifest["preprocessing"]["note"] = (
            "no tokenizer: span_decode.word_rows splits the text into words and builds their feature dicts, "
            "span_decode.word_feeds the graph's feature_names and feature_values; decode with span_decode.py: "
            "`decode.function`"
        )
    if windows is not None:  # token-level: windows over the text
        manifest["preprocessing"] |= {
            "windows": windows,
            "note": "tokenize the text (an answers input: question + context as a pair) into windows of `window` "
            "tokens sharing `stride` of the text's (with offsets), run the graph, merge by max context and "
            "decode with span_decode.py: `decode.function`",
        }
    if audio_rate is not None:  # one WAV clip per call, decoded and resampled by audio_decode.py
        manifest["preprocessing"] = _audio_preprocessing(audio_rate, files) | ({"raw": raw} if raw else {})
        manifest["one_input_per_call"] = True  # windows (partials) and their pooling are over one clip
        if head.kind == "speaker":
            manifest["model"] |= {"output": SIMILARITIES, "outputs": [SIMILARITIES, SPEAKER],
                                  "output_order": "labels; speaker: the index named, -1 for unknown"}
    manifest.update(task_kind.manifest(head))  # e.g. a multilabel task's thresholds
    return bundle(fused, files, manifest)


def _audio_backbone(rt: Runtime, name: str) -> Any:
    if name not in rt.backbones.loaded:
        raise NotExportable(f"backbone {name!r} is not configured")
    backbone = rt.backbones.get(name)
    if not hasattr(backbone, "export_graph"):
        raise NotExportable(f"backbone {name!r} has no ONNX export")
    return backbone


def _audio_preprocessing(rate: int, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "files": sorted(files),
        "audio": {"file": AUDIO_DECODE_FILE, "function": "inputs", "rate": rate},
        "note": "one WAV clip per call: audio_decode.inputs(wav_bytes, rate=..., graph_inputs=model.inputs) "
        "decodes it (PCM 16/24/32, float 32/64, any channels mixed to mono), resamples it to `rate` as the "
        "server does and, for a baseline or hybrid head, computes its MFCC summary",
    }


# -- format=peft: a generation task's adapter ------------------------------------------------------------

PEFT_FORMAT = "graft-peft-export/1"


def _base_model(rt: Runtime, v: Version) -> tuple[str, dict[str, Any]]:
    """The base model ``v``'s adapter was trained on, as ``base_model_name_or_path`` and as the manifest's
    ``base_model``: its name, where it comes from and how to load it so the adapter answers as Graft does."""
    spec = rt.generation.spec
    dtype = str(spec.dtype).removeprefix("torch.")
    if v.backbone == PACKAGED:
        try:
            package_version: str | None = importlib.metadata.version(SMOLLM2_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            package_version = None
        return SMOLLM2_HUB_NAME, {
            "name": PACKAGED,
            "source": "package",
            "package": SMOLLM2_DISTRIBUTION,
            "package_version": package_version,
            "gguf_file": SMOLLM2_GGUF,
            "dtype": dtype,
            "quantises": SMOLLM2_HUB_NAME,
            "load": (
                f"AutoModelForCausalLM.from_pretrained(<the {SMOLLM2_DISTRIBUTION} package's directory>, "
                f"gguf_file={SMOLLM2_GGUF!r}, dtype=torch.{dtype}) and AutoTokenizer.from_pretrained(the same, "
                f"gguf_file=...): the GGUF Q4_1 weights dequantised, as Graft serves them. "
                f"{SMOLLM2_HUB_NAME} (the unquantised model, base_model_name_or_path) answers close to it, "
                "not token for token"
            ),
        }
    gguf = spec.gguf_file if spec.name == v.backbone else None
    return v.backbone, {
        "name": v.backbone,
        "source": "from_pretrained",
        "gguf_file": gguf,
        "dtype": dtype,
        "load": f"AutoModelForCausalLM.from_pretrained({v.backbone!r}"
        + (f", gguf_file={gguf!r}" if gguf else "")
        + f", dtype=torch.{dtype})",
    }


def _build_peft(rt: Runtime, task: Task, v: Version) -> bytes:
    import peft
    import transformers

    try:
        weights = LoraWeights.from_bytes(v.weights)
    except (GenerationDataError, KeyError, ValueError) as exc:
        raise NotExportable(f"version {v.number}'s adapter does not load: {exc}") from None
    base_name, base = _base_model(rt, v)
    config = (v.metrics or {}).get("config") or {}
    modules = target_modules(weights)
    manifest: dict[str, Any] = {
        "format": PEFT_FORMAT,
        "task": task.name,
        "kind": task.kind,
        "version": v.number,
        "head": v.head,
        "adapter": {
            "files": [ADAPTER_CONFIG, ADAPTER_WEIGHTS],
            "load": "peft.PeftModel.from_pretrained(base_model, <this directory>)",
            "rank": weights.rank,
            "alpha": weights.alpha,
            "target_modules": modules,
            "layers": len(weights.modules) // max(len(modules), 1),
            "parameters": sum(t.numel() for t in [*weights.a.values(), *weights.b.values()]),
            "dtype": str(next(iter(weights.a.values())).dtype).removeprefix("torch."),
        },
        "base_model": base,
        "prompt": {
            "chat_template": "the tokenizer's, when it has one (SmolLM2-Instruct: ChatML with its default system "
            "turn): the prompt as one user turn, then the assistant header",
            "render": "tokenizer.apply_chat_template([{'role': 'user', 'content': prompt}], "
            "add_generation_prompt=True)",
            "without_chat_template": "the prompt's own tokens: tokenizer(prompt)",
            "completion": "the adapter was trained on the completion's tokens followed by the tokenizer's EOS "
            "token (the end of the turn)",
        },
        "generation": {
            "temperature": 0.0,
            "greedy": True,
            "top_p": 1.0,
            "max_tokens": 64,
            "max_tokens_limit": rt.settings.generation_max_tokens,
            "stop": "the tokenizer's EOS token and the model's generation_config eos_token_id (not in the text)",
            "note": "Graft's /generate defaults; temperature 0 is greedy decoding (generate(do_sample=False))",
        },
        "training": {
            "examples": v.n_examples,
            "steps": (v.metrics or {}).get("steps"),
            "adapter_loss": (v.metrics or {}).get("adapter_loss"),
            "base_loss": (v.metrics or {}).get("base_loss"),
            "config": config,
        },
        "versions": {
            "graft": "0.1.0",
            "peft": peft.__version__,
            "transformers": transformers.__version__,
            "torch": importlib.metadata.version("torch"),
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return peft_bundle(
        weights,
        base_name,
        manifest,
        title=f"{task.name} v{v.number} (Graft generation task)",
        dropout=float(config.get("dropout", 0.0)),
    )
