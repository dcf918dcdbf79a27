# Portrait — set-up, demo, tests. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
export PORTRAIT_ENV ?= local
PYTEST_ARGS ?=
# Tests run in two pytest-xdist workers, one test file per worker at a time (module fixtures stay whole).
# MARKS picks the tests: `make test` leaves out the `long` ones (backfill, broken day, Spark cluster),
# `make test-all` runs everything.
WORKERS ?= 2
MARKS ?= not long

.PHONY: help setup uv venv java jars secret demo test test-all test-fast up down clean-data

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

uv: ## install uv when it is missing
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || { \
	  echo "installing uv with pip"; $(PYTHON) -m pip install --quiet --disable-pip-version-check uv; }

venv: uv ## create .venv from the committed uv.lock (with the datasets extra: the public example data)
	@$(UV) sync --frozen --quiet --extra datasets

java: ## check that Java 17+ is present (Spark 4.2 needs it)
	@command -v java >/dev/null 2>&1 || [ -n "$$JAVA_HOME" ] || { \
	  echo "error: no Java found. Spark 4.2 needs Java 17 or 21: apt-get install openjdk-17-jre-headless, or set JAVA_HOME" >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "error: Java $$v found; Spark 4.2 needs Java 17 or 21 (set JAVA_HOME)" >&2; exit 1; fi

setup: venv java ## venv + Java check + Delta jars + local secret + Airflow database
	@$(BIN)/portrait setup

demo: setup ## generate sample data and run the whole DAG once with airflow dags test
	@$(BIN)/portrait demo

PYTEST := $(BIN)/pytest -n $(WORKERS) --dist loadfile

test: setup ## run the test suite (unit, DAG integrity, a real Airflow run end to end), about 30 min on 2 cores
	@$(PYTEST) $(if $(MARKS),-m "$(MARKS)") $(PYTEST_ARGS)

test-all: setup ## the test suite plus the long runs: backfill, broken day, Spark standalone cluster
	@$(PYTEST) $(PYTEST_ARGS)

test-fast: setup ## the tests without the slow end-to-end ones
	@$(PYTEST) -m "not slow" $(PYTEST_ARGS)

up: setup ## Airflow (http://localhost:8080) and MLflow (http://localhost:5000) UIs on this machine
	@$(BIN)/portrait up

down: ## stop what `make up` started
	@$(BIN)/portrait down

clean-data: ## delete generated data, lakehouse, MLflow store and Airflow home (keeps the venv)
	rm -rf data lakehouse mlruns .airflow
