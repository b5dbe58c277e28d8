"""`make test`'s last step: print each stage's kept output, then how each stage ended and how long it took.

The stages ran two at a time (tools/stage.sh wrote build/stages/NAME.log and NAME.json); printing their output
one stage after another, in the order given, keeps a CI log readable. Exits 1 when any stage failed or left no
record (a stage that never ran is a failure, not a pass).

    python tools/stages.py STAGE...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STAGES_DIR = Path("build/stages")


def load(name: str, directory: Path = STAGES_DIR) -> dict[str, Any] | None:
    """A stage's record, or None when it has none (it never ran, or died before writing it)."""
    try:
        record = json.loads((directory / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def summary_lines(names: list[str], directory: Path = STAGES_DIR) -> tuple[list[str], bool]:
    """The table of stages (name, verdict, seconds) and whether all of them passed."""
    lines = [f"{'stage':<16} {'result':<16} {'minutes':>7}"]
    ok = True
    for name in names:
        record = load(name, directory)
        if record is None:
            lines.append(f"{name:<16} {'NO RECORD':<16} {'-':>7}")
            ok = False
            continue
        passed = record.get("exit") == 0
        ok = ok and passed
        verdict = "passed" if passed else f"FAILED (exit {record.get('exit')})"
        lines.append(f"{name:<16} {verdict:<16} {float(record.get('seconds', 0)) / 60:>7.1f}")
    return lines, ok


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: stages.py STAGE...", file=sys.stderr)
        return 2
    for name in argv:
        log = STAGES_DIR / f"{name}.log"
        print(f"\n======== stage {name} ========", flush=True)
        try:
            sys.stdout.write(log.read_text(errors="replace"))
        except OSError as exc:
            print(f"(no output: {exc})")
    lines, ok = summary_lines(argv)
    print("\n======== stages ========")
    print("\n".join(lines))
    print("all stages passed" if ok else "SOME STAGES FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
