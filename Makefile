# Two commands for a newcomer: `make demo` (the example DAG, retried over real SSH) and `make test`.
# Everything else here is what those two need, plus `make pyz` and `make bench`.

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_CONSTRAINTS ?= constraints/airflow-3.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv test test-cli test-pythons demo pyz bench faults clean

all: test

$(STAMP): pyproject.toml $(AIRFLOW_CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(AIRFLOW_CONSTRAINTS) -e '.[test,airflow]'
	touch $(STAMP)

venv: $(STAMP)

## The whole suite: CLI, provider against real sshd and real Airflow, then the CLI under the oldest and newest Python.
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-pythons

test-cli: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/cli

## The CLI tests under other interpreters (pyenv's oldest 3.9 and newest 3.13 here); says what it skipped.
test-pythons:
	bash tools/test-other-pythons.sh

demo: $(STAMP)
	$(PY) dags_examples/demo.py

pyz:
	$(PYTHON) tools/build_pyz.py orchesjob.pyz

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info orchesjob.pyz .pytest_cache .demo
