"""mlflow-stack tasks: `invoke --list` shows them, `invoke --help TASK` shows a task's flags."""

from invoke import Collection

from mlflow_stack.cli import seconds, stack_task, whole_number

PROFILE = "profile name: dev, ci, demo, sso (config/profiles/); default dev"
RUNTIME = (
    "auto (default: as last started, else docker if an engine answers, else local), local, docker"
)
SERVICE = "one service: postgres, mlflow, or oidc-provider where the stack runs one (default: all)"
YES = "do not ask for confirmation (required without a terminal)"


@stack_task(
    help={
        "profile": PROFILE,
        "check": (
            "also validate the files: compose config -q, MLflow's INI parsing, hadolint; "
            "with --target kubernetes: kubernetes-validate --strict and checkov"
        ),
        "target": (
            "runtimes (default: the compose and local runtimes' files) or kubernetes "
            "(.stack/<profile>/k8s/, for kubectl apply -k)"
        ),
    }
)
def render(c, profile="dev", check=False, target="runtimes"):
    """Render a profile into .stack/<profile>/ (compose file, auth_config.ini, local configs)."""
    from mlflow_stack.cli import lifecycle

    lifecycle.render(profile, check=check, target=target)


@stack_task(help={"profile": PROFILE})
def validate(c, profile="dev"):
    """Validate a profile's rendered files without rendering them again."""
    from mlflow_stack.cli import lifecycle

    lifecycle.validate(profile)


@stack_task(help={"profile": PROFILE, "runtime": RUNTIME})
def up(c, profile="dev", runtime="auto"):
    """Render and start a profile's stack, wait until healthy, print URL and credentials."""
    from mlflow_stack.cli import lifecycle

    lifecycle.up(profile, runtime)


@stack_task(help={"profile": PROFILE, "runtime": RUNTIME})
def down(c, profile="dev", runtime="auto"):
    """Stop and remove the stack's processes or containers; keep its data."""
    from mlflow_stack.cli import lifecycle

    lifecycle.down(profile, runtime)


@stack_task(help={"profile": PROFILE, "runtime": RUNTIME})
def stop(c, profile="dev", runtime="auto"):
    """Stop the stack's services without removing them (local runtime: same as down)."""
    from mlflow_stack.cli import lifecycle

    lifecycle.stop(profile, runtime)


@stack_task(help={"profile": PROFILE, "service": SERVICE, "runtime": RUNTIME})
def restart(c, profile="dev", service=None, runtime="auto"):
    """Restart the stack or one service, and wait until MLflow is healthy again."""
    from mlflow_stack.cli import lifecycle

    lifecycle.restart(profile, service, runtime)


@stack_task(help={"profile": PROFILE, "runtime": RUNTIME})
def status(c, profile="dev", runtime="auto"):
    """Show each service's state, pid or container, port and health (exit 1 unless healthy)."""
    from invoke.exceptions import Exit

    from mlflow_stack.cli import lifecycle

    if not lifecycle.status(profile, runtime):
        raise Exit(code=1)


@stack_task(
    help={
        "profile": PROFILE,
        "service": SERVICE,
        "follow": "keep printing new lines until Ctrl-C",
        "tail": "how many lines to show first (default 100)",
        "runtime": RUNTIME,
    }
)
def logs(c, profile="dev", service=None, follow=False, tail="100", runtime="auto"):
    """Show the logs of the stack or one service."""
    from mlflow_stack.cli import lifecycle

    lifecycle.logs(profile, service, follow, whole_number("--tail", tail), runtime)


@stack_task(
    help={
        "profile": PROFILE,
        "volumes": "also delete the database, artifacts and logs",
        "yes": YES,
        "runtime": RUNTIME,
    }
)
def clean(c, profile="dev", volumes=False, yes=False, runtime="auto"):
    """Stop the stack and delete its rendered files (with --volumes: its data too)."""
    from mlflow_stack.cli import lifecycle

    lifecycle.clean(profile, volumes, yes, runtime)


@stack_task(
    help={
        "profile": PROFILE,
        "user": "print the variables for this user (password prompted) instead of the admin",
        "token": "use an access token read from stdin (MLFLOW_TRACKING_TOKEN), not a password",
        "oidc": (
            "single sign-on: a client-credentials JWT of the machine client "
            "(oidc_machine_client_id) as MLFLOW_TRACKING_TOKEN, its user as "
            "MLFLOW_TRACKING_USERNAME; valid for oidc_access_token_seconds"
        ),
        "auth_provider": (
            "with --oidc: print MLFLOW_TRACKING_AUTH=mlflow-stack-oidc and its "
            "MLFLOW_STACK_MACHINE_{TOKEN_URL,CLIENT_ID,CLIENT_SECRET,AUDIENCE} instead of a "
            "token, so the SDK fetches and renews tokens itself (long jobs); prints the secret"
        ),
    }
)
def env(c, profile="dev", user=None, token=False, oidc=False, auth_provider=False):
    """Print export lines for MLFLOW_TRACKING_*: eval "$(invoke env)" configures CLI and SDK."""
    from mlflow_stack.cli import lifecycle

    lifecycle.env(profile, user, token, oidc, auth_provider)


@stack_task(
    help={
        "profile": PROFILE,
        "older_than": (
            "only what was deleted longer ago than this: 30d, 12h, 1d2h30m, 90s "
            "(default: everything in the trash)"
        ),
        "experiment": (
            "only this deleted experiment (ID or name) with its runs and logged models; "
            "repeat the flag for several"
        ),
        "yes": YES,
        "runtime": RUNTIME,
    },
    iterable=("experiment",),
)
def gc(c, profile="dev", older_than=None, experiment=None, yes=False, runtime="auto"):
    """Empty MLflow's trash: deleted runs, experiments, logged models and their artifacts."""
    from mlflow_stack.cli import gc as trash

    trash.collect(profile, older_than, experiment or (), yes, runtime)


@stack_task(
    help={
        "profile": PROFILE,
        "user": "only this user's records",
        "since": "only records since then: 2h, 30m, 7d, or an ISO time (UTC)",
        "failed": "only refusals and failures (401, 403, 4xx, 5xx)",
        "follow": "print new records as they are written, until Ctrl-C (JSON lines)",
        "json": "print JSON lines instead of a table",
        "runtime": RUNTIME,
    }
)
def audit(
    c, profile="dev", user=None, since=None, failed=False, follow=False, json=False, runtime="auto"
):
    """Show the audit log: who changed what, and every failed authentication."""
    from mlflow_stack.cli import audit as audit_log

    audit_log.show(profile, user, since, failed, follow, json, runtime)


namespace = Collection(
    render, validate, up, down, stop, restart, status, logs, clean, env, gc, audit
)


@stack_task(name="probe", help={"profile": PROFILE, "runtime": RUNTIME})
def db_probe(c, profile="dev", runtime="auto"):
    """Check the database: reachable, login, SELECT 1, version, databases, schemas, sizes."""
    from mlflow_stack.cli import db

    db.probe(profile, runtime)


@stack_task(
    name="wait",
    help={
        "profile": PROFILE,
        "timeout": "seconds to wait at most (default 30)",
        "runtime": RUNTIME,
    },
)
def db_wait(c, profile="dev", timeout="30", runtime="auto"):
    """Wait until PostgreSQL accepts connections."""
    from mlflow_stack.cli import db

    db.wait(profile, seconds("--timeout", timeout), runtime)


@stack_task(
    name="psql",
    help={"profile": PROFILE, "database": "tracking (default) or auth", "runtime": RUNTIME},
)
def db_psql(c, profile="dev", database="tracking", runtime="auto"):
    """Open psql on the stack's tracking or auth database (password from secrets, not argv)."""
    from invoke.exceptions import Exit

    from mlflow_stack.cli import db

    code = db.psql(profile, database, runtime)
    if code:
        raise Exit(code=code)


@stack_task(
    name="backup",
    help={
        "profile": PROFILE,
        "output": "the backup file (default backups/mlflow-<profile>-<time>.tar.gz)",
        "runtime": RUNTIME,
    },
)
def db_backup(c, profile="dev", output=None, runtime="auto"):
    """Back up both databases (pg_dump) and the artifacts into one file (mode 0600)."""
    from mlflow_stack.cli import db

    db.backup(profile, output, runtime)


@stack_task(
    name="restore",
    required=("source",),
    help={"profile": PROFILE, "source": "a file made by db.backup", "runtime": RUNTIME},
)
def db_restore(c, profile="dev", source=None, runtime="auto"):
    """Replace the stack's databases and artifacts with a backup's (the stack must be up)."""
    from mlflow_stack.cli import db

    db.restore(profile, source, runtime)


db = Collection("db", db_probe, db_wait, db_psql, db_backup, db_restore)
namespace.add_collection(db)


# --- users.*, perms.*, tokens.* (mlflow_stack/cli/) ----------------------------------------------

USERNAME = "the MLflow username"
FROM_STDIN = (
    "read the password from stdin (default: prompted twice on a terminal, else generated "
    "and printed once)"
)
# perms.*: one selector flag per resource type MLflow's permission API grants on.
SELECTORS = {
    "experiment": "an experiment, by name or id",
    "model": "a registered model, by name (a prompt is --prompt)",
    "prompt": "a prompt, by name (what mlflow.genai.load_prompt loads)",
    "scorer": "a scorer, as EXPERIMENT_ID/NAME",
    "gateway_secret": "an AI gateway secret, by id or name",
    "gateway_endpoint": "an AI gateway endpoint, by id or name",
    "gateway_model_definition": "an AI gateway model definition, by id or name",
    "mcp_server": "an MCP server, by name",
    "tier": (
        "every resource of one sub-resource type, in what the user can reach: run, trace, "
        "assessment, logged_model, review_queue, registered_model_version, prompt_version, "
        "scorer_version, mcp_server_version"
    ),
}


@stack_task(
    name="add",
    required=("user",),
    help={
        "profile": PROFILE,
        "user": USERNAME,
        "password_stdin": FROM_STDIN,
        "admin": "make the user an MLflow admin",
    },
)
def users_add(c, profile="dev", user=None, password_stdin=False, admin=False):
    """Add an MLflow user (password: prompted, from stdin, or generated and shown once)."""
    from mlflow_stack.cli import users

    users.add(profile, user, password_stdin, admin)


@stack_task(name="list", help={"profile": PROFILE})
def users_list(c, profile="dev"):
    """List MLflow users and whether each is an admin."""
    from mlflow_stack.cli import users

    users.list_users(profile)


@stack_task(
    name="passwd",
    required=("user",),
    help={"profile": PROFILE, "user": USERNAME, "password_stdin": FROM_STDIN},
)
def users_passwd(c, profile="dev", user=None, password_stdin=False):
    """Set a user's password (the profile's admin: secrets.env is updated too)."""
    from mlflow_stack.cli import users

    users.passwd(profile, user, password_stdin)


@stack_task(
    name="admin",
    required=("user",),
    help={
        "profile": PROFILE,
        "user": USERNAME,
        "grant": "make the user an admin",
        "revoke": "make the user a regular user again",
    },
)
def users_admin(c, profile="dev", user=None, grant=False, revoke=False):
    """Grant or revoke a user's admin flag."""
    from mlflow_stack.cli import users

    users.admin(profile, user, grant, revoke)


@stack_task(
    name="delete",
    required=("user",),
    help={
        "profile": PROFILE,
        "user": USERNAME,
        "yes": YES,
    },
)
def users_delete(c, profile="dev", user=None, yes=False):
    """Delete a user with their grants and access tokens (never the profile's admin)."""
    from mlflow_stack.cli import users

    users.delete(profile, user, yes)


@stack_task(
    name="grant",
    required=("user", "level"),
    help={
        "profile": PROFILE,
        "user": USERNAME,
        **SELECTORS,
        "level": (
            "READ, EDIT, MANAGE or NO_PERMISSIONS (stored as MLflow's DENY); "
            "USE on the gateway types"
        ),
    },
)
def perms_grant(
    c,
    profile="dev",
    user=None,
    level=None,
    experiment=None,
    model=None,
    prompt=None,
    scorer=None,
    gateway_secret=None,
    gateway_endpoint=None,
    gateway_model_definition=None,
    mcp_server=None,
    tier=None,
):
    """Give a user a permission level on one resource (exactly one selector flag)."""
    from mlflow_stack.cli import perms

    perms.grant(
        profile,
        user,
        level,
        experiment=experiment,
        model=model,
        prompt=prompt,
        scorer=scorer,
        gateway_secret=gateway_secret,
        gateway_endpoint=gateway_endpoint,
        gateway_model_definition=gateway_model_definition,
        mcp_server=mcp_server,
        tier=tier,
    )


@stack_task(
    name="revoke",
    required=("user",),
    help={"profile": PROFILE, "user": USERNAME, **SELECTORS},
)
def perms_revoke(
    c,
    profile="dev",
    user=None,
    experiment=None,
    model=None,
    prompt=None,
    scorer=None,
    gateway_secret=None,
    gateway_endpoint=None,
    gateway_model_definition=None,
    mcp_server=None,
    tier=None,
):
    """Remove a user's grant on one resource (exactly one selector flag)."""
    from mlflow_stack.cli import perms

    perms.revoke(
        profile,
        user,
        experiment=experiment,
        model=model,
        prompt=prompt,
        scorer=scorer,
        gateway_secret=gateway_secret,
        gateway_endpoint=gateway_endpoint,
        gateway_model_definition=gateway_model_definition,
        mcp_server=mcp_server,
        tier=tier,
    )


@stack_task(name="list", required=("user",), help={"profile": PROFILE, "user": USERNAME})
def perms_list(c, profile="dev", user=None):
    """List a user's grants, and the default permission for everything else."""
    from mlflow_stack.cli import perms

    perms.list_grants(profile, user)


@stack_task(
    name="create",
    required=("user",),
    help={
        "profile": PROFILE,
        "user": "the user the token acts as, with their permissions",
        "name": "a label for the token (shown by tokens.list)",
        "expires": "lifetime: Nd, Nh or Nm, e.g. 30d (default: never expires)",
        "json": 'print {"id","token","user","name","created","expires"} as one JSON line',
    },
)
def tokens_create(c, profile="dev", user=None, name=None, expires=None, json=False):
    """Create an access token for a user; the token is printed once and stored hashed."""
    from mlflow_stack.cli import tokens

    tokens.create(profile, user, name, expires, json)


@stack_task(
    name="list",
    help={"profile": PROFILE, "user": "only this user's tokens", "json": "print a JSON list"},
)
def tokens_list(c, profile="dev", user=None, json=False):
    """List access tokens with their state and dates (never the tokens themselves)."""
    from mlflow_stack.cli import tokens

    tokens.list_tokens(profile, user, json)


@stack_task(
    name="revoke",
    required=("token_id",),
    help={"profile": PROFILE, "token_id": "the token's id (tokens.list)"},
)
def tokens_revoke(c, profile="dev", token_id=None):
    """Revoke an access token: refused by the server from the next request on."""
    from mlflow_stack.cli import tokens

    tokens.revoke(profile, token_id)


@stack_task(
    name="renew",
    help={"profile": PROFILE, "ca": "also make a new CA (clients must trust it again)"},
)
def tls_renew(c, profile="dev", ca=False):
    """Issue a new server certificate for the profile's allowed hosts (tls = self-signed)."""
    from mlflow_stack.cli import tls

    tls.renew(profile, ca)


users = Collection("users", users_add, users_list, users_passwd, users_admin, users_delete)
perms = Collection("perms", perms_grant, perms_revoke, perms_list)
tokens = Collection("tokens", tokens_create, tokens_list, tokens_revoke)
namespace.add_collection(users)
namespace.add_collection(perms)
namespace.add_collection(tokens)
namespace.add_collection(Collection("tls", tls_renew))
