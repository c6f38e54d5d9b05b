"""The chat user message that the teacher and the student get for a HumanEval-style problem prompt."""

from __future__ import annotations

# Three wordings on the embedded SmolLM2-135M teacher, 3 x 40 synthesized problems (greedy): this one
# 55/120, the bare instruction + prompt 53/120, the same with the prompt in a fence 50/120 -- within noise,
# kept for the highest total. problems.build_program accepts a full `def` reply as well as a body.
INSTRUCTION = ("Complete this Python function. Reply with only the full function, starting with its def line, "
               "in a ```python block.")


def user_message(problem_prompt: str) -> str:
    """The instruction, then the problem prompt (imports + signature + docstring) in a ```python fence."""
    return f"{INSTRUCTION}\n\n```python\n{problem_prompt}```"
