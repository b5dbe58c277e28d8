"""A private PostgreSQL and a private Redis on 127.0.0.1, each in a directory of its own, for the live tests.

They are the metadata database and the Celery broker of the production-shaped Airflow deployment
(tests/support/prod_airflow.py). Each is a real server binary from the distribution (Debian's ``postgresql`` and
``redis-server``) run in the foreground as a child of the test process, in a process group of its own, on a free
port: nothing is installed as a service, nothing listens beyond the loopback address, and :meth:`stop` leaves no
process and no data behind.

A test restarts them the way an operator would (:meth:`restart`: a fast shutdown, then the same server on the same
port and the same data), or kills them (:meth:`kill`) as a crash would.

PostgreSQL refuses to run as root. Started by root, the server runs as the distribution's ``postgres`` account (or,
where there is none, the account named by ``ORCHESJOB_TEST_PG_USER``), with its data directory made for that account
under the system's temporary directory, since pytest's own temporary directories are private to root.

No pytest here (fixtures wrap it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from tests.support.sshd import free_port

PG_INSTALL_HINT = "apt-get install postgresql"
REDIS_INSTALL_HINT = "apt-get install redis-server"


class DataServerError(RuntimeError):
    """A server could not be found, started or stopped; the message carries the end of its log."""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _Server:
    """One server process in its own process group, its output appended to ``log``."""

    name = "server"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError

    def _launch(self, timeout: float) -> None:
        self._log_file = open(self.log, "ab")
        self.process = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._popen_kwargs(),
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise DataServerError(f"{self.name} exited with {self.process.returncode}:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                raise DataServerError(f"{self.name} not ready within {timeout:g}s:\n{_tail(self.log)}")
            time.sleep(0.2)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def shutdown(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Ask the server to stop with ``sig`` and wait; SIGKILL its whole group if it has not gone in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # whatever of the group is left (a server's own children)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise DataServerError(f"{self.name} (pid {self.process.pid}) survived SIGKILL") from exc
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL the server's group: a crash, no shutdown of its own."""
        self.shutdown(signal.SIGKILL, timeout=30)


class Postgres(_Server):
    """A private PostgreSQL cluster: ``initdb`` into a fresh directory, one database, trust auth on 127.0.0.1 only.

    Durability settings are relaxed (``fsync=off``): a test machine is not a power cut, and a restart here is a
    shutdown or a SIGKILL of the server, after which PostgreSQL recovers from its WAL as always.
    """

    name = "postgres"

    def __init__(self, log: Path, database: str = "airflow", user: str = "airflow") -> None:
        super().__init__(log)
        self.database = database
        self.user = user
        self.port = free_port()
        self.bin = self._find_bin()
        self.run_as = self._account()
        self.base = Path(tempfile.mkdtemp(prefix="orchesjob-pg-"))
        self.data = self.base / "data"
        if self.run_as is not None:
            os.chown(self.base, self.run_as.pw_uid, self.run_as.pw_gid)

    @staticmethod
    def _find_bin() -> Path:
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4].split(".")[0])
        )
        if found:
            return Path(found[-1]).parent
        on_path = shutil.which("postgres")
        if on_path and shutil.which("initdb"):
            return Path(on_path).parent
        raise DataServerError(f"no PostgreSQL server binaries found ({PG_INSTALL_HINT})")

    @staticmethod
    def _account() -> pwd.struct_passwd | None:
        """The account the server runs as: None for this one; as root, an unprivileged one."""
        if os.geteuid() != 0:
            return None
        name = os.environ.get("ORCHESJOB_TEST_PG_USER", "postgres")
        try:
            return pwd.getpwnam(name)
        except KeyError as exc:
            raise DataServerError(
                f"PostgreSQL does not run as root, and there is no {name!r} account to run it as "
                f"({PG_INSTALL_HINT} makes one; or set ORCHESJOB_TEST_PG_USER)"
            ) from exc

    def _popen_kwargs(self) -> dict[str, Any]:
        if self.run_as is None:
            return {}
        return {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": [], "cwd": str(self.base)}

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg2) of the database."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def async_url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self, timeout: float = 120) -> Postgres:
        if not self.data.exists():
            with open(self.log, "ab") as log:
                initdb = subprocess.run(
                    [str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8"]
                    + ["--no-sync", "--locale=C"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    **self._popen_kwargs(),
                )
            if initdb.returncode != 0:
                raise DataServerError(f"initdb failed ({initdb.returncode}):\n{_tail(self.log)}")
            self._launch(timeout)
            self.execute(f'CREATE DATABASE "{self.database}"', database="postgres")
        else:
            self._launch(timeout)
        return self

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        argv = [str(self.bin / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _connect(self, database: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=database or self.database, connect_timeout=5
        )

    def _ready(self) -> bool:
        try:
            self._connect("postgres").close()
        except Exception:  # noqa: BLE001 - not accepting yet, whatever the reason
            return False
        return True

    def execute(self, sql: str, params: tuple[Any, ...] = (), database: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit mode and return its rows (none for a statement without)."""
        connection = self._connect(database)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            connection.close()

    def restart(self, timeout: float = 120) -> None:
        """A fast shutdown (SIGINT: open transactions roll back, every session is disconnected), then start."""
        self.shutdown(signal.SIGINT)
        self._launch(timeout)

    def stop(self) -> None:
        """Stop the server (fast shutdown; SIGKILL after 60 s) and delete its data."""
        try:
            self.shutdown(signal.SIGINT)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


class Redis(_Server):
    """A private Redis: no configuration file, its dump in its own directory, 127.0.0.1 only.

    The data survives a restart as with the distribution's configuration: the server writes its dump on shutdown and
    reads it on start.
    """

    name = "redis"

    def __init__(self, directory: Path, log: Path) -> None:
        super().__init__(log)
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        found = shutil.which(
            "redis-server", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
        )
        if found is None:
            raise DataServerError(f"no redis-server found ({REDIS_INSTALL_HINT})")
        self.binary = found

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "3600 1",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]

    def _ready(self) -> bool:
        if not _accepts(self.port):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 60) -> Redis:
        self._launch(timeout)
        return self

    def restart(self, timeout: float = 60) -> None:
        """SIGTERM (Redis writes its dump and exits), then start on the same port with that dump."""
        self.shutdown(signal.SIGTERM)
        self._launch(timeout)

    def stop(self) -> None:
        self.shutdown(signal.SIGTERM)
