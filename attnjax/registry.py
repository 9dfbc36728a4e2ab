"""Discovery by file name: a module `attnjax/<package>/<name>.py` *is* the entry `name`.

Nothing is registered by hand: adding a variant or a task is one new file. Files whose name starts
with an underscore and the package's `base.py` are infrastructure, not entries.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from types import ModuleType
from typing import Any

_NOT_ENTRIES = frozenset({"base"})


class ConfigError(ValueError):
    """A user-facing configuration mistake (unknown key, name or value). Message says the fix."""


def unknown_name_message(kind: str, name: object, known: list[str] | tuple[str, ...]) -> str:
    """`unknown attention 'perfomer'; did you mean 'performer'? Known: a, b, c`."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown {kind} {name!r}{hint} Known: {', '.join(known)}"


def names(package: str) -> list[str]:
    """Sorted entry names found as modules in `package` (e.g. 'attnjax.attention')."""
    pkg = importlib.import_module(package)
    return sorted(
        m.name
        for m in pkgutil.iter_modules(pkg.__path__)
        if not m.name.startswith("_") and m.name not in _NOT_ENTRIES
    )


def load(package: str, kind: str, name: str) -> ModuleType:
    """Imports `package.name`, or raises ConfigError naming the valid entries."""
    known = names(package)
    if name not in known:
        raise ConfigError(unknown_name_message(kind, name, known))
    return importlib.import_module(f"{package}.{name}")


def entry(package: str, kind: str, name: str, export: str) -> Any:
    """The object `name.py` exports as `export` (e.g. VARIANT, TASK)."""
    obj = getattr(load(package, kind, name), export, None)
    if obj is None:
        raise TypeError(f"{package.replace('.', '/')}/{name}.py must define {export} = <its class>")
    return obj


def settings(cls: type, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """{field: default} of a dataclass's init fields not in `skip`; every one needs a default."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}: setting {f.name!r} needs a default")
    return out
