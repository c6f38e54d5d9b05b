"""ONNX graphs of a Hugging Face causal LM student, exported with torch.onnx's dynamo exporter.

Two graphs, as the two task shapes need them:
- decision: (input_ids, attention_mask) -> logits at the last position only ([batch, vocab]); prompts are
  left-padded, so the last position is every row's answer position;
- generation step: (input_ids, attention_mask, position_ids, past_key_values.{i}.key/value) -> (logits at the
  last position, present.{i}.key/value): one graph for the prompt (empty past) and for each decoded token.

Why the wrappers: a bare LlamaForCausalLM returns a CausalLMOutputWithPast holding a transformers Cache
object; the wrappers pick the outputs and turn the cache into flat tensors with stable names (the layout
of onnxruntime-genai and optimum). optimum-onnx does not support transformers 5 (it pins <4.58), hence
torch.onnx directly (docs/notes/issue8-onnx-quantization-research.md).

Used by the onnx exporter (deployment.exporters.OnnxExporter), its parity tests and deployment.runtimes.onnx_runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from deployment.onnx_graph_io import kv_shape, past_names  # noqa: F401 - the graphs' names, re-exported


class DecisionGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1, :]


class GenerationStep(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits[:, -1, :], *present)


def _quiet_op_registry() -> None:
    """The exporter's op registry warns once per torchvision op when torchvision is absent (a language model
    uses none of them): 4 lines of noise per graph in every run's log."""
    import logging

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_decision(model: torch.nn.Module, path: str | Path) -> Path:
    """The decision graph of `model` (fp32, eval mode) in one .onnx file."""
    _quiet_op_registry()
    path = Path(path)
    vocab = model.config.vocab_size
    # example sizes must not be 0 or 1: torch.export would specialise those dimensions
    ids = torch.randint(0, vocab, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(DecisionGraph(model.eval()).eval(), (ids, mask), str(path), dynamo=True, external_data=False,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                      verbose=False)
    return path


def export_generation(model: torch.nn.Module, path: str | Path) -> Path:
    """The generation-step graph of `model` with flat past/present key-value tensors in one .onnx file."""
    _quiet_op_registry()
    path = Path(path)
    n_layers, kv_heads, head_dim = kv_shape(model.config)
    names = past_names(n_layers)
    past = [torch.randn(2, kv_heads, 5, head_dim) for _ in names]
    ids = torch.randint(0, model.config.vocab_size, (2, 3))
    mask = torch.ones(2, 8, dtype=torch.long)
    positions = torch.arange(5, 8).expand(2, 3)
    batch, past_len, seq, total = (torch.export.Dim(n) for n in ("batch", "past", "seq", "total"))
    # the mask spans past + new tokens; torch.export cannot add Dims, so its length is a Dim of its own
    torch.onnx.export(GenerationStep(model.eval()).eval(), (ids, mask, positions, *past), str(path), dynamo=True,
                      external_data=False, input_names=["input_ids", "attention_mask", "position_ids", *names],
                      output_names=["logits", *[n.replace("past_key_values", "present") for n in names]],
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
                                      "position_ids": {0: batch, 1: seq},
                                      "past": tuple({0: batch, 2: past_len} for _ in names)},
                      verbose=False)
    return path


def export_folder(student_dir: str | Path, out_dir: str | Path, generation: bool = True) -> Path:
    """A folder onnxruntime can run on its own: generation.onnx when `generation` (it also scores: one step
    with an empty past is a decision pass, so the weights are stored once), decision.onnx otherwise, plus
    the student's config.json, generation_config.json and tokenizer files. Written to a temporary folder
    first and moved into place, so a failed export leaves nothing half-written."""
    import os
    import shutil

    from sdk.models import load_causal_lm

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model, tok = load_causal_lm(str(student_dir))
    model = model.float().eval()
    if generation:
        export_generation(model, tmp / "generation.onnx")
    else:
        export_decision(model, tmp / "decision.onnx")
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def nodes_in_scope(model, scope: str, ops: Sequence[str] = ("MatMul", "Gemm")) -> list[str]:
    """Names of the `ops` nodes that torch.onnx's dynamo exporter made from a module whose path contains
    `scope` (e.g. "lm_head"). Its node names are generic (node_linear_42): the module path is only in
    each node's `pkg.torch.onnx.name_scopes` metadata."""
    out = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if node.op_type in ops and scope in meta.get("pkg.torch.onnx.name_scopes", ""):
            out.append(node.name)
    return out


def _rewrite_graphs(folder: str | Path, out_dir: str | Path, keep_float: Sequence[str], rewrite) -> Path:
    """A copy of an exported folder with each graph passed through rewrite(src, dst, kept_node_names),
    written to a temporary folder and moved into place (a failure leaves nothing half-written)."""
    import os
    import shutil

    import onnx

    folder, out_dir = Path(folder), Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("*.onnx"))
    for graph in sorted(folder.glob("*.onnx")):
        model = onnx.load(str(graph))
        rewrite(graph, tmp / graph.name, [n for scope in keep_float for n in nodes_in_scope(model, scope)])
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def quantize_int8(folder: str | Path, out_dir: str | Path, keep_float: Sequence[str] = ("lm_head",)) -> Path:
    """A copy of an exported folder whose graphs have dynamic INT8 MatMuls (onnxruntime.quantization):
    weights per output channel with reduce_range (7-bit: without it, u8 x s8 products saturate on CPUs
    without VNNI and quality drops; docs/notes/issue8-onnx-quantization-research.md), activations quantised
    per batch at run time (one scale per tensor: W8A8); MatMuls of the `keep_float` modules stay fp32 (the
    output head)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def rewrite(src: Path, dst: Path, kept: list[str]) -> None:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=True,
                         reduce_range=True, weight_type=QuantType.QInt8, nodes_to_exclude=kept)

    return _rewrite_graphs(folder, out_dir, keep_float, rewrite)


def quantize_int4(folder: str | Path, out_dir: str | Path, block_size: int = 32,
                  keep_float: Sequence[str] = ("lm_head",), accuracy_level: int | None = None,
                  eight_bit: Sequence[str] = ()) -> Path:
    """A copy of an exported folder with 4-bit weight-only MatMuls (W4A16: onnxruntime's MatMulNBits,
    asymmetric blocks of `block_size` along the input dimension); the `keep_float` modules stay fp32: a
    4-bit head is a known cause of degraded output (onnxruntime#24384). The `eight_bit` modules (e.g.
    down_proj, v_proj: what llama.cpp's Q4_K_M keeps at 6 bits) get 8-bit blocks instead. accuracy_level
    None computes in fp32; 4 (int8 activations) is faster on CPU but flips argmaxes on some models
    (onnxruntime#29849)."""
    return quantize_weight_only(folder, out_dir, bits=4, block_size=block_size, keep_float=keep_float,
                                accuracy_level=accuracy_level, eight_bit=eight_bit)


def quantize_weight_only(folder: str | Path, out_dir: str | Path, bits: int, block_size: int = 32,
                         keep_float: Sequence[str] = ("lm_head",), accuracy_level: int | None = None,
                         eight_bit: Sequence[str] = (), algorithm: str = "rtn") -> Path:
    """MatMulNBits graphs: `bits`-bit weights in blocks (asymmetric at 4 bits, symmetric at 8); modules matching
    `eight_bit` at 8 bits whatever `bits` is. accuracy_level is the 4-bit nodes' compute type (None: fp32
    activations, W4A16); 8-bit nodes always get 4 (int8 activations per block, llama.cpp's Q8_0 x Q8_0):
    onnxruntime's CPU kernels for 8-bit weights with fp32 compute dequantize the weights at every call (code
    student: 1.4 against 20.6 tokens/s). algorithm: "rtn" (round to nearest) or "hqq" (half-quadratic,
    onnxruntime's HQQ; it generated nothing but broken programs on the code student: pass@1 0.000)."""
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    def rewrite(src: Path, dst: Path, kept: list[str]) -> None:
        model = onnx.load(str(src))
        passes = [(bits, kept)]
        wider = {n for scope in eight_bit for n in nodes_in_scope(model, scope)} if bits != 8 else set()
        if eight_bit and bits != 8 and not wider:
            import warnings

            warnings.warn(f"{src.name}: no MatMul in the modules {list(eight_bit)} (int4_eight_bit); "
                          f"all at {bits} bits")
        if wider:  # 8-bit blocks first; nodes_to_include adds to the op types, so the rest is excluded
            rest = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in wider]
            passes.insert(0, (8, [*kept, *rest]))
        for b, excluded in passes:
            algo = (HQQWeightOnlyQuantConfig(block_size=block_size, bits=b, op_types_to_quantize=("MatMul",))
                    if algorithm == "hqq" and b == bits else None)
            quantizer = MatMulNBitsQuantizer(model, bits=b, block_size=block_size, is_symmetric=b == 8,
                                             accuracy_level=4 if b == 8 else accuracy_level,
                                             nodes_to_exclude=excluded,
                                             quant_format=QuantFormat.QOperator, op_types_to_quantize=("MatMul",),
                                             algo_config=algo)
            quantizer.process()
            model = quantizer.model.model
        onnx.save(model, str(dst))

    return _rewrite_graphs(folder, out_dir, keep_float, rewrite)
