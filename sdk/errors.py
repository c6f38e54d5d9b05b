"""User-facing errors: bad input is reported with the field or file it came from (CLI exit code 2)."""


class DistillError(Exception):
    """An error caused by the user's input (config, data, model file); the CLI prints it and exits 2."""
