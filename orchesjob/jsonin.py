"""Reading JSON without importing `json`.

Every call of the provider hands the CLI its request as one JSON line (request.py). `json.loads` would import
`json.decoder`, which imports `re` and `enum`: on a host that is a third of a `status` call's cost over a bare
interpreter start. The decoder that does the work is the C scanner in `_json`, which needs none of that; this module
gives it the settings `json.loads` would and does the little `json.loads` does around it, so the answers (values and
refusals) are the same. The tests compare the two on valid and invalid input.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

_WHITESPACE = " \t\n\r"  # JSON's whitespace; str.strip() would also take others, which json.loads refuses
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}  # as json.loads reads them


class _Settings:
    """What the C scanner reads from a json.JSONDecoder: json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan: Callable[[str, int], tuple[Any, int]] | None = None


def loads(text: str) -> Any:
    """json.loads(text) for a str: the same value, or the same json.JSONDecodeError (a ValueError)."""
    global _scan
    if _scan is None:
        try:
            from _json import make_scanner
        except ImportError:  # an interpreter without the C accelerator: json itself
            import json

            return json.loads(text)
        _scan = make_scanner(_Settings())  # type: ignore[arg-type]  # the settings it reads, not a JSONDecoder
    if text.startswith("\ufeff"):
        raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise _error("Expecting value", text, e.value) from None
    if end != len(text.rstrip(_WHITESPACE)):
        raise _error("Extra data", text, len(text) - len(text[end:].lstrip(_WHITESPACE)))
    return value


def _error(message: str, text: str, at: int) -> ValueError:
    """json's own error for a refusal (the scanner raises it too): only a refused request imports json."""
    from json import JSONDecodeError

    return JSONDecodeError(message, text, at)
