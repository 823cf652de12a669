"""What single sign-on gives the MLflow server: auth_config.ini's [mlflow_stack.oidc] section,
and the dev provider's supervisord program where the local runtime runs one (rendered by
mlflow_stack.render and mlflow_stack.k8s)."""

from __future__ import annotations

from mlflow_stack.profile import Profile
from mlflow_stack.secrets import Secrets


def oidc_server_settings(profile: Profile, secrets: Secrets, runtime: str) -> dict[str, str]:
    """The [mlflow_stack.oidc] section of auth_config.ini (read by mlflow_stack.auth.oidc_config):
    empty without single sign-on."""
    if not profile.oidc_enabled:
        return {}
    from mlflow_stack import oidc_profile

    return {
        "issuer": oidc_profile.issuer(profile, runtime),
        "discovery_url": oidc_profile.discovery_url(profile, runtime),
        "client_id": profile.oidc_client_id,
        "client_secret": secrets.oidc_client_secret,
        "api_audience": profile.oidc_api_audience,
        "scopes": " ".join(profile.oidc_scopes),
        "username_claim": profile.oidc_username_claim,
        "groups_claim": profile.oidc_groups_claim,
        "login_group": profile.oidc_login_group,
        "admin_group": profile.oidc_admin_group,
        "admin_from_tokens": str(profile.oidc_admin_from_tokens).lower(),
        "passwords": str(profile.oidc_passwords).lower(),
        "session_seconds": str(profile.oidc_session_hours * 3600),
        "redirect_uri": oidc_profile.redirect_uri(profile),
        "post_logout_redirect_uri": oidc_profile.post_logout_redirect_uri(profile),
        "profile_admin": profile.admin_username,
    }


def runs_dev_provider(profile: Profile) -> bool:
    """Whether the local runtime runs the dev OpenID Provider for this profile."""
    from mlflow_stack import oidc_profile

    return oidc_profile.runs_dev_provider(profile, "local")


def dev_provider_command(profile: Profile) -> list[str]:
    """supervisord's oidc-provider program, where the local runtime runs the dev provider."""
    if not runs_dev_provider(profile):
        return []
    from mlflow_stack import oidc_local

    return oidc_local.supervisor_command(profile)
