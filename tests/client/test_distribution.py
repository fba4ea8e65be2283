"""The client is a distribution of its own (client/, `graft-client`): its wheel asks for httpx and pydantic
only, and installed into a clean virtualenv (the wheel plus those two and their dependencies, at the
lock's versions and hashes) it works, `graft` command included, with no torch, BentoML, transformers or
onnxruntime anywhere in that environment."""

from __future__ import annotations

import email
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.test_lock import entries, name_of

CLIENT = ROOT / "client"
ALLOWED = {"httpx", "pydantic"}
HEAVY = {"torch", "bentoml", "transformers", "onnxruntime", "onnxruntime-gpu", "fastapi", "sqlalchemy", "tqdm", "numpy"}


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[-3000:])
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps --no-build-isolation ./client`: the lock's setuptools, nothing fetched. Built
    from a copy, so setuptools' build/ folder never lands in (or goes stale in) the checkout."""
    source, out = tmp_path_factory.mktemp("client") / "client", tmp_path_factory.mktemp("wheel")
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source)
    (found,) = out.glob("graft_client-*.whl")
    return found


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def closure(roots: set[str]) -> set[str]:
    """``roots`` and everything they require (no extras, markers for this interpreter), by the installed
    metadata of this environment, which is the lock (tests/test_lock.py)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(name_of(requirement.name))
    return seen


def test_the_wheel_requires_httpx_and_pydantic_only(wheel) -> None:
    info = wheel_metadata(wheel)
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert info["Name"] == "graft-client" and info["Version"] == project["version"]
    requires = [Requirement(r) for r in info.get_all("Requires-Dist") or []]
    assert {name_of(r.name) for r in requires} == ALLOWED and all(r.marker is None for r in requires), requires
    # the same ranges the server's pyproject.toml had for them
    assert {name_of(r.name): str(r.specifier) for r in requires} == {"httpx": ">=0.27", "pydantic": ">=2.6"}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        packaged = {n for n in names if not n.startswith("graft_client-")}
        sources = {str(p.relative_to(CLIENT)) for p in (CLIENT / "graft").glob("*.py")}
        assert packaged == sources, "the wheel holds exactly client/graft/*.py (nothing of the server)"
        for name in sources:
            assert archive.read(name) == (CLIENT / name).read_bytes(), name
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "graft = graft.cli:main" in archive.read(entry_points).decode()


def test_a_clean_virtualenv_gets_a_working_client_and_nothing_heavy(wheel, tmp_path) -> None:
    needed = closure(ALLOWED)
    assert not needed & HEAVY, needed
    locked = entries(ROOT / "requirements" / "cpu.txt")
    assert needed <= set(locked), f"not in the lock: {needed - set(locked)}"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "".join(
            f"{name}=={locked[name][0]} " + " ".join(f"--hash={h}" for h in locked[name][1]) + "\n"
            for name in sorted(needed)
        )
    )
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # every package at the lock's version and hash, none resolved: --no-deps throughout
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--require-hashes", "-r", requirements)
    run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)
    run(python, "-m", "pip", "check")  # the closure above was complete: every requirement is met

    installed = {name_of(p["name"]) for p in json.loads(run(python, "-m", "pip", "list", "--format=json").stdout)}
    assert installed - {"pip", "setuptools"} == needed | {"graft-client"}, installed
    assert not installed & HEAVY

    # outside the checkout, so `graft` can only come from the installed wheel
    code = (
        "import graft, graft.cli, graft.errors, graft.schemas; c = graft.Graft('http://127.0.0.1:9', 'key'); "
        "print(graft.__file__, type(c).__name__); c.close()"
    )
    answer = run(python, "-c", code, cwd=tmp_path).stdout.split()
    assert answer[1] == "Graft" and Path(answer[0]).is_relative_to(venv), answer
    usage = run(venv / "bin" / "graft", "--help", cwd=tmp_path).stdout
    assert usage.startswith("usage: graft") and "tasks" in usage and "predict" in usage
