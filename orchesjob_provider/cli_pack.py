"""The orchesjob CLI as one deterministic zipapp, packed in memory from the installed ``orchesjob`` package.

Why deterministic: the file's sha256 names it in a host's cache (``orchesjob-<version>-<sha256 prefix>.pyz``) and
proves on the host that an upload arrived whole. If two workers with the same installed version packed different
bytes, they would upload two copies and never share one. So the archive is a pure function of the package's files:
entries sorted by name, one fixed timestamp and mode for every entry, and no compression (a compressor's output may
differ between zlib builds; the SSH transport compresses the upload anyway).

Why here and not only in ``tools/build_pyz.py``: the provider packs the CLI it ships with at run time, so hosts run
exactly the CLI the worker has. ``make pyz`` uses the same function: one rule for what the zipapp contains.

Standard library only, no Airflow: ``tools/build_pyz.py`` runs with any Python 3.9+.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import io
import os
import zipfile

#: Every entry gets this timestamp (the earliest a zip file can hold) and these permission bits.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ENTRY_MODE = 0o644
SHEBANG = b"#!/usr/bin/env python3\n"
#: The archive's top-level ``__main__.py`` (what ``python orchesjob.pyz ARGS`` runs) is the package's own
#: ``orchesjob/__main__.py``: one text, which answers in JSON even when the CLI cannot be loaded.
MAIN_SOURCE = "__main__.py"
SHA_PREFIX = 16  # hex digits of the sha256 in the cached file's name


@dataclasses.dataclass(frozen=True)
class PackedCli:
    """One packed CLI: its bytes, their sha256 (hex) and the CLI version inside."""

    data: bytes
    sha256: str
    version: str

    @property
    def filename(self) -> str:
        """The name a host's cache keeps it under: the version for people, the hash prefix for uniqueness."""
        return f"orchesjob-{self.version}-{self.sha256[:SHA_PREFIX]}.pyz"


def package_dir() -> str:
    """The directory of the importable ``orchesjob`` package (the installed distribution's, or a checkout's)."""
    spec = importlib.util.find_spec("orchesjob")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the orchesjob package is not importable, so there is no CLI to pack")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def package_text(name: str, root: str | None = None) -> str:
    """The text of the module `name` (a path inside the package) of the package at `root` (default: the importable
    one, which is what ``pack`` packs). The launcher sends codeload.py's with every call."""
    with open(os.path.join(package_dir() if root is None else root, name), encoding="utf-8") as f:
        return f.read()


def _package_files(root: str) -> list[tuple[str, str]]:
    """(name in the archive, path on disk) of the package's sources, sorted; caches and bytecode left out."""
    found: list[tuple[str, str]] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py") or name == "py.typed":
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(root)).replace(os.sep, "/")
                found.append((relative, path))
    return sorted(found)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, so that the mode bits below mean what they say
    info.external_attr = (0o100000 | ENTRY_MODE) << 16
    return info


def _version_of(root: str) -> str:
    """``__version__`` of the package at ``root``, read from its source (the importable one may be another)."""
    with open(os.path.join(root, "__init__.py"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError(f"no __version__ in {root}/__init__.py")


def pack(root: str | None = None) -> PackedCli:
    """Pack the ``orchesjob`` package at ``root`` (default: the importable one) into a zipapp, in memory."""
    root = package_dir() if root is None else os.path.abspath(root)
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        with open(os.path.join(root, MAIN_SOURCE), "rb") as f:
            archive.writestr(_entry("__main__.py"), f.read())
        for name, path in _package_files(root):
            with open(path, "rb") as f:
                archive.writestr(_entry(name), f.read())
    data = buffer.getvalue()
    return PackedCli(data=data, sha256=hashlib.sha256(data).hexdigest(), version=_version_of(root))


@functools.lru_cache(maxsize=1)
def packed_cli() -> PackedCli:
    """The installed CLI, packed once per process (a worker may install it on many hosts)."""
    return pack()
