"""Where the project's inputs (profiles, templates) and outputs (.stack/<profile>/) live."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = PROJECT_ROOT / "config" / "profiles"
TEMPLATES_DIR = PROJECT_ROOT / "templates"


def state_root() -> Path:
    """The folder holding one rendered folder per profile; MLFLOW_STACK_HOME moves it (tests do)."""
    override = os.environ.get("MLFLOW_STACK_HOME")
    return Path(override).resolve() if override else PROJECT_ROOT / ".stack"


def profile_dir(profile_name: str) -> Path:
    return state_root() / profile_name


def profiles_dir() -> Path:
    """config/profiles, or the folder MLFLOW_STACK_PROFILES_DIR names (its own base.toml too)."""
    override = os.environ.get("MLFLOW_STACK_PROFILES_DIR")
    return Path(override).resolve() if override else PROFILES_DIR
