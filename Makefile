# Two commands on a fresh machine: `make demo` (the server, end to end) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help demo test bench clean

## help: list these targets
help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: install, start the MCP server over stdio and call generate_image (offline sandbox when no key is set)
demo: $(STAMP)
	$(BIN)/flux-klein-mcp demo

## test: install, then lint, type-check and run the test suite
test: $(STAMP)
	$(BIN)/ruff check server tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto

## bench: install, then time the server against its floors side by side (BENCH_ARGS="--quick", "--json out.json")
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## clean: remove the virtual environment and build files (output/ is yours and stays)
clean:
	rm -rf $(VENV) build *.egg-info server/*.egg-info
