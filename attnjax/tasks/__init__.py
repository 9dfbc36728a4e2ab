"""Tasks, one file each; the file name is `config.task.name`.

    names()                 -> sorted task names
    get(name)               -> the task class
    create(name, **settings)-> a task instance (unknown settings are a ConfigError)
    options(name)           -> {setting: default}
"""

from __future__ import annotations

import dataclasses
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
    module = registry.load(_PACKAGE, "task", name)
    task = getattr(module, "TASK", None)
    if task is None:
        raise TypeError(f"attnjax/tasks/{name}.py must define TASK = <its task class>")
    return task


def options(name: str) -> dict[str, Any]:
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(get(name))
    }


def create(name: str, **settings: Any) -> Task:
    valid = options(name)
    for key in settings:
        if key not in valid:
            raise registry.ConfigError(
                registry.unknown_name_message(f"setting for task {name!r}:", key, list(valid))
            )
    return get(name)(**settings)
