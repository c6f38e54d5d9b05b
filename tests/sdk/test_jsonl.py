"""JSON Lines as users bring them (sdk.jsonl): gzipped or not by content, every bad line named."""

from __future__ import annotations

import gzip

import pytest

from sdk.errors import DistillError
from sdk.jsonl import json_lines


def test_plain_and_gzipped_files_read_alike_whatever_their_name(tmp_path):
    text = '\ufeff{"a": 1}\n\n{"a": 2}\n'  # a BOM from a spreadsheet export, a blank line
    (tmp_path / "plain.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "packed.jsonl").write_bytes(gzip.compress(text.encode()))  # gzipped without .gz
    for name in ("plain.jsonl", "packed.jsonl"):
        assert list(json_lines(tmp_path / name)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_every_bad_line_is_named_or_the_first_raises(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{oops\n[1, 2]\n{"a": 4}\n')
    problems: list[str] = []
    assert [n for n, _ in json_lines(path, problems)] == [1, 4]
    assert problems[0].startswith(f"{path}:2: not valid JSON") and problems[1] == f"{path}:3: expected a JSON object, got list"
    with pytest.raises(DistillError, match="line 2: not valid JSON"):
        list(json_lines(path, where=lambda n: f"line {n}"))


def test_a_non_utf8_byte_is_named_on_its_own_line(tmp_path):
    # text mode decodes thousands of lines ahead of the one it yields: the line must come from the bytes
    lines = [f'{{"i": {i}}}'.encode() for i in range(5000)]
    lines[4321] = '{"city": "Zürich"}'.encode("latin-1")
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DistillError, match=rf"{path}:4322: not UTF-8 text \(byte 0xfc\)"):
        list(json_lines(path))
    path.write_bytes(b"\xef\xbb\xbf" + b'{"i": 1}\n' + b'\xff{"i": 2}\n')  # a BOM shifts no position
    with pytest.raises(DistillError, match=rf"{path}:2: not UTF-8 text \(byte 0xff\)"):
        list(json_lines(path))


def test_a_truncated_gzip_and_a_missing_file_are_named(tmp_path):
    packed = gzip.compress("".join(f'{{"a": {i * 7919 % 10007}}}\n' for i in range(2000)).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[:len(packed) // 2])
    with pytest.raises(DistillError, match="cut.jsonl.gz: cannot read it as JSON Lines"):
        list(json_lines(tmp_path / "cut.jsonl.gz"))
    with pytest.raises(DistillError, match="absent.jsonl does not exist"):
        list(json_lines(tmp_path / "absent.jsonl"))
