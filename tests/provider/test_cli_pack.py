"""The packed CLI: the same package always gives the same bytes, and those bytes are a working CLI.

No Airflow and no SSH here: ``orchesjob_provider.cli_pack`` is standard library only, and so is what it produces.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from orchesjob import __version__
from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider.cli_pack import SHEBANG, ZIP_EPOCH, pack, package_dir, packed_cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_packing_twice_gives_the_same_bytes_and_name() -> None:
    first, second = pack(), pack()
    assert first.data == second.data
    assert first.sha256 == second.sha256 == hashlib.sha256(first.data).hexdigest()
    assert first.version == __version__
    assert first.filename == f"orchesjob-{__version__}-{first.sha256[:16]}.pyz"
    assert packed_cli() is packed_cli()  # packed once per process


def test_a_copy_with_other_timestamps_and_caches_packs_identically(tmp_path: Path) -> None:
    """What the bytes depend on is the sources alone: not mtimes, not bytecode caches, not directory order."""
    copy = tmp_path / "elsewhere" / "orchesjob"
    shutil.copytree(package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"junk")
    assert pack(str(copy)).data == pack().data
    (copy / "cli.py").write_text((copy / "cli.py").read_text() + "\n# changed\n")
    assert pack(str(copy)).sha256 != pack().sha256  # and a change of source changes the hash


def test_entries_are_sorted_stamped_and_stored() -> None:
    packed = pack()
    assert packed.data.startswith(SHEBANG)
    with zipfile.ZipFile(io.BytesIO(packed.data)) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert (
            names[0] == "__main__.py" and archive.read("__main__.py") == Path(package_dir(), "__main__.py").read_bytes()
        )
        assert names[1:] == sorted(names[1:])
        assert "orchesjob/cli.py" in names and "orchesjob/py.typed" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert {i.date_time for i in infos} == {ZIP_EPOCH}
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        assert {(i.external_attr >> 16) & 0o777 for i in infos} == {0o644}
        expected = sorted(p.relative_to(package_dir()).as_posix() for p in Path(package_dir()).rglob("*.py"))
        assert sorted(n.split("/", 1)[1] for n in names[1:] if n.endswith(".py")) == expected


def test_the_packed_file_runs_the_cli_and_says_where_it_is(tmp_path: Path) -> None:
    target = tmp_path / "cli.pyz"
    target.write_bytes(pack().data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["ORCHESJOB_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, str(target), "version"], env=env, cwd=str(tmp_path), capture_output=True, check=True
    )
    info = json.loads(out.stdout)
    assert info["path"] == str(target) and info["contract"] == CONTRACT_VERSION and info["executable"]
    failed = subprocess.run(
        [sys.executable, str(target), "status", "--job-id", "nope"], env=env, cwd=str(tmp_path), capture_output=True
    )
    assert failed.returncode == 3  # the CLI's exit codes survive the zipapp's __main__


def test_make_pyz_writes_the_providers_bytes(tmp_path: Path) -> None:
    """One rule for the zipapp: tools/build_pyz.py and the provider's upload are the same file."""
    target = tmp_path / "orchesjob.pyz"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "build_pyz.py"), str(target)], check=True, capture_output=True
    )
    assert target.read_bytes() == pack(str(REPO_ROOT / "orchesjob")).data
    assert os.access(target, os.X_OK)
