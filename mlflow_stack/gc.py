"""Empty MLflow's trash with MLflow's own garbage collection (what `mlflow gc` runs).

usage: python -m mlflow_stack.gc --artifacts-root DIR [--older-than 30d] [--experiment X ...]

Run by `invoke gc`: on the local runtime as a child process, on compose inside a one-off
container of the MLflow image (fed to `python -` on stdin, so the image needs no copy of it).
It therefore imports nothing but the standard library and MLflow.

Why not `mlflow gc` itself: it takes the store URI, which holds the database password, only
as `--backend-store-uri` on its command line, where every user of the machine can read it
(/proc/*/cmdline); and with proxied artifacts it deletes them through the tracking server's
HTTP API, as a user that needs a password too. Here the URI comes from the environment
(MLFLOW_BACKEND_STORE_URI) and `mlflow-artifacts:` URIs are resolved to the server's
artifacts folder, so the artifacts are removed on disk, with the server up or down. The
selection and the deletion are MLflow's (`mlflow.cli._gc_tracking_resources`).

The last line on stdout is one JSON object: what was removed, by kind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

STORE_VARIABLE = "MLFLOW_BACKEND_STORE_URI"
# MLflow's own pattern for --older-than (mlflow/cli/__init__.py, gc).
AGE = re.compile(
    r"^((?P<days>[\.\d]+?)d)?((?P<hours>[\.\d]+?)h)?((?P<minutes>[\.\d]+?)m)"
    r"?((?P<seconds>[\.\d]+?)s)?$"
)
# What MLflow's gc prints for each object it removed.
REMOVED = {
    "runs": re.compile(r"^Run with ID (\S+) has been permanently deleted\.$"),
    "logged_models": re.compile(r"^Logged model with ID (\S+) has been permanently deleted\.$"),
    "experiments": re.compile(r"^Experiment with ID (\S+) has been permanently deleted\.$"),
}
ARTIFACT_SCHEMES = ("mlflow-artifacts", "file", "")
EXIT_REFUSED = 2


class Refused(Exception):
    """Something the user can fix; printed as one line."""


def age_milliseconds(text: str) -> int:
    """--older-than as MLflow reads it (30d, 12h, 1d2h30m, 1.5d): milliseconds."""
    parts = AGE.match(text)
    values = {k: v for k, v in parts.groupdict().items() if v} if parts else {}
    try:
        age = timedelta(**{k: float(v) for k, v in values.items()})
    except ValueError:  # "1.2.3d" passes the pattern
        values = {}
    if not values:
        raise Refused(f"--older-than {text!r} is not like 30d, 12h, 1d2h30m or 90s")
    return int(age.total_seconds() * 1000)


def local_path(root: Path, artifact_uri: str) -> Path | None:
    """Where an artifact URI of this server lives on disk; None outside its artifacts folder
    (gc then leaves those files alone)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "mlflow-artifacts":
        path = (root / parsed.path.lstrip("/")).resolve()
    elif parsed.scheme in ("file", ""):
        path = Path(parsed.path).resolve()
    else:
        return None
    return path if path != root and path.is_relative_to(root) else None


def _artifact_repository(root: Path, removed: list[Path]) -> Any:
    from mlflow.exceptions import InvalidUrlException
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    class ArtifactsFolder(LocalArtifactRepository):
        """An artifact location of this server, deleted on disk; refused outside root."""

        def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
            self._inside = local_path(root, artifact_uri)
            super().__init__(str(self._inside or root), *args, **kwargs)

        def delete_artifacts(self, artifact_path: str | None = None) -> None:
            if self._inside is None:
                # MLflow's gc catches this one: it warns and still removes the metadata.
                raise InvalidUrlException("outside the server's artifacts folder")
            super().delete_artifacts(artifact_path)  # type: ignore[no-untyped-call]
            removed.append(self._inside)

    return ArtifactsFolder


def _remove_empty_parents(root: Path, folder: Path) -> None:
    """A run's or a model's folder once MLflow removed its `artifacts` below it."""
    parent = folder.parent
    while parent != root and parent.is_relative_to(root):
        try:
            parent.rmdir()
        except OSError:
            return  # not empty, or gone
        parent = parent.parent


def _resolve_experiments(store: Any, wanted: list[str]) -> list[str]:
    """IDs of the named or numbered experiments; each must exist."""
    ids = []
    for item in wanted:
        found = store.get_experiment_by_name(item)
        if found is None and item.isdigit():
            from mlflow.exceptions import MlflowException

            with contextlib.suppress(MlflowException):
                found = store.get_experiment(item)
        if found is None:
            raise Refused(f"no experiment with the ID or name {item!r}")
        ids.append(found.experiment_id)
    return ids


def _deleted_experiments(store: Any) -> dict[str, str]:
    """experiment ID -> artifact location of every experiment in the trash."""
    from mlflow.entities import ViewType

    locations: dict[str, str] = {}
    token = None
    while True:
        page = store.search_experiments(view_type=ViewType.DELETED_ONLY, page_token=token)
        locations.update({e.experiment_id: e.artifact_location for e in page})
        token = page.token
        if not token:
            return locations


def collect(
    store_uri: str, root: Path, older_than: str | None, experiments: list[str]
) -> dict[str, int]:
    """Run MLflow's garbage collection; the number of runs, logged models and experiments it
    removed, and of the artifact folders removed with them."""
    from mlflow.cli import _gc_tracking_resources
    from mlflow.store.artifact.artifact_repository_registry import (
        _artifact_repository_registry as registry,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    time_delta = age_milliseconds(older_than) if older_than else 0
    removed_folders: list[Path] = []
    repository = _artifact_repository(root, removed_folders)
    for scheme in ARTIFACT_SCHEMES:
        registry.register(scheme, repository)  # type: ignore[no-untyped-call]
    store = SqlAlchemyStore(store_uri, "mlflow-artifacts:/")  # type: ignore[no-untyped-call]
    in_trash = _deleted_experiments(store)
    experiment_ids = _resolve_experiments(store, experiments) if experiments else None
    logged_model_ids = None
    if experiment_ids is not None:
        # MLflow's gc takes every deleted run and model unless given lists: these are the
        # experiments' own (their runs it adds itself).
        chosen = set(experiment_ids)
        logged_model_ids = [
            model_id
            for model_id in store._get_deleted_logged_models()  # type: ignore[no-untyped-call]
            if store.get_logged_model(model_id, allow_deleted=True).experiment_id in chosen
        ]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            _gc_tracking_resources(
                store,
                run_ids=[] if experiment_ids is not None else None,
                experiment_ids=experiment_ids,
                logged_model_ids=logged_model_ids,
                older_than=older_than,
                time_delta=time_delta,
                skip_experiments=False,
                skip_logged_models=False,
            )
    finally:
        sys.stderr.write(output.getvalue())
    lines = output.getvalue().splitlines()
    counts = {kind: 0 for kind in REMOVED}
    for line in lines:
        for kind, pattern in REMOVED.items():
            match = pattern.match(line.strip())
            if match is None:
                continue
            counts[kind] += 1
            location = in_trash.get(match.group(1)) if kind == "experiments" else None
            folder = local_path(root, location) if location else None
            if folder is not None and folder.is_dir():
                # MLflow removes an experiment's rows, not its folder (traces, leftovers).
                shutil.rmtree(folder)
                removed_folders.append(folder)
    for folder in removed_folders:
        _remove_empty_parents(root, folder)
    return {**counts, "folders": len(set(removed_folders))}


def main(argv: list[str] | None = None) -> int:
    """The entry point: the store URI from the environment, the rest from argv."""
    parser = argparse.ArgumentParser(prog="python -m mlflow_stack.gc")
    parser.add_argument("--artifacts-root", required=True)
    parser.add_argument("--older-than")
    parser.add_argument("--experiment", action="append", default=[])
    args = parser.parse_args(argv)
    store_uri = os.environ.get(STORE_VARIABLE)
    try:
        if not store_uri:
            raise Refused(f"{STORE_VARIABLE} is not set")
        root = Path(args.artifacts_root).resolve()
        counts = collect(store_uri, root, args.older_than, args.experiment)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:  # MlflowException and the like: its message, not a traceback
        message = (getattr(exc, "message", None) or str(exc)).strip()
        print(
            f"error: {message.splitlines()[0] if message else type(exc).__name__}", file=sys.stderr
        )
        return EXIT_REFUSED
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
