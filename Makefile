# Two commands on a fresh machine: `make demo` (the server, end to end) and `make test`;
# `make test-clients` then runs the installed server under real MCP clients (clients/).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The clients' own environments: the agent frameworks (and uv), langchain-mcp-adapters (it pins mcp<2), npm tools.
CLIENT_TOOLS := .venv-clients/.installed .venv-langchain/.installed clients/npm/node_modules/.installed

.PHONY: help demo test test-clients bench clean

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

## test-clients: after `make test`, the installed server under real MCP clients, each in its own venv (clients/)
test-clients: $(STAMP) $(CLIENT_TOOLS)
	$(BIN)/ruff check clients
	$(BIN)/mypy --strict --cache-dir .mypy_cache/clients clients/common.py clients/run.py clients/check_sdk.py \
	  clients/check_fastmcp.py clients/check_inspector.py clients/check_packaging.py
	$(BIN)/mypy --strict --cache-dir .mypy_cache/agents --python-executable .venv-clients/bin/python \
	  clients/check_openai_agents.py clients/check_pydantic_ai.py
	$(BIN)/mypy --strict --cache-dir .mypy_cache/langchain --python-executable .venv-langchain/bin/python \
	  clients/check_langchain.py
	$(BIN)/python -m clients.run

# One pinned requirements file per venv; a changed file rebuilds its venv from scratch.
.venv-%/.installed: clients/requirements-%.txt
	rm -rf .venv-$*
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

clients/npm/node_modules/.installed: clients/npm/package.json clients/npm/package-lock.json
	cd clients/npm && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## bench: install, then time the server against its floors side by side (BENCH_ARGS="--quick", "--json out.json")
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## clean: remove the virtual environments and build files (output/ is yours and stays)
clean:
	rm -rf $(VENV) .venv-clients .venv-langchain clients/npm/node_modules build *.egg-info server/*.egg-info
