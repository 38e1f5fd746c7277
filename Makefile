# Two commands do all the set-up: `make run` (the main job) and `make test` (every test).
# Each creates .venv when missing and reinstalls only when pyproject.toml changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYLATE_VENV := .venv-pylate
PYLATE_INSTALLED := $(PYLATE_VENV)/.installed
# torch first, pinned: a bare `torch` requirement lets pip pick a multi-GB CUDA build.
TORCH := torch==2.13.0
# PyLate 1.6.0 without its PLAID extras (fast-plaid pins a CUDA torch build of several GB), and with
# voyager < 2.2 (PyLate 1.6.0 hands add_items a Python list, which voyager 2.2 rejects).
PYLATE_DEPS := "sentence-transformers==5.3.0" "transformers>=4.41,<=5.3.0" datasets accelerate pandas "ujson==5.12.0" "voyager<2.2"
PYLATE := pylate==1.6.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export UV_LINK_MODE ?= copy

.PHONY: run test test-full lab bench pylate-env clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)" uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -e ".[test,bench]"
	touch $@

# A separate environment with PyLate (it pins sentence-transformers 5.x), used only for parity
# references. Best effort: when it cannot be built, the parity tests skip and say why.
$(PYLATE_INSTALLED): Makefile
	-( test -x $(PYLATE_VENV)/bin/python || $(PYTHON) -m venv $(PYLATE_VENV) ) && \
	  $(PYLATE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" uv && \
	  $(PYLATE_VENV)/bin/uv pip install --quiet --python $(PYLATE_VENV)/bin/python $(PYLATE_DEPS) && \
	  $(PYLATE_VENV)/bin/uv pip install --quiet --python $(PYLATE_VENV)/bin/python --no-deps "$(PYLATE)" && \
	  touch $@

pylate-env: $(PYLATE_INSTALLED)

run: $(INSTALLED)
	$(PY) -m workbench.demo

test: $(INSTALLED) $(PYLATE_INSTALLED)
	WORKBENCH_PYLATE_PYTHON=$(if $(wildcard $(PYLATE_INSTALLED)),$(PYLATE_VENV)/bin/python,) \
	  $(PY) -m pytest -m "not slow"

test-full: $(INSTALLED) $(PYLATE_INSTALLED)
	WORKBENCH_PYLATE_PYTHON=$(if $(wildcard $(PYLATE_INSTALLED)),$(PYLATE_VENV)/bin/python,) \
	  $(PY) -m pytest

bench: $(INSTALLED) $(PYLATE_INSTALLED)
	WORKBENCH_PYLATE_PYTHON=$(if $(wildcard $(PYLATE_INSTALLED)),$(PYLATE_VENV)/bin/python,) \
	  $(PY) benchmarks/maxsim.py && $(PY) benchmarks/parity.py && $(PY) benchmarks/index.py && \
	  $(PY) benchmarks/evaluation.py && $(PY) benchmarks/training.py

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab --notebook-dir=.

clean:
	rm -rf $(VENV) $(PYLATE_VENV) .cache runs
