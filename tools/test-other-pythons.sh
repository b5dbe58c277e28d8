#!/usr/bin/env bash
# Run the CLI tests under the oldest and the newest Python this machine has (3.9 and 3.13 via pyenv, or on PATH).
# A missing interpreter is reported, not hidden; under CI (CI=true) a missing one fails the run.
set -u
cd "$(dirname "$0")/.."
status=0
for want in 3.9 3.13; do
  py=""
  if command -v "python$want" >/dev/null 2>&1; then
    py=$(command -v "python$want")
  elif command -v pyenv >/dev/null 2>&1; then
    for cand in "$(pyenv root)"/versions/"$want".*/bin/python; do [ -x "$cand" ] && py=$cand; done
  fi
  if [ -z "$py" ]; then
    echo "test-other-pythons: SKIPPED Python $want: no interpreter found (install it, e.g. pyenv install $want)"
    [ "${CI:-}" = "true" ] && status=1
    continue
  fi
  venv=".venv-$want"
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q pytest pytest-timeout || { status=1; continue; }
  fi
  echo "test-other-pythons: CLI tests under $("$venv/bin/python" --version)"
  PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/cli || status=1
done
exit $status
