"""mlflow-stack tasks: `invoke --list` shows them, `invoke --help TASK` shows a task's flags."""

from invoke import Collection, task

from mlflow_stack.cli import user_errors

PROFILE = "profile name: dev, ci, demo (config/profiles/); default dev"
RUNTIME = (
    "auto (default: as last started, else docker if an engine answers, else local), local, docker"
)
SERVICE = "one service: postgres or mlflow (default: all)"


@task(
    help={
        "profile": PROFILE,
        "check": "also validate the files: compose config -q, MLflow's INI parsing, hadolint",
    }
)
@user_errors
def render(c, profile="dev", check=False):
    """Render a profile into .stack/<profile>/ (compose file, auth_config.ini, local configs)."""
    from mlflow_stack import commands

    commands.render(profile, check=check)


@task(help={"profile": PROFILE})
@user_errors
def validate(c, profile="dev"):
    """Validate a profile's rendered files without rendering them again."""
    from mlflow_stack import commands

    commands.validate(profile)


@task(help={"profile": PROFILE, "runtime": RUNTIME})
@user_errors
def up(c, profile="dev", runtime="auto"):
    """Render and start a profile's stack, wait until healthy, print URL and credentials."""
    from mlflow_stack import commands

    commands.up(profile, runtime)


@task(help={"profile": PROFILE, "runtime": RUNTIME})
@user_errors
def down(c, profile="dev", runtime="auto"):
    """Stop and remove the stack's processes or containers; keep its data."""
    from mlflow_stack import commands

    commands.down(profile, runtime)


@task(help={"profile": PROFILE, "runtime": RUNTIME})
@user_errors
def stop(c, profile="dev", runtime="auto"):
    """Stop the stack's services without removing them (local runtime: same as down)."""
    from mlflow_stack import commands

    commands.stop(profile, runtime)


@task(help={"profile": PROFILE, "service": SERVICE, "runtime": RUNTIME})
@user_errors
def restart(c, profile="dev", service=None, runtime="auto"):
    """Restart the stack or one service, and wait until MLflow is healthy again."""
    from mlflow_stack import commands

    commands.restart(profile, service, runtime)


@task(help={"profile": PROFILE, "runtime": RUNTIME})
@user_errors
def status(c, profile="dev", runtime="auto"):
    """Show each service's state, pid or container, port and health (exit 1 unless healthy)."""
    from invoke.exceptions import Exit

    from mlflow_stack import commands

    if not commands.status(profile, runtime):
        raise Exit(code=1)


@task(
    help={
        "profile": PROFILE,
        "service": SERVICE,
        "follow": "keep printing new lines until Ctrl-C",
        "tail": "how many lines to show first (default 100)",
        "runtime": RUNTIME,
    }
)
@user_errors
def logs(c, profile="dev", service=None, follow=False, tail=100, runtime="auto"):
    """Show the logs of the stack or one service."""
    from mlflow_stack import commands

    commands.logs(profile, service, follow, int(tail), runtime)


@task(
    help={
        "profile": PROFILE,
        "volumes": "also delete the database, artifacts and logs",
        "yes": "do not ask for confirmation (required without a terminal)",
        "runtime": RUNTIME,
    }
)
@user_errors
def clean(c, profile="dev", volumes=False, yes=False, runtime="auto"):
    """Stop the stack and delete its rendered files (with --volumes: its data too)."""
    from mlflow_stack import commands

    commands.clean(profile, volumes, yes, runtime)


@task(
    help={
        "profile": PROFILE,
        "user": "print the variables for this user (password prompted) instead of the admin",
    }
)
@user_errors
def env(c, profile="dev", user=None):
    """Print export lines for MLFLOW_TRACKING_*: eval "$(invoke env)" configures CLI and SDK."""
    from mlflow_stack import commands

    commands.env(profile, user)


namespace = Collection(render, validate, up, down, stop, restart, status, logs, clean, env)


@task(name="probe", help={"profile": PROFILE})
@user_errors
def db_probe(c, profile="dev"):
    """Check the database: reachable, login, SELECT 1, version, databases, schemas, sizes."""
    from mlflow_stack import commands

    commands.db_probe(profile)


@task(name="wait", help={"profile": PROFILE, "timeout": "seconds to wait at most (default 30)"})
@user_errors
def db_wait(c, profile="dev", timeout=30):
    """Wait until PostgreSQL accepts connections."""
    from mlflow_stack import commands

    commands.db_wait(profile, float(timeout))


@task(name="psql", help={"profile": PROFILE, "database": "tracking (default) or auth"})
@user_errors
def db_psql(c, profile="dev", database="tracking"):
    """Open psql on the stack's tracking or auth database (password from secrets, not argv)."""
    from invoke.exceptions import Exit

    from mlflow_stack import commands

    code = commands.db_psql(profile, database)
    if code:
        raise Exit(code=code)


@task(
    name="backup",
    help={
        "profile": PROFILE,
        "output": "the backup file (default backups/mlflow-<profile>-<time>.tar.gz)",
    },
)
@user_errors
def db_backup(c, profile="dev", output=None):
    """Back up both databases (pg_dump) and the artifacts into one file (mode 0600)."""
    from mlflow_stack import commands

    commands.db_backup(profile, output)


@task(name="restore", help={"profile": PROFILE, "source": "a file made by db.backup"})
@user_errors
def db_restore(c, source, profile="dev"):
    """Replace the stack's databases and artifacts with a backup's (the stack must be up)."""
    from mlflow_stack import commands

    commands.db_restore(profile, source)


db = Collection("db", db_probe, db_wait, db_psql, db_backup, db_restore)
namespace.add_collection(db)
