# churnsite: `make demo` runs the site with demo data; `make test` runs `make lint`, then the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEMO_PARTNERS ?= 3000
PG_URL ?= postgres://postgres@127.0.0.1:5432/churnsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo test venv services browser lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

browser:
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium"; exit 1; }; }

services:
	@bash scripts/services.sh

# CI (.ci/run) calls `make test` only, so the static checks run first (and fail fast), before the suite.
test: venv lint browser services
	DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	@bash scripts/sqlite_smoke.sh $(PY)

demo: venv
	@bash scripts/demo.sh $(PY) $(PORT) $(DEMO_PARTNERS)

# Static checks, all of them (`make test` runs them before the tests): style, formatting, migrations in
# step with the models, types (mypy + django-stubs), the import contracts in pyproject.toml, and
# scripts/check_modules.py (no module-level import cycle, module sizes, function-local imports).
LINT_ENV := DATABASE_URL=sqlite://:memory: REDIS_URL= SECRET_KEY=lint-only-not-a-secret
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(LINT_ENV) $(PY) manage.py makemigrations --check --dry-run
	$(LINT_ENV) $(PY) -m mypy
	$(LINT_ENV) $(VENV)/bin/lint-imports
	$(PY) scripts/check_modules.py

clean:
	rm -rf $(VENV) db.sqlite3 media staticfiles
