#!/usr/bin/env bash
# The embedded demo: a real domain-adaptation campaign on real speech, with no download.
#   1. set up (.venv, espeak-ng, sox)
#   2. synthesise the demo manifests (general English + air-traffic control in an unheard voice,
#      and an ATC dev set that picks each run's checkpoint)
#   3. run the demo_* campaign on the committed base model (demo/base), four runs at a time
#   4. rebuild EXPERIMENTS.md from registry.db
# Running it again skips every finished run (same identity hash) and resumes interrupted ones.
#   bash scripts/demo.sh --tune   also runs the tune campaign (conf/exp/demo_tune.yaml: an accent,
#                                 searched until a run passes, budget 4 trials, 2 at a time) and
#                                 counts its compute against the equivalent grid (bench/tune_vs_grid.py)
set -euo pipefail
cd "$(dirname "$0")/.."
TUNE=0
for arg in "$@"; do
  case "$arg" in
    --tune) TUNE=1 ;;
    *) echo "demo: unknown option $arg (use --tune or nothing)" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh --demo
.venv/bin/python -m orchestrator.data.synth --set demo
# Two processes with one thread each use 2 cores better than one process with two threads.
export OMP_NUM_THREADS=1
PARALLEL=(hydra/launcher=joblib hydra.launcher.n_jobs=2)
# The LR sweep declared in conf/exp/demo_universal_lora.yaml (hydra.sweeper.params) and the rest
# of the campaign, both at once: four single-threaded runs share the 2 cores, so none idles while
# the shorter runs finish. The pause keeps the two multiruns' sweep folders (per second) apart.
.venv/bin/orchestrator -m +exp=demo_universal_lora "${PARALLEL[@]}" &
sweep=$!
sleep 2
.venv/bin/orchestrator -m +exp=demo_dora,demo_harmful,demo_decoder_only "${PARALLEL[@]}" &
rest=$!
status=0
wait "$sweep" || status=$?
wait "$rest" || status=$?
[ "$status" -eq 0 ] || { echo "demo: a run failed (exit $status); run this script again to resume" >&2; exit "$status"; }
if [ "$TUNE" -eq 1 ]; then
  .venv/bin/orchestrator tune +exp=demo_tune   # continues the study in registry.db; a met one trains nothing
  .venv/bin/python -m bench.tune_vs_grid --demo --count-only || echo "demo: tune vs grid missed its target (above)" >&2
fi
.venv/bin/orchestrator report
.venv/bin/orchestrator runs
