"""bentofile.yaml (CPU) and deploy/bento/bentofile.gpu.yaml build real Bentos; what they hold; and
the Deployment's command, run on the built Bento, serves Graft. (No container engine runs here, so
`bentoml containerize` is not exercised: the Dockerfile it would use is checked instead.)"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.conftest import ROOT, free_port

from .conftest import BENTOFILES, one, render

SETUP_SCRIPT = ROOT / "deploy" / "bento" / "setup.sh"


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


CODE = ("service", "adapters", "client/graft")  # client/graft: the client distribution's package, `graft`


def test_bento_holds_the_service_the_adapters_and_the_migrations(bentos) -> None:
    files = bentos["cpu"].files()
    sources = {f.removeprefix("src/") for f in files if f.startswith("src/")}
    tracked = set(
        subprocess.run(["git", "ls-files", *CODE], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    )
    untracked = set(
        subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", *CODE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    wanted = {f for f in tracked | untracked if (ROOT / f).exists()}
    assert wanted <= sources, f"missing from the Bento: {sorted(wanted - sources)}"
    for needed in (
        "service/app.py",
        "service/store/migrations/env.py",
        "service/store/migrations/script.py.mako",
        "service/store/migrations/versions/0001_initial_schema.py",
        "adapters/heads/linear.py",
        "client/graft/schemas.py",
    ):
        assert needed in sources
    assert sources - wanted == {"bentofile.yaml"}, (
        f"unexpected files: {sorted(sources - wanted)}"
    )  # no tests, caches, weights
    assert {"bento.yaml", "env/docker/Dockerfile", "env/docker/entrypoint.sh", "env/python/requirements.txt"} <= files

    info = yaml.safe_load((bentos["cpu"].path / "bento.yaml").read_text())
    assert info["service"] == "service.app:Graft" and info["labels"]["variant"] == "cpu"
    assert info["models"] == []  # weights come in pip packages, nothing is fetched at start
    assert {e["name"]: e["value"] for e in info["envs"]}["HF_HUB_OFFLINE"] == "1"


def test_the_image_imports_the_client_package_from_the_bento(bentos, tmp_path) -> None:
    """The setup script's .pth line (the image's BENTO_PATH swapped for the built Bento's path) puts the
    Bento's client/graft on sys.path: `graft.schemas` is the Bento's copy, importable with the service's."""
    script = SETUP_SCRIPT.read_text()
    line = re.search(r'^echo "\$BENTO_PATH/(\S+)" > .*/graft-client\.pth"$', script, flags=re.M)
    assert line, "deploy/bento/setup.sh writes no graft-client.pth"
    folder = bentos["cpu"].path / line.group(1)
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "graft-client.pth").write_text(f"{folder}\n")
    code = (
        "import site, sys; site.addsitedir(sys.argv[1]); import graft.schemas, graft.client; "
        "print(graft.schemas.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == folder / "graft" / "schemas.py"
    dockerfile = (bentos["cpu"].path / "env" / "docker" / "Dockerfile").read_text()
    assert "ENV BENTO_PATH=" in dockerfile.split("script__", 1)[0], "the setup script runs before BENTO_PATH is set"


def pins(text: str) -> dict[str, str]:
    """name -> version of every ``name==version`` line of a requirements file."""
    return {name_of(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", text, flags=re.M)}


def test_the_cpu_bento_installs_the_lock_file(bentos) -> None:
    """The image installs exactly the CPU lock (every package at its version, with hashes), whose
    packages cover pyproject.toml's runtime dependencies; torch is the CPU wheel."""
    assert (
        yaml.safe_load(BENTOFILES["cpu"].read_text())["python"]["requirements_txt"] == "./requirements/runtime-cpu.txt"
    )
    lock = (ROOT / "requirements" / "runtime-cpu.txt").read_text()
    requirements = (bentos["cpu"].path / "env" / "python" / "requirements.txt").read_text()
    assert pins(requirements) == pins(lock)
    assert requirements.count("--hash=sha256:") == lock.count("--hash=sha256:") > 0
    assert pins(lock)["torch"].endswith("+cpu")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]["dependencies"]
    # graft-client itself is local (the Bento carries client/graft/); its dependencies are locked
    assert "graft-client" in {name_of(r) for r in project} and "graft-client" not in pins(lock)
    assert {name_of(r) for r in project + client} - {"graft-client"} <= set(pins(lock))
    assert any(line.startswith("--extra-index-url") and line.endswith("/whl/cpu") for line in requirements.splitlines())


def test_gpu_bento_swaps_in_the_gpu_runtimes_only(bentos) -> None:
    cpu, gpu = (yaml.safe_load(BENTOFILES[v].read_text()) for v in ("cpu", "gpu"))
    for key in ("service", "include", "exclude", "docker", "envs"):
        assert gpu[key] == cpu[key], key
    assert (
        gpu["python"]["requirements_txt"] == "./requirements/runtime-gpu.txt" and "extra_index_url" not in gpu["python"]
    )
    requirements = (bentos["gpu"].path / "env" / "python" / "requirements.txt").read_text()
    gpu_pins, cpu_pins = pins(requirements), pins((ROOT / "requirements" / "runtime-cpu.txt").read_text())
    assert "onnxruntime-gpu" in gpu_pins and "onnxruntime" not in gpu_pins and "whl/cpu" not in requirements
    assert gpu_pins["torch"] == cpu_pins["torch"].removesuffix("+cpu")  # PyPI's wheel: the CUDA build
    shared = set(cpu_pins) & set(gpu_pins) - {"torch"}
    assert {n: gpu_pins[n] for n in shared} == {n: cpu_pins[n] for n in shared}, (
        "the GPU lock drifted from the CPU lock"
    )
    assert set(cpu_pins) - {"onnxruntime"} <= set(gpu_pins)


def test_no_deps_packages_are_installed_after_the_others(bentos) -> None:
    """Packages the Makefile installs with --no-deps go into the image the same way, by the setup
    script (with the lock's hashes), which the Dockerfile runs after the requirements."""
    script = SETUP_SCRIPT.read_text()
    embedded = re.search(r"<<'REQUIREMENTS'\n(.*?)^REQUIREMENTS$", script, flags=re.M | re.S).group(1)
    assert embedded == (ROOT / "requirements" / "no-deps.txt").read_text()
    assert "uv pip install --no-deps --require-hashes" in script
    makefile = (ROOT / "Makefile").read_text()
    runtime = re.search(r"^RUNTIME_NO_DEPS := (.+)$", makefile, flags=re.M)
    assert runtime
    for word in shlex.split(runtime.group(1)):
        name, version = word.split("==")
        assert pins(embedded).get(name_of(name)) == version, (
            f"{word} is installed --no-deps by the Makefile but not by {SETUP_SCRIPT}"
        )
    dockerfile = (bentos["cpu"].path / "env" / "docker" / "Dockerfile").read_text()
    script_in_bento = next(
        p.name for p in (bentos["cpu"].path / "env" / "docker").iterdir() if p.name.startswith("script__")
    )
    assert (bentos["cpu"].path / "env" / "docker" / script_in_bento).read_text() == script
    assert dockerfile.index("requirements.txt") < dockerfile.index(script_in_bento)


def entrypoint(bento: Path) -> list[str]:
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    return yaml.safe_load(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, flags=re.M).group(1))


def image_bento_path(bento: Path) -> str:
    """Where the image puts the Bento (the Dockerfile's BENTO_PATH)."""
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    return re.search(r"^ARG BENTO_PATH=(\S+)$", dockerfile, flags=re.M).group(1)


def test_the_deployment_runs_the_images_entrypoint_as_its_user(bentos) -> None:
    dockerfile = (bentos["cpu"].path / "env" / "docker" / "Dockerfile").read_text()
    bento_path = image_bento_path(bentos["cpu"].path)
    uid = int(re.search(r"^ARG BENTO_USER_UID=(\d+)$", dockerfile, flags=re.M).group(1))
    for overlay in ("cpu", "gpu", "dev"):
        pod = one(render(overlay), "Deployment", "graft")["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["command"] == entrypoint(bentos["cpu"].path) == entrypoint(bentos["gpu"].path)
        assert c["command"][0].startswith(bento_path + "/")
        assert c["args"][0] == "serve"  # entrypoint.sh: `serve ...` runs `bentoml serve ... $BENTO_PATH`
        assert pod["securityContext"]["runAsUser"] == uid


@pytest.mark.integration
def test_the_deployments_command_serves_the_built_bento(bentos, tmp_path) -> None:
    """Run the Bento's own entrypoint.sh with the Deployment's command, args and environment (the
    ConfigMap, secrets filled in, the image's BENTO_PATH and scratch volumes mapped to local
    directories), from outside the source tree; the probes answer and SIGTERM stops it within the
    termination grace period."""
    docs = render("cpu")
    pod = one(docs, "Deployment", "graft")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    config = one(docs, "ConfigMap", c["envFrom"][0]["configMapRef"]["name"])["data"]
    env = {**config, **{e["name"]: e["value"] for e in c["env"] if "value" in e}}
    for mount in c["volumeMounts"]:  # each scratch volume becomes a temporary directory
        local = tmp_path / mount["name"]
        local.mkdir()
        env = {
            k: v.replace(mount["mountPath"], str(local), 1) if v.startswith(mount["mountPath"]) else v
            for k, v in env.items()
        }
    port = free_port()
    env.update(
        {
            "GRAFT_ADMIN_TOKEN": "bento-admin-token-0123456789abcdef",
            "GRAFT_DATABASE_URL": f"sqlite:///{tmp_path / 'graft.db'}",
            "BENTOML_PORT": str(port),
            "BENTO_PATH": str(bentos["cpu"].path),
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
        }
    )
    log = (tmp_path / "server.log").open("wb")
    command = [
        c["command"][0].replace(image_bento_path(bentos["cpu"].path), str(bentos["cpu"].path), 1),
        *c["command"][1:],
    ]
    proc = subprocess.Popen(
        [*command, *c["args"]], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    probe = c["startupProbe"]
    try:
        deadline = time.monotonic() + probe["periodSeconds"] * probe["failureThreshold"]
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-4000:]
            try:
                if httpx.get(url + probe["httpGet"]["path"], timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the startup probe never passed:\n" + (tmp_path / "server.log").read_text()[-4000:])
        assert httpx.get(url + c["livenessProbe"]["httpGet"]["path"], timeout=5).status_code == 200
        assert httpx.get(url + "/metrics", timeout=5).status_code == 200
        backbones = httpx.get(
            url + "/v1/tenants", headers={"Authorization": "Bearer bento-admin-token-0123456789abcdef"}, timeout=10
        )
        assert backbones.status_code == 200
        server_cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in server_cmd and str(bentos["cpu"].path).encode() in server_cmd  # entrypoint exec'd bentoml
        # the worker runs the Bento's copy of the code (its src/ is first on sys.path), not this checkout
        assert bentos["cpu"].path / "src" in {Path(w.cwd()) for w in psutil.Process(proc.pid).children(recursive=True)}
    finally:
        workers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends after the preStop hook
        try:
            proc.wait(pod["terminationGracePeriodSeconds"])
            stopped = True
        except subprocess.TimeoutExpired:
            stopped = False
        for p in [psutil.Process(proc.pid), *workers] if proc.poll() is None else workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()
    assert stopped, "did not stop within terminationGracePeriodSeconds"
