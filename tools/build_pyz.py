"""Build orchesjob.pyz: the CLI as one file that any Python 3.9+ runs, for hosts where pip is not an option.

The bytes are the provider's (``orchesjob_provider.cli_pack``): the same checkout always gives the same file, and
the same file the provider uploads to hosts that have no CLI.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from orchesjob_provider.cli_pack import pack  # noqa: E402


def build(target: str) -> str:
    packed = pack(os.path.join(ROOT, "orchesjob"))
    with open(target, "wb") as f:
        f.write(packed.data)
    os.chmod(target, 0o755)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "orchesjob.pyz"))
