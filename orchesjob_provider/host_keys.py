"""The one host-key rule of both transports (paramiko for workers, asyncssh for the triggerer).

Secure by default, whatever the SSH provider version: a host whose key is not trusted is refused before anything is
sent to it (no password, no key signature, no command). What is trusted, from the SSH connection's extras, first
match wins:

1. ``no_host_key_check: true``: any key (nothing is checked, nothing is written to any known_hosts file). Only on a
   network where no one can pose as the host.
2. ``host_key``: exactly that public key (``"ssh-ed25519 AAAA..."``; a bare base64 key is taken as RSA, as the SSH
   provider does). Setting it together with ``no_host_key_check: true`` is an error.
3. ``known_hosts``: the keys that file (a path on the worker/triggerer, ``~`` allowed) lists for the host.
4. Otherwise the keys ``~/.ssh/known_hosts`` of the user running Airflow lists for the host.

A host on a port other than 22 is looked up in a known_hosts file as ``[host]:port`` (as OpenSSH writes it) and,
without such an entry, as ``host`` (asyncssh's lookup, which the paramiko side does too). The SSH provider's own
defaults are not used: provider 4.x (Airflow 2.10, MWAA) accepts any unknown host unless told otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import paramiko

from orchesjob_provider.exceptions import OrchesjobInvalidArgument

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def truthy(value: Any) -> bool:
    """Connection extras arrive as JSON booleans or as strings ("true", "True") depending on how they were made."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _key_text(host_key: str) -> str:
    parts = str(host_key).split()
    if not parts:
        raise OrchesjobInvalidArgument("the SSH connection's host_key extra is empty")
    return " ".join(parts[:2]) if len(parts) >= 2 else f"ssh-rsa {parts[0]}"


@dataclass(frozen=True)
class HostKeyRule:
    """Which host keys a connection trusts (see the module docstring). Build it with ``host_key_rule``."""

    conn_id: str
    host: str
    port: int
    check: bool  # False: no_host_key_check
    host_key: str | None  # "type base64", when pinned
    known_hosts: str | None  # the file to read trusted keys from, when not pinned

    @property
    def lookup_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def describe(self) -> str:
        if not self.check:
            return "no_host_key_check: true (any key accepted)"
        if self.host_key:
            return "its host_key extra"
        return f"the known_hosts file {self.known_hosts}"

    def refusal(self, detail: str) -> str:
        """The error for a refused host: which connection, why, and which extra fixes it."""
        return (
            f"host key of {self.host} port {self.port} refused for SSH connection {self.conn_id!r} (checked against "
            f"{self.describe()}): {detail}. Nothing was sent to the host. To trust it, set the connection's `host_key` "
            f"extra to the host's public key (`ssh-keyscan -p {self.port} {self.host}` prints it), or its "
            f"`known_hosts` extra to a known_hosts file listing {self.lookup_name}, or add it to {DEFAULT_KNOWN_HOSTS} "
            "of the user running Airflow; `no_host_key_check: true` turns the check off (trusted networks only)."
        )

    # ------------------------------------------------------------------ asyncssh

    def asyncssh_known_hosts(self) -> Any:
        """The ``known_hosts`` argument of ``asyncssh.connect`` for this rule."""
        import asyncssh

        if not self.check:
            return None
        if self.host_key:
            return ([asyncssh.import_public_key(_key_text(self.host_key))], [], [])
        path = self.known_hosts or ""
        if not os.path.isfile(path):
            return ([], [], [])  # no trusted key at all: every host is refused
        return path

    # ------------------------------------------------------------------ paramiko

    def apply_to_paramiko(self, client: Any) -> None:
        """Load the trusted keys into a fresh ``paramiko.SSHClient`` and make it refuse any other (nothing is ever
        saved to a file)."""
        rule = self

        class _Refuse(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                raise HostKeyRefused(rule.refusal(f"{key.get_name()} key not trusted for {hostname}"))

        class _Accept(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                return None

        keys = client.get_host_keys()
        if not self.check:
            client.set_missing_host_key_policy(_Accept())
            return
        client.set_missing_host_key_policy(_Refuse())
        if self.host_key:
            key = _paramiko_key(_key_text(self.host_key))
            keys.add(self.lookup_name, key.get_name(), key)
        elif self.known_hosts and os.path.isfile(self.known_hosts):
            keys.load(self.known_hosts)  # HostKeys.load: unlike SSHClient.load_host_keys, never written back
            if self.port != 22 and keys.lookup(self.lookup_name) is None:
                # asyncssh's lookup: no entry for [host]:port, then the host's own entries; paramiko's has no such
                # second step, so it is made here.
                for kind, key in (keys.lookup(self.host) or {}).items():
                    keys.add(self.lookup_name, kind, key)


def _paramiko_key(text: str) -> Any:
    """A paramiko public key from "type base64" (older paramiko has no ``PKey.from_type_string``)."""
    import base64

    kind, data = text.split(" ", 1)
    raw = base64.b64decode(data)
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key = cls(data=raw)
        except Exception:  # noqa: BLE001 - try the next key type
            continue
        if key.get_name() == kind:
            return key
    raise OrchesjobInvalidArgument(f"unsupported host_key type {kind!r}")


class HostKeyRefused(paramiko.SSHException):
    """paramiko refused the host's key under the rule (the message is ``HostKeyRule.refusal``'s)."""


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
        conn_id, str(host), int(port) if port else 22, not no_check, str(host_key) if host_key else None, known_hosts
    )
