"""Teacher backends. A local teacher is a Hugging Face causal LM folder (the embedded default included)."""
