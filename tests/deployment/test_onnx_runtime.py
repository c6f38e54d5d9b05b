"""The onnxruntime runtime over exported folders (decision graph; generation graph, which also scores),
against the torch runtime on the same tiny student: label probabilities within 1e-4, the same greedy
completions one at a time and batched with left padding, the providers that ran reported."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def onnx_folder(tiny_llama, tmp_path_factory):
    from deployment.onnx_export import export_folder

    return export_folder(tiny_llama, tmp_path_factory.mktemp("onnx") / "student-onnx")


@pytest.fixture(scope="module")
def decision_folder(tiny_llama, tmp_path_factory):
    from deployment.onnx_export import export_folder

    return export_folder(tiny_llama, tmp_path_factory.mktemp("onnx") / "student-onnx-decision", generation=False)


def test_scores_and_greedy_completions_match_the_torch_runtime(tiny_llama, onnx_folder, decision_folder):
    from deployment.runtimes import RUNTIMES
    from deployment.runtimes.generation import GenerationParams
    from deployment.runtimes.torch_runtime import TorchRuntime

    assert sorted(p.name for p in onnx_folder.glob("*.onnx")) == ["generation.onnx"]  # weights stored once
    assert sorted(p.name for p in decision_folder.glob("*.onnx")) == ["decision.onnx"]
    ort_rt = RUNTIMES["onnx"]({"model": str(onnx_folder), "threads": 2, "batch_size": 2})
    dec_rt = RUNTIMES["onnx"]({"model": str(decision_folder), "threads": 2})
    torch_rt = TorchRuntime(str(tiny_llama), threads=2)
    assert ort_rt.providers == ["CPUExecutionProvider"] == dec_rt.providers
    tok = torch_rt.tok
    seqs = [tok(t)["input_ids"] for t in ["$120 grocery store 14h US. Fraud?", "yes no", "$3 gift_cards online 02h RU, "
                                          "account 4d, new device, 9 tx/h. Fraud?"]]
    labels = [tok.encode(" no")[0], tok.encode(" yes")[0]]
    got, ref = ort_rt.score(seqs, labels), torch_rt.score(seqs, labels)
    assert got.shape == (3, 2) and np.abs(got - ref).max() < 1e-4
    assert np.abs(dec_rt.score(seqs, labels) - ref).max() < 1e-4
    assert np.abs(ort_rt.score_one(seqs[2], labels) - ref[2]).max() < 1e-4
    params = GenerationParams(max_new_tokens=20)
    a, b = ort_rt.generate_one(seqs[0], params), torch_rt.generate_one(seqs[0], params)
    assert a.token_ids == b.token_ids and a.text == b.text and a.finish == b.finish
    # batched (2 + 1, left-padded prompts of different lengths), with a stop string cutting some rows early
    assert len(b.text) > 9
    stop_params = GenerationParams(max_new_tokens=20, stop=[b.text[6:9]])
    for p in (params, stop_params):
        batched = [g for [g] in ort_rt.generate(seqs, p)]
        alone = [torch_rt.generate_one(s, p) for s in seqs]
        assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
        assert [(g.text, g.finish) for g in batched] == [(g.text, g.finish) for g in alone]
    with pytest.raises(ValueError, match="no generation.onnx"):
        dec_rt.generate_one(seqs[0], params)
    with pytest.raises(ValueError, match="greedily"):
        ort_rt.generate_one(seqs[0], GenerationParams(max_new_tokens=4, temperature=0.7))


def test_the_runtime_process_holds_neither_torch_nor_transformers(tiny_llama, onnx_folder):
    """Its time and memory are an onnxruntime deployment's: onnxruntime, tokenizers and numpy only."""
    import subprocess
    import sys

    code = ("import sys; from deployment.runtimes.onnx_runtime import OnnxRuntime; rt = OnnxRuntime(sys.argv[1]); "
            "ids = rt.tok.encode('yes no').ids; rt.score([ids], [ids[0]]); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(onnx_folder)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def test_a_folder_without_the_graph_is_refused_naming_it(tmp_path):
    from deployment.runtimes.onnx_runtime import OnnxRuntime

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        OnnxRuntime(str(tmp_path))


def test_int8_folder_keeps_the_head_float_and_stays_close(tiny_llama, decision_folder, tmp_path):
    import onnx

    from deployment.onnx_export import nodes_in_scope, quantize_int8
    from deployment.runtimes.onnx_runtime import OnnxRuntime

    q = quantize_int8(decision_folder, tmp_path / "int8")
    graph = onnx.load(str(q / "decision.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the body is quantised
    head = nodes_in_scope(graph, "lm_head")
    assert head and all(n.op_type == "MatMul" for n in graph.graph.node if n.name in head)  # the head is not
    assert (q / "decision.onnx").stat().st_size < (decision_folder / "decision.onnx").stat().st_size
    fp32, int8 = OnnxRuntime(str(decision_folder)), OnnxRuntime(str(q))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    seqs = [tok(t)["input_ids"] for t in ["$120 grocery store 14h US. Fraud?", "yes no yes", "account device store"]]
    labels = [tok.encode(" no")[0], tok.encode(" yes")[0]]
    diff = np.abs(int8.score(seqs, labels) - fp32.score(seqs, labels)).max()
    assert 0 < diff < 0.1  # quantised (not identical), yet close on this random model


def test_int4_folder_uses_matmulnbits_and_still_generates(tiny_llama, onnx_folder, tmp_path):
    import onnx

    from deployment.onnx_export import nodes_in_scope, quantize_int4
    from deployment.runtimes.generation import GenerationParams
    from deployment.runtimes.onnx_runtime import OnnxRuntime

    q = quantize_int4(onnx_folder, tmp_path / "int4")
    for name in ("generation.onnx",):
        graph = onnx.load(str(q / name))
        assert "MatMulNBits" in [n.op_type for n in graph.graph.node]
        head = nodes_in_scope(graph, "lm_head")
        assert head and all(n.op_type == "MatMul" for n in graph.graph.node if n.name in head)
    fp32, int4 = OnnxRuntime(str(onnx_folder)), OnnxRuntime(str(q))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    seqs = [tok(t)["input_ids"] for t in ["$120 grocery store 14h US. Fraud?", "yes no yes", "account device store"]]
    labels = [tok.encode(" no")[0], tok.encode(" yes")[0]]
    diff = np.abs(int4.score(seqs, labels) - fp32.score(seqs, labels)).max()
    assert 0 < diff < 0.3  # 4-bit weights of a random model: a worst case, still near
    gen = int4.generate_one(seqs[0], GenerationParams(max_new_tokens=8))
    assert 1 <= len(gen.token_ids) <= 8 or gen.finish == "stop"


def test_weight_only_8_bit_and_mixed_4_bit_graphs(tiny_llama, onnx_folder, tmp_path):
    import onnx

    from deployment.onnx_export import nodes_in_scope, quantize_int4, quantize_weight_only
    from deployment.runtimes.onnx_runtime import OnnxRuntime

    def bits(folder):
        graph = onnx.load(str(folder / "generation.onnx"))
        return graph, {n.name: next(a.i for a in n.attribute if a.name == "bits")
                       for n in graph.graph.node if n.op_type == "MatMulNBits"}

    w8 = quantize_weight_only(onnx_folder, tmp_path / "w8", bits=8)
    graph, by_node = bits(w8)
    assert by_node and set(by_node.values()) == {8} and not set(nodes_in_scope(graph, "lm_head")) & set(by_node)
    mixed = quantize_int4(onnx_folder, tmp_path / "w4-mixed", eight_bit=["down_proj"])
    graph, by_node = bits(mixed)
    # a quantized node keeps its fp32 name with a _Q<bits> suffix (the module path was in the fp32 node's metadata)
    down = {n + "_Q8" for n in nodes_in_scope(onnx.load(str(onnx_folder / "generation.onnx")), "down_proj")}
    assert down and all(by_node[n] == 8 for n in down)
    assert all(b == 4 for n, b in by_node.items() if n not in down) and len(by_node) > len(down)
    fp32, int8, int4 = OnnxRuntime(str(onnx_folder)), OnnxRuntime(str(w8)), OnnxRuntime(str(mixed))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    seqs = [tok(t)["input_ids"] for t in ["def add(a, b):", "yes no yes", "account device store"]]
    labels = [tok.encode(" no")[0], tok.encode(" yes")[0]]
    ref = fp32.score(seqs, labels)
    # both stay near fp32 on this random model (0.005-0.016 for 8-bit, 0.017 for mostly-4-bit, by CPU: the int8
    # activation kernels differ with VNNI/AMX); which of the two is closer depends on that kernel, so no order
    assert 0 < np.abs(int8.score(seqs, labels) - ref).max() < 0.05
    assert 0 < np.abs(int4.score(seqs, labels) - ref).max() < 0.3
