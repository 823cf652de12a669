"""Nox sessions of mlflow-stack. `nox` runs the fast ones; `./scripts/test.sh` runs them all.

Every session installs from requirements.lock, the one pinned set the venv and the image use.
Arguments after `--` narrow a session, e.g. `nox -s unit -- -k profile`.
"""

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
# The fast default for local work: no server, no engine (about a minute).
nox.options.sessions = ["lint", "typecheck", "unit", "tools"]

LOCK = "requirements.lock"
PROFILES = ("dev", "ci", "demo", "sso")
K8S_SSO_ENV = {
    "MLFLOW_STACK_OIDC_PROVIDER": "external",
    "MLFLOW_STACK_OIDC_ISSUER": "https://idp.example.com/realms/mlflow",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": "lint-placeholder-client-secret-0123456789",
    "MLFLOW_STACK_OIDC_MACHINE_SECRET": "lint-placeholder-machine-secret-0123456789",
}


def install_project(session: nox.Session, *packages: str) -> None:
    """The locked versions of `packages` (all of the lock when none), then the project itself."""
    if packages:
        session.install("-c", LOCK, *packages)
    else:
        session.install("-r", LOCK)
    session.install("--no-deps", "-e", ".")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff, then render and validate every profile: compose config, compose-lint, INI, hadolint."""
    # The whole lock: rendering the sso profile needs the pinned Node (its provider's command).
    install_project(session)
    args = session.posargs or ["."]
    session.run("ruff", "check", *args)
    session.run("ruff", "format", "--check", *args)
    # A scratch state folder: linting must not touch a developer's .stack/.
    scratch = {"MLFLOW_STACK_HOME": session.create_tmp()}
    for profile in PROFILES:
        session.run("invoke", "render", "--profile", profile, "--check", env=scratch)
    # The Kubernetes output, offline: kubernetes-validate --strict and checkov. A cluster runs
    # no Keycloak or dev provider, so sso renders with an external one (placeholder secrets).
    for profile in PROFILES:
        k8s_env = {**scratch, **(K8S_SSO_ENV if profile == "sso" else {})}
        session.run(
            "invoke",
            "render",
            "--profile",
            profile,
            "--target",
            "kubernetes",
            "--check",
            env=k8s_env,
        )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (the tests are not type-checked)."""
    install_project(session)
    session.run("mypy", "--strict", *(session.posargs or ["mlflow_stack"]))


@nox.session
def unit(session: nox.Session) -> None:
    """In-process unit tests (no program, no server) with the package's coverage figure."""
    install_project(session)
    args = session.posargs or ["tests/unit"]
    session.run(
        "coverage",
        "run",
        "--source",
        "mlflow_stack",
        "-m",
        "pytest",
        *args,
        "-p",
        "no:cacheprovider",
    )
    session.run("coverage", "report", "--skip-covered", "--sort", "cover")


@nox.session
def differential(session: nox.Session) -> None:
    """The authorization fast path against MLflow's own checks, in-process (about a minute)."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests/differential"]), "-p", "no:cacheprovider")


@nox.session
def tools(session: nox.Session) -> None:
    """Rendered files read by the real tools: Compose's config, compose-lint, hadolint."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests/tools"]))


@nox.session
def tests(session: nox.Session) -> None:
    """Integration tests: a real PostgreSQL and MLflow through the local runtime."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests/integration", "-m", "not slow"]))


@nox.session
def faults(session: nox.Session) -> None:
    """Fault injection (kill -9 under load, concurrent writers, full disk): the slow tests."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests/integration", "-m", "slow"]))


@nox.session
def smoke(session: nox.Session) -> None:
    """REST smoke tests against a running stack (default: brings up ci, then takes it down)."""
    install_project(session)
    session.run("python", "-m", "mlflow_stack.smoke", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """The web UI and single sign-on in headless Chromium; in CI it installs Debian's itself."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests/browser", "-v"]))


@nox.session
def compose(session: nox.Session) -> None:
    """The compose runtime on a real Docker engine; in CI it installs and starts one itself."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests/compose", "-v"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Measure the stack next to stock MLflow; writes bench/results/<time>.json, .md, .png."""
    install_project(session)
    session.run("python", "-m", "mlflow_stack.bench", *session.posargs)
