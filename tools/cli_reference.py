"""Write docs/cli-reference.md from the CLI's argument table (orchesjob.manual.reference_markdown).

Run it after changing a command, an option, an example or an exit status; tests/release checks the page is current.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchesjob.manual import reference_markdown  # noqa: E402 - after the checkout is on the path

PAGE = ROOT / "docs" / "cli-reference.md"

if __name__ == "__main__":
    PAGE.write_text(reference_markdown())
    print(PAGE, file=sys.stderr)
