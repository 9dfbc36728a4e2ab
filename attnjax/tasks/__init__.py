"""Tasks, one file each; the file name is `config.task.name`.

    names()                 -> sorted task names
    get(name)               -> the task class
    create(name, **settings)-> a task instance (unknown settings are a ConfigError)
    options(name)           -> {setting: default}
"""

from __future__ import annotations

from typing import Any

from attnjax import registry
from attnjax.tasks.base import ClassificationTask, LMTask, Seq2SeqTask, Task

__all__ = [
    "ClassificationTask", "LMTask", "Seq2SeqTask", "Task", "create", "get", "names", "options",
]

_PACKAGE = "attnjax.tasks"


def names() -> list[str]:
    return registry.names(_PACKAGE)


def get(name: str) -> type[Task]:
    return registry.entry(_PACKAGE, "task", name, "TASK")


def options(name: str) -> dict[str, Any]:
    """The task's settings and their defaults (its dataclass fields)."""
    return registry.settings(get(name))


def create(name: str, **settings: Any) -> Task:
    valid = options(name)
    for key in settings:
        if key not in valid:
            raise registry.ConfigError(
                registry.unknown_name_message(f"setting for task {name!r}:", key, list(valid))
            )
    return get(name)(**settings)
