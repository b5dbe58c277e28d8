"""Two versions of the CLI side by side: ``python bench/versus.py OLD_REV [NEW_REV]``.

Each revision's ``orchesjob/`` is exported from git into a temporary directory and run from there by the same
interpreter, with a state directory of its own seeded by that version (a few finished jobs). Then each command is
run as whole processes, old and new in turn (old, new, old, new ...), so a machine whose speed drifts during the run
moves both sides alike, and the figures are the medians of the pair-by-pair ratios new/old, of CPU time (user +
system, the kernel's accounting of the finished child) and of wall time. CPU is the figure to read on a busy
machine. Prints one JSON object; ``--json FILE`` also writes it. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "status": ["status", "--run-key", "k1"],
    "start_sync": ["start", "--sync", "--run-key", "bench", "--", "true"],
}


def export(rev: str, into: Path) -> Path:
    """The revision's orchesjob/ package, as git has it (not the working tree)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "orchesjob"], check=True, capture_output=True)
    into.mkdir(parents=True)
    tar = into / "tree.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        try:
            t.extractall(into, filter="data")
        except TypeError:  # an interpreter before extraction filters (3.11.3): our own archive, from git
            t.extractall(into)
    return into


def short(rev: str) -> str:
    """The commit a revision names, abbreviated (HEAD moves; the figures keep what was measured)."""
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True, capture_output=True)
    return out.stdout.decode().strip()


def argv(tree: Path) -> list[str]:
    """The same interpreter for both sides (this one); the tree comes in through PYTHONPATH (env())."""
    return [sys.executable, "-m", "orchesjob"]


def env(tree: Path, home: Path) -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE dropped: the warm-up writes each tree's bytecode, as an installed package has it
    e = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESJOB_") and k != "PYTHONDONTWRITEBYTECODE"}
    # PYTHONSAFEPATH: the current directory never shadows the exported tree
    e.update(PYTHONPATH=str(tree), PYTHONSAFEPATH="1", ORCHESJOB_HOME=str(home))
    return e


def run_once(cmd: list[str], environ: dict[str, str]) -> tuple[float, float]:
    """(cpu seconds, wall seconds) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, cwd="/")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="the revision to compare against (a commit, a tag)")
    ap.add_argument("new", nargs="?", default="HEAD", help="the revision measured (default HEAD)")
    ap.add_argument("--runs", type=int, default=41, help="pairs per command (default 41)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchesjob-versus-") as tmp:
        sides = {}
        for name, rev in (("old", a.old), ("new", a.new)):
            tree = export(rev, Path(tmp) / name / "tree")
            home = Path(tmp) / name / "home"
            e = env(tree, home)
            for i in range(3):
                run_once(argv(tree) + ["start", "--sync", "--run-key", "k%d" % (i + 1), "--", "true"], e)
            sides[name] = (argv(tree), e)
        fig: dict[str, object] = {"old": short(a.old), "new": short(a.new), "python": sys.version.split()[0]}
        fig["runs"] = a.runs
        for label, args in COMMANDS.items():
            cpu_ratios, wall_ratios = [], []
            for _ in range(2):  # warm-up pair (bytecode written, caches filled)
                for cmd, e in sides.values():
                    run_once(cmd + args, e)
            for _ in range(a.runs):
                old = run_once(sides["old"][0] + args, sides["old"][1])
                new = run_once(sides["new"][0] + args, sides["new"][1])
                cpu_ratios.append(new[0] / old[0] if old[0] else 1.0)
                wall_ratios.append(new[1] / old[1])
            fig[label + "_cpu_new_over_old"] = round(statistics.median(cpu_ratios), 3)
            fig[label + "_wall_new_over_old"] = round(statistics.median(wall_ratios), 3)
    print(json.dumps(fig, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
