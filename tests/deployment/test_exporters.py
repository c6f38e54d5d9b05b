"""The ONNX exporter's quantized graphs, as a run writes them: which kernel each type uses, which modules stay
fp32 or get 8 bits, and that every folder generates."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_onnx_exporter_writes_each_int_type_with_its_kernels(tiny_llama, tmp_path):
    import onnx

    from deployment.exporters import ExportRequest, OnnxExporter
    from deployment.runtimes.generation import GenerationParams
    from deployment.runtimes.onnx_runtime import OnnxRuntime

    exporter = OnnxExporter(OnnxExporter.Config(quants=["int8", "int8-dynamic", "int4"]))
    out = exporter.export(ExportRequest(tiny_llama, tmp_path, "student", "generation", False, {}))
    assert [a.name for a in out] == ["onnx-int8", "onnx-int8-dynamic", "onnx-int4"]
    assert not (tmp_path / "student-onnx-fp32").exists()  # not asked for: only a step on the way
    graphs = {a.quant: onnx.load(str(a.path / "generation.onnx")) for a in out}

    def nbits(graph) -> list[int]:
        return sorted({next(x.i for x in n.attribute if x.name == "bits")
                       for n in graph.graph.node if n.op_type == "MatMulNBits"})

    def float_matmuls(graph) -> int:  # the head's MatMul (kept fp32) and attention's activation products
        return sum(n.op_type == "MatMul" for n in graph.graph.node)

    assert nbits(graphs["int8"]) == [8]
    accuracy = {x.i for n in graphs["int8"].graph.node if n.op_type == "MatMulNBits"
                for x in n.attribute if x.name == "accuracy_level"}
    assert accuracy == {4}  # int8 activations per block: the fast CPU kernel for 8-bit weights
    assert nbits(graphs["int4"]) == [4, 8]  # down_proj and v_proj at 8 bits by default
    ops = {n.op_type for n in graphs["int8-dynamic"].graph.node}
    assert "MatMulNBits" not in ops and ops & {"DynamicQuantizeMatMul", "MatMulInteger"}
    assert float_matmuls(graphs["int8"]) == float_matmuls(graphs["int4"]) == float_matmuls(graphs["int8-dynamic"])
    for a in out:
        rt = OnnxRuntime(str(a.path))
        gen = rt.generate_one(rt.tok.encode("def add(a, b):").ids, GenerationParams(max_new_tokens=4))
        assert gen.n_tokens >= 1 and a.size_bytes > 0
