"""Same decisions as MLflow: MLflow's own before/after-request checks and the project's fast path
(mlflow_stack/auth/fastpath.py), side by side over one matrix, in-process on SQLite.

users (admin, workspace admin, grants on experiment/run tier/model/prompt given to the user
directly or through a role, a role in another workspace, none) x default_permission x routes
(experiments, runs, artifacts, models, prompts, traces). Every cell must get the same answer;
each route must be allowed somewhere and refused somewhere, so no cell is vacuous.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

FAST_HASH = "pbkdf2:sha256:1000"
PASSWORD = "a-long-enough-password-1"
DEFAULTS = ("READ", "NO_PERMISSIONS", "MANAGE")
EXPERIMENT_LEVELS = (None, "READ", "EDIT", "MANAGE", "DENY")
RUN_TIER_LEVELS = (None, "EDIT", "DENY")


class World:
    """MLflow's auth app with the fast path installed, and a switch between the two."""

    def __init__(self, m: Any, flask_app: Any, fast: Any) -> None:
        self.m = m
        self.app = flask_app
        self.fast = fast
        self.users: list[str] = []
        self.ids: dict[str, str] = {}

    def use(self, mode: str) -> None:
        """Register MLflow's own hooks ("mlflow") or the fast path's ("fast")."""
        before = self.app.before_request_funcs[None]
        after = self.app.after_request_funcs[None]
        pairs = [
            (before, self.m._before_request, self.fast.before_request),
            (after, self.m._after_request, self.fast.after_request),
        ]
        for functions, original, fast in pairs:
            wanted, other = (original, fast) if mode == "mlflow" else (fast, original)
            if other in functions:
                functions[functions.index(other)] = wanted
            assert wanted in functions

    def decide(self, mode: str, user: str, method: str, path: str, body: Any = None) -> int:
        """The before-request answer: 200 when the request may reach its handler."""
        self.use(mode)
        with self.app.test_request_context(path, method=method, json=body, headers=basic(user)):
            for function in self.app.before_request_funcs[None]:
                result = function()
                if result is not None:
                    return int(result.status_code)
        return 200

    def fetch(self, mode: str, user: str, method: str, path: str, body: Any = None) -> Any:
        """A whole request through the test client: status and body, byte for byte."""
        self.use(mode)
        client = self.app.test_client()
        response = client.open(path, method=method, json=body, headers=basic(user))
        return response.status_code, response.get_data()


def basic(user: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("differential")
    auth_uri = f"sqlite:///{home / 'auth.db'}"
    config = home / "auth_config.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {auth_uri}\n"
        "admin_username = admin\n"
        f"admin_password = {PASSWORD}\n"
        "authorization_function = mlflow_stack.auth.hook:authenticate\n"
        "grant_default_workspace_access = false\n"
        "auth_cache_ttl_seconds = 0\n"
    )
    saved = dict(os.environ)
    patch = pytest.MonkeyPatch()
    os.environ.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{home / 'mlflow.db'}",
            "_MLFLOW_SERVER_ARTIFACT_ROOT": str(home / "artifacts"),
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "false",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "differential-test",
        }
    )
    try:
        from mlflow.server import auth as m
        from mlflow.server import handlers

        from mlflow_stack.auth import app as stack_app
        from mlflow_stack.auth import fastpath, hook
        from mlflow_stack.auth.auth_db import AuthDatabase

        # MLflow reads its config at import, which another test may have done already.
        patch.setattr(m, "auth_config", m.read_auth_config())
        patch.setattr(hook, "_database", AuthDatabase(auth_uri))
        from mlflow.server import app as flask_app

        stack_app.create_app(flask_app)
        fast = flask_app.extensions[fastpath.EXTENSION]
        w = World(m, flask_app, fast)
        _populate(w, m, handlers._get_tracking_store(), hook)
        yield w
    finally:
        patch.undo()
        os.environ.clear()
        os.environ.update(saved)


def _populate(w: World, m: Any, tracking: Any, hook: Any) -> None:
    from mlflow.entities import Metric

    store = m.store
    e1 = tracking.create_experiment("e1")
    e2 = tracking.create_experiment("e2")
    run = tracking.create_run(e1, "u", 0, [], "r").info.run_id
    tracking.log_metric(run, Metric("m", 1.0, 0, 0))
    model = tracking.create_logged_model(experiment_id=e2).model_id
    registry = m._get_model_registry_store()
    registry.create_registered_model("M1")
    from mlflow.entities.model_registry import RegisteredModelTag
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

    registry.create_registered_model("P1", tags=[RegisteredModelTag(IS_PROMPT_TAG_KEY, "true")])
    w.ids.update(e1=e1, e2=e2, run=run, model=model)

    engine = hook.database().engine()

    def add_user(name: str) -> int:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO users (username, password_hash, is_admin) VALUES (:u, :p, 0)"),
                {"u": name, "p": generate_password_hash(PASSWORD, method=FAST_HASH)},
            )
        w.users.append(name)
        return int(store.get_user(name).id)

    def role(user_id: int, name: str, grants: list[tuple[str, str, str]], ws: str = "default"):
        created = store.create_role(name, ws)
        for resource_type, pattern, level in grants:
            store.add_role_permission(created.id, resource_type, pattern, level)
        store.assign_role_to_user(user_id, created.id)

    for via, exp_level, run_level in itertools.product(
        ("user", "role"), EXPERIMENT_LEVELS, RUN_TIER_LEVELS
    ):
        # Run-tier grants exist only on roles; "user" rows vary the direct grant alone.
        if (via == "user" and run_level is not None) or (via, exp_level, run_level) == (
            "role",
            None,
            None,
        ):
            continue
        name = f"{via}-{exp_level or 'none'}-{run_level or 'none'}"
        user_id = add_user(name)
        grants: list[tuple[str, str, str]] = []
        if exp_level is not None:
            if via == "user":
                store.create_experiment_permission(e1, name, exp_level)
                store.create_registered_model_permission("M1", name, exp_level)
            else:
                grants += [("experiment", e1, exp_level), ("registered_model", "M1", exp_level)]
            grants.append(("prompt", "P1", exp_level))
        if run_level is not None:
            grants.append(("run", "*", run_level))
        if grants:
            role(user_id, f"r-{name}", grants)
    role(add_user("workspace-admin"), "r-wsadmin", [("workspace", "*", "MANAGE")])
    role(add_user("other-workspace"), "r-other", [("experiment", e1, "MANAGE")], ws="other")
    w.users.append("admin")


def _routes(ids: dict[str, str]) -> list[tuple[str, str, str, Any]]:
    e1, run, model = ids["e1"], ids["run"], ids["model"]
    metric = {"run_id": run, "key": "m", "value": 1.0, "timestamp": 0}
    api = "/api/2.0/mlflow"
    return [
        ("experiments", "GET", f"{api}/experiments/get?experiment_id={e1}", None),
        ("experiments", "POST", f"{api}/experiments/update", {"experiment_id": e1}),
        ("experiments", "POST", f"{api}/experiments/delete", {"experiment_id": e1}),
        ("runs", "GET", f"{api}/runs/get?run_id={run}", None),
        ("runs", "GET", f"{api}/runs/get?run_id={'0' * 32}", None),
        ("runs", "POST", f"{api}/runs/update", {"run_id": run}),
        ("runs", "POST", f"{api}/runs/delete", {"run_id": run}),
        ("runs", "POST", f"{api}/runs/log-metric", metric),
        ("runs", "POST", f"{api}/runs/log-metric", {**metric, "model_id": model}),
        ("runs", "POST", f"{api}/runs/log-batch", {"run_id": run, "metrics": [metric]}),
        ("runs", "GET", f"{api}/metrics/get-history?run_id={run}&metric_key=m", None),
        ("artifacts", "GET", f"{api}/artifacts/list?run_id={run}", None),
        ("artifacts", "GET", f"/get-artifact?run_uuid={run}&path=a.txt", None),
        ("artifacts", "GET", f"/api/2.0/mlflow-artifacts/artifacts?path={e1}/{run}", None),
        ("artifacts", "GET", f"/api/2.0/mlflow-artifacts/artifacts/{e1}/{run}/a.txt", None),
        ("artifacts", "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{e1}/{run}/a.txt", None),
        ("models", "GET", f"{api}/registered-models/get?name=M1", None),
        ("models", "PATCH", f"{api}/registered-models/update", {"name": "M1"}),
        ("prompts", "GET", f"{api}/registered-models/get?name=P1", None),
        ("prompts", "PATCH", f"{api}/registered-models/update", {"name": "P1"}),
        ("traces", "GET", f"{api}/traces?experiment_ids={e1}", None),
        ("traces", "GET", f"/api/3.0/mlflow/traces/tr-{'0' * 32}", None),
        (
            "traces",
            "POST",
            "/api/3.0/mlflow/traces/search",
            {
                "locations": [
                    {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": e1}}
                ]
            },
        ),
    ]


@pytest.fixture(params=DEFAULTS)
def default_permission(request: pytest.FixtureRequest, world: World) -> Iterator[str]:
    m = world.m
    saved = m.auth_config
    m.auth_config = saved._replace(default_permission=request.param)
    try:
        yield request.param
    finally:
        m.auth_config = saved


@pytest.mark.parametrize(
    "family", ["experiments", "runs", "artifacts", "models", "prompts", "traces"]
)
def test_before_request_decisions_match_mlflow(world: World, default_permission: str, family: str):
    differences = []
    answers: dict[tuple[str, str], set[int]] = {}
    for _family, method, path, body in _routes(world.ids):
        if _family != family:
            continue
        for user in world.users:
            expected = world.decide("mlflow", user, method, path, body)
            got = world.decide("fast", user, method, path, body)
            answers.setdefault((method, path), set()).add(expected)
            if expected != got:
                differences.append((user, method, path, expected, got))
    assert differences == []
    if default_permission == "READ":
        # Somewhere allowed and somewhere refused, so the comparison was not vacuous.
        assert all({200, 403} <= seen for seen in answers.values()), answers


def test_search_listing_matches_mlflow(
    world: World, default_permission: str, monkeypatch: pytest.MonkeyPatch
):
    answered = []
    filter_listing = world.fast._filter_search_experiments

    def recorded(resp: Any) -> bool:
        before = resp.get_data()
        done = bool(filter_listing(resp))
        answered.append((done, resp.get_data() != before))
        return done

    monkeypatch.setattr(world.fast, "_filter_search_experiments", recorded)
    differences = []
    sizes = set()
    for user, max_results in itertools.product(world.users, (1, 1000)):
        body = {"max_results": max_results}
        path = "/api/2.0/mlflow/experiments/search"
        expected = world.fetch("mlflow", user, "POST", path, body)
        got = world.fetch("fast", user, "POST", path, body)
        sizes.add(len(json.loads(expected[1]).get("experiments", [])))
        if expected != got:
            differences.append((user, max_results, expected, got))
    assert differences == []
    assert len(sizes) > 1  # some users see fewer experiments than others
    # The fast path answered itself, and rewrote some listings (not only passed them on)...
    assert (True, True) in answered
    if default_permission == "NO_PERMISSIONS":
        assert 0 in sizes  # a listing emptied entirely
        # A short page MLflow refills from the store was left to MLflow.
        assert any(not done for done, _ in answered)


class Trips:
    """Statements on each engine, and connection checkouts of MLflow's auth store (each one
    a pre-ping round trip there)."""

    def __init__(self, engines: dict[str, sa.Engine]) -> None:
        self.counts = dict.fromkeys(engines, 0)
        for name, engine in engines.items():
            sa.event.listen(engine, "before_cursor_execute", self._count(name))
            sa.event.listen(engine, "checkout", self._count(f"{name} checkouts"))
            self.counts[f"{name} checkouts"] = 0

    def _count(self, name: str) -> Any:
        def bump(*_args: Any) -> None:
            self.counts[name] += 1

        return bump

    def reset(self) -> None:
        for key in self.counts:
            self.counts[key] = 0


def test_round_trips_on_the_hot_path(world: World):
    m, fast = world.m, world.fast
    from mlflow_stack.auth import hook

    run = world.ids["run"]
    metric = {"run_id": run, "key": "m", "value": 2.0, "timestamp": 1}
    requests = {
        "search": ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 100}),
        "log-metric": ("POST", "/api/2.0/mlflow/runs/log-metric", metric),
    }
    world.fetch("fast", "role-READ-EDIT", *requests["log-metric"])  # opens the tracking pool
    trips = Trips(
        {
            "hook": hook.database().engine(),
            "runs": fast._tracking_database().engine(),
            "mlflow auth store": m.store.engine,
        }
    )
    seen = {}
    for mode, user, name in itertools.product(
        ("mlflow", "fast"), ("admin", "role-READ-EDIT"), requests
    ):
        trips.reset()
        status, _ = world.fetch(mode, user, *requests[name])
        assert status == 200
        seen[(mode, user, name)] = dict(trips.counts)
    # The fast path: the hook's one read, which brings a user's grants with the credentials,
    # for everyone; a run's experiment read once (the warm-up above); MLflow's auth store not
    # touched.
    expected_fast = {
        ("admin", "search"): {"hook": 1, "runs": 0},
        ("admin", "log-metric"): {"hook": 1, "runs": 0},
        ("role-READ-EDIT", "search"): {"hook": 1, "runs": 0},
        ("role-READ-EDIT", "log-metric"): {"hook": 1, "runs": 0},
    }
    for (user, name), wanted in expected_fast.items():
        counts = seen[("fast", user, name)]
        assert {k: counts[k] for k in wanted} == wanted, (user, name, counts)
        assert counts["mlflow auth store"] == 0, (user, name, counts)
        assert counts["mlflow auth store checkouts"] == 0, (user, name, counts)
    # ...where MLflow's own path opens a session on its store (pre-ping, BEGIN, ROLLBACK).
    assert seen[("mlflow", "admin", "search")]["mlflow auth store checkouts"] >= 2
    assert seen[("mlflow", "role-READ-EDIT", "log-metric")]["mlflow auth store checkouts"] >= 2


def test_a_runs_experiment_is_read_once_and_an_unknown_run_every_time(world: World):
    from mlflow.server import handlers

    runs = Trips({"runs": world.fast._tracking_database().engine()})
    fresh = handlers._get_tracking_store().create_run(world.ids["e1"], "u", 0, [], "r")
    path = "/api/2.0/mlflow/runs/get?run_id={}"

    def lookups(run_id: str) -> int:
        runs.reset()
        world.decide("fast", "role-READ-EDIT", "GET", path.format(run_id))
        return runs.counts["runs"]

    assert [lookups(fresh.info.run_id) for _ in range(3)] == [1, 0, 0]
    assert [lookups("f" * 32) for _ in range(2)] == [1, 1]
    # Answered from the remembered experiment, every user still gets MLflow's answer: the
    # grants themselves are read on every request.
    for user in world.users:
        request = ("GET", path.format(fresh.info.run_id))
        assert world.decide("fast", user, *request) == world.decide("mlflow", user, *request), user


def test_after_request_grants_match_mlflow(world: World):
    """Handlers that act for admins too (the creator's MANAGE grant) still run for them."""
    store = world.m.store
    for mode, user in itertools.product(("mlflow", "fast"), ("admin", "role-READ-EDIT")):
        name = f"created-{mode}-{user}"
        status, body = world.fetch(
            mode, user, "POST", "/api/2.0/mlflow/experiments/create", {"name": name}
        )
        assert status == 200, body
        grant = store.get_experiment_permission(json.loads(body)["experiment_id"], user)
        assert grant.permission == "MANAGE"


# --- the native artifact routes (FastAPI), MLflow's middleware and the gated one ----------------


def _asgi_scope(method: str, path: str, user: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", basic(user)["Authorization"].encode())],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
    }


def _asgi_status(app: Any, method: str, path: str, user: str) -> int:
    import asyncio

    sent: list[dict[str, Any]] = []
    scope = _asgi_scope(method, path, user)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


@pytest.fixture(scope="module")
def native_pair(world: World) -> tuple[Any, Any]:
    """MLflow's permission middleware and the gated one, around the same stub endpoint."""
    from mlflow.server.fastapi_app import create_fastapi_app
    from starlette.middleware.base import BaseHTTPMiddleware

    from mlflow_stack.auth import native_artifacts, native_routes

    fastapi_app = create_fastapi_app(world.app)
    world.m.add_fastapi_permission_middleware(fastapi_app)
    dispatch = next(
        m.kwargs["dispatch"]
        for m in fastapi_app.user_middleware
        if getattr(m.kwargs.get("dispatch"), "__name__", "") == native_routes.PERMISSION
    )

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mlflow_side = BaseHTTPMiddleware(endpoint, dispatch=dispatch)
    fast_side = native_routes.Gate(
        endpoint,
        dispatch,
        native_routes.permission_gate(fastapi_app),
        fast=(native_routes._native_artifact, native_artifacts.decide),
    )
    return mlflow_side, fast_side


def test_native_artifact_decisions_match_mlflow(
    world: World, native_pair: tuple[Any, Any], default_permission: str
):
    mlflow_side, fast_side = native_pair
    e1, e2, run = world.ids["e1"], world.ids["e2"], world.ids["run"]
    prefix = "/api/2.0/mlflow-artifacts/artifacts"
    paths = [
        f"{prefix}/{e1}/{run}/artifacts/a.txt",  # a run's artifact
        f"{prefix}/{e2}/{run}/artifacts/a.txt",  # judged by the experiment in the path
        f"{prefix}/{e1}/models/m-1/artifacts/model.pkl",  # logged-model tier
        f"{prefix}/{e1}/traces/tr-1/artifacts/t.json",  # trace tier
        f"{prefix}/{e1}/notes.txt",  # experiment-level: MLflow's own answer
        f"{prefix}/{e1}/../{e2}/{run}/artifacts/a.txt",  # not canonical: refused
        "/ajax-api/2.0/mlflow-artifacts/artifacts/" + f"{e1}/{run}/artifacts/a.txt",
    ]
    differences, seen = [], set()
    for user, path, method in itertools.product(world.users, paths, ("GET", "PUT")):
        expected = _asgi_status(mlflow_side, method, path, user)
        got = _asgi_status(fast_side, method, path, user)
        seen.add(expected)
        if expected != got:
            differences.append((user, method, path, expected, got))
    assert differences == []
    assert {200, 403} <= seen


def test_native_artifacts_are_decided_by_the_fast_path(world: World, native_pair: Any):
    """Not all left to MLflow: the run's artifacts are answered here, for admins and others."""
    from mlflow_stack.auth import native_artifacts

    path = f"/api/2.0/mlflow-artifacts/artifacts/{world.ids['e1']}/{world.ids['run']}/artifacts/a"
    assert native_artifacts.decide(_asgi_scope("GET", path, "admin")) == native_artifacts.FORWARD
    assert native_artifacts.decide(_asgi_scope("GET", path, "role-READ-none")) == "forward"
    refused = native_artifacts.decide(_asgi_scope("GET", path, "role-DENY-none"))
    assert refused is not None and refused.status_code == 403
    # Who is refused (or not ours to answer) is left to MLflow, whose 401 is the hook's.
    wrong = _asgi_scope("GET", path, "admin")
    wrong["headers"] = [(b"authorization", b"Basic " + base64.b64encode(b"admin:wrong"))]
    assert native_artifacts.decide(wrong) is None
    assert native_artifacts.decide(dict(wrong, headers=[])) is None
