"""Check every rendered file with the tool that will read it."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import tempfile
from pathlib import Path

from mlflow_stack import paths
from mlflow_stack.errors import StackError
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile
from mlflow_stack.tools import (
    checkov_binary,
    compose_binary,
    compose_lint_binary,
    hadolint_binary,
    kubernetes_validate_binary,
)

# Keys of mlflow/server/auth/config.py that MLflow reads without a fallback, plus the ones the
# stack depends on.
REQUIRED_AUTH_KEYS = (
    "default_permission",
    "database_uri",
    "admin_username",
    "admin_password",
    "authorization_function",
)
INT_AUTH_KEYS = (
    "workspace_cache_max_size",
    "workspace_cache_ttl_seconds",
    "auth_cache_max_size",
    "auth_cache_ttl_seconds",
)


def compose_config_command(compose_file: Path, env_file: Path, *args: str) -> list[str]:
    return [
        str(compose_binary()),
        "--project-directory",
        str(compose_file.parent),
        "-f",
        str(compose_file),
        "--env-file",
        str(env_file),
        "config",
        *args,
    ]


def run_compose_config(state_dir: Path, *args: str) -> str:
    """`docker compose config` on the rendered file, without an engine; returns its output."""
    layout = StackLayout(state_dir)
    command = compose_config_command(layout.compose_file, layout.compose_env_file, *args)
    # A clean environment: a variable of the caller's must not fill a hole in the file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state_dir)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    warnings = [line for line in result.stderr.splitlines() if "variable is not set" in line]
    if result.returncode != 0 or warnings:
        detail = (warnings or result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StackError(f"{StackLayout.COMPOSE_FILE} is invalid: {detail}")
    return result.stdout


def read_auth_config(path: Path) -> configparser.ConfigParser:
    """Parse as MLflow does (plain ConfigParser, interpolation on) and read every value."""
    parser = configparser.ConfigParser()
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
        section = parser["mlflow"]
        for key in REQUIRED_AUTH_KEYS:
            section[key]
        for key in INT_AUTH_KEYS:
            parser.getint("mlflow", key, fallback=0)
        parser.getboolean("mlflow", "grant_default_workspace_access", fallback=False)
    except (configparser.Error, KeyError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StackError(f"{path.name} is invalid: {message}") from None
    return parser


COMPOSE_LINT_CONFIG = paths.PROJECT_ROOT / "config" / "compose-lint.yml"
# Services only some profiles render (keycloak: oidc_provider = "keycloak"). --strict-config
# refuses an exclusion that names a service the file lacks (after a typo or a rename it would
# silently exclude nothing), so these, and only these, are pruned for a file without them.
OPTIONAL_SERVICES = ("keycloak",)


def compose_lint_config(compose_file: Path, folder: Path) -> Path:
    """COMPOSE_LINT_CONFIG as it applies to `compose_file`: written into `folder` when an
    optional service's exclusions had to be pruned, else the file itself."""
    # PyYAML is locked (compose-lint itself needs it) but ships no types, and types-PyYAML is not
    # in the pinned set.
    import yaml  # type: ignore[import-untyped]

    services = (yaml.safe_load(compose_file.read_text(encoding="utf-8")) or {}).get("services")
    absent = [name for name in OPTIONAL_SERVICES if name not in (services or {})]
    config = yaml.safe_load(COMPOSE_LINT_CONFIG.read_text(encoding="utf-8")) or {}
    pruned = False
    for rule in (config.get("rules") or {}).values():
        excluded = (rule or {}).get("exclude_services") or {}
        for name in absent:
            if name in excluded:
                del excluded[name]
                pruned = True
    if not pruned:
        return COMPOSE_LINT_CONFIG
    target = folder / COMPOSE_LINT_CONFIG.name
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def run_compose_lint(compose_file: Path) -> None:
    """compose-lint at every severity; findings not fixed are justified in its config."""
    with tempfile.TemporaryDirectory(prefix="compose-lint-") as folder:
        result = subprocess.run(
            [
                str(compose_lint_binary()),
                "check",
                "--config",
                str(compose_lint_config(compose_file, Path(folder))),
                "--strict-config",
                "--fail-on",
                "low",
                "--format",
                "json",
                str(compose_file),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        try:
            findings = [
                f"{f.get('rule_id') or f.get('rule')} {f.get('service')}"
                for f in json.loads(result.stdout).get("findings", [])
                if not f.get("suppressed")
            ]
        except (ValueError, AttributeError):
            findings = []
        detail = ", ".join(findings) or (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise StackError(f"compose-lint: {compose_file.name}: {detail}")


def run_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(hadolint_binary()), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        findings = "; ".join(result.stdout.strip().splitlines()) or result.stderr.strip()
        raise StackError(f"hadolint: {findings}")


def check_keycloak_files(profile: Profile) -> list[str]:
    """Where the profile runs Keycloak: its realm parses as JSON and its entry point as bash
    (the image's bash runs it; a syntax error would only show in the container's log)."""
    from mlflow_stack import oidc_profile

    if not oidc_profile.runs_keycloak(profile, "docker"):
        return []
    layout = profile.layout
    realm_file, entrypoint = layout.keycloak_realm, layout.keycloak_entrypoint
    if not realm_file.exists() or not entrypoint.exists():
        raise StackError(f"Keycloak's files not rendered: run `invoke render -p {profile.name}`")
    try:
        realm = json.loads(realm_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StackError(f"{layout.KEYCLOAK_REALM} is invalid: {exc}") from None
    if realm.get("realm") != oidc_profile.KEYCLOAK_REALM:
        raise StackError(f"{layout.KEYCLOAK_REALM} is not realm {oidc_profile.KEYCLOAK_REALM}")
    result = subprocess.run(
        ["bash", "-n", str(entrypoint)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise StackError(f"{layout.KEYCLOAK_ENTRYPOINT}: bash -n: {detail}")
    return [
        f"{layout.KEYCLOAK_REALM}: parsed as JSON (realm {oidc_profile.KEYCLOAK_REALM})",
        f"{layout.KEYCLOAK_ENTRYPOINT}: bash -n passed",
    ]


def validate_profile(profile: Profile) -> list[str]:
    """Check every rendered file of `profile`; returns one line per check that passed."""
    layout = profile.layout
    missing = [
        name
        for name in (layout.COMPOSE_FILE, layout.AUTH_CONFIG, layout.DOCKERFILE)
        if not (layout.root / name).exists()
    ]
    if missing:
        raise StackError(
            f"{', '.join(missing)} not rendered: run `invoke render -p {profile.name}`"
        )
    run_compose_config(layout.root, "-q")
    for path in (layout.auth_config, layout.local_auth_config):
        read_auth_config(path)
    run_compose_lint(layout.compose_file)
    run_hadolint(layout.dockerfile)
    keycloak = check_keycloak_files(profile)
    return [
        f"{layout.COMPOSE_FILE}: docker compose config -q passed",
        f"{layout.COMPOSE_FILE}: compose-lint passed (config/compose-lint.yml)",
        f"{layout.AUTH_CONFIG}, {layout.LOCAL_AUTH_CONFIG}: parsed as MLflow parses them",
        f"{layout.DOCKERFILE}: hadolint passed",
        *keycloak,
    ]


# --- Kubernetes output (.stack/<profile>/k8s/) ----------------------------------------------

# The schemas kubernetes-validate checks against (it bundles them: no network).
KUBERNETES_VERSION = "1.35.0"
CHECKOV_CONFIG = paths.PROJECT_ROOT / "config" / "checkov.yml"


def k8s_manifests(profile: Profile) -> list[Path]:
    """The rendered manifests (not kustomization.yaml, which is kustomize's, not an API object)."""
    folder = profile.layout.k8s_dir
    manifests = sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    if not manifests or not (folder / "kustomization.yaml").exists():
        raise StackError(
            f"{StackLayout.K8S_DIR}/ not rendered: run "
            f"`invoke render -p {profile.name} --target kubernetes`"
        )
    return manifests


def run_kubernetes_validate(manifests: list[Path]) -> None:
    """kubernetes-validate --strict: an unknown or misspelt field is an error, not ignored."""
    result = subprocess.run(
        [
            str(kubernetes_validate_binary()),
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            *(str(p) for p in manifests),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()
        raise StackError(f"kubernetes-validate: {(lines or ['failed'])[0]}")


def run_checkov(folder: Path, config: Path = CHECKOV_CONFIG) -> list[str]:
    """checkov's Kubernetes checks on `folder`; returns the failed check ids (none: passed)."""
    # Offline and quiet: no version check, no calls to the vendor's API.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
    }
    result = subprocess.run(
        [
            str(checkov_binary()),
            "--config-file",
            str(config),
            "--directory",
            str(folder),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        detail = (result.stderr.strip().splitlines() or ["no report"])[-1]
        raise StackError(f"checkov: {detail}") from None
    reports = report if isinstance(report, list) else [report]
    failed = sorted(
        {
            f"{check['check_id']} {check.get('resource', '')}".strip()
            for item in reports
            for check in (item.get("results") or {}).get("failed_checks", [])
        }
    )
    if result.returncode not in (0, 1) or (result.returncode == 1 and not failed):
        detail = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise StackError(f"checkov: {detail}")
    return failed


def validate_k8s(profile: Profile) -> list[str]:
    """Check the profile's Kubernetes output offline; returns one line per check that passed."""
    manifests = k8s_manifests(profile)
    run_kubernetes_validate(manifests)
    failed = run_checkov(profile.layout.k8s_dir)
    if failed:
        raise StackError(f"checkov: {', '.join(failed)} (config/checkov.yml)")
    folder = StackLayout.K8S_DIR
    return [
        f"{folder}/: kubernetes-validate --strict passed (Kubernetes {KUBERNETES_VERSION})",
        f"{folder}/: checkov passed (config/checkov.yml)",
    ]
