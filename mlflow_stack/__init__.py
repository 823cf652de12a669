"""mlflow-stack: a reproducible, authenticated MLflow tracking stack, per profile."""
