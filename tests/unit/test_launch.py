import json

from mlflow_stack import launch
from mlflow_stack.layout import StackLayout


def test_remembered_start_keeps_references_not_secrets(tmp_path, monkeypatch):
    uri = "postgresql+psycopg2://mlflow:s3cr%40t-password@127.0.0.1:5432/mlflow"
    environ = {"MLFLOW_BACKEND_STORE_URI": uri, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 40}
    delta = {
        "MLFLOW_TRACKING_URI": uri,
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "MLFLOW_ENABLE_WORKSPACES": "false",
        launch.BOOT_ID: "per-start",
        launch.ADMIN_BOOTSTRAPPED: "true",
    }
    target = StackLayout(tmp_path).mlflow_launch
    target.parent.mkdir()
    launch.write_launch(target, "key-1", ["python", "-m", "uvicorn"], delta, environ)
    text = target.read_text()
    assert "s3cr" not in text and "k" * 40 not in text
    assert target.stat().st_mode & 0o777 == 0o600
    stored = json.loads(text)
    assert launch.BOOT_ID not in stored["env"] and launch.ADMIN_BOOTSTRAPPED not in stored["env"]

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    remembered = launch.read_launch(target, "key-1")
    assert launch.resolve_env(remembered["env"]) == {
        "MLFLOW_TRACKING_URI": uri,
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "MLFLOW_ENABLE_WORKSPACES": "false",
    }
    assert launch.read_launch(target, "another-key") is None


def test_a_missing_source_means_no_remembered_start(monkeypatch):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    assert launch.resolve_env({"X": {"copy_of": "MLFLOW_BACKEND_STORE_URI"}}) is None


def test_the_key_changes_with_arguments_and_environment():
    base = launch.launch_key(["server", "--port", "5000"], {"MLFLOW_X": "1", "HOME": "/a"})
    assert base == launch.launch_key(["server", "--port", "5000"], {"MLFLOW_X": "1", "HOME": "/b"})
    assert base != launch.launch_key(["server", "--port", "5001"], {"MLFLOW_X": "1"})
    assert base != launch.launch_key(["server", "--port", "5000"], {"MLFLOW_X": "2"})
