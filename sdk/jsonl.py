"""JSON Lines files as users bring them: one JSON object per line, UTF-8, gzipped or not (told by the file's
first bytes, not its name). Every template and `distill score` read them here, so a bad line is named the
same way everywhere. pandas.read_json(lines=True) stops at the first bad line without its number; this
reader names each one."""

from __future__ import annotations

import codecs
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sdk.errors import DistillError, not_a_file


def json_lines(path: str | Path, problems: list[str] | None = None,
               where: Callable[[int], str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line. A line that is not a JSON object raises DistillError,
    or, when `problems` is given, is described there and skipped (so that a caller reports them all).
    `where(n)` starts each message (default `<path>:<n>`)."""
    path = Path(path)
    where = where or (lambda n: f"{path}:{n}")
    if not path.is_file():
        raise DistillError(f"{path} {not_a_file(path)}")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    lineno = 0
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig") if gzipped else open(path, encoding="utf-8-sig")) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    bad = f"{where(lineno)}: not valid JSON ({err.msg} at column {err.colno})"
                else:
                    if isinstance(obj, dict):
                        yield lineno, obj
                        continue
                    bad = f"{where(lineno)}: expected a JSON object, got {type(obj).__name__}"
                if problems is None:
                    raise DistillError(bad)
                problems.append(bad)
    except UnicodeDecodeError:
        # text mode decodes ahead of the line it yields: find the first bad byte's line in the raw bytes
        try:
            raw = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
        except (OSError, EOFError):  # a damaged gzip as well: where the bad byte is cannot be told
            raise DistillError(f"{path}: not UTF-8 text, and cut short; save the file as UTF-8") from None
        raw = raw.removeprefix(codecs.BOM_UTF8)  # so that positions count from the first line's first byte
        try:
            raw.decode("utf-8")
            raise DistillError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
        except UnicodeDecodeError as err:
            line = raw[:err.start].count(b"\n") + 1
            raise DistillError(f"{where(line)}: not UTF-8 text (byte {raw[err.start]:#x}); save the file as "
                               "UTF-8") from None
    except (OSError, EOFError) as err:  # a truncated or damaged gzip
        raise DistillError(f"{path}: cannot read it as JSON Lines ({type(err).__name__}: {err})") from None
