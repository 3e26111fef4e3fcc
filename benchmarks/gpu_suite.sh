#!/usr/bin/env bash
# The GPU figures of issues 4 and 6 in one prepared device call (no training, no optuna needed):
#   device run:  command "bash benchmarks/gpu_suite.sh", timeout_s 590
# Parts, in this order, each under its own time limit and all under one deadline (SUITE_DEADLINE_S,
# default 560 s): env (devices, versions), steps (sandwich / dense train-step ratio and MFU of the
# GPU-sized experiments, issue 4 item 6), latency-cnn and latency-mlp (harness repeatability and
# latency-predictor quality at the throughput batch and at batch 1, issue 6 items 1 and 3), lowbit
# (int8 kernels vs float, issue 6 item 2). `bash benchmarks/gpu_suite.sh steps lowbit` runs only
# those. Each part's output goes to $OUT/<part>.log, and every part's last-line JSON, exit status and
# wall time to $OUT/suite.json (6 files: within the device tool's 8). `--smoke` runs every part at
# toy sizes on whatever device there is (a check of the script on the CPU, about 4 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-suite}
SCRATCH=${SUITE_SCRATCH:-runs/gpu-suite-scratch}
DEADLINE=$(( $(date +%s) + ${SUITE_DEADLINE_S:-560} ))
# SUITE_PYTHON picks the interpreter (e.g. a venv with the GPU image's jax, for a CPU check of the script).
PY=${SUITE_PYTHON:-python3}
[ -z "${SUITE_PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$SCRATCH"

smoke=0
parts=()
for a in "$@"; do
  case $a in
    --smoke) smoke=1 ;;
    env|steps|latency-cnn|latency-mlp|lowbit) parts+=("$a") ;;
    *) echo "gpu_suite.sh: unknown part '$a' (env, steps, latency-cnn, latency-mlp, lowbit, --smoke)" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -eq 0 ] && parts=(env steps latency-cnn latency-mlp lowbit)

if [ $smoke = 1 ]; then
  steps_args=(--families mlp)
  small=(--set measure.batch_size=8 --set measure.min_time_ms=2 --set measure.repeats=3 --seeds 2 --device cpu)
  cnn_args=(--subnets 10 --repeat 4 "${small[@]}")
  mlp_args=(--subnets 12 --repeat 4 "${small[@]}")
  lowbit_args=(--quick --rounds 3)
else
  steps_args=(--families mlp,cnn,transformer)
  cnn_args=(--subnets 48 --repeat 24)
  mlp_args=(--subnets 100 --repeat 40)
  lowbit_args=(--gpu-only)
fi

part_command() {  # the command line of one part
  case $1 in
    env) echo "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;" \
              "$PY -c 'import jax, flax; print(jax.__version__, flax.__version__, jax.devices())'" ;;
    steps) echo "$PY benchmarks/supernet_quality.py --step-time-only --gpu-experiments ${steps_args[*]} --out $SCRATCH/steps" ;;
    latency-cnn) echo "$PY benchmarks/latency_quality.py experiments/cnn_gpu.toml ${cnn_args[*]} --out $SCRATCH/latency-cnn" ;;
    latency-mlp) echo "$PY benchmarks/latency_quality.py experiments/mlp_gpu.toml ${mlp_args[*]} --out $SCRATCH/latency-mlp" ;;
    lowbit) echo "$PY benchmarks/lowbit_kernels.py ${lowbit_args[*]}" ;;
  esac
}

declare -A cap=([env]=30 [steps]=200 [latency-cnn]=200 [latency-mlp]=150 [lowbit]=120)
summary="$SCRATCH/suite.partial.json"
echo "{" > "$summary"
first=1
for part in "${parts[@]}"; do
  left=$(( DEADLINE - $(date +%s) - 5 ))
  limit=$(( left < ${cap[$part]} ? left : ${cap[$part]} ))
  if [ "$limit" -le 10 ]; then
    echo "== $part: skipped (deadline)"; rc=124; wall=0; last=null
  else
    echo "== $part (limit ${limit} s): $(part_command "$part")"
    t0=$(date +%s)
    timeout -k 10 "$limit" bash -c "$(part_command "$part")" > "$OUT/$part.log" 2>&1
    rc=$?
    wall=$(( $(date +%s) - t0 ))
    last=$(grep '^{' "$OUT/$part.log" | tail -n 1)
    [ -z "$last" ] && last=null
    tail -n 5 "$OUT/$part.log" | cut -c1-300
    echo "== $part: exit $rc after $wall s"
  fi
  [ $first = 1 ] || echo "," >> "$summary"
  first=0
  printf '"%s": {"rc": %d, "wall_s": %d, "result": %s}\n' "$part" "$rc" "$wall" "$last" >> "$summary"
done
echo "}" >> "$summary"
mv "$summary" "$OUT/suite.json"
echo "== results in $OUT (suite.json and one log per part)"
