#!/usr/bin/env bash
# One call on a lent GPU machine that has torch but no ltx-trainer: install a wheelhouse (../shared/gpu/wheelhouse.sh
# builds .whl/), then full_scale.py runs and/or GPU tests within a time budget, results under $OUT.
#
#   RUNS="int8_swap24_compiled_stockload int8w_auto22_graphs_cold" RTS="230 auto" OUTNAME=r_1.json BUDGET=588 \
#     bash benchmarks/gpu_call.sh
#
# Settings (environment):
#   RUNS         full_scale.py runs, one process each, merged into $OUT/$OUTNAME (the 48-block checkpoint is written
#                once under /tmp/fs and kept while the machine stays warm)
#   RTS, RT      each run's limit in s ("auto": what the budget has left minus RESERVE); RT for runs RTS leaves out
#   BUDGET       seconds for the whole call (keep it under the device's per-call limit)
#   TESTS        pytest node ids (select parametrizations by id: -k "not bf16" also deselects "..._within_bf16")
#   TESTS_FIRST  1: tests before runs
#   TT           the tests' limit in s (default: all the budget has left), so that runs after them keep their time
#   NOFUSION     "--no-fusion" (default "") for the last run; earlier runs never check fusion
#   WARMUP STEPS full_scale.py's --warmup/--steps (3/6)
#   CB           benchmarks/compile_blocks.py arguments, run last with what is left
set -uo pipefail
T0=$(date +%s)
BUDGET=${BUDGET:-585}; RT=${RT:-300}; OUTNAME=${OUTNAME:-r.json}; RUNS=${RUNS:-}; TESTS=${TESTS:-}
WARMUP=${WARMUP:-3}; STEPS=${STEPS:-6}; NOFUSION=${NOFUSION-}; CB=${CB:-}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl 2>&1 | grep -v WARNING | tail -3
export PYTHONPATH=$PWD/src:$SITE:$PWD/.whl/stubs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "setup done at $(( $(date +%s) - T0 )) s; code $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
do_tests() {
  [[ -z $TESTS ]] && return
  local t=$(( $(left) - 10 )); [[ -n ${TT:-} ]] && (( TT < t )) && t=$TT
  (( t < 30 )) && { echo "no time for tests"; return; }
  echo "== tests (limit $t s) at $(( $(date +%s) - T0 )) s"
  timeout "$t" python3 -m pytest -v -p no:cacheprovider --durations=0 --junitxml="$OUT/junit_${OUTNAME%.json}.xml" $TESTS 2>&1 \
    | grep -v "^WARNING\|Warning" | tail -60
  echo "== tests end at $(( $(date +%s) - T0 )) s (rc ${PIPESTATUS[0]})"
}
do_runs() {
  # one full_scale process per run, merged into one file; RTS gives each run's limit ("auto": what is left - RESERVE)
  [[ -z $RUNS ]] && return
  local -a runs=($RUNS) rts=(${RTS:-}); local i=0
  for r in "${runs[@]}"; do
    local rt=${rts[$i]:-$RT}; i=$((i+1))
    [[ $rt == auto ]] && rt=$(( $(left) - ${RESERVE:-40} ))
    (( rt < 60 )) && { echo "no time for $r"; continue; }
    local nf=--no-fusion; (( i == ${#runs[@]} )) && nf=$NOFUSION  # the last run checks every export's fusion
    echo "== $r at $(( $(date +%s) - T0 )) s (limit $rt s)"
    python3 benchmarks/full_scale.py --root /tmp/fs --warmup "$WARMUP" --steps "$STEPS" --run-timeout "$rt" \
      --runs "$r" --out "$OUT/$OUTNAME" --merge "$OUT/$OUTNAME" $nf >> "$OUT/${OUTNAME%.json}.log" 2>&1
    echo "rc $?"
  done
  grep -v "^WARNING\|Warning\|warn(" "$OUT/${OUTNAME%.json}.log" | grep -i "plan\|error\|timed out\|Traceback\|^run \|^int8\|^bf16\|checkpoint:" | tail -40
  echo "== runs end at $(( $(date +%s) - T0 )) s"
}
do_cb() {
  [[ -z $CB ]] && return
  local t=$(( $(left) - 5 )); (( t < 30 )) && return
  timeout "$t" python3 benchmarks/compile_blocks.py $CB --out "$OUT/cb_${OUTNAME}" 2>&1 | tail -30
}
if [[ ${TESTS_FIRST:-0} == 1 ]]; then do_tests; do_runs; else do_runs; do_tests; fi
do_cb
echo "total $(( $(date +%s) - T0 )) s"
