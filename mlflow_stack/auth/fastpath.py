"""MLflow's basic-auth permission checks, answered cheaply for the routes that carry the load.

``install`` swaps MLflow's ``_before_request`` and ``_after_request`` in the project's own Flask
app for the two wrappers below; MLflow's installed files stay as they are. The wrappers make the
same decisions as MLflow (tests/differential/test_fastpath_differential.py runs both over a matrix):

- every admin check is answered from the row the hook already read to authenticate this
  request (``hook.is_admin_of_this_request``), not from ``store.get_user`` again, and an
  after-request handler that returns at once for an admin is skipped (``admin_noops``);
- for a non-admin on the routes in ``FAST_KINDS`` the permission comes from MLflow's own pure
  fold (``mlflow.server.auth.requirements``) over the grants read in one statement
  (``permissions_sql``), and a run's experiment from one indexed query, once per run and
  process (a run never changes experiment);
- which of those a route is (or that it is MLflow's to decide) is computed once per
  (method, path template) and kept in a bounded dict.

Everything else, and any request the fast path cannot answer exactly (single sign-on users, whose
admin flag the hook did not read; workspaces; a non-SQL tracking store; an unknown user; a
logged model among the metrics), goes to MLflow's own function unchanged.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache
from flask import Flask, Response, g, request

from mlflow_stack.auth import admin_noops, hook, permissions_sql
from mlflow_stack.auth.auth_db import AuthDatabase

# A bounded memo: one entry per (method, path template), so a few hundred in practice.
ROUTE_MEMO_SIZE = 4096
# Runs whose experiment this process has read (least recently used dropped first).
RUN_MEMO_SIZE = 10_000
DELEGATE = "mlflow"
# No validator and nothing else in MLflow's _before_request refuses it: the handler filters.
OPEN = "open"
# Where install() leaves the FastPath on the Flask app (tests read it there).
EXTENSION = "mlflow_stack_fastpath"

# MLflow's validator name -> (how to find the resource, the action it checks).
FAST_KINDS: dict[str, tuple[str, str]] = {
    "validate_can_read_experiment": ("experiment", "read"),
    "validate_can_update_experiment": ("experiment", "update"),
    "validate_can_manage_experiment": ("experiment", "manage"),
    "validate_can_read_run": ("run", "read"),
    "validate_can_update_run": ("run", "update"),
    "validate_can_delete_run": ("run", "delete"),
    "validate_can_manage_run": ("run", "manage"),
    "validate_can_log_metric": ("log_metric", "update"),
    "validate_can_log_batch": ("log_batch", "update"),
    "validate_can_read_run_artifact": ("run_artifact", "read"),
    "validate_can_update_run_artifact": ("run_artifact", "update"),
}


class FastPath:
    """The two wrappers and what they remember (per worker process)."""

    def __init__(self, mlflow_auth: Any, database: AuthDatabase | None = None) -> None:
        self.m = mlflow_auth
        self.database = database or hook.database()
        self._tracking: AuthDatabase | None = None
        self._tracking_checked = False
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], str | tuple[str, str]] = {}
        self._after: dict[tuple[str, str], Callable[[Response], None] | None] = {}
        self._run_experiments: LRUCache[str, str] = LRUCache(maxsize=RUN_MEMO_SIZE)
        self._original_before: Callable[[], Response | None] = mlflow_auth._before_request
        self._original_after: Callable[[Response], Response] = mlflow_auth._after_request
        self.before_request = mlflow_auth.catch_mlflow_exception(self._before)
        self.after_request = self._after_request

    # --- before the handler ---------------------------------------------------------------

    def _before(self) -> Response | None:
        m = self.m
        if m.is_unprotected_route(request.path):
            return None
        authorization = m.authenticate_request()
        if isinstance(authorization, Response):
            return authorization
        is_admin = hook.is_admin_of_this_request()
        if is_admin is None:
            return self._original_before()
        g.mlflow_authenticated_user = authorization.username
        if is_admin:
            m.enforce_review_queue_name_not_username()
            return None
        kind = self._route_kind()
        if kind == OPEN:
            return None
        if kind == DELEGATE:
            return self._original_before()
        assert isinstance(kind, tuple)  # noqa: S101 - narrows the memo's union for mypy
        allowed = self.decide(authorization.username or "", *kind)
        if allowed is None:
            return self._original_before()
        return None if allowed else m.make_forbidden_response()

    def _route_kind(self) -> str | tuple[str, str]:
        rule = request.url_rule
        key = (request.method, rule.rule if rule is not None else request.path)
        found = self._routes.get(key)
        if found is None:
            found = DELEGATE
            # A template with variables may match paths MLflow's regexes tell apart.
            if rule is None or not rule.arguments:
                found = self._kind_of_this_route()
            with self._lock:
                if len(self._routes) >= ROUTE_MEMO_SIZE:
                    self._routes.clear()
                self._routes[key] = found
        return found

    def _kind_of_this_route(self) -> str | tuple[str, str]:
        m = self.m
        validator = m._find_validator(request)
        if validator is None:
            # What MLflow's _before_request does after its validator lookup comes up empty.
            if m._is_proxy_artifact_path(request.path):
                return DELEGATE
            if not m.MLFLOW_BASIC_AUTH_FAIL_CLOSED.get():
                return OPEN
            if m._authorized_outside_before_request(request) or m._is_known_ungated_route(
                request.path
            ):
                return OPEN
            return DELEGATE
        name = getattr(validator, "__name__", "")
        if getattr(m, name, None) is not validator:
            return DELEGATE  # e.g. a lambda: MLflow's fail-closed answer for a family
        return FAST_KINDS.get(name, DELEGATE)

    def decide(self, username: str, kind: str, action: str) -> bool | None:
        """MLflow's answer for ``username`` on this request; None: MLflow has to answer."""
        m = self.m
        if m.MLFLOW_ENABLE_WORKSPACES.get():
            return None
        if kind == "experiment":
            experiment_id = m._get_request_param("experiment_id")
            grants = self._grants(username)
            return (
                None
                if grants is None
                else experiment_permission_met(m, grants, experiment_id, action)
            )
        if kind in ("log_metric", "log_batch"):
            if self._names_logged_models(kind):
                return None
            run_id = m._get_request_param("run_id")
        elif kind == "run_artifact":
            run_id = m._run_id_or_uuid_param()
        else:
            run_id = m._get_request_param("run_id")
        tracking = self._tracking_database()
        if tracking is None:
            return None
        experiment_id = self._experiment_of_run(tracking, run_id)
        if experiment_id is None:
            return False  # MLflow denies a missing run too: no oracle for which ids exist
        grants = self._grants(username)
        return None if grants is None else run_permission_met(m, grants, experiment_id, action)

    def _experiment_of_run(self, tracking: AuthDatabase, run_id: str) -> str | None:
        # MLflow has no way to move a run to another experiment, and run ids are UUIDs that are
        # never reused, so a run's experiment, once read, holds for as long as the run exists:
        # kept per process, it spares a run-scoped request its second round trip. An unknown
        # run is read again every time (it may be created meanwhile). The grants are still read
        # on every request, so a revoked grant takes effect at once. One answer differs from
        # MLflow's: for a run deleted for good (`invoke gc`) after it was read here, a user
        # allowed on its experiment gets the handler's 404 where MLflow refuses with 403;
        # everyone else is still refused.
        with self._lock:
            experiment_id = self._run_experiments.get(run_id)
        if experiment_id is None:
            experiment_id = permissions_sql.run_experiment_id(tracking, run_id)
            if experiment_id is not None:
                with self._lock:
                    self._run_experiments[run_id] = experiment_id
        return experiment_id

    def _grants(self, username: str) -> list[permissions_sql.GrantRow] | None:
        # Usually read with the credentials (the hook's statement): no round trip here.
        return permissions_sql.user_grants(
            self.database,
            username,
            self.m.DEFAULT_WORKSPACE_NAME,
            hook.grants_of_this_request(username),
        )

    def _names_logged_models(self, kind: str) -> bool:
        m = self.m
        if kind == "log_metric":
            return bool(m._get_request_message(m.LogMetric()).model_id)
        return any(metric.model_id for metric in m._get_request_message(m.LogBatch()).metrics)

    def _tracking_database(self) -> AuthDatabase | None:
        if not self._tracking_checked:
            store = self.m._get_tracking_store()
            uri = getattr(store, "db_uri", None)
            # Only MLflow's SQL store keeps runs in a `runs` table.
            if type(store).__name__ == "SqlAlchemyStore" and isinstance(uri, str):
                self._tracking = AuthDatabase(uri)
            self._tracking_checked = True
        return self._tracking

    # --- after the handler ----------------------------------------------------------------

    def _after_request(self, resp: Response) -> Response:
        if 400 <= resp.status_code < 600:
            return resp
        handler = self._after_handler()
        if handler is None:
            return resp
        is_admin = hook.is_admin_of_this_request()
        if is_admin and handler in self._admin_noops():
            return resp
        if (
            is_admin is False
            and handler is self.m.filter_search_experiments
            and self._filter_search_experiments(resp)
        ):
            return resp
        handler(resp)
        return resp

    def _after_handler(self) -> Callable[[Response], None] | None:
        rule = request.url_rule
        if rule is not None and rule.arguments:
            return self._lookup_after_handler()
        key = (request.method, request.path)
        if key not in self._after:
            handler = self._lookup_after_handler()
            with self._lock:
                if len(self._after) >= ROUTE_MEMO_SIZE:
                    self._after.clear()
                self._after[key] = handler
        return self._after[key]

    def _lookup_after_handler(self) -> Callable[[Response], None] | None:
        # The same two tables, in the same order, as MLflow's _after_request.
        m = self.m
        handler = m.AFTER_REQUEST_HANDLERS.get((request.path, request.method))
        if handler is None:
            for (pattern, method), candidate in m.PARAMETERIZED_AFTER_REQUEST_HANDLERS.items():
                if method == request.method and pattern.fullmatch(request.path):
                    return candidate  # type: ignore[no-any-return]
        return handler  # type: ignore[no-any-return]

    @functools.cached_property
    def _admin_noop_set(self) -> frozenset[Any]:
        return admin_noops.handlers(self.m)

    def _admin_noops(self) -> frozenset[Any]:
        return self._admin_noop_set

    def _filter_search_experiments(self, resp: Response) -> bool:
        """MLflow's filter_search_experiments for a non-admin, from one grants read; False
        when MLflow's has to run instead (it refills short pages from the store).

        MLflow parses the handler's JSON into protobuf, drops what the user may not read and
        writes it out again with ``message_to_json``. The handler wrote that JSON with
        ``message_to_json`` too, so dropping the same entries from the parsed JSON and writing
        it back as ``message_to_json`` does (``json.dumps``, indent 2; an empty list left out)
        gives the same bytes, without the protobuf parse: about 0.6 ms of a search.
        """
        m = self.m
        if m.MLFLOW_ENABLE_WORKSPACES.get():
            return False
        listing = resp.get_json(silent=True)
        if not isinstance(listing, dict):
            return False
        username = m.authenticate_request().username
        grants = self._grants(username)
        if grants is None:
            return False
        gate = search_gate(m, grants)
        experiments = listing.get("experiments", [])
        readable = [
            e for e in experiments if gate.retains("experiment", e.get("experiment_id", ""))
        ]
        if listing.get("next_page_token", "") != "":
            wanted = m._get_request_message(m.SearchExperiments()).max_results
            if len(readable) < wanted:
                return False
        if len(readable) != len(experiments):
            if readable:
                listing["experiments"] = readable
            else:
                del listing["experiments"]
            resp.data = json.dumps(listing, indent=2)
        return True


# --- the decisions, from MLflow's pure functions over the grants read here -----------------


def _requirements() -> Any:
    from mlflow.server.auth import requirements

    return requirements


def experiment_permission_met(m: Any, grants: list[Any], experiment_id: str, action: str) -> bool:
    """``_get_experiment_permission(...).can_<action>`` with workspaces off."""
    r = _requirements()
    default = m.auth_config.default_permission
    if any(r.is_workspace_admin_grant(grant) for grant in grants):
        permission = r.MANAGE
    else:
        permission = r.fold_grants_for_key(grants, r.GrantLoadKey("experiment", experiment_id))
    if permission is None:
        permission = r.get_permission(default)
    else:
        permission = r.floor_positive_permission(permission, default)
    return bool(r.action_met(action, permission))


def run_permission_met(m: Any, grants: list[Any], experiment_id: str, action: str) -> bool:
    """``authorize`` over ``_run_requirement`` with workspaces off: read on the experiment,
    and ``action`` on the run tier, falling back to the experiment."""
    r = _requirements()
    experiment = ("experiment", experiment_id)
    requirements = [
        r.Requirement("experiment", experiment_id, "read"),
        r.Requirement("run", "*", action, fallback_if_no_grant=(experiment,)),
    ]
    return all_met(m, grants, requirements)


def all_met(m: Any, grants: list[Any], requirements: list[Any]) -> bool:
    """``authorize`` with the grants in hand (workspaces off: absent means the default)."""
    r = _requirements()
    keys = r.requirements_to_grant_load_keys(requirements)
    if any(r.is_workspace_admin_grant(grant) for grant in grants):
        permissions = dict.fromkeys(keys, r.MANAGE)
    else:
        permissions = {key: r.fold_grants_for_key(grants, key) for key in keys}
    default = m.auth_config.default_permission
    absent = r.get_permission(default)
    for requirement in requirements:
        permission, needed = r.governing_permission_and_action(
            requirement, permissions, default, absent
        )
        if not r.action_met(needed, permission):
            return False
    return True


def search_gate(m: Any, grants: list[Any]) -> Any:
    """MLflow's ``retention_gate`` for the experiment listing, from grants in hand."""
    r = _requirements()
    template = r.Requirement("experiment", "*", "read", fallback_if_no_grant=(("workspace", "*"),))
    default = m.auth_config.default_permission
    always = True if any(r.is_workspace_admin_grant(grant) for grant in grants) else None
    return m.RetentionGate(
        {"experiment": template}, grants, default, r.get_permission(default), always
    )


def install(flask_app: Flask) -> FastPath:
    """Put the fast path in place of MLflow's two request hooks on ``flask_app`` (after
    ``mlflow.server.auth.create_app`` registered them)."""
    from mlflow.server import auth as mlflow_auth

    fast = FastPath(mlflow_auth)
    flask_app.extensions[EXTENSION] = fast
    _replace(
        flask_app.before_request_funcs.get(None, []),
        mlflow_auth._before_request,
        fast.before_request,
    )
    _replace(
        flask_app.after_request_funcs.get(None, []), mlflow_auth._after_request, fast.after_request
    )
    return fast


def _replace(functions: list[Any], original: Any, replacement: Any) -> None:
    index = functions.index(original)  # selfcheck guarantees MLflow registered it
    functions[index] = replacement
