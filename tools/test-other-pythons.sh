#!/usr/bin/env bash
# Run the CLI tests under the oldest and the newest Python this machine has (3.9 and 3.13 via pyenv, or on PATH);
# with arguments, under those versions only (`make test` runs each as a stage of its own, so the two fill both slots).
# A missing interpreter is reported, not hidden; under CI (CI=true) a missing one fails the run.
set -u
cd "$(dirname "$0")/.."
status=0
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(3.9 3.13)
for want in "${wanted[@]}"; do
  py=""
  candidates=()
  if command -v pyenv >/dev/null 2>&1; then
    for cand in "$(pyenv root)"/versions/"$want".*/bin/python; do candidates+=("$cand"); done
  fi
  command -v "python$want" >/dev/null 2>&1 && candidates+=("$(command -v "python$want")")
  for cand in "${candidates[@]}"; do
    # a pyenv shim is on PATH even when its version is not selected: keep only interpreters that really run
    if [ -x "$cand" ] && "$cand" -c 'import sys; sys.exit(0)' >/dev/null 2>&1; then py=$cand; break; fi
  done
  if [ -z "$py" ]; then
    echo "test-other-pythons: SKIPPED Python $want: no interpreter found (install it, e.g. pyenv install $want)"
    [ "${CI:-}" = "true" ] && status=1
    continue
  fi
  venv=".venv-$want"
  # the test dependencies of tests/cli (a venv made before one was added gets it too)
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import prometheus_client' >/dev/null 2>&1; then
    { [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"; } \
      && "$venv/bin/python" -m pip install -q pytest pytest-timeout hypothesis prometheus-client \
      || { echo "test-other-pythons: could not make a venv for $py"; status=1; continue; }
  fi
  echo "test-other-pythons: CLI tests under $("$venv/bin/python" --version)"
  # test_contrib.py checks contrib/'s files with promtool and systemd-analyze: nothing of it depends on the
  # interpreter, so the main run's pass is enough (it saves CI a minute)
  PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider --ignore=tests/cli/test_contrib.py tests/cli \
    || status=1
done
exit $status
