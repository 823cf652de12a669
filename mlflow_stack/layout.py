"""The layout of .stack/<profile>/: the only module that spells a path under it.

Every other module asks a ``StackLayout`` (``profile.layout``) for a path by name, so that
moving a file is one edit here. The relative names (the class constants) are what render
writes (``RenderedFile.relative_path``) and what messages show; the properties are the paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # profile.py imports this module for Profile.layout
    from mlflow_stack.profile import Profile


@dataclass(frozen=True)
class StackLayout:
    root: Path  # .stack/<profile>/
    # The profile's artifacts_destination: empty keeps the artifacts under root.
    artifacts_destination: str = ""

    # --- relative to root: the rendered files -----------------------------------------------
    COMPOSE_FILE = "docker-compose.yml"
    COMPOSE_ENV_FILE = "compose.env"
    AUTH_CONFIG = "auth_config.ini"
    DOCKERFILE = "Dockerfile"
    POSTGRES_INIT_DIR = "postgres-init"  # the compose file mounts it into the postgres service
    POSTGRES_INIT_SQL = f"{POSTGRES_INIT_DIR}/10-auth-database.sql"
    LOCAL_AUTH_CONFIG = "local/auth_config.ini"
    LOCAL_MLFLOW_ENV = "local/mlflow.env"
    LOCAL_POSTGRESQL_CONF = "local/postgresql.conf"
    SUPERVISORD_CONF = "local/supervisord.conf"
    # The dev OpenID Provider's config and its signing and cookie keys (both 0600; the keys are
    # made at the first render, then kept, so that tokens and sessions outlive a re-render).
    OIDC_PROVIDER_CONFIG = "local/oidc-provider.json"
    OIDC_PROVIDER_KEYS = "local/oidc-provider-keys.json"
    KEYCLOAK_REALM = "keycloak/realm.json"
    KEYCLOAK_ENTRYPOINT = "keycloak/entrypoint.sh"
    # `invoke render --target kubernetes`: the manifests and their kustomization.yaml.
    K8S_DIR = "k8s"
    # --- relative to root: what the steps after render keep there ---------------------------
    SECRETS_FILE = "secrets.env"
    TLS_DIR = "certs"  # tls = "self-signed": the profile's CA and server certificate (keys 0600)
    RUNTIME_FILE = "runtime"  # which runtime the stack was last brought up with
    PGDATA = "pgdata"
    PGSOCKET = "pgsocket"
    RUN = "run"
    LOGS = "logs"
    AUDIT_FILE = "audit.jsonl"  # in logs/ (local runtime) and in the compose audit volume
    ARTIFACTS = "artifacts"
    # What `clean` keeps without --volumes and removes with it (the secrets it always keeps).
    DATA_ENTRIES = (PGDATA, ARTIFACTS, LOGS)
    # One install of the dev OpenID Provider shared by every profile of a state root (the npm
    # tree is the same for all), beside the profile folders: the leading dot keeps it apart
    # from them, whose names start with a letter.
    OIDC_PROVIDER_INSTALL = ".oidc-provider"

    @classmethod
    def of(cls, profile: Profile) -> StackLayout:
        return cls(profile.state_dir, profile.artifacts_destination)

    # --- rendered files ------------------------------------------------------------------------

    @property
    def compose_file(self) -> Path:
        return self.root / self.COMPOSE_FILE

    @property
    def compose_env_file(self) -> Path:
        return self.root / self.COMPOSE_ENV_FILE

    @property
    def auth_config(self) -> Path:
        return self.root / self.AUTH_CONFIG

    @property
    def dockerfile(self) -> Path:
        return self.root / self.DOCKERFILE

    @property
    def postgres_init_dir(self) -> Path:
        return self.root / self.POSTGRES_INIT_DIR

    @property
    def postgres_init_sql(self) -> Path:
        return self.root / self.POSTGRES_INIT_SQL

    @property
    def local_auth_config(self) -> Path:
        return self.root / self.LOCAL_AUTH_CONFIG

    @property
    def local_mlflow_env(self) -> Path:
        return self.root / self.LOCAL_MLFLOW_ENV

    @property
    def local_postgresql_conf(self) -> Path:
        return self.root / self.LOCAL_POSTGRESQL_CONF

    @property
    def supervisord_conf(self) -> Path:
        return self.root / self.SUPERVISORD_CONF

    @property
    def oidc_provider_config(self) -> Path:
        return self.root / self.OIDC_PROVIDER_CONFIG

    @property
    def oidc_provider_keys(self) -> Path:
        return self.root / self.OIDC_PROVIDER_KEYS

    @property
    def keycloak_realm(self) -> Path:
        return self.root / self.KEYCLOAK_REALM

    @property
    def keycloak_entrypoint(self) -> Path:
        return self.root / self.KEYCLOAK_ENTRYPOINT

    @property
    def k8s_dir(self) -> Path:
        return self.root / self.K8S_DIR

    # --- state ---------------------------------------------------------------------------------

    @property
    def secrets_file(self) -> Path:
        return self.root / self.SECRETS_FILE

    @property
    def runtime_file(self) -> Path:
        return self.root / self.RUNTIME_FILE

    @property
    def run_dir(self) -> Path:
        return self.root / self.RUN

    @property
    def supervisord_pid(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def mlflow_pgid(self) -> Path:
        """The process group of MLflow's launcher (mlflow_stack.launch's GROUP_FILE)."""
        return self.run_dir / "mlflow.pgid"

    @property
    def mlflow_launch(self) -> Path:
        return self.launch_file_of(self.mlflow_pgid)

    @staticmethod
    def launch_file_of(group_file: Path) -> Path:
        """The launcher's remembered command, beside its group file (all the launcher is
        given)."""
        return group_file.with_name("mlflow-launch.json")

    @property
    def pgdata(self) -> Path:
        return self.root / self.PGDATA

    @property
    def pg_version(self) -> Path:
        return self.pgdata / "PG_VERSION"

    @property
    def postmaster_pid(self) -> Path:
        return self.pgdata / "postmaster.pid"

    @property
    def pgdata_postgresql_conf(self) -> Path:
        """initdb's postgresql.conf, which includes pgdata_included_conf."""
        return self.pgdata / "postgresql.conf"

    @property
    def pgdata_included_conf(self) -> Path:
        """local_postgresql_conf, copied into the data directory at every start."""
        return self.pgdata / "mlflow_stack.conf"

    @property
    def pgsocket(self) -> Path:
        return self.root / self.PGSOCKET

    @property
    def logs(self) -> Path:
        return self.root / self.LOGS

    @property
    def postgres_log(self) -> Path:
        return self.logs / "postgresql.log"

    @property
    def mlflow_log(self) -> Path:
        return self.logs / "mlflow.log"

    @property
    def tls_dir(self) -> Path:
        return self.root / self.TLS_DIR

    @property
    def audit_log(self) -> Path:
        """The local runtime's audit log (rotated copies beside it: audit.jsonl.1, …)."""
        return self.logs / self.AUDIT_FILE

    @property
    def supervisord_log(self) -> Path:
        return self.logs / "supervisord.log"

    @property
    def oidc_provider_log(self) -> Path:
        return self.logs / "oidc-provider.log"

    @property
    def artifacts(self) -> Path:
        """The local runtime's artifact store: artifacts_destination, else under root."""
        if self.artifacts_destination:
            return Path(self.artifacts_destination).expanduser().resolve()
        return self.root / self.ARTIFACTS

    @property
    def oidc_provider_install(self) -> Path:
        return self.root.parent / self.OIDC_PROVIDER_INSTALL
