"""Financial fraud template: card transactions, yes/no fraud decisions, FPR/recall metrics."""

from verticals.fraud.template import FraudTemplate

__all__ = ["FraudTemplate"]
