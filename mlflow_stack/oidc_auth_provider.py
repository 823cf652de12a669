"""The MLflow SDK's request auth provider `mlflow-stack-oidc` (entry point
``mlflow.request_auth_provider``, selected with ``MLFLOW_TRACKING_AUTH=mlflow-stack-oidc``).

Its own module because it must subclass MLflow's base class: mlflow_stack.oidc_client, where the
work is done, stays importable without MLflow. Configuration: see oidc_client.
"""

from __future__ import annotations

from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from mlflow_stack.oidc_client import AUTH_PROVIDER_NAME, BearerAuth, auth_from_environment


class OidcRequestAuthProvider(RequestAuthProvider):
    """Client-credentials access tokens, cached per process and renewed before they expire."""

    def get_name(self) -> str:
        return AUTH_PROVIDER_NAME

    def get_auth(self) -> BearerAuth:
        # Read on every request (MLflow asks each time): cheap, and a changed environment wins.
        return auth_from_environment()
