"""The bodies of the users.*, perms.* and tokens.* tasks: who may log in, and what they may do.

Users and permissions go through MLflow's REST API as the profile's admin (`client.py`).
Tokens are rows of our own table in the auth database (`auth/tokens.py`), reached on
127.0.0.1:`postgres_port` like the db.* tasks. Input is validated before anything is contacted.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
import secrets as random_source
import socket
import sys
from datetime import datetime, timedelta
from typing import IO

from mlflow_stack.client import (
    EXPERIMENT,
    REGISTERED_MODEL,
    AdminClient,
    Grant,
    MlflowApiError,
)
from mlflow_stack.errors import StackError
from mlflow_stack.profile import USERNAME, Profile, load_profile
from mlflow_stack.secrets import (
    ENV_VARS,
    KNOWN_DEFAULTS,
    MAX_SECRET_LENGTH,
    MIN_PASSWORD_LENGTH,
    SECRETS_FILE,
    resolve_secrets,
    write_secrets,
)

# What --level accepts, and what MLflow stores for it. MLflow 3.17 no longer grants
# NO_PERMISSIONS on a resource; its explicit "no access, whatever default_permission says"
# is DENY.
LEVELS = {
    "READ": "READ",
    "USE": "USE",
    "EDIT": "EDIT",
    "MANAGE": "MANAGE",
    "NO_PERMISSIONS": "DENY",
    "DENY": "DENY",
}
EXPIRES = re.compile(r"([1-9][0-9]{0,5})([dhm])")
EXPIRES_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
MAX_EXPIRY = timedelta(days=3650)
GENERATED_PASSWORD_BYTES = 18  # 24 URL-safe characters
DB_CONNECT_TIMEOUT_SECONDS = 3


# --- input checks (no network) -----------------------------------------------------------------


def check_username(username: str | None) -> str:
    if not username:
        raise StackError("a username is required (--username/--user)")
    if not USERNAME.fullmatch(username):
        raise StackError(
            f"invalid username {username!r}: up to 64 letters, digits, '_', '.', '@' and '-', "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    """MLflow's rule (at least 12 characters) plus what every file and prompt can carry."""
    if any(ch in password for ch in "\n\r\x00"):
        raise StackError("the password contains a newline or NUL character, which is not allowed")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StackError(
            f"the password is {len(password)} characters long: MLflow needs at least "
            f"{MIN_PASSWORD_LENGTH}"
        )
    if len(password) > MAX_SECRET_LENGTH:
        raise StackError(
            f"the password is {len(password)} characters long (at most {MAX_SECRET_LENGTH})"
        )
    return password


def parse_expires(text: str | None) -> timedelta | None:
    """`30d`, `12h`, `45m` -> a lifetime; None or empty -> the token does not expire."""
    if text is None or str(text).strip() == "":
        return None
    match = EXPIRES.fullmatch(str(text).strip())
    if not match:
        raise StackError(
            f"invalid --expires {text!r}: a whole number of days, hours or minutes, "
            "e.g. 30d, 12h or 45m"
        )
    lifetime = timedelta(**{EXPIRES_UNITS[match[2]]: int(match[1])})
    if lifetime > MAX_EXPIRY:
        raise StackError(f"--expires {text} is too long (at most {MAX_EXPIRY.days}d)")
    return lifetime


def parse_level(level: str | None) -> str:
    """The permission MLflow stores for a --level (NO_PERMISSIONS is DENY in MLflow 3.17)."""
    key = (level or "").strip().upper()
    if key not in LEVELS:
        raise StackError(
            f"invalid --level {level!r}: choose READ, EDIT, MANAGE or NO_PERMISSIONS "
            "(also USE, and DENY, which is what NO_PERMISSIONS is stored as)"
        )
    return LEVELS[key]


def read_new_password(
    password_stdin: bool,
    stdin: IO[str] | None = None,
    interactive: bool | None = None,
) -> tuple[str, bool]:
    """(password, generated): from stdin, prompted twice on a terminal, or generated."""
    stdin = sys.stdin if stdin is None else stdin
    if password_stdin:
        password = stdin.read()
        # One trailing newline is how `echo` and files end; a newline inside is refused below.
        password = password.removesuffix("\n").removesuffix("\r")
        if not password:
            raise StackError("--password-stdin: nothing on stdin")
        return check_password(password), False
    interactive = stdin.isatty() if interactive is None else interactive
    if interactive:
        password = getpass.getpass("new password: ", stream=sys.stderr)
        check_password(password)
        if getpass.getpass("repeat it: ", stream=sys.stderr) != password:
            raise StackError("the passwords do not match; nothing changed")
        return password, False
    return random_source.token_urlsafe(GENERATED_PASSWORD_BYTES), True


def _confirm(question: str, yes: bool, interactive: bool | None) -> None:
    if yes:
        return
    interactive = sys.stdin.isatty() if interactive is None else interactive
    if not interactive:
        raise StackError(
            "refusing to delete without confirmation and without a terminal: pass --yes"
        )
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise StackError("nothing deleted")


# --- helpers shared by the tasks ---------------------------------------------------------------


def _not_found(exc: MlflowApiError) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _no_user(profile: Profile, username: str) -> StackError:
    return StackError(
        f"no MLflow user named {username!r} in profile {profile.name} "
        f"(`invoke users.list -p {profile.name}`)"
    )


def _require_user(client: AdminClient, username: str):
    try:
        return client.get_user(username)
    except MlflowApiError as exc:
        if _not_found(exc):
            raise _no_user(client.profile, username) from None
        raise


def _print_password_once(username: str, password: str) -> None:
    print(f"password of {username}: {password}")
    print("(shown once: store it now; `invoke users.passwd` sets a new one)")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# --- users.* -----------------------------------------------------------------------------------


def users_add(
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
                    f"`invoke users.passwd {username} -p {profile.name}` sets a new password"
                ) from None
            raise
        if admin:
            client.set_admin(username, True)
    print(f"added {'admin' if admin else 'user'} {username} to profile {profile.name}")
    if generated:
        _print_password_once(username, password)


def users_list(profile_name: str) -> None:
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
    _table(("USERNAME", "ADMIN", ""), rows)


def users_passwd(profile_name: str, username: str, password_stdin: bool = False) -> None:
    profile = load_profile(profile_name)
    check_username(username)
    is_stack_admin = username == profile.admin_username
    password, generated = read_new_password(password_stdin)
    if is_stack_admin:
        if password != password.strip():
            raise StackError(
                "the admin password may not start or end with white space (INI files drop it)"
            )
        if profile.refuse_default_passwords and password in KNOWN_DEFAULTS:
            raise StackError(f"profile {profile.name} refuses a known default password")
    secrets, _ = resolve_secrets(profile)
    with AdminClient.for_profile(profile) as client:
        _require_user(client, username)
        # MLflow wants the current password when a user (here: the admin) changes their own.
        current = secrets.admin_password if is_stack_admin else None
        client.update_password(username, password, current_password=current)
    print(f"changed the password of {username} (profile {profile.name})")
    if generated:
        _print_password_once(username, password)
    if not is_stack_admin:
        return
    variable = ENV_VARS["admin_password"]
    if os.environ.get(variable):
        print(
            f"note: {variable} is set and wins over {SECRETS_FILE}: set it to the new "
            f"password, or `invoke env` and the admin tasks will fail ({SECRETS_FILE} unchanged)",
            file=sys.stderr,
        )
        return
    write_secrets(profile, dataclasses.replace(secrets, admin_password=password))
    print(f"updated {profile.state_dir / SECRETS_FILE}: `invoke env` gives the new password")


def users_admin(profile_name: str, username: str, grant: bool, revoke: bool) -> None:
    if grant == revoke:
        raise StackError("pass exactly one of --grant and --revoke")
    profile = load_profile(profile_name)
    check_username(username)
    if revoke and username == profile.admin_username:
        raise StackError(
            f"{username} is the admin of profile {profile.name}; the tasks need it to stay admin"
        )
    with AdminClient.for_profile(profile) as client:
        user = _require_user(client, username)
        if user.is_admin == grant:
            print(f"{username} {'is already' if grant else 'is not'} an admin; nothing changed")
            return
        client.set_admin(username, grant)
    print(f"{username} {'is now' if grant else 'is no longer'} an admin (profile {profile.name})")


def users_delete(
    profile_name: str, username: str, yes: bool = False, interactive: bool | None = None
) -> None:
    profile = load_profile(profile_name)
    check_username(username)
    if username == profile.admin_username:
        raise StackError(
            f"refusing to delete {username}: it is the admin of profile {profile.name}"
        )
    with AdminClient.for_profile(profile) as client:
        _require_user(client, username)
        _confirm(
            f"Delete MLflow user {username} of profile {profile.name}, with their grants "
            "and access tokens?",
            yes,
            interactive,
        )
        try:
            client.delete_user(username)
        except MlflowApiError as exc:
            if _not_found(exc):
                raise _no_user(profile, username) from None
            raise
    print(f"deleted user {username} (profile {profile.name}) with their grants and tokens")


# --- perms.* -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resource:
    type: str
    id: str
    label: str


def _resource(client: AdminClient, experiment: str | None, model: str | None) -> Resource:
    if (experiment is None) == (model is None):
        raise StackError("pass exactly one of --experiment NAME_OR_ID and --model NAME")
    if model is not None:
        try:
            client.registered_model(model)
        except MlflowApiError as exc:
            if _not_found(exc):
                raise StackError(f"no registered model named {model!r}") from None
            raise
        return Resource(REGISTERED_MODEL, model, f"model {model!r}")
    experiment = str(experiment)
    found = None
    if experiment.isdigit():
        try:
            found = client.experiment_by_id(experiment)
        except MlflowApiError as exc:
            if not _not_found(exc):
                raise
    if found is None:
        try:
            found = client.experiment_by_name(experiment)
        except MlflowApiError as exc:
            if _not_found(exc):
                kind = "id or name" if experiment.isdigit() else "name"
                raise StackError(f"no experiment with the {kind} {experiment!r}") from None
            raise
    experiment_id = str(found["experiment_id"])
    return Resource(
        EXPERIMENT, experiment_id, f"experiment {found.get('name')!r} (id {experiment_id})"
    )


def _direct_grant(client: AdminClient, username: str, resource: Resource) -> Grant | None:
    _, grants = client.list_permissions(username)
    for grant in grants:
        if grant.direct and (grant.resource_type, grant.resource_id) == (
            resource.type,
            resource.id,
        ):
            return grant
    return None


def perms_grant(
    profile_name: str,
    user: str,
    level: str,
    experiment: str | None = None,
    model: str | None = None,
) -> None:
    profile = load_profile(profile_name)
    check_username(user)
    permission = parse_level(level)
    if (experiment is None) == (model is None):
        raise StackError("pass exactly one of --experiment NAME_OR_ID and --model NAME")
    with AdminClient.for_profile(profile) as client:
        _require_user(client, user)
        resource = _resource(client, experiment, model)
        previous = _direct_grant(client, user, resource)
        if previous is not None and previous.permission == permission:
            print(f"{user} already has {permission} on {resource.label}; nothing changed")
            return
        if previous is not None:
            # MLflow refuses a second grant on the same resource: replace it.
            client.revoke(user, resource.type, resource.id)
        try:
            client.grant(user, resource.type, resource.id, permission)
        except StackError:
            if previous is not None:
                client.grant(user, resource.type, resource.id, previous.permission)
            raise
    change = f" (was {previous.permission})" if previous is not None else ""
    print(f"granted {permission} on {resource.label} to {user}{change}")
    if level.strip().upper() == "NO_PERMISSIONS":
        print("(MLflow 3.17 stores NO_PERMISSIONS on a resource as DENY: no access at all)")


def perms_revoke(
    profile_name: str, user: str, experiment: str | None = None, model: str | None = None
) -> None:
    profile = load_profile(profile_name)
    check_username(user)
    if (experiment is None) == (model is None):
        raise StackError("pass exactly one of --experiment NAME_OR_ID and --model NAME")
    with AdminClient.for_profile(profile) as client:
        _require_user(client, user)
        resource = _resource(client, experiment, model)
        try:
            client.revoke(user, resource.type, resource.id)
        except MlflowApiError as exc:
            if _not_found(exc):
                print(f"{user} had no grant on {resource.label}; nothing changed")
                return
            raise
    print(
        f"revoked the grant of {user} on {resource.label}: "
        f"default_permission ({profile.default_permission}) applies again"
    )


def perms_list(profile_name: str, user: str) -> None:
    profile = load_profile(profile_name)
    check_username(user)
    with AdminClient.for_profile(profile) as client:
        try:
            is_admin, grants = client.list_permissions(user)
        except MlflowApiError as exc:
            if _not_found(exc):
                raise _no_user(profile, user) from None
            raise
        rows = []
        for grant in sorted(grants, key=lambda g: (g.resource_type, g.resource_id)):
            name = grant.resource_id
            if grant.resource_type == EXPERIMENT and grant.resource_id != "*":
                try:
                    name = client.experiment_by_id(grant.resource_id).get("name", "")
                except MlflowApiError:
                    name = "(deleted?)"
            via = "direct" if grant.direct else f"role {grant.role}"
            rows.append((grant.resource_type, grant.resource_id, name, grant.permission, via))
    if is_admin:
        print(f"{user} is an admin: every permission on everything")
    if rows:
        _table(("TYPE", "ID", "NAME", "PERMISSION", "VIA"), rows)
    else:
        print(f"{user} holds no grants")
    print(
        f"anything else: default_permission {profile.default_permission} (profile {profile.name})"
    )


# --- tokens.* ----------------------------------------------------------------------------------


def _auth_database_url(profile: Profile) -> str:
    """The auth database on 127.0.0.1:postgres_port; a one-line error when nothing listens."""
    from mlflow_stack.render import database_uri
    from mlflow_stack.runtime import remembered_runtime

    port = profile.postgres_port
    try:
        socket.create_connection(("127.0.0.1", port), timeout=DB_CONNECT_TIMEOUT_SECONDS).close()
    except OSError:
        hint = ""
        if remembered_runtime(profile) == "docker" and not profile.publish_postgres:
            hint = " (the docker runtime publishes PostgreSQL only where publish_postgres = true)"
        raise StackError(
            f"the auth database of profile {profile.name} is not reachable on 127.0.0.1:{port}: "
            f"run `invoke up -p {profile.name}`{hint}"
        ) from None
    secrets, _ = resolve_secrets(profile)
    return database_uri(profile, secrets, "127.0.0.1", port, profile.auth_database)


def _when(moment: datetime | None, never: str = "never") -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else never


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def tokens_create(
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
    record, token = create_token(_auth_database_url(profile), user, name=name, expires_at=lifetime)
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


def tokens_list(profile_name: str, user: str | None = None, as_json: bool = False) -> None:
    from mlflow_stack.auth.tokens import list_tokens

    profile = load_profile(profile_name)
    if user is not None:
        check_username(user)
    records = list_tokens(_auth_database_url(profile), user)
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
    _table(("ID", "USER", "NAME", "STATE", "CREATED", "EXPIRES", "LAST USED"), rows)


def tokens_revoke(profile_name: str, token_id: str) -> None:
    from mlflow_stack.auth.token_format import utcnow
    from mlflow_stack.auth.tokens import revoke_token

    profile = load_profile(profile_name)
    try:
        number = int(str(token_id).strip())
    except ValueError:
        raise StackError(
            f"a token id is a number (see `invoke tokens.list`), got {token_id!r}"
        ) from None
    # revoke_token stamps revoked_at with this clock: earlier than now means done before.
    started = utcnow()
    record = revoke_token(_auth_database_url(profile), number)
    if record.revoked_at is not None and record.revoked_at < started:
        print(
            f"access token {record.id} of {record.username} was already revoked at "
            f"{_when(record.revoked_at)}; nothing changed"
        )
        return
    print(f"revoked access token {record.id} of {record.username} (profile {profile.name})")


def read_token(stdin: IO[str] | None = None, interactive: bool | None = None) -> str:
    """An access token for `invoke env --token`: from stdin, or prompted on a terminal."""
    from mlflow_stack.auth.token_format import TOKEN_PREFIX, looks_like_token

    stdin = sys.stdin if stdin is None else stdin
    interactive = stdin.isatty() if interactive is None else interactive
    if interactive:
        token = getpass.getpass("access token: ", stream=sys.stderr).strip()
    else:
        token = stdin.read().strip()
    if not looks_like_token(token) or any(ch.isspace() for ch in token):
        raise StackError(
            f"no access token on stdin (tokens start with {TOKEN_PREFIX}): "
            "`invoke tokens.create --user U --json | jq -r .token | invoke env --token`"
        )
    return token
