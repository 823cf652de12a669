"""The stack's secrets: from the environment, else .stack/<profile>/secrets.env, else made anew."""

from __future__ import annotations

import os
import secrets as random_source
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlflow_stack.errors import StackError
from mlflow_stack.files import SECRET_MODE, format_env_file, parse_env_file, write_atomic
from mlflow_stack.profile import Profile

# Secret name -> the environment variable that overrides it.
ENV_VARS = {
    "admin_password": "MLFLOW_STACK_ADMIN_PASSWORD",
    "db_password": "MLFLOW_STACK_DB_PASSWORD",
    "secret_key": "MLFLOW_STACK_SECRET_KEY",
    "oidc_client_secret": "MLFLOW_STACK_OIDC_CLIENT_SECRET",
    "oidc_machine_secret": "MLFLOW_STACK_OIDC_MACHINE_SECRET",
    "oidc_dev_user_password": "MLFLOW_STACK_OIDC_DEV_USER_PASSWORD",
    "kek_passphrase": "MLFLOW_STACK_KEK_PASSPHRASE",
}
# The documented passwords of the dev profile (README, Secrets).
DEV_DEFAULTS = {
    "admin_password": "admin_password",
    "db_password": "mlflow_password",
    "secret_key": "dev-only-flask-secret-key-change-me",
    "oidc_client_secret": "dev-only-oidc-client-secret",
    "oidc_machine_secret": "dev-only-oidc-machine-secret",
    "oidc_dev_user_password": "dev-user-password",
}
OIDC_SECRETS = ("oidc_client_secret", "oidc_machine_secret", "oidc_dev_user_password")
# Only the server reads it (MLFLOW_CRYPTO_KEK_PASSPHRASE): generated in every profile, dev's too,
# since nobody types it; MLflow asks for 32 characters or more.
KEK_PASSPHRASE = "kek_passphrase"  # noqa: S105 - a name
MIN_KEK_LENGTH = 32
# MLflow's public fallback (mlflow.utils.crypto.DEFAULT_KEK_PASSPHRASE), refused like the others.
MLFLOW_DEFAULT_KEK = "mlflow-default-kek-passphrase-for-development-only"
# Passwords that scanners try first; a profile with refuse_default_passwords will not start
# with any of them.
KNOWN_DEFAULTS = frozenset(
    {
        *DEV_DEFAULTS.values(),
        MLFLOW_DEFAULT_KEK,
        "admin",
        "password",
        "password1234",
        "mlflow",
        "postgres",
        "changeme",
        "changeme1234",
        "admin1234567",
        "secret",
    }
)
MIN_PASSWORD_LENGTH = 12  # MLflow refuses shorter passwords for users
MAX_SECRET_LENGTH = 1024


@dataclass(frozen=True)
class Secrets:
    admin_password: str = field(repr=False)
    db_password: str = field(repr=False)
    secret_key: str = field(repr=False)
    # Empty where the profile does not use them (see `needed`).
    oidc_client_secret: str = field(default="", repr=False)
    oidc_machine_secret: str = field(default="", repr=False)
    oidc_dev_user_password: str = field(default="", repr=False)
    # Empty only where secrets.env predates it: the server then falls back to MLflow's public
    # default until the next render writes one.
    kek_passphrase: str = field(default="", repr=False)


def needed(profile: Profile, name: str) -> bool:
    """Whether the profile uses this secret at all: the OIDC ones only with single sign-on,
    the dev users' password only with a provider the stack runs itself."""
    if name not in OIDC_SECRETS:
        return True
    if not profile.oidc_enabled:
        return False
    return name != "oidc_dev_user_password" or profile.oidc_provider != "external"


def _provided_by_the_provider(profile: Profile, name: str) -> bool:
    """An external provider issued these: they can only be given, never generated here."""
    return profile.oidc_provider == "external" and name in OIDC_SECRETS


BEYOND_LATIN_1 = (
    "holds characters beyond Latin-1, which the MLflow SDK and CLI (requests) cannot send in "
    "basic auth"
)


def sendable_in_basic_auth(password: str) -> bool:
    """Whether requests, and so the MLflow SDK, can send this password (it encodes Latin-1)."""
    try:
        password.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def check_password(
    password: str,
    label: str = "the password",
    *,
    mlflow_user: bool = True,
    min_length: int = MIN_PASSWORD_LENGTH,
    ini_safe: bool = False,
) -> str:
    """The one set of password rules: what every file, prompt and header can carry; for an
    MLflow user (`mlflow_user`) also what MLflow and requests accept. Returns the password."""
    if len(password) > MAX_SECRET_LENGTH:
        raise StackError(
            f"{label} is {len(password)} characters long (at most {MAX_SECRET_LENGTH})"
        )
    if any(ch in password for ch in "\n\r\x00"):
        raise StackError(f"{label} contains a newline or NUL character, which is not allowed")
    if ini_safe and password != password.strip():
        raise StackError(f"{label} starts or ends with white space, which INI files drop")
    if mlflow_user and not sendable_in_basic_auth(password):
        raise StackError(f"{label} {BEYOND_LATIN_1}")
    if len(password) < min_length:
        # MLflow's own minimum for users; for the others it is ours, and said without MLflow.
        raise StackError(
            f"{label} is {len(password)} characters long: MLflow needs at least {min_length}"
            if mlflow_user
            else f"{label} is shorter than {min_length} characters"
        )
    return password


def check_secret_value(name: str, value: str) -> None:
    """Refuse a value that no rendered file (INI, YAML, URI, env) can carry faithfully."""
    check_password(
        value,
        ENV_VARS.get(name, name),
        mlflow_user=name == "admin_password",
        min_length={"secret_key": 0, KEK_PASSPHRASE: MIN_KEK_LENGTH}.get(name, MIN_PASSWORD_LENGTH),
        ini_safe=True,
    )


def _generate() -> str:
    # URL-safe alphabet: strong, and readable in a terminal when a user asks for it.
    return random_source.token_urlsafe(32)


def _gather(
    profile: Profile, environ: Mapping[str, str] | None, missing: Callable[[str], str]
) -> tuple[Secrets, dict[str, str], dict[str, str]]:
    """The environment, else secrets.env, else dev's defaults, else `missing(name)`; checked."""
    environ = os.environ if environ is None else environ
    secrets_path = profile.layout.secrets_file
    stored = parse_env_file(secrets_path) if secrets_path.exists() else {}
    values: dict[str, str] = {}
    for name, var in ENV_VARS.items():
        if not needed(profile, name):
            continue
        if environ.get(var):
            values[name] = environ[var]
        elif var in stored:
            values[name] = stored[var]
        elif name == "oidc_machine_secret" and _provided_by_the_provider(profile, name):
            values[name] = ""  # optional: only `invoke env --oidc` needs it
            continue
        elif _provided_by_the_provider(profile, name):
            raise StackError(
                f"profile {profile.name} signs in through an external provider: set {var} to "
                "the client secret it issued"
            )
        elif profile.secrets_mode == "defaults" and name in DEV_DEFAULTS:
            values[name] = DEV_DEFAULTS[name]
        else:
            values[name] = missing(name)
            if not values[name]:
                continue  # load_secrets on a secrets.env from before the KEK (see Secrets)
        check_secret_value(name, values[name])
        if profile.refuse_default_passwords and values[name] in KNOWN_DEFAULTS:
            raise StackError(
                f"profile {profile.name} refuses a known default password for {name}: "
                f"unset {var} to generate one, or set it to a strong password"
            )
    return Secrets(**values), values, stored


def resolve_secrets(
    profile: Profile, environ: Mapping[str, str] | None = None
) -> tuple[Secrets, bool]:
    """For render alone: the profile's secrets, generating missing ones, and whether
    secrets.env must be (re)written to hold them. Every other step uses `load_secrets`."""
    secrets, values, stored = _gather(profile, environ, lambda name: _generate())
    changed = stored != {ENV_VARS[name]: value for name, value in values.items() if value}
    return secrets, changed


def load_secrets(profile: Profile, environ: Mapping[str, str] | None = None) -> Secrets:
    """The profile's secrets as render left them (the environment still wins); never generates.

    A profile that generates its secrets and was not rendered yet has none: that is an error
    naming the command to run, not a random password that exists nowhere.
    """

    def missing(name: str) -> str:
        if name == KEK_PASSPHRASE:
            return ""  # only the server needs it, and render writes it into its environment
        raise StackError(
            f"profile {profile.name} has no secrets yet: run `invoke render -p {profile.name}` "
            f"or `invoke up -p {profile.name}`"
        )

    return _gather(profile, environ, missing)[0]


def write_secrets(profile: Profile, secrets: Secrets) -> None:
    content = format_env_file(
        {var: getattr(secrets, name) for name, var in ENV_VARS.items() if getattr(secrets, name)},
        header=(
            f"Secrets of the {profile.name} profile (mode 0600): never commit.\n"
            "Values are JSON-quoted strings; MLFLOW_STACK_* environment variables override them."
        ),
    )
    write_atomic(profile.layout.secrets_file, content, SECRET_MODE)
