"""In-process executor (the default, `--workers 1`): this process is the one worker and trains
the study's runs in order; a failed run is recorded and the next goes on, a preempted one
(SIGTERM, Ctrl-C) stops the sweep until it is run again."""

from __future__ import annotations

from attnjax import worker
from attnjax.executors import Executor


class InProcess(Executor):
    def execute(self, sweep_dir, run_dirs, *, log, train_fn=None):
        return worker.work(sweep_dir, only=[r.name for r in run_dirs], train_fn=train_fn, log=log,
                           retry_failed=self.settings["retry_failed"],
                           pack=self.settings["pack"])

    @classmethod
    def options(cls):
        return {"retry_failed": False, "pack": None}  # None: auto on accelerators, else 1


EXECUTOR = InProcess
