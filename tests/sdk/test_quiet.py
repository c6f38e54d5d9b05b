"""Every `distill` command printed torchao's "Failed to load ... _C_mxfp8" and torch `_pytree` warnings when peft
imported torchao on a CPU build of torch: lines that read like errors about the user's run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_silences_library_import_noise():
    code = ("from typer.testing import CliRunner; from sdk.cli import app; "
            "assert CliRunner().invoke(app, ['templates']).exit_code == 0; import peft")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stderr and "register_constant" not in done.stderr, done.stderr


def test_a_library_user_keeps_its_own_logging():
    done = subprocess.run([sys.executable, "-c", "import logging, sdk.scoring; "
                           "print(logging.getLogger('torchao').level)"], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "0", done.stderr
