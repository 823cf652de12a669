"""The compose file's keycloak service, where the profile runs Keycloak (oidc_provider =
"keycloak", docker runtime): its environment, entry point, realm hand-over and health check."""

from __future__ import annotations

from typing import Any

from mlflow_stack.endpoints import COMPOSE_POSTGRES_HOST, COMPOSE_POSTGRES_PORT
from mlflow_stack.filters import RenderError
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets

# Keycloak, where the profile runs it (oidc_provider = "keycloak", docker runtime). The realm holds
# the clients' secrets and the dev users' password: the compose file hands it over in a variable
# and the entry point writes it into a tmpfs only Keycloak's user can read, the way
# auth_config.ini reaches MLflow. A bind mount of keycloak/realm.json would keep its 0600 root
# owner, unreadable to the container's uid 1000, and loosening it would expose it on the host.
# (The host side of both files: StackLayout.KEYCLOAK_REALM and KEYCLOAK_ENTRYPOINT.)
CONTAINER_KEYCLOAK_ENTRYPOINT = "/opt/mlflow-stack/keycloak-entrypoint.sh"
CONTAINER_KEYCLOAK_IMPORT_DIR = "/opt/keycloak/data/import"  # what --import-realm reads
CONTAINER_KEYCLOAK_REALM_VARIABLE = "MLFLOW_STACK_KEYCLOAK_REALM_JSON"
CONTAINER_KEYCLOAK_KC_SH = "/opt/keycloak/bin/kc.sh"  # the image's own entry point
KEYCLOAK_UID = 1000  # the Keycloak image's user
KEYCLOAK_MANAGEMENT_PORT = 9000  # health endpoints (KC_HEALTH_ENABLED)
# The image has no curl, wget or Python: bash's /dev/tcp sends the GET and reads the status line.
KEYCLOAK_HEALTHCHECK = (
    f"exec 3<>/dev/tcp/127.0.0.1/{KEYCLOAK_MANAGEMENT_PORT}"
    " && printf 'GET /health/ready HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3"
    ' && read -r status <&3 && [[ $status == *" 200 "* ]]'
)


def keycloak_service(profile: Profile, secrets: Secrets) -> dict[str, Any]:
    """What the compose file's keycloak service and its entry point are given; empty where the
    profile runs no Keycloak."""
    from mlflow_stack import keycloak_realm, oidc_profile

    if not oidc_profile.runs_keycloak(profile, "docker"):
        return {}
    if keycloak_realm.DATABASE in (profile.tracking_database, profile.auth_database):
        raise RenderError(
            f"profile {profile.name}: the database name {keycloak_realm.DATABASE} is Keycloak's"
        )
    realm_json = keycloak_realm.realm_json(profile, secrets)
    environment = {
        "KC_DB": "postgres",
        "KC_DB_URL": (
            f"jdbc:postgresql://{COMPOSE_POSTGRES_HOST}:{COMPOSE_POSTGRES_PORT}"
            f"/{keycloak_realm.DATABASE}"
        ),
        "KC_DB_USERNAME": profile.db_user,
        "KC_DB_PASSWORD": secrets.db_password,
        # Production mode over plain HTTP: it is published on loopback only.
        "KC_HTTP_ENABLED": "true",
        "KC_HTTP_PORT": str(oidc_profile.KEYCLOAK_INTERNAL_PORT),
        # Tokens carry the issuer a browser on this machine sees; the MLflow container reaches
        # the same server as keycloak:8080 (backchannel URLs follow the request).
        "KC_HOSTNAME": oidc_profile.provider_url(profile),
        "KC_HOSTNAME_BACKCHANNEL_DYNAMIC": "true",
        "KC_HEALTH_ENABLED": "true",
        # The master realm's admin, created on the first start only: the stack's admin.
        "KC_BOOTSTRAP_ADMIN_USERNAME": profile.admin_username,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": secrets.admin_password,
        CONTAINER_KEYCLOAK_REALM_VARIABLE: realm_json,
    }
    return {
        "realm_json": realm_json,
        "environment": environment,
        "database": keycloak_realm.DATABASE,
        "uid": KEYCLOAK_UID,
        "internal_port": oidc_profile.KEYCLOAK_INTERNAL_PORT,
        "entrypoint": ["/bin/bash", CONTAINER_KEYCLOAK_ENTRYPOINT],
        "command": ["start", "--import-realm"],
        "entrypoint_source": f"./{StackLayout.KEYCLOAK_ENTRYPOINT}",
        "entrypoint_target": CONTAINER_KEYCLOAK_ENTRYPOINT,
        "import_dir": CONTAINER_KEYCLOAK_IMPORT_DIR,
        "realm_path": f"{CONTAINER_KEYCLOAK_IMPORT_DIR}/{oidc_profile.KEYCLOAK_REALM}-realm.json",
        "realm_variable": CONTAINER_KEYCLOAK_REALM_VARIABLE,
        "kc_sh": CONTAINER_KEYCLOAK_KC_SH,
        "healthcheck": ["CMD", "bash", "-c", KEYCLOAK_HEALTHCHECK],
    }
