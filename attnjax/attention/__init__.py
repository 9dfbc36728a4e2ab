"""Attention variants, one file each; the file name is the variant's config name.

    names()                     -> sorted variant names
    get(name)                   -> the variant's module class
    create(name, **overrides)   -> a ready module with defaults for every setting
    options(name)               -> {setting: default} a config may override
"""

from __future__ import annotations

import dataclasses
from typing import Any

from attnjax import registry
from attnjax.attention.base import AttentionBase, Capabilities, CapabilityError

__all__ = ["AttentionBase", "Capabilities", "CapabilityError", "create", "get", "names", "options"]

_PACKAGE = "attnjax.attention"
# flax's own fields and the Block-level options every variant inherits from AttentionBase
_MODULE_FIELDS = frozenset({"parent", "name", *(f.name for f in dataclasses.fields(AttentionBase))})


def names() -> list[str]:
    return registry.names(_PACKAGE)


def get(name: str) -> type[AttentionBase]:
    return registry.entry(_PACKAGE, "attention", name, "VARIANT")


def options(name: str) -> dict[str, Any]:
    """The variant's settings and their defaults (its dataclass fields)."""
    return registry.settings(get(name), _MODULE_FIELDS)


def check_options(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated with `overrides`; an unknown setting is a ConfigError naming the valid."""
    valid = options(name)
    for key in overrides:
        if key not in valid:
            raise registry.ConfigError(
                registry.unknown_name_message(f"setting for attention {name!r}:", key, list(valid))
                if valid
                else f"attention {name!r} has no settings; got {key!r}"
            )
    return {**valid, **overrides}


BLOCK_OPTIONS = tuple(f.name for f in dataclasses.fields(AttentionBase)
                      if f.name not in ("parent", "name"))


def create(name: str, **overrides: Any) -> AttentionBase:
    """The variant with its defaults, `overrides` of its settings, and any Block-level option
    (`logit_soft_cap`, `attention_dropout_rate`, `max_length`)."""
    block = {k: overrides.pop(k) for k in BLOCK_OPTIONS if k in overrides}
    return get(name)(**check_options(name, overrides), **block)
