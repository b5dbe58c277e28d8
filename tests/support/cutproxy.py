"""A TCP proxy on 127.0.0.1 that forwards bytes to a real server and cuts connections at chosen byte counts.

Why bytes and not time: an SSH session is a fixed sequence of packets (handshake, login, channel open, the exec
request, the reply), so "after N bytes from the client" or "after N bytes from the server" names a moment of the
protocol exactly and reproducibly, whatever the machine's load. A plan callable picks the cut of each new
connection (or none); every connection's byte counts and timeline are kept, so a test can calibrate the offsets of
one uncut session and then aim cuts at its phases.

Cut styles:

- ``rst``: forward the bytes before the cut point, then reset both sides (SO_LINGER 0): a dropped link or a killed
  peer;
- ``fin``: the same with an orderly close;
- ``blackhole``: stop forwarding in both directions and keep both sockets open, as a network partition does; the
  connection is closed only when the client gives up (or after ``blackhole_hold`` seconds).

Pure standard library and threads; no pytest import (usable from scripts).
"""

from __future__ import annotations

import dataclasses
import select
import socket
import struct
import threading
import time
from typing import Callable, Optional

C2S = "c2s"
S2C = "s2c"
STYLES = ("rst", "fin", "blackhole")
# The Airflow connection through the proxy that the ``cut_proxy`` fixture (tests/support/fixtures.py) sets up.
CUT_CONN_ID = "orchesjob_cut"


@dataclasses.dataclass(frozen=True)
class Cut:
    """Cut a connection once ``after`` bytes went in ``direction`` (``c2s`` or ``s2c``)."""

    direction: str
    after: int
    style: str = "rst"

    def __post_init__(self) -> None:
        if self.direction not in (C2S, S2C):
            raise ValueError(f"direction must be {C2S!r} or {S2C!r}, not {self.direction!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, not {self.style!r}")
        if self.after < 0:
            raise ValueError("after must be >= 0")


@dataclasses.dataclass
class ConnRecord:
    """What happened on one proxied connection."""

    index: int
    cut: Cut | None
    c2s: int = 0
    s2c: int = 0
    cut_done: bool = False
    cut_at: tuple[str, int] | None = None
    closed: bool = False
    # (monotonic time, direction, bytes forwarded) for every forwarded piece
    timeline: list[tuple[float, str, int]] = dataclasses.field(default_factory=list)


Plan = Callable[[int], Optional[Cut]]


class CutProxy:
    """Listen on ``host``:random port, forward every connection to ``target``, cut as ``plan`` says.

    ``plan(index)`` is called once per accepted connection (index 0, 1, 2, ...) and returns a ``Cut`` or None.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        plan: Plan | None = None,
        *,
        host: str = "127.0.0.1",
        blackhole_hold: float = 120.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.plan: Plan = plan or (lambda index: None)
        self.host = host
        self.blackhole_hold = blackhole_hold
        self.port = 0
        self.connections: list[ConnRecord] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: list[tuple[socket.socket, socket.socket]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> CutProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(64)
        sock.settimeout(0.2)
        self._listener = sock
        self.port = sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="cutproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        self.drop_all()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> CutProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_plan(self, plan: Plan) -> None:
        with self._lock:
            self.plan = plan

    def drop_all(self) -> None:
        """Reset every open connection now (unblocks a client stuck on a blackholed one)."""
        with self._lock:
            pairs = list(self._open)
        for a, b in pairs:
            _reset(a)
            _reset(b)

    # ------------------------------------------------------------------ internals
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                index = len(self.connections)
                try:
                    cut = self.plan(index)
                except Exception:  # noqa: BLE001 - a broken plan must not kill the proxy
                    cut = None
                record = ConnRecord(index=index, cut=cut)
                self.connections.append(record)
            t = threading.Thread(target=self._serve, args=(client, record), name=f"cutproxy-{index}", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, client: socket.socket, rec: ConnRecord) -> None:
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(client)
            rec.closed = True
            return
        for s in (client, server):
            s.setblocking(True)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.append((client, server))
        try:
            self._pump(client, server, rec)
        finally:
            with self._lock:
                if (client, server) in self._open:
                    self._open.remove((client, server))
            rec.closed = True

    def _pump(self, client: socket.socket, server: socket.socket, rec: ConnRecord) -> None:
        cut = rec.cut
        peers = {client: (server, C2S), server: (client, S2C)}
        while True:
            try:
                readable, _, _ = select.select([client, server], [], [], 0.5)
            except (OSError, ValueError):
                return
            if self._stopping.is_set():
                _reset(client)
                _reset(server)
                return
            for src in readable:
                dst, direction = peers[src]
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    # orderly end from one side: pass it on and finish
                    _close(dst)
                    _close(src)
                    return
                count = rec.c2s if direction == C2S else rec.s2c
                if (
                    cut is not None
                    and not rec.cut_done
                    and cut.direction == direction
                    and count + len(data) > cut.after
                ):
                    head = data[: max(0, cut.after - count)]
                    if head and not _send(dst, head):
                        _reset(src)
                        return
                    self._count(rec, direction, len(head))
                    rec.cut_done = True
                    rec.cut_at = (direction, count + len(head))
                    self._do_cut(client, server, cut.style)
                    return
                if not _send(dst, data):
                    _reset(src)
                    return
                self._count(rec, direction, len(data))

    @staticmethod
    def _count(rec: ConnRecord, direction: str, n: int) -> None:
        if direction == C2S:
            rec.c2s += n
        else:
            rec.s2c += n
        rec.timeline.append((time.monotonic(), direction, n))

    def _do_cut(self, client: socket.socket, server: socket.socket, style: str) -> None:
        if style == "rst":
            _reset(client)
            _reset(server)
            return
        if style == "fin":
            _close(client)
            _close(server)
            return
        # blackhole: swallow everything until the client hangs up, the hold expires, or the proxy stops
        deadline = time.monotonic() + self.blackhole_hold
        socks = [client, server]
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                readable, _, _ = select.select(socks, [], [], 0.2)
            except (OSError, ValueError):
                break
            gone = False
            for s in readable:
                try:
                    if not s.recv(65536):
                        gone = gone or s is client
                        if s is server:
                            socks = [client]
                except OSError:
                    gone = gone or s is client
                    if s is server:
                        socks = [client]
            if gone:
                break
        _reset(client)
        _reset(server)


@dataclasses.dataclass(frozen=True)
class Phases:
    """Byte offsets of one SSH session that runs one command, as seen by the proxy (see ``phases_of``)."""

    c_login: int  # client bytes before the channel-open request (handshake + authentication)
    s_login: int  # server bytes by then
    c_exec: tuple[int, int]  # client bytes before / after the exec request
    s_exec: int  # server bytes forwarded when the exec request went through (its acknowledgement comes next)
    s_reply: int  # server bytes before the command's answer starts
    c_total: int
    s_total: int


def phases_of(rec: ConnRecord) -> Phases:
    """Find the phases in an uncut session from its shape, not its timing. The client's packets end with
    channel-open, the exec request, EOF (sent once the request is acknowledged) and, not always, a channel close
    after the answer; EOF is the client's last packet that the server still answers (with the command's output).
    The SSH packets of a session are the same every time for command lines of the same length, so cuts of later
    sessions can be aimed at these offsets."""
    c = s = 0
    client = []  # (client bytes before, server bytes before, client bytes after, index) per client packet
    last_server = -1
    for i, (_, direction, n) in enumerate(rec.timeline):
        if direction == C2S:
            client.append((c, s, c + n, i))
            c += n
        else:
            s += n
            last_server = i
    answered = [p for p in client if p[3] < last_server]
    if len(answered) < 5:
        raise ValueError("calibration: unexpected session shape %r" % rec.timeline)
    chan_open, exec_req, eof = answered[-3], answered[-2], answered[-1]
    return Phases(
        c_login=chan_open[0],
        s_login=chan_open[1],
        c_exec=(exec_req[0], exec_req[2]),
        s_exec=exec_req[1],
        s_reply=eof[1],
        c_total=rec.c2s,
        s_total=rec.s2c,
    )


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
