#!/usr/bin/env bash
# Check the built artifacts (`make dist`) as a user receives them, not the checkout:
#   1. twine's strict check of both files (metadata and the long description an index page renders);
#   2. the sdist holds what a packager needs (LICENSE, CHANGELOG, docs, tests) and builds the same wheel;
#   3. the wheel with the `airflow` extra, in a clean venv with Airflow's constraints, run from a directory with no
#      checkout in it: `orchesjob --version`, a `start --sync` on a temporary state directory, `airflow providers
#      list` naming the provider, and an import of the operator;
#   4. the wheel without the extra, in Airflow: the provider is still listed, and importing the operator fails with
#      an error naming `orchesjob[airflow]`.
# Usage: tools/check_dist.sh PYTHON CONSTRAINTS   (PYTHON: the project venv's interpreter, with build, twine, uv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: check_dist.sh PYTHON CONSTRAINTS}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, but not resolved: a venv's python is a link
CONSTRAINTS=$(realpath "${2:?usage: check_dist.sh PYTHON CONSTRAINTS}")
REPO=$PWD
UV=$(dirname "$PY")/uv
say() { echo "dist-check: $*"; }
fail() { echo "dist-check: FAILED: $*" >&2; exit 1; }

shopt -s nullglob
wheels=(dist/orchesjob-*.whl)
sdists=(dist/orchesjob-*.tar.gz)
[ ${#wheels[@]} -eq 1 ] && [ ${#sdists[@]} -eq 1 ] || fail "expected one wheel and one sdist in dist/ (run make dist)"
WHEEL=$(realpath "${wheels[0]}")
SDIST=$(realpath "${sdists[0]}")
VERSION=$("$PY" -c 'import sys; print(sys.argv[1].split("-")[1])' "$(basename "$WHEEL")")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. -----------------------------------------------------------------------------------------------------------
"$PY" -m twine check --strict "$WHEEL" "$SDIST" >/dev/null || { "$PY" -m twine check --strict "$WHEEL" "$SDIST"; fail "twine check"; }
say "twine check --strict: both pass"

# 2. -----------------------------------------------------------------------------------------------------------
top="orchesjob-$VERSION"
listing=$(tar -tzf "$SDIST")
for need in LICENSE CHANGELOG.md README.md pyproject.toml mkdocs.yml docs/index.md docs/json-contract.md tests/cli/conftest.py \
  tests/provider/conftest.py tests/support/sshd.py; do
  grep -qx "$top/$need" <<<"$listing" || fail "the sdist lacks $need"
done
if grep -E '/(__pycache__|\.venv[^/]*|\.demo|\.pytest_cache)/' <<<"$listing" >/dev/null; then
  fail "the sdist carries build or venv leftovers: $(grep -E '/(__pycache__|\.venv[^/]*|\.demo)/' <<<"$listing" | head -3)"
fi
tar -xzf "$SDIST" -C "$WORK"
(cd "$WORK/$top" && "$PY" -m build --wheel --outdir "$WORK/rebuilt" . >/dev/null 2>"$WORK/rebuild.log") \
  || { cat "$WORK/rebuild.log"; fail "the sdist does not build a wheel"; }
"$PY" - "$WHEEL" "$WORK"/rebuilt/*.whl <<'PYEOF' || fail "the wheel built from the sdist differs from dist/'s"
import sys, zipfile


def content(path):
    """Every file's bytes, by name; RECORD only lists these with their hashes, so it is left out."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if not n.endswith(".dist-info/RECORD")}


a, b = content(sys.argv[1]), content(sys.argv[2])
if a != b:
    only = sorted(set(a) ^ set(b))
    changed = sorted(n for n in set(a) & set(b) if a[n] != b[n])
    print("files in one wheel only: %s; files that differ: %s" % (only[:10], changed[:10]))
    sys.exit(1)
PYEOF
say "the sdist holds LICENSE, CHANGELOG, docs and tests, and builds the same wheel"

# 3. -----------------------------------------------------------------------------------------------------------
# uv makes the clean venvs (a full Airflow install from its cache takes seconds; pip takes over a minute each).
mkdir -p "$WORK/run"
cd "$WORK/run"  # no checkout here: python puts the working directory first on sys.path for -c
"$UV" venv -q -p "$("$PY" -c 'import sys; print(sys.executable)')" "$WORK/full"
VIRTUAL_ENV="$WORK/full" "$UV" pip install -q -c "$CONSTRAINTS" "$WHEEL[airflow]"
FULL="$WORK/full/bin"
where=$("$FULL/python" -c 'import orchesjob_provider; print(orchesjob_provider.__file__)')
case "$where" in "$WORK/full/"*) ;; *) fail "the provider was imported from $where, not from the installed wheel" ;; esac
case "$where" in "$REPO"*) fail "the checkout is on sys.path" ;; esac
"$FULL/orchesjob" --version | tee "$WORK/version.txt" | grep -q "$VERSION" || fail "orchesjob --version: $(cat "$WORK/version.txt")"
out=$(ORCHESJOB_HOME="$WORK/state" "$FULL/orchesjob" start --run-key dist-check --sync -- sh -c 'echo ok')
"$FULL/python" -c 'import json, sys; j = json.loads(sys.argv[1]); assert j["status"] == "SUCCEEDED", j' "$out" \
  || fail "start --sync from the wheel: $out"
export AIRFLOW_HOME="$WORK/airflow-home"
"$FULL/airflow" providers list -o json 2>/dev/null >"$WORK/providers.json" || fail "airflow providers list failed"
grep -q '"package_name": "orchesjob"' "$WORK/providers.json" || fail "airflow providers list does not name orchesjob"
"$FULL/python" -c 'from orchesjob_provider.operators.orchesjob import OrchesjobOperator' \
  || fail "the operator does not import from the wheel"
say "wheel [airflow] in a clean venv: $(cat "$WORK/version.txt"); start --sync SUCCEEDED; provider listed; operator imports"

# 4. -----------------------------------------------------------------------------------------------------------
"$UV" venv -q -p "$("$PY" -c 'import sys; print(sys.executable)')" "$WORK/bare"
airflow_pin=$(grep -E '^apache-airflow==' "$CONSTRAINTS")
VIRTUAL_ENV="$WORK/bare" "$UV" pip install -q -c "$CONSTRAINTS" "$airflow_pin" "$WHEEL"
BARE="$WORK/bare/bin"
"$BARE/python" -c 'import paramiko' 2>/dev/null && fail "paramiko came with Airflow: this check proves nothing here"
"$BARE/airflow" providers list -o json 2>/dev/null >"$WORK/providers-bare.json" || fail "airflow providers list failed (no extra)"
grep -q '"package_name": "orchesjob"' "$WORK/providers-bare.json" || fail "without the extra the provider is not listed"
if "$BARE/python" -c 'from orchesjob_provider.operators.orchesjob import OrchesjobOperator' 2>"$WORK/import.err"; then
  fail "the operator imported without the airflow extra"
fi
grep -q "orchesjob\[airflow\]" "$WORK/import.err" || { cat "$WORK/import.err"; fail "the import error does not name orchesjob[airflow]"; }
say "wheel without the extra: provider listed; the operator's import says: $(tail -n1 "$WORK/import.err")"
