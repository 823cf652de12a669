"""`invoke gc`: the arguments and environment of its process on each runtime, its prompt, and
mlflow_stack.gc itself on an in-process SQLite store (MLflow's gc code, our artifact mapping)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_stack import gc
from mlflow_stack.cli import gc as trash
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.render import CONTAINER_ARTIFACTS, render_profile
from mlflow_stack.secrets import load_secrets

STORE_URI = "postgresql+psycopg2://mlflow:s3cret%40pw@127.0.0.1:5532/mlflow"


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [("30d", 30 * 86_400_000), ("12h", 43_200_000), ("1d2h30m", 95_400_000), ("1.5s", 1500)],
)
def test_ages_are_read_as_mlflow_reads_them(text, milliseconds):
    assert gc.age_milliseconds(text) == milliseconds
    assert trash.gc_options(text, []) == ["--older-than", text]


@pytest.mark.parametrize("text", ["3x", "d", "1.2.3d", "-1d", "30 d"])
def test_a_bad_age_is_one_line_before_anything_runs(text):
    with pytest.raises(StackError, match="is not like 30d"):
        trash.gc_options(text, [])


def test_experiments_are_passed_one_flag_each():
    assert trash.gc_options(None, ["7", "my experiment"]) == [
        "--experiment",
        "7",
        "--experiment",
        "my experiment",
    ]
    with pytest.raises(StackError, match="--experiment needs"):
        trash.gc_options(None, [" "])


def test_the_local_process_carries_the_store_uri_in_its_environment_alone(stack_home):
    profile = load_profile("ci")
    command = trash.local_command(profile, ["--older-than", "1d"])
    assert command[1:5] == [
        "-m",
        "mlflow_stack.gc",
        "--artifacts-root",
        str(profile.layout.artifacts),
    ]
    env = trash.local_environment(STORE_URI, {"PATH": "/usr/bin"})
    assert env == {"PATH": "/usr/bin", gc.STORE_VARIABLE: STORE_URI}
    assert not any("s3cret" in part or "postgresql" in part for part in command)


def test_the_compose_one_off_uses_the_services_environment_and_volume():
    arguments = trash.compose_arguments(["--experiment", "4"])
    assert arguments == [
        "run",
        "--rm",
        "--no-deps",
        "-T",
        "--entrypoint",
        "python",
        "mlflow",
        "-",
        "--artifacts-root",
        CONTAINER_ARTIFACTS,
        "--experiment",
        "4",
    ]
    # No -e/--env: the store URI is the mlflow service's own variable in the container.
    assert not {"-e", "--env", "--env-file"} & set(arguments)
    # `python -` runs what it reads on stdin: gc.py must need nothing of the package.
    source = Path(gc.__file__).read_text()
    assert "from mlflow_stack" not in source and "import mlflow_stack" not in source


def test_the_result_is_the_last_json_line():
    counts = trash.parse_result('noise\n{"runs": 2, "experiments": 1, "logged_models": 0}\n')
    assert counts == {"runs": 2, "experiments": 1, "logged_models": 0}
    assert trash.summary({**counts, "folders": 3}) == (
        "removed 2 runs, 1 experiment, 0 logged models (3 artifact folders)"
    )
    for bad in ["", "no json", '["list"]', '{"runs": "2"}']:
        with pytest.raises(StackError, match="printed no result"):
            trash.parse_result(bad)


def test_it_refuses_without_a_terminal_and_without_yes(stack_home, monkeypatch):
    render_profile(load_profile("ci"))
    started = []
    monkeypatch.setattr(trash, "_run_local", lambda *a: started.append(a) or "")
    with pytest.raises(StackError, match="pass --yes"):
        trash.collect("ci", runtime="local", interactive=False)
    assert started == []


def test_with_yes_it_runs_and_reports(stack_home, monkeypatch, capsys):
    render_profile(load_profile("ci"))
    monkeypatch.setattr(
        trash,
        "_run_local",
        lambda *a: '{"runs": 1, "experiments": 2, "logged_models": 0, "folders": 3}\n',
    )
    counts = trash.collect("ci", yes=True, runtime="local", interactive=False)
    assert counts["experiments"] == 2
    assert capsys.readouterr().out.strip() == (
        "removed 1 run, 2 experiments, 0 logged models (3 artifact folders) "
        "from the trash of profile ci"
    )


def test_error_lines_of_the_process_become_one_line():
    assert trash._error_line("INFO x\nerror: no experiment with the ID or name 'x'\n", 2) == (
        "garbage collection failed: no experiment with the ID or name 'x'"
    )
    assert trash._error_line("Traceback ...", 1) == "garbage collection failed: exit 1"


def test_artifact_uris_map_into_the_artifacts_folder_only(tmp_path):
    root = tmp_path / "artifacts"
    assert gc.local_path(root, "mlflow-artifacts:/3/abc/artifacts") == root / "3/abc/artifacts"
    assert gc.local_path(root, f"file://{root}/3") == root / "3"
    assert gc.local_path(root, "mlflow-artifacts:/../../etc") is None
    assert gc.local_path(root, "mlflow-artifacts:/") is None  # never the root itself
    assert gc.local_path(root, "/etc/passwd") is None
    assert gc.local_path(root, "s3://bucket/3") is None


# --- mlflow_stack.gc on a real (SQLite) store, in-process ------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """gc registers its artifact repository process-wide: restored after the test."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    monkeypatch.setattr(
        _artifact_repository_registry, "_registry", dict(_artifact_repository_registry._registry)
    )


def _artifact(root: Path, uri: str, name: str = "model.txt") -> Path:
    folder = gc.local_path(root, uri)
    assert folder is not None
    folder.mkdir(parents=True)
    (folder / name).write_text("weights")
    return folder


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A migrated SQLite tracking store, made once (the migrations take seconds)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", "mlflow-artifacts:/").engine.dispose()
    return path


@pytest.fixture
def trash_can(tmp_path, registry, empty_store):
    """A store with: a deleted experiment (a run, a trace folder), a deleted run in a live
    experiment, a live run, and a deleted run whose artifacts lie outside the artifacts folder."""
    import shutil

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = (tmp_path / "artifacts").resolve()
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = SqlAlchemyStore(uri, "mlflow-artifacts:/")
    outside = tmp_path / "elsewhere"
    gone = store.create_experiment("gone")
    kept = store.create_experiment("kept")
    foreign = store.create_experiment("foreign", artifact_location=outside.as_uri())

    def run(experiment_id: str) -> object:
        return store.create_run(experiment_id, "alice", 0, [], "r")

    gone_run, dead_run, live_run, foreign_run = (
        run(gone),
        run(kept),
        run(kept),
        run(foreign),
    )
    folders = {
        "gone_run": _artifact(root, gone_run.info.artifact_uri),
        "gone_trace": _artifact(root, f"mlflow-artifacts:/{gone}/traces/tr-1/artifacts"),
        "dead_run": _artifact(root, dead_run.info.artifact_uri),
        "live_run": _artifact(root, live_run.info.artifact_uri),
    }
    outside_file = Path(foreign_run.info.artifact_uri.removeprefix("file://")) / "keep.txt"
    outside_file.parent.mkdir(parents=True)
    outside_file.write_text("not ours")
    store.delete_experiment(gone)
    store.delete_run(dead_run.info.run_id)
    store.delete_run(foreign_run.info.run_id)
    return {
        "store": store,
        "uri": uri,
        "root": root,
        "ids": {"gone": gone, "kept": kept},
        "runs": {"dead": dead_run.info.run_id, "live": live_run.info.run_id},
        "folders": folders,
        "outside_file": outside_file,
    }


def test_gc_empties_the_trash_and_leaves_no_orphaned_folder(trash_can, monkeypatch, capsys):
    from mlflow.entities import ViewType

    root, folders = trash_can["root"], trash_can["folders"]
    monkeypatch.setenv(gc.STORE_VARIABLE, trash_can["uri"])
    assert gc.main(["--artifacts-root", str(root)]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["runs"] == 3 and counts["experiments"] == 1 and counts["logged_models"] == 0
    store = trash_can["store"]
    assert store.search_experiments(view_type=ViewType.DELETED_ONLY) == []
    assert store._get_deleted_runs() == []
    assert not (root / trash_can["ids"]["gone"]).exists()  # runs and traces with it
    assert not folders["dead_run"].parent.exists()  # the run's folder, not only artifacts/
    assert (folders["live_run"] / "model.txt").read_text() == "weights"
    # Outside the artifacts folder MLflow's metadata goes, the files stay.
    assert trash_can["outside_file"].read_text() == "not ours"


def test_gc_of_one_experiment_keeps_the_rest_of_the_trash(trash_can, monkeypatch, capsys):
    monkeypatch.setenv(gc.STORE_VARIABLE, trash_can["uri"])
    assert gc.main(["--artifacts-root", str(trash_can["root"]), "--experiment", "gone"]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (counts["runs"], counts["experiments"]) == (1, 1)
    assert trash_can["store"]._get_deleted_runs() != []  # the other deleted runs stay
    assert trash_can["folders"]["dead_run"].exists()


def test_gc_refuses_in_one_line(trash_can, monkeypatch, capsys):
    monkeypatch.setenv(gc.STORE_VARIABLE, trash_can["uri"])
    root = str(trash_can["root"])
    assert gc.main(["--artifacts-root", root, "--experiment", "no such"]) == gc.EXIT_REFUSED
    assert "error: no experiment with the ID or name 'no such'" in capsys.readouterr().err
    assert gc.main(["--artifacts-root", root, "--experiment", "kept"]) == gc.EXIT_REFUSED
    assert "not in the deleted lifecycle stage" in capsys.readouterr().err
    assert gc.main(["--artifacts-root", root, "--older-than", "30d"]) == 0  # all of it is new
    assert json.loads(capsys.readouterr().out.strip())["runs"] == 0
    monkeypatch.delenv(gc.STORE_VARIABLE)
    assert gc.main(["--artifacts-root", root]) == gc.EXIT_REFUSED
    assert f"error: {gc.STORE_VARIABLE} is not set" in capsys.readouterr().err


def test_nothing_but_the_environment_holds_the_uri(stack_home):
    render_profile(load_profile("ci"))
    password = load_secrets(load_profile("ci")).db_password
    command = trash.local_command(load_profile("ci"), trash.gc_options("1d", ["x"]))
    assert not any(password in part for part in command)
