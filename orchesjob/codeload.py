"""Compiled code for orchesjob.pyz, kept beside the archive, so that a call does not compile the CLI again.

Python's zip importer cannot write bytecode, so every run of the zipapp compiled each module it imported from
source: a `status` through the .pyz cost ten bare interpreter start-ups, nine of them compiling. On its first run
under an interpreter, the archive's modules are compiled once (codebuild.py) and marshalled into one file beside it,

    orchesjob-2.0.0-<sha>.pyz.cpython-311.codes    (.cpython-311.opt-1.codes under -O)

and later runs load code objects from it through a finder at the front of sys.meta_path.

Nothing in that file is used on trust. It starts with the interpreter's bytecode magic number and the sha256 of
the archive's bytes it was compiled from, and it is used only when both match the archive being run *now* (the
provider's launcher passes the digest of the very bytes it has just verified; a direct run hashes the file it
runs). It is read only if it is a regular file of this user (or root) that nobody else may write; it lives in the
archive's directory, so whoever could replace it could replace the archive too. Any doubt (a missing, short,
damaged, foreign or stale file, a module whose code does not load) means compiling, as before.

What a call that finds the file needs is this module and no more, because it is itself compiled on every call: by
the zip importer for a direct run, and as part of the provider's launcher (launcher.py sends this text with each
call, so the loading rule is written once). So it is plain enough to be run as text: no imports of its own package,
names that cannot collide with the launcher's, and annotations as strings.
"""

import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from orchesjob.codebuild import Codes


def oj_use_codes(archive: "str", data: "bytes | None" = None, digest: "bytes | None" = None) -> "bool":
    """Serve the package's modules from compiled code for `archive` (its bytes `data` and their sha256 `digest`,
    when the caller has them): the file beside it, or, the first time, code compiled now (codebuild.py). Returns
    whether the finder is in place; if not, the zip importer compiles, as before."""
    try:
        if data is None or digest is None:
            data, digest = oj_archive_digest(archive)
        if oj_load_codes(archive, digest):
            return True
        from orchesjob.codebuild import build

        oj_serve_codes(archive, build(archive, data, oj_codes_path(archive), oj_codes_header(digest)))
        return True
    except Exception:  # noqa: BLE001 - whatever went wrong, compiling from the archive still works
        return False


def oj_archive_digest(archive: "str") -> "tuple[bytes, bytes]":
    """The archive's bytes and their sha256, with the interpreter's builtin hash module (hashlib would load
    OpenSSL's library)."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.9 - 3.11
    except ImportError:  # pragma: no cover - depends on the interpreter
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.12+
        except ImportError:
            from hashlib import sha256
    with open(archive, "rb") as f:
        data = f.read()
    return data, sha256(data).digest()


def oj_codes_path(archive: "str") -> "str":
    """Where the compiled code of `archive` for this interpreter lives (one file per interpreter and -O level)."""
    optimize = sys.flags.optimize
    return "%s.%s%s.codes" % (archive, sys.implementation.cache_tag, ".opt-%d" % optimize if optimize else "")


def oj_codes_header(digest: "bytes") -> "bytes":
    """What the file of codes compiled from an archive with this sha256 `digest` starts with."""
    import _frozen_importlib_external  # importlib's core, always loaded: importing it costs nothing

    return bytes(_frozen_importlib_external.MAGIC_NUMBER) + digest


def oj_load_codes(archive: "str", digest: "bytes") -> "bool":
    """Serve the package's modules from the file of codes beside `archive` (whose bytes have this sha256) if it is
    there and fit to use; returns whether it was."""
    header = oj_codes_header(digest)
    try:
        fd = os.open(oj_codes_path(archive), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or st.st_uid not in (os.geteuid(), 0) or st.st_mode & 0o022:
            return False
        with open(fd, "rb", closefd=False) as f:
            blob = f.read()
    finally:
        os.close(fd)
    if blob[: len(header)] != header:
        return False
    try:
        codes = marshal.loads(blob[len(header) :])
    except (ValueError, EOFError, TypeError):
        return False
    if not isinstance(codes, dict):
        return False
    oj_serve_codes(archive, codes)
    return True


def oj_serve_codes(archive: "str", codes: "Codes") -> "None":
    """Put a finder for `codes` (compiled from `archive`) at the front of sys.meta_path."""
    sys.meta_path.insert(0, OjCodeFinder(archive, codes))


class OjCodeFinder:
    """A meta path finder and loader for the package's modules, from compiled code. A module it has no good code
    for is left to the zip importer (the archive stays on sys.path), which compiles it."""

    def __init__(self, archive: "str", codes: "Codes") -> "None":
        self.archive = archive
        self.codes = codes

    def find_spec(
        self, name: "str", path: "Sequence[str] | None" = None, target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        import _frozen_importlib  # importlib's core, always loaded

        if name != "orchesjob" and not name.startswith("orchesjob."):
            return None  # the package's modules only: never a module of the standard library, whatever the file says
        try:
            package, code = self.codes[name][0], marshal.loads(self.codes[name][1])
        except Exception:  # noqa: BLE001 - not ours, or damaged
            return None
        if not isinstance(code, type(oj_codes_path.__code__)):  # a code object (types.CodeType, without types)
            return None
        where = self.archive + os.sep + name.replace(".", os.sep)
        origin = where + (os.sep + "__init__.py" if package else ".py")
        # a loader by its methods, not a subclass of importlib.abc.Loader (one more import on every call)
        spec: ModuleSpec = _frozen_importlib.ModuleSpec(name, self, origin=origin, is_package=bool(package))  # type: ignore[arg-type]
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [where]
        spec.loader_state = code
        return spec

    def create_module(self, spec: "ModuleSpec") -> "None":
        return None

    def exec_module(self, module: "ModuleType") -> "None":
        spec = module.__spec__
        assert spec is not None  # the import system sets it before calling this
        exec(spec.loader_state, module.__dict__)
