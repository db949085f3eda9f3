# Two commands matter on a fresh clone: `make run` (the demo) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV ?= .venv
DJANGO ?= Django>=5.2,<5.3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint typecheck migrations pytest bench bench-peers clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' '$(DJANGO)'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python testproject/manage.py migrate --noinput
	$(BIN)/python testproject/manage.py runworkers -v 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Models and shipped migrations agree (no migration appears in a user's project).
migrations: $(STAMP)
	env -u DATABASE_URL $(BIN)/python testproject/manage.py makemigrations --check --dry-run

# The suite runs on SQLite, then again on PostgreSQL when DATABASE_URL is set and reachable.
pytest: $(STAMP)
	env -u DATABASE_URL $(BIN)/python -m pytest
	@if [ -n "$$DATABASE_URL" ]; then \
	  if $(BIN)/python tests/pg_reachable.py; then \
	    echo "== again on PostgreSQL ($$DATABASE_URL)"; \
	    $(BIN)/python -m pytest; \
	  else echo "== PostgreSQL at DATABASE_URL is not reachable: the PostgreSQL run is skipped"; exit 1; fi; \
	fi

test: lint typecheck migrations pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# The pool against one manage.py process per worker under supervisord (a few minutes).
bench-peers: $(STAMP)
	$(BIN)/python benchmarks/bench_peers.py

clean:
	rm -rf .venv .venv-* .mypy_cache .ruff_cache .pytest_cache
