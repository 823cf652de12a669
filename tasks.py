"""mlflow-stack tasks: `invoke --list` shows them, `invoke --help TASK` shows a task's flags."""

from invoke import Collection, task

from mlflow_stack.cli import user_errors

PROFILE_HELP = "profile name: dev, ci, demo (config/profiles/); default dev"


@task(
    help={
        "profile": PROFILE_HELP,
        "check": "also validate the files: compose config -q, MLflow's INI parsing, hadolint",
    }
)
@user_errors
def render(c, profile="dev", check=False):
    """Render a profile into .stack/<profile>/ (compose file, auth_config.ini, local configs)."""
    from mlflow_stack import commands

    commands.render(profile, check=check)


@task(help={"profile": PROFILE_HELP})
@user_errors
def validate(c, profile="dev"):
    """Validate a profile's rendered files without rendering them again."""
    from mlflow_stack import commands

    commands.validate(profile)


namespace = Collection(render, validate)
