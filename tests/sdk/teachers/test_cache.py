import sqlite3

import pytest

from sdk.errors import DistillError
from sdk.teachers.cache import ResponseCache, teacher_identity


def test_a_locked_cache_is_an_error_and_stays_where_it_is(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    cache.put("k", {"text": "paid answer"})
    cache.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DistillError, match="cache.sqlite.*nothing was moved"):
            ResponseCache(path, busy_timeout_s=0.1)
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert ResponseCache(path).get("k") == {"text": "paid answer"}


def test_a_corrupt_cache_is_moved_aside_with_its_wal(tmp_path):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"not a database" * 100)
    (tmp_path / "cache.sqlite-wal").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="unreadable"):
        cache = ResponseCache(path)
    assert len(cache) == 0
    aside = sorted(p.name.split(".corrupt-")[1] for p in tmp_path.glob("cache.sqlite.corrupt-*"))
    assert aside[0].isdigit() and aside[0] + "-wal" in aside


def _teacher(folder, files):
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_teacher_identity_covers_every_file_and_its_path(tmp_path):
    base = {"config.json": b"{}", "pytorch_model.bin": b"weights-a", "modeling_x.py": b"code-a"}
    ident = teacher_identity(_teacher(tmp_path / "a", base), None)
    assert teacher_identity(_teacher(tmp_path / "b", base), None) == ident
    for name, data in [("pytorch_model.bin", b"weights-b"), ("modeling_x.py", b"code-b"),
                       ("chat_template.jinja", b"{{ x }}")]:
        assert teacher_identity(_teacher(tmp_path / name, {**base, name: data}), None) != ident, name
    moved = {"config.json": b"{}", "sub/pytorch_model.bin": b"weights-a", "modeling_x.py": b"code-a"}
    assert teacher_identity(_teacher(tmp_path / "moved", moved), None) != ident
    # a hub download's hidden metadata (timestamps) does not change the teacher
    hidden = _teacher(tmp_path / "hidden", {**base, ".cache/huggingface/x.metadata": b"1700000000"})
    assert teacher_identity(hidden, None) == ident
    # the same files as an adapter are another teacher
    assert teacher_identity(tmp_path / "a", tmp_path / "b") != ident
