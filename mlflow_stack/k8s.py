"""Render a profile for Kubernetes: .stack/<profile>/k8s/, applied with `kubectl apply -k`.

The same profile, secrets, auth_config.ini template and escaping filters as the other runtimes
(mlflow_stack.render); the templates are templates/kubernetes/. PostgreSQL is external (the
profile's k8s_postgres_* keys); the server pods wait for a migration Job named after the MLflow
version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from mlflow_stack import s3
from mlflow_stack.container.migrate import AUTH_URI_VARIABLE, ON_START_VARIABLE
from mlflow_stack.endpoints import DatabaseEndpoint, Endpoints
from mlflow_stack.files import PUBLIC_MODE, SECRET_MODE
from mlflow_stack.filters import RenderError
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile
from mlflow_stack.render import (
    AUTHORIZATION_FUNCTION,
    CONTAINER_ARTIFACTS,
    CONTAINER_AUTH_CONFIG_VARIABLE,
    CONTAINER_UID,
    RenderedFile,
    mlflow_environment,
    mlflow_server_args,
    oidc_server_settings,
    template_environment,
    write_rendered,
)
from mlflow_stack.secrets import Secrets, resolve_secrets, write_secrets

NAME = "mlflow"  # the Deployment, Service, Ingress, PDB, HPA and NetworkPolicy
SECRET_NAME = "mlflow-secrets"  # noqa: S105 - the Secret object's name
ARTIFACTS_CLAIM = "mlflow-artifacts"
# An emptyDir in memory: the entry point makes config/ in it (0700, its own) and writes
# auth_config.ini there (0400). Not the folder itself: an emptyDir's root is root's, and the
# entry point must be able to chmod the folder it writes into.
PRIVATE_DIR = "/mlflow/private"
AUTH_CONFIG_PATH = f"{PRIVATE_DIR}/config/auth_config.ini"
AUTH_CONFIG_KEY = StackLayout.AUTH_CONFIG  # the same file as the other runtimes'
AUTH_DATABASE_VARIABLE = AUTH_URI_VARIABLE  # read by mlflow_stack/container/migrate.py
# The variables of mlflow_environment() that hold secrets: they come from the Secret.
SECRET_VARIABLES = (
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_CRYPTO_KEK_PASSPHRASE",
)
MIGRATE_VARIABLES = ("MLFLOW_BACKEND_STORE_URI", AUTH_DATABASE_VARIABLE)

# The project's schema step (behind a PostgreSQL lock; the URLs from the environment).
MIGRATE_COMMAND = ["python", "-m", "mlflow_stack.container.migrate"]
# The server pods' init container: read-only checks that both schemas are at head. Only the
# exception's type is printed: its text may hold the URL.
WAIT_PROGRAM = """\
import os, sys, time
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from mlflow.server.auth.db.utils import _get_alembic_config
from mlflow.store.db.utils import _verify_schema, create_sqlalchemy_engine

def check():
    engine = create_sqlalchemy_engine(os.environ["MLFLOW_BACKEND_STORE_URI"])
    try:
        _verify_schema(engine)
    finally:
        engine.dispose()
    url = os.environ["MLFLOW_STACK_AUTH_DATABASE_URI"]
    head = ScriptDirectory.from_config(_get_alembic_config(url)).get_current_head()
    engine = create_sqlalchemy_engine(url)
    try:
        with engine.connect() as connection:
            options = {"version_table": "alembic_version_auth"}
            current = MigrationContext.configure(connection, opts=options).get_current_revision()
    finally:
        engine.dispose()
    if current != head:
        raise RuntimeError("the auth schema is not at head")

deadline = time.monotonic() + float(os.environ.get("MLFLOW_STACK_SCHEMA_WAIT_SECONDS", "900"))
while True:
    try:
        check()
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            sys.exit(f"the schemas are not at head ({type(exc).__name__}): see the migration Job")
        print(f"waiting for the migration Job ({type(exc).__name__})", flush=True)
        time.sleep(3)
"""

# What kustomization.yaml lists, in order; the HPA only where the profile asks for one.
TEMPLATES = (
    ("namespace.yaml", PUBLIC_MODE),
    ("secret.yaml", SECRET_MODE),
    ("artifacts-pvc.yaml", PUBLIC_MODE),
    ("migrate-job.yaml", PUBLIC_MODE),
    ("deployment.yaml", PUBLIC_MODE),
    ("service.yaml", PUBLIC_MODE),
    ("ingress.yaml", PUBLIC_MODE),
    ("pdb.yaml", PUBLIC_MODE),
    ("hpa.yaml", PUBLIC_MODE),
    ("networkpolicy.yaml", PUBLIC_MODE),
)
KUSTOMIZATION = "kustomization.yaml"
TEMPLATE_FOLDER = "kubernetes"  # templates/kubernetes/


def mlflow_version() -> str:
    """The pinned MLflow's version: the one the image installs from requirements.lock."""
    return importlib.metadata.version("mlflow")


def job_name(version: str) -> str:
    """The migration Job of one MLflow version, a DNS-1123 name: mlflow-migrate-3-17-2."""
    return "mlflow-migrate-" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")


def instance_name(profile: Profile) -> str:
    """The profile's name as a label value and DNS-1123 label ('_' is not allowed there)."""
    return profile.name.replace("_", "-")


def memory_quantity(limit: str) -> str:
    """A compose memory limit (512m, 2g: binary units, as Docker reads them) for Kubernetes."""
    units = {"k": "Ki", "m": "Mi", "g": "Gi"}
    return limit[:-1] + units[limit[-1]] if limit[-1] in units else limit


def migrate_command() -> list[str]:
    """What the migration Job runs."""
    return list(MIGRATE_COMMAND)


def database_uri(profile: Profile, secrets: Secrets, database: str) -> str:
    """A database's URL on the external PostgreSQL, with the profile's sslmode."""
    endpoints = Endpoints.of(profile)
    endpoint = DatabaseEndpoint(profile.k8s_postgres_host, profile.k8s_postgres_port)
    return (
        endpoints.database_uri(secrets, endpoint, database)
        + f"?sslmode={profile.k8s_postgres_sslmode}"
    )


def server_profile(profile: Profile) -> Profile:
    """The profile as one server pod runs it: one worker, the Ingress host allowed."""
    hosts = profile.allowed_hosts
    if profile.k8s_ingress_host not in hosts:
        hosts = (*hosts, profile.k8s_ingress_host)
    return dataclasses.replace(profile, workers=1, allowed_hosts=hosts)


def oidc_settings(profile: Profile, secrets: Secrets) -> dict[str, str]:
    """The single sign-on section of auth_config.ini, the browser sent back to the Ingress host."""
    from mlflow_stack import oidc_profile

    settings = oidc_server_settings(profile, secrets, "kubernetes")
    if settings:
        public = f"https://{profile.k8s_ingress_host}"
        settings["redirect_uri"] = public + oidc_profile.CALLBACK_PATH
        settings["post_logout_redirect_uri"] = public + oidc_profile.LOGGED_OUT_PATH
    return settings


def secret_data(
    profile: Profile, secrets: Secrets, env: jinja2.Environment
) -> tuple[dict[str, str], dict[str, str]]:
    """The Secret's keys and values, and the server's variables that are not secret."""
    if profile.oidc_enabled and profile.oidc_provider != "external":
        raise RenderError(
            f"profile {profile.name}: Kubernetes output needs oidc_provider = external "
            f"(the cluster runs no {profile.oidc_provider} provider): set "
            "MLFLOW_STACK_OIDC_PROVIDER=external and MLFLOW_STACK_OIDC_ISSUER"
        )
    tracking_uri = database_uri(profile, secrets, profile.tracking_database)
    auth_uri = database_uri(profile, secrets, profile.auth_database)
    try:
        auth_config = env.get_template("auth_config.ini.j2").render(
            profile=profile,
            secrets=secrets,
            authorization_function=AUTHORIZATION_FUNCTION,
            container_uid=CONTAINER_UID,
            database_uri=auth_uri,
            oidc=oidc_settings(profile, secrets),
        )
    except jinja2.TemplateError as exc:
        raise RenderError(f"template auth_config.ini.j2: {exc}") from None
    environment = mlflow_environment(profile, secrets, tracking_uri, AUTH_CONFIG_PATH)
    # The Job migrates; server pods only wait for it (their init container).
    environment[ON_START_VARIABLE] = "0"
    data = {AUTH_CONFIG_KEY: auth_config, AUTH_DATABASE_VARIABLE: auth_uri}
    data.update({name: environment.pop(name) for name in SECRET_VARIABLES})
    return data, environment


def context(profile: Profile, secrets: Secrets, env: jinja2.Environment) -> dict[str, Any]:
    """What templates/kubernetes/ are given, as one `k8s` mapping."""
    server = server_profile(profile)
    data, server_env = secret_data(server, secrets, env)
    labels = {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": instance_name(profile),
        "app.kubernetes.io/part-of": "mlflow-stack",
    }
    secret_keys = {name: name for name in (*SECRET_VARIABLES, AUTH_DATABASE_VARIABLE)}
    secret_keys[CONTAINER_AUTH_CONFIG_VARIABLE] = AUTH_CONFIG_KEY
    resources = [name for name, _ in TEMPLATES if name != "hpa.yaml" or profile.k8s_max_replicas]
    # Artifacts on S3: no volume; the user's Secret (if any) is mounted as the credentials file.
    if s3.enabled(profile):
        resources.remove("artifacts-pvc.yaml")
        credentials = s3.K8S_CREDENTIALS if profile.k8s_s3_credentials_secret else ""
        server_env |= s3.server_environment(profile, credentials)
    return {
        "header": f"Rendered by mlflow-stack for profile {profile.name}; do not edit.",
        "folder": f".stack/{profile.name}/{StackLayout.K8S_DIR}",
        "namespace": profile.k8s_namespace,
        "name": NAME,
        "labels": labels,
        "server_selector": {**labels, "app.kubernetes.io/component": "server"},
        "secret_name": SECRET_NAME,
        "secret_data": data,
        "secret_keys": secret_keys,
        "server_secret_env": [*SECRET_VARIABLES, CONTAINER_AUTH_CONFIG_VARIABLE],
        "migrate_secret_env": list(MIGRATE_VARIABLES),
        "server_env": server_env,
        "auth_config_variable": CONTAINER_AUTH_CONFIG_VARIABLE,
        "image": profile.k8s_image or profile.mlflow_image,
        "uid": CONTAINER_UID,
        "port": profile.mlflow_port,
        "replicas": profile.k8s_replicas,
        "max_replicas": profile.k8s_max_replicas,
        "min_available": profile.k8s_replicas - 1,
        "cpu_request": profile.k8s_cpu_request,
        "cpu_limit": profile.cpu_limit,
        "memory": memory_quantity(profile.mlflow_memory_limit),
        "job_name": job_name(mlflow_version()),
        "migrate_command": migrate_command(),
        "wait_command": ["python", "-c", WAIT_PROGRAM],
        "server_command": [
            "mlflow",
            *mlflow_server_args(
                server,
                "0.0.0.0",  # noqa: S104 - the pod's address
                s3.artifacts_destination(profile, CONTAINER_ARTIFACTS),
            ),
        ],
        "private_dir": PRIVATE_DIR,
        "artifacts_mount": CONTAINER_ARTIFACTS,
        "artifacts_claim": ARTIFACTS_CLAIM,
        "artifacts_size": profile.k8s_artifacts_size,
        "artifacts_access_mode": profile.k8s_artifacts_access_mode,
        "storage_class": profile.k8s_storage_class,
        "s3": {
            "enabled": s3.enabled(profile),
            "secret": profile.k8s_s3_credentials_secret,
            "key": s3.K8S_SECRET_KEY,
            "mount": s3.K8S_CREDENTIALS_DIR,
            "port": s3.endpoint_port(profile),
        },
        "ingress_host": profile.k8s_ingress_host,
        "ingress_class": profile.k8s_ingress_class,
        "ingress_namespace": profile.k8s_ingress_namespace,
        "tls_secret": profile.k8s_tls_secret,
        "postgres_port": profile.k8s_postgres_port,
        "oidc": profile.oidc_enabled,
        "resources": resources,
    }


def render_files(profile: Profile, secrets: Secrets) -> list[RenderedFile]:
    """Every manifest of the profile and its kustomization.yaml, in memory."""
    env = template_environment()
    k8s = context(profile, secrets, env)

    def render(name: str) -> str:
        try:
            return env.get_template(f"{TEMPLATE_FOLDER}/{name}.j2").render(k8s=k8s)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {TEMPLATE_FOLDER}/{name}.j2: {exc}") from None

    # The Secret first: the Deployment carries its digest.
    secret = render("secret.yaml")
    k8s["secret_checksum"] = hashlib.sha256(secret.encode("utf-8")).hexdigest()
    folder = StackLayout.K8S_DIR
    files = [
        RenderedFile(f"{folder}/{name}", secret if name == "secret.yaml" else render(name), mode)
        for name, mode in TEMPLATES
        if name in k8s["resources"]
    ]
    files.append(RenderedFile(f"{folder}/{KUSTOMIZATION}", render(KUSTOMIZATION), PUBLIC_MODE))
    return files


def render_profile(profile: Profile, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Resolve secrets, render the manifests, write them; returns the paths written."""
    secrets, secrets_changed = resolve_secrets(profile, environ)
    files = render_files(profile, secrets)
    if secrets_changed:
        write_secrets(profile, secrets)
    folder = profile.layout.k8s_dir
    # A manifest the profile no longer renders (hpa.yaml) must not stay behind: kubectl would
    # not apply it, but a reader would take it for part of the stack.
    wanted = {profile.layout.root / item.relative_path for item in files}
    for stale in folder.glob("*.yaml") if folder.is_dir() else []:
        if stale not in wanted:
            stale.unlink()
    return write_rendered(profile, files)
