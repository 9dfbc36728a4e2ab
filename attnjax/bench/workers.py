"""`attnjax bench workers`: wall time of one study run with 1 vs N local worker processes, and
the cost of the claim protocol (claim + release, one heartbeat).

    attnjax bench workers [--runs 8] [--workers 1,2] [--steps 800] [--out DIR]

The study is the quickstart's MQAR model (configs/mqar.py:quickstart) with `--runs` runs
(softmax and linear, seeds 0..); each worker count trains it from scratch in its own sweep dir,
one after the other, through the real CLI (`attnjax sweep --workers N`), so process start-up,
compiles and the claim traffic are all counted. The sweep dirs go to a temporary folder
(`--keep DIR` keeps them there); writes <out>/workers_benchmark.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attnjax import provenance, rundir

STUDY = '''
from attnjax.config import load_config_file
def get_config():
    config = load_config_file("mqar", "quickstart")
    config.num_train_steps = {steps}
    config.progress_bar = False
    return config
def sweep():
    return [{{"model.attention": a, "seed": s}} for s in range({seeds})
            for a in ("softmax", "linear")][:{runs}]
'''


def claim_cost(repeats: int = 200) -> dict[str, float]:
    """Mean seconds of one claim + release and of one heartbeat on a local disk."""
    with tempfile.TemporaryDirectory() as tmp:
        run = rundir.RunDir(tmp)
        start = time.perf_counter()
        for _ in range(repeats):
            run.claim(300, worker="bench").release()
        claim = (time.perf_counter() - start) / repeats
        held = run.claim(300, worker="bench")
        start = time.perf_counter()
        for _ in range(repeats):
            held.heartbeat()
        beat = (time.perf_counter() - start) / repeats
        held.release()
    return {"claim_and_release_s": claim, "heartbeat_s": beat}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="attnjax bench workers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--steps", type=int, default=800, help="train steps per run")
    p.add_argument("--out", default="runs/bench-workers")
    p.add_argument("--keep", help="put the sweep dirs here and keep them")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.keep or tempfile.mkdtemp(prefix="attnjax-bench-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    study = work / "study.py"
    study.write_text(STUDY.format(steps=args.steps, seeds=(args.runs + 1) // 2, runs=args.runs))
    rows = []
    for n in (int(w) for w in args.workers.split(",")):
        workdir = work / f"workers-{n}"
        if workdir.exists():
            import shutil

            shutil.rmtree(workdir)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "attnjax", "sweep", str(study),
                               "--workers", str(n), "--workdir", str(workdir)],
                              capture_output=True, text=True, env=os.environ)
        wall = time.perf_counter() - start
        done = sum(r.status() == "done" for r in map(rundir.RunDir, workdir.iterdir())
                   if r.path.is_dir() and rundir.RunDir.is_run_dir(r.path))
        rows.append({"workers": n, "wall_s": wall, "runs_done": done, "exit": proc.returncode})
        print(f"workers={n}: {wall:.1f} s, {done}/{args.runs} runs done", file=sys.stderr)
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup"] = base / r["wall_s"]
    report = {"kind": "workers", "date": provenance.now(), "versions": provenance.versions(),
              "host": provenance.hostname(), "cpus": os.cpu_count(), "runs": args.runs,
              "steps": args.steps, "rows": rows, "claims": claim_cost(),
              "command": "attnjax bench workers " + " ".join(argv)}
    rundir.atomic_write_json(out / "workers_benchmark.json", report)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print("| workers | wall (s) | speed-up | runs done |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['speedup']:.2f}× | {r['runs_done']} |")
    c = report["claims"]
    print(f"\nclaim + release: {c['claim_and_release_s'] * 1e3:.2f} ms; heartbeat: "
          f"{c['heartbeat_s'] * 1e6:.0f} µs")
    return 0 if all(r["exit"] == 0 for r in rows) else 1
