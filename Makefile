# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck pytest bench clean

setup: $(STAMP) node_modules/.installed

# axe-core, which the accessibility test injects into Chromium; skipped where npm is missing.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the accessibility test will be skipped (apt-get install npm)"; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/newsletter demo --outbox ./outbox

lint: setup
	$(BIN)/ruff check newsletter subscribers tests benchmarks
	$(BIN)/ruff format --check newsletter subscribers tests benchmarks
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: setup
	$(BIN)/python benchmarks/send_throughput.py

clean:
	rm -rf $(VENV) node_modules outbox demo.db newsletter.db .pytest_cache .mypy_cache .ruff_cache
