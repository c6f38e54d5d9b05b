"""Evaluation: scoring every artifact on the held-out split, performance, reports."""
