# Two commands for a newcomer: `make demo` (the example DAG, retried over real SSH) and `make test`.
# Everything else here is what those two need, plus `make pyz` and `make bench`.

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_CONSTRAINTS ?= constraints/airflow-3.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The provider is also tested against Airflow 2 (the 2.11 line; what MWAA runs), in a venv of its own.
VENV_AF2 ?= .venv-airflow2
STAMP_AF2 := $(VENV_AF2)/.installed
# Airflow 2.10 (what MWAA runs; the SSH provider resolves to 4.x there): `make test-airflow210`, not part of CI.
VENV_AF210 ?= .venv-airflow210
STAMP_AF210 := $(VENV_AF210)/.installed

.PHONY: all venv lint format test test-cli test-reference test-airflow2 test-airflow210 test-pythons demo pyz bench faults dist dist-check docs clean

all: test

$(STAMP): pyproject.toml $(AIRFLOW_CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(AIRFLOW_CONSTRAINTS) -e '.[test,airflow,live,docs]'
	touch $(STAMP)

venv: $(STAMP)

$(STAMP_AF2): pyproject.toml constraints/airflow-2.11.txt
	$(PYTHON) -m venv $(VENV_AF2)
	$(VENV_AF2)/bin/python -m pip install -q --upgrade pip
	$(VENV_AF2)/bin/python -m pip install -q -c constraints/airflow-2.11.txt -e '.[test,airflow]'
	touch $(STAMP_AF2)

## The whole suite: CLI, provider and faults on Airflow 3 with real sshd; the provider again on Airflow 2.11;
## then the CLI under the oldest and newest Python, and orchesjob 1.1.0's own tests against this CLI.
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-airflow2
	$(MAKE) --no-print-directory test-pythons
	$(MAKE) --no-print-directory test-reference

## ruff (lint and format check) and mypy (types; strict for orchesjob/), as configured in pyproject.toml.
## `make test` runs it first; `make format` rewrites the tree in ruff's format.
LINTED := orchesjob orchesjob_provider tests bench tools dags_examples
lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format $(LINTED)

test-airflow2: $(STAMP_AF2)
	$(VENV_AF2)/bin/python -m pytest -q -p no:cacheprovider tests/provider

$(STAMP_AF210): pyproject.toml constraints/airflow-2.10.txt
	$(PYTHON) -m venv $(VENV_AF210)
	$(VENV_AF210)/bin/python -m pip install -q --upgrade pip
	$(VENV_AF210)/bin/python -m pip install -q -c constraints/airflow-2.10.txt -e '.[test,airflow]'
	touch $(STAMP_AF210)

test-airflow210: $(STAMP_AF210)
	$(VENV_AF210)/bin/python -m pytest -q -p no:cacheprovider tests/provider

## The documentation site (docs/, mkdocs.yml) into build/site; --strict: a broken link or anchor fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-cli: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/cli

## orchesjob 1.1.0's own CLI tests (its sdist, fetched with pip into a temp dir) against this CLI; the deliberate
## differences are skipped with their reasons from tests/reference/divergences.txt.
test-reference: $(STAMP)
	PY=$(PY) bash tools/test_reference.sh

## The CLI tests under other interpreters (pyenv's oldest 3.9 and newest 3.13 here); says what it skipped.
test-pythons:
	bash tools/test-other-pythons.sh

demo: $(STAMP)
	$(PY) tools/demo.py

## The sdist and the wheel in dist/; `make dist-check` then checks them as a user receives them (tools/check_dist.sh).
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist . >/dev/null
	@ls dist

dist-check: dist
	bash tools/check_dist.sh $(PY) $(AIRFLOW_CONSTRAINTS)

pyz:
	$(PYTHON) tools/build_pyz.py orchesjob.pyz

bench: $(STAMP)
	$(PY) bench/run.py

## The fault suite with its full trial counts (CI runs it with smaller ones as part of `make test`).
faults: $(STAMP)
	ORCHESJOB_FAULT_TRIALS=100 $(PY) -m pytest -q -p no:cacheprovider tests/faults

clean:
	rm -rf $(VENV) $(VENV_AF2) $(VENV_AF210) .venv-3.* build dist *.egg-info orchesjob.pyz .pytest_cache .mypy_cache .ruff_cache .demo
