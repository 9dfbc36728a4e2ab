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
    module = registry.load(_PACKAGE, "attention", name)
    variant = getattr(module, "VARIANT", None)
    if variant is None:
        raise TypeError(f"attnjax/attention/{name}.py must define VARIANT = <its module class>")
    return variant


def options(name: str) -> dict[str, Any]:
    """The variant's settings and their defaults (its dataclass fields)."""
    out = {}
    for f in dataclasses.fields(get(name)):
        if f.name in _MODULE_FIELDS or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            raise TypeError(f"attention {name!r}: setting {f.name!r} needs a default")
    return out


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
