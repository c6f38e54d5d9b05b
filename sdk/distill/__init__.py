"""Distillation: losses, the training recipe, teacher annotation."""
