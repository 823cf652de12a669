"""What a user may do, asked through the real MLflow SDK; configured only by MLFLOW_TRACKING_*.

usage: sdk_access.py probe EXPERIMENT_ID RUN_ID
  tries, in this order: read the experiment, create a run in it, log a metric to RUN_ID.
Prints one JSON line: {"read": OUTCOME, "create_run": OUTCOME, "log_metric": OUTCOME},
OUTCOME = {"ok": bool, "status": HTTP status or null, "error": first line or ""}. A refusal is
an outcome, not a failure: the script exits 0 unless it could not run at all.
"""

import json
import re
import sys
from collections.abc import Callable

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

STATUS_IN_MESSAGE = re.compile(r"error code (\d{3})")
STATUS_OF_CODE = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}


def attempt(action: Callable[[], object]) -> dict:
    try:
        action()
    except MlflowException as exc:
        message = str(exc)
        found = STATUS_IN_MESSAGE.search(message)
        if found:
            status = int(found[1])
        else:
            status = STATUS_OF_CODE.get(exc.error_code) or exc.get_http_status_code()
        return {"ok": False, "status": status, "error": message.strip().splitlines()[0]}
    return {"ok": True, "status": 200, "error": ""}


def main(argv: list[str]) -> dict:
    command, *args = argv
    client = MlflowClient()
    if command == "probe":
        experiment_id, run_id = args
        return {
            "read": attempt(lambda: client.get_experiment(experiment_id)),
            "create_run": attempt(lambda: client.create_run(experiment_id)),
            "log_metric": attempt(lambda: client.log_metric(run_id, "probe", 1.0)),
        }
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
