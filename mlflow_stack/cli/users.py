"""The bodies of the users.* tasks: who may log in, through MLflow's REST API as the admin.

Input is checked before anything is contacted (`inputs`, `prompts`).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from mlflow_stack.cli.inputs import check_username
from mlflow_stack.cli.output import print_table
from mlflow_stack.cli.prompts import confirm_deletion, read_new_password
from mlflow_stack.client import AdminClient, MlflowApiError, User
from mlflow_stack.errors import StackError
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile, load_profile
from mlflow_stack.secrets import (
    ENV_VARS,
    KNOWN_DEFAULTS,
    check_password,
    load_secrets,
    write_secrets,
)


def no_such_user(profile: Profile, username: str) -> StackError:
    return StackError(
        f"no MLflow user named {username!r} in profile {profile.name} "
        f"(`invoke users.list -p {profile.name}`)"
    )


def require_user(client: AdminClient, username: str) -> User:
    """The user, or the StackError saying there is none (perms.* use it too)."""
    try:
        return client.get_user(username)
    except MlflowApiError as exc:
        if exc.not_found:
            raise no_such_user(client.profile, username) from None
        raise


def _print_password_once(username: str, password: str) -> None:
    print(f"password of {username}: {password}")
    print("(shown once: store it now; `invoke users.passwd` sets a new one)")


def add(
    profile_name: str, username: str, password_stdin: bool = False, admin: bool = False
) -> None:
    profile = load_profile(profile_name)
    check_username(username)
    password, generated = read_new_password(password_stdin)
    with AdminClient.for_profile(profile) as client:
        try:
            client.create_user(username, password)
        except MlflowApiError as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                raise StackError(
                    f"MLflow user {username!r} already exists in profile {profile.name}: "
                    f"`invoke users.passwd --user {username} -p {profile.name}` sets a new password"
                ) from None
            raise
        if admin:
            client.set_admin(username, True)
    print(f"added {'admin' if admin else 'user'} {username} to profile {profile.name}")
    if generated:
        _print_password_once(username, password)


def list_users(profile_name: str) -> None:
    profile = load_profile(profile_name)
    with AdminClient.for_profile(profile) as client:
        users = client.list_users()
    rows = [
        (
            u.username,
            "yes" if u.is_admin else "no",
            "profile admin" if u.username == profile.admin_username else "",
        )
        for u in sorted(users, key=lambda u: u.username)
    ]
    print_table(("USERNAME", "ADMIN", ""), rows)


def passwd(profile_name: str, username: str, password_stdin: bool = False) -> None:
    profile = load_profile(profile_name)
    check_username(username)
    is_stack_admin = username == profile.admin_username
    password, generated = read_new_password(password_stdin)
    if is_stack_admin:
        # The admin's password is also written to secrets.env and auth_config.ini.
        check_password(password, "the admin password", ini_safe=True)
        if profile.refuse_default_passwords and password in KNOWN_DEFAULTS:
            raise StackError(f"profile {profile.name} refuses a known default password")
    secrets = load_secrets(profile)
    with AdminClient.for_profile(profile) as client:
        require_user(client, username)
        # MLflow wants the current password when a user (here: the admin) changes their own.
        current = secrets.admin_password if is_stack_admin else None
        client.update_password(username, password, current_password=current)
    print(f"changed the password of {username} (profile {profile.name})")
    if generated:
        _print_password_once(username, password)
    if not is_stack_admin:
        return
    variable, secrets_file = ENV_VARS["admin_password"], StackLayout.SECRETS_FILE
    if os.environ.get(variable):
        print(
            f"note: {variable} is set and wins over {secrets_file}: set it to the new "
            f"password, or `invoke env` and the admin tasks will fail ({secrets_file} unchanged)",
            file=sys.stderr,
        )
        return
    write_secrets(profile, dataclasses.replace(secrets, admin_password=password))
    print(f"updated {profile.layout.secrets_file}: `invoke env` gives the new password")


def admin(profile_name: str, username: str, grant: bool, revoke: bool) -> None:
    if grant == revoke:
        raise StackError("pass exactly one of --grant and --revoke")
    profile = load_profile(profile_name)
    check_username(username)
    if revoke and username == profile.admin_username:
        raise StackError(
            f"{username} is the admin of profile {profile.name}; the tasks need it to stay admin"
        )
    with AdminClient.for_profile(profile) as client:
        user = require_user(client, username)
        if user.is_admin == grant:
            print(f"{username} {'is already' if grant else 'is not'} an admin; nothing changed")
            return
        client.set_admin(username, grant)
    print(f"{username} {'is now' if grant else 'is no longer'} an admin (profile {profile.name})")


def delete(
    profile_name: str, username: str, yes: bool = False, interactive: bool | None = None
) -> None:
    profile = load_profile(profile_name)
    check_username(username)
    if username == profile.admin_username:
        raise StackError(
            f"refusing to delete {username}: it is the admin of profile {profile.name}"
        )
    with AdminClient.for_profile(profile) as client:
        require_user(client, username)
        confirm_deletion(
            f"Delete MLflow user {username} of profile {profile.name}, with their grants "
            "and access tokens?",
            yes,
            interactive,
        )
        try:
            client.delete_user(username)
        except MlflowApiError as exc:
            if exc.not_found:
                raise no_such_user(profile, username) from None
            raise
    print(f"deleted user {username} (profile {profile.name}) with their grants and tokens")
