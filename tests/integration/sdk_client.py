"""The real MLflow SDK, as a user's script would use it; configured only by MLFLOW_TRACKING_*.

usage: sdk_client.py log NAME | get RUN_ID | search | artifact RUN_ID PATH
Prints one JSON line.
"""

import json
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient


def main(argv: list[str]) -> dict:
    command, *args = argv
    client = MlflowClient()
    if command == "log":
        experiment = mlflow.set_experiment(f"it-{args[0]}")
        with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=args[0]) as run:
            mlflow.log_param("alpha", "0.5")
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_text(f"artifact of {args[0]}", "notes/readme.txt")
        return {"run_id": run.info.run_id, "experiment_id": experiment.experiment_id}
    if command == "get":
        run = client.get_run(args[0])
        history = client.get_metric_history(args[0], "loss")
        return {
            "params": run.data.params,
            "metrics": run.data.metrics,
            "loss_steps": len(history),
            "status": run.info.status,
        }
    if command == "search":
        return {"experiments": [e.name for e in client.search_experiments()]}
    if command == "artifact":
        with tempfile.TemporaryDirectory() as scratch:
            local = client.download_artifacts(args[0], args[1], scratch)
            return {"text": Path(local).read_text()}
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
