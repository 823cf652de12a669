#!/usr/bin/env bash
# Creates or updates .venv from the pinned set (requirements.lock); idempotent, does nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.requirements-lock.sha256
wanted=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "bootstrap: .venv is up to date with requirements.lock"
  exit 0
fi
# A .venv left without pip (a bootstrap interrupted while creating it) is made again.
if ! { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
  "$python" -m venv --clear .venv
fi
echo "bootstrap: installing requirements.lock into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
echo "$wanted" > "$stamp"
echo "bootstrap: done (.venv/bin/invoke --list shows the tasks)"
