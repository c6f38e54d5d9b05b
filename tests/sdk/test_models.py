import os

import pytest

from sdk.errors import DistillError
from sdk.models import fingerprint, load_causal_lm, resolve_model


def test_fingerprint_changes_when_a_file_at_the_same_path_changes(tmp_path):
    f = tmp_path / "tx.csv"
    f.write_text("a,label\n1,0\n")
    before = fingerprint(str(f))
    f.write_text("a,label\n1,0\n2,1\n")
    os.utime(f, ns=(1, 1))
    assert fingerprint(str(f)) != before
    assert fingerprint(None) is None
    assert fingerprint("org/hub-model") == ["org/hub-model"]


def test_fingerprint_of_a_model_folder_covers_its_weights(tiny_llama):
    names = [row[0] for row in fingerprint(str(tiny_llama))]
    assert "model.safetensors" in names and "config.json" in names


def test_resolve_model_errors_name_the_path(tmp_path):
    with pytest.raises(DistillError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(DistillError, match="someorg/missing-model"):
        resolve_model("someorg/missing-model")  # no hub here: a clear error, not a traceback
    with pytest.raises(DistillError, match="unknown embedded model"):
        resolve_model("embedded:gpt-17")


def test_local_folder_loads_without_remote_code(tiny_llama):
    assert resolve_model(str(tiny_llama)) == tiny_llama
    model, tok = load_causal_lm(tiny_llama)
    assert tok.pad_token_id is not None and not model.training


def test_a_files_hash_is_computed_once_per_version(tmp_path):
    import hashlib
    import os

    from sdk.models import _sha256_of, known_file_sha256

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" * 1000)
    first = known_file_sha256(path)
    hits = _sha256_of.cache_info().hits
    assert known_file_sha256(path) == first == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _sha256_of.cache_info().hits == hits + 1  # the second check read nothing
    path.write_bytes(b"GGUF" * 999 + b"GGUG")  # same size, new bytes: a new modification time
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert known_file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != first
