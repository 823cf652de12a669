"""`invoke gc` on a real stack: the trash made with the MLflow SDK (a deleted experiment with a
run and a trace, a deleted run and a deleted logged model in a live experiment) is emptied,
database and artifacts folder alike, and the database password is on no command line while
it runs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlflow_stack.files import parse_env_file
from mlflow_stack.render import urlquote
from tests.stacks import Stack

MAKE_TRASH = r"""
import json, tempfile, pathlib
import mlflow
from mlflow import MlflowClient

client = MlflowClient()
gone = client.create_experiment("gc-gone")
kept = client.create_experiment("gc-kept")
runs = {}
for name, experiment in [("gone", gone), ("dead", kept), ("live", kept)]:
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, f"artifact of {name}", "notes/readme.txt")
    client.set_terminated(run.info.run_id)
    runs[name] = run.info.run_id
mlflow.set_experiment(experiment_id=gone)
with mlflow.start_span("traced"):
    pass
model = client.create_logged_model(kept, name="gc-model")
with tempfile.TemporaryDirectory() as scratch:
    (pathlib.Path(scratch) / "weights.txt").write_text("weights")
    client.log_model_artifacts(model.model_id, scratch)
client.delete_logged_model(model.model_id)
client.delete_run(runs["dead"])
client.delete_experiment(gone)
print(json.dumps({"gone": gone, "kept": kept, "runs": runs, "model": model.model_id}))
"""


@pytest.fixture(scope="module")
def stack(ci_stack):
    return ci_stack


@pytest.fixture(scope="module")
def trash(stack) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MAKE_TRASH],
        env=stack.client_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def tracking_db(stack: Stack) -> sa.Engine:
    return sa.create_engine(
        sa.engine.URL.create(
            "postgresql+psycopg2",
            username="mlflow",
            password=parse_env_file(stack.state_dir / "secrets.env")["MLFLOW_STACK_DB_PASSWORD"],
            host="127.0.0.1",
            port=int(stack.env["MLFLOW_STACK_POSTGRES_PORT"]),
            database="mlflow",
        )
    )


def rows(stack: Stack, query: str, **params: str) -> list[tuple]:
    engine = tracking_db(stack)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query), params)]
    finally:
        engine.dispose()


DELETED = (
    "SELECT count(*) FROM experiments WHERE lifecycle_stage = 'deleted'",
    "SELECT count(*) FROM runs WHERE lifecycle_stage = 'deleted'",
    "SELECT count(*) FROM logged_models WHERE lifecycle_stage = 'deleted'",
)


def deleted_counts(stack: Stack) -> tuple[int, ...]:
    return tuple(rows(stack, query)[0][0] for query in DELETED)


class CommandLines:
    """Every distinct command line on the machine while it runs."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        self.seen.add((entry / "cmdline").read_bytes())
            self._stop.wait(0.01)


def test_without_yes_and_without_a_terminal_nothing_is_deleted(stack, trash):
    before = deleted_counts(stack)
    assert before == (1, 2, 1)  # the gone experiment's run is deleted with it
    refused = stack.invoke("gc", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: refusing to delete without confirmation and without a terminal: pass --yes"
    )
    assert deleted_counts(stack) == before


def test_gc_empties_the_trash_with_no_password_on_any_command_line(stack, trash):
    password = parse_env_file(stack.state_dir / "secrets.env")["MLFLOW_STACK_DB_PASSWORD"]
    with CommandLines() as seen:
        result = stack.invoke("gc", "--yes")
    assert result.stdout.strip() == (
        "removed 2 runs, 1 experiment, 1 logged model (4 artifact folders) "
        "from the trash of profile ci"
    )
    # The sampler saw the gc process itself: the check below looked at the right moment.
    assert any(b"mlflow_stack.gc" in line for line in seen.seen)
    for form in {password, urlquote(password)}:
        assert not any(form.encode() in line for line in seen.seen)
    assert password not in result.stdout + result.stderr
    assert deleted_counts(stack) == (0, 0, 0)
    gone = rows(stack, "SELECT 1 FROM experiments WHERE experiment_id = :id", id=trash["gone"])
    assert gone == []


def test_no_orphaned_artifact_folder_is_left(stack, trash):
    artifacts = stack.state_dir / "artifacts"
    experiments = {str(row[0]) for row in rows(stack, "SELECT experiment_id FROM experiments")}
    runs = {row[0] for row in rows(stack, "SELECT run_uuid FROM runs")}
    models = {row[0] for row in rows(stack, "SELECT model_id FROM logged_models")}
    for experiment in artifacts.iterdir():
        assert experiment.name in experiments, f"orphaned experiment folder {experiment}"
        for child in experiment.iterdir():
            if child.name == "models":
                orphaned = {m.name for m in child.iterdir()} - models
                assert not orphaned, f"orphaned logged model folders {orphaned}"
            elif child.name != "traces":
                assert child.name in runs, f"orphaned run folder {child}"
    assert not (artifacts / trash["gone"]).exists()
    assert not (artifacts / trash["kept"] / trash["runs"]["dead"]).exists()
    assert not (artifacts / trash["kept"] / "models" / trash["model"]).exists()
    live = artifacts / trash["kept"] / trash["runs"]["live"] / "artifacts" / "notes" / "readme.txt"
    assert live.read_text() == "artifact of live"


def test_an_empty_trash_is_a_clean_second_run(stack, trash):
    result = stack.invoke("gc", "--yes", "--older-than", "1d")
    assert result.stdout.startswith("removed 0 runs, 0 experiments, 0 logged models")


def test_an_unknown_experiment_is_one_line(stack, trash):
    result = stack.invoke("gc", "--yes", "--experiment", "no-such-experiment", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: garbage collection failed: no experiment with the ID or name 'no-such-experiment'"
    )
