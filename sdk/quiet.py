"""Silence import-time messages of libraries that say nothing about the user's run.

peft imports torchao when it is installed (the SDK uses it for torch INT8 on CPU), and torchao tries to load
its CUDA-only kernels (`_C_mxfp8`, `_C_cutlass_90a`) on a CPU build of torch, printing "Failed to load ...:
Could not load this library" and two torch `_pytree` deprecation warnings at every `distill` command, which
read like errors. Only the applications' entry points call this (the CLI, the evaluation workers): a library
that imports the SDK keeps its own logging settings.
"""

from __future__ import annotations

import logging

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_library_noise() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
