"""Decide with a distill-sdk GGUF alone: python score_with_llama_cpp.py model.gguf < prompts.txt (one a line)."""
import json, sys
import llama_cpp, numpy as np

llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, verbose=False, type_k=0, type_v=0)  # F32 KV cache, as evaluated
label_ids = json.loads(llm.metadata["distill.label_token_ids"])  # label 0..n-1; the last is the positive one
threshold = llm.metadata.get("distill.threshold")  # chosen on validation; none: graded, the likeliest decides
for prompt in sys.stdin.read().splitlines():
    llm.reset()
    llm.eval(llm.tokenize(prompt.encode(), add_bos=True))  # the GGUF says whether a BOS goes first
    logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # next-token logits after the prompt
    z = np.array([logits[i] for i in label_ids], dtype=np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # softmax over the label words only
    decision = int(p[-1] >= float(threshold)) if threshold is not None else int(p.argmax())
    print(json.dumps({"probs": p.tolist(), "score": p[-1], "decision": decision}))
