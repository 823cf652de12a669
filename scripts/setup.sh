#!/usr/bin/env bash
# From a fresh clone to a healthy stack: bootstrap .venv, then `invoke up --profile ${1:-dev}`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/invoke up --profile "${1:-dev}"
