"""Export (GGUF, ONNX), runtimes and serving."""
