#!/usr/bin/env bash
# `make test-reference`: orchesjob 1.1.0's own CLI tests, run against THIS repository's CLI.
#
# Downloads the published sdist with pip into a temporary directory (nothing of it is kept or committed), takes
# its tests/test_*.py, gives them the conftest they expect (tests/reference/conftest_shim.py: `python -m orchesjob`
# with ORCHESJOB_HOME per test, as 1.1.0's tests run it) and runs them with our venv's pytest, with this checkout
# first on PYTHONPATH so `-m orchesjob` is ours. The sdist's own package is never importable there.
# Deliberate differences are skipped, each with its reason, from tests/reference/divergences.txt (the one list).
# Extra arguments go to pytest (e.g. `tools/test_reference.sh -k clean`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PY:-.venv/bin/python}
case $py in /*) ;; *) py=$repo/$py ;; esac
version=${ORCHESJOB_REFERENCE_VERSION:-1.1.0}

work=$(mktemp -d "${TMPDIR:-/tmp}/orchesjob-reference.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1.1.0 declares Requires-Python >=3.12; only its test files are used, so the venv's Python may be older.
"$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: --ignore-requires-python \
  "orchesjob==$version" -d "$work/dl"
sdist=$(ls "$work"/dl/orchesjob-"$version".tar.gz)
mkdir -p "$work/src" "$work/suite/tests"
tar -xzf "$sdist" -C "$work/src"
tests_dir="$work/src/orchesjob-$version/tests"
[ -d "$tests_dir" ] || { echo "test-reference: the sdist of orchesjob $version has no tests/ directory" >&2; exit 1; }
cp "$tests_dir"/test_*.py "$work/suite/tests/"
: > "$work/suite/tests/__init__.py"
cp tests/reference/conftest_shim.py "$work/suite/tests/conftest.py"
printf '[pytest]\ntimeout = 180\n' > "$work/suite/pytest.ini"

echo "test-reference: deliberately not run here (tests/reference/divergences.txt):"
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' tests/reference/divergences.txt | sed 's/^/  /'
echo "test-reference: orchesjob $version's tests ($(cd "$work/suite/tests" && ls test_*.py | tr '\n' ' ')) against $repo"
cd "$work/suite"
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" \
PATH="$(dirname "$py"):$PATH" \
ORCHESJOB_REF_REPO="$repo" \
ORCHESJOB_REF_DIVERGENCES="$repo/tests/reference/divergences.txt" \
  "$py" -m pytest -q -p no:cacheprovider -rfEs tests "$@"
