"""`attnjax status SWEEP_DIR`: every run's status from its run dir, who holds it, totals.

A run whose summary says `running` but whose worker is gone (no live claim) is shown as
`running (stale)`: the next worker takes it over and resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnjax.registry import ConfigError
from attnjax.rundir import STATUSES, RunDir


def rows(path: str | Path) -> list[dict[str, Any]]:
    """One dict per run dir of the sweep dir (or of the single run dir `path`)."""
    from attnjax.sweep import sweep_runs

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"no such directory: {path}")
    run_dirs = [RunDir(path)] if RunDir.is_run_dir(path) else sweep_runs(path)
    if not run_dirs:
        raise ConfigError(f"{path} holds no run directories (plan a sweep there first)")
    out = []
    for r in run_dirs:
        summary = r.read_summary()
        holder, live = r.holder(), r.live_holder()
        status = summary.get("status") or "pending"
        out.append({
            "name": r.name, "status": status, "stale": status == "running" and live is None,
            "step": summary.get("step"), "num_train_steps": summary.get("num_train_steps"),
            "worker": live.worker if live is not None else None,
            "heartbeat_age_s": (round(holder.age(), 1) if holder is not None
                                and not holder.released else None),
            "reason": summary.get("reason"),
        })
    return out


def totals(table: list[dict[str, Any]]) -> dict[str, int]:
    out = {s: 0 for s in STATUSES}
    for row in table:
        out[row["status"]] = out.get(row["status"], 0) + 1
    out["stale"] = sum(r["stale"] for r in table)
    return out


def table(table_rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table and a totals line."""
    head = ("run", "status", "step", "worker", "heartbeat", "reason")
    lines = []
    for r in table_rows:
        step = f"{r['step'] or 0}/{r['num_train_steps'] or '?'}"
        beat = "" if r["heartbeat_age_s"] is None else f"{r['heartbeat_age_s']:.0f} s ago"
        status = r["status"] + (" (stale)" if r["stale"] else "")
        lines.append((r["name"], status, step, r["worker"] or "", beat,
                      (r["reason"] or "")[:60]))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
    counts = totals(table_rows)
    summary = ", ".join(f"{counts[s]} {s}" for s in (*STATUSES, "stale") if counts[s])
    return "\n".join([fmt(head), *map(fmt, lines), "", f"{len(table_rows)} runs: {summary}"])
