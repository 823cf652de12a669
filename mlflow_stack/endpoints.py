"""Where a profile's services are reached: the MLflow URL, the PostgreSQL endpoints, the
connection parameters and the database URLs, derived here once from the profile (and, for what
carries the password, its secrets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_stack.filters import urlquote
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets

LOOPBACK = "127.0.0.1"
# The postgres service inside the compose network, as the MLflow container reaches it.
COMPOSE_POSTGRES_HOST = "postgres"
COMPOSE_POSTGRES_PORT = 5432


@dataclass(frozen=True)
class DatabaseEndpoint:
    """Where a client reaches the stack's PostgreSQL over TCP (libpq host and port)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Endpoints:
    """A profile's addresses. `local_database` is the port PostgreSQL listens on (local
    runtime) or is published on (compose) on this machine; `compose_database` the service inside
    the compose network. A runtime may hand out another one (a relay): every method that needs a
    database takes the endpoint to use."""

    mlflow_url: str
    # What a client verifies the server's certificate against (requests' `verify`, the SDK's
    # MLFLOW_TRACKING_SERVER_CERT_PATH); None without TLS.
    server_certificate: str | None
    local_database: DatabaseEndpoint
    compose_database: DatabaseEndpoint
    db_user: str
    tracking_database: str
    auth_database: str

    @classmethod
    def of(cls, profile: Profile) -> Endpoints:
        """The profile's endpoints (a wildcard bind address is reached through loopback)."""
        host = profile.bind_address
        if host in ("0.0.0.0", "::"):  # noqa: S104 - not a bind: what a client connects to
            host = LOOPBACK
        return cls(
            mlflow_url=f"{'http' if profile.tls == 'off' else 'https'}://{host}:{profile.mlflow_port}",
            server_certificate=server_certificate(profile),
            local_database=DatabaseEndpoint(LOOPBACK, profile.postgres_port),
            compose_database=DatabaseEndpoint(COMPOSE_POSTGRES_HOST, COMPOSE_POSTGRES_PORT),
            db_user=profile.db_user,
            tracking_database=profile.tracking_database,
            auth_database=profile.auth_database,
        )

    @property
    def verify(self) -> str | bool:
        """requests' `verify` for the MLflow server."""
        return self.server_certificate or True

    def connection_parameters(
        self,
        secrets: Secrets,
        endpoint: DatabaseEndpoint,
        database: str = "postgres",
        timeout: int = 5,
    ) -> dict[str, Any]:
        """psycopg2.connect's keyword arguments, as the profile's database role."""
        return {
            "host": endpoint.host,
            "port": endpoint.port,
            "user": self.db_user,
            "password": secrets.db_password,
            "dbname": database,
            "connect_timeout": timeout,
        }

    def client_environment(self, secrets: Secrets, endpoint: DatabaseEndpoint) -> dict[str, str]:
        """libpq's variables for psql/pg_dump/pg_restore: the password never reaches argv."""
        return {
            "PGHOST": endpoint.host,
            "PGPORT": str(endpoint.port),
            "PGUSER": self.db_user,
            "PGPASSWORD": secrets.db_password,
        }

    def database_uri(self, secrets: Secrets, endpoint: DatabaseEndpoint, database: str) -> str:
        """An SQLAlchemy URL of one database, user and password percent-encoded."""
        # psycopg2 explicitly: with SQLAlchemy 2.1 a bare postgresql:// asks for psycopg 3.
        return (
            f"postgresql+psycopg2://{urlquote(self.db_user)}:{urlquote(secrets.db_password)}"
            f"@{endpoint.host}:{endpoint.port}/{database}"
        )

    def tracking_uri(self, secrets: Secrets, endpoint: DatabaseEndpoint) -> str:
        """The tracking store's URL (MLflow's backend store URI)."""
        return self.database_uri(secrets, endpoint, self.tracking_database)

    def auth_database_uri(self, secrets: Secrets, endpoint: DatabaseEndpoint) -> str:
        """The auth database's URL (auth_config.ini's database_uri, the token store's)."""
        return self.database_uri(secrets, endpoint, self.auth_database)


def server_certificate(profile: Profile) -> str | None:
    """The certificate clients trust for the profile's server: its own CA (self-signed, see
    mlflow_stack/tls.py) or the user's certificate file; None without TLS."""
    if profile.tls == "self-signed":
        return str(profile.layout.tls_dir / "ca.crt")
    if profile.tls == "files":
        return str(Path(profile.tls_cert_file).expanduser())
    return None


def database_uri(profile: Profile, secrets: Secrets, host: str, port: int, database: str) -> str:
    """`Endpoints.database_uri` for a host and port (kept for the callers that have those)."""
    return Endpoints.of(profile).database_uri(secrets, DatabaseEndpoint(host, port), database)
