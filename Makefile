# Two commands on a fresh machine: `make demo` (the server, end to end) and `make test`;
# `make test-clients` then runs the installed server under real MCP clients (clients/).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What is installed: the server alone (make demo), or the server and the test toolchain (make test).
SERVER := $(VENV)/.installed-server
TOOLS  := $(VENV)/.installed-tools
MCPB   := npx -y @anthropic-ai/mcpb@2.1.2

# A .venv made by another Python (another version, a moved or deleted interpreter) fails in odd ways: rebuild it.
WANTED := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
HAVE   := $(shell [ -d $(VENV) ] && { $(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
                  2>/dev/null || echo broken; })
ifneq ($(HAVE),)
ifneq ($(HAVE),$(WANTED))
$(info .venv was made by another Python ($(HAVE), this one is $(WANTED)): making it again.)
$(shell rm -rf $(VENV))
endif
endif

# The clients' own environments: the agent frameworks (and uv), langchain-mcp-adapters (it pins mcp<2), npm tools.
CLIENT_TOOLS := .venv-clients/.installed .venv-langchain/.installed clients/npm/node_modules/.installed

.PHONY: help demo test test-postgres test-view test-clients test-http test-oauth bench bundle clean

## help: list these targets
help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'

$(VENV)/pyvenv.cfg:
	@echo "Creating .venv with $$($(PYTHON) --version) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVER): pyproject.toml setup.py | $(VENV)/pyvenv.cfg
	@echo "Installing flux-klein-mcp and what it needs into .venv (once; about a minute) ..."
	$(BIN)/python -m pip install --quiet --progress-bar off -e .
	touch $(SERVER)

$(TOOLS): pyproject.toml setup.py $(SERVER)
	@echo "Installing the test toolchain into .venv (once) ..."
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[test]'
	touch $(TOOLS)

## demo: install the server, start it over stdio and call generate_image (offline sandbox when no key is set)
demo: $(SERVER)
	$(BIN)/flux-klein-mcp demo

## test: install the server and the test toolchain, then lint, type-check and run the test suite
test: $(TOOLS)
	$(BIN)/ruff check server tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto -m "not postgres"

## test-postgres: the ledger's suite on PostgreSQL: starts a throw-away server (Debian's postgresql), runs, stops it
test-postgres: $(TOOLS)
	$(BIN)/python -m tests.pg_cluster -- $(BIN)/python -m pytest -n auto -m postgres

## test-view: the MCP Apps view in headless Chromium, under the official host bridge and in the MCP Inspector web app
test-view: $(TOOLS) $(VENV)/.installed-browser build/browser/host.js build/browser/host.html \
           browser/inspector/node_modules/.installed
	$(BIN)/ruff check browser
	FLUX_KLEIN_SCREENSHOTS=$(or $(SCREENSHOTS),build/browser) $(BIN)/python -m pytest browser -p no:xdist

$(VENV)/.installed-browser: browser/requirements.txt $(SERVER)
	$(BIN)/python -m pip install --quiet --progress-bar off -r browser/requirements.txt
	touch $@

# The host page: the official AppBridge (@modelcontextprotocol/ext-apps, pinned in package-lock.json) + our harness.
browser/host/node_modules/.installed: browser/host/package.json browser/host/package-lock.json
	cd browser/host && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A real MCP Apps host: the MCP Inspector web app, with the Node 22 it needs (the `node` package brings it from the npm
# registry; Debian's is older). Both pinned in package-lock.json; the machine's own node is left as it is.
browser/inspector/node_modules/.installed: browser/inspector/package.json browser/inspector/package-lock.json
	cd browser/inspector && npm ci --no-audit --no-fund --loglevel=error
	touch $@

build/browser/host.js: browser/host/host.js browser/host/node_modules/.installed
	mkdir -p build/browser
	browser/host/node_modules/.bin/esbuild $< --bundle --minify --format=iife --target=es2022 --log-level=warning \
	  --outfile=$@

build/browser/host.html: browser/host/host.html
	mkdir -p build/browser && cp $< $@

## test-clients: after `make test`, the installed server under real MCP clients, each in its own venv (clients/)
test-clients: $(TOOLS) $(CLIENT_TOOLS)
	$(BIN)/ruff check clients
	$(BIN)/mypy --strict --cache-dir .mypy_cache/clients clients/common.py clients/run.py clients/check_sdk.py \
	  clients/check_fastmcp.py clients/check_inspector.py clients/check_packaging.py
	$(BIN)/mypy --strict --cache-dir .mypy_cache/agents --python-executable .venv-clients/bin/python \
	  clients/check_openai_agents.py clients/check_pydantic_ai.py
	$(BIN)/mypy --strict --cache-dir .mypy_cache/langchain --python-executable .venv-langchain/bin/python \
	  clients/check_langchain.py
	$(BIN)/python -m clients.run

## test-http: serve --http as deployed: SDK 1.x/2.x and LangChain clients, 2 replicas behind nginx, idle peers
# (docs/remote.md, "What was tested"; needs nginx - Debian's nginx-light - which the tests start on loopback, and
# PostgreSQL for the replicas' shared ledger, started like test-postgres does)
test-http: $(TOOLS) .venv-clients/.installed .venv-langchain/.installed
	$(BIN)/ruff check deployment
	$(BIN)/mypy --strict --cache-dir .mypy_cache/deployment deployment/nginx.py deployment/drivers/plan.py
	$(BIN)/mypy --strict --cache-dir .mypy_cache/langchain --python-executable .venv-langchain/bin/python \
	  deployment/drivers/sdk1.py deployment/drivers/langchain.py
	$(BIN)/mypy --strict --cache-dir .mypy_cache/agents --python-executable .venv-clients/bin/python \
	  deployment/drivers/sdk2.py
	$(BIN)/python -m tests.pg_cluster -- $(BIN)/python -m pytest deployment -p no:xdist

## test-oauth: sign-in against a real OpenID provider on loopback, the SDK's OAuth client, refused tokens, two people
# (oidc/: oidc-provider and the Node 22 it runs on, both from npm, pinned in package-lock.json)
test-oauth: $(TOOLS) oidc/node_modules/.installed
	$(BIN)/ruff check oidc
	$(BIN)/python -m pytest oidc -p no:xdist

oidc/node_modules/.installed: oidc/package.json oidc/package-lock.json
	cd oidc && npm ci --no-audit --no-fund --loglevel=error
	touch $@

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
bench: $(TOOLS)
	$(BIN)/python -m bench $(BENCH_ARGS)

## bundle: pack the MCP bundle for Claude Desktop, dist/flux-klein-mcp.mcpb (needs Node.js for npx)
# Only files git tracks go in (never a .venv, output images, caches or what a link points to), and no links.
BUNDLE_FILES = manifest.json pyproject.toml setup.py MANIFEST.in README.md SKILL.md references server
bundle:
	rm -rf build/bundle && mkdir -p build/bundle dist
	@git ls-files --error-unmatch $(BUNDLE_FILES) >/dev/null || { echo "make bundle: needs a git checkout"; exit 1; }
	@! git ls-files -s -- $(BUNDLE_FILES) | grep '^120000' || { echo "make bundle: refusing tracked links"; exit 1; }
	git ls-files -z -- $(BUNDLE_FILES) | xargs -0 tar -cf - | tar -xf - -C build/bundle
	$(MCPB) validate build/bundle/manifest.json
	$(MCPB) pack build/bundle dist/flux-klein-mcp.mcpb

## clean: remove the virtual environments and build files (output/ is yours and stays)
clean:
	rm -rf $(VENV) .venv-clients .venv-langchain clients/npm/node_modules browser/host/node_modules \
	  browser/inspector/node_modules oidc/node_modules build dist \
	  *.egg-info server/*.egg-info
