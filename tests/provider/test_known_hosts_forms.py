"""Every form a known_hosts file takes, on both paths: the worker's (the sync hook, paramiko) and the triggerer's
(the async hook the trigger uses, asyncssh) must reach the same verdict, and a refusal is always a typed, non-transient
``OrchesjobTransportError`` that names the connection and the reason (never a raw library exception).

Real sshd servers, real known_hosts files (hashed ones made by ``ssh-keygen -H``), a real OpenSSH CA signing a real
host certificate. HOME is an empty directory, so no ~/.ssh of the machine takes part.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.airflow_case import AirflowCase, job_log_lines
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs
from tests.support.sshd import SshServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd]

CONN_ID = "orchesjob_known_hosts"


# ---------------------------------------------------------------------- keys and servers


def keygen(path: Path, kind: str = "ed25519") -> str:
    """A new key pair at `path`; returns the public key as "TYPE BASE64"."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return " ".join(Path(str(path) + ".pub").read_text().split()[:2])


class Keys:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_path = directory / "ca"
        self.ca = keygen(self.ca_path)  # an OpenSSH certification authority
        self.other = keygen(directory / "other")  # some key no host has


def certified_server(directory: Path, keys: Keys, *, only_certificate: bool) -> SshServer:
    """An sshd whose ed25519 host key is certified by the CA. Besides the certificate it offers its plain ed25519 and
    an RSA host key, or (only_certificate) nothing but the certificate."""
    directory.mkdir(parents=True)
    host_key = directory / "ssh_host_ed25519_key"  # where SshServer looks for its host key (made here, kept there)
    keygen(host_key)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(keys.ca_path),
            "-I",
            "test-host",
            "-h",
            "-n",
            "127.0.0.1",
            str(host_key) + ".pub",
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    config = [f"HostCertificate {host_key}-cert.pub"]
    if only_certificate:
        config.append("HostKeyAlgorithms ssh-ed25519-cert-v01@openssh.com")
    else:
        keygen(directory / "ssh_host_rsa_key", "rsa")
        config.append(f"HostKey {directory / 'ssh_host_rsa_key'}")
    return SshServer(directory, extra_config=config)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("known-hosts-keys"))


@pytest.fixture(scope="module")
def mixed_host(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[SshServer]:
    server = certified_server(tmp_path_factory.mktemp("mixed") / "sshd", keys, only_certificate=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def certificate_only_host(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[SshServer]:
    server = certified_server(tmp_path_factory.mktemp("certonly") / "sshd", keys, only_certificate=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rsa_key(server: SshServer) -> str:
    return " ".join((server.directory / "ssh_host_rsa_key.pub").read_text().split()[:2])


# ---------------------------------------------------------------------- both paths


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., str]:
    """connect(server, **extras) -> a connection id to `server` with these extras and no host-key default."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))

    def use(server: SshServer, **extra: Any) -> str:
        conn = server.airflow_connection()
        conn["extra"].pop("no_host_key_check", None)
        conn["extra"].update(extra)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
        return CONN_ID

    return use


def _sync(conn_id: str, launcher: str, home: str) -> Any:
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    with OrchesjobHook(
        conn_id,
        orchesjob_bin=launcher,
        orchesjob_home=home,
        retries=0,
        ssh_hook_kwargs=fast_ssh_hook_kwargs(conn_timeout=5),
    ) as hook:
        return hook.version()


def _async(conn_id: str, launcher: str, home: str) -> Any:
    from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook

    async def go() -> Any:
        hook = OrchesjobAsyncHook(conn_id, orchesjob_bin=launcher, orchesjob_home=home, connect_timeout=5)
        try:
            return await hook.version()
        finally:
            await hook.close()

    return asyncio.run(go())


def verdict(path: Callable[[str, str, str], Any], conn_id: str, launcher: str, home: str) -> tuple[str, str]:
    """("accepted", "") or ("refused", message); anything else (a raw library error) is ("raised", repr)."""
    from orchesjob_provider.exceptions import OrchesjobTransportError

    try:
        answer = path(conn_id, launcher, home)
    except OrchesjobTransportError as exc:
        if exc.transient or exc.sent:
            return "raised", f"transient={exc.transient} sent={exc.sent}: {exc}"
        return "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - what the test reports: a raw error instead of a verdict
        return "raised", repr(exc)
    return ("accepted", "") if answer.get("contract") else ("raised", repr(answer))


def both(conn_id: str, launcher: str, home: str, expect: str, *words: str) -> None:
    """Both paths give `expect`; a refusal names the connection, says `words`, and that nothing was sent."""
    seen = {path.__name__: verdict(path, conn_id, launcher, home) for path in (_sync, _async)}
    assert {name: kind for name, (kind, _) in seen.items()} == {"_sync": expect, "_async": expect}, seen
    for _name, (_kind, message) in seen.items():
        for word in (conn_id, "Nothing was sent", *words) if expect == "refused" else ():
            assert word in message, (word, seen)
    if expect == "refused":
        assert not Path(home).exists()  # not even `version` ran on the host


def hashed(path: Path, text: str) -> str:
    """`text` as a known_hosts file hashed by OpenSSH's own `ssh-keygen -H`."""
    path.write_text(text)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    out = path.read_text()
    assert "|1|" in out and "127.0.0.1" not in out, out
    return out


# ---------------------------------------------------------------------- the cases


def _accepted_cases(host: str, port: int, key: str, other: str, ca: str) -> dict[str, str]:
    k_type, k_data = key.split()
    return {
        "plain [host]:port": f"[{host}]:{port} {key}\n",
        "plain host (no [host]:port line)": f"{host} {key}\n",
        "@cert-authority line and the host's key": f"@cert-authority * {ca}\n[{host}]:{port} {key}\n",
        "@cert-authority for the host and the host's key": f"@cert-authority [{host}]:{port} {ca}\n{host} {key}\n",
        "@revoked other key and the host's key": f"@revoked * {other}\n[{host}]:{port} {key}\n",
        "comments, blank lines, tabs, a trailing comment": (
            f"# known hosts\n\n   \n  # indented\n[{host}]:{port}\t{k_type}\t{k_data} the host's key\n"
        ),
        "a comment that is not UTF-8": f"# caf\xe9 {host}\n[{host}]:{port} {key}\n",
        "wildcards": f"otherhost,[{host}]:* {key}\n",
        "? wildcard on the host name": f"127.0.0.? {key}\n",
        "negation of another host": f"*,!otherhost {key}\n",
        "another host's key first": f"otherhost {other}\n[{host}]:{port} {key}\n",
    }


def _refused_cases(host: str, port: int, key: str, other: str, ca: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    k_type, k_data = key.split()
    return {
        "@revoked host key also listed": (
            f"[{host}]:{port} {key}\n@revoked [{host}]:{port} {key}\n",
            ("revoked", "line 2"),
        ),
        "@revoked * before the host's key": (f"@revoked * {key}\n[{host}]:{port} {key}\n", ("revoked", "line 1")),
        "@revoked under the host name only": (f"[{host}]:{port} {key}\n@revoked {host} {key}\n", ("revoked",)),
        "only @cert-authority": (f"@cert-authority [{host}]:{port} {ca}\n", ("@cert-authority", "line 1")),
        "only @cert-authority *": (f"# CA\n@cert-authority * {ca}\n", ("@cert-authority", "line 2")),
        "another key for the host": (f"[{host}]:{port} {other}\n", ("not the key", "posing")),
        "negated host": (f"*,![{host}]:{port},!{host} {key}\n", ("lists no key",)),
        "another host only": (f"otherhost {key}\n", ("lists no key",)),
        "too few fields": (f"[{host}]:{port} {key}\n[{host}]:{port} {k_type}\n", ("line 2 cannot be read",)),
        "key not base64": (f"otherhost {k_type} AAAA!!!!\n[{host}]:{port} {key}\n", ("line 1 cannot be read",)),
        "unknown marker": (f"@trusted * {key}\n[{host}]:{port} {key}\n", ("line 1 cannot be read", "@trusted")),
        "key type not the key's": (f"otherhost ssh-rsa {k_data}\n[{host}]:{port} {key}\n", ("line 1 cannot be read",)),
        "damaged hashed name": (f"|1|abc|def {key}\n[{host}]:{port} {key}\n", ("line 1 cannot be read", "|1|")),
    }


ACCEPTED = list(_accepted_cases("h", 1, "t d", "o p", "c a"))
REFUSED = list(_refused_cases("h", 1, "t d", "o p", "c a"))


@pytest.mark.parametrize("case", ACCEPTED)
def test_known_hosts_forms_that_trust_the_host(
    sshd: SshServer, keys: Keys, connect, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path, case: str
) -> None:
    listed = tmp_path / "known_hosts"
    text = _accepted_cases(sshd.host, sshd.port, sshd.host_public_key, keys.other, keys.ca)[case]
    listed.write_bytes(text.encode("latin-1"))
    both(connect(sshd, known_hosts=str(listed)), orchesjob_launcher, orchesjob_home, "accepted")


@pytest.mark.parametrize("case", REFUSED)
def test_known_hosts_forms_that_refuse_the_host(
    sshd: SshServer, keys: Keys, connect, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path, case: str
) -> None:
    listed = tmp_path / "known_hosts"
    text, words = _refused_cases(sshd.host, sshd.port, sshd.host_public_key, keys.other, keys.ca)[case]
    listed.write_text(text)
    both(connect(sshd, known_hosts=str(listed)), orchesjob_launcher, orchesjob_home, "refused", str(listed), *words)


def test_hashed_lines_as_ssh_keygen_writes_them(
    sshd: SshServer, keys: Keys, connect, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    listed = tmp_path / "known_hosts"
    conn_id = connect(sshd, known_hosts=str(listed))
    hashed(listed, f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "accepted")
    hashed(listed, f"{sshd.host} {sshd.host_public_key}\n")  # the host name alone, as for port 22
    both(conn_id, orchesjob_launcher, orchesjob_home, "accepted")
    hashed(listed, f"[{sshd.host}]:{sshd.port} {keys.other}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "not the key")
    hashed(listed, f"otherhost {sshd.host_public_key}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "lists no key")
    one = hashed(listed, f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n")
    listed.write_text(one + "@revoked " + one)  # ssh-keygen -H leaves marker lines as they are: mark its hashed line
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "revoked", "line 2")


def test_a_missing_or_unreadable_known_hosts_file_trusts_nothing(
    sshd: SshServer, connect, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "known_hosts"
    both(connect(sshd, known_hosts=str(missing)), orchesjob_launcher, orchesjob_home, "refused", "does not exist")
    a_directory = tmp_path / "a-directory"
    a_directory.mkdir()
    both(connect(sshd, known_hosts=str(a_directory)), orchesjob_launcher, orchesjob_home, "refused", "cannot be read")


# ---------------------------------------------------------------------- hosts with certificates


def test_a_certified_host_with_plain_keys_is_judged_by_its_plain_key(
    mixed_host: SshServer, keys: Keys, connect, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    listed = tmp_path / "known_hosts"
    host, port, ed25519, rsa = mixed_host.host, mixed_host.port, mixed_host.host_public_key, rsa_key(mixed_host)
    conn_id = connect(mixed_host, known_hosts=str(listed))
    # The CA line breaks nothing, and the host presents its plain key (certificates are offered last).
    listed.write_text(f"@cert-authority * {keys.ca}\n[{host}]:{port} {ed25519}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "accepted")
    # A valid certificate from a listed CA is not enough on either path.
    listed.write_text(f"@cert-authority * {keys.ca}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "@cert-authority", "line 1")
    # Only its RSA key listed: both paths ask for that one first.
    listed.write_text(f"[{host}]:{port} {rsa}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "accepted")
    # Its RSA key revoked, its ed25519 key listed: the revoked key is not asked for, the listed one is.
    listed.write_text(f"@revoked * {rsa}\n[{host}]:{port} {rsa}\n[{host}]:{port} {ed25519}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "accepted")
    # Both of its keys revoked.
    listed.write_text(f"@revoked * {rsa}\n@revoked * {ed25519}\n[{host}]:{port} {ed25519}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "revoked")


def test_a_host_that_offers_only_a_certificate_is_refused_on_both_paths(
    certificate_only_host: SshServer, keys: Keys, connect, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    listed = tmp_path / "known_hosts"
    host, port, key = certificate_only_host.host, certificate_only_host.port, certificate_only_host.host_public_key
    conn_id = connect(certificate_only_host, known_hosts=str(listed))
    listed.write_text(f"@cert-authority * {keys.ca}\n[{host}]:{port} {key}\n")
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "host certificate")
    listed.write_text(f"[{host}]:{port} {key}\n")  # the certified key itself listed: still a certificate
    both(conn_id, orchesjob_launcher, orchesjob_home, "refused", "host certificate")
    pinned = connect(certificate_only_host, host_key=key)
    both(pinned, orchesjob_launcher, orchesjob_home, "refused", "host certificate")
    unchecked = connect(certificate_only_host, no_host_key_check=True)
    both(unchecked, orchesjob_launcher, orchesjob_home, "accepted")


# ---------------------------------------------------------------------- real Airflow


@pytest.mark.airflow
def test_real_airflow_tasks_judge_known_hosts_files_alike_on_worker_and_triggerer(
    af: AirflowCase, sshd: SshServer, keys: Keys, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    af.extra_env["HOME"] = str(home)
    with_ca = tmp_path / "known_hosts_with_ca"
    with_ca.write_text(f"@cert-authority * {keys.ca}\n[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n")
    revoked = tmp_path / "known_hosts_revoked"
    revoked.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n@revoked * {sshd.host_public_key}\n")
    for name, path in (("ORCHESJOB_WITH_CA", with_ca), ("ORCHESJOB_REVOKED", revoked)):
        conn = sshd.airflow_connection()
        conn["extra"].pop("no_host_key_check")
        conn["extra"]["known_hosts"] = str(path)
        af.extra_env[f"AIRFLOW_CONN_{name}"] = json.dumps(conn)
    spec = {
        "dag_id": "t_known_hosts_forms",
        "tasks": [
            {
                "task_id": "with_ca_deferred",
                "kwargs": {"command": ["echo", "ca ok"], "ssh_conn_id": "orchesjob_with_ca", "run_key": "ca-d"},
            },
            {
                "task_id": "with_ca_polling",
                "kwargs": {
                    "command": ["echo", "ca ok too"],
                    "ssh_conn_id": "orchesjob_with_ca",
                    "run_key": "ca-p",
                    "deferrable": False,
                },
            },
            {
                "task_id": "revoked_deferred",
                "kwargs": {"command": ["true"], "ssh_conn_id": "orchesjob_revoked", "run_key": "revoked-d"},
            },
            {
                "task_id": "revoked_polling",
                "kwargs": {
                    "command": ["true"],
                    "ssh_conn_id": "orchesjob_revoked",
                    "run_key": "revoked-p",
                    "deferrable": False,
                },
            },
        ],
    }
    run = af.dags_test(spec=spec)
    assert af.sandbox.task_states("t_known_hosts_forms") == {
        "with_ca_deferred": "success",
        "with_ca_polling": "success",
        "revoked_deferred": "failed",
        "revoked_polling": "failed",
    }, run.describe()
    lines = [line for _, line in job_log_lines(run.output)]
    assert "ca ok" in lines and "ca ok too" in lines
    assert "is revoked" in run.output and f"{revoked} line 2: @revoked" in run.output
    assert "InvalidHostKey" not in run.output
    for key in ("revoked-d", "revoked-p"):
        assert af.cli("status", "--run-key", key, check=False)["error"] == "not_found"


# ---------------------------------------------------------------------- the matching rule itself (pure functions)


def test_host_patterns_match_as_openssh_matches_them(tmp_path: Path) -> None:
    from orchesjob_provider.host_keys import host_matches

    assert host_matches("Build-1.Example.COM", "build-1.example.com")  # names compare in lower case
    assert host_matches("*.example.com", "a.b.example.com") and not host_matches("*.example.com", "example.com")
    assert host_matches("build-?", "build-7") and not host_matches("build-?", "build-17")
    assert host_matches("[10.0.0.*]:2222", "[10.0.0.5]:2222") and not host_matches("10.0.0.*", "[10.0.0.5]:2222")
    assert not host_matches("*,!db.example.com", "db.example.com") and host_matches("*,!db.example.com", "web")
    assert not host_matches("!web", "web") and not host_matches("!other", "web")  # a negation alone matches nothing
    listed = tmp_path / "known_hosts"
    hashed(
        listed,
        "[db.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
    )
    field = listed.read_text().split()[0]
    assert host_matches(field, "[DB.example.com]:2222") and not host_matches(field, "db.example.com")
