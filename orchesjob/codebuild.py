"""Compiling orchesjob.pyz into the file of codes beside it (codeload.py), on its first run under an interpreter.

Kept apart from codeload.py, which every call compiles: this is needed once per archive and interpreter.
The file is written whole under a private name and renamed into place, so a racing reader sees all of it or none;
several first runs at once each write the same bytes. A directory that cannot be written, a full disk, a read-only
file system: the call goes on with the code it has just compiled, and the next one tries again.
"""

from __future__ import annotations

import marshal
import os

PACKAGE = "orchesjob"

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time
    Codes = dict[str, tuple[bool, bytes]]  # module name: (is a package, its marshalled code)


def build(archive: str, data: bytes, path: str, header: bytes) -> Codes:
    """Compile the archive (its bytes `data`) and store the codes at `path` behind `header` for the next call;
    returns them, for this call to run (codeload.py serves them)."""
    codes = compile_archive(archive, data)
    save(path, header, codes)
    return codes


def compile_archive(archive: str, data: bytes) -> Codes:
    """{module name: (is_package, marshalled code)} for every module of the package in the zip `data`, compiled
    with the file names the zip importer gives them (so tracebacks and __file__ read the same). Each module stays
    marshalled until it is imported: a call loads the code of the modules it uses, not of all of them."""
    import io
    import zipfile

    codes: Codes = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if not (name.startswith(PACKAGE + "/") and name.endswith(".py")):
                continue
            parts = name[:-3].split("/")
            package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if package else parts)
            filename = archive + os.sep + name.replace("/", os.sep)
            code = compile(z.read(name), filename, "exec", dont_inherit=True)
            codes[module] = (package, marshal.dumps(code))
    return codes


def save(path: str, header: bytes, codes: Codes) -> None:
    """Write the codes whole under a private name, then rename it into place; any failure leaves no file."""
    temporary = "%s.new-%d-%s" % (path, os.getpid(), os.urandom(4).hex())
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        try:
            view = memoryview(header + marshal.dumps(codes))
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
