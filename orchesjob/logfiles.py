"""Reading job logs in pieces, so a remote reader can stream them without reading anything twice.

Offsets are byte offsets into the log file. A chunk never ends inside a UTF-8 character, so a reader that decodes
chunk by chunk sees the same text as one that decodes the whole file.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any, Dict, Optional


def size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def read_bytes(path: str, offset: int, limit: Optional[int]) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read() if limit is None else f.read(limit)
    except FileNotFoundError:
        return b""


def _complete_utf8(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a multi-byte UTF-8 sequence."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte & 0x80 == 0:
            return n
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return n if back >= need else n - back
    return n


def chunk(path: str, stream: str, offset: int, limit: int, final: bool) -> Dict[str, Any]:
    """A JSON-ready piece of a log from `offset`: at most `limit` bytes, cut at a character boundary.

    `final` says the job has ended, so a trailing partial character will never be completed and is included.
    """
    total = size(path)
    data = read_bytes(path, offset, limit) if offset < total else b""
    keep = len(data) if final and offset + len(data) >= total else _complete_utf8(data)
    if keep == 0 and data and len(data) >= 4:
        keep = len(data)  # not UTF-8 at all: move on rather than stall
    data = data[:keep]
    return {
        "stream": stream,
        "offset": offset,
        "next_offset": offset + len(data),
        "size": total,
        "data": data.decode("utf-8", "replace"),
    }


def tail_bytes(path: str, lines: int) -> bytes:
    """The last `lines` lines of a file, read backwards in blocks so a huge log costs no more than a small one."""
    if lines <= 0:
        return b""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return b""
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, buf = end, b""
        wanted = lines + 1 if end and _last_byte(f, end) == b"\n" else lines
        while pos > 0 and buf.count(b"\n") < wanted:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
        parts = buf.split(b"\n")
        if buf.endswith(b"\n"):
            parts = parts[:-1]
            return b"\n".join(parts[-lines:]) + b"\n"
        return b"\n".join(parts[-lines:])


def _last_byte(f, end: int) -> bytes:
    f.seek(end - 1)
    return f.read(1)
