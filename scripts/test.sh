#!/usr/bin/env bash
# The project's test command: bootstraps .venv if needed, then runs nox's default sessions.
# Extra arguments go to nox, e.g. ./scripts/test.sh -s tests -- -k profile
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/nox "$@"
