"""deployment.gguf_header reads what gguf-py reads and rewrites a header that gguf-py and llama.cpp load."""

import time

import pytest
from gguf import GGUFReader

from deployment.gguf import write_gguf
from deployment.gguf_header import GgufFile, read_metadata, rewrite
from sdk.errors import DistillError
from sdk.models import EMBEDDED_TEACHER, _embedded_gguf


def _gguf_py(path):
    r = GGUFReader(path)
    meta = {n: f.contents() for n, f in r.fields.items() if not n.startswith("GGUF.")}
    return meta, [(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in r.tensors], r.data_offset


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_header_equals_gguf_py(which, tiny_llama, tmp_path):
    path = write_gguf(tiny_llama, tmp_path / "m.gguf", "F16") if which == "tiny" else _embedded_gguf(EMBEDDED_TEACHER)
    start = time.perf_counter()
    with GgufFile(path) as g:
        meta, tensors, offset = g.metadata(), g.tensors, g.header.data_offset
    took = time.perf_counter() - start
    want_meta, want_tensors, want_offset = _gguf_py(path)
    assert meta == want_meta and offset == want_offset
    # gguf-py lists a tensor's dims as stored (innermost first), as the header does
    assert tensors == want_tensors
    assert read_metadata(path, "tokenizer.ggml.pre") == {k: v for k, v in want_meta.items() if k == "tokenizer.ggml.pre"}
    if which == "smollm2":  # 49k tokens and merges: gguf-py takes seconds
        assert len(meta["tokenizer.ggml.tokens"]) > 40_000 and took < 1.0, took


def test_rewrite_keeps_every_other_entry_and_the_tensor_bytes(tiny_llama, tmp_path):
    path = write_gguf(tiny_llama, tmp_path / "m.gguf", "F16")
    before_meta, _, _ = _gguf_py(path)
    before = {t.name: t.data.tobytes() for t in GGUFReader(path).tensors}
    rewrite(path, {"distill.s": "é ✓", "distill.b": True, "distill.i": -3, "distill.f": 0.1,
                   "general.name": "renamed"}, remove=["tokenizer.ggml.pre"])
    meta, _, _ = _gguf_py(path)
    want = {k: v for k, v in before_meta.items() if k != "tokenizer.ggml.pre"}
    want.update({"general.name": "renamed", "distill.s": "é ✓", "distill.b": True, "distill.i": -3, "distill.f": 0.1})
    assert meta == want
    assert {t.name: t.data.tobytes() for t in GGUFReader(path).tensors} == before
    assert not list(tmp_path.glob(".*tmp"))


def test_a_truncated_or_foreign_file_is_named(tiny_llama, tmp_path):
    path = write_gguf(tiny_llama, tmp_path / "m.gguf", "F16")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DistillError, match="cut.gguf: malformed GGUF header"):
        read_metadata(cut)
    other = tmp_path / "x.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DistillError, match="x.gguf: not a GGUF file"):
        read_metadata(other)
