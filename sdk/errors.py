"""User-facing errors: bad input is reported with the field or file it came from (CLI exit code 2).

A message that names a setting names it as the caller gives it: `--out runs/x` to the `distill` CLI,
`out='runs/x'` to the Python API (`option`, `speaks_python`). The interface is set for the length of a call
(`speaking`): the CLI for each command, `Project.run` / `Project.load` and a loaded run's `predict` for
theirs unless a command already set it; code called from neither reads as the CLI.
"""

import contextlib
from contextvars import ContextVar

_SPEAKS: ContextVar[str | None] = ContextVar("distill_speaks", default=None)
_UNSET = object()


class DistillError(Exception):
    """An error caused by the user's input (config, data, model file); the CLI prints it and exits 2.
    `field`: the input field (column) at fault, when one is (the server returns it as the error's `param`).
    `detail`: what is wrong in the value itself, without the file, row or index (the server's message: an API
    client sent one record, and "row 1 ... the row's index is 0" names nothing it sent)."""

    field: str | None = None  # also for a subclass whose __init__ does not call this one
    detail: str | None = None

    def __init__(self, *args, field: str | None = None, detail: str | None = None):
        super().__init__(*args)
        self.field, self.detail = field, detail


def not_a_file(path) -> str:
    """Why `path` cannot be read as a file, for a message: a folder is named as one, not as missing."""
    from pathlib import Path

    return "is a folder, not a file" if Path(path).is_dir() else "does not exist"


def problems_error(where: str, problems: list[str], noun: str, limit: int = 20) -> DistillError:
    """One error naming every bad line or record of a file (the first `limit`, then how many more), so that a
    user fixes them all in one pass instead of one per run."""
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return DistillError(f"{where}: {len(problems)} bad {noun}(s):\n  " + "\n  ".join(problems[:limit]) + more)


@contextlib.contextmanager
def speaking(interface: str, outer_wins: bool = False):
    """Within the block, messages name settings as `interface` ("cli" or "python") gives them. `outer_wins`:
    keep the interface an enclosing block set (the CLI's commands call the Python API)."""
    if interface not in ("cli", "python"):
        raise ValueError(f"interface {interface!r}: cli or python")
    if outer_wins and _SPEAKS.get() is not None:
        yield
        return
    token = _SPEAKS.set(interface)
    try:
        yield
    finally:
        _SPEAKS.reset(token)


def speaks_python() -> bool:
    return _SPEAKS.get() == "python"


def option(name: str, value=_UNSET) -> str:
    """A setting as the caller gives it: option("out", "runs/x") is `--out runs/x` on the CLI and
    `out='runs/x'` in Python; option("keep_checkpoints", True) `--keep-checkpoints` / `keep_checkpoints=True`;
    option("out") `--out` / `out=`."""
    if speaks_python():
        return f"{name}=" + ("" if value is _UNSET else repr(str(value) if hasattr(value, "__fspath__") else value))
    flag = "--" + name.replace("_", "-")
    return flag if value is _UNSET or value is True else f"{flag} {value}"
