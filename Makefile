# The README's two commands: `make quickstart` (the quickstart experiment end to end) and
# `make test` (the test suite). Both create .venv and install the project first when needed.
PYTHON ?= $(shell PYENV_VERSION=3.12.1 python3 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

quickstart: $(BIN)/.installed
	$(BIN)/nas validate experiments/quickstart.toml
	$(BIN)/nas run experiments/quickstart.toml
	$(BIN)/nas query runs/quickstart --budget latency_ms=0.05 --budget size_kb=8
	$(BIN)/nas query runs/quickstart --from predictors --budget size_kb=2 --measure

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs
