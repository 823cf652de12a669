"""The MLflow REST calls the tasks need (users, permissions), as the profile's admin.

One `_request` turns every failure into a `StackError` written for the user: a stack that is
not running, wrong admin credentials, a refused permission, or MLflow's own error message
(first line only: some of MLflow's messages carry a whole SQL statement).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from mlflow_stack import health
from mlflow_stack.endpoints import Endpoints
from mlflow_stack.errors import StackError
from mlflow_stack.layout import StackLayout
from mlflow_stack.profile import Profile
from mlflow_stack.secrets import ENV_VARS, load_secrets

TIMEOUT_SECONDS = 30
USERS = "/api/2.0/mlflow/users"
PERMISSIONS = "/api/3.0/mlflow/users/permissions"
EXPERIMENTS = "/api/2.0/mlflow/experiments"
REGISTERED_MODELS = "/api/2.0/mlflow/registered-models"
SCORERS = "/api/3.0/mlflow/scorers"
GATEWAY = "/api/3.0/mlflow/gateway"
MCP_SERVERS = "/api/3.0/mlflow/mcp-servers"
# MLflow's resource types (mlflow/server/auth/permissions.py); resources.py has them all.
EXPERIMENT = "experiment"
REGISTERED_MODEL = "registered_model"
# The tag that makes a registered model a prompt (mlflow/prompt/constants.py).
IS_PROMPT_TAG = "mlflow.prompt.is_prompt"


class MlflowApiError(StackError):
    """MLflow answered with an error; `error_code` is MLflow's (RESOURCE_DOES_NOT_EXIST, …)."""

    def __init__(self, message: str, status: int, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code

    @property
    def not_found(self) -> bool:
        return self.error_code == "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class User:
    username: str
    is_admin: bool


@dataclass(frozen=True)
class Grant:
    """One permission a user holds on a resource, through a role (`__user_<id>__`: direct)."""

    resource_type: str
    resource_id: str
    permission: str
    role: str
    workspace: str | None = None

    @property
    def direct(self) -> bool:
        return self.role.startswith("__user_")


def first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def error_for(
    response: requests.Response,
    *,
    profile_name: str,
    username: str,
    credentials_hint: str = "",
) -> StackError:
    """The StackError for an MLflow answer that is not 2xx (a pure function of the response)."""
    status = response.status_code
    if status == 401:
        hint = f": {credentials_hint}" if credentials_hint else ""
        return MlflowApiError(
            f"wrong admin credentials for {username} at {_origin(response)}{hint}", status
        )
    error_code = None
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_code = body.get("error_code")
        message = first_line(str(body.get("message", "")))
    if not message:
        message = first_line(response.text)[:300]
    if status == 403:
        return MlflowApiError(
            f"MLflow refused {username} (403 permission denied) for "
            f"{response.request.method if response.request else 'the request'} "
            f"{_path(response)}: the tasks need an MLflow admin",
            status,
            error_code,
        )
    detail = f"{error_code}: {message}" if error_code and message else (message or error_code)
    return MlflowApiError(
        f"MLflow answered {status} for {_path(response)}"
        + (f": {detail}" if detail else "")
        + f" (profile {profile_name})",
        status,
        error_code,
    )


def _origin(response: requests.Response) -> str:
    url = response.url or ""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}" if rest else url


def _path(response: requests.Response) -> str:
    url = response.url or ""
    _, _, rest = url.partition("://")
    path = "/" + rest.split("/", 1)[1] if "/" in rest else url
    return path.split("?", 1)[0]


class AdminClient:
    """MLflow's user and permission API, called as one user (normally the profile's admin)."""

    def __init__(
        self,
        profile: Profile,
        username: str,
        password: str,
        *,
        credentials_hint: str = "",
        timeout: float = TIMEOUT_SECONDS,
    ):
        self.profile = profile
        self.url = health.mlflow_url(profile)
        self.username = username
        self.credentials_hint = credentials_hint
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (username, password)
        # Never pick up a ~/.netrc or proxy settings that would change who we are or where we go.
        self.session.trust_env = False
        self.session.verify = Endpoints.of(profile).verify

    @classmethod
    def for_profile(cls, profile: Profile) -> AdminClient:
        """The profile's admin, with the password from the environment or secrets.env."""
        secrets = load_secrets(profile)
        variable = ENV_VARS["admin_password"]
        if os.environ.get(variable):
            hint = f"{variable} is set and wins over {StackLayout.SECRETS_FILE}: check its value"
        else:
            hint = f"check the password in {profile.layout.secrets_file} (or set {variable})"
        return cls(profile, profile.admin_username, secrets.admin_password, credentials_hint=hint)

    @classmethod
    def with_token(cls, profile: Profile, token: str) -> AdminClient:
        """A client that acts as an access token's owner (Bearer), for `invoke env --token`."""
        client = cls(profile, "the access token", "")
        client.session.auth = None
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the one place a request is made ------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self.session.request(
                method, self.url + path, params=params, json=json, timeout=self.timeout
            )
        except requests.ConnectionError:
            raise StackError(
                f"the stack of profile {self.profile.name} is not running at {self.url}: "
                f"run `invoke up -p {self.profile.name}`"
            ) from None
        except requests.Timeout:
            raise StackError(
                f"MLflow at {self.url} did not answer within {self.timeout:g} s "
                f"(`invoke status -p {self.profile.name}`)"
            ) from None
        except requests.RequestException as exc:
            raise StackError(
                f"request to MLflow at {self.url} failed: {first_line(str(exc))}"
            ) from None
        if not response.ok:
            raise error_for(
                response,
                profile_name=self.profile.name,
                username=self.username,
                credentials_hint=self.credentials_hint,
            )
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise StackError(
                f"MLflow at {self.url} answered {path} with something that is not JSON: "
                f"{first_line(response.text)[:200]!r}"
            ) from None
        return body if isinstance(body, dict) else {}

    # --- users --------------------------------------------------------------------------------

    def create_user(self, username: str, password: str) -> User:
        body = self._request(
            "POST", f"{USERS}/create", json={"username": username, "password": password}
        )
        user = _member(body, "user")
        return User(user.get("username", username), bool(user.get("is_admin", False)))

    def get_user(self, username: str) -> User:
        user = _member(self._request("GET", f"{USERS}/get", params={"username": username}), "user")
        return User(user.get("username", username), bool(user.get("is_admin", False)))

    def list_users(self) -> list[User]:
        users = self._request("GET", f"{USERS}/list").get("users", [])
        return [User(u["username"], bool(u.get("is_admin", False))) for u in users]

    def update_password(
        self, username: str, password: str, current_password: str | None = None
    ) -> None:
        payload = {"username": username, "password": password}
        if current_password is not None:
            # MLflow asks for it when a user changes their own password.
            payload["current_password"] = current_password
        self._request("PATCH", f"{USERS}/update-password", json=payload)

    def set_admin(self, username: str, is_admin: bool) -> None:
        self._request(
            "PATCH", f"{USERS}/update-admin", json={"username": username, "is_admin": is_admin}
        )

    def delete_user(self, username: str) -> None:
        self._request("DELETE", f"{USERS}/delete", json={"username": username})

    # --- permissions --------------------------------------------------------------------------

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        self._request(
            "POST",
            f"{PERMISSIONS}/grant",
            json={
                "username": username,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "permission": permission,
            },
        )

    def revoke(self, username: str, resource_type: str, resource_id: str) -> None:
        self._request(
            "POST",
            f"{PERMISSIONS}/revoke",
            json={"username": username, "resource_type": resource_type, "resource_id": resource_id},
        )

    def list_permissions(self, username: str) -> tuple[bool, list[Grant]]:
        """`(is_admin, grants)` of one user, across every role they hold."""
        body = self._request("GET", f"{PERMISSIONS}/list", params={"username": username})
        grants = [
            Grant(
                resource_type=row.get("resource_type", ""),
                resource_id=str(row.get("resource_pattern", "")),
                permission=row.get("permission", ""),
                role=row.get("role_name", ""),
                workspace=row.get("workspace"),
            )
            for row in body.get("permissions", [])
        ]
        return bool(body.get("is_admin", False)), grants

    def current_username(self) -> str:
        """Who the server says this client is (users/current)."""
        return str(_member(self._request("GET", f"{USERS}/current"), "user").get("username", ""))

    # --- resources ----------------------------------------------------------------------------

    def create_experiment(self, name: str) -> str:
        """A new experiment's id (the bench's setup)."""
        body = self._request("POST", f"{EXPERIMENTS}/create", json={"name": name})
        return str(body.get("experiment_id", ""))

    def create_run(self, experiment_id: str, start_time_ms: int) -> str:
        """A new run's id in an experiment (the bench's setup)."""
        body = self._request(
            "POST",
            "/api/2.0/mlflow/runs/create",
            json={"experiment_id": experiment_id, "start_time": start_time_ms},
        )
        return str(_member(_member(body, "run"), "info").get("run_id", ""))

    def experiment_by_id(self, experiment_id: str) -> dict[str, Any]:
        body = self._request("GET", f"{EXPERIMENTS}/get", params={"experiment_id": experiment_id})
        return _member(body, "experiment")

    def experiment_by_name(self, name: str) -> dict[str, Any]:
        body = self._request("GET", f"{EXPERIMENTS}/get-by-name", params={"experiment_name": name})
        return _member(body, "experiment")

    def registered_model(self, name: str) -> dict[str, Any]:
        """A registered model or a prompt (MLflow stores both alike; see `is_prompt`)."""
        body = self._request("GET", f"{REGISTERED_MODELS}/get", params={"name": name})
        return _member(body, "registered_model")

    def scorer(self, experiment_id: str, name: str) -> dict[str, Any]:
        body = self._request(
            "GET", f"{SCORERS}/get", params={"experiment_id": experiment_id, "name": name}
        )
        return _member(body, "scorer")

    def gateway_secret(self, secret_id: str) -> dict[str, Any]:
        """A gateway secret's metadata (MLflow never returns the secret's value)."""
        body = self._request("GET", f"{GATEWAY}/secrets/get", params={"secret_id": secret_id})
        return _member(body, "secret")

    def gateway_secrets(self) -> list[dict[str, Any]]:
        return _members(self._request("GET", f"{GATEWAY}/secrets/list"), "secrets")

    def gateway_endpoint(self, *, endpoint_id: str = "", name: str = "") -> dict[str, Any]:
        params = {"endpoint_id": endpoint_id} if endpoint_id else {"name": name}
        body = self._request("GET", f"{GATEWAY}/endpoints/get", params=params)
        return _member(body, "endpoint")

    def gateway_model_definition(self, model_definition_id: str) -> dict[str, Any]:
        body = self._request(
            "GET",
            f"{GATEWAY}/model-definitions/get",
            params={"model_definition_id": model_definition_id},
        )
        return _member(body, "model_definition")

    def gateway_model_definitions(self) -> list[dict[str, Any]]:
        body = self._request("GET", f"{GATEWAY}/model-definitions/list")
        return _members(body, "model_definitions")

    def mcp_server(self, name: str) -> dict[str, Any]:
        # MLflow answers this route with the server itself, not wrapped in a key.
        return self._request("GET", f"{MCP_SERVERS}/{quote(name, safe='')}")


def _member(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The object MLflow wraps its answer in (`{"experiment": {...}}`); {} when there is none."""
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _members(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list MLflow wraps its answer in (`{"secrets": [...]}`), objects only."""
    value = body.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def is_prompt(registered_model: dict[str, Any]) -> bool:
    """Whether a registered model (as MLflow's REST API returns it) is a prompt."""
    tags = registered_model.get("tags") or []
    return any(
        isinstance(tag, dict)
        and tag.get("key") == IS_PROMPT_TAG
        and str(tag.get("value", "")).lower() == "true"
        for tag in tags
    )
