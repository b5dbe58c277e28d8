# Two commands for a newcomer: `make demo` (the example DAG, retried over real SSH) and `make test`.
# Everything else here is what those two need, plus `make pyz` and `make bench`.

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_CONSTRAINTS ?= constraints/airflow-3.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Venvs are made with uv (pinned here, installed into a venv of its own by the Makefile): with a constraints file
# it installs Airflow in seconds where pip takes minutes. UV_NATIVE_TLS: trust the machine's CA store like pip does.
UV_VERSION := 0.13.9
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
export UV_NATIVE_TLS := 1
export UV_PYTHON_DOWNLOADS := never

# The Airflow versions the provider is tested against, each with its own constraints and Python: the newest 3.x and
# 2.11 with the whole provider suite, Amazon MWAA's 3.0.6 and 2.10.3 with the `versions` subset (every example DAG,
# deferral, the kill decision, the connection type, provider discovery) and, for 3.0.6, the live tests of its own
# code path. tools/compat_matrix.py and tests/tools/test_compat_matrix.py read these three lines per version.
AIRFLOW_MAIN_VERSION := 3.3.2
AIRFLOW_MAIN_PYTHON := 3.11
AIRFLOW_MAIN_CONSTRAINTS := $(AIRFLOW_CONSTRAINTS)
AIRFLOW_211_VERSION := 2.11.2
AIRFLOW_211_PYTHON := 3.11
AIRFLOW_211_CONSTRAINTS := constraints/airflow-2.11.txt
AIRFLOW_306_VERSION := 3.0.6
AIRFLOW_306_PYTHON := 3.12
AIRFLOW_306_CONSTRAINTS := constraints/airflow-3.0.6-py3.12.txt
AIRFLOW_2103_VERSION := 2.10.3
AIRFLOW_2103_PYTHON := 3.11
AIRFLOW_2103_CONSTRAINTS := constraints/airflow-2.10.3.txt

VENV_AF2 ?= .venv-airflow2
STAMP_AF2 := $(VENV_AF2)/.installed
VENV_AF306 ?= .venv-airflow306
STAMP_AF306 := $(VENV_AF306)/.installed
VENV_AF2103 ?= .venv-airflow2103
STAMP_AF2103 := $(VENV_AF2103)/.installed
# MWAA's constraints are Airflow's own, which pin no test tools (the project's pins clash with them): these venvs get
# the runtime extra and the test runner only. MWAA's image has the FAB provider, and so does its 3.0.6 venv here.
MWAA_TEST_TOOLS := pytest pytest-timeout hypothesis

.PHONY: all venv lint format test test-fast test-cli test-reference test-airflow2 test-airflow306 test-airflow2103 \
	test-live306 test-pythons test-stages compat-docs demo pyz bench faults dist dist-check docs clean

all: test

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# $(call make_venv,DIR,PYTHON,CONSTRAINTS,PACKAGES): a fresh venv (with pip, for tools that call it) and its packages.
define make_venv
	rm -rf $(1)
	$(UV) venv -q --seed -p $(2) $(1)
	$(UV) pip install -q -p $(1)/bin/python -c $(3) $(4)
	touch $(1)/.installed
endef

# The project with its extras (variables: a comma in $(call ...)'s arguments would split them). The live suite needs
# the `live` extra (Celery, PostgreSQL and Redis clients), also in the 3.0.6 venv whose live tests run there.
PROJECT_ALL := -e '.[test,airflow,live,docs]'
PROJECT_LIVE := -e '.[airflow,live]'
PROJECT_TEST := -e '.[test,airflow]'

$(STAMP): pyproject.toml $(AIRFLOW_CONSTRAINTS) | $(UV)
	$(call make_venv,$(VENV),$(PYTHON),$(AIRFLOW_CONSTRAINTS),$(PROJECT_ALL))

venv: $(STAMP)

$(STAMP_AF2): pyproject.toml $(AIRFLOW_211_CONSTRAINTS) | $(UV)
	$(call make_venv,$(VENV_AF2),$(PYTHON),$(AIRFLOW_211_CONSTRAINTS),$(PROJECT_TEST))

$(STAMP_AF306): pyproject.toml $(AIRFLOW_306_CONSTRAINTS) | $(UV)
	$(call make_venv,$(VENV_AF306),$$(tools/find-python.sh $(AIRFLOW_306_PYTHON) $(UV)),$(AIRFLOW_306_CONSTRAINTS),\
	  apache-airflow==$(AIRFLOW_306_VERSION) apache-airflow-providers-fab $(PROJECT_LIVE) $(MWAA_TEST_TOOLS))

$(STAMP_AF2103): pyproject.toml $(AIRFLOW_2103_CONSTRAINTS) | $(UV)
	$(call make_venv,$(VENV_AF2103),$$(tools/find-python.sh $(AIRFLOW_2103_PYTHON) $(UV)),$(AIRFLOW_2103_CONSTRAINTS),\
	  apache-airflow==$(AIRFLOW_2103_VERSION) -e '.[airflow]' $(MWAA_TEST_TOOLS))

## The whole suite, after `make lint`: the CLI, faults, provider and live tests on Airflow 3.3; the whole provider
## suite on Airflow 2.11; the `versions` subset on MWAA's Airflow 3.0.6 (Python 3.12) and 2.10.3, and the 3.0.6 live
## tests; the CLI under the oldest and newest Python; orchesjob 1.1.0's own tests against this CLI.
## The stages run two at a time (JOBS=1 for one at a time); each one's output is kept and printed when all are over,
## with how long each took (tools/stage.sh, tools/stages.py); records of what ran go to build/compat/. Every venv is
## made before the first stage starts, so the two longest stages do start first and the short ones fill the other
## slot as it frees up.
JOBS ?= 2
STAGES := main-provider airflow211 main-live airflow306 main-faults live306 airflow2103 main-cli python39 python313 reference
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	rm -rf build/stages build/compat
	$(MAKE) --no-print-directory -j$(JOBS) $(STAMP_AF2) $(STAMP_AF306) $(STAMP_AF2103)
	$(MAKE) --no-print-directory -k -j$(JOBS) $(addprefix stage-,$(STAGES))
	$(PY) tools/stages.py $(STAGES)

PYTEST := -m pytest -q -p no:cacheprovider
# $(call record,STAGE,VENV PYTHON,CONSTRAINTS,TESTS,EXECUTOR): what a stage ran, for docs/compatibility.md
record = $(PY) tools/compat_matrix.py record --stage $(1) --python $(2) --constraints $(3) --tests '$(4)' --executor '$(5)'

stage-main-provider: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) tests/provider
	$(call record,$(@:stage-%=%),$(PY),$(AIRFLOW_MAIN_CONSTRAINTS),provider: all,airflow dags test / tasks test)
stage-main-cli: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) tests/cli tests/tools tests/release
stage-main-faults: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) tests/faults
stage-main-live: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) tests/live
	$(call record,$(@:stage-%=%),$(PY),$(AIRFLOW_MAIN_CONSTRAINTS),live: all,CeleryExecutor)
stage-airflow211: $(STAMP_AF2)
	tools/stage.sh $(@:stage-%=%) $(VENV_AF2)/bin/python $(PYTEST) tests/provider
	$(call record,$(@:stage-%=%),$(VENV_AF2)/bin/python,$(AIRFLOW_211_CONSTRAINTS),provider: all,airflow dags test / tasks test)
stage-airflow306: $(STAMP_AF306)
	tools/stage.sh $(@:stage-%=%) $(VENV_AF306)/bin/python $(PYTEST) -m versions tests/provider
	$(call record,$(@:stage-%=%),$(VENV_AF306)/bin/python,$(AIRFLOW_306_CONSTRAINTS),provider: versions,airflow dags test / tasks test)
stage-airflow2103: $(STAMP_AF2103)
	tools/stage.sh $(@:stage-%=%) $(VENV_AF2103)/bin/python $(PYTEST) -m versions tests/provider
	$(call record,$(@:stage-%=%),$(VENV_AF2103)/bin/python,$(AIRFLOW_2103_CONSTRAINTS),provider: versions,airflow dags test / tasks test)
stage-live306: $(STAMP_AF306)
	tools/stage.sh $(@:stage-%=%) $(VENV_AF306)/bin/python $(PYTEST) -m versions tests/live
	$(call record,$(@:stage-%=%),$(VENV_AF306)/bin/python,$(AIRFLOW_306_CONSTRAINTS),live: versions,CeleryExecutor)
stage-python39:
	tools/stage.sh $(@:stage-%=%) bash tools/test-other-pythons.sh 3.9
stage-python313:
	tools/stage.sh $(@:stage-%=%) bash tools/test-other-pythons.sh 3.13
stage-reference: $(STAMP)
	tools/stage.sh $(@:stage-%=%) env PY=$(PY) bash tools/test_reference.sh

## The inner loop while changing code: `make lint`, then the CLI tests and the provider tests that need no Airflow
## deployment (hook, trigger, operator and sensor in-process against the real sshd: no `airflow dags test`, no
## api-server, no Celery), in four parts side by side (FAST_JOBS=1 for one at a time; the tests mostly wait on
## processes, so parts overlap well even on 2 cores). Each part's output is printed when all are over, with its
## minutes, as for `make test`, whose stages run all of these tests too. Left out: the 1.1.0 upgrade tests
## (test_upgrade_from_1_1_0.py), which install orchesjob 1.1.0 from PyPI into a fresh venv first.
FAST_JOBS ?= 4
FAST_STAGES := fast-cli-a fast-cli-b fast-provider-a fast-provider-b
FAST_CLI_LEFT_OUT := tests/cli/test_upgrade_from_1_1_0.py
# The longer CLI modules; fast-cli-b runs every other module of tests/cli (a new one lands there by itself).
FAST_CLI_A := $(addprefix tests/cli/,test_watch.py test_evidence.py test_damaged_values.py test_never_twice.py \
	test_exactly_once.py)
FAST_PROVIDER_A := $(addprefix tests/provider/,test_operator_unit.py test_sensor_unit.py)
FAST_PROVIDER_B := $(addprefix tests/provider/,test_cli_choice_unit.py test_cli_pack.py test_command_line.py \
	test_give_up_unit.py test_hook_ssh.py test_login_shells.py test_partial_lines.py test_shared_watcher.py \
	test_stale_event_unit.py test_trigger_ssh.py test_verbs_and_retry_unit.py)
test-fast: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory -k -j$(FAST_JOBS) $(addprefix stage-,$(FAST_STAGES))
	$(PY) tools/stages.py $(FAST_STAGES)

stage-fast-cli-a: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) $(FAST_CLI_A)
stage-fast-cli-b: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) tests/cli $(addprefix --ignore=,$(FAST_CLI_A) $(FAST_CLI_LEFT_OUT))
stage-fast-provider-a: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) $(FAST_PROVIDER_A)
stage-fast-provider-b: $(STAMP)
	tools/stage.sh $(@:stage-%=%) $(PY) $(PYTEST) $(FAST_PROVIDER_B)

## docs/compatibility.md from the records the Airflow stages of the last `make test` wrote (refused unless each of
## them passed), with that run's date. tests/tools (in stage main-cli) checks the committed page against this Makefile.
compat-docs: $(STAMP)
	$(PY) tools/compat_matrix.py render

## ruff (lint and format check) and mypy (types; strict for orchesjob/), as configured in pyproject.toml.
## `make test` runs it first; `make format` rewrites the tree in ruff's format.
LINTED := orchesjob orchesjob_provider tests bench tools dags_examples
lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format $(LINTED)

## One Airflow version at a time, in the foreground (what `make test` runs as its stages).
test-airflow2: $(STAMP_AF2)
	$(VENV_AF2)/bin/python $(PYTEST) tests/provider

test-airflow306: $(STAMP_AF306)
	$(VENV_AF306)/bin/python $(PYTEST) -m versions tests/provider

test-live306: $(STAMP_AF306)
	$(VENV_AF306)/bin/python $(PYTEST) -m versions tests/live

test-airflow2103: $(STAMP_AF2103)
	$(VENV_AF2103)/bin/python $(PYTEST) -m versions tests/provider

## The documentation site (docs/, mkdocs.yml) into build/site; --strict: a broken link or anchor fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-cli: $(STAMP)
	$(PY) $(PYTEST) tests/cli

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
	rm -rf $(VENV) $(VENV_AF2) $(VENV_AF306) $(VENV_AF2103) $(UV_VENV) .venv-3.* build dist *.egg-info orchesjob.pyz .pytest_cache .mypy_cache .ruff_cache .demo
