"""User-facing errors: bad input is reported with the field or file it came from (CLI exit code 2)."""


class DistillError(Exception):
    """An error caused by the user's input (config, data, model file); the CLI prints it and exits 2.
    `field`: the input field (column) at fault, when one is (the server returns it as the error's `param`)."""

    field: str | None = None  # also for a subclass whose __init__ does not call this one

    def __init__(self, *args, field: str | None = None):
        super().__init__(*args)
        self.field = field


def not_a_file(path) -> str:
    """Why `path` cannot be read as a file, for a message: a folder is named as one, not as missing."""
    from pathlib import Path

    return "is a folder, not a file" if Path(path).is_dir() else "does not exist"


def problems_error(where: str, problems: list[str], noun: str, limit: int = 20) -> DistillError:
    """One error naming every bad line or record of a file (the first `limit`, then how many more), so that a
    user fixes them all in one pass instead of one per run."""
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return DistillError(f"{where}: {len(problems)} bad {noun}(s):\n  " + "\n  ".join(problems[:limit]) + more)
