"""The local (hf) teacher samples completions from a GGUF of itself: F16 by default, or a Q8_0 made by
llama.cpp's quantizer (annotate.sampling_gguf), whose completions are cached apart from the F16 ones."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")


def _ctx(run_root, model_dir, **annotate):
    from sdk.config import load_config, template_options
    from sdk.rundir import RunDir
    from sdk.stages import Context
    from verticals.code import CodeTemplate

    template = CodeTemplate()
    cfg = load_config(template.preset_path("tiny"))
    cfg = cfg.model_copy(update={"annotate": cfg.annotate.model_copy(update={"runtime": "llama_cpp", **annotate})})
    run = RunDir(run_root)
    run.write_json("teacher/teacher.json", {"base": str(model_dir), "adapter": None})
    return Context(cfg, template, template_options(cfg), run)


def test_q8_0_sampling_gguf_is_quantized_and_cached_apart(tiny_llama, tmp_path, monkeypatch):
    from gguf import GGUFReader

    from sdk.teachers.hf import HFTeacher

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    params = {"max_new_tokens": 4, "temperature": 0.0, "stop": [], "n": 1, "seed": 0}

    f16 = HFTeacher(_ctx(tmp_path / "run", tiny_llama))
    _, info = f16.completions(prompts, None, params)
    assert info["sampling_gguf"] == "F16" and info["generated_now"] == 2

    q8 = HFTeacher(_ctx(tmp_path / "run", tiny_llama, sampling_gguf="Q8_0"))
    completions, info = q8.completions(prompts, None, params)
    path = tmp_path / "run" / "teacher" / "teacher-Q8_0.gguf"
    types = {t.tensor_type.name for t in GGUFReader(path).tensors}
    assert "Q8_0" in types and "F16" not in types
    assert info["sampling_gguf"] == "Q8_0" and info["generated_now"] == 2  # not served the F16 answers
    assert len(completions) == 2 and all(len(per) == 1 for per in completions)
    _, again = q8.completions(prompts, None, params)
    assert again["generated_now"] == 0  # its own cache
