# latephase: `make run` reproduces the paper's grokking demo, `make test` runs the tests.
# Both create .venv on first use.  `make run` installs what running needs (`pip install -e .`);
# `make test` adds the dev tools (`.[dev]`: pytest, ruff, mypy, Ray, TensorBoard, Lightning).
# torch is installed first, from TORCH_INDEX when given (see README, "Set-up"):
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu    # CPU build, no CUDA wheels
# Without TORCH_INDEX pip's own index is used (on Linux PyPI's torch is the CUDA build).

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
RUNTIME     := $(VENV)/.installed-runtime
DEV         := $(VENV)/.installed-dev
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_FROM  := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: install run test test-fast lint bench clean

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_FROM) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(DEV)

install: $(DEV)

run: $(RUNTIME)
	$(BIN)/latephase run --preset demo

test: $(DEV)
	$(BIN)/python -m pytest -q

test-fast: $(DEV)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(DEV)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

bench: $(RUNTIME)
	$(BIN)/latephase bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
