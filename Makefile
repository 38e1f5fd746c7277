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
# The notebook check (workbench.nbcheck, a pytest plugin) executes every notebook and compares what
# each cell shows with its committed output: exactly, except the numbers nbconfig/tolerances.yaml
# gives a tolerance (each with its reason), and what its replace patterns erase (timings, progress bars).
NBCHECK := --nbcheck --nbcheck-tolerances nbconfig/tolerances.yaml
# Other numeric kernels than this machine's defaults, as another CPU would take: torch's portable
# kernels instead of its AVX2/AVX-512 ones, MKL and oneDNN held to AVX2 (a no-op on AVX2 CPUs), numpy's
# dispatched SIMD targets all off, and one thread instead of every core. The committed outputs must
# hold there too: that is what makes them portable, not one machine's digits.
# (workbench.nbcheck.kernel_variant holds the list; override with make test-kernels KERNEL_VARIANT="...").
KERNEL_VARIANT = $(shell $(PY) -m workbench.nbcheck)
# The notebooks' run folders under test go here, not into runs/.
TEST_RUNS := $(CURDIR)/.cache/test-runs

.PHONY: run test lint test-default test-units test-notebooks test-kernels lab bench pylate-env notebooks constraints clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)" uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -c constraints.txt -e ".[test,bench]"
	touch $@

# Pin what .venv holds now (after a change to pyproject.toml), so every clone computes the same outputs.
constraints: $(INSTALLED)
	{ sed -n '1,3p' constraints.txt; $(VENV)/bin/uv pip freeze --python $(PY) --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# A separate environment with PyLate (it pins sentence-transformers 5.x), used only for parity
# references. Best effort: when it cannot be built, the parity tests skip and say why.
$(PYLATE_INSTALLED): Makefile
	-( test -x $(PYLATE_VENV)/bin/python || $(PYTHON) -m venv $(PYLATE_VENV) ) && \
	  $(PYLATE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" uv && \
	  $(PYLATE_VENV)/bin/uv pip install --quiet --python $(PYLATE_VENV)/bin/python $(PYLATE_DEPS) && \
	  $(PYLATE_VENV)/bin/uv pip install --quiet --python $(PYLATE_VENV)/bin/python --no-deps "$(PYLATE)" && \
	  touch $@

pylate-env: $(PYLATE_INSTALLED)

# The main job: notebooks 01 to 09, headless, quick profile, into a new runs/<timestamp>.
run: $(INSTALLED)
	$(PY) -m workbench.pipeline --profile quick

# Every test: the lint; then the unit tests beside the notebooks under KERNEL_VARIANT (test-kernels),
# two processes at once, since the variant runs on one thread and the unit tests keep about one core
# busy; then the notebooks on this machine's kernels, alone, on every core. Each part's output is
# printed whole when it ends (--output-sync).
test: lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-units test-kernels
	$(MAKE) --no-print-directory test-notebooks

# ruff's linter, and its formatter in check mode (pyproject.toml [tool.ruff]); `ruff format` fixes what it reports.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check workbench tests benchmarks
	$(VENV)/bin/ruff format --check workbench tests benchmarks

# The unit tests and the notebooks on this machine's kernels, one after the other.
test-default: test-units test-notebooks

test-units: $(INSTALLED) $(PYLATE_INSTALLED)
	rm -rf $(TEST_RUNS)-units
	WORKBENCH_RUNS=$(TEST_RUNS)-units WORKBENCH_PYLATE_PYTHON=$(if $(wildcard $(PYLATE_INSTALLED)),$(PYLATE_VENV)/bin/python,) \
	  $(PY) -m pytest tests

test-notebooks: $(INSTALLED)
	rm -rf $(TEST_RUNS)
	WORKBENCH_RUNS=$(TEST_RUNS) $(PY) -m pytest notebooks $(NBCHECK)

# Notebook 09 is left out of this pass: it executes 03 and 06 again in a fork (the slowest notebook,
# and on one thread here), and this pass checks those two under these kernels itself; test-notebooks
# checks 09 on this machine's kernels.
test-kernels: $(INSTALLED)
	rm -rf $(TEST_RUNS)-kernels
	WORKBENCH_RUNS=$(TEST_RUNS)-kernels $(KERNEL_VARIANT) $(PY) -m pytest notebooks $(NBCHECK) \
	  --ignore=notebooks/09_compare_runs.ipynb

# Re-execute the committed notebooks in place (their outputs are what the notebook check compares with);
# ONLY="04 05" refreshes just those, against runs/latest.
notebooks: $(INSTALLED)
	$(PY) -m workbench.pipeline --refresh-committed $(if $(ONLY),--only $(ONLY),)

bench: $(INSTALLED) $(PYLATE_INSTALLED)
	WORKBENCH_PYLATE_PYTHON=$(if $(wildcard $(PYLATE_INSTALLED)),$(PYLATE_VENV)/bin/python,) \
	  $(PY) benchmarks/maxsim.py && $(PY) benchmarks/parity.py && $(PY) benchmarks/index.py && \
	  $(PY) benchmarks/evaluation.py && $(PY) benchmarks/training.py && $(PY) benchmarks/encode.py && \
	  $(PY) benchmarks/qdrant.py

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab --config=nbconfig/jupyter_lab_config.py

clean:
	rm -rf $(VENV) $(PYLATE_VENV) .cache runs
