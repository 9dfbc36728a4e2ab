"""Where a run's numbers go: metrics.jsonl (the record, through RunDir) and TensorBoard (for
eyes). One interface, `MetricWriter.write(step, scalars)`, so a W&B or other tracker can be
added behind it. Only process 0 writes.
"""

from __future__ import annotations

from attnjax.rundir import RunDir


class MetricWriter:
    """Appends one JSON object per call to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: RunDir, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._run_dir = run_dir
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(run_dir.path), flush_secs=30)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._run_dir.append_metrics({"step": int(step), **scalars})
        if self._tb is not None:
            for key, value in scalars.items():
                if key != "wall_time_s" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, int(step))

    def close(self) -> None:
        tb, self._tb = self._tb, None
        if tb is not None:
            tb.flush()
            tb.close()
