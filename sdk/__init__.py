"""distill-sdk: distil a large teacher into a small private student, quantize, export, and prove it."""

from sdk.errors import DistillError

__all__ = ["Project", "DistillError"]


def __getattr__(name: str):
    # Project pulls in torch and transformers; import it only when asked for
    if name == "Project":
        from sdk.project import Project

        return Project
    raise AttributeError(name)
