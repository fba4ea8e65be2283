#!/usr/bin/env bash
# `make lock`: refresh every lock file from pyproject.toml's ranges, with hashes (pip-tools).
#   runtime-cpu.txt  the service's dependencies, CPU torch (the wheel constraints/cpu.txt names)  -> bentofile.yaml
#   cpu.txt          runtime-cpu.txt + the dev extra (tests, deploy checks), same versions       -> make install, CI
#   runtime-gpu.txt  the service's dependencies for the GPU image: PyPI's CUDA torch and
#                    onnxruntime-gpu, every other package at runtime-cpu.txt's version           -> deploy/bento/bentofile.gpu.yaml
#   no-deps.txt,     packages installed with --no-deps (their metadata pins packages Graft does not use):
#   no-deps-dev.txt  the service's (also in the image: deploy/bento/setup.sh) and the tests' 
# Review the diff, run `make test` (and `make test-latest` to see what the next refresh brings), commit.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.venv-lock
PIP_TOOLS_VERSION=7.7.0
test -x "$TOOLS/bin/pip-compile" || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q "pip-tools==$PIP_TOOLS_VERSION"; }
COMPILE=("$TOOLS/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
         --no-header --annotation-style=line)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The client distribution (client/, `graft-client`) is a local package the server depends on: it is resolved from
# ./client, never looked up on an index, and its own line is dropped from the lock files (the Makefile installs
# `-e ./client`; the Bento carries client/graft/). Its dependencies (httpx, pydantic) are locked like the others.
# pip-tools keeps the local link only when this requirement comes first, so it is the first source file.
printf 'graft-client @ file://%s/client\n' "$PWD" > "$work/client.in"
local_client() {  # drop the local package's line (no hash) and pip-compile's warning that it has none
  python3 - "$@" <<'PY'
import re, sys
for path in sys.argv[1:]:
    text = open(path).read()
    warning = r"^# WARNING: pip install will require the following package to be hashed\.\n# Consider using .*\n"
    text = re.sub(warning + r"(?=graft-client @ )|^graft-client @ .*\n", "", text, flags=re.M)
    open(path, "w").write(text)
PY
}

# the service's runtime, CPU
"${COMPILE[@]}" --upgrade -c constraints/cpu.txt -o requirements/runtime-cpu.txt "$work/client.in" pyproject.toml
# + dev extra, the runtime versions kept
"${COMPILE[@]}" --upgrade -c constraints/cpu.txt -c requirements/runtime-cpu.txt --extra dev -o requirements/cpu.txt \
  "$work/client.in" pyproject.toml
local_client requirements/runtime-cpu.txt requirements/cpu.txt

# GPU image: resolved against the public index only (no local CPU wheels), torch and onnxruntime swapped
python3 - "$work" <<'PY'
import re, sys, tomllib
work = sys.argv[1]
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
name = lambda r: re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower()
torch = next(l.split("+")[0] for l in open("constraints/cpu.txt") if l.startswith("torch=="))
client = open(f"{work}/client.in").read().strip()  # first: see client.in above
lines = [client, torch, "onnxruntime-gpu"] + [
    d for d in deps if name(d) not in ("torch", "onnxruntime", "graft-client")
]
open(f"{work}/gpu.in", "w").write("\n".join(lines) + "\n")
# the CPU lock's versions as constraints (hashes dropped; torch and onnxruntime left out)
pins = [l.split(" ")[0] for l in open("requirements/runtime-cpu.txt") if re.match(r"^[A-Za-z0-9].*==", l)]
open(f"{work}/same.txt", "w").write("\n".join(p for p in pins if name(p) not in ("torch", "onnxruntime")) + "\n")
PY
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${COMPILE[@]}" --upgrade -c "$work/same.txt" -o requirements/runtime-gpu.txt "$work/gpu.in"
sed -i "s|$work/gpu.in|requirements/lock.sh (GPU)|; s|-c $work/same.txt|-c runtime-cpu.txt|" requirements/runtime-gpu.txt
local_client requirements/runtime-gpu.txt

# --no-deps packages: exact version and the hash of every file the index has for it
"$TOOLS/bin/python" - "$work" <<'PY'
import pathlib, re, subprocess, sys
work = pathlib.Path(sys.argv[1])
makefile = open("Makefile").read()
for variable, target in (("RUNTIME_NO_DEPS", "no-deps.txt"), ("DEV_NO_DEPS", "no-deps-dev.txt")):
    out = [f"# Installed with --no-deps (the Makefile's {variable}); written by requirements/lock.sh"]
    for spec in re.search(rf"^{variable} := (.+)$", makefile, flags=re.M).group(1).split():
        name, version = spec.split("==")
        dest = work / name
        subprocess.run([".venv-lock/bin/pip", "download", "--no-deps", "-q", "-d", str(dest), spec], check=True)
        hashes = [subprocess.run([".venv-lock/bin/pip", "hash", str(f)], capture_output=True, text=True, check=True)
                  .stdout.split("--hash=")[1].strip() for f in sorted(dest.iterdir())]
        out.append(f"{spec} \\\n" + " \\\n".join(f"    --hash={h}" for h in hashes))
    open(f"requirements/{target}", "w").write("\n".join(out) + "\n")
PY
# the image's --no-deps install (deploy/bento/setup.sh) embeds requirements/no-deps.txt
python3 - <<'PY'
import re
script = open("deploy/bento/setup.sh").read()
body = open("requirements/no-deps.txt").read()
script = re.sub(r"(<<'REQUIREMENTS'\n).*?(^REQUIREMENTS$)", lambda m: m.group(1) + body + m.group(2), script, flags=re.M | re.S)
open("deploy/bento/setup.sh", "w").write(script)
PY
echo "lock files written: requirements/{runtime-cpu,cpu,runtime-gpu,no-deps,no-deps-dev}.txt"
