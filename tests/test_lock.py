"""Installs are reproducible: every package comes from a lock file with hashes, the lock covers what
pyproject.toml asks for, and the environment the tests run in is exactly the lock."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"


def name_of(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0]).lower()


def entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile lock file (requirements continue over backslashes)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        spec, *rest = line.split()
        name, version = spec.split("==")
        out[name_of(name)] = (version, [h.removeprefix("--hash=") for h in rest if h.startswith("--hash=")])
    return out


def test_every_locked_package_is_pinned_exactly_with_hashes() -> None:
    for lock in ("cpu.txt", "runtime-cpu.txt", "runtime-gpu.txt", "no-deps.txt", "no-deps-dev.txt"):
        found = entries(REQ / lock)
        assert found, lock
        for name, (version, hashes) in found.items():
            assert re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", version), f"{lock}: {name}=={version} is not an exact version"
            assert hashes and all(h.startswith("sha256:") for h in hashes), f"{lock}: {name} has no hash"


def test_the_locks_cover_pyproject_and_agree_with_each_other() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    runtime, dev, gpu = entries(REQ / "runtime-cpu.txt"), entries(REQ / "cpu.txt"), entries(REQ / "runtime-gpu.txt")
    # the client distribution is local (client/, `make install` installs it): never in a lock, its dependencies are
    assert "graft-client" in {name_of(r) for r in project["dependencies"]}
    assert not {"graft-client"} & (set(runtime) | set(dev) | set(gpu))
    assert {name_of(r) for r in project["dependencies"] + client["dependencies"]} - {"graft-client"} <= set(runtime)
    assert {name_of(r) for r in project["optional-dependencies"]["dev"]} <= set(dev)
    assert {n: v for n, (v, _) in runtime.items()} == {n: dev[n][0] for n in runtime}, "runtime and dev locks disagree"
    assert runtime["torch"][0] == "2.13.0+cpu"  # the CPU wheel on disk, never a resolved CUDA build


def test_the_makefile_installs_from_the_locks_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    install = makefile[makefile.index("$(STAMP):") : makefile.index("serve:")]
    pip_lines = [line.strip() for line in install.splitlines() if "$(PIP) install" in line]
    for line in pip_lines:
        assert (
            "--require-hashes" in line
            or re.search(r"--no-deps --no-build-isolation -e \.(/client)?$", line)
            or re.search(r"pip==\$\(PIP_VERSION\)", line)
        ), line
    # the client distribution (a local package the server depends on) before the server
    assert install.index("-e ./client") < install.index("-e .\n")
    no_deps = {**entries(REQ / "no-deps.txt"), **entries(REQ / "no-deps-dev.txt")}
    for variable in ("RUNTIME_NO_DEPS", "DEV_NO_DEPS"):
        for spec in re.search(rf"^{variable} := (.+)$", makefile, flags=re.M).group(1).split():
            name, version = spec.split("==")
            assert no_deps[name_of(name)][0] == version, f"{spec} is not in requirements/no-deps*.txt"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "pip install" not in ci


def test_the_locked_environment_is_consistent() -> None:
    """pip's own check: every installed package's requirements are met, except those of the packages
    installed with --no-deps on purpose (their metadata pins torch 1.6, numpy 1.19, ...)."""
    no_deps = {*entries(REQ / "no-deps.txt"), *entries(REQ / "no-deps-dev.txt")}
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout.splitlines()
    broken = [
        line for line in out if line.strip() and name_of(line.split()[0]) not in no_deps and "No broken" not in line
    ]
    assert not broken, broken


def test_the_environment_is_exactly_the_lock() -> None:
    """What is installed here is what the lock says (a stale venv or an unlocked install fails)."""
    locked = {**entries(REQ / "cpu.txt"), **entries(REQ / "no-deps.txt"), **entries(REQ / "no-deps-dev.txt")}
    wrong = {}
    for name, (version, _) in locked.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed versions differ from the lock (locked, installed): {wrong}"
