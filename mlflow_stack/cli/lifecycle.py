"""The bodies of the lifecycle tasks: render, validate, up, down, stop, restart, status, logs,
clean and env."""

from __future__ import annotations

import shlex
import shutil
from typing import TYPE_CHECKING

from mlflow_stack import health
from mlflow_stack.cli.output import print_table, shown
from mlflow_stack.cli.prompts import confirm_deletion, password_of, read_token
from mlflow_stack.cli.stack import existing_runtime, is_running
from mlflow_stack.endpoints import Endpoints
from mlflow_stack.errors import StackError
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile, load_profile
from mlflow_stack.render import render_profile

if TYPE_CHECKING:  # imported lazily: requests and the OIDC client are not needed by every task
    from mlflow_stack import oidc_client
from mlflow_stack.runtime import choose_runtime, make_runtime, remember_runtime
from mlflow_stack.secrets import load_secrets
from mlflow_stack.validate import validate_k8s, validate_profile

RENDER_TARGETS = ("runtimes", "kubernetes")


def render(profile_name: str, check: bool = False, target: str = "runtimes") -> None:
    """Render the files of the compose and local runtimes, or (target kubernetes) k8s/."""
    if target not in RENDER_TARGETS:
        raise StackError(f"--target {target!r}: use {' or '.join(RENDER_TARGETS)}")
    profile = load_profile(profile_name)
    if target == "kubernetes":
        from mlflow_stack import k8s

        written = k8s.render_profile(profile)
    else:
        written = render_profile(profile)
    print(f"rendered profile {profile.name} into {shown(profile.state_dir)}/")
    for path in written:
        print(f"  {shown(path)}")
    if check and target == "kubernetes":
        for line in validate_k8s(profile):
            print(f"ok  {line}")
    elif check:
        validate(profile_name)


def validate(profile_name: str) -> None:
    profile = load_profile(profile_name)
    for line in validate_profile(profile):
        print(f"ok  {line}")


def _print_access(profile: Profile) -> None:
    print(f"MLflow:      {health.mlflow_url(profile)}")
    print(f"admin user:  {profile.admin_username}")
    print(
        f'credentials: eval "$(invoke env -p {profile.name})"  (password in '
        f"{shown(profile.layout.secrets_file)})"
    )


def up(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    progress = health.Progress()
    runtime_name = choose_runtime(profile, runtime)
    if is_running(profile, runtime_name):
        print(
            f"profile {profile.name} is already running ({runtime_name} runtime); nothing changed"
        )
        _print_access(profile)
        return
    progress.step(f"rendering profile {profile.name}")
    render_profile(profile)
    secrets = load_secrets(profile)
    stack = make_runtime(profile, secrets, runtime_name)
    stack.up(progress)
    remember_runtime(profile, runtime_name)
    if not health.mlflow_accepts(profile, profile.admin_username, secrets.admin_password):
        raise StackError(
            f"MLflow is up but refuses {profile.admin_username} with the password in "
            f"{StackLayout.SECRETS_FILE}: if it was changed, set MLFLOW_STACK_ADMIN_PASSWORD"
        )
    progress.step(f"profile {profile.name} is healthy ({runtime_name} runtime)")
    _print_access(profile)


def down(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    existing_runtime(profile, runtime).down()
    print(f"profile {profile.name} is down; its data is kept")


def stop(profile_name: str, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    existing_runtime(profile, runtime).stop()
    print(f"profile {profile.name} is stopped")


def restart(profile_name: str, service: str | None = None, runtime: str = "auto") -> None:
    profile = load_profile(profile_name)
    existing_runtime(profile, runtime).restart(service)
    print(f"restarted {service or 'every service'} of profile {profile.name}")


def status(profile_name: str, runtime: str = "auto") -> bool:
    """Print each service's row; whether every service is healthy."""
    profile = load_profile(profile_name)
    stack = existing_runtime(profile, runtime)
    rows = stack.status()
    print(f"profile {profile.name} ({stack.name} runtime)")
    print_table(
        ("SERVICE", "STATE", "PID/CONTAINER", "PORT", "HEALTH"),
        [(r.service, r.state, r.process, r.port, r.health) for r in rows],
    )
    return all(r.health == "healthy" for r in rows)


def logs(
    profile_name: str, service: str | None, follow: bool, tail: int, runtime: str = "auto"
) -> None:
    profile = load_profile(profile_name)
    existing_runtime(profile, runtime).logs(service, follow, tail)


def clean(
    profile_name: str,
    volumes: bool,
    yes: bool,
    runtime: str = "auto",
    interactive: bool | None = None,
) -> None:
    profile = load_profile(profile_name)
    state_dir = profile.state_dir
    if not state_dir.exists():
        print(f"nothing to clean: {shown(state_dir)} does not exist")
        return
    what = "rendered files" + (", database, artifacts and logs" if volumes else "")
    confirm_deletion(
        f"Delete the {what} of profile {profile.name} ({shown(state_dir)})?", yes, interactive
    )

    if profile.layout.compose_file.exists():
        stack = existing_runtime(profile, runtime)
        stack.down()
        if volumes:
            stack.remove_volumes()
    # Without --volumes the data stays; with it, only the secrets survive (so that a backup
    # restores with the credentials it was made with), and the TLS CA that clients trust.
    keep = {StackLayout.SECRETS_FILE, StackLayout.TLS_DIR} | (
        set() if volumes else set(StackLayout.DATA_ENTRIES)
    )
    for entry in sorted(state_dir.iterdir()):
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    kept = sorted(e.name for e in state_dir.iterdir())
    print(f"removed the {what} of profile {profile.name}; kept: {', '.join(kept) or 'nothing'}")


def server_variables(profile: Profile) -> dict[str, str]:
    """Where the server is, and with TLS the certificate the SDK and CLI verify it against
    (so that nobody needs MLFLOW_TRACKING_INSECURE_TLS)."""
    endpoints = Endpoints.of(profile)
    values = {"MLFLOW_TRACKING_URI": endpoints.mlflow_url}
    if endpoints.server_certificate:
        values["MLFLOW_TRACKING_SERVER_CERT_PATH"] = endpoints.server_certificate
    return values


def _export(values: dict[str, str]) -> None:
    for key, value in values.items():
        print(f"export {key}={shlex.quote(value)}")


def machine_credentials(profile: Profile) -> oidc_client.ClientCredentials:
    """The machine client's client-credentials grant, at the provider as this machine
    reaches it (for `env --oidc` and the smoke suite)."""
    from mlflow_stack import oidc_client, oidc_profile
    from mlflow_stack.runtime import remembered_runtime

    if not profile.oidc_enabled:
        raise StackError(f"profile {profile.name} has no single sign-on (oidc_enabled = false)")
    secret = load_secrets(profile).oidc_machine_secret
    if not secret:
        raise StackError(
            f"profile {profile.name} has no secret for the machine client "
            f"{profile.oidc_machine_client_id}: set MLFLOW_STACK_OIDC_MACHINE_SECRET"
        )
    # The issuer as a browser on this machine reaches it: right for the host on both runtimes.
    issuer = oidc_profile.issuer(profile, remembered_runtime(profile) or "local")
    return oidc_client.ClientCredentials(
        oidc_client.token_endpoint(issuer),
        profile.oidc_machine_client_id,
        secret,
        profile.oidc_api_audience,
    )


def _oidc_env(profile: Profile, auth_provider: bool) -> None:
    """A client-credentials token of the machine client (or, with `auth_provider`, what the
    SDK's auth provider needs to fetch and renew them itself)."""
    from mlflow_stack import oidc_client

    credentials = machine_credentials(profile)
    token = oidc_client.request_token(credentials)  # also proves the secret is right
    username = oidc_client.unverified_claims(token.value).get(profile.oidc_username_claim)
    values = server_variables(profile)
    if auth_provider:
        values |= {
            "MLFLOW_TRACKING_AUTH": oidc_client.AUTH_PROVIDER_NAME,
            oidc_client.TOKEN_URL_VAR: credentials.token_url,
            oidc_client.CLIENT_ID_VAR: credentials.client_id,
            oidc_client.CLIENT_SECRET_VAR: credentials.client_secret,
            oidc_client.AUDIENCE_VAR: credentials.audience,
        }
        unset = ["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"]
    else:
        values["MLFLOW_TRACKING_TOKEN"] = token.value
        unset = ["MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_PASSWORD"]
    # The username is not a credential here (no password): MLflow records it as runs' author.
    if isinstance(username, str) and username:
        values["MLFLOW_TRACKING_USERNAME"] = username
    else:
        unset.append("MLFLOW_TRACKING_USERNAME")
    _export(values)
    print(f"unset {' '.join(unset)}")


def env(
    profile_name: str,
    user: str | None = None,
    token: bool = False,
    oidc: bool = False,
    auth_provider: bool = False,
) -> None:
    profile = load_profile(profile_name)
    if auth_provider and not oidc:
        raise StackError("--auth-provider goes with --oidc")
    if oidc:
        if user is not None or token:
            raise StackError("--oidc excludes --user and --token: the token names its client")
        _oidc_env(profile, auth_provider)
        return
    if token:
        # An access token (read from stdin, or prompted) instead of a username and password;
        # the unset keeps a shell's earlier basic-auth variables from winning over it.
        if user is not None:
            raise StackError("--user and --token exclude each other: a token knows its user")
        from mlflow_stack.cli.tokens import token_owner

        value = read_token()
        owner = token_owner(profile, value)
        # The SDK tags runs with MLFLOW_TRACKING_USERNAME, else the OS user; with no password
        # it still sends the token.
        _export(
            server_variables(profile)
            | {"MLFLOW_TRACKING_TOKEN": value, "MLFLOW_TRACKING_USERNAME": owner}
        )
        print("unset MLFLOW_TRACKING_PASSWORD")
        return
    secrets = load_secrets(profile)
    if user is None or user == profile.admin_username:
        username, password = profile.admin_username, secrets.admin_password
    else:
        username, password = user, password_of(user)
    _export(
        server_variables(profile)
        | {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}
    )
