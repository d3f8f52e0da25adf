#!/usr/bin/env bash
# The embedded demo: real espeak-ng speech, a short LoRA run of the project-built tiny_random
# Moonshine v2, then EXPERIMENTS.md rebuilt from registry.db.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m orchestrator.synth --out manifests/test
.venv/bin/orchestrator run +exp=smoke_tiny_random
.venv/bin/orchestrator report
.venv/bin/orchestrator runs
