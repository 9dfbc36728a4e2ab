"""Backbones and heads. `build(config, task)` makes the model a config describes."""

from attnjax.models.transformer import Block, Transformer, build

__all__ = ["Block", "Transformer", "build"]
