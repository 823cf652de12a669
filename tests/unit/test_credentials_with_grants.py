"""The hook reads a user's grants in the statement that reads their credentials, so that the
fast path's permission check for a non-admin sends nothing more to the database."""

from __future__ import annotations

import flask
import sqlalchemy as sa

from mlflow_stack.auth import hook, permissions_sql, selfcheck, tokens
from mlflow_stack.auth.permissions_sql import GrantRow
from tests.unit.test_auth_authorization_function import basic, bearer, harness  # noqa: F401


def grant(engine: sa.Engine, username: str, workspace: str, experiment_id: str, level: str):
    """A direct grant as MLflow stores it: a row of a role assigned to the user."""
    with engine.begin() as conn:
        user_id = conn.execute(
            sa.text("SELECT id FROM users WHERE username = :u"), {"u": username}
        ).scalar_one()
        role_id = conn.execute(
            sa.text("INSERT INTO roles (workspace) VALUES (:w) RETURNING id"), {"w": workspace}
        ).scalar_one()
        conn.execute(
            sa.text("INSERT INTO user_role_assignments (user_id, role_id) VALUES (:u, :r)"),
            {"u": user_id, "r": role_id},
        )
        conn.execute(
            sa.text(
                "INSERT INTO role_permissions (role_id, resource_type, resource_pattern,"
                " permission) VALUES (:r, 'experiment', :e, :p)"
            ),
            {"r": role_id, "e": experiment_id, "p": level},
        )


def grants_seen(harness, headers: dict, username: str):  # noqa: F811
    with harness.app.test_request_context("/api/2.0/mlflow/runs/get", headers=headers):
        assert hook.authenticate().username == username
        read = hook.grants_of_this_request(username)
        # Only for the user this request authenticated as.
        assert hook.grants_of_this_request("someone-else") is None
        return read


def test_password_and_token_reads_bring_the_grants_of_the_default_workspace(harness):  # noqa: F811
    grant(harness.engine, "alice", "default", "7", "EDIT")
    grant(harness.engine, "alice", "default", "8", "READ")
    grant(harness.engine, "alice", "other-workspace", "9", "MANAGE")
    expected = {GrantRow("experiment", "7", "EDIT"), GrantRow("experiment", "8", "READ")}

    harness.statements.clear()
    assert set(grants_seen(harness, basic("alice", "alice-password"), "alice")) == expected
    assert len(harness.statements) == 1  # credentials and grants: one statement

    _, token = tokens.create_token(harness.engine, "alice")
    grants_seen(harness, bearer(token), "alice")  # the first use bumps last_used_at
    harness.statements.clear()
    assert set(grants_seen(harness, bearer(token), "alice")) == expected
    assert len(harness.statements) == 1


def test_a_user_without_grants_is_still_found_once(harness):  # noqa: F811
    harness.statements.clear()
    assert grants_seen(harness, basic("admin", "admin-password"), "admin") == ()
    assert len(harness.statements) == 1
    with harness.app.test_request_context("/", headers=basic("admin", "admin-password")):
        assert hook.authenticate().username == "admin"
        assert hook.is_admin_of_this_request() is True


def test_nothing_is_remembered_for_a_failed_login(harness):  # noqa: F811
    with harness.app.test_request_context("/", headers=basic("alice", "wrong-password-1")):
        assert isinstance(hook.authenticate(), flask.Response)
        assert hook.grants_of_this_request("alice") is None


def test_the_workspace_joined_is_mlflows_default():
    assert selfcheck.FINGERPRINTS["DEFAULT_WORKSPACE_NAME"] == permissions_sql.DEFAULT_WORKSPACE
