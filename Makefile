# Two commands do all the set-up: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# pip reads torch from the machine's local index; the constraints file pins everything else.
PIP_INSTALL := $(PIP) install --disable-pip-version-check -q -c constraints.txt
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: install install-dev serve test lint typecheck pytest chromium peers bench train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A stamp per extra: the install reruns only when pyproject.toml or constraints.txt change.
$(VENV)/.stamp-runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.stamp-runtime

install: $(VENV)/.stamp-runtime
install-dev: $(VENV)/.stamp-dev

serve: install
	$(BIN)/cnn-serve --host $(HOST) --port $(PORT)

# Python sources only: the README's examples stay as tersely written.
PY_SOURCES := service models tests bench

lint: install-dev
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)

typecheck: install-dev
	$(BIN)/mypy

# The browser tests need Debian's Chromium: installed here when missing and possible.
chromium:
	@sh tests/browser/install-chromium.sh

pytest: install-dev chromium
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The peers' venvs, sharing our torch: bench/.venv-peers (TorchServe, LitServe, py-spy) and
# bench/.venv-triton (NVIDIA Triton through PyTriton).
peers: install-dev
	$(BIN)/python -m bench.peers.env

# The benchmark beside TorchServe, Triton, LitServe and a naive FastAPI server; writes
# bench/RESULTS.md. QUICK=1: short points, W2 without the precision variants;
# SERVERS=cnn-serve: ours alone.
bench: peers
	$(BIN)/python -m bench.run $(if $(QUICK),--quick) $(if $(SERVERS),--servers $(SERVERS))

train: install-dev
	$(BIN)/cnn-train

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
