"""`nox -s smoke`: run the REST smoke tests against a profile's stack or any URL.

usage: python -m mlflow_stack.smoke [--profile P] [--url URL] [--keep] [-- PYTEST_ARGS...]

Without --url it brings up the profile (default ci) if it is not running, runs the suite with the
admin's credentials and two access tokens it makes for the run (one revoked), then deletes the
tokens and takes down what it brought up (unless --keep). With --url the credentials come from
MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, and nothing is started.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import timedelta

from mlflow_stack import paths
from mlflow_stack.cli import lifecycle
from mlflow_stack.cli.stack import auth_database, is_running
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.runtime import choose_runtime
from mlflow_stack.secrets import load_secrets

SMOKE_TESTS = paths.PROJECT_ROOT / "tests" / "smoke"
OIDC_TOKEN_VARIABLE = "MLFLOW_STACK_SMOKE_OIDC_TOKEN"  # noqa: S105 - a name
TOKEN_VARIABLES = {
    "smoke-valid": "MLFLOW_STACK_SMOKE_TOKEN",
    "smoke-revoked": "MLFLOW_STACK_SMOKE_REVOKED_TOKEN",
}
CLIENT_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, _, pytest_args = (
        (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :])
        if "--" in argv
        else (argv, None, [])
    )
    parser = argparse.ArgumentParser(prog="nox -s smoke --", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", help="profile to test (default ci)")
    parser.add_argument("--url", help="test this server instead of a profile's stack")
    parser.add_argument("--keep", action="store_true", help="leave a stack it brought up running")
    args, unknown = parser.parse_known_args(own)
    return args, unknown + pytest_args


def run_pytest(env: dict[str, str], pytest_args: list[str]) -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SMOKE_TESTS),
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    return subprocess.run(command, env=env, cwd=paths.PROJECT_ROOT, check=False).returncode


def smoke_profile(profile_name: str, keep: bool, pytest_args: list[str]) -> int:
    from mlflow_stack.auth import tokens

    profile = load_profile(profile_name)
    brought_up = False
    running = is_running(profile, choose_runtime(profile))
    if not running:
        print(f"smoke: profile {profile.name} is not running; bringing it up", flush=True)
        lifecycle.up(profile.name)
        brought_up = True
    secrets = load_secrets(profile)
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(lifecycle.server_variables(profile))
    env.update(
        MLFLOW_TRACKING_USERNAME=profile.admin_username,
        MLFLOW_TRACKING_PASSWORD=secrets.admin_password,
    )
    if profile.oidc_enabled:
        # Adds the single-sign-on checks: the provider's token accepted, a forged one refused.
        from mlflow_stack import oidc_client

        machine = oidc_client.request_token(lifecycle.machine_credentials(profile))
        env[OIDC_TOKEN_VARIABLE] = machine.value
    try:
        with auth_database(profile) as auth_db:
            made: list[int] = []
            try:
                for name in ("smoke-valid", "smoke-revoked"):
                    record, token = tokens.create_token(
                        auth_db, profile.admin_username, name=name, expires_at=timedelta(hours=1)
                    )
                    made.append(record.id)
                    env[TOKEN_VARIABLES[name]] = token
                tokens.revoke_token(auth_db, made[1])
                return run_pytest(env, pytest_args)
            finally:
                for token_id in made:
                    tokens.delete_token(auth_db, token_id)
    finally:
        if brought_up and not keep:
            lifecycle.down(profile.name)


def main(argv: list[str]) -> int:
    args, pytest_args = parse_args(argv)
    try:
        if args.url:
            env = dict(os.environ, MLFLOW_TRACKING_URI=args.url)
            return run_pytest(env, pytest_args)
        return smoke_profile(args.profile, args.keep, pytest_args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
