#!/usr/bin/env bash
# The project's test command (what CI runs): bootstraps .venv if needed, then every nox session,
# the compose tier on a real Docker engine included (in CI it installs and starts the engine).
# Arguments replace the session list and go to nox as they are, e.g.
#   ./scripts/test.sh -s unit -- -k profile
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
if [ "$#" -eq 0 ]; then
  set -- -s lint typecheck unit differential tools tests smoke faults browser compose
fi
exec .venv/bin/nox "$@"
