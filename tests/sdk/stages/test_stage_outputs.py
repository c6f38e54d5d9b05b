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
    assert _done(run, export)
    run.path("artifacts", "student-finetuned-Q8_0.gguf").unlink()
    assert not _done(run, export)
