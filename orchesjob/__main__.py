"""`python -m orchesjob`, and the entry point of orchesjob.pyz (cli_pack makes this text its `__main__.py`).

The import itself is guarded: with very little memory (ulimit -v) or no file descriptor left (ulimit -n) it can
fail before the CLI's own error handling exists, and the answer must still be one JSON object, not a traceback."""

import os

if __name__ == "__main__" and os.path.isfile(os.path.dirname(__file__)):  # run from the zipapp: its compiled code
    try:
        from orchesjob.codeload import oj_use_codes

        oj_use_codes(os.path.dirname(__file__))
    except BaseException:  # noqa: BLE001 - an interpreter that cannot even load it compiles, as before
        pass

try:
    from orchesjob.cli import main
except BaseException as exc:  # noqa: BLE001 - nothing of the CLI could be loaded: say so with what is at hand
    try:
        name = type(exc).__name__.encode("ascii", "replace")[:40]
    except BaseException:  # noqa: BLE001 - not even the name
        name = b"an error"
    os.write(
        1,
        b'{\n  "error": "error",\n  "message": "orchesjob could not load itself (%s; too little memory or too '
        b'few file descriptors?)",\n  "exit_code": 1\n}\n' % name,
    )
    os.write(2, b"orchesjob: could not load itself (%s)\n" % name)
    os._exit(1)

if __name__ == "__main__":
    main()
