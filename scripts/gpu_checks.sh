#!/usr/bin/env bash
# Every GPU check of issues 9-11 in one prepared run (an H100/H200: about 6 minutes in all).
#   device `run`:  bash scripts/gpu_checks.sh         (results under $OUT, else runs/gpu-checks)
#   CPU dry run:   SMOKE=1 PYTHON=.venv/bin/python bash scripts/gpu_checks.sh (tiny sizes)
# Each step has its own time limit so one slow step cannot eat the others' time; every step's
# output is kept in a log beside its JSON. Nothing here is installed: the device already has
# jax with CUDA, flax, optax and orbax, so only attnjax itself (`pip install -e . --no-deps`).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-checks}
mkdir -p "$out"
py=${PYTHON:-python3}  # the interpreter with jax (on the device: python3)
"$py" -m pip install -q -e . --no-deps >"$out/install.log" 2>&1 || true
smoke=${SMOKE:-}
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | tail -n 40
  echo "=== $name: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s"
}
"$py" -c 'import jax; print(jax.__version__, jax.devices())' | tee "$out/devices.log"
if [ -n "$smoke" ]; then
  step attention 120 "$py" scripts/gpu_attention_check.py --smoke
  step replicas 120 "$py" -m attnjax bench replicas --k 1,2 --steps 3 --out "$out"
  step train 120 "$py" -m attnjax bench train --size tiny --steps 3 --out "$out"
  step workers 300 "$py" -m attnjax bench workers --runs 2 --workers 1,2 --steps 20 \
    --out "$out/workers"
  exit 0
fi
# issue 11: cuDNN/auto vs reference (fwd+grads) and TFLOP/s at bf16, d 128, L 8192, causal
step attention 150 "$py" scripts/gpu_attention_check.py
# issue 10: K packed quickstart runs vs one by one (target: K=8 >= 6x run-steps/s)
step replicas 90 "$py" -m attnjax bench replicas --config quickstart --k 1,2,4,8,16 \
  --steps 50 --out "$out"
# issue 11: GPT-124M-style train step (12 x 768, L 1024, bf16): tokens/s, TFLOP/s, MFU >= 45 %
step train 100 "$py" -m attnjax bench train --size gpt --steps 20 --out "$out"
# issue 9: an 8-run study with 1 vs 2 worker processes sharing the GPU (0.45 of memory each)
step workers 120 "$py" -m attnjax bench workers --runs 8 --workers 1,2 --steps 300 \
  --out "$out/workers"
