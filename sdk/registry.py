"""Entry-point registries, the only place names are looked up: templates, losses, exporters, commands.

Third parties add a template without editing this project, in their own pyproject.toml:

    [project.entry-points."distill_sdk.templates"]
    insurance = "my_pkg.insurance:InsuranceTemplate"
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from sdk.errors import DistillError

TEMPLATES = "distill_sdk.templates"
LOSSES = "distill_sdk.losses"
COMMANDS = "distill_sdk.commands"
EXPORTERS = "distill_sdk.exporters"


def _load(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    return sorted(_load(group))


def load(group: str, name: str) -> Any:
    eps = _load(group)
    if name not in eps:
        kind = {TEMPLATES: "template", LOSSES: "loss", COMMANDS: "command", EXPORTERS: "export format"}.get(group, group)
        known = ", ".join(sorted(eps)) or "none installed"
        raise DistillError(f"unknown {kind} {name!r} (known: {known})")
    return eps[name].load()


def get_template(name: str, options: Any = None):
    """An instance of the template registered under `name`, checked against the protocol (attributes
    only; `verticals.base.check_template` exercises a template in tests). With `options` (its validated
    `template_options`), a template that defines `configure(options)` is configured by them first: what it
    declares may follow its options (the education template's label words follow its grading scheme)."""
    from verticals.base import check_template_attributes

    template = check_template_attributes(load(TEMPLATES, name)())
    if options is not None and hasattr(template, "configure"):
        template = check_template_attributes(template.configure(options))
    return template
