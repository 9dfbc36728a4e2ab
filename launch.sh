#!/usr/bin/env bash
# attnjax launcher: bootstraps .venv (created, or rebuilt when pyproject.toml changed), then
#   ./launch.sh                     quickstart: the MQAR comparison on CPU, prints the table
#   ./launch.sh test [PYTEST ARGS]  the test suite
#   ./launch.sh run CONFIG.py [--workdir DIR] [--config.KEY=VALUE ...]
#   ./launch.sh sweep EXPERIMENT.py [--workdir DIR] [--workers N] [--pack K] [--plan]
#   ./launch.sh work SWEEP_DIR | status SWEEP_DIR
#   ./launch.sh compare DIR [DIR ...] [--baseline V] [--select-by M --over KEY] (--help)
#   ./launch.sh variants | tasks [--format json]
#   ./launch.sh heatmap RUN_DIR  |  bench attention|data|workers|replicas
# Environment: PYTHON (interpreter for the venv, default python3),
#   ATTNJAX_JAX (a jax requirement for accelerators, e.g. 'jax[cuda13]' or 'jax[tpu]').
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "attnjax needs Python >= 3.11 (PYTHON=$PYTHON is $("$PYTHON" -V 2>&1 || echo missing))" >&2
  exit 2
fi

want=$( (cat pyproject.toml; echo "${ATTNJAX_JAX:-}") | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
stamp="$VENV/.attnjax-installed"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "launch.sh: installing attnjax into $VENV (log: $VENV/install.log) ..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if ! {
    "$VENV/bin/python" -m pip install --upgrade pip &&
    "$VENV/bin/python" -m pip install -e ".[test]" &&
    if [ -n "${ATTNJAX_JAX:-}" ]; then "$VENV/bin/python" -m pip install --upgrade "$ATTNJAX_JAX"; fi
  } > "$VENV/install.log" 2>&1; then
    tail -n 30 "$VENV/install.log" >&2
    echo "launch.sh: installation failed; full log in $VENV/install.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

cmd=${1:-quickstart}
[ $# -gt 0 ] && shift
case "$cmd" in
  quickstart)
    exec "$VENV/bin/python" -m attnjax sweep experiments/quickstart.py "$@" ;;
  test)  # one worker per core (XLA compiles are mostly single-threaded)
    exec "$VENV/bin/python" -m pytest -n "${ATTNJAX_TEST_WORKERS:-auto}" "$@" ;;
  run|sweep|work|status|compare|variants|tasks|heatmap|bench)
    exec "$VENV/bin/python" -m attnjax "$cmd" "$@" ;;
  -h|--help|help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    echo "launch.sh: unknown command '$cmd'. Known: quickstart (default), test, run, sweep, work, status, compare, variants, tasks, heatmap, bench, help" >&2
    exit 2 ;;
esac
