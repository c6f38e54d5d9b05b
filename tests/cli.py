"""The `distill` CLI in the test process: typer's runner on the same app, with the same commands, exit codes and
stderr as the installed command, returned as a completed process. A fresh interpreter costs ~5 s of imports on
2 cores; tests about the process itself (as installed, Ctrl-C, a kill) start one."""

from __future__ import annotations

import subprocess


def run_cli(*args) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from sdk.cli import app

    args = [str(a) for a in args]
    out = CliRunner().invoke(app, args)
    if out.exception is not None and not isinstance(out.exception, SystemExit):
        raise out.exception  # a crash fails the test with its traceback, not as an exit code
    return subprocess.CompletedProcess(["distill", *args], out.exit_code, out.stdout, out.stderr)
