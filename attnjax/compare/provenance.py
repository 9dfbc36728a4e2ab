"""Where a report's numbers come from: the study, the code revision, the package versions, the
devices and the wall time, read from the runs' summary.json files (each run records them when
it starts), so a shipped report says what made it.

    provenance_blocks(df, paths) -> report blocks: a "Provenance" section (empty for no runs)
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from attnjax.rundir import RunDir, read_manifest


def _time(text: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _counted(counter: Counter) -> str:
    return ", ".join(f"`{value}`" + (f" ({n} runs)" if len(counter) > 1 else "")
                     for value, n in counter.most_common())


def _experiment(paths: Sequence[str]) -> str | None:
    return read_manifest(paths[0]).get("experiment") if len(paths) == 1 else None


def provenance_blocks(df: pd.DataFrame, paths: Sequence[str]) -> list[tuple]:
    """The "Provenance" section: experiment, git revisions, versions, devices, and the study's
    wall time (first run start to last update) beside the sum of its runs' wall times."""
    summaries = [RunDir(p).read_summary() for p in df.get("run_dir", [])]
    summaries = [s for s in summaries if s.get("status") == "done"]
    if not summaries:
        return []
    items = []
    experiment = _experiment(paths)
    if experiment:
        items.append(f"experiment: `./launch.sh sweep {experiment}`")
    revisions = Counter(str(s.get("git_revision") or "unknown")[:12] for s in summaries)
    items.append(f"git revision: {_counted(revisions)}")
    versions = Counter(", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items() if v)
                       for s in summaries)
    items.append(f"versions: {_counted(versions)}")
    devices = Counter(f"{(s.get('device') or {}).get('kind', 'unknown')} × "
                      f"{(s.get('device') or {}).get('used', '?')}" for s in summaries)
    items.append(f"devices: {_counted(devices)}")
    starts = [t for t in (_time(s.get("started_at")) for s in summaries) if t]
    ends = [t for t in (_time(s.get("updated_at")) for s in summaries) if t]
    run_seconds = sum(float(s.get("wall_time_s") or 0.0) for s in summaries)
    if starts and ends:
        wall = (max(ends) - min(starts)).total_seconds()
        items.append(f"wall time: {wall / 60:.1f} min from the first run's start to the last "
                     f"run's end ({min(starts).isoformat()} to {max(ends).isoformat()}); the "
                     f"{len(summaries)} finished runs took {run_seconds / 60:.1f} min together")
    return [("h", 2, "Provenance"), ("list", items)]
