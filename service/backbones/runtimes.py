"""Which runtime runs each backbone: ``torch``, ``torch-bf16``, ``torch-fp16``, ``onnx``, ``onnx-int8``, ``onnx-fp16``.

``GRAFT_BACKBONE_RUNTIME`` is one runtime (or ``auto``) for every backbone, optionally
followed by per-backbone overrides: ``auto,mpnet=torch``. ``auto`` picks per modality and
device from the measurements in docs/onnx.md (``benchmarks/backbones.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..logs import get as get_logger
from .base import Backbone
from .onnx_export import VARIANTS, Exportable

log = get_logger("backbones")

TORCH_RUNTIMES = ("torch", "torch-bf16", "torch-fp16")
RUNTIMES = TORCH_RUNTIMES + VARIANTS
CUDA_ONLY = {"torch-fp16", "onnx-fp16"}

# The default per (modality, device type). CPU: onnx-int8 measured fastest with accuracy within
# 0.5 pt of fp32 (docs/onnx.md). CUDA: not measured on this project's machines yet; torch fp32 until
# benchmarks/gpu_check.py says otherwise. Modalities not listed (e.g. image) default to torch.
AUTO: dict[tuple[str, str], str] = {("text", "cpu"): "onnx-int8", ("text", "cuda"): "torch"}


def parse_setting(setting: str) -> dict[str, str]:
    """``"onnx-int8"`` → ``{"": "onnx-int8"}``; ``"auto,mpnet=torch"`` → ``{"": "auto", "mpnet": "torch"}``."""
    out: dict[str, str] = {"": "auto"}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        name, sep, runtime = item.rpartition("=")
        if sep and not name:
            raise ValueError(f"bad runtime item {item!r}; expected RUNTIME or BACKBONE=RUNTIME")
        if runtime not in (*RUNTIMES, "auto"):
            raise ValueError(f"unknown backbone runtime {runtime!r}; choose auto or one of {list(RUNTIMES)}")
        out[name] = runtime
    return out


@dataclass
class RuntimeConfig:
    """How the registry turns a loaded torch backbone into the configured runtime."""

    setting: str = "torch"
    cache_dir: Path | None = None  # where ONNX exports are cached
    threads: int = 0  # ORT intra-op threads; 0 = the container's CPU quota
    _parsed: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._parsed = parse_setting(self.setting)

    def choose(self, name: str, modality: str, device: str) -> str:
        requested = self._parsed.get(name, self._parsed[""])
        kind = device.split(":")[0]
        runtime = AUTO.get((modality, kind), "torch") if requested == "auto" else requested
        if runtime in CUDA_ONLY and kind != "cuda":
            raise ValueError(f"runtime {runtime!r} for backbone {name!r} needs CUDA; the device is {device!r}")
        return runtime

    @staticmethod
    def torch_runtime(runtime: str) -> str:
        """The torch flavour to load: the runtime itself, or fp32 torch as the source of an export."""
        return runtime if runtime in TORCH_RUNTIMES else "torch"

    @staticmethod
    def torch_device(runtime: str, device: str) -> str:
        """Where the torch model lives: the device for torch runtimes; CPU (exports only) for ONNX ones."""
        return device if runtime in TORCH_RUNTIMES else "cpu"

    def wrap(self, backbone: Backbone, runtime: str, device: str | None = None) -> Backbone:
        """``backbone`` on ``runtime``: itself for torch runtimes, else its ONNX variant on ORT on ``device``."""
        if runtime in TORCH_RUNTIMES:
            return backbone
        if not isinstance(backbone, Exportable):
            if self._parsed.get(backbone.name, self._parsed[""]) == "auto":
                log.info("backbone cannot be exported; staying on torch", extra={"backbone": backbone.name})
                return backbone
            raise ValueError(f"backbone {backbone.name!r} cannot run on {runtime}: it has no ONNX export")
        from .onnx_runtime import OrtBackbone

        model = self.export_file(backbone, runtime)
        return OrtBackbone(backbone, model, runtime, device=device or backbone.device, threads=self.threads)

    def export_file(self, backbone: Exportable, variant: str) -> Path:
        """The verified cached export of ``backbone`` in ``variant``, built on a miss."""
        if self.cache_dir is None:
            raise ValueError("ONNX runtimes need a cache directory for their exports")
        from .onnx_cache import OnnxCache

        return OnnxCache(self.cache_dir).path(backbone, variant)
