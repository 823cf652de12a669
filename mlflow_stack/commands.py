"""The task bodies: what each `invoke` task does, printed for a person."""

from __future__ import annotations

from mlflow_stack import paths
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile
from mlflow_stack.validate import validate_profile


def _shown(path) -> str:
    try:
        return str(path.relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(path)


def render(profile_name: str, check: bool = False) -> None:
    profile = load_profile(profile_name)
    written = render_profile(profile)
    print(f"rendered profile {profile.name} into {_shown(profile.state_dir)}/")
    for path in written:
        print(f"  {_shown(path)}")
    if check:
        validate(profile_name)


def validate(profile_name: str) -> None:
    profile = load_profile(profile_name)
    for line in validate_profile(profile):
        print(f"ok  {line}")
