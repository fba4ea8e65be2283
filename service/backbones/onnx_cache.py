"""On-disk cache of ONNX exports: built once, verified on every use, never served stale.

Each entry is a folder named from (backbone name, backbone revision, opset, variant, export
format) holding ``model.onnx`` and ``manifest.json`` (what it was built from, and the
file's sha256 and size). A changed model has a new revision, hence a new folder. An entry
whose manifest disagrees with what is asked for, or whose file does not match its
checksum (truncated, corrupted, swapped), is deleted and rebuilt. Builds happen in a
temporary folder renamed into place, under a per-entry file lock, so concurrent processes
build once and nobody reads a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..logs import get as get_logger
from .onnx_export import EXPORT_FORMAT, OPSET, VARIANTS, Exportable, build_variant

log = get_logger("onnx")

MODEL = "model.onnx"
MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class OnnxCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def identity(self, backbone: Exportable, variant: str) -> dict[str, Any]:
        """What an entry must have been built from."""
        return {
            "backbone": backbone.name,
            "revision": backbone.revision,
            "opset": OPSET,
            "variant": variant,
            "format": EXPORT_FORMAT,
        }

    def entry(self, backbone: Exportable, variant: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", backbone.name)[:48]
        revision = hashlib.sha256(backbone.revision.encode()).hexdigest()[:16]
        return self.root / f"{name}-{revision}-opset{OPSET}-{variant}-f{EXPORT_FORMAT}"

    def problem(self, entry: Path, identity: dict[str, Any]) -> str | None:
        """Why ``entry`` cannot be served (None: it can)."""
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except FileNotFoundError:
            return "missing"
        except (OSError, ValueError) as exc:
            return f"unreadable manifest ({exc})"
        if not isinstance(manifest, dict):
            return "unreadable manifest (not an object)"
        stale = {k: manifest.get(k) for k, v in identity.items() if manifest.get(k) != v}
        if stale:
            return f"stale (built for {stale}, need { ({k: identity[k] for k in stale}) })"
        model = entry / MODEL
        if not model.is_file():
            return "model file missing"
        if model.stat().st_size != manifest.get("bytes"):
            return f"model file has {model.stat().st_size} bytes, manifest says {manifest.get('bytes')}"
        if file_sha256(model) != manifest.get("sha256"):
            return "model file does not match its checksum"
        return None

    def path(self, backbone: Exportable, variant: str) -> Path:
        """A verified ``model.onnx`` of ``backbone`` in ``variant``, exported first if need be."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown ONNX variant {variant!r}; choose one of {list(VARIANTS)}")
        entry = self.entry(backbone, variant)
        identity = self.identity(backbone, variant)
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(entry.with_name(entry.name + ".lock")):
            problem = self.problem(entry, identity)
            if problem is None:
                return entry / MODEL
            if problem != "missing":
                log.warning("onnx export rejected; rebuilding", extra={"entry": entry.name, "reason": problem})
            self._build(backbone, variant, entry, identity)
        return entry / MODEL

    def _build(self, backbone: Exportable, variant: str, entry: Path, identity: dict[str, Any]) -> None:
        started = time.perf_counter()
        source = backbone.export_spec() if variant == "onnx" else self.path(backbone, "onnx")
        fusion = backbone.export_spec().fusion if variant == "onnx-fp16" else None
        tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build_variant(variant, source, tmp / MODEL, fusion=fusion)
            model = tmp / MODEL
            manifest = {
                **identity,
                "sha256": file_sha256(model),
                "bytes": model.stat().st_size,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tools": _versions(),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            shutil.rmtree(entry, ignore_errors=True)
            os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info(
            "onnx export built",
            extra={
                "entry": entry.name,
                "seconds": round(time.perf_counter() - started, 2),
                "bytes": (entry / MODEL).stat().st_size,
            },
        )
