"""Unit tests of the few CLI functions worth testing on their own: they replace stdlib pieces for speed."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchesjob import argv, jsonin, jsonout, logfiles, rows
from orchesjob.errors import InvalidArgument

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_jsonout_writes_what_json_dumps_writes(value):
    assert jsonout.dumps(value) == json.dumps(value, indent=2)
    assert json.loads(jsonout.dumps(value)) == value


def _decoded(loads, text):
    try:
        return "value", repr(loads(text))
    except ValueError as e:  # json.JSONDecodeError is one
        return "refused", type(e).__name__, str(e)


JSON_PIECES = list('{}[]",:0123456789.eE+- \t\n\rtrufalsenNI\\u\x0cx\ufeff') + ['"\\ud800"', "NaN", "-Infinity"]


@settings(max_examples=600, deadline=None)
@given(st.one_of(json_values.map(json.dumps), st.lists(st.sampled_from(JSON_PIECES), max_size=14).map("".join)))
def test_jsonin_reads_and_refuses_what_json_loads_does(text):
    """Valid documents, and fragments of them that are mostly not: the same value or the same error, word for word."""
    assert _decoded(jsonin.loads, text) == _decoded(json.loads, text)


@pytest.mark.parametrize(
    "text",
    ["", " ", '{"a": 1} x', "[1] \x0c", "\ufeff{}", "[1,]", '{"a" 1}', "NaN", ' {"a": [1, 2.5e3]}\n\t', "1" * 5000],
)
def test_jsonin_edges(text):
    assert _decoded(jsonin.loads, text) == _decoded(json.loads, text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text().filter(lambda s: "\0" not in s), min_size=1, max_size=6).filter(lambda c: c[0] != ""),
    st.dictionaries(
        st.text(min_size=1).filter(lambda s: "=" not in s and "\0" not in s),
        st.text().filter(lambda s: "\0" not in s),
        max_size=4,
    ),
)
def test_argv_and_env_survive_storage(command, env):
    # (the CLI refuses an empty program name, so a command never starts with "")
    encoded = rows.encode({"command": command, "env": env})
    decoded = rows.decode(encoded)
    assert decoded["command"] == command
    assert decoded["env"] == env


def test_undecodable_argument_bytes_round_trip():
    arg = os.fsdecode(b"caf\xe9")  # not UTF-8: Python carries it as a surrogate escape
    assert rows.decode(rows.encode({"command": ["x", arg]}))["command"] == ["x", arg]


@pytest.mark.parametrize("data", ["héllo wörld 😀 end".encode(), b"plain ascii", "日本語テキスト".encode()])
def test_utf8_cut_never_splits_a_character(data):
    for n in range(len(data) + 1):
        keep = logfiles._complete_utf8(data[:n])
        assert keep <= n
        data[:keep].decode("utf-8")  # raises if a character was split
        assert n - keep < 4


def test_argv_parser_takes_the_command_verbatim():
    cmd, values = argv.parse(["start", "--run-key=k", "--env", "A=1", "--env=B=2", "--", "ls", "--run-key", "-l"])
    assert cmd == "start"
    assert values["run_key"] == "k" and values["env"] == ["A=1", "B=2"]
    assert values["command"] == ["ls", "--run-key", "-l"]
    _, values = argv.parse(["start", "--run-key", "k", "echo", "-n", "x"])
    assert values["command"] == ["echo", "-n", "x"]


@pytest.mark.parametrize(
    "bad",
    [
        ["status", "--run-key"],
        ["status", "--run-key", "--all"],
        ["status", "--all=1"],
        ["status", "--nope"],
        ["status", "--run-key", "a", "--run-key", "b"],
        ["logs", "a-job", "another"],
        ["version", "stray"],
        ["ls", "stray"],
        ["status", "a-job", "--", "more"],
        ["frobnicate"],
        [],
    ],
)
def test_argv_parser_rejects(bad):
    with pytest.raises(InvalidArgument):
        argv.parse(bad)


def test_uri_path_encodes_as_urllib_would_and_takes_any_file_name():
    from urllib.parse import quote

    from orchesjob.store import uri_path

    for path in ("/var/lib/orchesjob/orchesjob.db", "/tmp/a b/\u00fc?#%x", "/h/~user/x-y_z.db"):
        assert uri_path(path) == quote(path)
    assert uri_path("/x/\udcff") == "/x/%FF"  # a file name that is no UTF-8: its byte, as the file system has it
