"""What runs inside the MLflow container besides MLflow: its entry point and the database relay.

Installed in the image with `mlflow_stack.auth`; imports nothing else of the package.
"""
