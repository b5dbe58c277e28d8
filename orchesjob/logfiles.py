"""Reading job logs in pieces, so a remote reader can stream them without reading anything twice.

Offsets are byte offsets into the log file. A chunk never ends inside a UTF-8 character, so a reader that decodes
chunk by chunk sees the same text as one that decodes the whole file.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from collections.abc import Iterator
    from typing import Any, BinaryIO

BLOCK = 1 << 20  # raw output is read and written in blocks of this size
MAX_CHUNK = 4 << 20  # a JSON chunk holds at most this many bytes, whatever the limit (read on from next_offset):
# decoded and escaped, a chunk costs several times its size in memory


def size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _open(path: str) -> tuple[BinaryIO | None, int]:
    """The log opened for reading and its size now; (None, 0) when it does not exist (yet)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None, 0
    return f, os.fstat(f.fileno()).st_size


def read_bytes(path: str, offset: int, limit: int | None) -> bytes:
    """At most `limit` bytes from `offset` (all there is when None). The read is sized by what the file holds, not
    by what was asked, and an offset at or past the end reads nothing without seeking there (a seek far past the
    end can fail with EINVAL)."""
    f, end = _open(path)
    if f is None:
        return b""
    with f:
        n = end - offset if limit is None else min(limit, end - offset)
        if n <= 0:
            return b""
        f.seek(offset)
        return f.read(n)


class Blocks:
    """Bytes `start..end` of an open log, read in blocks of at most BLOCK bytes while the caller writes them out
    (cli.main is the only writer of stdout), so printing a log of any size, or any range of it, costs one block."""

    def __init__(self, f: BinaryIO | None, start: int, end: int) -> None:
        self.f, self.start, self.end = f, start, end

    def __iter__(self) -> Iterator[bytes]:
        f = self.f
        if f is None:
            return
        try:
            pos = self.start
            if pos < self.end:
                f.seek(pos)
            while pos < self.end:
                data = f.read(min(BLOCK, self.end - pos))
                if not data:
                    break  # the file shrank meanwhile
                pos += len(data)
                yield data
        finally:
            f.close()


def blocks(path: str, offset: int, limit: int | None) -> Blocks:
    """The log from `offset`, at most `limit` bytes (to its current end when None), as Blocks. The file is opened
    here, so a log that cannot be opened fails before anything is printed."""
    f, end = _open(path)
    if limit is not None:
        end = min(end, offset + limit)
    return Blocks(f, offset, end)


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


def readable_end(path: str, offset: int) -> int:
    """Where what a reader can be given from `offset` now ends: the log's size, less an incomplete UTF-8 character at
    its end (the rest of it may still be written), and never before `offset`.

    A log that grew past `offset` by nothing but the first bytes of a character has nothing to give yet: a chunk
    would end where it starts. `wait` and `wait --watch` count such bytes as no news until more bytes arrive, or until
    the job ends (then the final chunk delivers them, replaced as invalid). This is `chunk`'s own cut, computed from
    the last four bytes only, so it costs one small read however far behind `offset` is.
    """
    if size(path) <= offset:  # the common case, a stat only: nothing new
        return offset
    f, total = _open(path)
    if f is None:
        return offset
    with f:
        if total <= offset:
            return offset
        start = max(offset, total - 4)
        f.seek(start)
        data = f.read(total - start)
    return start + _complete_utf8(data)


def chunk(path: str, stream: str, offset: int, limit: int, final: bool) -> dict[str, Any]:
    """A JSON-ready piece of a log from `offset`: at most `limit` bytes, cut at a character boundary.

    `final` says the job has ended, so a trailing partial character will never be completed and is included.
    """
    total = size(path)
    data = read_bytes(path, offset, min(limit, MAX_CHUNK)) if offset < total else b""
    keep = len(data) if final and offset + len(data) >= total else _complete_utf8(data)
    if keep == 0 and data and len(data) >= 4:
        keep = len(data)  # not UTF-8 at all: move on rather than stall
    text = (data if keep == len(data) else data[:keep]).decode("utf-8", "replace")
    del data
    return {
        "stream": stream,
        "offset": offset,
        "next_offset": offset + keep,
        "size": total,
        "data": text,
    }


def tail_range(path: str, lines: int) -> tuple[int, int]:
    """(start, end): the last `lines` lines of a file are its bytes start..end (end is its size now).

    Found by counting newlines backwards in blocks that are not kept, so a huge log, or a count of lines larger than
    the log has, costs no more memory than a small one.
    """
    f, end = _open(path)
    if f is None:
        return 0, 0
    with f:
        if lines <= 0 or end == 0:
            return end, end
        pos = end - 1 if _last_byte(f, end) == b"\n" else end  # a final newline ends the last line, starts none
        need = lines
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            found = block.count(b"\n")
            if found < need:
                need -= found
                continue
            i = len(block)
            for _ in range(need):
                i = block.rindex(b"\n", 0, i)
            return pos + i + 1, end
        return 0, end


def _last_byte(f: BinaryIO, end: int) -> bytes:
    f.seek(end - 1)
    return f.read(1)
