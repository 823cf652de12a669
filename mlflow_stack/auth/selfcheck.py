"""Start-up check that the MLflow internals the fast path mirrors are the ones it was reviewed
against.

The fast path (fastpath.py) reproduces the decisions of a handful of MLflow functions and calls
a few of its private helpers. A new MLflow release may change any of them, so each function's
source is fingerprinted here; the app refuses to start when one differs, naming the MLflow
version and the functions, instead of silently deciding differently from MLflow. After
reviewing a new release, regenerate ``FINGERPRINTS`` (tests/unit/test_fastpath_selfcheck.py
prints the new table when it fails).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

from mlflow_stack.errors import StackError

REVIEWED_MLFLOW_VERSION = "3.17.2"

# mlflow.server.auth functions whose behaviour the fast path reproduces or relies on.
MODULE_FUNCTIONS = (
    "create_app",
    "_before_request",
    "_after_request",
    "_find_validator",
    "_is_proxy_artifact_path",
    "_authorized_outside_before_request",
    "_is_known_ungated_route",
    "is_unprotected_route",
    "sender_is_admin",
    "enforce_review_queue_name_not_username",
    "make_forbidden_response",
    "_get_request_param",
    "_run_id_or_uuid_param",
    "_get_role_permission_or_default",
    "_role_permission_for",
    "_role_grant_for_resource",
    "_get_experiment_permission",
    "_get_permission_from_experiment_id",
    "validate_can_read_experiment",
    "validate_can_update_experiment",
    "validate_can_manage_experiment",
    "_fetch_or_none",
    "_run_requirement",
    "_authorize_run_id",
    "_authorize_run",
    "validate_can_read_run",
    "validate_can_update_run",
    "validate_can_delete_run",
    "validate_can_manage_run",
    "_validate_can_update_run_and_models",
    "validate_can_log_metric",
    "validate_can_log_batch",
    "validate_can_read_run_artifact",
    "validate_can_update_run_artifact",
    "get_anchor_workspace",
    "_absent_permission",
    "resolve_permissions",
    "_resolve_requirement_decisions",
    "authorize",
    "retention_gate",
    "RetentionGate",
    "_role_based_read_predicate",
    "filter_search_experiments",
    "add_fastapi_permission_middleware",
    "_find_fastapi_validator",
    "_native_fastapi_routes",
    "_scope_matches_native_route",
    "_is_native_fastapi_proxy_artifact_path",
    "_find_fastapi_after_request_handler",
    "_authenticate_custom_for_fastapi",
    "_flask_response_to_starlette",
    "_get_fastapi_proxy_artifact_validator",
    "_authorize_fastapi_artifact_proxy",
    "_artifact_proxy_path_from_request_path",
    "_artifact_proxy_child",
    "_artifact_proxy_child_types",
    "_authorize_artifact_proxy_resolved",
)
# mlflow.server.fastapi_app: the middlewares native_routes.py gates.
FASTAPI_FUNCTIONS = (
    "create_fastapi_app",
    "add_fastapi_workspace_middleware",
    "add_gateway_timing_middleware",
)
# mlflow.server.auth.requirements: the pure fold the fast path calls.
REQUIREMENT_FUNCTIONS = (
    "requirement_rungs",
    "requirements_to_grant_load_keys",
    "is_workspace_admin_grant",
    "fold_grants_for_key",
    "floor_positive_permission",
    "governing_permission_and_action",
    "action_met",
)

FINGERPRINTS: dict[str, str] = {
    "create_app": "56bbc25136ed6dcc",
    "_before_request": "1ccae2c2dc055105",
    "_after_request": "a12244138d8e4c8a",
    "_find_validator": "45e15fd98b00b0e8",
    "_is_proxy_artifact_path": "f5bfc17058cb81ba",
    "_authorized_outside_before_request": "60babac43469e5ca",
    "_is_known_ungated_route": "9d71434cd7bad590",
    "is_unprotected_route": "67982be63dd2cd21",
    "sender_is_admin": "7a9ed36212d57ad6",
    "enforce_review_queue_name_not_username": "eb84b515844f8faf",
    "make_forbidden_response": "20eb439531ac1830",
    "_get_request_param": "1e32176c47cc66da",
    "_run_id_or_uuid_param": "358361de718501dc",
    "_get_role_permission_or_default": "ac81eaac174ad6f3",
    "_role_permission_for": "a57f85193c2bb83e",
    "_role_grant_for_resource": "933b3fe89ed5da43",
    "_get_experiment_permission": "4a531e93810864a9",
    "_get_permission_from_experiment_id": "768b32331be28083",
    "validate_can_read_experiment": "b027c9acc6c62c4a",
    "validate_can_update_experiment": "9d2f8850f4acd35d",
    "validate_can_manage_experiment": "0e461b753ff3b389",
    "_fetch_or_none": "cbbbdb9b3e128da5",
    "_run_requirement": "dd0c00e3e8452138",
    "_authorize_run_id": "81c460fe4c4c02c4",
    "_authorize_run": "52ec95cc3c982ae7",
    "validate_can_read_run": "1830ffb7dfc1decc",
    "validate_can_update_run": "925ccd5dd4a10b36",
    "validate_can_delete_run": "dc05ae98e5de0a1d",
    "validate_can_manage_run": "6f5c36509eefb9e0",
    "_validate_can_update_run_and_models": "d4afe68f1baf4783",
    "validate_can_log_metric": "a32fdb602c4c8c61",
    "validate_can_log_batch": "b03706c5c5aefc02",
    "validate_can_read_run_artifact": "13655927dbe249e1",
    "validate_can_update_run_artifact": "2895a09957cd2b8a",
    "get_anchor_workspace": "0e077c3aa27ffdd9",
    "_absent_permission": "ba0b5cc3bda294ab",
    "resolve_permissions": "89b4cbe233367e84",
    "_resolve_requirement_decisions": "9f73270985db5634",
    "authorize": "270bd0a8d4bf8045",
    "retention_gate": "4e1446fc3bd1b3e8",
    "RetentionGate": "2573bf3bb3ea86f5",
    "_role_based_read_predicate": "98cb18091cdccaf4",
    "filter_search_experiments": "9b275a6d001f823d",
    "add_fastapi_permission_middleware": "344ee9b3adc66f0c",
    "_find_fastapi_validator": "4fc04ea77da293a2",
    "_native_fastapi_routes": "c77689c388ed3ff2",
    "_scope_matches_native_route": "3da0f7ca684b00b5",
    "_is_native_fastapi_proxy_artifact_path": "c8795e54122644a2",
    "_find_fastapi_after_request_handler": "e784ae1439ab82d2",
    "_authenticate_custom_for_fastapi": "a92990b550ac062d",
    "_flask_response_to_starlette": "8c9fca28b2203477",
    "_get_fastapi_proxy_artifact_validator": "3778a61eb074e4c7",
    "_authorize_fastapi_artifact_proxy": "8114202a46d5c85a",
    "_artifact_proxy_path_from_request_path": "e193fc454c0dc2a8",
    "_artifact_proxy_child": "193c690a46ab4ee9",
    "_artifact_proxy_child_types": "9cb747ef2f2ce24a",
    "_authorize_artifact_proxy_resolved": "65adc854a414743d",
    "requirements.requirement_rungs": "9c51aa6da756096a",
    "requirements.requirements_to_grant_load_keys": "9b8d249bc6a1d54e",
    "requirements.is_workspace_admin_grant": "df008098d4ea72c6",
    "requirements.fold_grants_for_key": "4499548b1cebfc34",
    "requirements.floor_positive_permission": "cdf51fb250f438a3",
    "requirements.governing_permission_and_action": "5f1fabc5421411ad",
    "requirements.action_met": "ab27cbf0994a3a51",
    "SqlAlchemyStore.list_grants": "7da32bf8506919a0",
    "fastapi_app.create_fastapi_app": "eea5803dc258b688",
    "fastapi_app.add_fastapi_workspace_middleware": "d8d5ee8b68c37228",
    "fastapi_app.add_gateway_timing_middleware": "8ddc5843da616e60",
    "workspace_helpers.resolve_workspace_for_request_if_enabled": "6a120d154ab0367e",
    "WORKSPACE_HEADER_NAME": "x-mlflow-workspace",
    "DEFAULT_WORKSPACE_NAME": "default",  # permissions_sql.DEFAULT_WORKSPACE
}


def fingerprint(obj: Any) -> str:
    """A short digest of an object's source text."""
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()[:16]


def current_fingerprints() -> dict[str, str]:
    """The fingerprints of the installed MLflow, keyed like ``FINGERPRINTS``."""
    from mlflow.server import auth
    from mlflow.server.auth import requirements

    found: dict[str, str] = {}
    for name in MODULE_FUNCTIONS:
        found[name] = _fingerprint_or_missing(auth, name)
    for name in REQUIREMENT_FUNCTIONS:
        found[f"requirements.{name}"] = _fingerprint_or_missing(requirements, name)
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    found["SqlAlchemyStore.list_grants"] = _fingerprint_or_missing(SqlAlchemyStore, "list_grants")
    from mlflow.server import fastapi_app, workspace_helpers

    for name in FASTAPI_FUNCTIONS:
        found[f"fastapi_app.{name}"] = _fingerprint_or_missing(fastapi_app, name)
    found["workspace_helpers.resolve_workspace_for_request_if_enabled"] = _fingerprint_or_missing(
        workspace_helpers, "resolve_workspace_for_request_if_enabled"
    )
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

    # native_routes.py spells the header itself (it imports nothing of MLflow at import).
    found["WORKSPACE_HEADER_NAME"] = WORKSPACE_HEADER_NAME.lower()
    from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

    # The credential reads join the grants of this workspace (permissions_sql.with_grants).
    found["DEFAULT_WORKSPACE_NAME"] = DEFAULT_WORKSPACE_NAME
    return found


def _fingerprint_or_missing(owner: Any, name: str) -> str:
    obj = getattr(owner, name, None)
    if obj is None:
        return "missing"
    # Decorators such as catch_mlflow_exception keep the original in __wrapped__.
    return fingerprint(inspect.unwrap(obj))


def check() -> None:
    """Raise StackError unless the installed MLflow is the reviewed one, function by function."""
    import mlflow

    version = mlflow.__version__
    changed = sorted(
        name for name, digest in current_fingerprints().items() if FINGERPRINTS.get(name) != digest
    )
    if version != REVIEWED_MLFLOW_VERSION or changed:
        shown = ", ".join(changed[:6]) + (" …" if len(changed) > 6 else "")
        raise StackError(
            f"mlflow-stack's authorization fast path was reviewed against MLflow "
            f"{REVIEWED_MLFLOW_VERSION}, but this server runs MLflow {version}"
            + (f" whose {shown} differ" if changed else "")
            + "; install the pinned MLflow (requirements.lock) or review and update "
            "mlflow_stack/auth/selfcheck.py"
        )
