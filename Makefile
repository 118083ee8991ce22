# Two commands on a fresh machine with Python 3.11+: `make dev` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: dev demo test check lint

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

## Set up, then run the Dagster UI, daemon, sensor and schedules (embedded Postgres by default).
dev: $(INSTALLED)
	$(BIN)/extraction-pipeline dev

## Copy sample invoices into the drop folder of a running `make dev`.
demo: $(INSTALLED)
	$(BIN)/extraction-pipeline demo

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Set up, then lint, type-check and run the tests (embedded Postgres; again on 127.0.0.1:5432
## for the Postgres tests when that server answers, as in CI).
test: lint
	$(BIN)/pytest
	@url=$$($(BIN)/python scripts/local_pg_url.py); \
	if [ -n "$$url" ]; then \
		echo "Postgres tests again against $$url"; \
		EXTRACTION_TEST_PG_URL=$$url $(BIN)/pytest -m postgres; \
	else echo "no server on 127.0.0.1:5432: Postgres tests ran on the embedded server only"; fi

check: test
