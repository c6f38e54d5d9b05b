"""A stage is up to date only while every file it wrote is there: a deleted student weight file or exported
artifact runs its stage again instead of failing the next one."""

from __future__ import annotations

from sdk.rundir import RunDir
from sdk.stages import distill, export


def _done(run: RunDir, stage) -> bool:
    return run.is_done(stage.__name__.rsplit(".", 1)[-1], "k", stage.outputs(run))


def test_the_distill_stage_needs_the_students_weights(tmp_path):
    run = RunDir(tmp_path)
    run.record("distill", "k", 1.0)
    run.write_json("student/config.json", {})
    assert not _done(run, distill)
    run.path("student", "model.safetensors").write_bytes(b"")
    assert _done(run, distill)
    run.path("student", "model.safetensors").unlink()  # sharded weights are listed by their index
    run.write_json("student/model.safetensors.index.json", {})
    assert _done(run, distill)


def test_the_export_stage_needs_every_artifact_it_listed(tmp_path):
    run = RunDir(tmp_path)
    run.record("export", "k", 1.0)
    run.write_json("artifacts/exports.json", {
        "student": [{"name": "student-gguf-Q8_0", "path": "artifacts/student-Q8_0.gguf"},
                    {"name": "student-onnx-fp32", "path": "artifacts/student-onnx-fp32"}],
        "student-finetuned": [{"name": "student-finetuned-gguf-Q8_0", "path": "artifacts/student-finetuned-Q8_0.gguf"}]})
    for name in ("student-Q8_0.gguf", "student-finetuned-Q8_0.gguf"):
        run.path("artifacts", name).write_bytes(b"")
    run.path("artifacts", "student-onnx-fp32").mkdir()
    run.path("artifacts", "student-onnx-fp32", "generation.onnx").write_bytes(b"")
    assert _done(run, export)
    run.path("artifacts", "student-finetuned-Q8_0.gguf").unlink()
    assert not _done(run, export)


def test_twins_shards_and_emptied_onnx_folders_are_outputs_too(tmp_path):
    import shutil

    run = RunDir(tmp_path)
    run.record("distill", "k", 1.0, fine_tuned={"train": {}})
    for folder in ("student", "student-finetuned"):
        run.write_json(f"{folder}/config.json", {})
        run.path(folder, "model.safetensors").write_bytes(b"")
    assert _done(run, distill)
    run.path("student-finetuned", "model.safetensors").unlink()  # the twin the record names
    assert not _done(run, distill)
    shutil.rmtree(run.path("student-finetuned"))
    run.record("distill", "k", 1.0)  # a run without a twin needs none
    assert _done(run, distill)
    run.path("student", "model.safetensors").unlink()
    run.write_json("student/model.safetensors.index.json", {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                          "b": "model-00002-of-00002.safetensors"}})
    run.path("student", "model-00001-of-00002.safetensors").write_bytes(b"")
    assert not _done(run, distill)  # a shard is missing
    run.path("student", "model-00002-of-00002.safetensors").write_bytes(b"")
    assert _done(run, distill)

    run.record("export", "k", 1.0)
    run.write_json("artifacts/exports.json", {"student": [{"name": "student-onnx-fp32",
                                                           "path": "artifacts/student-onnx-fp32"}]})
    run.path("artifacts", "student-onnx-fp32").mkdir()
    assert not _done(run, export)  # a folder without its graph
    run.path("artifacts", "student-onnx-fp32", "decision.onnx").write_bytes(b"")
    assert _done(run, export)


def test_the_qad_stage_needs_every_twin_it_listed(tmp_path):
    from sdk.stages import qad

    run = RunDir(tmp_path)
    run.record("qad", "k", 1.0)
    run.write_json("qad.json", {"student-qad-control": {}, "student-qad-Q4_K_M": {}})
    for folder in ("student-qad-control", "student-qad-Q4_K_M"):
        run.write_json(f"{folder}/config.json", {})
        run.path(folder, "model.safetensors").write_bytes(b"")
    assert _done(run, qad)
    run.path("student-qad-Q4_K_M", "model.safetensors").unlink()
    assert not _done(run, qad)
