"""The stack's databases: probe, wait, psql, backup and restore, on any runtime.

Each function is given the endpoint the runtime exposes PostgreSQL on (a published port, or a
relay container) and uses the profile's own PostgreSQL client programs (mlflow_stack.pg_programs).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from mlflow_stack.errors import StackError
from mlflow_stack.files import SECRET_MODE
from mlflow_stack.pg_programs import PostgresPrograms, client_login
from mlflow_stack.profile import Profile
from mlflow_stack.runtime import DatabaseEndpoint, Runtime
from mlflow_stack.runtime.postgres import connect
from mlflow_stack.secrets import Secrets

BACKUP_FORMAT = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _alembic_head(migrations_dir: str) -> str:
    """The head revision of one of MLflow's migration folders, without importing MLflow."""
    from alembic.script import ScriptDirectory

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("MLflow is not installed: run ./scripts/bootstrap.sh")
    folder = Path(next(iter(spec.submodule_search_locations))) / migrations_dir
    return ScriptDirectory(str(folder)).get_current_head() or ""


def probe(profile: Profile, secrets: Secrets, endpoint: DatabaseEndpoint) -> list[CheckResult]:
    """Run the checks in order; stop at the first failure (later ones depend on it)."""
    results: list[CheckResult] = []
    # The login connection, once `authenticates` has made it; the checks after it share it.
    opened: list[psycopg2.extensions.connection] = []

    def reachable() -> str:
        # Through a relay, TCP alone proves nothing: a libpq connection attempt that gets as far
        # as asking for a password does.
        with socket.create_connection((endpoint.host, endpoint.port), timeout=3):
            pass
        try:
            connect(profile, secrets, endpoint, "postgres", timeout=3).close()
        except psycopg2.OperationalError as exc:
            if "password authentication failed" not in str(exc):
                raise
        return f"{endpoint} answers as PostgreSQL"

    def authenticates() -> str:
        opened.append(connect(profile, secrets, endpoint, "postgres"))
        return f"logged in as {profile.db_user} (password authentication)"

    def select_one() -> str:
        with opened[0].cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)  # noqa: S101
        return "SELECT 1 returned 1"

    def server_version() -> str:
        with opened[0].cursor() as cursor:
            cursor.execute("SHOW server_version")
            row = cursor.fetchone()
        if row is None:
            raise StackError("SHOW server_version returned no row")
        return f"PostgreSQL {row[0]}"

    def databases_exist() -> str:
        wanted = [profile.tracking_database, profile.auth_database]
        with opened[0].cursor() as cursor:
            cursor.execute(
                "SELECT datname, pg_database_size(datname) FROM pg_database "
                "WHERE datname = ANY(%s)",
                (wanted,),
            )
            sizes = dict(cursor.fetchall())
        missing = [name for name in wanted if name not in sizes]
        if missing:
            raise StackError(f"missing database(s): {', '.join(missing)}")
        return ", ".join(f"{name} {sizes[name] / 1e6:.1f} MB" for name in wanted)

    def schema_at_head(database: str, table: str, migrations_dir: str) -> Callable[[], str]:
        def check() -> str:
            head = _alembic_head(migrations_dir)
            connection = connect(profile, secrets, endpoint, database)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(table))
                    )
                    current = cursor.fetchone()
            except psycopg2.errors.UndefinedTable:
                raise StackError(f"{database} has no MLflow schema yet ({table} missing)") from None
            finally:
                connection.close()
            if current is None or current[0] != head:
                raise StackError(
                    f"{database} is at {current and current[0]}, MLflow's head is {head}"
                )
            return f"{database} at head {head}"

        return check

    checks: list[tuple[str, Callable[[], str]]] = [
        ("reachable", reachable),
        ("authenticates", authenticates),
        ("select 1", select_one),
        ("server version", server_version),
        ("databases exist", databases_exist),
        (
            "tracking schema at head",
            schema_at_head(profile.tracking_database, "alembic_version", "store/db_migrations"),
        ),
        (
            "auth schema at head",
            schema_at_head(
                profile.auth_database, "alembic_version_auth", "server/auth/db/migrations"
            ),
        ),
    ]
    try:
        for name, check in checks:
            try:
                results.append(CheckResult(name, True, check()))
            except (OSError, psycopg2.Error, StackError, AssertionError) as exc:
                detail = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                results.append(CheckResult(name, False, detail))
                break
    finally:
        for connection in opened:
            connection.close()
    return results


def wait(profile: Profile, secrets: Secrets, endpoint: DatabaseEndpoint, timeout: float) -> float:
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        try:
            connect(profile, secrets, endpoint, profile.tracking_database, timeout=3).close()
            return time.monotonic() - started
        except psycopg2.Error as exc:
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        time.sleep(0.3)
    raise StackError(f"PostgreSQL did not accept connections within {timeout:.0f} s: {last}")


def psql(profile: Profile, secrets: Secrets, endpoint: DatabaseEndpoint, database: str) -> int:
    """psql on `database` for a person at this terminal; its exit code."""
    return PostgresPrograms.for_profile(profile).attach_client(
        "psql", "--dbname", database, login=client_login(profile, secrets, endpoint)
    )


def backup(
    profile: Profile,
    secrets: Secrets,
    endpoint: DatabaseEndpoint,
    runtime: Runtime,
    output: Path,
) -> Path:
    """One tar file: both databases (pg_dump custom format), the artifacts, a manifest."""
    pg = PostgresPrograms.for_profile(profile)
    login = client_login(profile, secrets, endpoint)
    output = output.expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        dumps = {}
        for role, database in (
            ("tracking", profile.tracking_database),
            ("auth", profile.auth_database),
        ):
            dump = Path(scratch) / f"{role}.dump"
            pg.run_client(
                "pg_dump",
                "--format=custom",
                "--no-owner",
                "--file",
                str(dump),
                "--dbname",
                database,
                login=login,
                what=f"pg_dump of {database}",
            )
            dumps[role] = dump
        manifest = {
            "format": BACKUP_FORMAT,
            "profile": profile.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "databases": {"tracking": profile.tracking_database, "auth": profile.auth_database},
        }
        tmp_output = output.with_name(f".{output.name}.tmp")
        fd = os.open(tmp_output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            for role, dump in dumps.items():
                archive.add(dump, arcname=f"{role}.dump")
            artifacts = Path(scratch) / "artifacts"
            artifacts.mkdir()
            runtime.export_artifacts(artifacts)
            archive.add(artifacts, arcname="artifacts")
        os.replace(tmp_output, output)
    return output


def _safe_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in archive.getmembers():
        name = Path(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            raise StackError(f"backup holds an unsafe entry: {member.name}")
        members.append(member)
    return members


def restore(
    profile: Profile,
    secrets: Secrets,
    endpoint: DatabaseEndpoint,
    runtime: Runtime,
    source: Path,
) -> dict[str, Any]:
    """Replace both databases and the artifacts with the backup's; MLflow must be stopped."""
    source = source.expanduser()
    if not source.is_file():
        raise StackError(f"no backup at {source}")
    try:
        archive = tarfile.open(source, mode="r:gz")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise StackError(f"{source} is not a backup made by db.backup: {exc}") from None
    pg = PostgresPrograms.for_profile(profile)
    login = client_login(profile, secrets, endpoint)
    with archive, tempfile.TemporaryDirectory() as scratch:
        members = _safe_members(archive)
        names = {m.name for m in members}
        if not {MANIFEST, "tracking.dump", "auth.dump"} <= names:
            raise StackError(f"{source} is not a backup made by db.backup (entries missing)")
        archive.extractall(scratch, members=members, filter="data")
        manifest: dict[str, Any] = json.loads((Path(scratch) / MANIFEST).read_text())
        if manifest.get("format") != BACKUP_FORMAT:
            raise StackError(f"backup format {manifest.get('format')} is not supported")
        admin = connect(profile, secrets, endpoint, "postgres")
        admin.autocommit = True
        try:
            for role, database in (
                ("tracking", profile.tracking_database),
                ("auth", profile.auth_database),
            ):
                with admin.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (database,),
                    )
                    cursor.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database))
                    )
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                pg.run_client(
                    "pg_restore",
                    "--no-owner",
                    "--exit-on-error",
                    "--dbname",
                    database,
                    str(Path(scratch) / f"{role}.dump"),
                    login=login,
                    what=f"pg_restore of {database}",
                )
        finally:
            admin.close()
        runtime.import_artifacts(Path(scratch) / "artifacts")
    return manifest
