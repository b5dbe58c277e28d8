"""Build orchesjob.pyz: the CLI as one file that any Python 3.9+ runs, for hosts where pip is not an option."""

import os
import shutil
import sys
import tempfile
import zipapp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(target: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(ROOT, "orchesjob"), os.path.join(tmp, "orchesjob"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        zipapp.create_archive(tmp, target, interpreter="/usr/bin/env python3", main="orchesjob.cli:main",
                              compressed=True)
    os.chmod(target, 0o755)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "orchesjob.pyz"))
