"""`nox -s bench`: the project's stack next to stock MLflow, measured in one run.

usage: python -m mlflow_stack.bench [--quick] [--profile ci] [--output-dir bench/results]

Everything runs in a scratch MLFLOW_STACK_HOME on free loopback ports and is removed at the end.
Servers measured side by side:
  project        the profile's stack (local runtime: our auth_config.ini, hook, workers, …)
  project-noauth the same mlflow server command without --app-name, on the same database;
                 measured twice in every round (auth "control"), the A/A control of the run
  stock          `mlflow server --app-name basic-auth` with MLflow's defaults (4 workers, job
                 runner on, MLflow's basic-auth function, auth cache off), databases of its own
  stock-noauth   `mlflow server` with MLflow's defaults, on the stock database

servers.py starts and watches the servers, measure.py runs the measurements, report.py turns
the results into the verdict, the Markdown table and the chart.
"""
