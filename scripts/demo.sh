#!/usr/bin/env bash
# The embedded demo: a real domain-adaptation campaign on real speech, with no download.
#   1. set up (.venv, espeak-ng, sox)
#   2. synthesise the demo manifests (general English + air-traffic control in an unheard voice)
#   3. run the demo_* campaign on the committed base model (demo/base), two runs at a time
#   4. rebuild EXPERIMENTS.md from registry.db
# Running it again skips every finished run (same identity hash) and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m orchestrator.synth --set demo
# Two processes with one thread each use 2 cores better than one process with two threads.
export OMP_NUM_THREADS=1
PARALLEL=(hydra/launcher=joblib hydra.launcher.n_jobs=2)
# the LR sweep declared in conf/exp/demo_universal_lora.yaml (hydra.sweeper.params), then the
# rest of the campaign: DoRA on one worker, the short harmful run then the decoder on the other
.venv/bin/orchestrator -m +exp=demo_universal_lora "${PARALLEL[@]}"
.venv/bin/orchestrator -m +exp=demo_dora,demo_harmful,demo_decoder_only "${PARALLEL[@]}"
.venv/bin/orchestrator report
.venv/bin/orchestrator runs
