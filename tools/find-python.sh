#!/usr/bin/env bash
# tools/find-python.sh X.Y [UV]: print the path of a working Python X.Y interpreter, or fail saying where it looked.
#
# The Airflow versions `make test` covers each need the Python their constraints were made for (MWAA's Airflow 3.0.6
# runs on 3.12, 2.10.3 on 3.11). Looked for, in order: pyenv's versions (the newest X.Y.*), pythonX.Y on PATH (a
# pyenv shim of a version that is not selected does not run, so each candidate must run), an interpreter uv already
# knows, and last, with UV given, `uv python install X.Y` (uv's own build; needs its download host).
set -u
want=${1:?usage: find-python.sh X.Y [UV]}
uv=${2:-}
works() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c "import sys, venv; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" >/dev/null 2>&1; }
candidates=()
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  while IFS= read -r dir; do candidates+=("$dir/bin/python$want"); done < <(ls -d "$root/versions/$want".* 2>/dev/null | sort -rV)
fi
for dir in "$HOME/.pyenv/versions/$want".*; do candidates+=("$dir/bin/python$want"); done
command -v "python$want" >/dev/null 2>&1 && candidates+=("$(command -v "python$want")")
for cand in "${candidates[@]}"; do
  if works "$cand"; then echo "$cand"; exit 0; fi
done
if [ -n "$uv" ] && [ -x "$uv" ]; then
  found=$(UV_PYTHON_DOWNLOADS=never "$uv" python find "$want" 2>/dev/null || true)
  if works "$found"; then echo "$found"; exit 0; fi
  echo "find-python: no Python $want found; asking uv to install one" >&2
  if "$uv" python install "$want" >&2; then
    found=$("$uv" python find "$want" 2>/dev/null || true)
    if works "$found"; then echo "$found"; exit 0; fi
  fi
fi
echo "find-python: no working Python $want: looked in pyenv's versions, for python$want on PATH${uv:+ and with uv (find, then install)}." >&2
echo "find-python: install one (e.g. \`pyenv install $want\`, or your system's python$want package with venv)." >&2
exit 1
