"""Where a run's numbers go: metrics.jsonl (the record) and TensorBoard (for eyes).

One interface, `MetricWriter.write(step, scalars)`, so a W&B or other tracker can be added behind
it. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from attnjax.rundir import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def truncate_after(workdir: Path | str, step: int) -> float:
    """Drop metrics.jsonl lines with step > `step` (resume); return the last kept wall time."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return 0.0
    kept, wall = [], 0.0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
            wall = max(wall, float(record.get("wall_time_s", 0.0)))
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return wall


def read_metrics(workdir: Path | str) -> list[dict[str, Any]]:
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Appends one JSON object per call to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: Path | str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._path = Path(workdir) / METRICS_FILE
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir), flush_secs=30)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _clean(v) for k, v in scalars.items()}}
        with self._path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                if key != "wall_time_s" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: store them as strings so the file stays valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
