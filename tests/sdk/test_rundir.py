import json

from sdk.rundir import RunDir, replace_dir, stable_hash


def test_stage_is_done_only_with_same_hash_and_outputs(tmp_path):
    run = RunDir(tmp_path)
    out = tmp_path / "data" / "train.parquet"
    run.record("data", "h1", 1.0, note="x")
    assert not run.is_done("data", "h1", [out])  # output missing
    out.parent.mkdir()
    out.write_text("x")
    assert run.is_done("data", "h1", [out])
    assert not run.is_done("data", "h2", [out])  # inputs changed
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["data"]["note"] == "x"
    assert RunDir(tmp_path).is_done("data", "h1", [out])  # persisted


def test_checkpoints_of_other_inputs_are_dropped(tmp_path):
    run = RunDir(tmp_path)
    old = run.checkpoint_dir("adapt", "aaa")
    old.mkdir(parents=True)
    (old / "last.pt").write_text("stale")
    other_stage = run.checkpoint_dir("distill", "aaa")
    other_stage.mkdir(parents=True)
    new = run.checkpoint_dir("adapt", "bbb")
    assert not old.exists() and other_stage.exists() and new.name == "adapt-bbb"
    assert run.checkpoint_dir("distill", "aaa") == other_stage and other_stage.exists()


def test_replace_dir_swaps_whole_folders(tmp_path):
    run = RunDir(tmp_path)
    for content in ("one", "two"):
        tmp = run.tmp_dir("student")
        (tmp / "config.json").write_text(content)
        replace_dir(tmp, tmp_path / "student")
    assert (tmp_path / "student" / "config.json").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    assert stable_hash({"a": 1, "b": [2]}) == stable_hash({"b": [2], "a": 1})


def test_atomic_write_refuses_a_folder_and_leaves_no_temporary_file(tmp_path):
    import pytest

    from sdk.errors import DistillError
    from sdk.rundir import atomic_write_text

    with pytest.raises(DistillError, match="it is a folder"):
        atomic_write_text(tmp_path, "x")
    (tmp_path / "f").write_text("mine")
    with pytest.raises(DistillError, match="is a file, not a folder"):
        atomic_write_text(tmp_path / "f" / "out.txt", "x")
    atomic_write_text(tmp_path / "new" / "out.txt", "x")
    assert (tmp_path / "new" / "out.txt").read_text() == "x" and (tmp_path / "f").read_text() == "mine"
    assert not list(tmp_path.rglob("*.tmp"))
