"""StackLayout alone knows the paths under .stack/<profile>/: a spelling elsewhere fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mlflow_stack import layout, paths, tls
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_files
from mlflow_stack.secrets import resolve_secrets

PACKAGE = Path(layout.__file__).parent
LAYOUT_MODULE = Path(layout.__file__)
# Names of the layout that also mean something else (a Compose subcommand, a folder of a
# backup archive or of a cache): caught only where they are joined onto a profile's folder.
SHARED_WORDS = {"run", "logs", "artifacts", "runtime", "Dockerfile"}
# A path built onto a profile's folder by hand, in a module or in a template.
JOINED_ONTO_PROFILE = re.compile(r"""(?:state_dir|\.root)\s*/\s*f?["']|state_dir\s*~""")


def layout_names() -> set[str]:
    """Every path-like string literal of layout.py: its relative names and its file names (an
    f-string's pieces included)."""
    names = set()
    for node in ast.walk(ast.parse(LAYOUT_MODULE.read_text())):
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, str) and re.fullmatch(r"[\w.\-/]+", value) and value.strip("/"):
            names.add(value.strip("/"))
    return names - SHARED_WORDS


def spellings(text: str, names: set[str]) -> list[str]:
    """The layout's names that `text` spells as (the start or the end of) a string literal."""
    found = []
    for name in sorted(names):
        first = name.split("/")[0]
        if name not in text and f"{first}/" not in text:
            continue  # the pattern below needs one of the two: skip the regex scan
        # "name", or f"{folder}/name"; and the first folder of a nested name: "local/…
        literal = rf"""(?:["']|}}/){re.escape(name)}["']|(?:["']|}}/){re.escape(first)}/"""
        if re.search(literal, text):
            found.append(name)
    found += [match.group(0) for match in JOINED_ONTO_PROFILE.finditer(text)]
    return found


def test_the_scan_knows_the_names_and_catches_a_spelling():
    names = layout_names()
    assert {"pgdata", "pgsocket", "supervisord.pid", "secrets.env", "local/mlflow.env"} <= names
    assert {"postmaster.pid", "mlflow.pgid", "10-auth-database.sql", "oidc-provider.log"} <= names
    for sample in (
        'data = root / "pgdata"',
        "pid = run / 'supervisord.pid'",
        'conf = f"{home}/local/supervisord.conf"',
        'env = "local/" + name',
        'log = profile.state_dir / "logs"',
        'conf = self.layout.root / "anything"',
        "{{ (state_dir ~ '/run/supervisor.sock') }}",
    ):
        assert spellings(sample, names), sample
    for legitimate in (
        'args = ["logs", "--tail", "5"]; archive = scratch / "artifacts"',
        'CONTAINER_AUTH_CONFIG = "/mlflow/config/auth_config.ini"',
        'render("postgresql.conf.j2")',
    ):
        assert not spellings(legitimate, names), legitimate


def test_no_module_but_layout_spells_a_path_under_a_profiles_folder():
    names = layout_names()
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == LAYOUT_MODULE:
            continue
        found = spellings(path.read_text(), names)
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    for path in sorted(paths.TEMPLATES_DIR.glob("*.j2")):
        found = [m.group(0) for m in JOINED_ONTO_PROFILE.finditer(path.read_text())]
        if found:
            offenders[str(path.relative_to(paths.PROJECT_ROOT))] = found
    assert offenders == {}, "ask StackLayout (profile.layout) for these paths"


def test_paths_follow_the_profile(stack_home):
    profile = load_profile("ci")
    stack = profile.layout
    assert stack == StackLayout.of(profile) and stack.root == profile.state_dir
    assert stack.supervisord_pid == profile.state_dir / "run" / "supervisord.pid"
    assert stack.postmaster_pid == profile.state_dir / "pgdata" / "postmaster.pid"
    assert stack.postgres_log == profile.state_dir / "logs" / "postgresql.log"
    assert stack.mlflow_launch.parent == stack.mlflow_pgid.parent == stack.run_dir
    assert stack.artifacts == profile.state_dir / "artifacts"
    assert stack.oidc_provider_install == paths.state_root() / ".oidc-provider"
    assert {stack.root / name for name in stack.DATA_ENTRIES} == {
        stack.pgdata,
        stack.artifacts,
        stack.logs,
    }


def test_artifacts_honour_artifacts_destination(stack_home, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_STACK_ARTIFACTS_DESTINATION", str(tmp_path / "elsewhere"))
    assert load_profile("ci").layout.artifacts == tmp_path / "elsewhere"


@pytest.mark.parametrize("name", ["dev", "ci", "sso"])
def test_every_rendered_file_is_a_relative_name_of_the_layout(stack_home, name):
    profile = load_profile(name)
    secrets, _ = resolve_secrets(profile, {})
    if profile.tls == "self-signed":  # sso: render_profile issues the certificate first
        tls.ensure_self_signed(profile.layout.tls_dir, profile.name, profile.allowed_hosts)
    relative_names = {
        value
        for key, value in vars(StackLayout).items()
        if key.isupper() and isinstance(value, str)
    }
    rendered = {item.relative_path for item in render_files(profile, secrets)}
    assert rendered <= relative_names
