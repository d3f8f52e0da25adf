#!/usr/bin/env bash
# Set up a fresh machine: Debian's espeak-ng + sox (speech for tests and the demo) and postgresql
# (the tests start a throwaway server from its initdb/pg_ctl to run the registry tests against
# PostgreSQL too), a virtual environment in .venv, and the project with its test extras (which
# include the mlflow and tensorboard export extras the tests read back).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
command -v espeak-ng >/dev/null || packages+=(espeak-ng)
command -v sox >/dev/null || packages+=(sox)
# --demo: the demo needs no PostgreSQL (only the tests start one)
[ "${1:-}" = "--demo" ] || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
if [ "${#packages[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch is pinned to 2.13.0 in pyproject.toml: that exact version is the local CPU wheel.
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import orchestrator.cli, torch, transformers, peft, psycopg, hydra_plugins.hydra_joblib_launcher, hydra_plugins.hydra_submitit_launcher, mlflow.tracking, tensorboardX" \
  || { echo "setup: install failed" >&2; exit 1; }
# Byte-compile the project, as pip does for a package it installs (not for an editable one): where
# PYTHONDONTWRITEBYTECODE is set, as on our machines, Python would otherwise compile every module
# of orchestrator/ from source at each command's start (0.1 s of `orchestrator report`). A stale
# file is never used: Python checks each against its source.
.venv/bin/python -m compileall -q orchestrator bench >/dev/null
echo "setup: ready (.venv)"
