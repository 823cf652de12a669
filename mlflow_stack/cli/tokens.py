"""The bodies of the tokens.* tasks: personal access tokens, rows of our own table in the auth
database (`auth/tokens.py`), reached like the db.* tasks reach PostgreSQL."""

from __future__ import annotations

import getpass
import json
from datetime import datetime

from mlflow_stack.cli.inputs import check_username, parse_expires, parse_token_id
from mlflow_stack.cli.output import print_table
from mlflow_stack.cli.stack import auth_database
from mlflow_stack.client import AdminClient, MlflowApiError
from mlflow_stack.errors import StackError
from mlflow_stack.profile import Profile, load_profile


def _when(moment: datetime | None, never: str = "never") -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else never


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def create(
    profile_name: str,
    user: str,
    name: str | None = None,
    expires: str | None = None,
    as_json: bool = False,
) -> None:
    from mlflow_stack.auth.tokens import create_token

    profile = load_profile(profile_name)
    check_username(user)
    lifetime = parse_expires(expires)
    with auth_database(profile) as url:
        record, token = create_token(url, user, name=name, expires_at=lifetime)
    _audit(profile, "tokens.create", record.username, record.id)
    if as_json:
        print(
            json.dumps(
                {
                    "id": record.id,
                    "token": token,
                    "user": record.username,
                    "name": record.name,
                    "created": _iso(record.created_at),
                    "expires": _iso(record.expires_at),
                }
            )
        )
        return
    print(f"created access token {record.id} for {record.username} (profile {profile.name})")
    print(f"expires: {_when(record.expires_at)}")
    print(f"token:   {token}")
    print(
        "(shown once: store it now. Use it as MLFLOW_TRACKING_TOKEN, e.g. "
        f"`echo TOKEN | invoke env --token -p {profile.name}`)"
    )


def list_tokens(profile_name: str, user: str | None = None, as_json: bool = False) -> None:
    from mlflow_stack.auth import tokens as token_store

    profile = load_profile(profile_name)
    if user is not None:
        check_username(user)
    with auth_database(profile) as url:
        records = token_store.list_tokens(url, user)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "user": r.username,
                        "name": r.name,
                        "state": r.state,
                        "created": _iso(r.created_at),
                        "expires": _iso(r.expires_at),
                        "last_used": _iso(r.last_used_at),
                        "revoked": _iso(r.revoked_at),
                    }
                    for r in records
                ]
            )
        )
        return
    if not records:
        print("no access tokens" + (f" for {user}" if user else ""))
        return
    rows = [
        (
            str(r.id),
            r.username,
            r.name or "",
            r.state,
            _when(r.created_at),
            _when(r.expires_at),
            _when(r.last_used_at, "-"),
        )
        for r in records
    ]
    print_table(("ID", "USER", "NAME", "STATE", "CREATED", "EXPIRES", "LAST USED"), rows)


def revoke(profile_name: str, token_id: str) -> None:
    from mlflow_stack.auth.token_format import utcnow
    from mlflow_stack.auth.tokens import revoke_token

    profile = load_profile(profile_name)
    number = parse_token_id(token_id)
    # revoke_token stamps revoked_at with this clock: earlier than now means done before.
    started = utcnow()
    with auth_database(profile) as url:
        record = revoke_token(url, number)
    if record.revoked_at is not None and record.revoked_at < started:
        print(
            f"access token {record.id} of {record.username} was already revoked at "
            f"{_when(record.revoked_at)}; nothing changed"
        )
        return
    _audit(profile, "tokens.revoke", record.username, record.id)
    print(f"revoked access token {record.id} of {record.username} (profile {profile.name})")


def _audit(profile: Profile, task: str, owner: str, token_id: int) -> None:
    from mlflow_stack.cli.audit import record_task

    record_task(
        profile,
        {
            "user": owner,
            "actor": f"{getpass.getuser()} (invoke)",
            "auth": "database",
            "method": "TASK",
            "route": task,
            "status": 200,
            "token_id": str(token_id),
        },
    )


def token_owner(profile: Profile, token: str) -> str:
    """The user an access token acts as, asked of the running server, which also proves the
    token is still good (revoked, expired or foreign tokens are refused here, not at first use)."""
    with AdminClient.with_token(profile, token) as client:
        try:
            owner = client.current_username()
        except MlflowApiError as exc:
            if exc.status == 401:
                raise StackError(
                    f"the server refuses this access token: it is revoked, expired or not of "
                    f"profile {profile.name} (`invoke tokens.list -p {profile.name}`)"
                ) from None
            raise
    if not owner:
        raise StackError(f"the server at {client.url} did not say whose token this is")
    return owner
