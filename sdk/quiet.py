"""Silence messages of libraries that say nothing about the user's run.

peft imports torchao when it is installed (the SDK uses it for torch INT8 on CPU), and torchao tries to load
its CUDA-only kernels (`_C_mxfp8`, `_C_cutlass_90a`) on a CPU build of torch, printing "Failed to load ...:
Could not load this library" and two torch `_pytree` deprecation warnings at every `distill` command, which
read like errors. Library deprecation notices (transformers' `is_gradient_checkpointing` FutureWarning, raised
on every peft wrap) repeat through a run the same way.

The applications' entry points (the CLI, the evaluation workers) silence them for the whole process
(`quiet_library_noise`, `quiet_warnings`). The Python API (`Project.run`, `Project.load`, a finished run's
`predict`) silences them only while its call runs (`quieted`), and gives the caller's logging levels and warning
filters back afterwards: a library that imports the SDK keeps its own settings.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")
# the modules whose FutureWarnings are library deprecation notices (matched as the warning's module, a regex)
NOISY_FUTURE_MODULES = ("transformers", "peft", "torch")


def quiet_library_noise() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_warnings() -> None:
    """The libraries' deprecation notices; other warnings (the SDK's own among them) still show."""
    for module in NOISY_FUTURE_MODULES:
        warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{module}(\.|$)")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # torch's ONNX export: a pytree deprecation raised from copyreg (so no module filter catches it) and a note
    # on the dynamic axes' names that the exported file does not depend on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)


@contextlib.contextmanager
def quieted() -> Iterator[None]:
    """Both of the above for the duration of the block only. On leaving, however it is left, the loggers get their
    levels back and the filters this added (not ones the caller had) are taken out again. Not
    `warnings.catch_warnings`: it would also drop the filters that libraries first imported in the block add
    for themselves (torch's for its LR schedulers, sympy's), and their own noise would show after."""
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    before = list(warnings.filters)
    quiet_library_noise()
    quiet_warnings()
    added = [f for f in warnings.filters if f not in before]
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        warnings.filters[:] = [f for f in warnings.filters if f not in added]  # the list the warn() machinery reads
        # what filterwarnings() calls after changing the list, so cached decisions expire (private, hence guarded)
        getattr(warnings, "_filters_mutated", lambda: None)()
