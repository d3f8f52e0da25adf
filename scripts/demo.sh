#!/usr/bin/env bash
# The embedded demo: a real domain-adaptation campaign on real speech, with no download.
#   1. set up (.venv, espeak-ng, sox)
#   2. synthesise the demo manifests (general English + air-traffic control in an unheard voice,
#      and an ATC dev set that picks each run's checkpoint)
#   3. run the demo_* campaign on the committed base model (demo/base), four runs at a time
#   4. rebuild EXPERIMENTS.md from registry.db
# Running it again skips every finished run (same identity hash) and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
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
.venv/bin/orchestrator report
.venv/bin/orchestrator runs
