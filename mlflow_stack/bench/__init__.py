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

The project's cells are measured in rounds of bursts (c=1 and 4, keep-alive and new
connections), and the c=1 keep-alive ones again with every configuration's requests
interleaved one by one, a finer comparison.

servers.py starts and watches the servers, cells.py sends the load, measure.py runs the
measurements, report.py turns the results into the verdict, the Markdown tables and the chart.
"""
