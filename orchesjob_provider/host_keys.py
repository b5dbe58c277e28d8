"""The one host-key rule of both transports (paramiko for workers, asyncssh for the triggerer).

Secure by default, whatever the SSH provider version: a host whose key is not trusted is refused before anything is
sent to it (no password, no key signature, no command). What is trusted, from the SSH connection's extras, first
match wins:

1. ``no_host_key_check: true``: any key (nothing is checked, nothing is read from or written to any known_hosts
   file). Only on a network where no one can pose as the host.
2. ``host_key``: exactly that public key (``"ssh-ed25519 AAAA..."``; a bare base64 key is taken as RSA, as the SSH
   provider does). Setting it together with ``no_host_key_check: true`` is an error.
3. ``known_hosts``: the keys that file (a path on the worker/triggerer, ``~`` allowed) lists for the host.
4. Otherwise the keys ``~/.ssh/known_hosts`` of the user running Airflow lists for the host.

Both paths decide with the code of this module, not with their library's own known_hosts handling (paramiko does
not read ``@cert-authority`` or ``@revoked`` lines, wildcards or negations; asyncssh does, and accepts host
certificates): the library hands over the key the host presented, and ``Trust`` judges it. A known_hosts file is
read at every connection, as OpenSSH writes it:

- A line is ``[@marker] HOSTS KEYTYPE BASE64 [comment]``; blank lines and lines starting with ``#`` are ignored.
  HOSTS is a comma-separated list of patterns (``*`` and ``?`` wildcards, ``!`` negates: a host matching a negated
  pattern is not matched by that line), or one hashed name ``|1|SALT|HASH``. Names are compared in lower case.
- The keys of the plain lines (no marker) that match the host are trusted. The host is looked up as ``[host]:port``
  when the port is not 22 and, when no plain line matches that name, as ``host``.
- ``@revoked``: a key on a line that matches the host under either name is refused, even where another line lists
  it; the error says it is revoked and where.
- ``@cert-authority``: host certificates are not used, on either path, because paramiko (the workers' library)
  cannot check them. Such a line trusts no key and changes nothing: a host listed by its own key as well is
  accepted. A host that matches only ``@cert-authority`` lines (under either name) is refused, saying so.
- A line that cannot be read (too few fields, an unknown marker, a key that is not base64 or whose data names
  another type than KEYTYPE, a damaged hashed name) refuses every host, naming the file and the line: it may be the
  ``@revoked`` line meant for this host. A missing file trusts nothing; one that cannot be read refuses, saying why.

Both paths offer the same host-key algorithms, in the same order: those of the (unrevoked) keys trusted for the host
first, then the other plain ones (``ssh-ed25519``, ``ecdsa-sha2-nistp256/384/521``, ``rsa-sha2-512``,
``rsa-sha2-256``; less any the connection's ``disabled_algorithms`` extra lists under ``keys``), then their
certificate forms, last. So a host presents a certificate only when it offers no plain key at all, and such a host
is refused on both paths (with ``no_host_key_check`` it is accepted on both).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import paramiko

from orchesjob_provider.exceptions import OrchesjobInvalidArgument

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

# The plain host-key algorithms both paths offer, in this order (both libraries implement all of them; neither
# the SHA-1 ``ssh-rsa`` signature nor DSA, which OpenSSH no longer offers by default either).
PLAIN_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
CERT_SUFFIX = "-cert-v01@openssh.com"
_ALGORITHMS_OF_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}  # otherwise the key type itself
MARKERS = ("cert-authority", "revoked")


def truthy(value: Any) -> bool:
    """Connection extras arrive as JSON booleans or as strings ("true", "True") depending on how they were made."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


# ---------------------------------------------------------------------- keys and known_hosts lines


def key_blob(key_type: str, text: str) -> bytes:
    """The wire form of a public key from its known_hosts fields; ValueError saying why when it is not one."""
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("its key is not valid base64") from None
    if len(blob) < 4:
        raise ValueError("its key is too short to be one")
    (length,) = struct.unpack(">I", blob[:4])
    named = blob[4 : 4 + length]
    if len(named) != length or named != key_type.encode("ascii", "replace"):
        raise ValueError(f"its key data is not a {key_type} key")
    return blob


def blob_type(blob: bytes) -> str:
    (length,) = struct.unpack(">I", blob[:4])
    return blob[4 : 4 + length].decode("ascii", "replace")


def fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a key (what ``ssh-keygen -l`` and ``ssh`` print): SHA256:base64, unpadded."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class KnownHostsLine:
    """One key line of a known_hosts file."""

    path: str
    lineno: int
    marker: str | None  # None, "cert-authority" or "revoked"
    hosts: str  # the HOSTS field as written
    key_type: str
    blob: bytes

    def where(self) -> str:
        return f"{self.path} line {self.lineno}"

    def matches(self, name: str) -> bool:
        return host_matches(self.hosts, name)


class KnownHostsError(Exception):
    """A known_hosts file cannot be used: it cannot be read, or one of its lines cannot (the message names it)."""


def parse_known_hosts(data: bytes, path: str) -> list[KnownHostsLine]:
    """Every key line of a known_hosts file; KnownHostsError naming the first line that cannot be read."""
    out: list[KnownHostsLine] = []
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        text = raw.decode("utf-8", "replace").strip()  # a key line's fields are ASCII; a comment may be anything
        if not text or text.startswith("#"):
            continue
        try:
            out.append(_parse_line(text, path, lineno))
        except ValueError as exc:
            raise KnownHostsError(
                f"{path} line {lineno} cannot be read ({exc}), so the file is not used: a line that cannot be read "
                "may be the @revoked line of this host. Fix or remove that line"
            ) from None
    return out


def _parse_line(text: str, path: str, lineno: int) -> KnownHostsLine:
    fields = text.split()
    marker = None
    if fields[0].startswith("@"):
        marker = fields[0][1:]
        if marker not in MARKERS:
            raise ValueError(f"unknown marker {fields[0]!r}; known: @cert-authority, @revoked")
        fields = fields[1:]
    if len(fields) < 3:
        raise ValueError("expected HOSTS KEYTYPE BASE64-KEY [COMMENT]")
    hosts, key_type, key_text = fields[:3]
    if hosts.startswith("|"):
        _hashed_parts(hosts)
    return KnownHostsLine(path, lineno, marker, hosts, key_type, key_blob(key_type, key_text))


def _hashed_parts(field_: str) -> tuple[bytes, bytes]:
    """(salt, hash) of a hashed name ``|1|SALT|HASH``; ValueError when it is not one."""
    parts = field_.split("|")
    try:
        if len(parts) != 4 or parts[0] or parts[1] != "1":
            raise ValueError
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a hashed host name must be |1|SALT|HASH (base64)") from None
    if len(salt) != 20 or len(digest) != 20:
        raise ValueError("a hashed host name must be |1|SALT|HASH with a 20-byte salt and HMAC-SHA1")
    return salt, digest


def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def host_matches(hosts: str, name: str) -> bool:
    """Whether a known_hosts HOSTS field matches a host name (``host`` or ``[host]:port``), as OpenSSH matches it."""
    name = name.lower()
    if hosts.startswith("|"):
        salt, digest = _hashed_parts(hosts)
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    matched = False
    for pattern in hosts.lower().split(","):
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if pattern and _pattern(pattern).fullmatch(name):
            if negated:
                return False
            matched = True
    return matched


# ---------------------------------------------------------------------- the verdict


@dataclass
class Trust:
    """What one connection trusts, read when it is made; both paths hand it the host's key and ask.

    ``judge_key`` / ``judge_certificate`` return whether the host is accepted and, when not, leave the reason in
    ``refused`` (the transports turn it into ``HostKeyRule.refusal``).
    """

    rule: HostKeyRule
    trusted: list[KnownHostsLine] = field(default_factory=list)
    revoked: list[KnownHostsLine] = field(default_factory=list)
    authorities: list[KnownHostsLine] = field(default_factory=list)
    looked_up: str = ""  # the name the trusted lines were found under
    missing: bool = False  # the known_hosts file does not exist
    refused: str | None = None

    def algorithms(self) -> list[str]:
        """The plain host-key algorithms to offer, in order: the trusted keys' first (so that a host with several
        keys presents a listed one), then the rest; without those the connection's extras disable."""
        first: list[str] = []
        revoked = {line.blob for line in self.revoked}
        for line in self.trusted:
            if line.blob in revoked:
                continue
            for algorithm in _ALGORITHMS_OF_KEY_TYPE.get(line.key_type, (line.key_type,)):
                if algorithm in PLAIN_ALGORITHMS and algorithm not in first:
                    first.append(algorithm)
        ordered = first + [a for a in PLAIN_ALGORITHMS if a not in first]
        return [a for a in ordered if a not in self.rule.disabled_algorithms]

    def judge_key(self, blob: bytes) -> bool:
        """The verdict on the plain key the host presented (its wire form)."""
        if not self.rule.check:
            return True
        where = self.rule.describe_source()
        for line in self.revoked:
            if line.blob == blob:
                return self._refuse(
                    f"the host's {blob_type(blob)} key {fingerprint(blob)} is revoked ({line.where()}: @revoked), "
                    "and a revoked key is never trusted, whatever else lists it"
                )
        if any(line.blob == blob for line in self.trusted):
            return True
        offered = f"{blob_type(blob)} key {fingerprint(blob)}"
        if self.trusted:
            lines = ", ".join(str(line.lineno) for line in self.trusted)
            return self._refuse(
                f"the host presented the {offered}, which is not the key {where} lists for {self.looked_up} "
                f"(line {lines}). If the host's key was changed on purpose, update that; otherwise something may be "
                "posing as the host"
            )
        if self.authorities:
            lines = ", ".join(str(line.lineno) for line in self.authorities)
            return self._refuse(
                f"{where} trusts {self.looked_up} only through @cert-authority (line {lines}), and host "
                "certificates are not used (paramiko, the workers' SSH library, cannot check them): list the host's "
                f"own key there as well (it presented the {offered})"
            )
        if self.missing:
            return self._refuse(f"{where} does not exist, so no key is trusted (the host presented the {offered})")
        names = self.rule.lookup_name if self.rule.port == 22 else f"{self.rule.lookup_name} or {self.rule.host}"
        return self._refuse(f"{where} lists no key for {names} (the host presented the {offered})")

    def judge_certificate(self) -> bool:
        """The verdict on a host that presented a certificate: offered last, so it has no plain key to offer."""
        if not self.rule.check:
            return True
        return self._refuse(
            "the host presented a host certificate, not a plain host key: certificates are offered last, so it has "
            "no plain key the SSH libraries could agree on, and host certificates are not used (paramiko, the "
            "workers' SSH library, cannot check them). Let its sshd offer its plain host key as well, and trust that"
        )

    def _refuse(self, why: str) -> bool:
        self.refused = why
        return False

    # ------------------------------------------------------------------ the two libraries

    def paramiko_connect_kwargs(self, client: Any) -> dict[str, Any]:
        """Make a fresh ``paramiko.SSHClient`` judge the host by this trust; return what its ``connect()`` needs for
        it. Nothing is loaded into the client's HostKeys (so every key is judged here) and nothing is saved."""
        trust = self

        class _Judge(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                transport = client.get_transport()
                algorithm = str(getattr(transport, "host_key_type", "") or "")
                ok = trust.judge_certificate() if algorithm.endswith(CERT_SUFFIX) else trust.judge_key(key.asbytes())
                if not ok:
                    raise HostKeyRefused(trust.rule.refusal(str(trust.refused)))

        client.set_missing_host_key_policy(_Judge())
        algorithms = self.algorithms()

        def transport_factory(*args: Any, **kwargs: Any) -> Any:
            transport = paramiko.Transport(*args, **kwargs)
            # paramiko then offers these, less any disabled_algorithms, followed by their certificate forms
            transport.get_security_options().key_types = algorithms
            return transport

        return {"transport_factory": transport_factory}

    def asyncssh_connect_kwargs(self) -> dict[str, Any]:
        """The host-key arguments of ``asyncssh.connect`` for this trust."""
        import asyncssh

        algorithms = self.algorithms()
        kwargs: dict[str, Any] = {
            "server_host_key_algs": algorithms + [a + CERT_SUFFIX for a in algorithms],  # paramiko's order
            "x509_trusted_certs": None,
        }
        if not self.rule.check:
            kwargs["known_hosts"] = None
            return kwargs
        trust = self

        class _Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
                return trust.judge_key(bytes(key.public_data))

            def validate_host_ca_key(self, host: str, addr: str, port: int, key: Any) -> bool:
                return trust.judge_certificate()

        # Nothing listed for asyncssh itself: every key and certificate is handed to the callbacks above.
        kwargs["known_hosts"] = ([], [], [])
        kwargs["client_factory"] = _Client
        return kwargs


class HostKeyRefused(paramiko.SSHException):
    """paramiko refused the host's key under the rule (the message is ``HostKeyRule.refusal``'s)."""


# ---------------------------------------------------------------------- the rule of a connection


def _pinned_key(host_key: str) -> tuple[str, bytes]:
    parts = str(host_key).split()
    if not parts:
        raise OrchesjobInvalidArgument("the SSH connection's host_key extra is empty")
    key_type, text = (parts[0], parts[1]) if len(parts) >= 2 else ("ssh-rsa", parts[0])
    try:
        return key_type, key_blob(key_type, text)
    except ValueError as exc:
        raise OrchesjobInvalidArgument(
            f"the SSH connection's host_key extra is not a public key ({exc}); give it as `ssh-keyscan` prints it, "
            '"KEYTYPE BASE64"'
        ) from None


@dataclass(frozen=True)
class HostKeyRule:
    """Which host keys a connection trusts (see the module docstring). Build it with ``host_key_rule``."""

    conn_id: str
    host: str
    port: int
    check: bool  # False: no_host_key_check
    host_key: str | None  # "type base64", when pinned
    known_hosts: str | None  # the file to read trusted keys from, when not pinned
    disabled_algorithms: tuple[str, ...] = ()  # the connection's disabled_algorithms["keys"]

    @property
    def lookup_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def describe(self) -> str:
        if not self.check:
            return "no_host_key_check: true (any key accepted)"
        if self.host_key:
            return "its host_key extra"
        return f"the known_hosts file {self.known_hosts}"

    def describe_source(self) -> str:
        return "its host_key extra" if self.host_key else str(self.known_hosts)

    def refusal(self, detail: str) -> str:
        """The error for a refused host: which connection, why, and which extra fixes it."""
        return (
            f"host key of {self.host} port {self.port} refused for SSH connection {self.conn_id!r} (checked against "
            f"{self.describe()}): {detail}. Nothing was sent to the host. To trust it, set the connection's `host_key` "
            f"extra to the host's public key (`ssh-keyscan -p {self.port} {self.host}` prints it), or its "
            f"`known_hosts` extra to a known_hosts file listing {self.lookup_name}, or add it to {DEFAULT_KNOWN_HOSTS} "
            "of the user running Airflow; `no_host_key_check: true` turns the check off (trusted networks only)."
        )

    def trust(self) -> Trust:
        """What this rule trusts now: the known_hosts file is read here, once per connection. Raises
        ``KnownHostsError`` for a file that cannot be used and ``OrchesjobInvalidArgument`` for a bad ``host_key``."""
        trust = Trust(self, looked_up=self.lookup_name)
        if not self.check:
            return trust
        if self.host_key:
            key_type, blob = _pinned_key(self.host_key)
            trust.trusted = [KnownHostsLine("host_key", 0, None, self.lookup_name, key_type, blob)]
            return trust
        path = str(self.known_hosts)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            trust.missing = True  # nothing trusted: every host is refused
            return trust
        except OSError as exc:
            raise KnownHostsError(f"{path} cannot be read ({exc.strerror or exc})") from None
        lines = parse_known_hosts(data, path)
        names = [self.lookup_name] + ([self.host] if self.port != 22 else [])
        trust.revoked = [ln for ln in lines if ln.marker == "revoked" and any(ln.matches(n) for n in names)]
        trust.authorities = [ln for ln in lines if ln.marker == "cert-authority" and any(ln.matches(n) for n in names)]
        for name in names:
            found = [ln for ln in lines if ln.marker is None and ln.matches(name)]
            if found:
                trust.looked_up, trust.trusted = name, found
                break
        return trust

    # ------------------------------------------------------------------ the two libraries

    def apply_to_paramiko(self, client: Any) -> dict[str, Any]:
        """Make a fresh ``paramiko.SSHClient`` judge the host by this rule; return the keyword arguments its
        ``connect()`` needs for that. Raises ``HostKeyRefused`` when the known_hosts file cannot be used."""
        try:
            trust = self.trust()
        except KnownHostsError as exc:
            raise HostKeyRefused(self.refusal(str(exc))) from None
        return trust.paramiko_connect_kwargs(client)


def _disabled_key_algorithms(extras: Mapping[str, Any]) -> tuple[str, ...]:
    disabled = extras.get("disabled_algorithms")
    keys = disabled.get("keys") if isinstance(disabled, Mapping) else None
    if isinstance(keys, str):
        return (keys,)
    return tuple(str(k) for k in keys) if isinstance(keys, Sequence) else ()


def host_key_rule(conn_id: str, host: str | None, port: int | None, extras: Mapping[str, Any]) -> HostKeyRule:
    """The rule of one SSH connection, from its host, port and extras."""
    no_check = truthy(extras.get("no_host_key_check", False))
    host_key = extras.get("host_key") or None
    if no_check and host_key:
        raise OrchesjobInvalidArgument(
            f"the SSH connection {conn_id!r} sets both no_host_key_check and host_key; keep one"
        )
    known_hosts = None
    if not host_key:
        known_hosts = os.path.expanduser(str(extras.get("known_hosts") or DEFAULT_KNOWN_HOSTS))
    return HostKeyRule(
        conn_id,
        str(host),
        int(port) if port else 22,
        not no_check,
        str(host_key) if host_key else None,
        known_hosts,
        _disabled_key_algorithms(extras),
    )
