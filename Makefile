# Two commands on a fresh machine with Python 3.11+: `make dev` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: dev demo test check lint chromium screenshots

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

## Debian's Chromium for the browser tests: installed when missing and we are root (else the
## browser tests are skipped, saying why; in CI a missing browser is a failure).
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
		else echo "no chromium and not root: the browser tests will be skipped"; fi; \
	fi

## Set up, then lint, type-check and run the tests (embedded Postgres; again on 127.0.0.1:5432
## for the Postgres tests when that server answers, as in CI).
test: lint chromium
	EXTRACTION_REQUIRE_BROWSER=$${EXTRACTION_REQUIRE_BROWSER:-$${CI:+1}} $(BIN)/pytest
	@url=$$($(BIN)/python scripts/local_pg_url.py); \
	if [ -n "$$url" ]; then \
		echo "Postgres tests again against $$url"; \
		EXTRACTION_TEST_PG_URL=$$url $(BIN)/pytest -m postgres; \
	else echo "no server on 127.0.0.1:5432: Postgres tests ran on the embedded server only"; fi

check: test

## Refresh the UI pictures in docs/ that README shows (the browser tests, writing into docs/).
screenshots: $(INSTALLED) chromium
	EXTRACTION_SCREENSHOTS_DIR=$(CURDIR)/docs EXTRACTION_REQUIRE_BROWSER=1 $(BIN)/pytest extraction_pipeline_tests/browser
