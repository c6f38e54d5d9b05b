"""Serving a run's student over HTTP: a batched llama.cpp engine and an OpenAI-compatible server."""
