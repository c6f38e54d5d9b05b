"""Domain templates: one package per template, registered through the `distill_sdk.templates` entry point."""
